"""Typed settings, read from (later wins): defaults, ``ragqa.toml`` in the working directory (or the
file named by ``RAGQA_CONFIG``), ``RAGQA_*`` environment variables, and CLI flags.

Only settings that change what is built or how it runs live here. ``Settings`` is a
pydantic-settings model: every field has a type, a default and a description (the reference in
docs/reference/configuration.md is generated from them by ``python -m ragqa.apps.reference``).
``Settings(**fields)`` uses only the fields given and the defaults; ``Settings.load()`` adds the
TOML file and the environment. Every bad value is a ``ConfigError`` of one line naming the field,
where the value came from (file or environment) and what is allowed.
"""

from __future__ import annotations

import functools
import os
import tomllib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, get_args, get_origin

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_settings import (BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource,
                               SettingsConfigDict, TomlConfigSettingsSource)

from ragqa.errors import ConfigError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
RetrievalMode = Literal["dense", "bm25", "hybrid"]
IndexType = Literal["flat", "hnsw"]
VectorBackend = Literal["faiss", "qdrant"]
EmbedBackend = Literal["torch", "onnx", "onnx-int8", "onnx-int8-fast"]
GenDtype = Literal["auto", "bfloat16", "float32", "float16"]
RETRIEVAL_MODES: tuple[str, ...] = get_args(RetrievalMode)
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)
VECTOR_BACKENDS: tuple[str, ...] = get_args(VectorBackend)
EMBED_BACKENDS: tuple[str, ...] = get_args(EmbedBackend)
GEN_DTYPES: tuple[str, ...] = get_args(GenDtype)
ENV_PREFIX = "RAGQA_"
CONFIG_ENV = "RAGQA_CONFIG"  # names the settings file (not a setting itself)
DEFAULT_CONFIG_FILE = "ragqa.toml"


def default_threads() -> int:
    """Torch / onnxruntime threads. All cores by default; set RAGQA_THREADS=1 when another
    process shares the CPU (two processes with 2 threads each on 2 cores thrash badly)."""
    return max(1, os.cpu_count() or 1)


def default_cache_dir() -> Path:
    base = os.environ.get("RAGQA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ragqa"
    )
    return Path(base)


def _setting(default: Any = ..., *, description: str, default_text: str | None = None,
             rule: str | None = None, **constraints: Any) -> Any:
    """A field: ``description`` goes into the reference; ``default_text`` stands for a default
    computed on the machine (so the reference reads the same everywhere); ``rule`` is what is
    allowed beyond the type, in words, where it cannot be derived from ``constraints``."""
    extra = {k: v for k, v in (("default_text", default_text), ("rule", rule)) if v is not None}
    if callable(default):
        return Field(default_factory=default, description=description, json_schema_extra=extra or None,
                     **constraints)
    return Field(default, description=description, json_schema_extra=extra or None, **constraints)


PositiveInt = Annotated[int, Field(ge=1)]


class Settings(BaseSettings):
    """Everything that changes what is built or how it runs. Attribute access; ``replace`` for a
    validated copy; ``load`` for file + environment + overrides."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, case_sensitive=True, extra="forbid",
        validate_assignment=True, validate_default=True, frozen=False,
    )

    # --- indexing ---
    embedder: str = _setting(DEFAULT_EMBEDDER, description=(
        "The embedding model: a packaged model name (all-MiniLM-L6-v2), a local sentence-transformers "
        "directory, a hub id (only where a hub is reachable), or \"fake\" / \"fake:DIM\" for tests."))
    embed_backend: EmbedBackend = _setting("onnx-int8-fast", description=(
        "How the embedder runs. onnx-int8-fast: the weights exported to ONNX with every matmul in int8, "
        "~1.8x faster than torch here at the same SciFact train nDCG@10 as fp32 (docs/indexing.md "
        "\"Encoder backends\"); torch and onnx give the exact sentence-transformers vectors, onnx-int8 "
        "sits between."))
    embed_batch_size: PositiveInt = _setting(32, description="Texts embedded in one batch.")
    threads: PositiveInt = _setting(default_threads, default_text="all CPU cores", description=(
        "Torch / onnxruntime threads. All cores by default; set RAGQA_THREADS=1 when another process "
        "shares the CPU (two processes with 2 threads each on 2 cores thrash badly)."))
    chunk_tokens: Annotated[int, Field(ge=16)] | None = _setting(None, rule=">= 16 (or unset)", description=(
        "Chunk size in embedder tokens; unset: the embedder's max sequence length (no truncation)."))
    chunk_overlap: int = _setting(32, ge=0, description="Tokens shared by consecutive chunks.")
    index_type: IndexType = _setting("flat", description="The vector index: flat (exact) or hnsw (approximate).")
    hnsw_m: PositiveInt = _setting(32, description="HNSW: links per node (with index_type hnsw).")
    hnsw_ef_search: PositiveInt = _setting(128, description="HNSW: candidates kept while searching.")
    hnsw_ef_construction: PositiveInt = _setting(200, description="HNSW: candidates kept while building.")
    vector_backend: Literal["", "faiss", "qdrant"] = _setting("", rule="one of faiss, qdrant", description=(
        "Where a new index keeps its vectors: faiss (a file in each version) or qdrant; empty: the "
        "index's own backend, faiss for a new one. An existing index uses what its manifest says."))
    qdrant_url: str = _setting("", description=(
        "A Qdrant server, http://host:6333 (API key: env QDRANT_API_KEY)."))
    qdrant_path: str = _setting("", description="qdrant-client local mode directory (default INDEX/qdrant).")
    qdrant_collection: str = _setting("", description="The Qdrant collection (default ragqa-<index dir name>).")
    mode: RetrievalMode = _setting("hybrid", description=(
        "Retrieval: dense, bm25, or hybrid (both, fused by reciprocal rank); the default was chosen on "
        "SciFact qrels/train.tsv (docs/results.md, SciFact)."))
    rrf_k: PositiveInt = _setting(10, description=(
        "The reciprocal rank fusion constant: 3-10 were best on SciFact train (0.719 vs 0.712 at the "
        "usual 60)."))
    candidates: PositiveInt = _setting(100, description="Hits taken from each retriever before fusion.")
    # --- answering ---
    model: str = _setting("qwen2.5-coder-1.5b-instruct", description=(
        "The generator: a packaged model name (qwen2.5-coder-1.5b-instruct, the default; the fast "
        "qwen2.5-coder-0.5b-instruct; smollm2-135m-instruct), a local transformers directory, a hub id "
        "(only where a hub is reachable), \"openai:http://host:8000/v1\" for a vLLM / OpenAI-compatible "
        "server, or \"fake\" (the tests' generator)."))
    variants_dir: Path = _setting(Path("adapters"), description=(
        "Where trained variants (adapters and their cards) are kept and looked for."))
    generator_tokenizer: str = _setting("qwen2.5-coder-0.5b-instruct", description=(
        "With model \"openai:URL\": the local model whose tokenizer measures the prompt budget (must "
        "match the served base); \"fake\": the tests' whitespace tokenizer."))
    generator_base_model: str = _setting("", description=(
        "With model \"openai:URL\": the served name of the base model (default: the one the server "
        "lists without a parent)."))
    request_timeout: float = _setting(300.0, gt=0, allow_inf_nan=False, rule="a number of seconds > 0",
                                      description=(
        "Seconds one request to an OpenAI-compatible server may take in all, connecting and the whole "
        "streamed answer (keep-alive lines do not extend it); raise it for long answers on a busy server."))
    template: str = _setting("qa-short", description=(
        "The prompt template. qa-short: the shortest answering phrase, cited by ragqa "
        "(docs/answering.md); qa asks for one or two sentences with the model's own citations; a "
        "variant reads its card's template."))
    top_k: PositiveInt = _setting(3, description=(
        "Passages retrieved for an answer (3 beat 4 on SQuAD dev: F1 60.4 vs 55.4, 559 vs 716 prompt "
        "tokens)."))
    examples_file: str = _setting("", description=(
        "Few-shot examples: JSONL of {\"question\", \"answer\", \"context\"?}; the most similar `shots` "
        "go in the prompt."))
    shots: int = _setting(0, ge=0, description="Few-shot examples from examples_file put in each prompt.")
    max_prompt_tokens: PositiveInt = _setting(1536, description=(
        "The prompt budget in tokens; CPU prompt processing cost grows with this."))
    max_new_tokens: PositiveInt = _setting(96, description="Most tokens generated for one answer.")
    do_sample: bool = _setting(False, description="Sample the answer (with temperature) instead of greedy decoding.")
    temperature: float = _setting(0.7, description="Sampling temperature (with do_sample).")
    repetition_penalty: float | None = _setting(None, description=(
        "Unset: the template's (qa-short: 1.0, since an extractive answer repeats the passage), else 1.1."))
    gen_dtype: GenDtype = _setting("auto", description=(
        "The generator's dtype. auto: bfloat16 on CPUs with native bf16 (~5x faster prompts than fp32 "
        "there), else float32 (emulated bf16 is ~6-8x slower than fp32); see "
        "generators.models.resolve_dtype."))
    decode_int8: bool = _setting(True, description=(
        "Decode (one new token at a time) with int8 copies of the weights: ~3x faster linear layers per "
        "token here, prompts still read at full precision; false: the exact model (docs/answering.md "
        "\"Generation speed\")."))
    decode_int4: bool = _setting(True, description=(
        "Decode the linear layers a packaged model's GGUF holds in 4-bit blocks with those blocks (the C "
        "kernel, decode_kernel, or PyTorch's int4 kernel: half the bytes of int8 per token); they are read once into a file beside the converted "
        "model. false: those layers decode as decode_int8 says (docs/answering.md \"Generation speed\")."))
    decode_kernel: bool = _setting(True, description=(
        "Decode (decode_int4 / decode_int8) with ragqa's C kernel: 4-bit / 7-bit weight groups times each "
        "step's row rounded to int8 per 32 inputs (as llama.cpp), compiled on first use with the machine's C "
        "compiler into cache_dir/kernels; 1.2-1.3x faster decoding here. false, or no C compiler: "
        "PyTorch's kernels (bf16) and fbgemm's (float32) (docs/answering.md \"Generation speed\")."))
    fused_decode: bool = _setting(True, description=(
        "With the C kernel (decode_kernel), run each decoding step of Llama / Qwen2 models without "
        "transformers' per-layer Python: a layer of plain kernel layers in one C call (norms, products, "
        "rotary, cache, attention), other layers (LoRA, IA3) through their modules with attention in C; "
        "1.3x faster decoding here; the same answers but at near ties (147 of 150 SQuAD answers). false: transformers' own forward "
        "(docs/answering.md \"Generation speed\")."))
    prompt_cache: bool = _setting(False, description=(
        "Keep the last answer's key/value cache: a prompt that starts like the last one (the same "
        "variant; the system instruction, the same passages, a conversation's earlier turns) reads "
        "only the rest, 8-15% faster here. Off by default: reading a prompt in two parts rounds "
        "differently in bf16, so asking the same question again can change a near-tie answer "
        "(docs/answering.md \"Generation speed\", the prompt cache)."))
    system_cache: bool = _setting(True, description=(
        "Keep the key/value cache of the system turn (the instruction every answer starts with) per "
        "variant and read only what follows it. Every prompt is split the same way, so an answer does "
        "not depend on what was asked before (docs/answering.md \"Generation speed\", the system turn)."))
    decode_dynamic_int8: bool = _setting(True, description=(
        "Where the generator runs in float32 (gen_dtype auto on CPUs without native bf16), decode the "
        "linear layers the C kernel (decode_kernel) does not take, all of them without it, with fbgemm's "
        "dynamic int8 kernel (int8 weights, each step's row quantized as it is multiplied) instead of "
        "PyTorch's int4 / int8 kernels, which are slower than plain float32 there. No effect on bf16 models "
        "(docs/answering.md \"Generation speed\")."))
    prompt_dynamic_int8: bool = _setting(True, description=(
        "With decode_dynamic_int8 on a float32 model, read prompts with fbgemm's int8 kernel too (a scale "
        "per token, 7-bit weights; down_proj layers a scale per token and segment of 320 inputs): prompts "
        "read ~1.5-2x faster, answers close to the exact model's but not always equal; false: prompts in "
        "float32 (docs/answering.md \"Generation speed\", float32 models)."))
    abstain_threshold: float = _setting(0.62, description=(
        "ragqa answers \"I don't know\" without generating when the relevance of what it retrieved, best "
        "dense cosine similarity + abstain_coverage_weight x term coverage of the hits (0..1), is below "
        "this; calibrated on SQuAD dev articles by scripts/calibrate_abstention.py (docs/answering.md "
        "\"Abstention\")."))
    abstain_coverage_weight: float = _setting(0.3, ge=0, description=(
        "The weight of term coverage in the relevance compared with abstain_threshold; 0: similarity alone."))
    cache_dir: Path = _setting(default_cache_dir, default_text="$RAGQA_CACHE_DIR, else "
                               "$XDG_CACHE_HOME/ragqa, else ~/.cache/ragqa", description=(
        "Models, exported encoders and the embedding cache."))
    embedding_cache: bool = _setting(True, description=(
        "Keep chunk embeddings in cache_dir, so text embedded once is not embedded again."))
    max_file_mb: PositiveInt = _setting(200, description="Larger document files are skipped (with a warning).")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, _LOADING.get(), values)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, None, {name: value})) from None

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with the given fields changed; ``None`` values are ignored (unset CLI flags)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values.update({k: v for k, v in changes.items() if v is not None})
        return type(self)(**values)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Settings:
        """The settings from (later wins) the defaults, the TOML file (``path``, else the file in
        env RAGQA_CONFIG, else ./ragqa.toml when there is one), ``RAGQA_<FIELD>`` environment
        variables, and ``overrides`` (``None`` values ignored: unset CLI flags)."""
        path = path or os.environ.get(CONFIG_ENV) or None
        if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
            path = DEFAULT_CONFIG_FILE
        with _loading(Path(path) if path is not None else None):
            return cls(**{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Earlier wins. Plain construction reads nothing but its arguments; ``load`` adds the
        environment and the TOML file."""
        load = _LOADING.get()
        if load is None:
            return (init_settings,)
        sources: list[PydanticBaseSettingsSource] = [init_settings, _EnvSource(settings_cls, load)]
        if load.path is not None:
            sources.append(_TomlSource(settings_cls, load))
        return tuple(sources)


# --- loading: sources and error messages ----------------------------------------------------

@dataclass
class _Load:
    """One ``Settings.load`` call: the file, and what each source gave (to name it in errors)."""

    path: Path | None
    file_values: dict[str, Any] = dc_field(default_factory=dict)
    env_values: dict[str, str] = dc_field(default_factory=dict)


_LOADING: ContextVar[_Load | None] = ContextVar("ragqa_settings_loading", default=None)


@contextmanager
def _loading(path: Path | None) -> Iterator[_Load]:
    load = _Load(path)
    token = _LOADING.set(load)
    try:
        yield load
    finally:
        _LOADING.reset(token)


class _EnvSource(EnvSettingsSource):
    """``RAGQA_<FIELD>`` (upper case, as written in the docs; empty = unset). Other ``RAGQA_*``
    names are not settings (RAGQA_CONFIG, RAGQA_DEBUG, RAGQA_UI_*, ...) and are left alone."""

    def __init__(self, settings_cls: type[BaseSettings], load: _Load) -> None:
        self._load = load
        super().__init__(settings_cls, case_sensitive=False)

    def _load_env_vars(self) -> dict[str, str | None]:
        names = {f"{ENV_PREFIX}{name.upper()}" for name in self.settings_cls.model_fields}
        found = {k: v for k, v in os.environ.items() if k in names and v != ""}
        self._load.env_values = {k[len(ENV_PREFIX):].lower(): v for k, v in found.items()}
        return {k.lower(): v for k, v in found.items()}


class _TomlSource(TomlConfigSettingsSource):
    """The settings file: a ``[ragqa]`` table, or top-level keys. Values must have the field's
    TOML type (a string is not a number, 1 is not true); unknown keys are errors."""

    def __init__(self, settings_cls: type[BaseSettings], load: _Load) -> None:
        self._load = load
        self._cls = settings_cls  # _read_files runs before the base class sets settings_cls
        super().__init__(settings_cls, toml_file=load.path, toml_table_header=())

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:
        path = self._load.path
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, IsADirectoryError):
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc}); fix the file") from None
        values = dict(data.get("ragqa", data))
        known = list(self._cls.model_fields)
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        for name, value in values.items():  # strict: TOML has real types (a path is a string)
            info = self._cls.model_fields[name]
            if info.annotation is Path and isinstance(value, str):
                value = Path(value)
            try:
                _strict_adapter(name).validate_python(value, strict=True)
            except ValidationError as exc:
                raise ConfigError(_describe(exc, None, {}, source=str(path), field=name)) from None
        self._load.file_values = values
        return values


@functools.cache
def _strict_adapter(name: str) -> TypeAdapter:
    info = Settings.model_fields[name]
    return TypeAdapter(Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)


_BOOL_TEXT = "true or false (in the environment also 1/0, yes/no, on/off)"


def _kind(annotation: Any) -> str:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(a) for a in args if a != "")
    if args and len(args) < len(get_args(annotation)):  # X | None
        return _kind(args[0]) + " (or unset)"
    return {bool: _BOOL_TEXT, int: "an integer", float: "a number", str: "a string",
            Path: "a path"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def constraint_text(name: str) -> str | None:
    """What a field allows beyond its type, in words (the messages ragqa has always given)."""
    info = Settings.model_fields[name]
    extra = info.json_schema_extra or {}
    if isinstance(extra, dict) and extra.get("rule"):
        return str(extra["rule"])
    annotation = info.annotation
    if get_origin(annotation) is Literal:
        return _kind(annotation)
    for meta in list(info.metadata):
        for op, sign in (("ge", ">="), ("gt", ">")):
            if getattr(meta, op, None) is not None:
                return f"{sign} {getattr(meta, op)}"
    return None


def allowed_text(name: str) -> str:
    """What setting ``name`` accepts, in words (for error messages and the reference)."""
    rule = constraint_text(name)
    kind = _kind(Settings.model_fields[name].annotation)
    if rule is None:
        return kind
    if rule[0] in "<>=":
        return f"{kind.removesuffix(' (or unset)')} {rule}"
    return rule


_RULE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number",
                "literal_error"}


def _describe(exc: ValidationError, load: _Load | None, given: dict[str, Any], *, source: str | None = None,
              field: str | None = None) -> str:
    """One line for a ValidationError: per bad field, where its value came from, the value and
    what is allowed (the constraint alone for a value of the right type, as ragqa always said)."""
    parts: list[str] = []
    unknown: list[str] = []
    seen: set[str] = set()
    for err in exc.errors():
        name = field or (str(err["loc"][0]) if err["loc"] else "")
        if err["type"] == "extra_forbidden" or name not in Settings.model_fields:
            unknown.append(name)
            continue
        if name in seen:
            continue
        seen.add(name)
        where = source
        if where is None and load is not None and name not in given:
            if name in load.env_values:
                where = f"environment {ENV_PREFIX}{name.upper()}"
            elif name in load.file_values:
                where = str(load.path)
        value = err.get("input")
        rule = constraint_text(name)
        what = rule if err["type"] in _RULE_ERRORS and rule else allowed_text(name)
        parts.append(f"{where + ': ' if where else ''}setting {name}={value!r} must be {what}")
    if unknown:
        parts.append(f"unknown setting(s) {', '.join(sorted(set(unknown)))}; "
                     f"known: {', '.join(Settings.model_fields)}")
    return "; ".join(parts)
