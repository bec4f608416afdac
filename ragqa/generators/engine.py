"""``Generator``: one base model in memory serves every variant.

    gen = Generator("smollm2-135m-instruct", cache_dir=Path(".cache"), variants_dir=Path("adapters"))
    gen.generate(gen.chat_prompt("What is the capital of France?")).text
    gen.generate(prompt, variant="my-lora", settings=GenerationSettings(max_new_tokens=64))
    for piece in gen.stream(prompt, variant="my-soft-prompt"): print(piece, end="")

The base loads lazily (first use or ``load()``); a variant loads once, on first use or through
``load_variant``, and attaches to the same module (see the kind modules for how each kind is
served). One lock serialises every load and generation, so concurrent calls with different
variants never see each other's adapter.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ragqa.errors import ConfigError, ModelError
from ragqa.files import one_line
from ragqa.generators.models import (BASE_MODELS, DEFAULT_MODEL, converted_path, load_base,
                                     load_tokenizer, model_fingerprint, resolve_dtype,
                                     resolve_model)
from ragqa.generators.registry import (CARD_FILE, Card, ModelHost, VariantKind, find_variant_dir,
                                       get_kind, kind_from_peft_type, list_variants,
                                       read_adapter_config)

MAX_CONTEXT = 4096
# with the prompt cache, a prompt that starts with at least this many of the last generation's
# tokens (same variant) reads only the rest, and always at least its last this many
# (Generator._prompt_cache)
MIN_REUSED_TOKENS = 16
# end-of-turn markers of common chat templates: generation also stops on these when present
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    seed: int | None = None
    min_new_tokens: int = 0  # benchmarks hold both sides to one length; answers leave it at 0
    # structured output: the text must be JSON valid under this JSON schema ({} = any JSON value);
    # decoding is constrained to it (generators.constrained). None: free text.
    json_schema: dict | None = None

    def check(self) -> None:
        if int(self.max_new_tokens) < 1:
            raise ConfigError(f"max_new_tokens is {self.max_new_tokens}; give 1 or more")
        if self.do_sample and not self.temperature > 0:
            raise ConfigError(f"temperature is {self.temperature}; give a value > 0 when sampling")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p is {self.top_p}; give a value in (0, 1]")
        if not self.repetition_penalty > 0:
            raise ConfigError(f"repetition_penalty is {self.repetition_penalty}; give a value > 0 "
                              "(1.0 = off)")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            raise ConfigError(f"json_schema is a {type(self.json_schema).__name__}; give a JSON "
                              "schema object ({} for any JSON value)")


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    new_tokens: int
    generate_ms: float      # the generate call, prompt processing included
    first_token_ms: float   # from the start of the generate call to the first new token
    tokens_per_s: float     # new_tokens / generate seconds
    variant: str
    switch_ms: float = 0.0  # activating the variant's adapter (set_adapter) before generating
    token_ids: list[int] = field(default_factory=list)  # the new tokens, special ones included
    reused_tokens: int = 0  # prompt tokens not read again: the last generation had them (same start)

    def timings(self) -> dict:
        """Prompt processing and decoding apart (see ``stage_timings``)."""
        return stage_timings(self.prompt_tokens, self.new_tokens, self.generate_ms, self.first_token_ms,
                             self.reused_tokens)


def stage_timings(prompt_tokens: int, new_tokens: int, generate_ms: float,
                  first_token_ms: float, reused_tokens: int = 0) -> dict:
    """The numbers a user reads, prompt processing and decoding apart: ``first_token_ms`` (reading
    the prompt, up to the first new token), ``decode_ms`` (the remaining tokens), their rates
    ``prompt_tokens_per_s`` (over the tokens read: ``reused_tokens`` of the prompt were read
    before, the system turn or with ``prompt_cache`` the last generation's start) and
    ``decode_tokens_per_s`` (None where there is nothing to divide: a 1-token answer has no decode
    rate), and ``tokens_per_s`` (new tokens / the whole call, which
    a long prompt drags down: kept for comparisons across versions)."""
    first = float(first_token_ms) if new_tokens else float(generate_ms)
    decode = max(0.0, float(generate_ms) - first)
    read = int(prompt_tokens) - int(reused_tokens)
    return {"first_token_ms": round(first, 1), "decode_ms": round(decode, 1),
            "generate_ms": round(float(generate_ms), 1), "prompt_tokens": int(prompt_tokens),
            "reused_tokens": int(reused_tokens), "new_tokens": int(new_tokens),
            "prompt_tokens_per_s": round(read / (first / 1000), 1) if first > 0 else None,
            "decode_tokens_per_s": (round((new_tokens - 1) / (decode / 1000), 2)
                                    if new_tokens > 1 and decode > 0 else None),
            "tokens_per_s": round(new_tokens / (generate_ms / 1000), 2) if generate_ms > 0 else 0.0}


def describe_timings(t: dict) -> str:
    """``read 961 prompt tokens in 3.2 s (300 tokens/s), wrote 12 tokens in 1.1 s more (10.0
    tokens/s)`` (the first token comes with the prompt):
    one owner for the words every front end prints."""
    parts = []
    if t.get("prompt_tokens") is not None and t.get("first_token_ms") is not None:
        rate = t.get("prompt_tokens_per_s")
        kept = t.get("reused_tokens") or 0
        parts.append(f"read {t['prompt_tokens']} prompt tokens"
                     + (f" ({kept} of them read before)" if kept else "")
                     + f" in {seconds(t['first_token_ms'])}" + (f" ({rate:.0f} tokens/s)" if rate else ""))
    if t.get("new_tokens") is not None and t.get("decode_ms") is not None:
        rate = t.get("decode_tokens_per_s")
        n = t["new_tokens"]
        # a rate over a few tokens says nothing (and rounds to "0.0 tokens/s" after a slow first one)
        parts.append(f"wrote {n} token{'s' if n != 1 else ''} in {seconds(t['decode_ms'])} more"
                     + (f" ({rate:.1f} tokens/s)" if rate and n >= 4 else ""))
    return ", ".join(parts)


def seconds(ms: float) -> str:
    """A duration for people, always in seconds: "0.03 s", "3.2 s", "75 s"."""
    s = float(ms) / 1000
    return f"{s:.2f} s" if s < 1 else f"{s:.1f} s" if s < 60 else f"{s:.0f} s"


def stop_ids(tokenizer, generation_config) -> list[int]:
    """Token ids generation stops on: the model's eos ids, the tokenizer's eos and any end-of-turn
    marker of common chat templates the vocabulary has."""
    ids = generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    for marker in END_OF_TURN:  # looked up one by one: the whole vocabulary costs ~70 ms a call
        tid = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(tid, int) and tokenizer.convert_ids_to_tokens(tid) == marker:
            ids.append(tid)
    return list(dict.fromkeys(ids))


class _FirstToken:
    """Streamer mix-in: the time of the first new token (the first put() is the prompt)."""

    def _mark(self):
        self._puts = getattr(self, "_puts", 0) + 1
        if self._puts == 2:
            self.first_token_at = time.perf_counter()


def _timing_streamer():
    from transformers.generation.streamers import BaseStreamer

    class TimingStreamer(_FirstToken, BaseStreamer):
        first_token_at = None

        def put(self, value):
            self._mark()

        def end(self):
            pass

    return TimingStreamer()


def _text_streamer(tokenizer, **decode_kwargs):
    from transformers import TextIteratorStreamer

    class TextStreamer(_FirstToken, TextIteratorStreamer):
        first_token_at = None

        def put(self, value):
            self._mark()
            super().put(value)

    return TextStreamer(tokenizer, skip_prompt=True, **decode_kwargs)


def _cancel_criteria(event: threading.Event):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool)

    return StoppingCriteriaList([Cancelled()])


class Generator:
    def __init__(self, model: str = DEFAULT_MODEL, *, cache_dir: Path,
                 variants_dir: Path = Path("adapters"), dtype="auto", threads: int = 1,
                 decode_int8: bool = False, decode_int4: bool = False,
                 decode_dynamic_int8: bool = False, prompt_dynamic_int8: bool = False,
                 decode_kernel: bool = True, fused_decode: bool = True, prompt_cache: bool = False,
                 system_cache: bool = True):
        self.model_name = str(model)
        self.cache_dir = Path(cache_dir)
        self.variants_dir = Path(variants_dir)
        self.dtype = resolve_dtype(dtype) if isinstance(dtype, str) else dtype
        self.threads = max(1, int(threads))
        self.decode_int8 = bool(decode_int8)  # decode with int8 weight copies (int8_decode.py)
        self.decode_int4 = bool(decode_int4)  # decode with the GGUF's 4-bit blocks (gguf_int4.py)
        # a float32 model decodes with fbgemm's dynamic int8 instead of both (dynamic_int8.py)
        self.decode_dynamic_int8 = bool(decode_dynamic_int8)
        self.prompt_dynamic_int8 = bool(prompt_dynamic_int8)  # and reads prompts with it
        self.decode_kernel = bool(decode_kernel)  # 4-bit / int8 decoding with the C kernel (qgemv.py)
        self.fused_decode = bool(fused_decode)  # and decoding steps without transformers' layers (fused_decode.py)
        self.prompt_cache = bool(prompt_cache)  # keep the last generation's cache (_prompt_cache)
        self._kept = None  # (variant, its token ids, their cache) after the last generation
        self.system_cache = bool(system_cache)  # keep each system turn's cache (_system_cache)
        self._heads: dict = {}  # (variant, the system turn's token ids) -> their cache
        self._turn_ids: list[int] | None = None  # what ends a system turn and opens the user's
        self._lock = threading.Lock()      # every load and generation
        self._owner: int | None = None
        self._meta_lock = threading.Lock()  # lazy path / tokenizer resolution
        self._path: Path | str | None = None
        self._tokenizer = None
        self._host: ModelHost | None = None
        self._variants: dict[str, VariantKind] = {}
        self._by_dir: dict[str, str] = {}
        self._counter = 0

    def __repr__(self) -> str:
        state = "loaded" if self._host else "not loaded"
        return f"Generator({self.model_name!r}, {state}, variants={sorted(self._variants)})"

    # ------------------------------------------------------------------------- lazy metadata

    @property
    def path(self) -> Path | str:
        """The directory the base loads from (a packaged model is converted on first access)."""
        return self._resolve_path()

    def _resolve_path(self, status: Callable[[str], None] | None = None) -> Path | str:
        with self._meta_lock:
            if self._path is None:
                self._path = resolve_model(self.model_name, self.cache_dir, status=status)
            return self._path

    @property
    def tokenizer(self):
        if self._host is not None:
            return self._host.tokenizer
        path = self.path
        with self._meta_lock:
            if self._tokenizer is None:
                self._tokenizer = load_tokenizer(path)
            return self._tokenizer

    @property
    def fingerprint(self) -> str:
        return model_fingerprint(self.path)

    @property
    def context_length(self) -> int:
        if self._host is not None:
            n = getattr(self._host.model.config, "max_position_embeddings", None)
        elif isinstance(self.path, Path):
            n = json.loads((self.path / "config.json").read_text()).get("max_position_embeddings")
        else:
            from transformers import AutoConfig

            n = getattr(AutoConfig.from_pretrained(self.path), "max_position_embeddings", None)
        return min(int(n or 2048), MAX_CONTEXT)

    def _known_fingerprint(self) -> str | None:
        """The fingerprint if it can be had without converting a packaged model."""
        if self._path is not None:
            return self.fingerprint
        if self.model_name in BASE_MODELS:
            path = converted_path(self.model_name, self.cache_dir)
            return model_fingerprint(path) if path else None
        return self.fingerprint

    # ------------------------------------------------------------------------- locking / loading

    @contextlib.contextmanager
    def _locked(self):
        me = threading.get_ident()
        if self._owner == me:
            raise RuntimeError("this thread already holds the generator (an unfinished stream()?); "
                               "finish or close the stream before the next call")
        with self._lock:
            self._owner = me
            try:
                yield
            finally:
                self._owner = None

    @property
    def loaded(self) -> bool:
        """Whether the base model is in memory (else the next call loads it, converting it first
        when it is a packaged model not converted yet)."""
        return self._host is not None

    def load(self, status: Callable[[str], None] | None = None) -> None:
        """Loads the base model now (otherwise the first generation does). ``status`` hears what
        is happening: the one-time conversion's steps, then loading."""
        if self._host is not None:
            return
        if status is not None:
            self._resolve_path(status)  # converts a packaged model first if it must, saying so
            status(f"loading {self.model_name} into memory")
        with self._locked():
            self._ensure_base(status)

    def _ensure_base(self, status: Callable[[str], None] | None = None) -> ModelHost:
        if self._host is None:
            model, tokenizer = load_base(self.path, dtype=self.dtype, threads=self.threads,
                                         decode_int8=self.decode_int8, decode_int4=self.decode_int4,
                                         status=status, decode_dynamic_int8=self.decode_dynamic_int8,
                                         prompt_dynamic_int8=self.prompt_dynamic_int8,
                                         decode_kernel=self.decode_kernel, cache_dir=self.cache_dir,
                                         fused_decode=self.fused_decode)
            self._host = ModelHost(model, tokenizer)
            self._tokenizer = tokenizer
            self._variants = {"base": get_kind("base")(self._host, "base", None, None, "base")}
            self._by_dir = {}
        return self._host

    @property
    def model(self):
        """The one shared base module (a transformers model), None until the first load; every
        variant runs on this object (benchmarks check it is never replaced or copied)."""
        return self._host.model if self._host is not None else None

    def unload(self) -> None:
        """Drops the model and its variants from memory; the next use loads them again."""
        with self._locked():
            self._reset()

    def _reset(self) -> None:
        """Drops the model and every loaded variant (after an adapter failed half-way)."""
        self._host = None
        self._variants = {}
        self._by_dir = {}
        self._kept = None
        self._heads = {}

    # ------------------------------------------------------------------------- variants

    def _compatible(self, card: Card, fingerprint: str | None) -> bool:
        """False when the card says it was trained on another base: another fingerprint, or
        (no fingerprint to compare: none recorded, or this base not converted yet) another
        packaged model's name. Before the fingerprint was compared only when both were known,
        so a base not yet converted listed every variant, another base's too."""
        if card.base_fingerprint and fingerprint:
            return card.base_fingerprint == fingerprint
        if card.base_model in BASE_MODELS:
            return card.base_model == self.model_name
        return True  # nothing to compare against: loading checks the shapes

    def variants(self) -> list[dict]:
        """The base plus the variants under variants_dir trained on this base (a card whose
        base_fingerprint differs is left out), plus any loaded from elsewhere."""
        fingerprint = self._known_fingerprint()
        path = self._path or converted_path(self.model_name, self.cache_dir) or self.model_name
        out = [{"name": "base", "kind": "base", "base_model": self.model_name, "path": str(path)}]
        seen = set()
        for entry in list_variants(self.variants_dir, [], cache_dir=self.cache_dir):
            try:
                card = Card.load(Path(entry["path"]))
            except ModelError:
                continue
            if self._compatible(card, fingerprint):
                out.append(entry)
                seen.add(str(Path(entry["path"]).resolve()))
        for name, variant in list(self._variants.items()):
            if name != "base" and str(variant.path.resolve()) not in seen:
                out.append(variant.describe())
        return out

    def _find_variant_dir(self, name_or_dir: str) -> Path:
        return find_variant_dir(name_or_dir, self.variants_dir)

    def check_variant(self, name_or_dir: str) -> None:
        """ModelError when ``name_or_dir`` is no variant this generator can serve (unknown, or
        trained on another base), without loading or converting the model: callers check before
        anything slow happens."""
        if name_or_dir == "base" or name_or_dir in self._variants:
            return
        directory = self._find_variant_dir(name_or_dir)
        card = Card.load(directory)
        if not self._compatible(card, self._known_fingerprint()):
            raise ModelError(f"variant {card.name!r} was trained on base {card.base_model or '?'}, "
                             f"not on {self.model_name}; pick its base with --model "
                             f"{card.base_model or 'BASE'} or one of this base's variants "
                             "(`ragqa variants list`)")

    def variant_template(self, name_or_dir: str) -> str | None:
        """The name of the prompt template a variant was trained with (its card's ``template``),
        if it has one; None for base. Never loads the model (which templates answer questions is
        for ``answering`` to say)."""
        if name_or_dir == "base":
            return None
        loaded = self._variants.get(name_or_dir)
        card = loaded.card if loaded is not None else Card.load(self._find_variant_dir(name_or_dir))
        return (card.template or "").strip() or None if card else None

    def load_variant(self, name_or_dir: str) -> str:
        """Loads a variant once (a name under variants_dir, or a directory); returns its name."""
        with self._locked():
            return self._load_variant(name_or_dir).name

    def _load_variant(self, name_or_dir: str) -> VariantKind:
        self._ensure_base()
        if name_or_dir in self._variants:
            return self._variants[name_or_dir]
        directory = self._find_variant_dir(name_or_dir)
        key = str(directory.resolve())
        if key in self._by_dir:
            return self._variants[self._by_dir[key]]
        card = Card.load(directory)
        if card.name == "base":
            raise ModelError(f"variant {directory}: the name 'base' is reserved; rename it in "
                             "its card")
        if card.name in self._variants:
            raise ModelError(f"variant {card.name!r}: two directories use this name "
                             f"({self._variants[card.name].path} and {directory}); rename one "
                             "in its card")
        peft_type = str(read_adapter_config(directory).get("peft_type") or "")
        if peft_type and kind_from_peft_type(peft_type) != card.kind:
            raise ModelError(f"variant {card.name!r}: its card says kind {card.kind!r} but the "
                             f"adapter is {peft_type}; fix \"kind\" in {directory / CARD_FILE}")
        fingerprint = self.fingerprint
        if not self._compatible(card, fingerprint):
            raise ModelError(
                f"variant {card.name!r} was trained on base {card.base_model or '?'} "
                f"(fingerprint {card.base_fingerprint or '?'}) but this generator serves "
                f"{self.model_name} (fingerprint {fingerprint}); use a Generator for "
                f"{card.base_model or 'that base'} or retrain the variant")
        variant = get_kind(card.kind)(self._host, card.name, directory, card,
                                      f"v{self._counter}")
        self._counter += 1
        try:
            variant.load()
        except ModelError:
            raise
        except Exception as exc:
            # an adapter may be half-injected into the shared module: start clean next time
            self._reset()
            raise ModelError(f"variant {card.name!r} ({card.kind}, {directory}): cannot load it "
                             f"on {self.model_name} ({one_line(exc)}); the base "
                             "model will be reloaded on next use") from exc
        self._variants[card.name] = variant
        self._by_dir[key] = card.name
        return variant

    # ------------------------------------------------------------------------- generation

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        """``user`` (and ``system``) formatted with the model's chat template, ready for the
        assistant's answer; plain text when the tokenizer has no template."""
        tokenizer = self.tokenizer
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}]
        if not getattr(tokenizer, "chat_template", None):
            return (f"{system}\n\n" if system else "") + user
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode(self, prompt: str):
        tokenizer = self._host.tokenizer
        bos = tokenizer.bos_token
        enc = tokenizer(prompt, return_tensors="pt",
                        add_special_tokens=not (bos and prompt.startswith(bos)))
        if enc["input_ids"].shape[1] == 0:
            raise ConfigError("prompt is empty; give some text")
        return enc["input_ids"], enc["attention_mask"]

    def _prepare(self, prompt: str, variant: str, settings: GenerationSettings | None):
        """(variant, input_ids, attention_mask, generate kwargs, switch ms); lock held."""
        settings = settings or GenerationSettings()
        settings.check()
        v = self._load_variant(variant)
        input_ids, attention_mask = self._encode(prompt)
        used = input_ids.shape[1] + v.virtual_tokens
        context = self.context_length
        if used >= context:
            raise ConfigError(f"prompt has {used} tokens but {self.model_name} reads at most "
                              f"{context}; shorten the prompt (fewer or shorter passages)")
        kwargs = {"max_new_tokens": min(int(settings.max_new_tokens), context - used),
                  "do_sample": bool(settings.do_sample),
                  "repetition_penalty": float(settings.repetition_penalty),
                  "pad_token_id": self._host.tokenizer.pad_token_id,
                  "eos_token_id": stop_ids(self._host.tokenizer, self._host.model.generation_config)}
        if settings.json_schema is not None:
            from transformers import LogitsProcessorList

            from ragqa.generators.constrained import json_logits_processor

            kwargs["logits_processor"] = LogitsProcessorList([json_logits_processor(
                self._host.tokenizer, kwargs["eos_token_id"], settings.json_schema or None,
                kwargs["max_new_tokens"])])
        if settings.min_new_tokens:
            kwargs["min_new_tokens"] = min(int(settings.min_new_tokens), kwargs["max_new_tokens"])
        if settings.do_sample:
            kwargs.update(temperature=float(settings.temperature), top_p=float(settings.top_p))
        else:  # no sampling knobs from the model's generation_config either (avoids warnings)
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if settings.seed is not None:
            import torch

            torch.manual_seed(int(settings.seed))
        started = time.perf_counter()
        v.activate()
        return v, input_ids, attention_mask, kwargs, (time.perf_counter() - started) * 1000

    def forget_prompts(self) -> None:
        """Drops the kept caches: the next prompt is read whole (benchmarks time cold prompts)."""
        with self._locked():
            self._kept = None
            self._heads = {}

    def _turn_boundary(self) -> list[int]:
        """The token ids the chat template puts between a system message and the user's (Qwen:
        ``<|im_end|>\n<|im_start|>user\n``); [] without a template or a system role."""
        if self._turn_ids is None:
            tokenizer = self._host.tokenizer
            ids: list[int] = []
            if getattr(tokenizer, "chat_template", None):
                try:
                    text = tokenizer.apply_chat_template(
                        [{"role": "system", "content": "\x01S\x01"}, {"role": "user", "content": "\x01U\x01"}],
                        tokenize=False, add_generation_prompt=True)
                except Exception:  # a template without a system role
                    text = ""
                a, b = text.find("\x01S\x01"), text.find("\x01U\x01")
                if 0 <= a < b:
                    ids = tokenizer(text[a + 3:b], add_special_tokens=False)["input_ids"]
            self._turn_ids = ids
        return self._turn_ids

    def _system_cache(self, v, input_ids, attention_mask, kwargs):
        """(a cache holding this prompt's system turn, its length if an earlier call read it, else
        0: this call reads it, as a piece of its own), or (None, 0). The system turn
        (up to the user's turn: 72 tokens for qa-short with Qwen's template) is the same in every answer: its keys and
        values are computed once per variant, with the variant's own ``generate`` as a prompt of
        its own, and every prompt reads only what follows it, in one piece. The split depends on
        the prompt alone, so an answer does not depend on what was asked before (as it can with
        ``prompt_cache``, docs/answering.md)."""
        if not self.system_cache or not type(v).prompt_cache or input_ids.shape[0] != 1:
            return None, 0
        turn, ids = self._turn_boundary(), input_ids[0].tolist()
        if not turn:
            return None, 0
        end = next((i + len(turn) for i in range(len(ids) - len(turn) + 1) if ids[i:i + len(turn)] == turn), 0)
        if end < MIN_REUSED_TOKENS or len(ids) - end < MIN_REUSED_TOKENS:
            return None, 0
        key = (v.name, tuple(ids[:end]))
        held = self._heads.get(key)
        earlier = end
        if held is None or held[0] is not v:
            earlier = 0
            import torch
            from transformers import DynamicCache

            cache = DynamicCache(config=self._host.model.config)
            # greedy, one token, no streamer: nothing of the answer's own settings (nor its
            # random numbers) is used up by this
            quiet = {k: kwargs[k] for k in ("pad_token_id", "eos_token_id") if k in kwargs}
            with torch.inference_mode():
                v.generate(input_ids[:, :end], attention_mask[:, :end], cache=cache, max_new_tokens=1,
                           do_sample=False, temperature=None, top_p=None, top_k=None, **quiet)
            while len(self._heads) >= 4:  # a few instructions at most (templates, variants)
                self._heads.pop(next(iter(self._heads)))
            held = self._heads[key] = (v, cache)
        return copy.deepcopy(held[1]), earlier

    def _prompt_cache(self, v, input_ids):
        """(the cache to generate with, prompt tokens it already holds). When ``v`` also made the
        last generation and this prompt starts with at least MIN_REUSED_TOKENS of its tokens (the
        system instruction, the same passages, a conversation's earlier turns), that generation's
        cache cut back to the shared start, so only the rest is read (never less than the last
        MIN_REUSED_TOKENS); else a new cache, kept for the next call. (None, 0) where nothing is
        kept: switched off (the default: answers at near ties can change with what was asked
        before, docs/answering.md), or a kind whose virtual tokens live outside the ids (soft
        prompts, prefixes)."""
        kept, self._kept = self._kept, None
        if not self.prompt_cache or not type(v).prompt_cache or input_ids.shape[0] != 1:
            return None, 0
        from transformers import DynamicCache

        if kept is not None and kept[0] is v:
            ids, cache = kept[1], kept[2]
            new = input_ids[0].tolist()
            # the last MIN_REUSED_TOKENS are always read as a prompt (bf16 products), never as a
            # decoding step's few rows (int8 rows in the C kernel), which would change the answer
            n, limit = 0, min(len(ids), len(new) - MIN_REUSED_TOKENS)
            while n < limit and ids[n] == new[n]:
                n += 1
            if n >= MIN_REUSED_TOKENS:
                cache.crop(n - cache.get_seq_length())  # a negative count: the tokens to drop
                return cache, n
        return DynamicCache(config=self._host.model.config), 0

    def _result(self, v, input_ids, new_ids, started, first_token_at, switch_ms, reused=0):
        ended = time.perf_counter()
        seconds = ended - started
        n = int(new_ids.numel())
        return GenerationResult(
            text=self._host.tokenizer.decode(new_ids, skip_special_tokens=True),
            prompt_tokens=int(input_ids.shape[1]), new_tokens=n,
            generate_ms=seconds * 1000,
            first_token_ms=((first_token_at or ended) - started) * 1000 if n else 0.0,
            tokens_per_s=n / seconds if seconds > 0 else 0.0,
            variant=v.name, switch_ms=switch_ms, token_ids=new_ids.tolist(), reused_tokens=int(reused))

    def _run(self, v, input_ids, attention_mask, **kwargs):
        """(new token ids, prompt tokens earlier calls read: the last generation's start, or the
        system turn)."""
        import torch

        torch.set_num_threads(self.threads)
        cache, reused = self._prompt_cache(v, input_ids)
        keep = cache is not None  # the prompt cache keeps what this generation makes
        if not reused:
            head, reused = self._system_cache(v, input_ids, attention_mask, kwargs)
            cache = head if head is not None else cache
        if cache is not None:
            kwargs["cache"] = cache
        try:
            with torch.inference_mode():
                new_ids = v.generate(input_ids, attention_mask, **kwargs)
        except (ModelError, ConfigError):
            raise
        except Exception as exc:
            raise ModelError(f"model {self.model_name}, variant {v.name!r}: generation failed "
                             f"({one_line(exc)})") from exc
        if keep:  # the cache holds the prompt and every new token but the last
            self._kept = (v, (input_ids[0].tolist() + new_ids.tolist())[:cache.get_seq_length()], cache)
        return new_ids, reused

    def generate(self, prompt: str, variant: str = "base",
                 settings: GenerationSettings | None = None) -> GenerationResult:
        """One answer for ``prompt`` (text, already chat-formatted if wanted) with ``variant``."""
        with self._locked():
            v, input_ids, mask, kwargs, switch_ms = self._prepare(prompt, variant, settings)
            streamer = _timing_streamer()
            started = time.perf_counter()
            new_ids, reused = self._run(v, input_ids, mask, streamer=streamer, **kwargs)
            return self._result(v, input_ids, new_ids, started, streamer.first_token_at,
                                switch_ms, reused)

    def stream(self, prompt: str, variant: str = "base",
               settings: GenerationSettings | None = None) -> Iterator[str]:
        """Text pieces as they are generated; they join to ``generate()``'s text. The model
        lock is held until the stream is exhausted or closed (closing stops the generation at
        the next token). The generator's return value is the GenerationResult."""
        with self._locked():
            v, input_ids, mask, kwargs, switch_ms = self._prepare(prompt, variant, settings)
            streamer = _text_streamer(self._host.tokenizer, skip_special_tokens=True)
            cancel = threading.Event()
            outcome: dict = {}

            def work():
                try:
                    outcome["ids"], outcome["reused"] = self._run(
                        v, input_ids, mask, streamer=streamer,
                        stopping_criteria=_cancel_criteria(cancel), **kwargs)
                except BaseException as exc:  # handed to the consumer below
                    outcome["error"] = exc
                    streamer.end()

            started = time.perf_counter()
            worker = threading.Thread(target=work, name="ragqa-generate", daemon=True)
            worker.start()
            try:
                for piece in streamer:
                    if piece:
                        yield piece
            finally:
                cancel.set()
                worker.join()
            if "error" in outcome:
                raise outcome["error"]
            return self._result(v, input_ids, outcome["ids"], started, streamer.first_token_at,
                                switch_ms, outcome["reused"])
