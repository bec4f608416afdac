"""Vector storage behind one small interface, so another engine can stand in for FAISS.

``FaissStore``: an ``IndexIDMap2`` over an exact inner-product index (``flat``, default) or HNSW
(``hnsw``, for large corpora), so chunks keep stable 64-bit ids and can be removed and replaced.
Vectors are L2-normalised, so inner product is cosine similarity. HNSW cannot delete in place:
a removal rebuilds the graph from the stored vectors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from ragqa.errors import IndexCorrupt


class VectorStore(Protocol):
    dim: int

    def __len__(self) -> int: ...
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> None: ...
    def search_many(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]: ...
    def ids(self) -> np.ndarray: ...
    def save(self, path: Path) -> None: ...


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

    def search_many(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]: ...
    def ids(self) -> np.ndarray: ...
    def save(self, path: Path) -> None: ...


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

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        if len(self) == 0:
            return []
        scores, ids = self._index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32),
                                         min(k, len(self)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]

    def search_many(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        if len(self) == 0:
            return [[] for _ in range(len(queries))]
        scores, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self)))
        return [[(int(i), float(s)) for i, s in zip(row_i, row_s) if i != -1] for row_i, row_s in zip(ids, scores)]

    def save(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self._index, str(directory / self.FILE))

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
