"""`ragqa bench ...`: the benchmarks (each prints a table and writes JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ragqa import resources
from ragqa.apps.common import (BackendOpt, ThreadsOpt, VariantOpt, VectorBackendOpt, bench_app,
                               command_settings, err, for_variants)
from ragqa.errors import RagqaError


SHARED_SCIFACT = resources.SHARED_DATA / "scifact"


@bench_app.command("index")
def bench_index(
    corpus: Annotated[Path, typer.Option("--corpus", help="JSONL corpus (_id, title, text).")] = SHARED_SCIFACT / "corpus.jsonl",
    queries: Annotated[Optional[Path], typer.Option("--queries", help="JSONL queries for latency.")] = SHARED_SCIFACT / "queries.jsonl",
    limit: Annotated[int, typer.Option("--limit", help="Use the first N documents.")] = 1000,
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON.")] = Path("bench-results/index.json"),
    skip_langchain: Annotated[bool, typer.Option("--skip-langchain")] = False,
    embed_backend: BackendOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Index build vs LangChain vs raw encode; incremental rebuilds; query latency."""
    from ragqa.benchmarks.bench import bench_index as run_bench

    if not corpus.is_file():
        raise RagqaError(f"{corpus}: no such corpus; pass --corpus FILE.jsonl")
    run_bench(corpus, queries if queries and queries.is_file() else None, limit,
              command_settings(embed_backend=embed_backend, threads=threads), out, skip_langchain=skip_langchain,
              echo=typer.echo)


@bench_app.command("generate")
def bench_generate_cmd(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Generator model.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 48,
    runs: Annotated[int, typer.Option("--runs")] = 3,
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON.")] = Path("bench-results/generate.json"),
    threads: ThreadsOpt = None,
) -> None:
    """ragqa generation vs raw model.generate, time to first token, variant switch time and memory."""
    from ragqa.benchmarks.bench import bench_generate

    bench_generate(command_settings(threads=threads, model=model), out, max_new_tokens=max_new_tokens, runs=runs,
                   echo=typer.echo)


QuickOpt = Annotated[bool, typer.Option("--quick", help="A fast sample: the demo corpus, 20 queries, "
                                        "smollm2-135m-instruct (unless --model), 16 new tokens, 3 training steps.")]
BenchModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Generator (and trained) model.")]
BenchCorpusOpt = Annotated[Optional[Path], typer.Option("--corpus", help="Folder or file to index; a JSONL corpus "
                           "is cut to 1,000 documents (200 with --quick). Default: data/demo; without --quick, "
                           "SciFact's corpus from ../shared/data when it is there.")]
BenchQueriesOpt = Annotated[Optional[Path], typer.Option("--queries", help="JSONL queries (_id, text) for latency "
                            "(default: SciFact's with the SciFact corpus, otherwise questions about the demo).")]
BenchOutOpt = Annotated[Path, typer.Option("--out", help="Where to write the JSON (and the table as .md).")]
StagesOpt = Annotated[str, typer.Option("--stages", help="Comma-separated subset of index,query,generate,switch,train.")]


# one function and one set of options, registered both as `bench`'s callback and as `bench all`
def bench_all_cmd(
    ctx: typer.Context,
    quick: QuickOpt = False,
    model: BenchModelOpt = None,
    corpus: BenchCorpusOpt = None,
    queries: BenchQueriesOpt = None,
    out: BenchOutOpt = Path("bench-results/all.json"),
    stages: StagesOpt = "index,query,generate,switch,train",
    threads: ThreadsOpt = None,
) -> None:
    """Index build, query latency, generation tokens/s, variant switch and training throughput in
    one go (also `ragqa bench` without a subcommand)."""
    if ctx.invoked_subcommand is None:  # `bench all`, or `bench` alone
        _bench_all(quick, model, corpus, queries, out, stages, threads)


bench_app.callback()(bench_all_cmd)


@bench_app.command("answers")
def bench_answers_cmd(
    model: BenchModelOpt = None,
    variant: VariantOpt = "base",
    index: Annotated[Optional[Path], typer.Option("--index", "-i", help="Index to ask (default: data/demo, "
                                                  "indexed into a temporary directory).")] = None,
    out: BenchOutOpt = Path("bench-results/answers.json"),
    threads: ThreadsOpt = None,
) -> None:
    """The demo questions answered end to end as `ragqa ask` answers them: seconds per answer p50 / p95,
    prompt reading and decoding apart, the CPU's flags."""
    from ragqa.benchmarks.bench import bench_answers

    settings = for_variants(command_settings(threads=threads, model=model), model, [variant])
    bench_answers(settings, out, index=index, variant=variant, echo=err)


@bench_app.command("peer")
def bench_peer_cmd(
    model: BenchModelOpt = None,
    variant: VariantOpt = "base",
    runs: Annotated[int, typer.Option("--runs", help="Interleaved rounds per regime (medians).")] = 3,
    out: BenchOutOpt = Path("bench-results/peer.json"),
    threads: ThreadsOpt = None,
) -> None:
    """ragqa against llama.cpp (llama-cpp-python) on the packaged model's own GGUF: the same prompt tokens,
    greedy, the same new tokens, interleaved, in two regimes (RAG: ~900 prompt / 20 new; long: ~500 / 96)."""
    from ragqa.benchmarks.bench import bench_peer

    settings = for_variants(command_settings(threads=threads, model=model), model, [variant])
    bench_peer(settings, out, runs=runs, variant=variant, echo=err)


@bench_app.command("structured")
def bench_structured_cmd(
    model: BenchModelOpt = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Cap per answer.")] = 64,
    out: BenchOutOpt = Path("bench-results/structured.json"),
    threads: ThreadsOpt = None,
) -> None:
    """Structured output: the same extraction prompts answered freely and constrained to their JSON
    schema: answers that validate, seconds per answer, decode tokens/s, the tokenizer table's cost."""
    from ragqa.benchmarks.structured import bench_structured

    bench_structured(command_settings(threads=threads, model=model), out, max_new_tokens=max_new_tokens,
                     echo=err)


bench_app.command("all")(bench_all_cmd)


def _bench_all(quick, model, corpus, queries, out, stages, threads) -> None:
    from rich.console import Console
    from rich.table import Table

    from ragqa.benchmarks.bench import QUICK_MODEL, all_table_rows, bench_all, format_all_table

    if corpus is None and not quick and (SHARED_SCIFACT / "corpus.jsonl").is_file():
        corpus = SHARED_SCIFACT / "corpus.jsonl"
        queries = queries or SHARED_SCIFACT / "queries.jsonl"
    settings = command_settings(threads=threads, model=model or (QUICK_MODEL if quick else None))
    r = bench_all(settings, out, quick=quick, corpus=corpus, queries=queries,
                  stages=tuple(x.strip() for x in stages.split(",") if x.strip()), echo=err)
    typer.echo(format_all_table(r).splitlines()[0])
    table = Table()
    for column in ("stage", "measurement", "value"):
        table.add_column(column)
    for row in all_table_rows(r):
        table.add_row(*row)
    Console().print(table)
    typer.echo(f"wrote {out} and {out.with_suffix('.md')}")
    if any(s["status"] == "failed" for s in r["stages"].values()):
        raise typer.Exit(1)


@bench_app.command("scale")
def bench_scale_cmd(
    stream_chunks: Annotated[int, typer.Option("--stream-chunks", help="Generated one-chunk documents "
                                               "streamed into an index (fake embedder; 0 skips).")] = 200_000,
    pieces: Annotated[int, typer.Option("--pieces", help="Pieces the generated corpus is added in.")] = 4,
    hnsw_n: Annotated[int, typer.Option("--hnsw-n", help="Vectors for HNSW vs exact (0 skips).")] = 1_000_000,
    vectors_from: Annotated[Optional[Path], typer.Option("--vectors-from", help="Index whose real vectors "
                                                         "seed the HNSW corpus.")] = None,
    queries: Annotated[Optional[Path], typer.Option("--queries", help="JSONL questions for the HNSW part.")] = SHARED_SCIFACT / "queries.jsonl",
    ef_construction: Annotated[int, typer.Option("--ef-construction", help="HNSW efConstruction for the "
                                                 "measurement.")] = 64,
    checks_at: Annotated[int, typer.Option("--checks-at", help="Also time the checks on open for a live "
                                           "version of this many chunks (files of the streamed index's "
                                           "bytes per chunk; 0 skips).")] = 1_000_000,
    backend: VectorBackendOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON.")] = Path("bench-results/scale.json"),
    threads: ThreadsOpt = None,
) -> None:
    """Peak memory and open time while streaming a large generated corpus into an index; HNSW vs
    exact latency and recall."""
    from ragqa.benchmarks.scale import bench_scale

    bench_scale(command_settings(threads=threads, vector_backend=backend), out, stream_chunks=stream_chunks,
                pieces=pieces, hnsw_n=hnsw_n, vectors_from=vectors_from, queries=queries,
                ef_construction=ef_construction, checks_at=checks_at, echo=typer.echo)
