"""Chunk texts and document metadata in SQLite (a plain, non-executable format).

documents(doc_id, title, source, metadata JSON, content_hash, n_chunks)
chunks(id, doc_id, ord, text, start, page, text_hash)
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ragqa.indexing.chunking import Chunk
from ragqa.indexing.documents import Document

FILE = "chunks.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, source TEXT NOT NULL,
    metadata TEXT NOT NULL, content_hash TEXT NOT NULL, n_chunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, ord INTEGER NOT NULL, text TEXT NOT NULL,
    start INTEGER NOT NULL, page INTEGER, text_hash BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks (doc_id);
"""


class ChunkStore:
    def __init__(self, path: Path, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=DELETE")
            # a writable store lives in a version being written, which the commit fsyncs whole
            # (storage.IndexDir.commit) and a crash discards: a sync per transaction buys nothing
            # (it cost one fsync per document: 5,000 documents took 45 s instead of ~3 s)
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- writing -------------------------------------------------------------------------
    def remove_documents(self, doc_ids: Iterable[str]) -> list[int]:
        """Delete documents and their chunks; returns the removed chunk ids."""
        removed: list[int] = []
        with self._db:
            for doc_id in doc_ids:
                removed += [r[0] for r in self._db.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
                self._db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
                self._db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
        return removed

    def add(self, doc: Document, chunks: Sequence[Chunk], ids: Sequence[int], hashes: Sequence[bytes]) -> None:
        """A document and all its chunks."""
        self.add_chunks(chunks, ids, hashes)
        self.add_document(doc, len(chunks))

    def add_chunks(self, chunks: Sequence[Chunk], ids: Sequence[int], hashes: Sequence[bytes]) -> None:
        """Chunks of documents still being chunked (``add_document`` follows for each)."""
        with self._db:
            self._db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(int(i), c.doc_id, c.ord, c.text, c.start, c.page, h) for c, i, h in zip(chunks, ids, hashes)])

    def add_document(self, doc: Document, n_chunks: int) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                (doc.doc_id, doc.title, doc.source, json.dumps(doc.metadata, ensure_ascii=False),
                 doc.content_hash(), n_chunks))

    def vacuum(self) -> None:
        self._db.execute("VACUUM")

    # --- reading -------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        docs = self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return docs, chunks

    def doc_ids(self) -> dict[int, str]:
        """chunk id -> document id, for every chunk."""
        return dict(self._db.execute("SELECT id, doc_id FROM chunks"))

    def chunk_ids(self) -> list[int]:
        return [r[0] for r in self._db.execute("SELECT id FROM chunks ORDER BY id")]

    def document_hashes(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT doc_id, content_hash FROM documents"))

    def document_chunk_ids(self, doc_id: str) -> list[int]:
        return [r[0] for r in self._db.execute("SELECT id FROM chunks WHERE doc_id = ? ORDER BY ord", (doc_id,))]

    def embed_texts(self) -> Iterator[tuple[int, str]]:
        """(chunk id, the text that was embedded: title + newline + text) for every chunk."""
        rows = self._db.execute(
            "SELECT c.id, d.title, c.text FROM chunks c JOIN documents d USING (doc_id) ORDER BY c.id")
        for cid, title, text in rows:
            yield cid, (f"{title}\n{text}" if title else text)

    def get(self, ids: Sequence[int]) -> dict[int, dict]:
        out: dict[int, dict] = {}
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            rows = self._db.execute(
                "SELECT c.id, c.doc_id, c.ord, c.text, c.start, c.page, d.title, d.source, d.metadata "
                f"FROM chunks c JOIN documents d USING (doc_id) WHERE c.id IN ({','.join('?' * len(part))})",
                part)
            for cid, doc_id, ord_, text, start_, page, title, source, meta in rows:
                out[cid] = {"chunk_id": cid, "doc_id": doc_id, "ord": ord_, "text": text, "start": start_,
                            "page": page, "title": title, "source": source, "metadata": json.loads(meta)}
        return out

    def documents(self) -> list[dict]:
        return [{"doc_id": d, "title": t, "source": s, "chunks": n}
                for d, t, s, n in self._db.execute(
                    "SELECT doc_id, title, source, n_chunks FROM documents ORDER BY doc_id")]
