import json

from ragqa import Index
from ragqa.apps.cli import main
from ragqa.evaluation.evaluate import bootstrap_ci, evaluate_qa, load_qa_data, sample_items
from ragqa.answering.pipeline import RagQA
from ragqa.testing import FakeGenerator


def assert_png(path):
    """A PNG file that decodes to a non-empty image."""
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


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
    # the fake lora appends " (fake-lora)" to the same answer: never better than base, on both questions
    assert {"em_minus_base", "f1_minus_base", "faithfulness_minus_base"} <= set(summary["fake-lora"])
    assert summary["fake-lora"]["f1_minus_base"]["n"] == 2 and summary["fake-lora"]["f1_minus_base"]["mean"] <= 0
    assert "em_minus_base" not in summary["base"]
    for v in ("base", "fake-lora"):  # every stage the pipeline times, over the 2 generated answers
        lat = summary[v]["latency"]
        assert {"retrieve_ms", "first_token_ms", "decode_ms", "generate_ms", "tokens_per_s"} <= set(lat)
        assert lat["generate_ms"]["n"] == 2 and set(lat["generate_ms"]) == {"n", "mean", "p50", "p95"}
        assert lat["throughput"]["new_tokens"] == sum(r["new_tokens"] for r in rows if r["variant"] == v)
    assert all(r["retrieve_ms"] is not None for r in rows)


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
    assert set(results["variants"]["base"]) >= {"em", "f1", "gold_in_sources", "abstained", "latency"}
    report = (tmp_path / "rep" / "report.md").read_text()
    assert report.startswith("# QA evaluation")
    assert "](metrics.png)" in report and "](latency.png)" in report and "## Latency and throughput" in report
    assert "## Worst examples" in report and "## Best examples" in report
    assert_png(tmp_path / "rep" / "metrics.png")
    assert_png(tmp_path / "rep" / "latency.png")
    rows = [json.loads(line) for line in (tmp_path / "rep" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["retrieve_ms"] is None for r in rows)  # --gold-context: nothing retrieved
    assert "wrote" in capsys.readouterr().out


def test_eval_summarize_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAGQA_MODEL", "fake")
    data = tmp_path / "d.jsonl"
    data.write_text('{"fname": "a", "dialogue": "#P1#: Hi. #P2#: Hello.", "summary": "Two people greet."}\n'
                    '{"fname": "b", "dialogue": "#P1#: Bye.", "summary": "One says bye."}\n')
    assert main(["eval", "summarize", "--data", str(data), "--variants", "base,fake-lora",
                 "--report", str(tmp_path / "rep"), "--predictions"]) == 0
    results = json.loads((tmp_path / "rep" / "results.json").read_text())["variants"]
    assert set(results) == {"base", "fake-lora"}
    assert {"rouge1", "rouge2", "rougeL", "bleu", "words", "latency"} <= set(results["base"])
    assert {"rouge1_minus_base", "rouge2_minus_base", "rougeL_minus_base"} <= set(results["fake-lora"])
    assert results["fake-lora"]["rougeL_minus_base"]["n"] == 2
    assert len((tmp_path / "rep" / "predictions.jsonl").read_text().splitlines()) == 4
    report = (tmp_path / "rep" / "report.md").read_text()
    assert report.startswith("# Summarisation evaluation")
    assert "## Paired comparison with base" in report and "](metrics.png)" in report
    assert_png(tmp_path / "rep" / "metrics.png")
    assert_png(tmp_path / "rep" / "latency.png")


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


def test_paired_and_latency_known_values():
    from ragqa.evaluation.evaluate import latency_summary, paired_vs_base

    rows = [{"id": i, "variant": v, "f1": f1, "faith": faith}
            for i, v, f1, faith in [("a", "base", 0.0, 1.0), ("a", "t", 1.0, None),
                                    ("b", "base", 0.5, 0.5), ("b", "t", 0.5, 1.0)]]
    diffs = paired_vs_base(rows, ["base", "t"], ["f1", "faith"])
    assert set(diffs) == {"t"}
    assert diffs["t"]["f1_minus_base"]["mean"] == 0.5 and diffs["t"]["f1_minus_base"]["n"] == 2
    assert diffs["t"]["f1_minus_base"]["ci95"] == [0.0, 1.0]  # resamples of {1, 0}: all of 0 .. 1 covered
    assert diffs["t"]["faith_minus_base"] == {"mean": 0.5, "ci95": [0.5, 0.5], "n": 1}  # None pairs left out
    assert paired_vs_base(rows, ["t"], ["f1"]) == {}

    lat = latency_summary([{"generate_ms": float(ms), "new_tokens": 2} for ms in range(1, 101)] + [{"generate_ms": None}],
                          ["generate_ms", "retrieve_ms"])
    assert lat["generate_ms"] == {"n": 100, "mean": 50.5, "p50": 50.5, "p95": 95.05}
    assert "retrieve_ms" not in lat  # never ran
    assert lat["throughput"] == {"new_tokens": 200, "generate_s": 5.05, "tokens_per_s": 200 / 5.05}


def test_charts_are_pngs(tmp_path):
    from ragqa.evaluation.charts import latency_chart, metric_chart

    summary = {v: {"em": {"mean": m, "ci95": [m - 0.1, m + 0.1]}, "f1": {"mean": m, "ci95": [m, m]},
                   "latency": {"retrieve_ms": {"mean": 5.0}, "first_token_ms": {"mean": 900.0},
                               "throughput": {"tokens_per_s": 9.5}}}
               for v, m in (("base", 0.3), ("tuned", 0.5), ("other", 0.0))}
    assert_png(metric_chart(summary, [("em", "EM"), ("f1", "F1"), ("absent", "left out")], tmp_path / "m.png",
                            scale=100, ylabel="%"))
    assert_png(latency_chart(summary, [("retrieve_ms", "retrieve"), ("first_token_ms", "first token")],
                             tmp_path / "l.png"))


def test_eval_retrieval_limit_and_seed(tmp_path, capsys, monkeypatch):
    from ragqa.evaluation.evaluate import sample_queries

    queries = [(f"q{i}", f"text {i}") for i in range(10)]
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(0, 10, 2)}
    items, cut = sample_queries(queries, qrels, 3, seed=1)
    assert len(items) == 3 and set(cut) == {q for q, _ in items} <= set(qrels)
    assert sample_queries(queries, qrels, 3, seed=1) == (items, cut)
    assert len(sample_queries(queries, qrels, None)[0]) == 5

    monkeypatch.setenv("RAGQA_EMBEDDER", "fake:32")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"topic {i} words"}) + "\n"
                              for i in range(10)))
    qfile, qrels_file = tmp_path / "q.jsonl", tmp_path / "qrels.tsv"
    qfile.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries))
    qrels_file.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, r in qrels.items() for d in r))
    assert main(["index", "build", str(corpus), "--index", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["eval", "retrieval", "--index", str(tmp_path / "idx"), "--queries", str(qfile), "--qrels",
                 str(qrels_file), "--limit", "3", "--seed", "1", "--mode", "bm25", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"]["bm25"]["queries"] == 3 and out["seed"] == 1


def test_contenders_of_several_base_models():
    from ragqa.evaluation.evaluate import contenders

    bases = {"squad-lora-qwen": "small-model"}
    one = contenders(["base", "squad-lora-qwen"], "small-model", variant_base=bases.get)
    assert [(c.label, c.model, c.variant) for c in one] == [
        ("base", "small-model", "base"), ("squad-lora-qwen", "small-model", "squad-lora-qwen")]
    two = contenders(["big-model:base", "squad-lora-qwen", "base"], "small-model", variant_base=bases.get)
    assert [(c.label, c.model, c.variant) for c in two] == [
        ("big-model", "big-model", "base"), ("squad-lora-qwen", "small-model", "squad-lora-qwen"),
        ("small-model", "small-model", "base")]


def test_evaluate_qa_across_base_models_one_model_at_a_time(tmp_path, settings):
    from ragqa.evaluation.evaluate import Contender, which_to_pick, write_qa_report

    class Big(FakeGenerator):
        model_name = "big"

        def _answer(self, prompt, variant):
            return "Paris [1]" if "Question: Where is the Eiffel" in prompt else "the Earth [1]"

    data = squad_file(tmp_path / "s.json")
    Index.build([data], tmp_path / "idx", settings)
    loaded = []

    def generator_for(model):
        assert model == "big"
        loaded.append(Big())
        return loaded[-1]

    small = FakeGenerator()
    entries = [Contender("big", "big", "base"), Contender("fake-lora", small.model_name, "fake-lora"),
               Contender(small.model_name, small.model_name, "base")]
    with RagQA.open(tmp_path / "idx", settings.replace(abstain_threshold=0.0), generator=small) as qa:
        summary, rows = evaluate_qa(qa, load_qa_data(data), entries, generator_for=generator_for)
        assert qa.generator is small  # given back after the other model's turn
    assert len(loaded) == 1 and [v for v, _ in loaded[0].calls] == ["base", "base"]
    assert [v for v, _ in small.calls] == ["fake-lora", "base", "fake-lora", "base"]
    assert list(summary) == ["big", "fake-lora", "fake-generator"]
    assert summary["big"]["f1"]["mean"] > summary["fake-generator"]["f1"]["mean"]
    assert summary["big"]["model"] == "big" and summary["fake-lora"]["variant"] == "fake-lora"
    # paired against the first contender, on the same questions
    assert summary["fake-generator"]["f1_minus_base"]["n"] == 2 and summary["fake-generator"]["f1_minus_base"]["mean"] < 0
    assert which_to_pick(summary).startswith("Best answers: **big**")
    out = write_qa_report(tmp_path / "rep", summary, rows, {"data": str(data)}, charts=False)
    report = (out / "report.md").read_text()
    assert "## Quality and cost" in report and "| big | big |" in report and "Best answers: **big**" in report


def test_evaluate_summaries_across_base_models():
    from ragqa.evaluation.evaluate import Contender, evaluate_summaries, write_summary_report

    class Big(FakeGenerator):
        model_name = "big"

        def _answer(self, prompt, variant):
            return "Anna and Ben agree to meet at noon."

    items = [("d1", "Anna: noon? Ben: yes, noon.", "Anna and Ben agree to meet at noon."),
             ("d2", "Ben: lunch at noon? Anna: fine.", "Ben and Anna will have lunch at noon.")]
    small, loaded = FakeGenerator(), []

    def generator_for(model):
        loaded.append(Big())
        return loaded[-1]

    entries = [Contender("big", "big", "base"), Contender("fake-lora", small.model_name, "fake-lora")]
    summary, rows = evaluate_summaries(small, items, entries, generator_for=generator_for)
    assert list(summary) == ["big", "fake-lora"] and len(loaded) == 1
    assert [v for v, _ in loaded[0].calls] == ["base", "base"] and [v for v, _ in small.calls] == ["fake-lora"] * 2
    assert summary["big"]["rouge1"]["mean"] > summary["fake-lora"]["rouge1"]["mean"]
    assert summary["fake-lora"]["rouge1_minus_base"]["n"] == 2 and summary["big"]["model"] == "big"


def test_eval_summarize_cli_takes_model_prefixed_contenders(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAGQA_MODEL", "fake")
    data = tmp_path / "d.jsonl"
    data.write_text('{"fname": "a", "dialogue": "A: hi. B: hello.", "summary": "They greet."}\n')
    code = main(["eval", "summarize", "--data", str(data), "--variants", "fake:base,fake:fake-lora",
                 "--report", str(tmp_path / "rep")])
    assert code == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "## Quality and cost" in report and "| base | fake |" in report and "| fake-lora | fake |" in report


def test_eval_scores_exactly_what_ask_returns(tmp_path, settings):
    """evaluate_qa scores the Answer RagQA.ask returns (auto-citation, abstention flag and all),
    without its citation markers; abstention comes from the Answer, not from a literal."""
    from ragqa.evaluation.evaluate import answer_text

    class Picky(FakeGenerator):
        def _answer(self, prompt, variant):
            if "Question: What does the Moon orbit?" in prompt:
                return "I do not know that."  # the model abstains, not in ragqa's words
            if "Question: Where is the Eiffel Tower?" in prompt:
                return "in Paris"  # cites nothing: ragqa adds [1] (auto_cited)
            return super()._answer(prompt, variant)

    data = squad_file(tmp_path / "s.json")
    Index.build([data], tmp_path / "idx", settings)
    items = load_qa_data(data)
    for threshold in (0.0, 0.99):  # 0.99: the retrieval gate abstains on everything, nothing is generated
        with RagQA.open(tmp_path / "idx", settings.replace(abstain_threshold=threshold), generator=Picky()) as qa:
            summary, rows = evaluate_qa(qa, items, ["base", "fake-lora"])
            asked = {(i.id, v): qa.ask(i.question, variant=v) for i in items for v in ("base", "fake-lora")}
        assert len(rows) == 4
        for r in rows:
            ans = asked[(r["id"], r["variant"])]
            assert r["prediction"] == ans.text
            assert answer_text(r["prediction"]) == answer_text(ans.text) and "[" not in answer_text(ans.text)
            assert r["abstained"] == float(ans.abstained)
        by = {(r["id"], r["variant"]): r for r in rows}
        if threshold == 0.0:
            eiffel = asked[("q1", "base")]
            assert eiffel.auto_cited and eiffel.text == "in Paris [1]" and not eiffel.abstained
            assert by[("q1", "base")]["em"] == 1.0 and by[("q1", "base")]["f1"] == 1.0
            moon = asked[("q2", "base")]
            assert moon.abstained and moon.text == "I do not know that."
            assert by[("q2", "base")]["abstained"] == 1.0 and by[("q2", "base")]["em"] == 0.0
            assert by[("q2", "base")]["faithfulness"] is None
        else:
            assert all(a.abstained and a.reason and "threshold" in a.reason for a in asked.values())
            assert all(r["generate_s"] == 0.0 and r["new_tokens"] == 0 for r in rows)
            assert summary["base"]["abstained"]["mean"] == 1.0
