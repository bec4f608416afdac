"""Variants: the card, the kinds registry and the shared model host.

A variant is a directory holding a PEFT adapter (``adapter_config.json`` +
``adapter_model.safetensors``) and ``ragqa_variant.json`` (the ``Card``). Each kind lives in its
own module, carries both how a variant is served on the shared base and, for the kinds
``ragqa train`` makes, how it is trained (``peft_type``, ``default_lr``, ``train_settings``,
``peft_config``), and registers itself here with ``@register_kind("name")``. Adding a kind is one
new module plus its name in ``_BUILTIN_KIND_MODULES``:

    base            the base model, every adapter disabled            (base.py)
    lora            PEFT load_adapter/set_adapter on one PeftModel     (lora.py; also other
                    non-prompt PEFT types such as loha, lokr)
    prompt-tuning   soft prompt prepended through inputs_embeds        (prompt_tuning.py)
    prefix-tuning   a prompt-learning PeftModel around the same module (prefix_tuning.py)
    ia3             activation scales applied by forward hooks         (ia3.py)
    ln-tuning       trained norm weights swapped in for one generation (ln_tuning.py)
"""

from __future__ import annotations

import contextlib
import importlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ragqa.errors import ModelError
from ragqa.files import write_json_atomic

if TYPE_CHECKING:
    import torch

CARD_FILE = "ragqa_variant.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

KINDS: dict[str, type[VariantKind]] = {}
_BUILTIN_KIND_MODULES = ("base", "lora", "prompt_tuning", "prefix_tuning", "ia3", "ln_tuning")


def register_kind(name: str):
    """Class decorator: ``@register_kind("lora") class LoraKind(VariantKind): ...``."""
    def decorator(cls):
        cls.kind = name
        KINDS[name] = cls
        return cls
    return decorator


def _ensure_builtin_kinds() -> None:
    for module in _BUILTIN_KIND_MODULES:
        importlib.import_module(f"ragqa.generators.{module}")


def trainable_kinds() -> dict[str, type[VariantKind]]:
    """The kinds ``ragqa train --method`` makes (those that say how to build their PEFT config)."""
    _ensure_builtin_kinds()
    order = [f"ragqa.generators.{m}" for m in _BUILTIN_KIND_MODULES]
    ranked = sorted(KINDS.items(), key=lambda kv: order.index(kv[1].__module__)
                    if kv[1].__module__ in order else len(order))
    return {name: cls for name, cls in ranked if cls.peft_type}


def get_kind(kind: str) -> type[VariantKind]:
    """The class serving ``kind``. A kind with no class of its own (a PEFT type such as ``loha``)
    is served like lora, through load_adapter/set_adapter."""
    _ensure_builtin_kinds()
    if kind in KINDS:
        return KINDS[kind]
    if kind.upper().replace("-", "_") in PROMPT_LEARNING_TYPES:
        raise ModelError(f"variant kind {kind!r}: this prompt-learning method is not supported; "
                         f"use one of {', '.join(sorted(KINDS))}")
    return KINDS["lora"]


# prompt-learning PEFT types: they cannot share a PeftModel with LoRA-style adapters
PROMPT_LEARNING_TYPES = {"PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING",
                         "CPT", "CARTRIDGE"}


def kind_from_peft_type(peft_type: str) -> str:
    _ensure_builtin_kinds()
    for name, cls in KINDS.items():
        if cls.peft_type and cls.peft_type == peft_type:
            return name
    return peft_type.lower().replace("_", "-")


# ---------------------------------------------------------------------------------- card

@dataclass
class Card:
    """``ragqa_variant.json``: what a variant is and how it was made (JSON, never pickle)."""

    name: str
    kind: str = ""
    base_model: str = ""
    base_fingerprint: str = ""
    template: str = ""
    data_hash: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept on save

    @classmethod
    def load(cls, directory: Path) -> Card:
        """The card of a variant directory. Missing card: one built from adapter_config.json.
        Missing kind: inferred from the adapter's peft_type."""
        directory = Path(directory)
        card_file = directory / CARD_FILE
        adapter_cfg = read_adapter_config(directory) if (
            directory / ADAPTER_CONFIG).is_file() or not card_file.is_file() else {}
        data: dict[str, Any] = {}
        if card_file.is_file():
            try:
                data = json.loads(card_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ModelError(f"variant {directory}: {CARD_FILE} is not valid JSON ({exc}); "
                                 "fix or delete it") from None
            if not isinstance(data, dict):
                raise ModelError(f"variant {directory}: {CARD_FILE} must hold a JSON object")
        known = {f.name for f in fields(cls)} - {"extra"}
        card = cls(name=str(data.get("name") or directory.name),
                   **{k: v for k, v in data.items() if k in known and k != "name"},
                   extra={k: v for k, v in data.items() if k not in known})
        peft_type = str(adapter_cfg.get("peft_type", ""))
        if not card.kind:
            card.kind = kind_from_peft_type(peft_type) if peft_type else ""
        if not card.kind:
            raise ModelError(f"variant {directory}: no kind in {CARD_FILE} and no peft_type in "
                             f"{ADAPTER_CONFIG}; add \"kind\" to the card")
        if not card.base_model:
            card.base_model = str(adapter_cfg.get("base_model_name_or_path") or "")
        return card

    def save(self, directory: Path) -> Path:
        """Writes ``ragqa_variant.json`` atomically; returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data.update(data.pop("extra"))
        write_json_atomic(directory / CARD_FILE, data, indent=2, sort_keys=False)
        return directory / CARD_FILE


def read_adapter_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / ADAPTER_CONFIG
    if not path.is_file():
        raise ModelError(f"variant {directory}: no {ADAPTER_CONFIG}; a variant directory holds a "
                         "PEFT adapter saved with save_pretrained")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"variant {directory}: {ADAPTER_CONFIG} is not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def is_variant_dir(path: Path) -> bool:
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file()


DEFAULT_VARIANTS_DIR = Path("adapters")


def variant_dirs(variants_dir: Path) -> list[Path]:
    """Where variants are looked for: ``variants_dir``; with the default (``./adapters``, where
    ``ragqa train`` puts new ones) also the variants shipped with ragqa (``resources``), so they
    are found from any folder. A variant in the first folder hides a shipped one of its name."""
    from ragqa import resources

    dirs = [Path(variants_dir)]
    shipped = resources.shipped_variants()
    if Path(variants_dir) == DEFAULT_VARIANTS_DIR and shipped.is_dir() and not (
            dirs[0].is_dir() and dirs[0].resolve() == shipped.resolve()):
        dirs.append(shipped)
    return dirs


def _variant_subdirs(variants_dir: Path) -> list[Path]:
    return [sub for d in variant_dirs(variants_dir) if d.is_dir() for sub in sorted(d.iterdir())
            if is_variant_dir(sub)]


def find_variant_dir(name_or_dir: str, variants_dir: Path) -> Path:
    """The directory of a variant: ``name_or_dir`` itself when it is a variant directory, else
    ``DIR/name``, else the directory whose card has that name, for DIR in ``variant_dirs``."""
    path = Path(name_or_dir).expanduser()
    if is_variant_dir(path):
        return path
    for directory in variant_dirs(variants_dir):
        candidate = directory / name_or_dir
        if is_variant_dir(candidate):
            return candidate
    for sub in _variant_subdirs(variants_dir):  # a card may name its variant differently from its dir
        with contextlib.suppress(ModelError):
            if Card.load(sub).name == name_or_dir:
                return sub
    known = [v["name"] for v in list_variants(variants_dir, [])]
    where = " or ".join(str(d) for d in variant_dirs(variants_dir))
    raise ModelError(f"variant {name_or_dir!r}: not a variant directory and not found under "
                     f"{where} (known: {', '.join(known) or 'none'})")


def list_variants(variants_dir: Path, base_models: list[str], *,
                  cache_dir: Path | None = None) -> list[dict]:
    """``{"name", "kind", "base_model", "path"}`` for every variant directory in
    ``variant_dirs(variants_dir)`` (unreadable ones are skipped; the first of a name wins), plus a
    ``"base"`` entry for each available base model; its path is the converted directory when
    there is one, else the name (listing never converts)."""
    from ragqa.generators.models import converted_path, is_available

    out = []
    for model in base_models:
        if is_available(model):
            path = converted_path(model, cache_dir)
            out.append({"name": "base", "kind": "base", "base_model": model,
                        "path": str(path) if path else model})
    seen = set()
    for sub in _variant_subdirs(variants_dir):
        try:
            card = Card.load(sub)
        except ModelError:
            continue
        if card.name in seen:
            continue
        seen.add(card.name)
        out.append({"name": card.name, "kind": card.kind, "base_model": card.base_model,
                    "path": str(sub)})
    return out


# ---------------------------------------------------------------------------------- serving

class ModelHost:
    """The one base model in memory, shared by every variant. ``peft`` is the single PeftModel
    that holds the load_adapter-able adapters (created by the first one); prompt-learning kinds
    run inside ``base_context()`` so no LoRA-style adapter is active underneath them."""

    def __init__(self, model, tokenizer):
        self.model = model          # the transformers module; never replaced or copied
        self.tokenizer = tokenizer
        self.peft = None            # peft.PeftModel wrapping ``model`` in place, or None

    def base_context(self):
        """Every LoRA-style adapter off: the plain base model, bit for bit."""
        if self.peft is None:
            return contextlib.nullcontext()
        return self.peft.disable_adapter()

    def attach_adapter(self, path: Path, adapter_name: str, label: str) -> None:
        """Loads a LoRA-style adapter into the shared PeftModel (creating it on first use)."""
        import warnings

        from peft import PeftConfig, PeftModel

        config = PeftConfig.from_pretrained(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, str(path),
                                                      adapter_name=adapter_name,
                                                      is_trainable=False)
                self.peft.eval()
                return
            if str(config.peft_type) != str(self.peft.peft_type):
                raise ModelError(
                    f"variant {label!r}: a {kind_from_peft_type(_type_name(config.peft_type))} "
                    f"adapter cannot be served next to the loaded "
                    f"{kind_from_peft_type(_type_name(self.peft.peft_type))} adapters (PEFT keeps "
                    "one adapter type per model); use a separate Generator for it")
            self.peft.load_adapter(str(path), adapter_name=adapter_name, is_trainable=False)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)


def _type_name(peft_type) -> str:
    return getattr(peft_type, "value", str(peft_type))


class VariantKind:
    """How one loaded variant is served. Subclasses set up in ``load()`` and run one generation
    in ``generate()``; the engine holds its lock around both."""

    kind: ClassVar[str] = ""
    virtual_tokens: int = 0  # context positions the variant uses on top of the prompt
    # whether a generation's cache depends on the token ids alone, so the next prompt may reuse it
    # (Generator._prompt_cache); not where virtual tokens come before the ids
    prompt_cache: ClassVar[bool] = True
    # training (kinds ``ragqa train`` makes): PEFT's peft_type, the default learning rate and
    # the TrainConfig fields that are this kind's hyperparameters
    peft_type: ClassVar[str] = ""
    default_lr: ClassVar[float] = 0.0
    train_settings: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def peft_config(cls, cfg, model, model_path):
        """The PEFT config that trains a new variant of this kind (``cfg``: a TrainConfig)."""
        raise NotImplementedError(f"kind {cls.kind!r} is served, not trained, by ragqa")

    @classmethod
    def init_trainable(cls, cfg, peft_model, tokenizer) -> None:
        """Sets the new adapter's starting weights where the kind has an init of its own (called
        by training right after ``get_peft_model``); by default PEFT's init stays."""

    def __init__(self, host: ModelHost, name: str, path: Path | None, card: Card | None,
                 adapter_name: str):
        self.host = host
        self.name = name
        self.path = path
        self.card = card
        self.adapter_name = adapter_name

    def load(self) -> None:
        """Attach the adapter to the shared model (called once, under the engine lock)."""

    def activate(self) -> None:
        """Make this variant the active one (the engine times it as ``switch_ms``)."""

    def generate(self, input_ids, attention_mask, **gen_kwargs):
        """The new token ids (1-D tensor) for one prompt (batch of one)."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind,
                "base_model": self.card.base_model if self.card else "",
                "path": str(self.path) if self.path else ""}
