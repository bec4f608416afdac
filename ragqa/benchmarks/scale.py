"""``ragqa bench scale``: how the index behaves as it grows. Prints tables, writes JSON.

1. Streaming (``stream``): a generated corpus of short one-chunk documents is added to an index
   in pieces (``Index.add`` per piece file), with the deterministic fake embedder: this measures
   ragqa's storage / streaming path (loading, chunking, batching, chunk store, vectors, BM25,
   versioned commits), not the encoder. After each piece: chunks, seconds, the process's peak
   RSS (ru_maxrss) and current RSS.

2. HNSW vs exact (``hnsw``): N vectors made from real embeddings (the vectors of an existing
   index, e.g. all-MiniLM-L6-v2 over SciFact) plus small Gaussian perturbations, L2-normalised:
   clusters shaped like real text embeddings rather than isotropic random points, on which
   approximate search is much easier. Queries are real questions embedded by the index's own
   embedder (or, without a queries file, held-out perturbed vectors). For FAISS flat (exact) and
   HNSW at several efSearch: p50 / p95 latency of one query at a time, and recall@10 against
   the exact top 10.
"""

from __future__ import annotations

import gc
import json
import random
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ragqa.config import Settings
from ragqa.memory import rss_mb as _rss_mb
from ragqa.files import write_atomic



def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


_WORDS = None


def _words() -> list[str]:
    global _WORDS
    if _WORDS is None:
        rng = random.Random(7)
        letters = "abcdefghijklmnopqrstuvwxyz"
        _WORDS = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(20000)})
    return _WORDS


def write_piece(path: Path, start: int, n: int, words_per_doc: int = 12) -> None:
    """``n`` one-chunk documents with ids ``start``.. as JSONL (Zipf-like word frequencies)."""
    words = _words()
    rng = np.random.default_rng(start)
    ranks = np.minimum(rng.zipf(1.3, size=(n, words_per_doc)) - 1, len(words) - 1)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            text = " ".join(words[r] for r in ranks[i])
            fh.write(json.dumps({"_id": f"d{start + i}", "title": "", "text": text}) + "\n")


def bench_stream(total: int, pieces: int, settings: Settings, work: Path, echo: Callable[[str], None],
                 checks_at: int = 1_000_000) -> dict:
    from ragqa.indexing.index import Index

    s = settings.replace(embedding_cache=False)
    per = -(-total // pieces)
    rows = []
    base_rss = _rss_mb()
    echo(f"streaming {total:,} one-chunk documents in {pieces} pieces of {per:,} with embedder {s.embedder} "
         f"(fake: this measures ragqa's storage path, not the encoder); start RSS {base_rss:.0f} MB")
    echo(f"| piece | chunks in index | add s | chunks/s | peak RSS MB | RSS MB | open s | of it checks s |\n"
         "|---|---|---|---|---|---|---|---|")
    for p in range(pieces):
        n = min(per, total - p * per)
        if n <= 0:
            break
        piece = work / f"piece-{p:03d}.jsonl"
        write_piece(piece, p * per, n)
        t0 = time.perf_counter()
        report = Index.add([piece], work / "idx", s)
        seconds = time.perf_counter() - t0
        piece.unlink()
        gc.collect()
        row = {"piece": p + 1, "added": n, "chunks": report.chunks, "seconds": round(seconds, 2),
               "chunks_per_s": round(n / seconds, 1), "peak_rss_mb": round(_peak_mb(), 1),
               "rss_mb": round(_rss_mb(), 1), **_open_costs(work / "idx", s)}
        rows.append(row)
        echo(f"| {row['piece']} | {row['chunks']:,} | {row['seconds']:.1f} | {row['chunks_per_s']:.0f} | "
             f"{row['peak_rss_mb']:.0f} | {row['rss_mb']:.0f} | {row['open_s']:.2f} | {row['check_s']:.2f} |")
    disk = sum(f.stat().st_size for f in (work / "idx").rglob("*") if f.is_file())
    out = {"total_chunks": rows[-1]["chunks"] if rows else 0, "pieces": rows, "start_rss_mb": round(base_rss, 1),
           "index_disk_mb": round(disk / 2**20, 1), "embedder": s.embedder, "backend": s.vector_backend or "faiss"}
    if len(rows) >= 2:  # peak RSS grows linearly with the index: slope per chunk, extrapolated
        x = np.array([r["chunks"] for r in rows], dtype=float)
        y = np.array([r["peak_rss_mb"] for r in rows], dtype=float)
        slope, icept = np.polyfit(x, y, 1)
        out["peak_rss_kb_per_chunk"] = round(slope * 1024, 3)
        out["peak_rss_mb_at_1m_extrapolated"] = round(icept + slope * 1_000_000, 0)
        echo(f"peak RSS ~ {icept:.0f} MB + {slope * 1024:.2f} kB per chunk -> ~{out['peak_rss_mb_at_1m_extrapolated']:.0f} MB "
             f"at 1M chunks (extrapolated); index on disk {out['index_disk_mb']:.0f} MB")
    if rows and checks_at > 0:
        out["checks_at"] = _checks_at(checks_at, rows[-1]["live_bytes"] / max(rows[-1]["chunks"], 1), work, echo)
    return out


def _open_costs(directory: Path, settings: Settings) -> dict:
    """Seconds to open the index (the checks included) and of that the checksum of every file."""
    from ragqa.indexing.index import Index
    from ragqa.indexing.storage import IndexDir

    t0 = time.perf_counter()
    Index.open(directory, settings).close()
    open_s = time.perf_counter() - t0
    idir = IndexDir(directory)
    version = idir.current()
    manifest = idir.read_manifest(version)
    t0 = time.perf_counter()
    assert not idir.damaged_files(version, manifest)
    check_s = time.perf_counter() - t0
    live = sum(f.stat().st_size for f in version.rglob("*") if f.is_file())
    return {"open_s": round(open_s, 3), "check_s": round(check_s, 3), "live_bytes": live}


def _checks_at(chunks: int, bytes_per_chunk: float, work: Path, echo: Callable[[str], None]) -> dict:
    """The open-time checks of a live version of ``chunks`` chunks at the measured bytes per chunk:
    files of that total size are written and checked (page cache warm, as right after a build; a
    cold open also reads them from disk)."""
    from ragqa.indexing.storage import CHECKSUM, IndexDir, file_checksum

    version = work / "checks" / "v-000001"
    version.mkdir(parents=True)
    total = int(bytes_per_chunk * chunks)
    block = np.random.default_rng(0).integers(0, 256, size=64 << 20, dtype=np.uint8).tobytes()
    with open(version / "data.bin", "wb") as fh:
        for start in range(0, total, len(block)):
            fh.write(block[: min(len(block), total - start)])
    files = {"data.bin": {"bytes": total, CHECKSUM: file_checksum(version / "data.bin")}}
    seconds = []
    for _ in range(3):
        t0 = time.perf_counter()
        assert not IndexDir(work / "checks").damaged_files(version, {"files": files})
        seconds.append(time.perf_counter() - t0)
    shutil.rmtree(work / "checks", ignore_errors=True)
    out = {"chunks": chunks, "bytes": total, "check_s_median": round(statistics.median(seconds), 2),
           "gb_per_s": round(total / 1e9 / statistics.median(seconds), 2)}
    echo(f"checks on open at {chunks:,} chunks: {total / 2**30:.2f} GiB of files at {bytes_per_chunk:.0f} bytes "
         f"per chunk, checked in {out['check_s_median']:.2f} s ({out['gb_per_s']:.1f} GB/s, warm page cache)")
    return out


def realistic_vectors(seed_vectors: np.ndarray, n: int, noise: float, rng: np.random.Generator,
                      batch: int = 100_000, seeds_out: np.ndarray | None = None) -> np.ndarray:
    """``n`` unit vectors: random seed vectors plus N(0, noise^2) per component, normalised.
    ``seeds_out`` (length n) receives the seed each vector was made from."""
    dim = seed_vectors.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        which = rng.integers(0, len(seed_vectors), m)
        if seeds_out is not None:
            seeds_out[start:start + m] = which
        part = seed_vectors[which] + rng.standard_normal((m, dim), dtype=np.float32) * noise
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        out[start:start + m] = part
    return out


def bench_hnsw(vectors_from: Path, n: int, queries: Path | None, settings: Settings, echo: Callable[[str], None],
               *, noise: float = 0.02, ef_construction: int = 64, ef_search: tuple[int, ...] = (32, 64, 128, 256, 512),
               n_queries: int = 200, seed: int = 0) -> dict:
    import faiss

    from ragqa.indexing.index import Index
    from ragqa.indexing.vectorstore import FaissStore

    faiss.omp_set_num_threads(settings.threads)
    with Index.open(vectors_from, settings) as idx:
        seeds = np.concatenate([v for _, v in idx.vectors.iter_vectors()])
        qv = None
        if queries is not None and queries.is_file():
            from ragqa.evaluation.evaluate import read_queries

            texts = [t for _, t in read_queries(queries)][:n_queries]
            qv = idx.embedder.encode(texts)
            query_kind = f"{len(texts)} questions from {queries.name}, embedded by {idx.embedder.name} ({idx.embedder.backend})"
    rng = np.random.default_rng(seed)
    if qv is None:
        qv = realistic_vectors(seeds, n_queries, noise * 2, rng)
        query_kind = f"{n_queries} held-out perturbed vectors"
    dim = seeds.shape[1]
    echo(f"HNSW vs exact: {n:,} vectors = {len(seeds):,} real {dim}-dim vectors of {vectors_from} + N(0, {noise}^2) "
         f"per component, normalised; queries: {query_kind}; {settings.threads} thread(s)")
    t0 = time.perf_counter()
    seed_of = np.empty(n, dtype=np.int32)
    x = realistic_vectors(seeds, n, noise, rng, seeds_out=seed_of)
    ids = np.arange(1, n + 1, dtype=np.int64)
    gen_s = time.perf_counter() - t0

    flat = FaissStore(dim, "flat")
    t0 = time.perf_counter()
    flat.add(ids, x)
    flat_build = time.perf_counter() - t0
    truth = [[c for c, _ in hits] for hits in flat.search_many(qv, 10)]
    # the nearest neighbour's similarity, to show the queries are not trivially close to a vector
    top_sim = float(np.median([hits[0][1] for hits in flat.search_many(qv, 1)]))

    def latency(store) -> tuple[float, float]:
        times = []
        for q in qv:
            t = time.perf_counter()
            store.search_many(q.reshape(1, -1), 10)
            times.append(1000 * (time.perf_counter() - t))
        times.sort()
        return statistics.median(times), times[int(0.95 * (len(times) - 1))]

    rows = []
    p50, p95 = latency(flat)
    rows.append({"index": "flat (exact)", "ef_search": None, "p50_ms": round(p50, 3), "p95_ms": round(p95, 3),
                 "recall@10": 1.0, "seed_recall@10": 1.0, "build_s": round(flat_build, 1)})
    del flat
    gc.collect()
    echo(f"exact: built in {flat_build:.1f} s, p50 {p50:.2f} ms; building HNSW (M={settings.hnsw_m}, "
         f"efConstruction={ef_construction}) ...")
    hnsw = FaissStore(dim, "hnsw", hnsw_m=settings.hnsw_m, ef_construction=ef_construction)
    t0 = time.perf_counter()
    for start in range(0, n, 100_000):
        hnsw.add(ids[start:start + 100_000], x[start:start + 100_000])
    hnsw_build = time.perf_counter() - t0
    del x
    gc.collect()
    for ef in ef_search:
        hnsw.set_ef_search(ef)
        got = [[c for c, _ in hits] for hits in hnsw.search_many(qv, 10)]
        recall = float(np.mean([len(set(g) & set(t)) / max(1, len(t)) for g, t in zip(got, truth)]))
        # the same at the level of the real vectors the copies came from (near-duplicate copies
        # of one seed are near-ties: which of them comes back matters less than which seeds do)
        seed_recall = float(np.mean([len({seed_of[c - 1] for c in g} & (ts := {seed_of[c - 1] for c in t}))
                                     / max(1, len(ts)) for g, t in zip(got, truth)]))
        p50, p95 = latency(hnsw)
        rows.append({"index": f"hnsw M={settings.hnsw_m}", "ef_search": ef, "p50_ms": round(p50, 3),
                     "p95_ms": round(p95, 3), "recall@10": round(recall, 4),
                     "seed_recall@10": round(seed_recall, 4), "build_s": round(hnsw_build, 1)})
    echo(f"\n| index | efSearch | p50 ms | p95 ms | recall@10 vs exact | seed-level recall@10 | build s |\n"
         "|---|---|---|---|---|---|---|")
    for r in rows:
        echo(f"| {r['index']} | {r['ef_search'] or '-'} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
             f"{r['recall@10']:.4f} | {r['seed_recall@10']:.4f} | {r['build_s']:.1f} |")
    return {"n": n, "dim": dim, "seed_vectors": len(seeds), "noise_std": noise, "queries": query_kind,
            "median_top1_similarity": round(top_sim, 4), "hnsw_m": settings.hnsw_m,
            "ef_construction": ef_construction, "generate_s": round(gen_s, 1), "rows": rows,
            "peak_rss_mb": round(_peak_mb(), 1)}


def bench_scale(settings: Settings, out: Path, *, stream_chunks: int, pieces: int, hnsw_n: int,
                vectors_from: Path | None, queries: Path | None, ef_construction: int = 64,
                checks_at: int = 1_000_000, echo: Callable[[str], None] = print) -> dict:
    from ragqa.benchmarks.bench import machine_info

    results: dict = {"machine": machine_info(settings.threads)}
    work = Path(tempfile.mkdtemp(prefix="ragqa-scale-"))
    try:
        if stream_chunks > 0:
            results["stream"] = bench_stream(stream_chunks, pieces, settings.replace(embedder=settings.embedder
                                             if settings.embedder.startswith("fake") else "fake:384"), work, echo,
                                             checks_at=checks_at)
            shutil.rmtree(work / "idx", ignore_errors=True)
        if hnsw_n > 0:
            if vectors_from is None:
                echo("HNSW part skipped: give --vectors-from INDEX (an index built with a real embedder)")
            else:
                results["hnsw"] = bench_hnsw(vectors_from, hnsw_n, queries, settings, echo,
                                             ef_construction=ef_construction)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(results, indent=1) + "\n")
    echo(f"wrote {out}")
    return results


