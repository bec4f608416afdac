"""Fused decoding steps (generators/fused_decode.py, ``decode_layer`` / ``attend_one`` in
kernels/qgemv.c): every variant kind writes the same tokens as transformers' own forward over
the same kernel layers, a step's logits and cache match it, and whatever the fused step does not
take goes to transformers unchanged. The tiny random Llama of test_generators (head dim 8: the
C code's short-row paths); the packaged SmolLM2 in a slow test."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from ragqa.generators import Generator, fused_decode, qgemv  # noqa: E402

from test_generators import PROMPTS, SETTINGS, VARIANTS, make_adapter, make_base  # noqa: E402

pytestmark = pytest.mark.skipif(qgemv.library() is None, reason="no C compiler: the kernel cannot be built here")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fused")
    base = make_base(root / "base")
    for name, (kind, seed) in VARIANTS.items():
        make_adapter(base, root / "adapters" / name, kind, seed, card={})
    return {"root": root, "base": base, "variants": root / "adapters"}


def generator(world, dtype, **kwargs):
    kwargs.setdefault("decode_int8", True)
    g = Generator(str(world["base"]), cache_dir=world["root"] / "cache", variants_dir=world["variants"],
                  dtype=dtype, **kwargs)
    g.load()
    return g


def unfused(g, prompt, name):
    """What transformers' own forward writes over the same model (the fused step off for once)."""
    model = g._host.model
    fused_decode.disable(model)
    try:
        return g.generate(prompt, variant=name, settings=SETTINGS).token_ids
    finally:
        assert fused_decode.enable(model, qgemv.loaded())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_kind_writes_what_transformers_writes(world, dtype):
    g = generator(world, dtype)
    layers = g._host.model.config.num_hidden_layers
    for name in ["base", "my-lora", "soft", "prefix"]:
        for prompt in PROMPTS:
            stepper = fused_decode.stepper(g._host.model)  # a new one after each unfused()
            before = dict(stepper.layers)
            got = g.generate(prompt, variant=name, settings=SETTINGS).token_ids
            c = stepper.layers["c"] - before["c"]
            modules = stepper.layers["modules"] - before["modules"]
            # every step after the prompt is fused: LoRA's wrapped layers through their modules,
            # every other kind's plain layers in one C call each
            assert c + modules == layers * (len(got) - 1) > 0
            assert (modules > 0) == (name == "my-lora")
            assert got == unfused(g, prompt, name), (name, prompt)


def _six_bit(weight):
    """Q5_0-like 6-bit blocks of a weight (any will do: both paths multiply by the same blocks)."""
    import numpy as np

    w = weight.detach().float()
    n, k = w.shape
    d = (w.reshape(n, k // 32, 32).abs().amax(-1) / 31).clamp(min=1e-6).half().float()
    q = (w / d.repeat_interleave(32, 1)).round().clamp(-32, 31) + 32
    return q.to(torch.uint8).numpy(), d.numpy(), np.ones((n, k // 16), dtype=np.int8)


def test_six_bit_layers_step_in_the_c_layer_too(world):
    """Layers with 6-bit blocks (GGUF Q6_K / Q5_0) beside 7-bit ones: still one C call a layer,
    and the same tokens as transformers' forward over the same blocks."""
    g = generator(world, "float32")
    model = g._host.model
    lib = qgemv.loaded()
    for name, module in model.named_modules():
        if type(module) is qgemv.QgemvLinear and name.endswith(("q_proj", "down_proj")):
            qgemv.attach_blocks(module, qgemv.pack6(lib, *_six_bit(module.weight)), 6)
    assert {m.qbits for m in model.modules() if type(m) is qgemv.QgemvLinear} == {6, 8}
    layers = model.config.num_hidden_layers
    for prompt in PROMPTS:
        stepper = fused_decode.stepper(model)
        before = stepper.layers["c"]
        got = g.generate(prompt, variant="base", settings=SETTINGS).token_ids
        assert stepper.layers["c"] - before == layers * (len(got) - 1) > 0
        assert got == unfused(g, prompt, "base"), prompt


def test_the_setting_turns_it_off(world):
    g = generator(world, "float32", fused_decode=False)
    assert fused_decode.stepper(g._host.model) is None
    assert generator(world, "float32", decode_kernel=False)._host.model.model.forward.__func__ \
        is not fused_decode._forward  # no kernel, nothing fused


def step_both_ways(model, ids):
    """(fused, transformers) outputs of one decoding step after the prompt ``ids``, each from
    its own copy of the prompt's cache."""
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        caches = [copy.deepcopy(out.past_key_values) for _ in range(2)]
        fused = model(input_ids=token, cache=caches[0], use_cache=True)
        fused_decode.disable(model)
        try:
            plain = model(input_ids=token, cache=caches[1], use_cache=True)
        finally:
            fused_decode.enable(model, qgemv.loaded())
    return (fused, caches[0]), (plain, caches[1])


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-6), ("bfloat16", 1e-2)])
def test_a_step_computes_what_transformers_computes(world, dtype, tol):
    """Only the order of float32 sums differs: float32 logits agree to float32 rounding, bf16
    ones to a bf16 rounding here and there; the cache gets the same new keys and values."""
    g = generator(world, dtype)
    model = g._host.model
    ids = g.tokenizer(PROMPTS[2], return_tensors="pt")["input_ids"]
    (fused, fc), (plain, pc) = step_both_ways(model, ids)
    scale = plain.logits.abs().max().item()
    assert (fused.logits - plain.logits).abs().max().item() <= tol * scale
    assert fused.logits.argmax(-1).equal(plain.logits.argmax(-1))
    assert fc.get_seq_length() == pc.get_seq_length() == ids.shape[1] + 1
    for a, b in zip(fc.layers, pc.layers):
        for x, y in ((a.keys, b.keys), (a.values, b.values)):
            assert x.shape == y.shape
            assert torch.allclose(x.float(), y.float(), atol=tol * max(1.0, y.abs().max().item()), rtol=0)


def test_the_cache_grows_in_place_and_moves_when_full(world, monkeypatch):
    g = generator(world, "float32")
    want = unfused(g, PROMPTS[0], "base")
    monkeypatch.setattr(fused_decode, "GROW", 2)  # full every other step
    assert g.generate(PROMPTS[0], settings=SETTINGS).token_ids == want
    model = g._host.model
    ids = g.tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        token = ids[:, -1:]
        layer = cache.layers[0]
        model(input_ids=token, cache=cache, use_cache=True)  # a new buffer: cap n + 2
        room = layer._ragqa_room[0]
        model(input_ids=token, cache=cache, use_cache=True)  # fits: written in place
        assert layer._ragqa_room[0] is room and layer.keys.data_ptr() == room.data_ptr()
        model(input_ids=token, cache=cache, use_cache=True)  # full: moved
        assert layer._ragqa_room[0] is not room
    assert cache.get_seq_length() == ids.shape[1] + 3


def test_what_it_does_not_take_goes_to_transformers(world):
    g = generator(world, "float32")
    model = g._host.model
    stepper = fused_decode.stepper(model)
    ids = g.tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        before = dict(stepper.layers)
        cache = out.past_key_values
        n = cache.get_seq_length()
        # output of hidden states, a padded mask, a batch of two: transformers' forward
        model(input_ids=token, cache=copy.deepcopy(cache), use_cache=True, output_hidden_states=True)
        mask = torch.ones(1, n + 1, dtype=torch.long)
        mask[0, 0] = 0
        model(input_ids=token, attention_mask=mask, cache=copy.deepcopy(cache), use_cache=True)
        two = model(input_ids=ids.repeat(2, 1), use_cache=True)
        model(input_ids=token.repeat(2, 1), cache=two.past_key_values, use_cache=True)
        assert stepper.layers == before
        model(input_ids=token, attention_mask=torch.ones(1, n + 1, dtype=torch.long),
              cache=copy.deepcopy(cache), use_cache=True)
        assert stepper.layers["c"] == before["c"] + 2
    with torch.enable_grad():  # training: transformers' forward
        model(input_ids=token, cache=copy.deepcopy(cache), use_cache=True)
    assert stepper.layers["c"] == before["c"] + 2


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_packaged_model_writes_the_same_answer(dtype, tmp_path):
    """SmolLM2 (the packaged test model, 4-bit decoding): 24 tokens after a RAG-like prompt, the
    same with fused steps as with transformers' forward."""
    from ragqa.config import Settings
    from ragqa.generators import GenerationSettings

    settings = Settings()
    g = Generator("smollm2-135m-instruct", cache_dir=settings.cache_dir, variants_dir=tmp_path,
                  dtype=dtype, decode_int8=True, decode_int4=True, threads=2)
    g.load()
    prompt = g.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Context: The Apollo program landed twelve astronauts on the Moon "
          "between 1969 and 1972. Question: How many astronauts landed on the Moon?"}],
        tokenize=False, add_generation_prompt=True)
    gs = GenerationSettings(max_new_tokens=24, min_new_tokens=24, repetition_penalty=1.0)
    stepper = fused_decode.stepper(g._host.model)
    got = g.generate(prompt, settings=gs).token_ids
    assert stepper.layers["c"] == 23 * g._host.model.config.num_hidden_layers
    fused_decode.disable(g._host.model)
    assert g.generate(prompt, settings=gs).token_ids == got


def test_results_say_whether_steps_were_fused(monkeypatch):
    from ragqa.benchmarks.bench import decode_settings, decoding_words
    from ragqa.config import Settings

    on = decode_settings(Settings())
    assert on["fused_decode"] is True and on["decode_kernel"]
    assert decoding_words({**on, "gen_dtype": "bfloat16"}).endswith(", fused steps)")
    monkeypatch.setenv("RAGQA_FUSED_DECODE", "0")
    off = decode_settings(Settings.load())
    assert off["fused_decode"] is False and "fused" not in decoding_words({**off, "gen_dtype": "bfloat16"})
    assert decode_settings(Settings(decode_kernel=False))["fused_decode"] is False


def reference_attention(q, k, v, cos, sin, kc, vc, pos, scaling):
    """transformers' arithmetic for one token: rotary in the dtype, then softmax(q k^T) v in float32."""
    def rotate(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    q, k = q * cos + rotate(q) * sin, k * cos + rotate(k) * sin
    keys = torch.cat([kc[:, :pos], k.unsqueeze(1)], 1)  # [kv, n, d]
    values = torch.cat([vc[:, :pos], v.unsqueeze(1)], 1)
    groups = q.shape[0] // k.shape[0]
    qf = q.float().reshape(k.shape[0], groups, -1)
    probs = torch.softmax(qf @ keys.float().transpose(1, 2) * scaling, -1)
    return (probs @ values.float()).reshape(q.shape).to(q.dtype), k, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv,d,pos,threads", [(12, 2, 128, 700, 2), (12, 2, 128, 0, 2), (9, 3, 64, 33, 1),
                                                    (4, 2, 8, 5, 3), (4, 4, 10, 17, 2)])
def test_attend_one_computes_attention_for_one_token(dtype, heads, kv, d, pos, threads):
    """The C attention (kernels/qgemv.c attend_one) against PyTorch: the new key (rotated) and
    value land in their slot, and the output agrees to float32 rounding (bf16: one rounding)."""
    import ctypes

    lib = qgemv.library()
    gen = torch.Generator().manual_seed(pos + d)
    cap = pos + 3
    q, k, v = (torch.randn(n * d, generator=gen).to(dtype) for n in (heads, kv, kv))
    angle = torch.rand(d // 2, generator=gen) * 6
    cos, sin = torch.cat([angle.cos()] * 2).to(dtype), torch.cat([angle.sin()] * 2).to(dtype)
    kc, vc = (torch.randn(kv, cap, d, generator=gen).to(dtype) for _ in range(2))
    want, k_rot, v_new = reference_attention(q.view(heads, d), k.view(kv, d), v.view(kv, d), cos, sin,
                                             kc, vc, pos, d ** -0.5)
    out = torch.empty(heads * d, dtype=dtype)
    work = torch.empty(lib.attend_one_scratch(heads, d, cap))  # floats
    rc = lib.attend_one(q.data_ptr(), k.data_ptr(), v.data_ptr(), cos.data_ptr(), sin.data_ptr(),
                        int(dtype == torch.bfloat16), heads, kv, d, kc.data_ptr(), vc.data_ptr(), cap, pos,
                        ctypes.c_float(d ** -0.5), out.data_ptr(), work.data_ptr(), threads)
    assert rc == 0
    assert torch.equal(kc[:, pos], k_rot) and torch.equal(vc[:, pos], v_new)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert torch.allclose(out.view(heads, d).float(), want.float(), atol=tol, rtol=tol)
    assert lib.attend_one(q.data_ptr(), k.data_ptr(), v.data_ptr(), cos.data_ptr(), sin.data_ptr(), 0,
                          heads, kv, d, kc.data_ptr(), vc.data_ptr(), cap, cap, ctypes.c_float(1.0),
                          out.data_ptr(), work.data_ptr(), 1) == -1  # no slot left: refused


def test_kept_caches_continue_after_fused_steps(world):
    """The prompt cache keeps the cache fused steps grew (views of their buffers); a prompt that
    starts like the last generation reads only the rest over it and answers as a generator that
    reads every prompt whole."""
    warm = generator(world, "float32", prompt_cache=True)
    cold = generator(world, "float32")
    shared = " ".join(f"w{4 + (7 * i) % 85}" for i in range(24))
    a = shared + " " + " ".join(f"w{50 + i}" for i in range(20))
    b = shared + " " + " ".join(f"w{30 + i}" for i in range(18))
    for name in ("base", "my-lora"):
        warm.forget_prompts()
        assert warm.generate(a, name, SETTINGS).token_ids == cold.generate(a, name, SETTINGS).token_ids
        second = warm.generate(b, name, SETTINGS)
        assert second.reused_tokens > 0
        assert second.token_ids == cold.generate(b, name, SETTINGS).token_ids
    assert fused_decode.stepper(warm._host.model).layers["c"] > 0


def test_float16_models_step_with_transformers(world):
    """The C code reads bf16 and float32: a float16 model is not fused, and a model turned to
    float16 after loading steps with transformers."""
    g = generator(world, "float16")
    assert fused_decode.stepper(g._host.model) is None
    assert len(g.generate(PROMPTS[1], settings=SETTINGS).token_ids) == SETTINGS.max_new_tokens
    model = generator(world, "float32", decode_int8=False)._host.model
    assert fused_decode.enable(model, qgemv.loaded())
    stepper = fused_decode.stepper(model)
    model.half()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        model(input_ids=ids[:, -1:], cache=out.past_key_values, use_cache=True)
    assert stepper.layers == {"c": 0, "modules": 0}


def test_a_fused_model_is_freed_as_soon_as_it_is_dropped(world):
    """No reference cycle: the model's weights go when the generator does, not at the garbage
    collector's next full pass; disable() gives the model its own class back."""
    import gc
    import weakref

    g = generator(world, "float32")
    g.generate(PROMPTS[0], settings=SETTINGS)
    inner = g._host.model.model
    assert type(inner).__name__ == "LlamaModel" and type(inner).__mro__[1].__name__ == "LlamaModel"
    gone = weakref.ref(inner)
    del g, inner
    was = gc.isenabled()
    gc.disable()
    try:
        assert gone() is None
    finally:
        if was:
            gc.enable()
    model = generator(world, "float32")._host.model
    cls = type(model.model)
    assert fused_decode.disable(model) and type(model.model) is cls.__mro__[1]
    assert fused_decode.stepper(model) is None and not fused_decode.disable(model)
