"""Benchmarks. Each prints a table and writes JSON with machine information; none is a test.

``bench_index``: in one run, on the same documents,
  1. ragqa's full build (empty embedding cache),
  2. a plain LangChain pipeline: RecursiveCharacterTextSplitter -> FAISS.from_documents with the
     same sentence-transformers model,
  3. raw ``SentenceTransformer.encode`` of ragqa's chunks (the floor for any pipeline on torch),
  4. an unchanged rebuild and a rebuild with 1% of the documents changed,
  5. query latency (embed + search) of ``Index.search`` vs raw encode + FAISS search.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ragqa.config import Settings


def machine_info(threads: int) -> dict:
    import faiss
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "faiss": faiss.__version__, "onnxruntime": ort,
            "load_avg_at_start": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _write_jsonl(path: Path, docs: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")


def bench_index(corpus: Path, queries: Path | None, limit: int, settings: Settings, out: Path,
                n_queries: int = 100, skip_langchain: bool = False, echo: Callable[[str], None] = print) -> dict:
    from ragqa.index import Index

    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()][:limit]
    work = Path(tempfile.mkdtemp(prefix="ragqa-bench-"))
    results: dict = {"corpus": str(corpus), "documents": len(rows), "machine": machine_info(settings.threads),
                     "settings": {"embedder": settings.embedder, "embed_backend": settings.embed_backend,
                                  "threads": settings.threads, "index_type": settings.index_type}}
    try:
        data = work / "corpus.jsonl"
        _write_jsonl(data, rows)
        s = settings.replace(cache_dir=work / "cache")  # an empty embedding cache: a true full build
        # the one-time ONNX export (cached on disk) and model loading are not part of a build,
        # as the raw-encode baseline's model load is not part of its time
        from ragqa.embedding import get_embedder

        get_embedder(s).encode(["warm up"])

        echo(f"ragqa full build of {len(rows)} documents ...")
        t_full, report = _timed(lambda: Index.build([data], work / "idx", s))
        results["ragqa_build_s"] = t_full
        results["chunks"] = report.chunks

        t_same, _ = _timed(lambda: Index.build([data], work / "idx", s))
        results["unchanged_rebuild_s"] = t_same

        changed = [dict(r) for r in rows]
        step = max(1, len(rows) // max(1, len(rows) // 100))
        n_changed = 0
        for r in changed[::step]:
            r["text"] = r["text"] + " (revised)"
            n_changed += 1
        _write_jsonl(data, changed)
        t_one, rep1 = _timed(lambda: Index.build([data], work / "idx", s))
        results["changed_1pct_rebuild_s"] = t_one
        results["changed_documents"] = n_changed

        # the chunks ragqa embedded, for the raw-encode floor
        with Index.open(work / "idx", s) as idx:
            texts = [t for _, t in idx.chunks.embed_texts()]
            embedder = idx.embedder
            from sentence_transformers import SentenceTransformer
            import torch

            torch.set_num_threads(settings.threads)
            st = SentenceTransformer(embedder.path, device="cpu")
            echo(f"raw SentenceTransformer.encode of {len(texts)} chunks ...")
            t_raw, _ = _timed(lambda: st.encode(texts, batch_size=32, normalize_embeddings=True,
                                                 show_progress_bar=False))
            results["raw_encode_s"] = t_raw

            if not skip_langchain:
                echo("LangChain RecursiveCharacterTextSplitter -> FAISS.from_documents ...")
                t_lc, n_lc = _timed(lambda: _langchain_pipeline(rows, st))
                results["langchain_s"] = t_lc
                results["langchain_chunks"] = n_lc

            qtexts = [json.loads(line)["text"] for line in queries.read_text().splitlines()[:n_queries]] \
                if queries else [r["title"] or r["text"][:100] for r in rows[:n_queries]]
            for q in qtexts[:5]:  # warm up both paths
                idx.search(q, k=10, mode="dense")
            ragqa_ms = [1000 * _timed(lambda q=q: idx.search(q, k=10, mode="dense"))[0] for q in qtexts]
            raw_index = idx.vectors._index

            def raw_query(q: str) -> None:
                v = st.encode([q], normalize_embeddings=True, show_progress_bar=False)
                raw_index.search(np.asarray(v, dtype=np.float32), 10)

            for q in qtexts[:5]:
                raw_query(q)
            raw_ms = [1000 * _timed(lambda q=q: raw_query(q))[0] for q in qtexts]
            hybrid_ms = [1000 * _timed(lambda q=q: idx.search(q, k=10, mode="hybrid"))[0] for q in qtexts]
        results["query"] = {
            "n": len(qtexts),
            "ragqa_dense_p50_ms": statistics.median(ragqa_ms), "ragqa_dense_p95_ms": _p95(ragqa_ms),
            "raw_p50_ms": statistics.median(raw_ms), "raw_p95_ms": _p95(raw_ms),
            "ragqa_hybrid_p50_ms": statistics.median(hybrid_ms), "ragqa_hybrid_p95_ms": _p95(hybrid_ms)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _ratios(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    echo(format_index_table(results))
    echo(f"wrote {out}")
    return results


def _p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


def _ratios(r: dict) -> None:
    full = r["ragqa_build_s"]
    r["speedup_vs_langchain"] = r["langchain_s"] / full if "langchain_s" in r else None
    r["speed_vs_raw_encode"] = r["raw_encode_s"] / full
    r["unchanged_share"] = r["unchanged_rebuild_s"] / full
    r["changed_1pct_share"] = r["changed_1pct_rebuild_s"] / full
    q = r["query"]
    q["p50_vs_raw"] = q["ragqa_dense_p50_ms"] / q["raw_p50_ms"]
    q["p95_vs_raw"] = q["ragqa_dense_p95_ms"] / q["raw_p95_ms"]


def format_index_table(r: dict) -> str:
    q = r["query"]
    lines = [f"corpus: {r['documents']} documents -> {r['chunks']} chunks; backend {r['settings']['embed_backend']}, "
             f"{r['settings']['threads']} thread(s); {r['machine']['cpu']}",
             f"| measurement | seconds / ms | ratio | goal |", "|---|---|---|---|",
             f"| ragqa full build | {r['ragqa_build_s']:.1f} s | 1.00 | |"]
    if r.get("langchain_s") is not None:
        lines.append(f"| LangChain splitter + FAISS.from_documents | {r['langchain_s']:.1f} s | "
                     f"ragqa {r['speedup_vs_langchain']:.2f}x faster | >= 1.5x |")
    lines += [f"| raw SentenceTransformer.encode of the same chunks | {r['raw_encode_s']:.1f} s | "
              f"ragqa at {r['speed_vs_raw_encode']:.2f}x its speed | >= 0.9x |",
              f"| unchanged rebuild | {r['unchanged_rebuild_s']:.2f} s | {100 * r['unchanged_share']:.1f}% of full | <= 5% |",
              f"| rebuild with 1% of documents changed ({r['changed_documents']}) | {r['changed_1pct_rebuild_s']:.2f} s | "
              f"{100 * r['changed_1pct_share']:.1f}% of full | <= 15% |",
              f"| query p50, ragqa dense (embed + search) | {q['ragqa_dense_p50_ms']:.1f} ms | {q['p50_vs_raw']:.2f}x raw | <= 1.2x |",
              f"| query p95, ragqa dense | {q['ragqa_dense_p95_ms']:.1f} ms | {q['p95_vs_raw']:.2f}x raw | <= 1.2x |",
              f"| query p50 / p95, raw encode + faiss search | {q['raw_p50_ms']:.1f} / {q['raw_p95_ms']:.1f} ms | | |",
              f"| query p50 / p95, ragqa hybrid (dense + BM25 + RRF) | {q['ragqa_hybrid_p50_ms']:.1f} / "
              f"{q['ragqa_hybrid_p95_ms']:.1f} ms | | |"]
    return "\n".join(lines)


def _langchain_pipeline(rows: list[dict], model) -> int:
    """The plain LangChain way, with the same sentence-transformers model (as
    HuggingFaceEmbeddings would call it). Returns the number of chunks."""
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document as LCDocument
    from langchain_core.embeddings import Embeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    class STEmbeddings(Embeddings):
        def embed_documents(self, texts):
            return model.encode(texts, normalize_embeddings=True, show_progress_bar=False).tolist()

        def embed_query(self, text):
            return self.embed_documents([text])[0]

    docs = [LCDocument(page_content=f"{r.get('title', '')}\n{r['text']}", metadata={"id": r["_id"]}) for r in rows]
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=100).split_documents(docs)
    FAISS.from_documents(chunks, STEmbeddings())
    return len(chunks)
