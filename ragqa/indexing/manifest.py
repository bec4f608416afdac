"""The schema of an index version's ``manifest.json`` (written by ``index._Updater`` through
``storage.IndexDir.commit``, checked and read by ``storage.IndexDir.read_manifest``). JSON on
disk; these TypedDicts say what each key holds, so readers type-check against one definition."""

from __future__ import annotations

from typing import TypedDict


class EmbedderRecord(TypedDict):
    name: str          # packaged name, hub id or "fake:DIM"
    path: str          # the model directory it was loaded from (or the name)
    dim: int
    fingerprint: str   # weights + config (+ "+int8" for int8 vectors): equal fingerprints, equal vectors
    backend: str       # torch | onnx | onnx-int8 | onnx-int8-fast
    max_tokens: int    # the embedder's window


class Counts(TypedDict):
    documents: int
    chunks: int


class DocumentRecord(TypedDict, total=False):
    hash: str          # Document.content_hash()
    source: str        # the file it came from (a sources key)
    chunks: int


class SourceRecord(TypedDict):
    hash: str               # the file's bytes ("" to re-read it at the next sync)
    documents: list[str]    # the document ids it gave


class FileRecord(TypedDict):
    bytes: int
    xxh3_128: str


class Manifest(TypedDict, total=False):
    format_version: int
    created: str                         # ISO 8601, UTC
    updated: str
    embedder: EmbedderRecord
    chunking: dict                       # chunking.ChunkSettings.to_json()
    vector_store: dict                   # vectorstore / qdrant_store config: {"kind": "faiss" | "qdrant", ...}
    bm25: dict                           # bm25.describe()
    counts: Counts
    next_id: int                         # the next chunk id (ids are never reused)
    documents: dict[str, DocumentRecord]
    sources: dict[str, SourceRecord]
    files: dict[str, FileRecord]         # every data file of the version (sha256 strings before xxh3)
    manifest_xxh3_128: str               # over the rest of the manifest
