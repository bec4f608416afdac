"""The interface a generator offers the rest of ragqa (the pipeline, evaluation, LangChain):
``Generator`` (local transformers model and its variants), ``OpenAIGenerator`` (a served model)
and ``ragqa.testing.FakeGenerator`` implement it, as embedders implement
``indexing.embedding.Embedder`` and vector stores ``indexing.vectorstore.VectorStore``.

Optional, looked up with ``getattr``: ``check_variant(name)`` (refuse an unknown variant before
any work), ``variant_template(name)`` (the template a variant was trained with) and
``unload()``."""

from __future__ import annotations

from collections.abc import Generator as _Iterator
from typing import Any, Protocol, runtime_checkable


def count_tokens(tokenizer: Any, text: str) -> int:
    """How many tokens ``text`` is to ``tokenizer`` (a generator's), special tokens left out."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@runtime_checkable
class TextGenerator(Protocol):
    model_name: str

    @property
    def context_length(self) -> int: ...          # prompt + new tokens the model takes

    @property
    def tokenizer(self) -> Any: ...               # transformers-like: __call__(text) -> {"input_ids"}

    def variants(self) -> list[dict]: ...         # {"name", "kind", "base_model", "path"}, "base" first

    def generate(self, prompt: str, variant: str = "base", settings=None): ...  # -> GenerationResult

    def stream(self, prompt: str, variant: str = "base",
               settings=None) -> _Iterator[str, None, Any]: ...  # text pieces; returns the GenerationResult
