"""Test fakes that ship with the library (as haystack does): a generator that needs no model.

``FakeGenerator`` answers from the prompt deterministically: it copies the first sentence of
the first passage (``[1] title`` or ``Passage 1: title``, then its text) and cites it, or says "I don't know." when the prompt has none. It
records each call's variant, so pipeline and UI tests can check which variant answered. Asked
for structured output (``GenerationSettings.json_schema``), it writes the schema's smallest
instance (``example_instance``).
"""

from __future__ import annotations

import json
import os
import re
import time
import zlib
from collections.abc import Iterator


class WordTokenizer:
    """Whitespace 'tokenizer' with the slice of the transformers interface ragqa uses."""

    chat_template = None
    eos_token = "</s>"

    def __call__(self, text: str, add_special_tokens: bool = False, **_) -> dict:
        # crc32, not hash(): ids stay the same in every process (hash() is salted per process)
        return {"input_ids": [zlib.crc32(w.encode("utf-8", "surrogatepass")) % 50000 for w in text.split()]}

    def decode(self, ids, **_) -> str:
        return " ".join(map(str, ids))


def example_instance(schema: dict, root: dict | None = None):
    """The smallest value valid under a simple JSON schema: every property, strings "fake"."""
    root = root or schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return example_instance((root.get("$defs") or root.get("definitions") or {})[name], root)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_instance(schema[key][0], root)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        return {name: example_instance(sub, root) for name, sub in schema.get("properties", {}).items()}
    return {"string": "fake", "integer": 0, "number": 0.0, "boolean": False, "array": [],
            "null": None}.get(kind, "fake")


class FakeGenerator:
    context_length = 2048
    model_name = "fake-generator"

    def __init__(self, variants: tuple[str, ...] = ("fake-lora",), delay_s: float | None = None,
                 piece_delay_s: float | None = None):
        self.tokenizer = WordTokenizer()
        self._variants = variants
        self.calls: list[tuple[str, str]] = []  # (variant, prompt)
        # seconds before an answer, and between the pieces of a stream: a slow model for the UI's
        # browser tests (env RAGQA_FAKE_DELAY_S / RAGQA_FAKE_PIECE_DELAY_S, for a served app)
        self.delay_s = float(os.environ.get("RAGQA_FAKE_DELAY_S", 0)) if delay_s is None else delay_s
        self.piece_delay_s = (float(os.environ.get("RAGQA_FAKE_PIECE_DELAY_S", 0)) if piece_delay_s is None
                              else piece_delay_s)

    def variants(self) -> list[dict]:
        return [{"name": "base", "kind": "base", "base_model": self.model_name, "path": self.model_name}] + [
            {"name": v, "kind": "lora", "base_model": self.model_name, "path": f"adapters/{v}"} for v in self._variants]

    def _answer(self, prompt: str, variant: str) -> str:
        if "Rewrite" in prompt or "standalone" in prompt:
            last = [line for line in prompt.splitlines() if line.strip()][-1]
            return last.split(":", 1)[-1].strip()
        m = re.search(r"^(?:\[1\]|Passage 1:)[^\n]*\n(.+?[.!?])(\s|$)", prompt, re.S | re.M)
        if not m:
            return "I don't know."
        return f"{m.group(1).strip()} [1]" + ("" if variant == "base" else f" ({variant})")

    def check_variant(self, variant: str) -> None:
        if variant != "base" and variant not in self._variants:
            from ragqa.errors import ModelError

            raise ModelError(f"no variant {variant!r}; known: base, {', '.join(self._variants)}")

    def generate(self, prompt: str, variant: str = "base", settings=None):
        from ragqa.generators.engine import GenerationResult

        self.check_variant(variant)
        self.calls.append((variant, prompt))
        t0 = time.perf_counter()
        if self.delay_s:
            time.sleep(self.delay_s)
        text = self._answer(prompt, variant)
        if settings is not None and settings.json_schema is not None:
            text = json.dumps(example_instance(settings.json_schema or {"type": "object"}))
        elif settings is not None:
            text = " ".join(text.split()[: settings.max_new_tokens])
        ms = 1000 * (time.perf_counter() - t0)
        n = len(text.split())
        return GenerationResult(text=text, prompt_tokens=len(prompt.split()), new_tokens=n, generate_ms=ms,
                                first_token_ms=ms / max(n, 1), tokens_per_s=n / max(ms / 1000, 1e-6), variant=variant)

    def stream(self, prompt: str, variant: str = "base", settings=None) -> Iterator[str]:
        words = self.generate(prompt, variant, settings).text.split(" ")
        for i, w in enumerate(words):
            if i and self.piece_delay_s:
                time.sleep(self.piece_delay_s)
            yield w if i == 0 else " " + w
