"""Typed settings, read from (later wins): defaults, ``ragqa.toml`` in the working directory (or the
file named by ``RAGQA_CONFIG``), ``RAGQA_*`` environment variables, and CLI flags.

Only settings that change what is built or how it runs live here; every field is checked in
``__post_init__`` and errors name the field and the bad value.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragqa.errors import ConfigError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
RETRIEVAL_MODES = ("dense", "bm25", "hybrid")
INDEX_TYPES = ("flat", "hnsw")
VECTOR_BACKENDS = ("faiss", "qdrant")
EMBED_BACKENDS = ("torch", "onnx", "onnx-int8", "onnx-int8-fast")


def default_threads() -> int:
    """Torch / onnxruntime threads. All cores by default; set RAGQA_THREADS=1 when another
    process shares the CPU (two processes with 2 threads each on 2 cores thrash badly)."""
    return max(1, os.cpu_count() or 1)


def default_cache_dir() -> Path:
    base = os.environ.get("RAGQA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ragqa"
    )
    return Path(base)


@dataclass
class Settings:
    # embedder: a packaged model name (all-MiniLM-L6-v2), a local sentence-transformers
    # directory, a hub id (only where a hub is reachable), or "fake" / "fake:DIM" for tests.
    embedder: str = DEFAULT_EMBEDDER
    # onnx-int8-fast: the weights exported to ONNX with every matmul in int8: ~1.8x faster than
    # torch here at the same SciFact train nDCG@10 as fp32 (docs/indexing.md "Encoder backends"); "torch"
    # and "onnx" give the exact sentence-transformers vectors, "onnx-int8" sits between.
    embed_backend: str = "onnx-int8-fast"
    embed_batch_size: int = 32
    threads: int = field(default_factory=default_threads)
    # chunk size in embedder tokens; None = the embedder's max sequence length (no truncation)
    chunk_tokens: int | None = None
    chunk_overlap: int = 32
    index_type: str = "flat"
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 200
    # where a new index keeps its vectors: "faiss" (a file in each version) or "qdrant"; empty =
    # the index's own backend, faiss for a new one. An existing index uses what its manifest says.
    vector_backend: str = ""
    qdrant_url: str = ""         # a Qdrant server, http://host:6333 (API key: env QDRANT_API_KEY)
    qdrant_path: str = ""        # qdrant-client local mode directory (default INDEX/qdrant)
    qdrant_collection: str = ""  # default ragqa-<index dir name>
    # retrieval default chosen on SciFact qrels/train.tsv (docs/results.md, SciFact)
    mode: str = "hybrid"
    rrf_k: int = 10  # 3-10 were best on SciFact train (0.719 vs 0.712 at the usual 60)
    candidates: int = 100  # hits taken from each retriever before fusion
    # --- answering ---
    # generator: a packaged model name (qwen2.5-coder-1.5b-instruct, the default; the fast
    # qwen2.5-coder-0.5b-instruct; smollm2-135m-instruct), a
    # local transformers directory, or a hub id (only where a hub is reachable)
    model: str = "qwen2.5-coder-1.5b-instruct"
    variants_dir: Path = Path("adapters")
    # with model "openai:http://host:8000/v1" (a vLLM / OpenAI-compatible server): the local model
    # whose tokenizer measures the prompt budget (must match the served base), and the served
    # name of the base model (default: the one the server lists without a parent)
    generator_tokenizer: str = "qwen2.5-coder-0.5b-instruct"
    generator_base_model: str = ""
    # seconds one request to that server may take in all, connecting and the whole streamed
    # answer (keep-alive lines do not extend it); raise it for long answers on a busy server
    request_timeout: float = 300.0
    # qa-short: the shortest answering phrase, cited by ragqa (docs/answering.md); qa asks for
    # one or two sentences with the model's own citations; a variant reads its card's template
    template: str = "qa-short"
    top_k: int = 3  # passages retrieved for an answer (3 beat 4 on SQuAD dev: F1 60.4 vs 55.4, 559 vs 716 prompt tokens)
    # few-shot: JSONL of {"question", "answer", "context"?}; the most similar `shots` go in the prompt
    examples_file: str = ""
    shots: int = 0
    max_prompt_tokens: int = 1536  # CPU prompt processing cost grows with this
    max_new_tokens: int = 96
    do_sample: bool = False
    temperature: float = 0.7
    # unset: the template's (qa-short: 1.0, since an extractive answer repeats the passage), else 1.1
    repetition_penalty: float | None = None
    # auto: bfloat16 on CPUs with native bf16 (~5x faster prompts than fp32 there), else float32
    # (emulated bf16 is ~6-8x slower than fp32); see generators.models.resolve_dtype
    gen_dtype: str = "auto"
    # decode (one new token at a time) with int8 copies of the weights: ~3x faster linear layers
    # per token here, prompts still read at full precision; false: the exact model
    # (docs/answering.md "Generation speed")
    decode_int8: bool = True
    # ragqa answers "I don't know" without generating when the relevance of what it retrieved,
    # best dense cosine similarity + abstain_coverage_weight x term coverage of the hits (0..1),
    # is below abstain_threshold; both calibrated on SQuAD dev articles by
    # scripts/calibrate_abstention.py (docs/answering.md "Abstention"). Weight 0: similarity alone.
    abstain_threshold: float = 0.62
    abstain_coverage_weight: float = 0.3
    cache_dir: Path = field(default_factory=default_cache_dir)
    embedding_cache: bool = True
    max_file_mb: int = 200

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)
        self.variants_dir = Path(self.variants_dir)
        _choice("gen_dtype", self.gen_dtype, ("auto", "bfloat16", "float32", "float16"))
        _choice("embed_backend", self.embed_backend, EMBED_BACKENDS)
        _choice("index_type", self.index_type, INDEX_TYPES)
        if self.vector_backend:
            _choice("vector_backend", self.vector_backend, VECTOR_BACKENDS)
        _choice("mode", self.mode, RETRIEVAL_MODES)
        for name in ("embed_batch_size", "threads", "hnsw_m", "hnsw_ef_search",
                     "hnsw_ef_construction", "rrf_k", "candidates", "max_file_mb", "top_k",
                     "max_prompt_tokens", "max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"setting {name}={getattr(self, name)!r} must be >= 1")
        if self.chunk_tokens is not None and self.chunk_tokens < 16:
            raise ConfigError(f"setting chunk_tokens={self.chunk_tokens!r} must be >= 16 (or unset)")
        if not 0 < self.request_timeout < float("inf"):
            raise ConfigError(f"setting request_timeout={self.request_timeout!r} must be a number of seconds > 0")
        if self.abstain_coverage_weight < 0:
            raise ConfigError(f"setting abstain_coverage_weight={self.abstain_coverage_weight!r} must be >= 0")
        if self.shots < 0:
            raise ConfigError(f"setting shots={self.shots!r} must be >= 0")
        if self.chunk_overlap < 0:
            raise ConfigError(f"setting chunk_overlap={self.chunk_overlap!r} must be >= 0")

    def replace(self, **changes: Any) -> Settings:
        """A copy with the given fields changed; ``None`` values are ignored (unset CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        path = path or os.environ.get("RAGQA_CONFIG")
        if path is None and Path("ragqa.toml").is_file():
            path = "ragqa.toml"
        if path is not None:
            values.update(_read_toml(Path(path)))
        values.update(_from_env())
        settings = cls._build(values, source=str(path or "environment"))
        return settings.replace(**overrides)

    @classmethod
    def _build(cls, values: dict[str, Any], source: str) -> Settings:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(known)}")
        return cls(**values)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"setting {name}={value!r} must be one of {', '.join(choices)}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix the file") from None
    return dict(data.get("ragqa", data))


_ENV_TYPES = {f.name: f.type for f in dataclasses.fields(Settings)}


def _from_env() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, typ in _ENV_TYPES.items():
        raw = os.environ.get(f"RAGQA_{name.upper()}")
        if raw is None or raw == "":
            continue
        typ = str(typ)
        try:
            if typ.startswith("int"):
                values[name] = int(raw)
            elif typ.startswith("float"):
                values[name] = float(raw)
            elif typ == "bool":
                values[name] = raw.lower() in ("1", "true", "yes", "on")
            else:
                values[name] = raw
        except ValueError:
            raise ConfigError(f"environment RAGQA_{name.upper()}={raw!r} must be a number") from None
    return values
