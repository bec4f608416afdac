"""LangChain adapters: a ragqa ``Index`` as a retriever, a ragqa generator as a chat model.

Needs ``pip install langchain-core`` (importing this module without it raises ImportError).

- ``RagqaRetriever(index=..., k=4, mode=None, per_doc=False)`` -- a ``BaseRetriever``; each hit
  becomes a ``Document`` whose ``page_content`` is the chunk text and whose metadata holds the
  hit's own metadata plus ``doc_id``, ``chunk_id``, ``score``, ``source``, ``title`` and (when
  known) ``page``. ``RagqaRetriever.from_index_dir(path, settings)`` opens the index for you.
  ``k``, ``mode`` and ``per_doc`` can also be given per call: ``retriever.invoke(q, k=2)``.
- ``RagqaChatModel(generator=..., variant="base", max_new_tokens=128, ...)`` -- a
  ``BaseChatModel`` over a ragqa generator (the real ``ragqa.generators.Generator`` or
  ``ragqa.testing.FakeGenerator``). Messages are rendered with the generator tokenizer's chat
  template (``ragqa.answering.prompting.render``); ``variant`` picks the base model or an adapter.
  ``stop`` strings cut the answer before the first one. Per-call keyword arguments override the
  generation fields: ``chat.invoke(messages, variant="my-lora", max_new_tokens=32)``.
  ``RagqaChatModel.from_settings(settings)`` builds the generator the settings describe.

An LCEL chain that answers from the index::

    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    from ragqa import Index
    from ragqa.integrations.langchain import RagqaChatModel, RagqaRetriever, format_docs

    retriever = RagqaRetriever(index=Index.open("indexes/mine"), k=4)
    chat = RagqaChatModel.from_settings(variant="base", max_new_tokens=96)
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Answer from the context only and cite passages like [1]."),
        ("human", "Context:\\n{context}\\n\\nQuestion: {question}\\nAnswer:"),
    ])
    chain = ({"context": retriever | format_docs, "question": RunnablePassthrough()}
             | prompt | chat | StrOutputParser())
    print(chain.invoke("How do I reset it?"))

``format_docs`` numbers the passages as ragqa's own prompts do (``[1] title`` then the text,
passages separated by a blank line).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, Field
except ImportError as exc:  # pragma: no cover - exercised by a test that hides langchain_core
    raise ImportError(
        "ragqa.integrations.langchain needs LangChain's core package; install it with "
        f"`pip install langchain-core` ({exc})") from exc

__all__ = ["RagqaChatModel", "RagqaRetriever", "format_docs", "hit_to_document", "to_ragqa_messages"]

_UNSET: Any = object()
# GenerationSettings fields a chat model carries (and a call may override)
_GEN_FIELDS = ("max_new_tokens", "do_sample", "temperature", "top_p", "repetition_penalty", "seed")
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}


# --------------------------------------------------------------------------- retriever


def hit_to_document(hit: Any) -> Document:
    """A ragqa ``Hit`` as a LangChain ``Document`` (the hit's fields win over its metadata)."""
    metadata = dict(hit.metadata or {})
    metadata.update(doc_id=hit.doc_id, chunk_id=hit.chunk_id, score=float(hit.score),
                    source=hit.source, title=hit.title)
    if hit.page is not None:
        metadata["page"] = hit.page
    return Document(page_content=hit.text, metadata=metadata)


def format_docs(docs: Sequence[Document]) -> str:
    """Documents as numbered passages for a prompt: ``[1] title\\ntext``, blank line between."""
    blocks = []
    for n, doc in enumerate(docs, 1):
        title = str((doc.metadata or {}).get("title") or "").strip()
        head = f"[{n}] {title}".rstrip()
        blocks.append(f"{head}\n{doc.page_content.strip()}")
    return "\n\n".join(blocks)


class RagqaRetriever(BaseRetriever):
    """LangChain retriever over a ragqa ``Index`` (``index.search(query, k, mode, per_doc)``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Any
    """An open ``ragqa.Index``."""
    k: int = 4
    """Number of hits returned."""
    mode: str | None = None
    """Retrieval mode ("dense", "bm25", "hybrid"); None uses the index's settings."""
    per_doc: bool = False
    """Keep only the best chunk of each document."""

    @classmethod
    def from_index_dir(cls, path: str | Path, settings: Any = None, **kw: Any) -> RagqaRetriever:
        """Open the index at ``path`` (``Index.open(path, settings)``) and wrap it."""
        from ragqa.indexing.index import Index

        return cls(index=Index.open(path, settings), **kw)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None, mode: Any = _UNSET, per_doc: bool | None = None,
                                **kwargs: Any) -> list[Document]:
        kwargs.pop("verbose", None)  # BaseRetriever.invoke reads it and passes it on
        if kwargs:
            raise TypeError(f"RagqaRetriever got unknown argument(s) {', '.join(sorted(kwargs))}; "
                            "per call it takes k, mode and per_doc")
        hits = self.index.search(query, k=self.k if k is None else k,
                                 mode=self.mode if mode is _UNSET else mode,
                                 per_doc=self.per_doc if per_doc is None else per_doc)
        return [hit_to_document(h) for h in hits]


# --------------------------------------------------------------------------- chat model


def _role(message: BaseMessage) -> str:
    if isinstance(message, ChatMessage):
        return {"human": "user", "ai": "assistant"}.get(message.role, message.role)
    return _ROLES.get(message.type, message.type)


def to_ragqa_messages(messages: Sequence[BaseMessage]) -> list[dict]:
    """LangChain messages as ragqa's ``[{"role", "content"}]`` (text content blocks only)."""
    return [{"role": _role(m), "content": str(m.text)} for m in messages]


def _find_stop(text: str, stop: Sequence[str] | None) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    found = [i for i in (text.find(s) for s in (stop or ()) if s) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stop: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that could be the start of a stop string."""
    best = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class RagqaChatModel(BaseChatModel):
    """LangChain chat model over a ragqa generator (``Generator`` or ``FakeGenerator``).

    The generator holds one base model and its variants; ``variant`` picks which one answers.
    Response metadata: ``variant``, ``model_name``, ``tokens_per_s``, ``new_tokens``,
    ``prompt_tokens``, ``generate_ms`` (streams carry them on the last chunk when the
    generator reports them); ``usage_metadata`` counts prompt and new tokens.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    generator: Any = Field(exclude=True)
    """A ragqa generator: ``generate``/``stream(prompt, variant, settings)`` and ``tokenizer``."""
    variant: str = "base"
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    seed: int | None = None

    @classmethod
    def from_settings(cls, settings: Any = None, **kw: Any) -> RagqaChatModel:
        """The generator ``settings`` describe (``ragqa.answering.pipeline.make_generator``; lazy, nothing
        loads before the first call) with the settings' generation defaults; ``kw`` overrides."""
        import dataclasses

        from ragqa.config import Settings
        from ragqa.answering.pipeline import generation_settings, make_generator

        settings = settings or Settings.load()
        defaults = dataclasses.asdict(generation_settings(settings))
        return cls(generator=kw.pop("generator", None) or make_generator(settings), **{**defaults, **kw})

    @property
    def _llm_type(self) -> str:
        return "ragqa"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self._model_name, "variant": self.variant,
                **{f: getattr(self, f) for f in _GEN_FIELDS}}

    @property
    def _model_name(self) -> str:
        return str(getattr(self.generator, "model_name", type(self.generator).__name__))

    # --- helpers ---------------------------------------------------------------------------

    def _prepare(self, messages: list[BaseMessage], kwargs: dict) -> tuple[str, str, Any]:
        """(prompt, variant, GenerationSettings) for a call; kwargs override the fields."""
        from ragqa.generators.engine import GenerationSettings
        from ragqa.answering.prompting import render

        variant = kwargs.get("variant") or self.variant
        values = {f: kwargs[f] if kwargs.get(f) is not None else getattr(self, f) for f in _GEN_FIELDS}
        prompt = render(to_ragqa_messages(messages), self.generator.tokenizer)
        return prompt, variant, GenerationSettings(**values)

    def _metadata(self, variant: str, result: Any) -> tuple[dict, dict | None]:
        meta: dict[str, Any] = {"variant": variant, "model_name": self._model_name}
        usage = None
        if result is not None:
            meta.update(variant=getattr(result, "variant", variant),
                        tokens_per_s=result.tokens_per_s, new_tokens=result.new_tokens,
                        prompt_tokens=result.prompt_tokens, generate_ms=result.generate_ms)
            usage = {"input_tokens": int(result.prompt_tokens), "output_tokens": int(result.new_tokens),
                     "total_tokens": int(result.prompt_tokens + result.new_tokens)}
        return meta, usage

    # --- BaseChatModel ---------------------------------------------------------------------

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        prompt, variant, settings = self._prepare(messages, kwargs)
        result = self.generator.generate(prompt, variant, settings)
        text = result.text
        cut = _find_stop(text, stop)
        if cut is not None:
            text = text[:cut]
        meta, usage = self._metadata(variant, result)
        message = AIMessage(content=text, response_metadata=meta, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)],
                          llm_output={"model_name": self._model_name, "variant": meta["variant"]})

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        prompt, variant, settings = self._prepare(messages, kwargs)
        stop = [s for s in (stop or ()) if s]

        def emit(text: str) -> ChatGenerationChunk:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
            if run_manager:
                run_manager.on_llm_new_token(text, chunk=chunk)
            return chunk

        pieces = self.generator.stream(prompt, variant, settings)
        it = iter(pieces)
        result = None
        pending = ""  # received, not yet emitted (may be the start of a stop string)
        try:
            while True:
                try:
                    piece = next(it)
                except StopIteration as end:
                    result = end.value  # the real Generator returns its GenerationResult
                    break
                pending += piece
                cut = _find_stop(pending, stop)
                if cut is not None:
                    pending = pending[:cut]
                    break
                keep = _held_back(pending, stop) if stop else 0
                ready, pending = pending[:len(pending) - keep], pending[len(pending) - keep:]
                if ready:
                    yield emit(ready)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # stops a real generation early (stop string or consumer gone)
        if pending:
            yield emit(pending)
        meta, usage = self._metadata(variant, result)
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=meta,
                                                         usage_metadata=usage, chunk_position="last"))
