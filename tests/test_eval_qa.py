import json

from ragqa import Index
from ragqa.cli import main
from ragqa.evaluation import bootstrap_ci, evaluate_qa, load_qa_data, sample_items
from ragqa.pipeline import RagQA
from ragqa.testing import FakeGenerator


def squad_file(path):
    data = {"version": "1.1", "data": [
        {"title": "Eiffel_Tower", "paragraphs": [
            {"context": "The Eiffel Tower is in Paris. It was finished in 1889.",
             "qas": [{"id": "q1", "question": "Where is the Eiffel Tower?", "answers": [{"text": "in Paris", "answer_start": 20}]}]}]},
        {"title": "Moon", "paragraphs": [
            {"context": "The Moon orbits the Earth. It has no air.",
             "qas": [{"id": "q2", "question": "What does the Moon orbit?", "answers": [{"text": "the Earth", "answer_start": 16}]}]}]},
    ]}
    path.write_text(json.dumps(data))
    return path


def test_load_sample_and_bootstrap(tmp_path):
    items = load_qa_data(squad_file(tmp_path / "s.json"))
    assert [i.gold_doc for i in items] == ["Eiffel_Tower#0", "Moon#0"]
    assert sample_items(items, 1, seed=3) == sample_items(items, 1, seed=3)
    lo, hi = bootstrap_ci([1.0, 1.0, 1.0])
    assert lo == hi == 1.0
    lo, hi = bootstrap_ci([0.0, 1.0] * 50)
    assert 0.35 < lo < 0.5 < hi < 0.65


def test_evaluate_qa_same_prompt_for_every_variant(tmp_path, settings):
    data = squad_file(tmp_path / "s.json")
    Index.build([data], tmp_path / "idx", settings)
    with RagQA.open(tmp_path / "idx", settings.replace(abstain_threshold=0.0), generator=FakeGenerator()) as qa:
        items = load_qa_data(data)
        summary, rows = evaluate_qa(qa, items, ["base", "fake-lora"])
        prompts = [p for _, p in qa.generator.calls]
    assert prompts[0] == prompts[1] and prompts[2] == prompts[3]  # retrieved once, reused
    assert summary["base"]["gold_in_sources"]["mean"] == 1.0
    assert 0 < summary["base"]["f1"]["mean"] <= 1 and "f1_minus_base" in summary["fake-lora"]
    assert {r["variant"] for r in rows} == {"base", "fake-lora"}


def test_eval_qa_cli_writes_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAGQA_EMBEDDER", "fake:32")
    monkeypatch.setenv("RAGQA_MODEL", "fake")
    monkeypatch.setenv("RAGQA_ABSTAIN_THRESHOLD", "0")
    data = squad_file(tmp_path / "s.json")
    assert main(["index", "build", str(data), "--index", str(tmp_path / "idx")]) == 0
    code = main(["eval", "qa", "--index", str(tmp_path / "idx"), "--data", str(data), "--report",
                 str(tmp_path / "rep"), "--predictions", "--gold-context"])
    assert code == 0
    results = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert set(results["variants"]["base"]) >= {"em", "f1", "gold_in_sources", "abstained"}
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# QA evaluation")
    assert len((tmp_path / "rep" / "predictions.jsonl").read_text().splitlines()) == 2


def test_eval_summarize_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAGQA_MODEL", "fake")
    data = tmp_path / "d.jsonl"
    data.write_text('{"fname": "a", "dialogue": "#P1#: Hi. #P2#: Hello.", "summary": "Two people greet."}\n'
                    '{"fname": "b", "dialogue": "#P1#: Bye.", "summary": "One says bye."}\n')
    assert main(["eval", "summarize", "--data", str(data), "--variants", "base,fake-lora",
                 "--report", str(tmp_path / "rep"), "--predictions"]) == 0
    results = json.loads((tmp_path / "rep" / "results.json").read_text())["variants"]
    assert set(results) == {"base", "fake-lora"}
    assert {"rouge1", "rouge2", "rougeL", "bleu", "words"} <= set(results["base"])
    assert len((tmp_path / "rep" / "predictions.jsonl").read_text().splitlines()) == 4


def test_qa_jsonl_and_bad_line(tmp_path):
    import pytest

    from ragqa.errors import ConfigError

    good = tmp_path / "qa.jsonl"
    good.write_text('{"id": "x", "question": "Q?", "answer": "A"}\n\n{"question": "R?", "answers": ["B", "C"]}\n')
    items = load_qa_data(good)
    assert [(i.id, i.answers) for i in items] == [("x", ["A"]), ("3", ["B", "C"])]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?", "answer": "A"}\n{"question": "no answers"}\n')
    with pytest.raises(ConfigError, match="bad.jsonl:2"):
        load_qa_data(bad)
