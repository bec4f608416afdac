"""Tuning: the data pipeline (import, split without leakage, RAFT-style examples, synthesis
filters) and the training loop on tiny random models built here (loss goes down, early stopping,
resume, every method gives a variant the Generator serves)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragqa.errors import ConfigError, InputNotFound
from ragqa.training.data import (ExampleSettings, Record, build_dataset, import_dialogsum,
                                 import_jsonl, import_squad, make_examples, read_examples,
                                 split_by_document)
from tiny import make_tiny_lm, squad_json, texts_of


@pytest.fixture
def squad_file(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad_json(n_articles=6)))
    return path


def _records(n_docs=10, per_doc=3):
    return [Record(id=f"r{d}-{i}", task="qa", input=f"question {d} {i}", output=f"ans{d}",
                   context=f"passage of doc {d} number {i} says ans{d} .", doc=f"doc{d}")
            for d in range(n_docs) for i in range(per_doc)]


# ----------------------------------------------------------------------------- import

def test_import_squad(squad_file):
    records = import_squad(squad_file)
    assert len(records) == 6 * 2 * 2
    r = records[0]
    assert (r.task, r.doc, r.title, r.output) == ("qa", "Article_0", "Article 0", "city0x0")
    assert r.output in r.context and r.provenance["passage_id"] == "Article_0#0"


def test_import_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "context": "c", "answer": "a"}\n{"question": "q2", "context": "c"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: field 'answer'"):
        import_jsonl(bad)
    bad.write_text('{"dialogue": "A: hi"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: field 'summary'"):
        import_dialogsum(bad)
    bad.write_text("not json\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: not valid JSON"):
        import_jsonl(bad)
    with pytest.raises(InputNotFound):
        import_squad(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text('{"nodata": 1}')
    with pytest.raises(ConfigError, match="SQuAD format"):
        import_squad(tmp_path / "x.json")


def test_import_generic_jsonl_kinds(tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(json.dumps(o) for o in [
        {"question": "Who?", "context": "Ann did it.", "answers": ["Ann"]},
        {"instruction": "Translate", "input": "hallo", "output": "hello"},
        {"dialogue": "#P1#: hi", "summary": "P1 says hi."}]) + "\n")
    records = import_jsonl(f)
    assert [r.task for r in records] == ["qa", "instruct", "summarize"]
    assert records[1].input == "Translate\n\nhallo"


# ----------------------------------------------------------------------------- split

def test_split_keeps_documents_together_and_is_deterministic():
    records = _records()
    a = split_by_document(records, (0.6, 0.2, 0.2), seed=3)
    b = split_by_document(list(reversed(records)), (0.6, 0.2, 0.2), seed=3)
    docs = {s: {r.doc for r in rs} for s, rs in a.items()}
    assert docs == {s: {r.doc for r in rs} for s, rs in b.items()}  # input order does not matter
    assert not (docs["train"] & docs["validation"]) and not (docs["train"] & docs["test"])
    assert not (docs["validation"] & docs["test"])
    assert sum(len(v) for v in a.values()) == len(records)
    assert all(a[s] for s in a)
    assert docs != {s: {r.doc for r in rs} for s, rs in split_by_document(records, (0.6, 0.2, 0.2), seed=4).items()}


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.9, 0.2, 0.1), (1.2, -0.1, -0.1)])
def test_split_rejects_bad_fractions(fractions):
    with pytest.raises(ConfigError, match="fractions"):
        split_by_document(_records(), fractions)


def test_split_edge_cases():
    one = _records(n_docs=1)
    assert len(split_by_document(one)["train"]) == 3  # one document stays in train
    assert split_by_document(_records(n_docs=2), (0.5, 0.0, 0.5))["validation"] == []


# ----------------------------------------------------------------------------- examples

def test_examples_never_mix_splits_and_cite_the_gold(squad_file):
    records = import_squad(squad_file)
    splits = split_by_document(records, (0.5, 0.25, 0.25), seed=0)
    examples = make_examples(splits, ExampleSettings(k=3, idk_share=0.3, seed=1))
    contexts = {s: {r.context for r in rs} for s, rs in splits.items()}
    n_idk = 0
    for split, exs in examples.items():
        for e in exs:
            for p in e.passages:
                assert p["text"] in contexts[split], "a passage from another split"
            if e.gold is None:
                n_idk += 1
                assert e.target == "I don't know."
                assert not any(a in p["text"] for p in e.passages for a in e.answers)
            else:
                assert e.target.endswith(f"[{e.gold}]")
                assert any(a in e.passages[e.gold - 1]["text"] for a in e.answers)
                assert sum(any(a in p["text"] for a in e.answers) for p in e.passages) == 1
    assert n_idk > 0


def test_examples_use_the_index_retriever(tmp_path, squad_file, settings):
    from ragqa.indexing.index import Index

    Index.build([squad_file], tmp_path / "idx", settings)
    records = import_squad(squad_file)
    splits = split_by_document(records, (0.5, 0.25, 0.25))
    with Index.open(tmp_path / "idx", settings) as index:
        examples = make_examples(splits, ExampleSettings(k=2, idk_share=0.0), index=index)
    contexts = {s: {r.context for r in rs} for s, rs in splits.items()}
    for split, exs in examples.items():
        for e in exs:
            assert len(e.passages) == 2
            assert all(p["text"] in contexts[split] for p in e.passages)


def test_build_dataset_writes_manifest(tmp_path, squad_file):
    out = tmp_path / "data"
    manifest = build_dataset(import_squad(squad_file), out, sources=[squad_file],
                             fractions=(0.5, 0.25, 0.25))
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert set(manifest["files"]) == {"records.jsonl", "train.jsonl", "validation.jsonl", "test.jsonl"}
    assert manifest["sources"][str(squad_file)]
    assert sum(c["examples"] for c in manifest["counts"].values()) == 24
    assert len(read_examples(out / "train.jsonl")) == manifest["counts"]["train"]["examples"]
    with pytest.raises(ConfigError, match="appears twice"):
        build_dataset(import_squad(squad_file) * 2, tmp_path / "dup")


def test_cli_data_import(tmp_path, squad_file):
    from ragqa.apps.cli import main

    assert main(["data", "import", "squad", str(squad_file), "--out", str(tmp_path / "d"),
                 "--split", "0.5,0.25,0.25", "--idk-share", "0.2"]) == 0
    assert (tmp_path / "d" / "manifest.json").is_file()
    assert main(["data", "import", "nope", str(squad_file), "--out", str(tmp_path / "e")]) == 2


# ----------------------------------------------------------------------------- synthesis

class ScriptedGenerator:
    """Proposes "Answer/Question" from the passage's first 'capital of X is Y' sentence, with a
    few bad proposals mixed in to exercise each filter, and answers the check question."""

    context_length = 2048

    def __init__(self):
        from ragqa.testing import WordTokenizer

        self.tokenizer = WordTokenizer()
        self.n = 0

    def generate(self, prompt, variant="base", settings=None):
        import re

        from ragqa.generators.engine import GenerationResult

        last = prompt.rsplit("Passage:", 1)[-1]
        m = re.search(r"capital of (\S+) is (\S+)", last)
        if "Question:" in prompt and "[1]" in prompt:  # the answerability check (qa prompt)
            q = prompt.rsplit("Question:", 1)[-1]
            m2 = re.search(r"capital of (\w+)", q)
            p = re.search(r"capital of " + re.escape(m2.group(1)) + r" is (\S+)", prompt) if m2 else None
            text = f"{p.group(1)} [1]" if p else "I don't know."
        else:
            self.n += 1
            kind = self.n % 5
            if kind == 1:
                text = "no format here"
            elif kind == 2:
                text = "Answer: elephant\nQuestion: What animal?"
            elif kind == 3 and m:
                text = f"Answer: {m.group(2)}\nQuestion: The capital of {m.group(1)} is {m.group(2)} ?"
            else:
                text = f"Answer: {m.group(2)}\nQuestion: What is the capital of {m.group(1)}?" if m else "x"
        return GenerationResult(text=text, prompt_tokens=1, new_tokens=1, generate_ms=1.0,
                                first_token_ms=1.0, tokens_per_s=1.0, variant=variant)


def test_synthesize_filters(tmp_path, squad_file, settings):
    from ragqa.indexing.index import Index
    from ragqa.training.synthesize import copies_passage, is_duplicate, parse_proposal, synthesize

    assert parse_proposal("Answer: 1889.\nQuestion: When was it built") == ("1889", "When was it built?")
    assert parse_proposal("just text") is None
    assert copies_passage("the capital of land1 is where ?", "x the capital of land1 is city1 y", "city1", n=4)
    assert not copies_passage("Where is it?", "the capital of land1 is city1", "city1")
    assert copies_passage("Is city1 big?", "the capital is city1", "city1")
    kept = [({"what", "is", "the", "capital", "of", "land1"}, "city1")]
    assert is_duplicate("What is the capital of land1 ?", "elsewhere", kept)
    assert is_duplicate("Which city is the capital of land1?", "City1", kept)
    assert not is_duplicate("What is the capital of land2 ?", "city2", kept)

    Index.build([squad_file], tmp_path / "idx", settings)
    with Index.open(tmp_path / "idx", settings) as index:
        records, stats = synthesize(index, ScriptedGenerator(), n_passages=12, min_words=5)
    assert stats["passages"] == 12 and stats["proposed"] == 12
    assert stats["unparsed"] and stats["not_in_passage"] and stats["copied"]
    assert stats["kept"] == len(records) > 0
    assert stats["kept"] + sum(stats[k] for k in ("unparsed", "not_in_passage", "copied", "duplicate",
                                                   "unanswerable")) == stats["proposed"]
    for r in records:
        assert r.output in r.context and r.provenance["check_f1"] >= 0.5
        assert r.doc and r.task == "qa"
    assert len({r.input for r in records}) == len(records)


class ScriptedTeacher(ScriptedGenerator):
    """A teacher that answers the check question in words of its own ("The City1. [1]")."""

    def generate(self, prompt, variant="base", settings=None):
        result = super().generate(prompt, variant, settings)
        if result.text.endswith("[1]"):
            result.text = f"The {result.text[:-4]}. [1]"
        return result


def test_synthesize_with_teacher_distills_its_answers(tmp_path, squad_file, settings):
    from ragqa.indexing.index import Index
    from ragqa.training.synthesize import synthesize, teacher_target

    assert teacher_target("It is 1960. [1]") == "It is 1960"
    Index.build([squad_file], tmp_path / "idx", settings)
    with Index.open(tmp_path / "idx", settings) as index:
        plain, _ = synthesize(index, ScriptedGenerator(), n_passages=12, min_words=5)
        records, stats = synthesize(index, ScriptedGenerator(), n_passages=12, min_words=5,
                                    teacher=ScriptedTeacher(), teacher_name="big-model")
    assert stats["kept"] == len(records) == len(plain) > 0
    for r, p in zip(records, plain):
        assert r.input == p.input
        assert r.output == f"The {p.output}"  # the teacher's answer is the target
        assert r.answers == [r.output, p.output]  # the proposed span is still scored against
        assert r.provenance["teacher"] == "big-model"


def test_cli_synthesize_refuses_an_unknown_teacher_variant_first(tmp_path, squad_file, settings, capsys):
    from ragqa.apps.cli import main
    from ragqa.indexing.index import Index

    Index.build([squad_file], tmp_path / "idx", settings)
    assert main(["data", "synthesize", "--index", str(tmp_path / "idx"), "--out", str(tmp_path / "d"),
                 "--teacher", "fake", "--teacher-variant", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no variant 'nope'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- training (tiny)

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    squad = squad_json(n_articles=6)
    (root / "squad.json").write_text(json.dumps(squad))
    base = make_tiny_lm(root / "base", texts_of(squad) + ["I don't know."])
    build_dataset(import_squad(root / "squad.json"), root / "data", fractions=(0.5, 0.25, 0.25),
                  settings=ExampleSettings(k=2, idk_share=0.2))
    return root, base


def _cfg(root, base, out, **kw):
    from ragqa.training.trainer import TrainConfig

    defaults = dict(data=root / "data", out=out, model=str(base), max_steps=8, batch_size=2,
                    eval_steps=4, eval_examples=3, eval_max_new_tokens=4, max_seq_len=200,
                    warmup_steps=0, learning_rate=1e-2, patience=5, threads=1,
                    cache_dir=root / "cache")
    defaults.update(kw)
    return TrainConfig(**defaults)


def _peft_greedy(base, adapter, tokenizer, prompt: str, n: int) -> list[int]:
    """Greedy ids of a PeftModel of ``adapter`` from its full forward pass (no generate, no cache)."""
    import peft
    from transformers import AutoModelForCausalLM

    ref = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(adapter)).eval()
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(ref(input_ids=ids).logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
            if nxt == tokenizer.eos_token_id:
                break
    return out


def test_featurize_masks_the_prompt(tiny_world):
    from ragqa.generators.models import load_tokenizer
    from ragqa.training.trainer import featurize

    root, base = tiny_world
    tok = load_tokenizer(base)
    examples = read_examples(root / "data" / "train.jsonl")
    rows, stats = featurize(examples, tok, max_seq_len=200)
    assert stats["kept"] == len(rows) > 0
    for r in rows:
        n = r["prompt_len"]
        assert r["labels"][:n] == [-100] * n
        assert r["labels"][n:] == r["input_ids"][n:]
        target = tok.decode(r["input_ids"][n:])
        assert target.startswith(r["example"].target.split()[0]) and target.split()[-1] == "<eos>"
        assert r["prompt"].endswith("assistant : ")
    # a budget too small for the gold passage drops the example instead of training on a lie
    rows, stats = featurize(examples, tok, max_seq_len=60)
    assert stats["gold_dropped"] + stats["too_long"] > 0


def test_training_lowers_the_loss_and_writes_a_variant(tiny_world, tmp_path):
    from ragqa.generators import Generator
    from ragqa.generators.registry import Card
    from ragqa.training.trainer import train

    root, base = tiny_world
    out = tmp_path / "adapters" / "tiny-lora"
    card = train(_cfg(root, base, out, max_steps=12), log=lambda m: None)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    saved = Card.load(out)
    assert saved.kind == "lora" and saved.name == "tiny-lora" and saved.base_fingerprint
    assert saved.metrics["validation"]["f1"] == card.metrics["validation"]["f1"]
    assert saved.data_hash and saved.template == "qa"
    log = json.loads((out / "training_log.json").read_text())
    losses = [h["loss"] for h in log["log_history"] if "loss" in h]
    assert losses[-1] < losses[0]
    assert not list(out.parent.glob(".tiny-lora.*"))  # no partial or temp directory left
    gen = Generator(str(base), cache_dir=root / "cache", variants_dir=out.parent, dtype="float32")
    assert [v["name"] for v in gen.variants()] == ["base", "tiny-lora"]
    assert gen.generate(gen.chat_prompt("What is the capital of land0x0 ?"), variant="tiny-lora").variant == "tiny-lora"
    with pytest.raises(ConfigError, match="already exists"):
        train(_cfg(root, base, out), log=lambda m: None)


def test_early_stopping(tiny_world, tmp_path):
    from ragqa.training.trainer import train

    root, base = tiny_world
    # a learning rate of ~0 never improves the metric: stop after patience + 1 evaluations
    card = train(_cfg(root, base, tmp_path / "es", learning_rate=1e-12, max_steps=40, eval_steps=2,
                      patience=1), log=lambda m: None)
    assert card.metrics["stopped_early"] and card.metrics["steps"] == 4


def test_resume_after_interruption(tiny_world, tmp_path):
    from transformers import TrainerCallback

    from ragqa.training.trainer import train

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                raise KeyboardInterrupt

    root, base = tiny_world
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(root, base, out), log=lambda m: None, callbacks=[Interrupt()])
    partial = tmp_path / ".resumed.partial"
    assert (partial / "checkpoint-4").is_dir() and not out.exists()
    with pytest.raises(ConfigError, match="other settings"):
        train(_cfg(root, base, out, learning_rate=5e-3, resume=True), log=lambda m: None)
    # a run started before a setting existed (mixing) resumes: absent means its default
    saved = json.loads((partial / "train_config.json").read_text())
    del saved["mix_data"], saved["mix"]
    (partial / "train_config.json").write_text(json.dumps(saved))
    messages = []
    card = train(_cfg(root, base, out, resume=True), log=messages.append)
    assert card.metrics["steps"] == 8 and out.is_dir() and not partial.exists()
    log = json.loads((out / "training_log.json").read_text())
    assert [h["step"] for h in log["log_history"] if "eval_f1" in h] == [4, 8]


@pytest.mark.parametrize("method", ["prompt-tuning", "prefix-tuning"])
def test_prompt_learning_methods_give_servable_variants(tiny_world, tmp_path, method):
    from ragqa.generators import Generator
    from ragqa.generators.inspect import inspect_variant
    from ragqa.training.trainer import train

    root, base = tiny_world
    out = tmp_path / "adapters" / f"tiny-{method}"
    card = train(_cfg(root, base, out, method=method, max_steps=4, num_virtual_tokens=4,
                      prompt_init_text="Answer the question briefly"), log=lambda m: None)
    assert card.kind == method
    gen = Generator(str(base), cache_dir=root / "cache", variants_dir=out.parent, dtype="float32")
    assert gen.generate(gen.chat_prompt("What is the capital of land0x0 ?"), variant=card.name).variant == card.name
    info = inspect_variant(out, base_dir=base, top=3)
    assert info["num_virtual_tokens"] == 4
    if method == "prompt-tuning":
        assert len(info["nearest_tokens"]) == 4 and len(info["nearest_tokens"][0]) == 3


@pytest.mark.parametrize("method", ["ia3", "ln-tuning"])
def test_ia3_and_ln_tuning_give_servable_variants(tiny_world, tmp_path, method):
    """Trained by PEFT, served without it (hooks / swapped norms) beside a LoRA variant of the
    same base: each writes what a PeftModel of its adapter writes."""
    from ragqa.generators import GenerationSettings, Generator
    from ragqa.training.trainer import train

    root, base = tiny_world
    out = tmp_path / "adapters" / f"tiny-{method}"
    card = train(_cfg(root, base, out, method=method, max_steps=4), log=lambda m: None)
    assert card.kind == method and card.hyperparameters["method"] == method
    # four steps barely move the weights: make them far from 1 so the check below means something
    from safetensors.torch import load_file, save_file

    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all(k.endswith("ia3_l" if method == "ia3" else "ln_tuning_layers.weight") for k in weights)
    gen_ = torch.Generator().manual_seed(0)
    save_file({k: (v * (1 + 2 * torch.randn(v.shape, generator=gen_))).contiguous() for k, v in weights.items()},
              str(out / "adapter_model.safetensors"))
    train(_cfg(root, base, tmp_path / "adapters" / "tiny-lora", max_steps=2), log=lambda m: None)
    gen = Generator(str(base), cache_dir=root / "cache", variants_dir=out.parent, dtype="float32")
    prompt = gen.chat_prompt("What is the capital of land0x0 ?")
    settings = GenerationSettings(max_new_tokens=8, repetition_penalty=1.0)
    base_ids = gen.generate(prompt, settings=settings).token_ids
    gen.generate(prompt, variant="tiny-lora", settings=settings)  # the shared PeftModel exists
    got = gen.generate(prompt, variant=card.name, settings=settings)
    assert got.variant == card.name
    want = _peft_greedy(base, out, gen.tokenizer, prompt, 8)
    assert got.token_ids == want and want != base_ids
    assert gen.generate(prompt, settings=settings).token_ids == base_ids  # base is untouched after


def test_a_prefix_from_activations_acts_like_its_text(tiny_world, tmp_path):
    """Li & Liang's init: before any step the prefix holds the base model's keys and values of
    the task text, so the prompt's logits equal the base model's after that text."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from ragqa.generators.models import load_tokenizer
    from ragqa.generators.prefix_tuning import PrefixTuningKind, init_ids
    from ragqa.training.trainer import TrainConfig

    root, base = tiny_world
    cfg = TrainConfig(data=root / "data", out=tmp_path / "p", method="prefix-tuning", num_virtual_tokens=6,
                      prefix_init_text="What is the capital of land0x0 ?")
    tokenizer = load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(str(base)).eval()
    text_ids = init_ids(tokenizer, cfg.prefix_init_text, 6)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                                PrefixTuningKind.peft_config(cfg, model, base)).eval()
    PrefixTuningKind.init_trainable(cfg, peft_model, tokenizer)
    prompt = tokenizer("the capital of land0x1", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        want = model(input_ids=torch.tensor([text_ids + prompt])).logits[0, len(text_ids):]
        got = peft_model(input_ids=torch.tensor([prompt])).logits[0]
    assert torch.allclose(got, want, atol=1e-4)
    with pytest.raises(ConfigError, match="give one of them"):
        TrainConfig(data=root / "data", out=tmp_path / "p", method="prefix-tuning", prefix_projection=True,
                    prefix_init_text="x")


@pytest.mark.parametrize("start", [{"prefix_projection": True}, {"prefix_init_text": "the capital of land0x0"}])
def test_projected_and_activation_started_prefixes_serve_like_peft(tiny_world, tmp_path, start):
    from ragqa.generators import GenerationSettings, Generator
    from ragqa.training.trainer import train

    root, base = tiny_world
    out = tmp_path / "adapters" / "prefix-start"
    card = train(_cfg(root, base, out, method="prefix-tuning", num_virtual_tokens=4, max_steps=2, eval_steps=2,
                      **start), log=lambda m: None)
    assert {k: card.hyperparameters[k] for k in start} == start
    gen = Generator(str(base), cache_dir=root / "cache", variants_dir=out.parent, dtype="float32")
    prompt = gen.chat_prompt("What is the capital of land0x0 ?")
    got = gen.generate(prompt, variant=card.name, settings=GenerationSettings(max_new_tokens=6,
                                                                              repetition_penalty=1.0))
    assert got.token_ids == _peft_greedy(base, out, gen.tokenizer, prompt, 6)


def test_full_fine_tuning_writes_a_model_directory(tiny_world, tmp_path):
    """--method full trains every weight and writes a model directory that --model serves (with
    its tokenizer and card), not an adapter."""
    from ragqa.generators import GenerationSettings, Generator
    from ragqa.generators.models import model_fingerprint
    from ragqa.generators.registry import is_variant_dir
    from ragqa.training.trainer import train

    root, base = tiny_world
    out = tmp_path / "models" / "tiny-full"
    card = train(_cfg(root, base, out, method="full", max_steps=2, eval_steps=2, learning_rate=1e-3),
                 log=lambda m: None)
    assert card.kind == "full" and not is_variant_dir(out) and (out / "config.json").is_file()
    total = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(str(base)).parameters())
    assert card.hyperparameters["trainable_parameters"] == total
    assert model_fingerprint(out) != model_fingerprint(base)  # its own model: base's variants are not offered
    gen = Generator(str(out), cache_dir=root / "cache", variants_dir=tmp_path / "none", dtype="float32")
    assert gen.generate(gen.chat_prompt("What is the capital of land0x0 ?"),
                        settings=GenerationSettings(max_new_tokens=3)).new_tokens >= 1
    assert [v["name"] for v in gen.variants()] == ["base"]


def test_mixing_draws_by_weight_and_repeats_a_small_task():
    from ragqa.training.trainer import mix_examples

    a, b = [("a", i) for i in range(30)], [("b", i) for i in range(5)]
    mixed = mix_examples([a, b], [0.5, 0.5], seed=0)
    assert len(mixed) == 35 and mix_examples([a, b], [0.5, 0.5], seed=0) == mixed  # seeded
    assert 10 <= sum(x[0] == "b" for x in mixed) <= 25  # ~half, so b's 5 come round again
    assert {x for x in mixed if x[0] == "b"} == set(b)
    assert all(x[0] == "a" for x in mix_examples([a, b], [1, 0], seed=0))
    assert sorted(mix_examples([a, b], None, seed=0)) == sorted(a + b)  # no weights: all, once


def test_multi_task_training_over_two_data_directories(tiny_world, tmp_path):
    from ragqa.apps.cli import main
    from ragqa.training.trainer import TrainConfig, train

    root, base = tiny_world
    dialogues = tmp_path / "dialogues.jsonl"
    dialogues.write_text("".join(json.dumps({
        "fname": f"d{i}", "dialogue": f"#Person1#: where is land{i}x0 ? #Person2#: it is far .",
        "summary": f"Person1 asks where land{i}x0 is ."}) + "\n" for i in range(12)))
    build_dataset(import_dialogsum(dialogues), tmp_path / "sum", fractions=(0.6, 0.2, 0.2))
    out = tmp_path / "adapters" / "mixed"
    card = train(_cfg(root, base, out, mix_data=[tmp_path / "sum"], mix=[0.7, 0.3], max_steps=2,
                      eval_steps=2), log=lambda m: None)
    assert card.metrics["task"] == "qa"  # validation: the first --data's task
    assert card.hyperparameters["mix"] == [0.7, 0.3] and card.hyperparameters["mix_data"] == [str(tmp_path / "sum")]
    assert card.extra["mixed_with"][0]["weight"] == 0.3 and card.extra["mix_weights"] == {"data": 0.7}
    assert "summarize" in card.template.split(",")
    with pytest.raises(ConfigError, match="one weight per --data"):
        TrainConfig(data=root / "data", out=out, mix_data=[tmp_path / "sum"], mix=[1.0])
    with pytest.raises(ConfigError, match="weights >= 0"):
        TrainConfig(data=root / "data", out=out, mix_data=[tmp_path / "sum"], mix=[0, 0])
    assert main(["train", "--data", str(root / "data"), "--data", str(tmp_path / "sum"), "--mix", "a,b",
                 "--out", str(tmp_path / "x"), "--model", str(base)]) == 2


def test_inspect_lora_and_cli(tiny_world, tmp_path):
    from ragqa.apps.cli import main
    from ragqa.generators.inspect import format_inspection, inspect_variant
    from ragqa.training.trainer import train

    root, base = tiny_world
    out = tmp_path / "adapters" / "lora-r4"
    train(_cfg(root, base, out, max_steps=2, eval_steps=2, lora_r=4, target_modules=["q_proj", "k_proj", "v_proj"]),
          log=lambda m: None)
    info = inspect_variant(out)
    assert info["r"] == 4 and info["ranks"] == [4] and info["adapted_modules"] == 2 * 3
    assert info["parameters"] > 0 and info["size_bytes"] >= info["adapter_bytes"] > 0
    assert "rank 4" in format_inspection(info)
    assert main(["variants", "inspect", str(out), "--json"]) == 0


def test_train_config_errors(tiny_world, tmp_path):
    from ragqa.training.trainer import TrainConfig, train

    root, base = tiny_world
    with pytest.raises(ConfigError, match="method 'dora'"):  # ("full" is a method since issue 21)
        TrainConfig(data=root, out=tmp_path, method="dora")
    with pytest.raises(ConfigError, match="lora_r=0"):  # ranks 1 and 2 are allowed: the rank study
        TrainConfig(data=root, out=tmp_path, lora_r=0)
    assert TrainConfig(data=root, out=tmp_path, lora_r=1).lora_r == 1
    with pytest.raises(InputNotFound, match="manifest.json"):
        train(_cfg(root, base, tmp_path / "x", data=tmp_path), log=lambda m: None)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            train(_cfg(root, base, tmp_path / "q", qlora=True), log=lambda m: None)


def test_bench_train_plumbing(tiny_world, tmp_path):
    from ragqa.training.throughput import bench_train

    root, base = tiny_world
    result = bench_train(model=str(base), cache_dir=root / "cache", steps=2, batch_size=2, seq_len=16,
                         log=lambda m: None)
    assert result["bare_steps"] == 4 and result["ragqa_steps"] == 4
    assert result["ratio"] > 0 and result["bare_steps_per_s"] > 0


def test_a_variant_picks_its_own_base_model(tmp_path):
    from ragqa.config import Settings
    from ragqa.generators.registry import Card
    from ragqa.answering.pipeline import model_for_variants

    adapters = tmp_path / "adapters"
    (adapters / "v").mkdir(parents=True)
    (adapters / "v" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    Card(name="v", kind="lora", base_model="smollm2-135m-instruct").save(adapters / "v")
    s = Settings(model="qwen2.5-coder-0.5b-instruct", variants_dir=adapters)
    assert model_for_variants(s, ["base", "v"]).model == "smollm2-135m-instruct"
    assert model_for_variants(s, ["base"]).model == s.model
    assert model_for_variants(s, ["missing"]).model == s.model


def test_each_method_is_its_kind_s_own_file():
    """The methods `ragqa train` offers, their default learning rates and hyperparameters come
    from the kind modules in ragqa/generators/ (one file per kind serves and trains it)."""
    from ragqa.generators.registry import kind_from_peft_type, trainable_kinds
    from ragqa.training.trainer import METHODS, TrainConfig

    assert METHODS == ("lora", "prompt-tuning", "prefix-tuning", "ia3", "ln-tuning", "full")
    assert {m: TrainConfig(data="d", out="o", method=m).lr for m in METHODS} == {
        "lora": 2e-4, "prompt-tuning": 3e-2, "prefix-tuning": 5e-3, "ia3": 3e-3, "ln-tuning": 1e-3, "full": 2e-5}
    hp = TrainConfig(data="d", out="o", method="lora").hyperparameters()
    assert {"lora_r", "lora_alpha", "lora_dropout", "target_modules", "qlora"} <= set(hp)
    assert "num_virtual_tokens" in TrainConfig(data="d", out="o", method="prefix-tuning").hyperparameters()
    assert {cls.peft_type: name for name, cls in trainable_kinds().items()} == {
        "LORA": "lora", "PROMPT_TUNING": "prompt-tuning", "PREFIX_TUNING": "prefix-tuning",
        "IA3": "ia3", "LN_TUNING": "ln-tuning"}
    assert kind_from_peft_type("PREFIX_TUNING") == "prefix-tuning" and kind_from_peft_type("IA3") == "ia3"
