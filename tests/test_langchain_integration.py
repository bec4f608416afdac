"""ragqa.integrations.langchain: the retriever over an Index and the chat model over a generator.

Only the deterministic fakes are used (fake embedder, FakeGenerator): no model loads.
"""

import asyncio
import importlib
import sys

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnablePassthrough  # noqa: E402

from ragqa import Index  # noqa: E402
from ragqa.integrations.langchain import (RagqaChatModel, RagqaRetriever, format_docs,  # noqa: E402
                                          to_ragqa_messages)
from ragqa.indexing.retrieval import Hit  # noqa: E402
from ragqa.testing import FakeGenerator  # noqa: E402


@pytest.fixture
def index_dir(tmp_path, corpus, settings):
    Index.build([corpus], tmp_path / "idx", settings)
    return tmp_path / "idx"


@pytest.fixture
def index(index_dir, settings):
    with Index.open(index_dir, settings) as idx:
        yield idx


# --------------------------------------------------------------------------- retriever


def test_retriever_returns_documents_with_hit_metadata(index):
    retriever = RagqaRetriever(index=index, k=3, mode="dense")
    docs = retriever.invoke("the moon orbits")
    assert len(docs) == 3 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.metadata["doc_id"] == "doc1.txt"
    assert "moon orbits the earth" in top.page_content
    assert {"doc_id", "chunk_id", "score", "source", "title"} <= set(top.metadata)
    hit = index.search("the moon orbits", k=1, mode="dense")[0]
    assert top.page_content == hit.text
    assert (top.metadata["chunk_id"], top.metadata["source"], top.metadata["title"]) == (
        hit.chunk_id, hit.source, hit.title)
    assert top.metadata["score"] == pytest.approx(hit.score)
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("mode", [None, "bm25", "hybrid"])
def test_retriever_ranks_matching_doc_first(index, mode):
    docs = RagqaRetriever(index=index, mode=mode).invoke("volcanoes erupt molten lava")
    assert docs[0].metadata["doc_id"] == "doc3.txt"


def test_retriever_respects_k_and_per_call_overrides(index):
    assert len(RagqaRetriever(index=index, k=1).invoke("bees honey")) == 1
    retriever = RagqaRetriever(index=index, k=2, mode="dense")
    assert len(retriever.invoke("bees honey")) == 2
    assert len(retriever.invoke("bees honey", k=5)) == 5
    per_doc = retriever.invoke("bees honey", k=5, per_doc=True)
    assert len({d.metadata["doc_id"] for d in per_doc}) == len(per_doc)
    with pytest.raises(TypeError, match="unknown argument"):
        retriever.invoke("bees honey", kk=3)


def test_retriever_from_index_dir_and_async(index_dir, settings):
    retriever = RagqaRetriever.from_index_dir(index_dir, settings, k=2, mode="bm25")
    try:
        assert retriever.k == 2
        docs = asyncio.run(retriever.ainvoke("the moon orbits"))
        assert docs and docs[0].metadata["doc_id"] == "doc1.txt"
        assert [d.metadata["doc_id"] for d in retriever.batch(["bees honey", "the moon orbits"])[0]][0] \
            == "doc4.txt"
    finally:
        retriever.index.close()


def test_hit_metadata_merged_and_page_only_when_known():
    class StubIndex:
        def __init__(self, hits):
            self.hits, self.calls = hits, []

        def search(self, question, k=10, mode=None, per_doc=False):
            self.calls.append((question, k, mode, per_doc))
            return self.hits[:k]

    hits = [Hit("a.pdf", 7, 0.9, "text a", "/x/a.pdf", "A", page=3, metadata={"lang": "en", "doc_id": "bogus"}),
            Hit("b.txt", 8, 0.5, "text b", "/x/b.txt", "B")]
    stub = StubIndex(hits)
    docs = RagqaRetriever(index=stub, k=2, mode="dense", per_doc=True).invoke("q")
    assert stub.calls == [("q", 2, "dense", True)]
    assert docs[0].metadata == {"lang": "en", "doc_id": "a.pdf", "chunk_id": 7, "score": 0.9,
                                "source": "/x/a.pdf", "title": "A", "page": 3}
    assert "page" not in docs[1].metadata
    RagqaRetriever(index=stub, mode="dense").invoke("q", mode=None)
    assert stub.calls[-1] == ("q", 4, None, False)


def test_format_docs_numbers_passages():
    docs = [Document(page_content=" first. ", metadata={"title": "One"}), Document(page_content="second")]
    assert format_docs(docs) == "[1] One\nfirst.\n\n[2]\nsecond"


# --------------------------------------------------------------------------- chat model


def test_messages_convert_to_ragqa_roles():
    msgs = [SystemMessage("sys"), HumanMessage("hi"), AIMessage("hello"),
            HumanMessage(content=[{"type": "text", "text": "again"}])]
    assert to_ragqa_messages(msgs) == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "hello"},
                                       {"role": "user", "content": "again"}]


PASSAGE = "Context:\n[1] Moon\nThe moon orbits the earth. It is bright.\n\nQuestion: what orbits?\nAnswer:"


def test_chat_invoke_returns_ai_message_rendered_with_template():
    gen = FakeGenerator()
    chat = RagqaChatModel(generator=gen)
    msg = chat.invoke([SystemMessage("Be brief."), HumanMessage(PASSAGE)])
    assert isinstance(msg, AIMessage)
    assert msg.content == "The moon orbits the earth. [1]"
    assert msg.response_metadata["variant"] == "base"
    assert msg.response_metadata["new_tokens"] == 6 and msg.response_metadata["tokens_per_s"] > 0
    assert msg.usage_metadata["output_tokens"] == 6
    variant, prompt = gen.calls[-1]
    assert variant == "base"
    assert prompt.startswith("System: Be brief.\n\nUser: Context:") and prompt.endswith("\n\nAssistant:")
    assert chat._llm_type == "ragqa"
    assert chat.invoke("no passages here").content == "I don't know."  # a plain string works too


def test_chat_variant_and_generation_settings_pass_through():
    gen = FakeGenerator(variants=("fake-lora",))
    chat = RagqaChatModel(generator=gen, variant="fake-lora", max_new_tokens=3)
    msg = chat.invoke([HumanMessage(PASSAGE)])
    assert gen.calls[-1][0] == "fake-lora"
    assert msg.content == "The moon orbits"  # FakeGenerator keeps max_new_tokens words
    assert msg.response_metadata["variant"] == "fake-lora"
    msg = chat.invoke([HumanMessage(PASSAGE)], variant="base", max_new_tokens=64)
    assert gen.calls[-1][0] == "base" and msg.content == "The moon orbits the earth. [1]"
    assert chat.with_config(tags=["x"]).invoke([HumanMessage(PASSAGE)]).content == "The moon orbits"


def test_chat_stream_chunks_join_to_invoke_text():
    gen = FakeGenerator(variants=("fake-lora",))
    chat = RagqaChatModel(generator=gen, variant="fake-lora")
    text = chat.invoke([HumanMessage(PASSAGE)]).content
    chunks = list(chat.stream([HumanMessage(PASSAGE)]))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len([c for c in chunks if c.content]) > 1
    assert "".join(c.content for c in chunks) == text == "The moon orbits the earth. [1] (fake-lora)"
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.content == text and merged.response_metadata["variant"] == "fake-lora"
    assert [v for v, _ in gen.calls] == ["fake-lora", "fake-lora"]

    async def collect():
        return [c.content async for c in chat.astream([HumanMessage(PASSAGE)])]

    assert "".join(asyncio.run(collect())) == text


def test_chat_stop_strings_cut_invoke_and_stream():
    chat = RagqaChatModel(generator=FakeGenerator())
    full = "The moon orbits the earth. [1]"
    assert chat.invoke([HumanMessage(PASSAGE)], stop=["earth"]).content == "The moon orbits the "
    assert chat.invoke([HumanMessage(PASSAGE)], stop=["zzz", " orbits", "[1]"]).content == "The moon"
    assert chat.invoke([HumanMessage(PASSAGE)], stop=["nothing"]).content == full
    for stop in (["earth"], ["moon orb"], ["e e"], ["[1]"], ["xyz"], ["s the e"]):
        streamed = "".join(c.content for c in chat.stream([HumanMessage(PASSAGE)], stop=stop))
        cut = full.find(stop[0])
        assert streamed == (full if cut < 0 else full[:cut]), stop


def test_chat_stream_closes_generator_at_stop():
    closed = []

    class TrackingGenerator(FakeGenerator):
        def stream(self, prompt, variant="base", settings=None):
            try:
                yield from super().stream(prompt, variant, settings)
            finally:
                closed.append(True)

    chat = RagqaChatModel(generator=TrackingGenerator())
    assert "".join(c.content for c in chat.stream(PASSAGE, stop=["moon"])) == "The "
    assert closed == [True]


def test_chat_from_settings_uses_fake_model(settings):
    settings.model = "fake"
    chat = RagqaChatModel.from_settings(settings, max_new_tokens=2)
    assert isinstance(chat.generator, FakeGenerator)
    assert chat.max_new_tokens == 2 and chat.invoke(PASSAGE).content == "The moon"
    # settings decode greedily: the reported temperature says so (not the unused 0.7)
    assert not settings.do_sample and chat.temperature == 0.0
    assert chat._get_ls_params()["ls_temperature"] == 0.0
    settings.do_sample = True
    sampling = RagqaChatModel.from_settings(settings)
    assert sampling.temperature == settings.temperature and sampling._decoding({}) == (settings.temperature, True)


# --------------------------------------------------------------------------- standard parameters


class RecordingGenerator(FakeGenerator):
    def generate(self, prompt, variant="base", settings=None):
        self.settings = settings
        return super().generate(prompt, variant, settings)


def test_chat_standard_max_tokens_stop_and_temperature():
    gen = RecordingGenerator()
    chat = RagqaChatModel(generator=gen, max_tokens=3, stop=["orbits"])
    # the constructor's stop is used (it was dropped), and a call's stop adds to it
    assert chat.invoke(PASSAGE).content == "The moon "
    assert gen.settings.max_new_tokens == 3  # max_tokens, LangChain's standard name, is read
    assert chat.invoke(PASSAGE, max_tokens=64, stop=["moon"]).content == "The "
    assert gen.settings.max_new_tokens == 64
    assert chat.invoke(PASSAGE, max_tokens=64).content == "The moon "
    assert not gen.settings.do_sample  # temperature 0 (the default) is greedy
    chat.invoke(PASSAGE, temperature=0.4)
    assert gen.settings.do_sample and gen.settings.temperature == 0.4
    chat.invoke(PASSAGE, temperature=0.4, do_sample=False)
    assert not gen.settings.do_sample
    params = RagqaChatModel(generator=gen, max_tokens=10, stop=["x"])._get_ls_params(stop=["y"])
    assert params == {"ls_provider": "ragqa", "ls_model_type": "chat", "ls_model_name": "fake-generator",
                      "ls_temperature": 0.0, "ls_max_tokens": 10, "ls_stop": ["x", "y"]}
    assert RagqaChatModel(generator=gen, temperature=0.5)._get_ls_params()["ls_temperature"] == 0.5


def test_chat_model_argument_picks_the_variant_and_unknown_is_an_error():
    gen = FakeGenerator(variants=("fake-lora",))
    chat = RagqaChatModel(generator=gen)
    msg = chat.invoke(PASSAGE, model="fake-lora")
    assert gen.calls[-1][0] == "fake-lora" and msg.response_metadata["model_name"] == "fake-generator:fake-lora"
    assert chat.invoke(PASSAGE, model="fake-generator").response_metadata["variant"] == "base"
    assert chat._get_ls_params(model="fake-lora")["ls_model_name"] == "fake-lora"
    assert RagqaChatModel(generator=gen, model="fake-lora").variant == "fake-lora"
    from ragqa.errors import ModelError

    with pytest.raises(ModelError, match="no variant 'gpt-4o'"):
        chat.invoke(PASSAGE, model="gpt-4o")
    with pytest.raises(TypeError, match="unknown argument"):
        chat.invoke(PASSAGE, max_tokenz=3)
    with pytest.raises(ValueError, match="disagree"):
        RagqaChatModel(generator=gen, model="base", variant="fake-lora")


def test_chat_structured_output_constrains_to_the_schema():
    from pydantic import BaseModel
    from typing_extensions import TypedDict

    class Person(BaseModel):
        name: str
        age: int

    class PersonDict(TypedDict):
        name: str
        age: int

    gen = RecordingGenerator()
    chat = RagqaChatModel(generator=gen)
    person = chat.with_structured_output(Person).invoke("Who is it?")
    assert person == Person(name="fake", age=0)
    assert gen.settings.json_schema["properties"].keys() == {"name", "age"}
    assert "matches this JSON schema" in gen.calls[-1][1]  # the model is told the format too
    assert chat.with_structured_output(PersonDict).invoke("Who?") == {"name": "fake", "age": 0}
    assert chat.with_structured_output(Person.model_json_schema(), method="json_mode").invoke("?") == {
        "name": "fake", "age": 0}
    chat.with_structured_output(method="json_mode").invoke("?")
    assert gen.settings.json_schema == {"type": "object"}
    raw = chat.with_structured_output(Person, include_raw=True).invoke("?")
    assert raw["parsed"] == Person(name="fake", age=0) and raw["parsing_error"] is None
    assert [c for c in chat.with_structured_output(Person).stream("?")][-1] == Person(name="fake", age=0)
    with pytest.raises(ValueError, match="needs a schema"):
        chat.with_structured_output(None)


# --------------------------------------------------------------------------- LCEL


def test_lcel_chain_end_to_end(index):
    gen = FakeGenerator()
    retriever = RagqaRetriever(index=index, k=2, mode="dense")
    chat = RagqaChatModel(generator=gen, max_new_tokens=64)
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Answer from the context and cite passages like [1]."),
        ("human", "Context:\n{context}\n\nQuestion: {question}\nAnswer:"),
    ])
    chain = ({"context": retriever | format_docs, "question": RunnablePassthrough()}
             | prompt | chat | StrOutputParser())
    answer = chain.invoke("the moon orbits")
    assert isinstance(answer, str) and "[1]" in answer
    assert answer == "Document 1. [1]"  # the first sentence of passage [1], the moon document
    assert "[1] " in gen.calls[-1][1] and "Question: the moon orbits" in gen.calls[-1][1]
    assert "".join(chain.stream("the moon orbits")) == answer


def test_missing_langchain_core_raises_helpful_import_error(monkeypatch):
    for name in list(sys.modules):
        if name == "langchain_core" or name.startswith("langchain_core."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "langchain_core", None)
    monkeypatch.delitem(sys.modules, "ragqa.integrations.langchain")
    with pytest.raises(ImportError, match="pip install langchain-core"):
        importlib.import_module("ragqa.integrations.langchain")
    monkeypatch.undo()
    assert importlib.import_module("ragqa.integrations.langchain").RagqaChatModel is RagqaChatModel
