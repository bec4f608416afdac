"""`ragqa index ...` and `ragqa search`: build, update, inspect, verify, migrate and search an index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ragqa.apps.common import (BackendOpt, ConfigOpt, EmbedderOpt, IndexOpt, JsonOpt, QdrantCollectionOpt,
                               QdrantPathOpt, QdrantUrlOpt, ThreadsOpt, VectorBackendOpt, app,
                               command_settings, err, index_app, print_report, progress_bar, warn_line)
from ragqa.errors import ConfigError


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
    with progress_bar("indexing") as progress:
        report = Index.build(paths, index, settings, embedder=embedder, prune=prune, rebuild=rebuild,
                             warn=warn_line, progress=progress, embed_backend=overrides.get("embed_backend"))
    print_report(report, index, json_out)


@index_app.command("remove")
def index_remove(
    doc_ids: Annotated[list[str], typer.Argument(help="Document ids (see `ragqa index info --documents`).")],
    index: IndexOpt,
    json_out: JsonOpt = False,
) -> None:
    """Remove documents from the index by id."""
    from ragqa.indexing.index import Index

    print_report(Index.remove(doc_ids, index, command_settings()), index, json_out)


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
        err(f"warning: {w}")
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
        err(f"problem: {p}")
    if problems:
        if not any("repair it with" in p for p in problems):
            err(repair_hint(index))
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
