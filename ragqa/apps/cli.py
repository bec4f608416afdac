"""The ``ragqa`` command: a thin skin over the library. Each command parses, calls one library
function, prints. Library errors become one line on stderr here, in ``main``; a traceback is
shown only with ``--debug`` (or RAGQA_DEBUG=1)."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ragqa import resources
from ragqa.apps.common import command_settings
from ragqa.errors import ConfigError, RagqaError

if TYPE_CHECKING:  # the settings (pydantic) load with the first command that needs them
    from ragqa.config import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Offline retrieval-augmented question answering over your documents.")
index_app = typer.Typer(no_args_is_help=True, help="Build, update, inspect and verify an index.")
bench_app = typer.Typer(invoke_without_command=True, help="Benchmarks: print a table, write JSON. "
                        "Without a subcommand: every stage in one go (as `bench all`).")
app.add_typer(index_app, name="index")
app.add_typer(bench_app, name="bench")

from ragqa.apps.train_cli import (bench_train_command, data_app,  # noqa: E402  (own module:
                                train_command)                  # cli.py stays small)

app.add_typer(data_app, name="data")
app.command("train")(train_command)
bench_app.command("train")(bench_train_command)

IndexOpt = Annotated[Path, typer.Option("--index", "-i", help="Index directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
EmbedderOpt = Annotated[Optional[str], typer.Option(
    "--embedder", help="Packaged model name or local sentence-transformers directory "
    "(default: the index's own; for a new index all-MiniLM-L6-v2).")]
BackendOpt = Annotated[Optional[str], typer.Option("--embed-backend", help="torch | onnx | onnx-int8.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for the models "
                                                   "(env RAGQA_THREADS).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="A ragqa.toml settings file.")]
VectorBackendOpt = Annotated[Optional[str], typer.Option("--backend", help="Where a new index keeps its "
                             "vectors: faiss (default) | qdrant.")]
QdrantUrlOpt = Annotated[Optional[str], typer.Option("--qdrant-url", help="Qdrant server, e.g. "
                         "http://localhost:6333 (API key: env QDRANT_API_KEY).")]
QdrantPathOpt = Annotated[Optional[str], typer.Option("--qdrant-path", help="Qdrant local mode directory "
                          "(development; default INDEX/qdrant).")]
QdrantCollectionOpt = Annotated[Optional[str], typer.Option("--qdrant-collection", help="Collection name "
                                "(default ragqa-<index dir name>).")]


def _for_variants(settings: Settings, model_flag: str | None, variants: list[str]) -> Settings:
    """Without --model, serve a variant on the base model its card names (and say so)."""
    if model_flag:
        return settings
    from ragqa.answering.pipeline import model_for_variants

    switched = model_for_variants(settings, variants)
    if switched.model != settings.model:
        _err(f"using model {switched.model}: the base the variant was trained on")
    return switched


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _warn(w) -> None:
    _err(str(w))


@contextmanager
def _progress(label: str, unit: str = "docs"):
    """A rich progress bar on stderr when it is a terminal (UNIT/s and ETA); silent otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task(label, total=None, rate="")

        def update(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{done / elapsed:.1f} {unit}/s" if elapsed > 0 and done else ""
            bar.update(task, completed=done, total=total, rate=rate)

        yield update


# --- index -----------------------------------------------------------------------------
@index_app.command("build")
def index_build(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively).")],
    index: IndexOpt,
    json_out: JsonOpt = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Start from scratch (new embedder or "
                                          "chunking settings).")] = False,
    embedder: EmbedderOpt = None,
    embed_backend: BackendOpt = None,
    index_type: Annotated[Optional[str], typer.Option("--index-type", help="flat (exact) | hnsw.")] = None,
    chunk_tokens: Annotated[Optional[int], typer.Option("--chunk-tokens", help="Chunk size in embedder "
                                                        "tokens (default: the embedder's window).")] = None,
    chunk_overlap: Annotated[Optional[int], typer.Option("--chunk-overlap", help="Overlap in tokens.")] = None,
    backend: VectorBackendOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    qdrant_path: QdrantPathOpt = None,
    qdrant_collection: QdrantCollectionOpt = None,
    threads: ThreadsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Sync the index to PATHS: add new documents, re-embed changed ones, remove vanished ones."""
    _build(paths, index, json_out, True, rebuild, embedder, config, embed_backend=embed_backend,
           index_type=index_type, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, threads=threads,
           vector_backend=backend, qdrant_url=qdrant_url, qdrant_path=qdrant_path,
           qdrant_collection=qdrant_collection)


@index_app.command("add")
def index_add(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to add or update.")],
    index: IndexOpt,
    json_out: JsonOpt = False,
    embedder: EmbedderOpt = None,
    embed_backend: BackendOpt = None,
    threads: ThreadsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add or update documents from PATHS, keeping every other document in the index.
    --embedder / --embed-backend, when given, must match what built the index (refused otherwise)."""
    _build(paths, index, json_out, False, False, embedder, config, embed_backend=embed_backend, threads=threads)


def _build(paths, index, json_out, prune, rebuild, embedder, config, **overrides) -> None:
    from ragqa.indexing.index import Index

    settings = command_settings(config, **overrides)
    with _progress("indexing") as progress:
        report = Index.build(paths, index, settings, embedder=embedder, prune=prune, rebuild=rebuild,
                             warn=_warn, progress=progress, embed_backend=overrides.get("embed_backend"))
    _print_report(report, index, json_out)


def _print_report(report, index: Path, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(report.to_json()))
        return
    what = "unchanged, nothing written" if report.version is None else f"version {report.version}"
    typer.echo(f"{index}: {report.documents} documents, {report.chunks} chunks ({what}); "
               f"added {report.added}, updated {report.updated}, removed {report.removed}, "
               f"unchanged {report.unchanged}, skipped {report.skipped} files, "
               f"{len(report.warnings)} warnings, {report.seconds:.1f} s")


@index_app.command("remove")
def index_remove(
    doc_ids: Annotated[list[str], typer.Argument(help="Document ids (see `ragqa index info --documents`).")],
    index: IndexOpt,
    json_out: JsonOpt = False,
) -> None:
    """Remove documents from the index by id."""
    from ragqa.indexing.index import Index

    _print_report(Index.remove(doc_ids, index, command_settings()), index, json_out)


@index_app.command("info")
def index_info(
    index: IndexOpt,
    json_out: JsonOpt = False,
    documents: Annotated[bool, typer.Option("--documents", help="List the documents too.")] = False,
) -> None:
    """What an index holds and how it was built."""
    from ragqa.indexing.index import Index
    from ragqa.indexing.vectorstore import describe

    with Index.open(index, command_settings()) as idx:
        info = idx.info()
        if documents:
            info["documents_list"] = idx.documents()
    if json_out:
        typer.echo(json.dumps(info, ensure_ascii=False))
        return
    emb = info["embedder"]
    typer.echo(f"{index}: {info['documents']} documents, {info['chunks']} chunks\n"
               f"  embedder  {emb['name']} ({emb['backend']}, {emb['dim']} dims, fingerprint {emb['fingerprint']})\n"
               f"  chunks    <= {info['chunking']['max_tokens']} tokens, overlap {info['chunking']['overlap']}\n"
               f"  vectors   {describe(info['vector_store'])}\n"
               f"  created   {info['created']}\n  updated   {info['updated']}")
    for d in info.get("documents_list", []):
        typer.echo(f"  {d['doc_id']}\t{d['chunks']} chunks\t{d['title']}")


@index_app.command("migrate")
def index_migrate(
    source: Annotated[Path, typer.Option("--from", help="The index directory to move.")],
    target: Annotated[str, typer.Option("--to", help="qdrant://http://HOST:6333 (server), qdrant://DIR "
                                        "(local mode), faiss or faiss:hnsw.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Write a new index here and leave --from "
                                                "as it is (default: a new version of --from).")] = None,
    qdrant_collection: QdrantCollectionOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Move an index's vectors to another store without re-embedding (chunks and BM25 are shared)."""
    from ragqa.indexing.index import migrate

    report = migrate(source, target, out, command_settings(), collection=qdrant_collection)
    for w in report.warnings:
        _err(f"warning: {w}")
    if json_out:
        typer.echo(json.dumps(report.to_json()))
        return
    typer.echo(f"{out or source}: {report.chunks} vectors of {report.documents} documents copied to {target} "
               f"(version {report.version}), {report.seconds:.1f} s")


@index_app.command("verify")
def index_verify(index: IndexOpt) -> None:
    """Exit 0 when FAISS, the chunk store, BM25 and the manifest agree (and checksums match)."""
    from ragqa.indexing.index import verify
    from ragqa.indexing.storage import repair_hint

    problems = verify(index)
    for p in problems:
        _err(f"problem: {p}")
    if problems:
        if not any("repair it with" in p for p in problems):
            _err(repair_hint(index))
        raise typer.Exit(4)
    typer.echo(f"{index}: ok")


# --- search ----------------------------------------------------------------------------
@app.command("search")
def search(
    question: Annotated[Optional[str], typer.Argument(help="The question (or use --queries).")] = None,
    index: IndexOpt = Path("indexes/demo"),
    k: Annotated[int, typer.Option("-k", help="How many hits.")] = 10,
    mode: Annotated[Optional[str], typer.Option("--mode", help="dense | bm25 | hybrid.")] = None,
    per_doc: Annotated[bool, typer.Option("--per-doc", help="Keep only the best chunk per document.")] = False,
    queries: Annotated[Optional[Path], typer.Option("--queries", help='JSONL file of {"_id", "text"} lines.')] = None,
    json_out: JsonOpt = False,
    embedder: EmbedderOpt = None,
    embed_backend: BackendOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Find the chunks most similar to a question. --embedder / --embed-backend, when given, must
    match what built the index (refused otherwise); by default the index's own embedder is used."""
    from ragqa.indexing.index import Index

    if (question is None) == (queries is None):
        raise ConfigError("give either a QUESTION or --queries FILE")
    settings = command_settings(threads=threads)
    with Index.open(index, settings, embedder=embedder, embed_backend=embed_backend) as idx:
        if queries is None:
            hits = idx.search(question, k=k, mode=mode, per_doc=per_doc)
            if json_out:
                typer.echo(json.dumps({"query": question, "hits": [h.to_json() for h in hits]}, ensure_ascii=False))
                return
            for rank, h in enumerate(hits, 1):
                text = " ".join(h.text.split())
                typer.echo(f"{rank:2d}. {h.score:.4f}  {h.doc_id}  {h.title}\n    {text[:200]}")
            return
        from ragqa.evaluation.evaluate import read_queries

        items = read_queries(queries)
        for start in range(0, len(items), 64):
            part = items[start:start + 64]
            for (qid, _), hits in zip(part, idx.search_batch([t for _, t in part], k=k, mode=mode, per_doc=per_doc)):
                typer.echo(json.dumps({"query_id": qid, "hits": [h.to_json() for h in hits]}, ensure_ascii=False))


eval_app = typer.Typer(no_args_is_help=True, help="Evaluate retrieval and answers.")
app.add_typer(eval_app, name="eval")


@eval_app.command("retrieval")
def eval_retrieval(
    index: IndexOpt,
    queries: Annotated[Path, typer.Option("--queries", help='JSONL of {"_id", "text"}.')],
    qrels: Annotated[Path, typer.Option("--qrels", help="BEIR qrels TSV (query-id, corpus-id, score).")],
    mode: Annotated[Optional[str], typer.Option("--mode", help="dense | bm25 | hybrid (default: all three).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="A random sample of N judged queries.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --limit sample.")] = 0,
    json_out: JsonOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """nDCG@k, Recall@k and MRR@10 of the index's document rankings against qrels."""
    from ragqa.evaluation.evaluate import evaluate_retrieval, read_qrels, read_queries, sample_queries
    from ragqa.indexing.index import Index

    settings = command_settings(threads=threads)
    items, judged = sample_queries(read_queries(queries), read_qrels(qrels), limit, seed)
    results = {}
    with Index.open(index, settings) as idx:
        for m in [mode] if mode else ["dense", "bm25", "hybrid"]:
            with _progress(f"{m} queries", "queries") as progress:
                results[m] = evaluate_retrieval(idx, items, judged, mode=m, progress=progress)
    if json_out:
        typer.echo(json.dumps({"index": str(index), "qrels": str(qrels), "limit": limit, "seed": seed,
                               "results": results}))
        return
    cols = ["ndcg@10", "recall@100", "mrr@10", "recall@10"]
    typer.echo(f"{'mode':8s} " + " ".join(f"{c:>10s}" for c in cols) + "   queries")
    for m, r in results.items():
        typer.echo(f"{m:8s} " + " ".join(f"{r[c]:10.4f}" for c in cols) + f"   {r['queries']}")


@eval_app.command("qa")
def eval_qa(
    index: IndexOpt,
    data: Annotated[Path, typer.Option("--data", help="SQuAD json, or JSONL with question and answers.")],
    variants: Annotated[str, typer.Option("--variants", help="Comma-separated: base,NAME,...")] = "base",
    report: Annotated[Path, typer.Option("--report", help="Directory for report.md and results.json.")] = Path("reports/qa"),
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Generator model.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="A random sample of N questions.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    k: Annotated[Optional[int], typer.Option("-k", help="Passages to retrieve.")] = None,
    template: Annotated[Optional[str], typer.Option("--template")] = None,
    gold_context: Annotated[bool, typer.Option("--gold-context", help="Give the model the gold paragraph "
                                               "instead of retrieving (the reading-comprehension ceiling).")] = False,
    predictions: Annotated[bool, typer.Option("--predictions", help="Also write predictions.jsonl.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """EM / F1 / gold passage in sources / abstention per variant, on the same retrieved passages.
    Variants of different base models compare in one report: --variants
    qwen2.5-coder-1.5b-instruct:base,squad-lora-qwen (quality, seconds, memory and size side by side)."""
    from ragqa.evaluation.evaluate import contenders, evaluate_qa, load_qa_data, sample_items, write_qa_report
    from ragqa.answering.pipeline import RagQA, make_generator, model_for_variants

    names = [v.strip() for v in variants.split(",") if v.strip()]
    settings = command_settings(threads=threads, model=model)
    if not any(":" in n for n in names):  # one base: the one the variants were trained on
        settings = _for_variants(settings, model, names)
    entries = contenders(names, settings.model,
                         variant_base=lambda name: model_for_variants(settings, [name]).model)
    items = sample_items(load_qa_data(data), limit, seed)
    with RagQA.open(index, settings) as qa, _progress("questions", "questions") as progress:
        for e in entries:
            if e.model == settings.model:
                qa.check_variant(e.variant)
        summary, rows = evaluate_qa(qa, items, entries, gold_context=gold_context, k=k, template=template,
                                    progress=progress,
                                    generator_for=lambda m: make_generator(settings.replace(model=m)))
    models = list(dict.fromkeys(e.model for e in entries))
    meta = {"data": str(data), "index": str(index), "model": ",".join(models), "questions": len(items),
            "seed": seed, "k": k or settings.top_k, "template": template or settings.template,
            "gold_context": gold_context, "threads": settings.threads}
    _echo_report(write_qa_report(report, summary, rows, meta, predictions=predictions))


def _echo_report(report) -> None:
    """The report's tables (without the charts and the examples), then what was written."""
    typer.echo(report.tables)
    typer.echo(f"wrote {', '.join(report.files)}")


@eval_app.command("summarize")
def eval_summarize(
    data: Annotated[Path, typer.Option("--data", help="JSONL: DialogSum (dialogue, summary) or input/output.")],
    variants: Annotated[str, typer.Option("--variants", help="Comma-separated: base,NAME,...")] = "base",
    report: Annotated[Path, typer.Option("--report", help="Directory for report.md and results.json.")] = Path("reports/summarize"),
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Generator model.")] = None,
    template: Annotated[str, typer.Option("--template")] = "summarize",
    limit: Annotated[Optional[int], typer.Option("--limit", help="A random sample of N items.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    predictions: Annotated[bool, typer.Option("--predictions", help="Also write predictions.jsonl.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """ROUGE-1/2/L (95% CIs) and BLEU per variant on the same summarisation prompts. Variants of
    different base models compare in one report, as in `eval qa` (MODEL:base, MODEL:NAME)."""
    from ragqa.evaluation.evaluate import (contenders, evaluate_summaries, load_summarization_data, sample_items,
                                  write_summary_report)
    from ragqa.answering.pipeline import generation_settings, make_generator, model_for_variants

    names = [v.strip() for v in variants.split(",") if v.strip()]
    settings = command_settings(threads=threads, model=model)
    if not any(":" in n for n in names):  # one base: the one the variants were trained on
        settings = _for_variants(settings, model, names)
    entries = contenders(names, settings.model,
                         variant_base=lambda name: model_for_variants(settings, [name]).model)
    items = sample_items(load_summarization_data(data), limit, seed)
    with _progress("dialogues", "items") as progress:
        summary, rows = evaluate_summaries(make_generator(settings), items, entries, template=template,
                                           settings=generation_settings(settings), progress=progress,
                                           generator_for=lambda m: make_generator(settings.replace(model=m)))
    models = list(dict.fromkeys(e.model for e in entries))
    meta = {"data": str(data), "model": ",".join(models), "items": len(items), "seed": seed, "template": template,
            "threads": settings.threads}
    _echo_report(write_summary_report(report, summary, rows, meta, predictions=predictions))


# --- answering -------------------------------------------------------------------------
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Generator: packaged name "
                     "(qwen2.5-coder-0.5b-instruct, smollm2-135m-instruct), local directory or hub id.")]
VariantOpt = Annotated[str, typer.Option("--variant", "-v", help="base, or a variant name from "
                                         "`ragqa variants list`.")]


@app.command("ask")
def ask(
    question: Annotated[Optional[str], typer.Argument(help="The question (or use --questions).")] = None,
    index: IndexOpt = Path("indexes/demo"),
    model: ModelOpt = None,
    variant: VariantOpt = "base",
    k: Annotated[Optional[int], typer.Option("-k", help="Passages to retrieve.")] = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="dense | bm25 | hybrid.")] = None,
    questions: Annotated[Optional[Path], typer.Option("--questions", help='JSONL of {"id", "question"}.')] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as it is generated.")] = False,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens")] = None,
    template: Annotated[Optional[str], typer.Option("--template", help="qa, qa-concise or a .toml file.")] = None,
    show_prompt: Annotated[bool, typer.Option("--show-prompt", help="Print the exact text the model is "
                                              "given (with --json: the \"prompt\" field).")] = False,
    json_out: JsonOpt = False,
    threads: ThreadsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Answer a question from the index, citing the passages used."""
    from ragqa.evaluation.evaluate import read_queries
    from ragqa.answering.pipeline import RagQA

    if (question is None) == (questions is None):
        raise ConfigError("give either a QUESTION or --questions FILE")
    settings = _for_variants(command_settings(config, threads=threads, max_new_tokens=max_new_tokens, model=model),
                             model, [variant])
    with RagQA.open(index, settings) as qa:
        qa.check_variant(variant)  # an unknown variant is refused before retrieval and model loading
        if questions is not None:
            for qid, text in read_queries(questions, text_key="question"):
                ans = qa.ask(text, variant=variant, k=k, mode=mode, template=template)
                out = ans.to_json(prompt=show_prompt)
                keys = ("answer", "abstained", "reason", "variant", "sources", "timings") + (
                    ("prompt",) if show_prompt else ())
                typer.echo(json.dumps({"id": qid, **{key: out[key] for key in keys}}, ensure_ascii=False))
            return
        if stream and not json_out:
            status = _status_printer(show_prompt)
            _print_sources(_echo_stream(qa.stream(question, variant=variant, k=k, mode=mode, template=template,
                                                  status=status)))
            return
        ans = qa.ask(question, variant=variant, k=k, mode=mode, template=template)
    if json_out:
        typer.echo(json.dumps(ans.to_json(prompt=show_prompt), ensure_ascii=False))
        return
    if show_prompt:
        _print_prompt(ans.prompt)
    typer.echo(ans.text)
    _print_sources(ans)


def _print_prompt(prompt: str | None) -> None:
    if prompt is None:
        typer.echo("--- no prompt: ragqa answered without asking the model ---")
        return
    typer.echo(f"--- the prompt, exactly as the model reads it ---\n{prompt}\n--- end of the prompt ---")


def _status_printer(show_prompt: bool):
    """What ``ask --stream`` says before the first token: each stage on stderr (so the answer on
    stdout stays clean), and with --show-prompt the prompt once it is built."""
    def status(st) -> None:
        if show_prompt and st.prompt is not None:
            _print_prompt(st.prompt.text)
        _err(f"({st.message} ...)")
    return status


def _echo_stream(pieces, prefix: str = ""):
    """Print streamed text as it comes (``prefix`` before the first piece); return the final
    Answer (whose text may end with a citation ragqa added after the model finished: print that
    rest too)."""
    from ragqa.answering.pipeline import Answer

    shown, ans = "", None
    for piece in pieces:
        if isinstance(piece, Answer):
            ans = piece
        else:
            typer.echo((prefix if not shown else "") + piece, nl=False)
            shown += piece
    rest = ans.text[len(shown.strip()):] if ans.text.startswith(shown.strip()) else ""
    typer.echo(rest)
    return ans


def _print_sources(ans) -> None:
    if ans.abstained and ans.reason:
        typer.echo(f"({ans.reason})")
    for s in ans.sources:
        text = " ".join(s.text.split())
        page = f", page {s.page}" if s.page else ""
        typer.echo(f"[{s.n}]{'*' if s.cited else ' '} {s.title or s.doc_id} ({s.doc_id}{page}, score {s.score:.3f})\n"
                   f"     {text[:240]}")
    t = ans.timings
    if "generate_ms" in t:
        from ragqa.generators.engine import describe_timings

        added = "; the model cited nothing, ragqa added the citation" if ans.auto_cited else ""
        typer.echo(f"({ans.variant}; retrieve {t['retrieve_ms']:.0f} ms, {describe_timings(t)}{added})")


variants_app = typer.Typer(no_args_is_help=True, help="Generator variants (base, LoRA, soft prompts, ...).")
app.add_typer(variants_app, name="variants")


@variants_app.command("list")
def variants_list(
    model: ModelOpt = None,
    all_models: Annotated[bool, typer.Option("--all", help="Variants of every base model.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Variants in the variants directory, plus a `base` entry for each available base model."""
    from ragqa.generators import BASE_MODELS, list_variants

    settings = command_settings(model=model)
    bases = [settings.model] if model else list(BASE_MODELS)
    rows = list_variants(settings.variants_dir, bases)
    if json_out:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    for r in rows:
        typer.echo(f"{r['name']:28s} {r['kind']:14s} {r['base_model']:30s} {r['path']}")


@variants_app.command("inspect")
def variants_inspect(
    name: Annotated[str, typer.Argument(help="Variant name (under the variants directory) or directory.")],
    model: ModelOpt = None,
    top: Annotated[int, typer.Option("--top", help="Nearest vocabulary tokens per soft-prompt token.")] = 5,
    json_out: JsonOpt = False,
) -> None:
    """What a variant holds: LoRA ranks, parameter count and size on disk; for a soft prompt, the
    vocabulary tokens nearest to each virtual token."""
    from ragqa.generators.inspect import format_inspection, inspect_variant
    from ragqa.generators.models import resolve_model
    from ragqa.generators.registry import Card, find_variant_dir

    settings = command_settings(model=model)
    directory = find_variant_dir(name, settings.variants_dir)
    card = Card.load(directory)
    base = None
    if card.kind == "prompt-tuning":
        base = resolve_model(model or card.base_model or settings.model, settings.cache_dir)
    info = inspect_variant(directory, Path(base) if base and Path(base).is_dir() else None, top=top)
    typer.echo(json.dumps(info, ensure_ascii=False) if json_out else format_inspection(info))


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


@bench_app.callback()
def bench_root(
    ctx: typer.Context,
    quick: QuickOpt = False,
    model: BenchModelOpt = None,
    corpus: BenchCorpusOpt = None,
    queries: BenchQueriesOpt = None,
    out: BenchOutOpt = Path("bench-results/all.json"),
    stages: StagesOpt = "index,query,generate,switch,train",
    threads: ThreadsOpt = None,
) -> None:
    """Benchmarks. Without a subcommand: index, query, generation, variant-switch and training
    stages in one go (`bench all`)."""
    if ctx.invoked_subcommand is None:
        _bench_all(quick, model, corpus, queries, out, stages, threads)


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

    settings = _for_variants(command_settings(threads=threads, model=model), model, [variant])
    bench_answers(settings, out, index=index, variant=variant, echo=_err)


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

    settings = _for_variants(command_settings(threads=threads, model=model), model, [variant])
    bench_peer(settings, out, runs=runs, variant=variant, echo=_err)


@bench_app.command("all")
def bench_all_cmd(
    quick: QuickOpt = False,
    model: BenchModelOpt = None,
    corpus: BenchCorpusOpt = None,
    queries: BenchQueriesOpt = None,
    out: BenchOutOpt = Path("bench-results/all.json"),
    stages: StagesOpt = "index,query,generate,switch,train",
    threads: ThreadsOpt = None,
) -> None:
    """Index build, query latency, generation tokens/s, variant switch and training throughput in one go."""
    _bench_all(quick, model, corpus, queries, out, stages, threads)


def _bench_all(quick, model, corpus, queries, out, stages, threads) -> None:
    from rich.console import Console
    from rich.table import Table

    from ragqa.benchmarks.bench import QUICK_MODEL, all_table_rows, bench_all, format_all_table

    if corpus is None and not quick and (SHARED_SCIFACT / "corpus.jsonl").is_file():
        corpus = SHARED_SCIFACT / "corpus.jsonl"
        queries = queries or SHARED_SCIFACT / "queries.jsonl"
    settings = command_settings(threads=threads, model=model or (QUICK_MODEL if quick else None))
    r = bench_all(settings, out, quick=quick, corpus=corpus, queries=queries,
                  stages=tuple(x.strip() for x in stages.split(",") if x.strip()), echo=_err)
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


@app.command("ui")
def ui(
    index: Annotated[Optional[Path], typer.Option("--index", "-i", help="Index to open first "
                                                  "(every index under indexes/ is offered too).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port on 127.0.0.1 (default 8501).")] = None,
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open a browser tab.")] = False,
) -> None:
    """Chat with your documents in the browser (Streamlit) on http://127.0.0.1:PORT."""
    from ragqa.apps.ui_launch import launch

    code = launch(index, port, headless=not browser)
    if code:
        raise typer.Exit(code)


# --- demo ------------------------------------------------------------------------------
DEMO_QUESTION = "When did Apollo 11 land on the Moon, and who was in its crew?"


@app.command("demo")
def demo(
    index: IndexOpt = Path("indexes/demo"),
    question: Annotated[str, typer.Option("--question", "-q")] = DEMO_QUESTION,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Index the bundled demo corpus (data/demo) and answer a question from it, with sources."""
    from ragqa.indexing.index import Index
    from ragqa.answering.pipeline import RagQA

    corpus = resources.demo_corpus()
    if not corpus.is_dir():
        raise RagqaError(f"{corpus}: the demo corpus is missing; reinstall ragqa (its wheel carries it)")
    settings = command_settings(threads=threads, model=model)
    with _progress("indexing") as progress:
        report = Index.build([corpus], index, settings, warn=_warn, progress=progress)
    _print_report(report, index, False)
    typer.echo(f"\nQ: {question}\n(loading {settings.model}; the first run converts it once, ~1-2 min)")
    with RagQA.open(index, settings) as qa:
        _print_sources(_echo_stream(qa.stream(question, status=_status_printer(False)), prefix="A: "))


@app.command("generate")
def generate(
    input_file: Annotated[Path, typer.Option("--input", help='JSONL of {"id", "input"}.')],
    template: Annotated[str, typer.Option("--template", help="summarize, qa, ... or a .toml file.")] = "summarize",
    model: ModelOpt = None,
    variant: VariantOpt = "base",
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens")] = None,
    json_out: JsonOpt = True,
    threads: ThreadsOpt = None,
) -> None:
    """Plain generation with a template (summarisation, QA-data synthesis): one output per input line."""
    from ragqa.answering.pipeline import make_generator
    from ragqa.answering.plain import plain_outputs
    from ragqa.evaluation.evaluate import read_queries

    settings = _for_variants(command_settings(threads=threads, model=model, max_new_tokens=max_new_tokens),
                             model, [variant])
    items = read_queries(input_file, text_key="input")
    for item_id, out in plain_outputs(make_generator(settings), settings, template, items, variant):
        typer.echo(json.dumps({"id": item_id, "output": out}, ensure_ascii=False) if json_out else out)


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    if debug:
        os.environ["RAGQA_DEBUG"] = "1"


def main(argv: list[str] | None = None) -> int:
    import click
    from typer.exceptions import TyperException

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RAGQA_DEBUG") == "1"
    if not debug:
        import warnings

        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars follow it
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        code = typer.main.get_command(app).main(argv, prog_name="ragqa", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except (click.exceptions.Exit, typer.Exit) as exc:
        return exc.exit_code
    except (click.exceptions.Abort, typer.Abort):
        _err("aborted")
        return 130
    except (click.ClickException, TyperException) as exc:  # typer >= 0.2x raises its vendored click's
        exc.show()
        return exc.exit_code
    except RagqaError as exc:
        if debug:
            raise
        _err(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted; the index was left as it was before this run")
        return 130
    except Exception as exc:  # noqa: BLE001 - one readable line, traceback only with --debug
        if debug:
            raise
        _err(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
