"""The Qdrant vector store (``--backend qdrant``), through ``qdrant-client``.

Where the vectors live (recorded in the manifest's ``vector_store``; opening an index uses it):

- a Qdrant server or cluster: ``--qdrant-url http://host:6333`` (API key from ``QDRANT_API_KEY``);
- qdrant-client's embedded local mode: ``--qdrant-path DIR`` (default ``INDEX/qdrant``). Local mode
  is for development and tests: it searches by brute force in Python, allows one process at a
  time, and qdrant-client persists each point with ``pickle`` (its ``local/persistence.py``), so
  opening a local store unpickles that file: only open local stores you made. A server stores
  its own format. ragqa's own files never hold pickles.

The client code is the same for both. One collection per index (``--qdrant-collection``,
default ``ragqa-<index dir name>``), distance DOT over ragqa's normalised vectors (the same scores
as FAISS), created with the index's owner path in its metadata so that ragqa never writes into a
collection it did not make.

Versions: the collection lives outside ragqa's versioned directories, so each point carries the
payload ``added`` (the version that wrote it) and, once replaced or deleted, ``removed``. Version
V sees the points with ``added <= V`` and not ``removed <= V``. A build writing V+1 adds points
with ``added = V+1`` and marks stale ones ``removed = V+1``; until ``CURRENT`` names V+1, readers
of V see exactly V. A crashed build leaves points and marks above the live version: the next
build deletes / clears them first. Points every kept version has removed are purged after a
commit. Searches ask for the top k unfiltered and filter by payload on the client, re-asking
with the filter only when hidden points took places in the top k.
"""

from __future__ import annotations

import contextlib
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ragqa.errors import ConfigError, IndexCorrupt, IndexError_, IndexLocked, RagqaError
from ragqa.indexing.storage import version_number

PAGE = 512  # points per upsert / scroll / set_payload call

_CLIENTS: dict[str, list] = {}  # location key -> [client, references, lock]
_CLIENTS_LOCK = threading.Lock()


def default_collection(index_dir: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(index_dir).resolve().name).strip("-") or "index"
    return f"ragqa-{name}"


def _stored_path(path: str | Path, index_dir: Path) -> str:
    """A local store path as the manifest records it: relative to the index when inside it."""
    p = Path(path).expanduser().resolve()
    try:
        return p.relative_to(Path(index_dir).resolve()).as_posix()
    except ValueError:
        return str(p)


def qdrant_config(settings, index_dir: Path, *, url: str | None = None, path: str | None = None,
                  collection: str | None = None) -> dict:
    url = url if url is not None else settings.qdrant_url
    path = path if path is not None else settings.qdrant_path
    if url and path:
        raise ConfigError("give either --qdrant-url (a server) or --qdrant-path (local mode), not both")
    if url and not re.match(r"^https?://", url):
        raise ConfigError(f"--qdrant-url {url!r} must start with http:// or https://")
    cfg = {"kind": "qdrant", "index_type": settings.index_type, "metric": "dot", "hnsw_m": settings.hnsw_m,
           "collection": collection or settings.qdrant_collection or default_collection(index_dir),
           "owner": str(Path(index_dir).resolve())}
    if url:
        cfg["url"] = url.rstrip("/")
    else:
        cfg["path"] = _stored_path(path or Path(index_dir) / "qdrant", index_dir)
    return cfg


def parse_target(target: str) -> dict:
    """``qdrant://http://host:6333`` / ``qdrant://https://...`` (a server), ``qdrant://DIR`` (local
    mode; ``qdrant:///abs/dir`` for an absolute one), ``faiss`` or ``faiss:hnsw``."""
    if target in ("faiss", "faiss:flat", "faiss:hnsw"):
        return {"kind": "faiss", "index_type": target.split(":")[1] if ":" in target else None}
    if target.startswith("qdrant://"):
        rest = target[len("qdrant://"):]
        if re.match(r"^https?://", rest):
            return {"kind": "qdrant", "url": rest}
        if rest:
            return {"kind": "qdrant", "path": rest}
    raise ConfigError(f"--to {target!r}: give qdrant://http://HOST:6333, qdrant://DIR (local mode), "
                      "faiss or faiss:hnsw")


def location(cfg: dict, index_dir: Path) -> tuple[str, str]:
    """("url", URL) or ("path", absolute directory) of a manifest's Qdrant entry."""
    if cfg.get("url"):
        return "url", cfg["url"]
    path = Path(cfg["path"])
    return "path", str(path if path.is_absolute() else Path(index_dir).resolve() / path)


def _acquire(cfg: dict, index_dir: Path):
    """One client per location in this process (local mode locks its directory per client)."""
    kind, where = location(cfg, index_dir)
    key = f"{kind}:{where}"
    with _CLIENTS_LOCK:
        entry = _CLIENTS.get(key)
        if entry is None:
            try:
                from qdrant_client import QdrantClient
            except ImportError:
                raise ConfigError(f"Qdrant at {where}: qdrant-client is not installed; "
                                  "pip install 'ragqa[qdrant]'") from None

            if kind == "url":
                import os

                client = QdrantClient(url=where, api_key=os.environ.get("QDRANT_API_KEY") or None,
                                      timeout=60)
            else:
                try:
                    client = QdrantClient(path=where)
                except RuntimeError as exc:
                    if "already accessed" in str(exc):
                        raise IndexLocked(f"{where}: this local Qdrant store is open in another process; "
                                          "local mode allows one process at a time (use a Qdrant server, "
                                          "--qdrant-url, to share an index)") from None
                    raise
            entry = _CLIENTS[key] = [client, 0, threading.RLock()]
        entry[1] += 1
        return key, entry[0], entry[2]


def _release(key: str) -> None:
    with _CLIENTS_LOCK:
        entry = _CLIENTS.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _CLIENTS[key]
            with contextlib.suppress(Exception):
                entry[0].close()


def _visible(version: int):
    from qdrant_client import models as m

    return m.Filter(must=[m.FieldCondition(key="added", range=m.Range(lte=version))],
                    must_not=[m.FieldCondition(key="removed", range=m.Range(lte=version))])


def _is_visible(payload: dict | None, version: int) -> bool:
    payload = payload or {}
    removed = payload.get("removed")
    return payload.get("added", 0) <= version and (removed is None or removed > version)


class QdrantStore:
    """One index version's view of its Qdrant collection (and, when writing, the next one's)."""

    def __init__(self, client, key: str, lock, cfg: dict, where: str, dim: int, *, read_version: int,
                 write_version: int | None, exact: bool, ef_search: int, visible: int | None = None):
        self._client, self._key, self._lock = client, key, lock
        self.cfg, self.where, self.dim = cfg, where, dim
        self.collection = cfg["collection"]
        self.read_version, self.write_version = read_version, write_version
        self.exact, self.ef_search = exact, ef_search
        self.visible = visible  # points this version sees (the manifest's chunk count), when known
        self._closed = False

    # --- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, cfg: dict, dim: int, settings, *, index_dir: Path, version: Path | None,
             write_version: int | None = None, visible: int | None = None, check: bool = True) -> QdrantStore:
        key, client, lock = _acquire(cfg, index_dir)
        store = cls(client, key, lock, cfg, location(cfg, index_dir)[1], dim,
                    read_version=version_number(version) if version is not None else 0,
                    write_version=write_version, exact=cfg.get("index_type", "flat") != "hnsw",
                    ef_search=settings.hnsw_ef_search, visible=visible)
        try:
            if write_version is not None:
                if version is not None:  # an update: the live version's points must be there
                    store._check_collection(dim=False)
                store._ensure_collection(settings)
                store._recover()
            elif check:
                store._check_collection()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release(self._key)

    @contextlib.contextmanager
    def _call(self):
        """Serialise calls on a shared client; one readable error for a failing server."""
        with self._lock:
            try:
                yield
            except RagqaError:
                raise
            except Exception as exc:  # noqa: BLE001 - connection, protocol or server errors
                text = " ".join(str(exc).split())[:300]
                raise IndexError_(f"Qdrant at {self.where}, collection {self.collection!r}: "
                                  f"{type(exc).__name__}: {text}; check that the server is up and "
                                  "--qdrant-url / --qdrant-path is right") from exc

    def _collection_info(self):
        with self._call():
            if not self._client.collection_exists(self.collection):
                return None
            return self._client.get_collection(self.collection)

    def _check_collection(self, dim: bool = True) -> None:
        info = self._collection_info()
        if info is None:
            raise IndexCorrupt(f"Qdrant at {self.where}: collection {self.collection!r} is missing, so this "
                               "index has no vectors; rebuild it with `ragqa index build --rebuild` or "
                               "migrate it again")
        size = info.config.params.vectors.size
        if dim and size != self.dim:
            raise IndexCorrupt(f"Qdrant collection {self.collection!r} holds {size}-dim vectors, the "
                               f"manifest says {self.dim}; rebuild with `ragqa index build --rebuild`")

    def _ensure_collection(self, settings) -> None:
        from qdrant_client import models as m

        info = self._collection_info()
        owner = self.cfg["owner"]
        if info is not None:
            made_for = (info.config.metadata or {}).get("ragqa_index")
            if made_for != owner:
                raise ConfigError(
                    f"Qdrant collection {self.collection!r} at {self.where} already exists and belongs to "
                    f"{made_for or 'something other than ragqa'}; choose another --qdrant-collection or delete it")
            size = info.config.params.vectors.size
            if size != self.dim:
                raise ConfigError(f"Qdrant collection {self.collection!r} holds {size}-dim vectors, the "
                                  f"embedder gives {self.dim}; pass another --qdrant-collection for this rebuild")
            return
        hnsw = self.cfg.get("index_type") == "hnsw"
        with self._call(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local mode warns that payload indexes do nothing there
            self._client.create_collection(
                self.collection, vectors_config=m.VectorParams(size=self.dim, distance=m.Distance.DOT),
                # m=0: no graph at all for an exact ("flat") index
                hnsw_config=m.HnswConfigDiff(m=self.cfg.get("hnsw_m", 32) if hnsw else 0,
                                             ef_construct=settings.hnsw_ef_construction),
                metadata={"ragqa_index": owner})
            for field in ("added", "removed"):
                self._client.create_payload_index(self.collection, field, m.PayloadSchemaType.INTEGER)

    def _recover(self) -> None:
        """Undo what a crashed write left above the live version."""
        from qdrant_client import models as m

        live = self.read_version
        with self._call():
            self._client.delete(self.collection, points_selector=m.FilterSelector(filter=m.Filter(
                must=[m.FieldCondition(key="added", range=m.Range(gt=live))])), wait=True)
            self._client.delete_payload(self.collection, keys=["removed"], points=m.Filter(
                must=[m.FieldCondition(key="removed", range=m.Range(gt=live))]), wait=True)

    # --- writing (the next version) ------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        from qdrant_client import models as m

        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32)
        for start in range(0, len(ids), PAGE):
            part = ids[start:start + PAGE]
            with self._call():
                self._client.upsert(self.collection, points=m.Batch(
                    ids=[int(i) for i in part], vectors=vectors[start:start + PAGE].tolist(),
                    payloads=[{"added": self.write_version} for _ in part]), wait=True)

    def remove(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64)]
        for start in range(0, len(ids), PAGE):
            with self._call():
                self._client.set_payload(self.collection, payload={"removed": self.write_version},
                                         points=ids[start:start + PAGE], wait=True)

    def remove_all(self) -> None:
        """Mark every point the live version sees as removed by the version being written."""
        with self._call():
            self._client.set_payload(self.collection, payload={"removed": self.write_version},
                                     points=_visible(self.read_version), wait=True)

    def save(self, directory: Path) -> None:
        """Nothing to write into the version directory: every call above waited for Qdrant."""

    def purge(self, oldest_kept: int) -> None:
        """Delete the points that no kept version (numbers >= ``oldest_kept``) sees."""
        from qdrant_client import models as m

        with self._call():
            self._client.delete(self.collection, points_selector=m.FilterSelector(filter=m.Filter(
                must=[m.FieldCondition(key="removed", range=m.Range(lte=oldest_kept))])), wait=True)

    def drop(self) -> bool:
        """Delete the collection, if this index made it. True when deleted."""
        info = self._collection_info()
        if info is None or (info.config.metadata or {}).get("ragqa_index") != self.cfg["owner"]:
            return False
        with self._call():
            self._client.delete_collection(self.collection)
        return True

    # --- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._call():
            return int(self._client.count(self.collection, count_filter=_visible(self.read_version),
                                          exact=True).count)

    def _scroll(self, with_vectors: bool, batch: int) -> Iterator[list]:
        offset = None
        while True:
            with self._call():
                points, offset = self._client.scroll(self.collection, scroll_filter=_visible(self.read_version),
                                                     limit=batch, offset=offset, with_payload=False,
                                                     with_vectors=with_vectors)
            if points:
                yield points
            if offset is None:
                return

    def ids(self) -> np.ndarray:
        out = [int(p.id) for page in self._scroll(False, 4096) for p in page]
        return np.sort(np.asarray(out, dtype=np.int64))

    def iter_vectors(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for page in self._scroll(True, batch):
            yield (np.asarray([int(p.id) for p in page], dtype=np.int64),
                   np.asarray([p.vector for p in page], dtype=np.float32))

    def search_many(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        from qdrant_client import models as m

        if self.visible is not None:
            k = min(k, self.visible)
        if k < 1 or not len(queries):
            return [[] for _ in range(len(queries))]
        params = m.SearchParams(exact=self.exact, hnsw_ef=None if self.exact else max(self.ef_search, k))
        queries = np.asarray(queries, dtype=np.float32)

        def ask(filtered: bool, rows):
            with self._call(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # local mode: "search_params has no effect"
                return self._client.query_batch_points(self.collection, requests=[
                    m.QueryRequest(query=queries[i].tolist(), limit=k, params=params,
                                   filter=_visible(self.read_version) if filtered else None,
                                   with_payload=["added", "removed"]) for i in rows])

        out: list[list[tuple[int, float]]] = []
        again = []
        for i, res in enumerate(ask(False, range(len(queries)))):
            hits = [(int(p.id), float(p.score)) for p in res.points if _is_visible(p.payload, self.read_version)]
            if len(hits) < len(res.points):  # hidden points took places: ask again, filtered
                again.append(i)
            out.append(hits)
        if again:
            for i, res in zip(again, ask(True, again)):
                out[i] = [(int(p.id), float(p.score)) for p in res.points]
        return out
