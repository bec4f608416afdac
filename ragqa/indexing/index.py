"""The index: documents -> chunks -> vectors (FAISS, or Qdrant: ``vectorstore``) + texts (SQLite)
+ BM25 + a JSON manifest, in crash-safe versions (see ``storage``).

Writing: ``Index.build(paths, dir)`` syncs the index to the paths (new documents added, changed
ones re-chunked and re-embedded, vanished ones removed); ``Index.add`` adds and updates without
removing anything; ``Index.remove`` removes documents by id. Unchanged files cost one hash of
their bytes, and when nothing changed nothing is loaded or written.

Reading: ``Index.open(dir).search(question, k=10, mode="hybrid")``.

Moving: ``migrate(dir, "qdrant://http://host:6333")`` copies the vectors into another store
without re-embedding (a new version of the same index, or a new index with ``out``).
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ragqa.config import EMBED_BACKENDS, Settings
from ragqa.errors import (ConfigError, EmbedderMismatch, IndexCorrupt, IndexNotFound, IndexWriteError,
                          RagqaError)
from ragqa.files import one_line
from ragqa.indexing import bm25 as bm25_mod
from ragqa.indexing import vectorstore
from ragqa.indexing.chunking import ChunkSettings, iter_chunks
from ragqa.indexing.chunkstore import FILE as CHUNKS_FILE
from ragqa.indexing.chunkstore import ChunkStore
from ragqa.indexing.documents import Document, LoadWarning, discover, load_file
from ragqa.indexing.embedding import Embedder, EmbeddingCache, embed_with_cache, get_embedder, text_hash
from ragqa.indexing.manifest import EmbedderRecord, Manifest
from ragqa.indexing.retrieval import Hit, Retrieval, best_per_doc, rrf
from ragqa.indexing.storage import MANIFEST, IndexDir, repair_hint, version_number

BM25_DIR = "bm25"
DOC_BATCH = 256  # documents per progress step
CHUNK_BATCH = 256  # chunks embedded and stored per step (bounds memory whatever the file's size)

Warn = Callable[[LoadWarning], None]
Progress = Callable[[int, int], None]  # (documents done, documents to index)


@dataclass
class BuildReport:
    documents: int = 0
    chunks: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    version: str | None = None
    embedded: int = 0  # chunks the embedder encoded (the rest came from the embedding cache)

    def to_json(self) -> dict:
        out = asdict(self)
        out["warnings"] = len(self.warnings)
        out["seconds"] = round(self.seconds, 3)
        return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _embedder_json(embedder: Embedder, old: Manifest | None = None) -> EmbedderRecord:
    """The manifest's record of ``embedder``. An update with the index's own embedder (opened by
    its recorded path) keeps the recorded name: a packaged model stays "all-MiniLM-L6-v2", not
    the directory it was loaded from."""
    name = embedder.name
    if old and embedder.fingerprint == old["embedder"]["fingerprint"] and name == old["embedder"]["path"]:
        name = old["embedder"]["name"]
    return {"name": name, "path": embedder.path, "dim": embedder.dim,
            "fingerprint": embedder.fingerprint, "backend": embedder.backend,
            "max_tokens": embedder.max_tokens}


def _embedder_for(manifest: Manifest, settings: Settings, name: str | None, backend: str | None = None) -> Embedder:
    """The embedder to use with an existing index: the one that built it (by its recorded path,
    else its name), or ``name`` / ``backend`` when given, which must then produce the same vectors
    (the caller checks with ``_check_embedder``)."""
    rec = manifest["embedder"]
    if backend is not None:
        settings = settings.replace(embed_backend=backend)
    if name is None:
        name = rec["path"] if Path(rec["path"]).is_dir() else rec["name"]
        # torch and onnx give the same vectors; int8 ones differ, so keep whatever built the index
        if backend is None and rec["backend"] in EMBED_BACKENDS and (
                rec["backend"].startswith("onnx-int8") or settings.embed_backend.startswith("onnx-int8")):
            settings = settings.replace(embed_backend=rec["backend"])
    return get_embedder(settings, name)


def _check_embedder(manifest: Manifest, embedder: Embedder, where: Path) -> None:
    rec = manifest["embedder"]
    if embedder.fingerprint != rec["fingerprint"]:
        raise EmbedderMismatch(
            f"{where}: built with embedder {rec['name']} ({rec['backend']}, fingerprint "
            f"{rec['fingerprint']}), but {embedder.name} ({embedder.backend}, fingerprint "
            f"{embedder.fingerprint}) was asked for; use the index's embedder or rebuild with --rebuild")


class Index:
    """A loaded, read-only index version."""

    def __init__(self, directory: Path, version: Path, manifest: Manifest, settings: Settings,
                 embedder: Embedder):
        self.directory = directory
        self.version = version
        self.manifest = manifest
        self.settings = settings
        self.embedder = embedder
        self.vectors = vectorstore.open_store(manifest["vector_store"], version, manifest["embedder"]["dim"],
                                              settings, index_dir=directory,
                                              visible=manifest["counts"]["chunks"])
        self.chunks = ChunkStore(version / CHUNKS_FILE, readonly=True)
        self._bm25: bm25_mod.BM25Index | None = None
        self._doc_of: dict[int, str] | None = None

    # --- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, settings: Settings | None = None, *,
             embedder: str | Embedder | None = None, embed_backend: str | None = None) -> Index:
        """The live version, every file checked against the checksums recorded at commit
        (``IndexCorrupt`` naming the file and the repair otherwise). ``embedder`` / ``embed_backend``
        given: they must produce the vectors the index was built with."""
        settings = settings or Settings.load()
        idir = IndexDir(directory)
        version, manifest = idir.open_checked()  # damage is refused here, never served
        if embedder is None or isinstance(embedder, str):
            emb = _embedder_for(manifest, settings, embedder, embed_backend)
        else:
            emb = embedder
        if embedder is not None or embed_backend is not None:
            _check_embedder(manifest, emb, idir.path)
        try:
            return cls(idir.path, version, manifest, settings, emb)
        except (OSError, ValueError, sqlite3.DatabaseError, RuntimeError) as exc:  # faiss raises RuntimeError
            raise IndexCorrupt(f"{version}: cannot be opened ({one_line(exc, 200)}); "
                               f"{repair_hint(idir.path, manifest)}") from None

    def close(self) -> None:
        self.chunks.close()
        self.vectors.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing (class methods: each makes a new version) -------------------------------
    @classmethod
    def build(cls, paths: Sequence[str | Path], directory: str | Path, settings: Settings | None = None,
              *, embedder: str | Embedder | None = None, prune: bool = True, rebuild: bool = False,
              warn: Warn | None = None, progress: Progress | None = None,
              embed_backend: str | None = None) -> BuildReport:
        """Sync the index at ``directory`` to the documents under ``paths``. A damaged index is
        refused (``IndexCorrupt``, naming the file) unless ``rebuild``, which repairs any damage.
        ``embedder`` / ``embed_backend`` given for an existing index must match the one it was
        built with (``EmbedderMismatch``)."""
        return _Updater(directory, settings or Settings.load(), embedder, warn, progress, embed_backend).run(
            paths=paths, prune=prune, rebuild=rebuild)

    @classmethod
    def add(cls, paths: Sequence[str | Path], directory: str | Path, settings: Settings | None = None,
            **kw) -> BuildReport:
        """Add new and update changed documents; keep every other document."""
        return cls.build(paths, directory, settings, prune=False, **kw)

    @classmethod
    def remove(cls, doc_ids: Sequence[str], directory: str | Path, settings: Settings | None = None,
               **kw) -> BuildReport:
        return _Updater(directory, settings or Settings.load(), kw.get("embedder"), kw.get("warn"),
                        kw.get("progress"), kw.get("embed_backend")).run(paths=[], prune=False, remove=list(doc_ids))

    # --- searching -----------------------------------------------------------------------
    @property
    def bm25(self) -> bm25_mod.BM25Index:
        if self._bm25 is None:
            with self._reading(self.version / BM25_DIR):
                self._bm25 = bm25_mod.BM25Index.load(self.version / BM25_DIR)
        return self._bm25

    @contextmanager
    def _reading(self, path: Path) -> Iterator[None]:
        """Damage found while reading (after the checks on open) is an ``IndexCorrupt`` naming the
        file, never a half result."""
        try:
            yield
        except (OSError, ValueError, sqlite3.DatabaseError, KeyError) as exc:
            raise IndexCorrupt(f"{path}: unreadable ({one_line(exc, 200)}); "
                               f"{repair_hint(self.directory, self.manifest)}") from None

    def _doc(self, chunk_id: int) -> str:
        if self._doc_of is None:
            with self._reading(self.version / CHUNKS_FILE):
                self._doc_of = self.chunks.doc_ids()
        return self._doc_of[chunk_id]

    def search(self, question: str, k: int = 10, mode: str | None = None, per_doc: bool = False) -> list[Hit]:
        return self.search_batch([question], k=k, mode=mode, per_doc=per_doc)[0]

    def search_batch(self, questions: Sequence[str], k: int = 10, mode: str | None = None,
                     per_doc: bool = False) -> list[list[Hit]]:
        """Hits for each question, best first. The questions are embedded in one call."""
        return [r.hits for r in self.retrieve_batch(questions, k=k, mode=mode, per_doc=per_doc)]

    def retrieve_batch(self, questions: Sequence[str], k: int = 10, mode: str | None = None,
                       per_doc: bool = False, coverage: bool = False) -> list[Retrieval]:
        """Like ``search_batch``, also giving each question's best dense cosine similarity and the
        term coverage of its hits when ``coverage`` is asked for (what "is anything relevant here?"
        is judged on: RRF and BM25 scores are not comparable across questions)."""
        mode = mode or self.settings.mode
        if mode not in ("dense", "bm25", "hybrid"):
            raise ConfigError(f"mode {mode!r} must be one of dense, bm25, hybrid")
        if k < 1:
            raise ConfigError(f"k={k} must be >= 1")
        n = max(k, self.settings.candidates) if mode == "hybrid" else k
        # a document can own several chunks: take more, keep the best chunk of each
        fetch = n * 4 if per_doc else n
        dense: list[list[tuple[int, float]]] = [[] for _ in questions]
        if mode in ("dense", "hybrid"):
            qv = self.embedder.encode(list(questions))
            dense = self.vectors.search_many(qv, fetch)
        results = []
        for i, question in enumerate(questions):
            lists = []
            if mode in ("dense", "hybrid"):
                lists.append(best_per_doc(dense[i], self._doc) if per_doc else dense[i])
            if mode in ("bm25", "hybrid"):
                sparse = self.bm25.search(question, fetch)
                lists.append(best_per_doc(sparse, self._doc) if per_doc else sparse)
            if mode != "hybrid":
                ranked = lists[0]
            elif not per_doc:
                ranked = rrf([[c for c, _ in lst[:n]] for lst in lists], self.settings.rrf_k)
            else:
                # fuse documents, not chunks (each list may have picked another chunk of a
                # document); a document is shown with the chunk of the list that ranked it highest
                chunk_of: dict[str, tuple[int, int]] = {}
                for lst in lists:
                    for rank, (c, _) in enumerate(lst[:n]):
                        d = self._doc(c)
                        if d not in chunk_of or rank < chunk_of[d][0]:
                            chunk_of[d] = (rank, c)
                fused = rrf([[self._doc(c) for c, _ in lst[:n]] for lst in lists], self.settings.rrf_k)
                ranked = [(chunk_of[d][1], score) for d, score in fused]
            top = dense[i][0][1] if dense[i] else None
            hits = self._hits(ranked[:k])
            cov = max(self.bm25.coverage(question, [h.text for h in hits]), default=0.0) if coverage else 0.0
            results.append(Retrieval(hits, top, cov))
        return results

    def _hits(self, ranked: Sequence[tuple[int, float]]) -> list[Hit]:
        with self._reading(self.version / CHUNKS_FILE):
            rows = self.chunks.get([c for c, _ in ranked])
        return [Hit(doc_id=r["doc_id"], chunk_id=c, score=float(s), text=r["text"], source=r["source"],
                    title=r["title"], page=r["page"], metadata=r["metadata"])
                for c, s in ranked if (r := rows.get(c))]

    # --- inspecting ----------------------------------------------------------------------
    def info(self) -> dict:
        m = self.manifest
        return {"path": str(self.directory), "version": self.version.name,
                "documents": m["counts"]["documents"], "chunks": m["counts"]["chunks"],
                "embedder": {k: m["embedder"][k] for k in ("name", "path", "dim", "fingerprint", "backend")},
                "chunking": m["chunking"], "vector_store": m["vector_store"],
                "created": m["created"], "updated": m["updated"], "format_version": m["format_version"]}

    def documents(self) -> list[dict]:
        return self.chunks.documents()


def verify(directory: str | Path) -> list[str]:
    """Problems found (empty when the FAISS index, the chunk store, BM25 and the manifest agree,
    and every file matches the checksum recorded when it was written)."""
    idir = IndexDir(directory)
    try:
        version = idir.current()
        manifest = idir.read_manifest(version)
    except RagqaError as exc:
        return [str(exc)]
    problems = idir.damaged_files(version, manifest)
    if problems:
        return problems
    try:
        store = ChunkStore(version / CHUNKS_FILE, readonly=True)
        vectors = vectorstore.open_store(manifest["vector_store"], version, manifest["embedder"]["dim"],
                                         Settings(), index_dir=idir.path)
        bm25 = bm25_mod.BM25Index.load(version / BM25_DIR)
    except Exception as exc:  # noqa: BLE001 - any failure to load is a finding
        return [f"{version}: cannot load ({type(exc).__name__}: {exc})"]
    try:
        problems += _check_agreement(manifest, store, vectors, bm25)
    finally:
        store.close()
        vectors.close()
    return problems


def _check_agreement(manifest, store, vectors, bm25) -> list[str]:
    problems = []
    docs, chunks = store.counts()
    counts = manifest["counts"]
    if (docs, chunks) != (counts["documents"], counts["chunks"]):
        problems.append(f"chunk store has {docs} documents / {chunks} chunks, manifest says "
                        f"{counts['documents']} / {counts['chunks']}")
    sql_ids = np.asarray(store.chunk_ids(), dtype=np.int64)
    vector_ids = np.sort(vectors.ids())
    if len(vector_ids) != chunks or not np.array_equal(vector_ids, sql_ids):
        engine = manifest["vector_store"]["kind"]
        problems.append(f"{engine} holds {len(vector_ids)} vectors whose ids differ from the {chunks} chunks")
    if not np.array_equal(np.sort(bm25.chunk_ids), sql_ids):
        problems.append("BM25 index ids differ from the chunk store")
    hashes = store.document_hashes()
    recorded = {d: v["hash"] for d, v in manifest["documents"].items()}
    if hashes != recorded:
        diff = sorted(set(hashes.items()) ^ set(recorded.items()))[:3]
        problems.append(f"document hashes in the chunk store differ from the manifest (e.g. {diff})")
    return problems


class _Updater:
    """One write to an index: sync / add / remove, under the lock, committed atomically."""

    def __init__(self, directory, settings: Settings, embedder, warn: Warn | None, progress: Progress | None,
                 embed_backend: str | None = None):
        self.idir = IndexDir(directory)
        self.settings = settings
        self.embedder_arg = embedder
        self.embed_backend = embed_backend
        self.report = BuildReport()
        self._user_warn = warn
        self.progress = progress

    def warn(self, w: LoadWarning) -> None:
        self.report.warnings.append(str(w))
        if self._user_warn:
            self._user_warn(w)

    def _embedder(self, old: Manifest | None) -> Embedder:
        arg = self.embedder_arg
        if arg is not None and not isinstance(arg, str):
            emb = arg
        elif old is not None:
            emb = _embedder_for(old, self.settings, arg, self.embed_backend)
        else:
            emb = get_embedder(self.settings if self.embed_backend is None
                               else self.settings.replace(embed_backend=self.embed_backend), arg)
        if old is not None and (arg is not None or self.embed_backend is not None):
            _check_embedder(old, emb, self.idir.path)
        return emb

    def _check_backend(self, old: Manifest) -> None:
        """A backend setting that differs from the index's is an error, not a silent choice."""
        s, kind = self.settings, old["vector_store"]["kind"]
        wanted = s.vector_backend or ("qdrant" if s.qdrant_url or s.qdrant_path else None)
        if wanted and wanted != kind:
            raise ConfigError(f"{self.idir.path}: this index keeps its vectors in {kind}, not {wanted}; "
                              f"move them with `ragqa index migrate --from {self.idir.path} --to ...` "
                              "or start over with --rebuild")
        cfg = old["vector_store"]
        if kind == "qdrant":
            from ragqa.indexing.qdrant_store import qdrant_config

            asked = qdrant_config(s, self.idir.path)
            given = [k for k, v in (("url", s.qdrant_url), ("path", s.qdrant_path),
                                    ("collection", s.qdrant_collection)) if v]
            for key in given:
                if asked.get(key) != cfg.get(key):
                    raise ConfigError(f"{self.idir.path}: this index keeps its vectors in Qdrant {key} "
                                      f"{cfg.get(key)!r}, not {asked.get(key)!r}; move them with "
                                      "`ragqa index migrate` or start over with --rebuild")

    def _new_store_cfg(self) -> dict:
        """The vector store of a new build: from the settings; on --rebuild the live index's
        backend (and Qdrant location and collection) unless the settings name another."""
        s, live = self.settings, self.live
        if live is not None and not (s.vector_backend or s.qdrant_url or s.qdrant_path or s.qdrant_collection):
            cfg = dict(live["vector_store"], index_type=s.index_type, hnsw_m=s.hnsw_m)
            return cfg
        backend = s.vector_backend or ("qdrant" if s.qdrant_url or s.qdrant_path else "faiss")
        return vectorstore.new_config(s, self.idir.path, backend)

    def run(self, paths: Sequence[str | Path], prune: bool, rebuild: bool = False,
            remove: Sequence[str] = ()) -> BuildReport:
        t0 = time.perf_counter()
        # a path that does not exist is an error before anything is locked or written
        files = discover(paths, self.warn) if paths else []
        try:
            with self.idir.lock():
                self._locked_run(files, prune, rebuild, remove)
        except (OSError, sqlite3.OperationalError, RuntimeError) as exc:
            failure = _write_failure(exc, self.idir.path)
            if failure is None:
                raise
            raise failure from None
        self.report.seconds = time.perf_counter() - t0
        return self.report

    def _locked_run(self, files, prune: bool, rebuild: bool, remove: Sequence[str]) -> None:
        self.idir.collect_garbage()
        old = None
        self.live = None
        if self.idir.exists() and not rebuild:
            # a damaged index is refused with the line that says how to repair it (never a
            # silent "unchanged"); a --rebuild starts from the documents whatever the damage
            self.live = old = self.idir.open_checked()[1]
            self._check_backend(old)
            if self.embedder_arg is not None or self.embed_backend is not None:
                self._embedder(old)  # an explicit embedder must match before anything changes
        elif self.idir.exists():
            try:
                self.live = self.idir.read_manifest()  # keeps its vector store on --rebuild
            except IndexCorrupt:
                self.live = None
        elif remove:
            raise IndexNotFound(f"{self.idir.path}: no such index")
        self.report.version = self._sync(files, old, prune, remove)
        if self.report.version is None:
            self.idir.collect_garbage()
        else:
            self.report.warnings += collect_garbage(self.idir, self.settings)

    def _sync(self, files, old: Manifest | None, prune: bool, remove: Sequence[str]) -> str | None:
        report = self.report
        old_docs: dict[str, dict] = dict(old["documents"]) if old else {}
        old_sources: dict[str, dict] = dict(old["sources"]) if old else {}
        unknown = [d for d in remove if d not in old_docs]
        if unknown:
            raise RagqaError(f"{self.idir.path}: no document(s) {', '.join(map(repr, unknown[:5]))} in the index; "
                             "`ragqa index info --documents` lists them")
        seen: dict[str, dict] = {}  # doc id -> {"hash", "source"} of every document now present
        to_index: dict[str, Document] = {}
        sources = {} if prune else dict(old_sources)
        for sf in files:
            key = sf.source  # storable in JSON even when the name is not valid UTF-8
            fhash = sf.file_hash()
            prev = old_sources.get(key)
            if prev and prev["hash"] == fhash and all(d in old_docs for d in prev["documents"]):
                for d in prev["documents"]:
                    seen.setdefault(d, old_docs[d])
                sources[key] = prev
                continue
            n_warn = len(report.warnings)
            docs = load_file(sf, self.warn, max_bytes=self.settings.max_file_mb * 2**20)
            if not docs:
                if len(report.warnings) > n_warn:
                    report.skipped += 1
                if prev:  # a file that became unreadable keeps what was indexed from it
                    for d in prev["documents"]:
                        if d in old_docs:
                            seen.setdefault(d, old_docs[d])
                    sources[key] = prev
                continue
            ids = []
            for doc in docs:
                if doc.doc_id in seen:
                    self.warn(LoadWarning(sf.path.as_posix(), f"document id {doc.doc_id!r} already came from "
                                          f"{seen[doc.doc_id]['source']}; skipped this copy"))
                    continue
                h = doc.content_hash()
                seen[doc.doc_id] = {"hash": h, "source": key}
                ids.append(doc.doc_id)
                if old_docs.get(doc.doc_id, {}).get("hash") != h:
                    to_index[doc.doc_id] = doc
                elif "chunks" in old_docs[doc.doc_id]:
                    seen[doc.doc_id]["chunks"] = old_docs[doc.doc_id]["chunks"]
            sources[key] = {"hash": fhash, "documents": ids}
        final = dict(seen) if prune else {**old_docs, **seen}
        for d in remove:
            final.pop(d, None)
        for src in sources.values():
            if remove and any(d in remove for d in src["documents"]):
                src["documents"] = [d for d in src["documents"] if d not in remove]
                src["hash"] = ""  # re-read this file on the next sync
        removed = [d for d in old_docs if d not in final]
        report.added = sum(d not in old_docs for d in to_index)
        report.updated = len(to_index) - report.added
        report.removed = len(removed)
        report.unchanged = len(final) - len(to_index)
        report.documents = len(final)
        if old and not to_index and not removed and sources == old_sources:
            report.chunks = old["counts"]["chunks"]
            return None  # nothing changed: nothing loaded, nothing written
        if not old and not final:
            raise RagqaError(f"{self.idir.path}: no documents to index (every file was skipped or none "
                             "was found); check the paths and the warnings above")
        return self._write(old, final, to_index, removed, sources).name

    def _write(self, old, final, to_index, removed, sources) -> Path:
        embedder = self._embedder(old)
        data_changed = bool(to_index or removed)
        tmp = self.idir.new_version()
        try:
            if old:
                version = self.idir.current()
                chunk_cfg = old["chunking"]
                store_cfg = old["vector_store"]
            else:
                version = None
                max_tokens = self.settings.chunk_tokens or embedder.max_tokens
                if max_tokens > embedder.max_tokens:
                    raise ConfigError(f"chunk_tokens={max_tokens} exceeds the embedder's window of "
                                      f"{embedder.max_tokens} tokens: text would be truncated")
                chunk_cfg = ChunkSettings(max_tokens, self.settings.chunk_overlap).to_json()
                store_cfg = self._new_store_cfg()
            if version and not data_changed:
                for p in version.iterdir():  # only the manifest changes: share the data files
                    if p.name != MANIFEST:
                        (shutil.copytree if p.is_dir() else shutil.copy2)(p, tmp / p.name,
                                                                          **({"copy_function": _link} if p.is_dir() else {}))
                next_id = old["next_id"]
            else:
                next_id = self._write_data(version, tmp, embedder, chunk_cfg, store_cfg, old, to_index, removed, final)
            now = _now()
            counts = {"documents": len(final), "chunks": sum(v.get("chunks", 0) for v in final.values())}
            self.report.chunks = counts["chunks"]
            manifest = {
                "created": old["created"] if old else now, "updated": now,
                "embedder": old["embedder"] if old and not data_changed else _embedder_json(embedder, old),
                "chunking": chunk_cfg, "vector_store": store_cfg, "bm25": bm25_mod.describe(),
                "counts": counts, "next_id": next_id, "documents": final, "sources": sources,
            }
            return self.idir.commit(tmp, manifest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _write_data(self, version, tmp, embedder, chunk_cfg, store_cfg, old, to_index, removed, final) -> int:
        writing = self.idir.next_number()
        if version:
            shutil.copyfile(version / CHUNKS_FILE, tmp / CHUNKS_FILE)
            vectors = vectorstore.open_store(store_cfg, version, old["embedder"]["dim"], self.settings,
                                             index_dir=self.idir.path, write_version=writing)
            next_id = old["next_id"]
        elif self.live is not None and _same_collection(self.live["vector_store"], store_cfg):
            # --rebuild into the Qdrant collection the live version uses: its points stay visible
            # to the live version until the new one commits; ids continue so none is reused
            vectors = vectorstore.open_store(store_cfg, self.idir.current(), embedder.dim, self.settings,
                                             index_dir=self.idir.path, write_version=writing)
            vectors.remove_all()
            next_id = self.live["next_id"]
        else:
            vectors = vectorstore.open_store(store_cfg, None, embedder.dim, self.settings,
                                             index_dir=self.idir.path, write_version=writing)
            next_id = 1
        try:
            return self._fill(vectors, tmp, embedder, chunk_cfg, old, to_index, removed, final, next_id)
        finally:
            vectors.close()

    def _fill(self, vectors, tmp, embedder, chunk_cfg, old, to_index, removed, final, next_id) -> int:
        store = ChunkStore(tmp / CHUNKS_FILE)
        stale = store.remove_documents([*removed, *(d for d in to_index if old and d in old["documents"])])
        vectors.remove(np.asarray(stale, dtype=np.int64))
        cache = EmbeddingCache(self.settings.cache_dir / "embeddings.sqlite") if self.settings.embedding_cache else None
        csettings = ChunkSettings(chunk_cfg["max_tokens"], chunk_cfg["overlap"],
                                  **({"section_chars": chunk_cfg["section_chars"]} if "section_chars" in chunk_cfg else {}))
        docs = list(to_index.values())
        pending: list = []  # chunks waiting to be embedded (at most CHUNK_BATCH)

        def flush() -> None:
            nonlocal next_id
            texts = [c.embed_text for c in pending]
            vecs, encoded = embed_with_cache(embedder, texts, cache)
            ids = np.arange(next_id, next_id + len(pending), dtype=np.int64)
            next_id += len(pending)
            vectors.add(ids, vecs)
            store.add_chunks(pending, ids, [text_hash(t) for t in texts])
            self.report.embedded += encoded
            pending.clear()

        if self.progress:
            self.progress(0, len(docs))
        # chunks are embedded and stored CHUNK_BATCH at a time as the chunker yields them, so the
        # memory is bounded by the batch (and the chunker's section), not by the file
        for done, doc in enumerate(docs, 1):
            n = 0
            for chunk in iter_chunks(doc, embedder, csettings):
                pending.append(chunk)
                n += 1
                if len(pending) >= CHUNK_BATCH:
                    flush()
            store.add_document(doc, n)
            final[doc.doc_id]["chunks"] = n
            if self.progress and (done % DOC_BATCH == 0 or done == len(docs)):
                self.progress(done, len(docs))
        if pending:
            flush()
        if cache:
            cache.close()
        vectors.save(tmp)
        ids, texts = [], []
        for cid, text in store.embed_texts():
            ids.append(cid)
            texts.append(text)
        store.close()
        bm25_mod.BM25Index.build(texts, ids).save(tmp / BM25_DIR)
        return next_id


_WRITE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                 errno.EPERM: "permission denied"}


def _write_failure(exc: BaseException, directory: Path) -> RagqaError | None:
    """A full disk, a quota or a read-only / unwritable index folder, said as such (with the
    news that the live version is untouched: a write only ever goes to a new version)."""
    what = None
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRORS:
        where = Path(exc.filename) if exc.filename else None
        if exc.errno in (errno.EACCES, errno.EPERM) and where is not None:
            try:
                where.resolve().relative_to(directory.resolve())
            except ValueError:
                return None  # an input file the user cannot read: not about the index
        what = _WRITE_ERRORS[exc.errno]
    elif isinstance(exc, (sqlite3.OperationalError, RuntimeError)):
        text = str(exc).lower()
        if "disk is full" in text or "no space" in text:
            what = _WRITE_ERRORS[errno.ENOSPC]
        elif "readonly" in text or "read-only" in text:
            what = _WRITE_ERRORS[errno.EROFS]
    if what is None:
        return None
    return IndexWriteError(f"{directory}: cannot write the new version ({what}); nothing was changed, the "
                           "index's current version is intact; free space or make the folder writable "
                           "and run the command again")


def _same_collection(a: dict, b: dict) -> bool:
    return (a["kind"] == b["kind"] == "qdrant" and a["collection"] == b["collection"]
            and a.get("url") == b.get("url") and a.get("path") == b.get("path"))


def collect_garbage(idir: IndexDir, settings: Settings) -> list[str]:
    """``IndexDir.collect_garbage`` (call under the lock, after a commit), then the same in the
    vector stores outside the directory: Qdrant points no kept version sees are deleted, and a
    collection no kept version uses is dropped. Returns warnings (the commit has happened: a
    Qdrant that cannot be reached now only delays the clean-up to the next build)."""
    def cfg(v: Path) -> dict | None:
        try:
            return idir.read_manifest(v)["vector_store"]
        except RagqaError:
            return None

    before = {v.name: cfg(v) for v in idir.versions()}
    idir.collect_garbage()
    kept = {v.name: before.get(v.name) or cfg(v) for v in idir.versions()}
    qdrant_kept = [c for c in kept.values() if c and c["kind"] == "qdrant"]
    dropped = [c for n, c in before.items() if n not in kept and c and c["kind"] == "qdrant"
               and not any(_same_collection(c, k) for k in qdrant_kept)]
    if not qdrant_kept and not dropped:
        return []
    from ragqa.indexing.qdrant_store import QdrantStore

    oldest = min((version_number(idir.path / n) for n in kept), default=0)
    warnings, seen = [], []
    for c in qdrant_kept + dropped:
        if any(_same_collection(c, s) for s in seen):
            continue
        seen.append(c)
        try:
            store = QdrantStore.open(c, 0, settings, index_dir=idir.path, version=None, write_version=None,
                                     check=False)
            try:
                store.drop() if c in dropped else store.purge(oldest)
            finally:
                store.close()
        except RagqaError as exc:
            warnings.append(f"clean-up of Qdrant collection {c['collection']!r} postponed to the next build: {exc}")
    return warnings


def migrate(source: str | Path, target: str, out: str | Path | None = None, settings: Settings | None = None,
            *, collection: str | None = None, batch: int = 4096) -> BuildReport:
    """Copy an index's vectors into another store without re-embedding: ``target`` is
    ``qdrant://http://host:6333``, ``qdrant://DIR`` (local mode), ``faiss`` or ``faiss:hnsw``.
    Without ``out`` the index at ``source`` gets a new version that uses the target (the previous
    version, and so its store, is kept until the next build); with ``out`` a new index is written
    there (chunk store and BM25 hard-linked) and ``source`` is left as it was. Crash-safe like a
    build: the target is live only once its version is committed."""
    from ragqa.indexing.qdrant_store import parse_target, qdrant_config

    settings = settings or Settings.load()
    t0 = time.perf_counter()
    report = BuildReport()
    src = IndexDir(source)
    dst = IndexDir(out) if out is not None else src
    spec = parse_target(target)
    with dst.lock():
        if out is not None and dst.exists():
            raise ConfigError(f"{dst.path}: already an index; --out must name a new directory")
        dst.collect_garbage()
        version = src.current()
        manifest = src.read_manifest(version)
        dim = manifest["embedder"]["dim"]
        src_cfg = manifest["vector_store"]
        if spec["kind"] == "faiss":
            cfg = vectorstore.new_config(settings.replace(index_type=spec["index_type"] or src_cfg.get("index_type")),
                                         dst.path, "faiss")
        else:
            cfg = qdrant_config(settings.replace(index_type=src_cfg.get("index_type", settings.index_type)),
                                dst.path, url=spec.get("url", ""), path=spec.get("path", ""),
                                collection=collection)
        if _same_collection(src_cfg, cfg) or (src_cfg["kind"] == cfg["kind"] == "faiss" and out is None
                                              and src_cfg["index_type"] == cfg["index_type"]):
            raise ConfigError(f"{src.path}: its vectors are already there ({vectorstore.describe(cfg)})")
        writing = dst.next_number()
        tmp = dst.new_version()
        try:
            for name in (CHUNKS_FILE, BM25_DIR):  # immutable once live: share, do not copy
                p = version / name
                (shutil.copytree(p, tmp / name, copy_function=_link) if p.is_dir() else _link(p, tmp / name))
            reading = vectorstore.open_store(src_cfg, version, dim, settings, index_dir=src.path,
                                             visible=manifest["counts"]["chunks"])
            # a fresh collection (one left by a crashed migration of this index is emptied first)
            writer = vectorstore.open_store(cfg, None, dim, settings, index_dir=dst.path, write_version=writing)
            try:
                for ids, vecs in reading.iter_vectors(batch):
                    writer.add(ids, vecs)
                    report.chunks += len(ids)
                writer.save(tmp)
            finally:
                reading.close()
                writer.close()
            if report.chunks != manifest["counts"]["chunks"]:
                raise IndexCorrupt(f"{version}: {report.chunks} vectors copied but the manifest counts "
                                   f"{manifest['counts']['chunks']} chunks; run `ragqa index verify`")
            new = {k: v for k, v in manifest.items() if k not in ("files", "format_version")}
            new.update(vector_store=cfg, updated=_now())
            report.version = dst.commit(tmp, new).name
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        report.documents = manifest["counts"]["documents"]
        report.unchanged = report.documents
        report.warnings += collect_garbage(dst, settings)
    report.seconds = time.perf_counter() - t0
    return report


def _link(src: str, dst: str) -> None:
    """Hard-link an immutable data file into the next version (copy where links fail)."""
    import os

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
