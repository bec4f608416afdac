"""Vector storage behind one small interface; the index's chunk store, BM25 and manifest are the
same whichever engine holds the vectors.

``FaissStore`` (default): an ``IndexIDMap2`` over an exact inner-product index (``flat``) or HNSW
(``hnsw``, for large corpora), saved as one file inside each index version, so chunks keep stable
64-bit ids and can be removed and replaced. HNSW cannot delete in place: a removal rebuilds the
graph from the stored vectors.

``QdrantStore`` (``ragqa.indexing.qdrant_store``): a Qdrant collection, on a server (``--qdrant-url``) or in
qdrant-client's embedded local mode (``--qdrant-path``). The collection lives outside the
versions; each point records the version that added it and the one that removed it, so every
index version keeps seeing exactly its own vectors (see that module).

Vectors are L2-normalised, so inner product is cosine similarity for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from ragqa.errors import ConfigError, IndexCorrupt

BACKENDS = ("faiss", "qdrant")


class VectorStore(Protocol):
    dim: int

    def __len__(self) -> int: ...
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> None: ...
    def search_many(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]: ...
    def ids(self) -> np.ndarray: ...
    def iter_vectors(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...
    def save(self, directory: Path) -> None: ...
    def close(self) -> None: ...


class FaissStore:
    FILE = "vectors.faiss"

    def __init__(self, dim: int, kind: str = "flat", hnsw_m: int = 32, ef_search: int = 128,
                 ef_construction: int = 200, index=None):
        import faiss

        self.dim, self.kind = dim, kind
        self.hnsw_m, self.ef_search, self.ef_construction = hnsw_m, ef_search, ef_construction
        self._index = index if index is not None else faiss.IndexIDMap2(self._inner())
        self._tune()

    def _inner(self):
        import faiss

        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.ef_construction
            return inner
        return faiss.IndexFlatIP(self.dim)

    def _tune(self) -> None:
        import faiss

        if self.kind == "hnsw":
            faiss.downcast_index(self._index.index).hnsw.efSearch = self.ef_search

    def set_ef_search(self, ef: int) -> None:
        """HNSW's efSearch for the next searches (accuracy against speed)."""
        self.ef_search = int(ef)
        self._tune()

    @property
    def faiss_index(self):
        """The FAISS index itself (benchmarks compare ragqa's search with a bare FAISS call)."""
        return self._index

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                     np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        if self.kind == "hnsw":
            keep = np.setdiff1d(self.ids(), np.asarray(ids, dtype=np.int64))
            vectors = self.vectors(keep)
            import faiss

            self._index = faiss.IndexIDMap2(self._inner())
            self._tune()
            self.add(keep, vectors)
        else:
            self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def ids(self) -> np.ndarray:
        import faiss

        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([self._index.reconstruct(int(i)) for i in ids]).astype(np.float32)

    def iter_vectors(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) in storage order, ``batch`` at a time (for migration)."""
        ids = self.ids()
        inner = self._index.index
        for start in range(0, len(ids), batch):
            n = min(batch, len(ids) - start)
            # the inner flat / HNSW storage holds the vectors in the id map's order
            yield ids[start:start + n], inner.reconstruct_n(start, n).astype(np.float32)

    def search_many(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        if len(self) == 0:
            return [[] for _ in range(len(queries))]
        scores, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self)))
        return [[(int(i), float(s)) for i, s in zip(row_i, row_s) if i != -1] for row_i, row_s in zip(ids, scores)]

    def save(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self._index, str(directory / self.FILE))

    def close(self) -> None:
        pass

    @classmethod
    def load(cls, directory: Path, dim: int, kind: str, **kw) -> FaissStore:
        import faiss

        path = directory / cls.FILE
        try:
            index = faiss.read_index(str(path))
        except Exception as exc:
            raise IndexCorrupt(f"{path}: cannot read the FAISS index ({exc}); rebuild with "
                               "`ragqa index build --rebuild`") from None
        if index.d != dim:
            raise IndexCorrupt(f"{path}: vectors have {index.d} dimensions, manifest says {dim}")
        return cls(dim, kind, index=index, **kw)


# --- choosing and opening a backend ------------------------------------------------------------
def new_config(settings, index_dir: Path, backend: str | None = None) -> dict:
    """The manifest's ``vector_store`` entry for a new index (or a migration target)."""
    backend = backend or settings.vector_backend or "faiss"
    if backend not in BACKENDS:
        raise ConfigError(f"setting vector_backend={backend!r} must be one of {', '.join(BACKENDS)}")
    if backend == "faiss":
        return {"kind": "faiss", "index_type": settings.index_type, "metric": "inner_product",
                "hnsw_m": settings.hnsw_m}
    from ragqa.indexing.qdrant_store import qdrant_config

    return qdrant_config(settings, index_dir)


def open_store(cfg: dict, version: Path | None, dim: int, settings, *, index_dir: Path,
               write_version: int | None = None, visible: int | None = None) -> VectorStore:
    """The vector store of an index version. ``version`` is the live version directory (None for
    a new index); with ``write_version`` the store is opened to write that next version: FAISS
    loads a copy (or starts empty), Qdrant cleans up after any crashed write first."""
    if cfg["kind"] == "faiss":
        kw = {"hnsw_m": cfg.get("hnsw_m", 32), "ef_search": settings.hnsw_ef_search}
        if version is None:
            return FaissStore(dim, cfg["index_type"], ef_construction=settings.hnsw_ef_construction, **kw)
        store = FaissStore.load(version, dim, cfg["index_type"], **kw)
        store.ef_construction = settings.hnsw_ef_construction
        return store
    if cfg["kind"] == "qdrant":
        from ragqa.indexing.qdrant_store import QdrantStore

        return QdrantStore.open(cfg, dim, settings, index_dir=index_dir, version=version,
                                write_version=write_version, visible=visible)
    raise IndexCorrupt(f"{version}: unknown vector store kind {cfg['kind']!r}; this ragqa knows "
                       f"{', '.join(BACKENDS)}")


def describe(cfg: dict) -> str:
    """One line for `ragqa index info`."""
    if cfg["kind"] == "qdrant":
        where = cfg.get("url") or f"local {cfg.get('path')}"
        return f"qdrant {cfg['collection']} ({where}, {cfg.get('index_type', 'flat')})"
    return f"faiss {cfg['index_type']}"
