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
from typing import Any, Literal

try:
    from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.language_models import LangSmithParams
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import Runnable
    from pydantic import ConfigDict, Field, model_validator
except ImportError as exc:  # pragma: no cover - exercised by a test that hides langchain_core
    raise ImportError(
        "ragqa.integrations.langchain needs LangChain's core package; install it with "
        f"`pip install langchain-core` ({exc})") from exc

from ragqa.generators.stopping import cut_stream, cut_text

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


# per-call keyword arguments a chat model reads (LangChain's standard names and ragqa's own)
_CALL_ARGS = frozenset(_GEN_FIELDS) | {"variant", "model", "max_tokens", "json_schema"}


class RagqaChatModel(BaseChatModel):
    """LangChain chat model over a ragqa generator (``Generator`` or ``FakeGenerator``).

    The generator holds one base model and its variants; ``variant`` (or LangChain's standard
    ``model``: a variant's name, ``"base"`` or the base model's name) picks which one answers,
    per instance or per call. An unknown one is an error, never silently the base.

    Decoding is greedy unless ``temperature`` > 0 (or ``do_sample=True``), as with OpenAI's
    ``temperature=0``. ``max_tokens`` (LangChain's standard name) and ``max_new_tokens`` both
    cap the answer; ``stop`` strings (constructor and per call, joined) end it before the first.
    ``with_structured_output(schema)`` constrains decoding to the schema's JSON.

    Response metadata: ``variant``, ``model_name`` (the base model's name, ``name:variant`` for
    a variant), ``tokens_per_s``, ``new_tokens``, ``prompt_tokens``, ``generate_ms`` (streams
    carry them on the last chunk when the generator reports them); ``usage_metadata`` counts
    prompt and new tokens.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    generator: Any = Field(exclude=True)
    """A ragqa generator: ``generate``/``stream(prompt, variant, settings)`` and ``tokenizer``."""
    variant: str = "base"
    """The variant that answers: its name, or "base"."""
    model: str | None = None
    """LangChain's standard name for ``variant``: a variant's name, "base" or the base model's name."""
    max_new_tokens: int = 128
    max_tokens: int | None = None
    """LangChain's standard name for ``max_new_tokens``; wins when set."""
    do_sample: bool | None = None
    """None: sample when ``temperature`` > 0, else greedy."""
    temperature: float = 0.0
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    seed: int | None = None
    stop: list[str] | None = None
    """Stop strings for every call (a call's own ``stop`` adds to them)."""

    @model_validator(mode="after")
    def _model_is_the_variant(self) -> RagqaChatModel:
        if self.model is not None:
            chosen = self._variant_named(self.model)
            if self.variant != "base" and self.variant != chosen:
                raise ValueError(f"model={self.model!r} and variant={self.variant!r} disagree; "
                                 "give one of them")
            self.variant = chosen
        return self

    @classmethod
    def from_settings(cls, settings: Any = None, **kw: Any) -> RagqaChatModel:
        """The generator ``settings`` describe (``ragqa.answering.pipeline.make_generator``; lazy,
        nothing loads before the first call) with the settings' generation defaults (greedy
        reports temperature 0); ``kw`` overrides."""
        import dataclasses

        from ragqa.config import Settings
        from ragqa.answering.pipeline import generation_settings, make_generator

        settings = settings or Settings.load()
        defaults = {f: v for f, v in dataclasses.asdict(generation_settings(settings)).items()
                    if f in _GEN_FIELDS}
        if not defaults["do_sample"]:
            defaults["temperature"] = 0.0
        return cls(generator=kw.pop("generator", None) or make_generator(settings), **{**defaults, **kw})

    @property
    def _llm_type(self) -> str:
        return "ragqa"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self._model_name, "variant": self.variant,
                **{f: getattr(self, f) for f in _GEN_FIELDS}, "max_tokens": self._max_tokens({}),
                "stop": self.stop}

    @property
    def _model_name(self) -> str:
        return str(getattr(self.generator, "model_name", type(self.generator).__name__))

    def _variant_named(self, name: str) -> str:
        """The variant a model name means: the base model's own name is "base"."""
        return "base" if name in ("base", self._model_name) else name

    def _served_name(self, variant: str) -> str:
        return self._model_name if variant == "base" else f"{self._model_name}:{variant}"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """LangSmith's standard trace fields: what answered, how it decoded."""
        variant = self._call_variant(kwargs)
        temperature, sampling = self._decoding(kwargs)
        params = LangSmithParams(ls_provider="ragqa", ls_model_type="chat",
                                 ls_model_name=(kwargs["model"] if isinstance(kwargs.get("model"), str)
                                                else self._served_name(variant)),
                                 ls_temperature=temperature if sampling else 0.0,
                                 ls_max_tokens=self._max_tokens(kwargs))
        stops = self._stops(stop)
        if stops:
            params["ls_stop"] = stops
        return params

    # --- helpers ---------------------------------------------------------------------------

    def _call_variant(self, kwargs: dict) -> str:
        if kwargs.get("variant"):
            return kwargs["variant"]
        if kwargs.get("model"):
            return self._variant_named(kwargs["model"])
        return self.variant

    def _max_tokens(self, kwargs: dict) -> int:
        for value in (kwargs.get("max_tokens"), kwargs.get("max_new_tokens"), self.max_tokens):
            if value is not None:
                return int(value)
        return int(self.max_new_tokens)

    def _decoding(self, kwargs: dict) -> tuple[float, bool]:
        """(temperature, sampling?) for a call."""
        temperature = kwargs.get("temperature")
        temperature = self.temperature if temperature is None else float(temperature)
        sampling = kwargs.get("do_sample")
        sampling = self.do_sample if sampling is None else sampling
        return temperature, (temperature > 0 if sampling is None else bool(sampling))

    def _stops(self, stop: Sequence[str] | None) -> list[str]:
        return list(dict.fromkeys([*(self.stop or ()), *(stop or ())]))

    def _prepare(self, messages: list[BaseMessage], kwargs: dict) -> tuple[str, str, Any]:
        """(prompt, variant, GenerationSettings) for a call; kwargs override the fields."""
        from ragqa.answering.prompting import render
        from ragqa.generators.constrained import with_schema_instruction
        from ragqa.generators.engine import GenerationSettings

        unknown = set(kwargs) - _CALL_ARGS
        if unknown:
            raise TypeError(f"RagqaChatModel got unknown argument(s) {', '.join(sorted(unknown))}; "
                            f"per call it takes {', '.join(sorted(_CALL_ARGS))}")
        variant = self._call_variant(kwargs)
        check = getattr(self.generator, "check_variant", None)
        if check is not None:
            check(variant)
        temperature, sampling = self._decoding(kwargs)
        values = {f: kwargs[f] if kwargs.get(f) is not None else getattr(self, f)
                  for f in ("top_p", "repetition_penalty", "seed")}
        schema = kwargs.get("json_schema")
        chat = to_ragqa_messages(messages)
        if schema is not None:
            chat = with_schema_instruction(chat, schema)
        prompt = render(chat, self.generator.tokenizer)
        return prompt, variant, GenerationSettings(
            max_new_tokens=self._max_tokens(kwargs), do_sample=sampling,
            temperature=temperature, json_schema=schema, **values)

    def _metadata(self, variant: str, result: Any) -> tuple[dict, dict | None]:
        meta: dict[str, Any] = {"variant": variant, "model_name": self._served_name(variant)}
        usage = None
        if result is not None:
            meta.update(tokens_per_s=result.tokens_per_s, new_tokens=result.new_tokens,
                        prompt_tokens=result.prompt_tokens, generate_ms=result.generate_ms)
            usage = {"input_tokens": int(result.prompt_tokens), "output_tokens": int(result.new_tokens),
                     "total_tokens": int(result.prompt_tokens + result.new_tokens)}
        return meta, usage

    # --- BaseChatModel ---------------------------------------------------------------------

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        prompt, variant, settings = self._prepare(messages, kwargs)
        result = self.generator.generate(prompt, variant, settings)
        text, _ = cut_text(result.text, self._stops(stop))
        meta, usage = self._metadata(variant, result)
        message = AIMessage(content=text, response_metadata=meta, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)],
                          llm_output={"model_name": meta["model_name"], "variant": variant})

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        prompt, variant, settings = self._prepare(messages, kwargs)
        pieces = cut_stream(self.generator.stream(prompt, variant, settings), self._stops(stop))
        end = None
        while True:
            try:
                text = next(pieces)
            except StopIteration as finished:
                end = finished.value
                break
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
            if run_manager:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk
        meta, usage = self._metadata(variant, end.result if end else None)
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=meta,
                                                         usage_metadata=usage, chunk_position="last"))

    def with_structured_output(self, schema: dict | type | None = None, *,
                               method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
                               include_raw: bool = False, strict: bool | None = None,
                               **kwargs: Any) -> Runnable:
        """A runnable that answers with ``schema``'s data: a pydantic model's instance, else a dict.

        ``schema``: a pydantic model (v1 or v2), a TypedDict, or a JSON schema dict (or an OpenAI
        function/tool dict). Decoding is constrained to the schema's JSON
        (``ragqa.generators.constrained``), so the output always parses and validates: every
        ``method`` does this ("function_calling" has no tools to call here; "json_mode" without
        a schema allows any JSON object). ``include_raw=True`` gives ``{"raw", "parsed",
        "parsing_error"}``."""
        from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
        from langchain_core.runnables import RunnableMap, RunnablePassthrough
        from langchain_core.utils.function_calling import convert_to_json_schema
        from langchain_core.utils.pydantic import is_basemodel_subclass

        if kwargs:
            raise ValueError(f"with_structured_output got unknown argument(s) {', '.join(sorted(kwargs))}")
        if method not in ("json_schema", "function_calling", "json_mode"):
            raise ValueError(f"method={method!r}; give 'json_schema', 'function_calling' or 'json_mode'")
        if schema is None and method != "json_mode":
            raise ValueError(f"method={method!r} needs a schema; give one, or use method='json_mode'")
        json_schema = convert_to_json_schema(schema) if schema is not None else None
        llm = self.bind(json_schema=json_schema or {"type": "object"},
                        ls_structured_output_format={"kwargs": {"method": method, "strict": strict},
                                                     "schema": json_schema or {"type": "object"}})
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=lambda x: parser.invoke(x["raw"]), parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")
