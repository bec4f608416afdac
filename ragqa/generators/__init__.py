"""Answer generation: named base models, variants (PEFT adapters) and the Generator.

    from ragqa.generators import Generator, GenerationSettings
    gen = Generator("smollm2-135m-instruct", cache_dir=cache, variants_dir=Path("adapters"))
    print(gen.generate(gen.chat_prompt("What is the capital of France?")).text)

One base model in memory serves every variant: ``base`` (no adapter), ``lora`` (and other
load_adapter-able PEFT types), ``prompt-tuning`` and ``prefix-tuning``; see registry.py.
"""

from ragqa.generators import base, lora, prefix_tuning, prompt_tuning  # noqa: F401  (register kinds)
from ragqa.generators.engine import GenerationResult, GenerationSettings, Generator
from ragqa.generators.models import (BASE_MODELS, DEFAULT_MODEL, FAST_MODEL, load_base,
                                     model_fingerprint, resolve_model)
from ragqa.generators.registry import KINDS, Card, list_variants, register_kind

__all__ = [
    "BASE_MODELS", "Card", "DEFAULT_MODEL", "FAST_MODEL", "GenerationResult", "GenerationSettings",
    "Generator", "KINDS", "list_variants", "load_base", "model_fingerprint", "register_kind",
    "resolve_model",
]
