"""``ragqa bench`` (all stages in one go) in quick mode with the fake embedder and generator: the
plumbing, the JSON and the table. No timing is asserted."""

from __future__ import annotations

import json
import sys
import types

import pytest

from ragqa.apps.cli import main


@pytest.fixture
def fake_training(monkeypatch):
    """A stand-in for ragqa.training.throughput (written in another issue) that records its call."""
    calls = []

    def bench_train(*, model, cache_dir, threads, steps, batch_size, seq_len):
        calls.append(dict(model=model, cache_dir=cache_dir, threads=threads, steps=steps, batch_size=batch_size,
                          seq_len=seq_len))
        return {"ragqa_steps_per_s": 2.0, "peft_steps_per_s": 2.5, "ratio": 0.8}

    module = types.ModuleType("ragqa.training.throughput")
    module.bench_train = bench_train
    monkeypatch.setitem(sys.modules, "ragqa.training", types.ModuleType("ragqa.training"))
    monkeypatch.setitem(sys.modules, "ragqa.training.throughput", module)
    return calls


def test_bench_all_quick_with_fakes(tmp_path, settings, fake_training):
    from ragqa.benchmarks.bench import ALL_STAGES, QUICK_PLAN, all_table_rows, bench_all

    out = tmp_path / "all.json"
    lines: list[str] = []
    r = bench_all(settings.replace(model="fake"), out, quick=True, echo=lines.append)
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    assert set(r["stages"]) == set(ALL_STAGES)
    assert {name: s["status"] for name, s in r["stages"].items()} == {name: "ok" for name in ALL_STAGES}
    assert r["machine"]["threads"] == 1 and r["quick"] and r["plan"]["queries"] == QUICK_PLAN.queries
    st = r["stages"]
    assert st["index"]["documents"] == 50 and st["index"]["chunks"] > 0  # the bundled data/demo
    assert {"dense", "bm25", "hybrid"} <= set(st["query"]) and st["query"]["queries"] == QUICK_PLAN.queries
    assert st["generate"]["runs"] == 1 and st["generate"]["prompt_tokens"] > 0
    assert st["switch"]["order"] == ["base", "fake-lora"]
    assert st["switch"]["switches"] == 2 * QUICK_PLAN.switch_rounds
    assert fake_training == [dict(model="fake", cache_dir=settings.cache_dir, threads=1, steps=QUICK_PLAN.train_steps,
                                  batch_size=QUICK_PLAN.train_batch_size, seq_len=QUICK_PLAN.train_seq_len)]
    assert st["train"]["result"]["ratio"] == 0.8
    rows = all_table_rows(r)
    assert {stage for stage, _, _ in rows} == set(ALL_STAGES)
    assert any("ratio" in m for stage, m, _ in rows if stage == "train")
    table = out.with_suffix(".md").read_text()
    assert "| stage | measurement | value |" in table and "quick run, 1 thread(s)" in table
    assert "[train] ok" in "\n".join(lines)


def test_bench_cli_without_subcommand(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAGQA_EMBEDDER", "fake:32")
    monkeypatch.setitem(sys.modules, "ragqa.training.throughput", None)  # the module is not there: skipped
    out = tmp_path / "all.json"
    assert main(["bench", "--quick", "--model", "fake", "--out", str(out), "--threads", "1"]) == 0
    r = json.loads(out.read_text())
    assert r["stages"]["train"]["status"] == "skipped (not available)"
    assert r["stages"]["index"]["status"] == "ok" and r["settings"]["model"] == "fake"
    assert "skipped (not available)" in capsys.readouterr().out

    assert main(["bench", "all", "--quick", "--model", "fake", "--stages", "index,query",
                 "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["stages"]) == {"index", "query"}
    assert main(["bench", "all", "--quick", "--stages", "nonsense", "--out", str(out)]) == 2


def test_a_failing_stage_is_reported_and_the_rest_still_run(tmp_path, capsys, monkeypatch, fake_training):
    def broken(**_):
        raise RuntimeError("out of memory\nsecond line")

    sys.modules["ragqa.training.throughput"].bench_train = broken
    monkeypatch.setenv("RAGQA_EMBEDDER", "fake:32")
    out = tmp_path / "all.json"
    assert main(["bench", "--quick", "--model", "fake", "--out", str(out), "--stages", "index,train"]) == 1
    r = json.loads(out.read_text())
    assert r["stages"]["index"]["status"] == "ok"
    assert r["stages"]["train"] == {"status": "failed", "error": "RuntimeError: out of memory second line",
                                    "stage_s": r["stages"]["train"]["stage_s"]}


def test_bench_subcommands_still_dispatch(tmp_path, capsys):
    # `bench index` runs its own command (here: an error about the missing corpus), not every stage
    assert main(["bench", "index", "--corpus", str(tmp_path / "missing.jsonl")]) == 1
    assert "no such corpus" in capsys.readouterr().err
    assert not (tmp_path / "all.json").exists()


def test_bench_answers_with_fakes(tmp_path, settings):
    """The demo questions answered end to end over the demo corpus: JSON, table, the answers kept."""
    from ragqa.benchmarks.bench import bench_answers, cpu_flags

    out = tmp_path / "answers.json"
    lines: list[str] = []
    r = bench_answers(settings.replace(model="fake", abstain_threshold=0.0), out,
                      questions=("Who discovered oxygen?", "When did Apollo 11 land on the Moon?"),
                      echo=lines.append)
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    assert [a["question"] for a in r["answers"]] == ["Who discovered oxygen?", "When did Apollo 11 land on the Moon?"]
    assert all(a["answer"] and a["prompt_tokens"] for a in r["answers"])
    assert r["seconds_p50"] > 0 and r["prompt_tokens_p50"] > 0 and r["cpu_flags"] == cpu_flags()
    table = out.with_suffix(".md").read_text()
    assert table.startswith("2 questions answered end to end by fake (base)") and "| seconds per answer" in table


def test_bench_peer_plumbing_with_a_stand_in_peer(tmp_path, settings, monkeypatch):
    """The interleaving, medians and ratios of `ragqa bench peer`, with the fake generator and a
    stand-in for llama.cpp that is always twice as slow. No timing is asserted beyond that."""
    import ragqa.benchmarks.bench as bench
    import ragqa.generators.models as models
    from ragqa.testing import FakeGenerator

    calls = []

    class SlowPeer:
        def __init__(self, gguf, threads):
            self.gguf = gguf

        def run(self, ids, n):
            calls.append(("peer", len(ids), n))
            return {"first_token_ms": 2000.0, "decode_ms": 1000.0 * (n - 1) / 5, "generate_ms": 2000.0 + 200.0 * (n - 1),
                    "new_tokens": n, "token_ids": list(range(n))}

    class Timed(FakeGenerator):
        def generate(self, prompt, variant="base", settings=None):
            r = super().generate(prompt, variant, settings)
            calls.append(("ragqa", settings.min_new_tokens))
            r.first_token_ms, r.generate_ms, r.new_tokens = 1000.0, 1000.0 + 100.0 * (settings.min_new_tokens - 1), \
                settings.min_new_tokens
            return r

        def load(self):
            pass

    monkeypatch.setattr(bench, "LlamaCppPeer", SlowPeer)
    monkeypatch.setattr(models, "gguf_path", lambda name, cache_dir: tmp_path / "m.gguf")
    monkeypatch.setattr("ragqa.answering.pipeline.make_generator", lambda s: Timed())
    out = tmp_path / "peer.json"
    r = bench.bench_peer(settings.replace(model="smollm2-135m-instruct"), out, runs=2,
                         regimes={"rag": {"prompt_tokens": 300, "new_tokens": 4}}, echo=lambda m: None)
    x = r["regimes"]["rag"]
    assert x["whole_call_ratio"] == pytest.approx(2.0) and x["prompt_ratio"] == pytest.approx(2.0)
    assert [c[0] for c in calls] == ["ragqa", "peer"] * 3  # a warm-up of each, then interleaved
    assert json.loads(out.read_text())["regimes"]["rag"]["new_tokens"] == 4
    assert "| rag | " in out.with_suffix(".md").read_text() and "**2.00x**" in out.with_suffix(".md").read_text()


def test_bench_peer_without_llama_cpp_says_how_to_get_it(monkeypatch, tmp_path):
    import builtins

    from ragqa.benchmarks.bench import LlamaCppPeer
    from ragqa.errors import ConfigError

    real_import = builtins.__import__

    def no_llama(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    with pytest.raises(ConfigError, match="pip install llama-cpp-python==0.3.36") as err:
        LlamaCppPeer(tmp_path / "m.gguf", 1)
    assert "\n" not in str(err.value)
