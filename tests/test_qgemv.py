"""The decoding-step kernel in C (generators/qgemv.py, generators/kernels/qgemv.c): every code path
this machine can run (its own ISA, AVX2, AVX512BW without VNNI, portable C) against a reference of
the same arithmetic in torch, the layer that uses it, and the way the kernel is built and found."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import kernel_rounded_rows
from ragqa.generators import qgemv

needs_cc = pytest.mark.skipif(qgemv._compiler() is None, reason="needs a C compiler")


def _flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _builds():
    """(march, the ISA its build reports) for each code path this CPU can execute."""
    flags = _flags()
    out = [("native", None), ("x86-64", "portable C")]
    if "avx2" in flags and "f16c" in flags and "fma" in flags:
        out.append(("haswell", "avx2"))
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        out.append(("skylake-avx512", "avx512bw"))
    if {"avx512f", "avx512bw", "avx512_vnni"} <= flags:
        out.append(("cascadelake", "avx512-vnni"))
    return out


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    if qgemv._compiler() is None:
        pytest.skip("needs a C compiler")
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the ISA builds are x86 ones")
    root = tmp_path_factory.mktemp("kernels")
    out = []
    for march, want in _builds():
        path = qgemv.build(root, march=march)
        assert path is not None, march
        lib = qgemv._bind(path)
        assert want is None or qgemv.isa(lib) == want, (march, qgemv.isa(lib))
        out.append((march, lib))
    return out


def _reference(q, scale, offset, x, bias):
    """The kernel's arithmetic in torch: w = scale * q + offset per group of 32; x rounded to int8
    with one scale per group of 32 (amax / 127)."""
    n, k = q.shape
    w = (torch.from_numpy(q).double().reshape(n, k // 32, 32) * torch.from_numpy(scale).double()[..., None]
         + torch.from_numpy(offset).double()[..., None]).reshape(n, k)
    out = kernel_rounded_rows(x.double()) @ w.T
    return out + bias.double() if bias is not None else out


def _weights(rng, n, k, bits):
    q = rng.integers(0, 16 if bits == 4 else 128, (n, k), dtype=np.uint8)
    # fp16-exact scales and offsets (the blocks keep them as fp16)
    scale = (rng.random((n, k // 32)) * 0.02).astype(np.float16).astype(np.float32)
    offset = (rng.standard_normal((n, k // 32)) * 0.05).astype(np.float16).astype(np.float32)
    return q, scale, offset


@pytest.mark.parametrize("bits", [4, 8])
def test_every_code_path_computes_the_grouped_product(libs, bits):
    rng = np.random.default_rng(bits)
    n, k = 48, 160
    q, scale, offset = _weights(rng, n, k, bits)
    for march, lib in libs:
        blocks = qgemv.pack(lib, q, scale, offset, bits)
        assert blocks.numel() == (n // 16) * (k // 32) * qgemv.block_bytes(bits)
        for m in (1, 3, qgemv.MAX_ROWS):
            x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
            x[0, :32] = 0  # a group of zeros has no scale
            x[-1, 40] = 300.0  # an outlier only coarsens its own group
            for bias in (None, torch.randn(n)):
                want = _reference(q, scale, offset, x, bias)
                got = qgemv.matmul(lib, blocks, bits, n, x, bias)
                assert got.dtype == torch.float32 and got.shape == (m, n)
                assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-4 * want.abs().max()), (march, m)
                got16 = qgemv.matmul(lib, blocks, bits, n, x.bfloat16(), None if bias is None else bias.bfloat16())
                want16 = _reference(q, scale, offset, x.bfloat16().float(),
                                    None if bias is None else bias.bfloat16().float())
                assert got16.dtype == torch.bfloat16
                # the result rounded to bf16 (8 bits), and a bias in bf16 added before that
                assert torch.allclose(got16.double(), want16, rtol=2 ** -7, atol=2 ** -7 * want16.abs().max()), march


def test_the_blocks_hold_each_weight_where_the_kernel_reads_it(libs):
    """One input at a time (a one-hot row is quantized exactly): the product is that column of
    the weight, so every row and input lands in its place in the block layout."""
    rng = np.random.default_rng(0)
    n, k = 32, 64
    for bits in (4, 8):
        q, scale, offset = _weights(rng, n, k, bits)
        w = (q.reshape(n, k // 32, 32) * scale[..., None] + offset[..., None]).reshape(n, k)
        for march, lib in libs:
            blocks = qgemv.pack(lib, q, scale, offset, bits)
            eye = torch.eye(k)
            for start in range(0, k, qgemv.MAX_ROWS):
                got = qgemv.matmul(lib, blocks, bits, n, eye[start:start + qgemv.MAX_ROWS])
                assert np.allclose(got.numpy(), w[:, start:start + qgemv.MAX_ROWS].T, rtol=1e-6, atol=1e-7), (march, bits)


def _weights6(rng, n, k):
    """Q6_K-like weights: q in 0..63, an fp16 d per group (as a super-block's), int8 scales per 16."""
    q = rng.integers(0, 64, (n, k), dtype=np.uint8)
    d = (rng.random((n, k // 32)) * 1e-3 + 1e-4).astype(np.float16).astype(np.float32)
    sc = rng.integers(-128, 128, (n, k // 16)).astype(np.int8)
    w = (q.astype(np.float64).reshape(n, k // 16, 16) - 32) * sc[..., None] * np.repeat(d, 2, axis=1)[..., None]
    return q, d, sc, w.reshape(n, k)


def test_every_code_path_computes_the_six_bit_product_exactly(libs):
    """GGUF Q6_K blocks (one int8 scale per 16 inputs) multiply with the very weights
    ``d * sc * (q - 32)``, the rows rounded as for the other widths, in every code path."""
    rng = np.random.default_rng(6)
    n, k = 48, 160
    q, d, sc, w = _weights6(rng, n, k)
    wt = torch.from_numpy(w)
    for march, lib in libs:
        blocks = qgemv.pack6(lib, q, d, sc)
        assert blocks.numel() == (n // 16) * (k // 32) * qgemv.block_bytes(6)
        for m in (1, 3, qgemv.MAX_ROWS):
            x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
            x[0, :32] = 0
            x[-1, 40] = 300.0
            for bias in (None, torch.randn(n)):
                want = kernel_rounded_rows(x.double()) @ wt.T
                want = want + bias.double() if bias is not None else want
                got = qgemv.matmul(lib, blocks, 6, n, x, bias)
                assert got.dtype == torch.float32 and got.shape == (m, n)
                assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max()), (march, m)
                got16 = qgemv.matmul(lib, blocks, 6, n, x.bfloat16())
                want16 = kernel_rounded_rows(x.bfloat16().double()) @ wt.T
                assert got16.dtype == torch.bfloat16
                assert torch.allclose(got16.double(), want16, rtol=2 ** -7, atol=2 ** -7 * want16.abs().max()), march
        eye = torch.eye(k)  # one input at a time: each weight is where the kernel reads it
        for start in range(0, k, qgemv.MAX_ROWS):
            got = qgemv.matmul(lib, blocks, 6, n, eye[start:start + qgemv.MAX_ROWS])
            assert np.allclose(got.numpy(), w[:, start:start + qgemv.MAX_ROWS].T, rtol=1e-6,
                               atol=1e-6 * np.abs(w).max()), march


def test_sizes_the_kernel_cannot_take_are_refused(libs):
    _, lib = libs[0]
    with pytest.raises(ValueError, match="cannot pack"):
        qgemv.pack(lib, np.zeros((20, 64), np.uint8), np.zeros((20, 2), np.float32), np.zeros((20, 2), np.float32), 4)
    with pytest.raises(ValueError, match="cannot pack"):
        qgemv.pack6(lib, np.zeros((20, 64), np.uint8), np.zeros((20, 2), np.float32), np.zeros((20, 4), np.int8))
    blocks = qgemv.pack(lib, np.zeros((16, 64), np.uint8), np.ones((16, 2), np.float32), np.zeros((16, 2), np.float32), 4)
    with pytest.raises(ValueError, match="cannot multiply"):
        qgemv.matmul(lib, blocks, 4, 16, torch.zeros(qgemv.MAX_ROWS + 1, 64))


def test_quantize8_is_a_seven_bit_grouped_copy():
    w = torch.randn(32, 96)
    w[3, 5] = 40.0  # one large weight widens only its own group
    q, scale, offset = qgemv.quantize8(w)
    assert q.dtype == np.uint8 and q.max() <= 127
    back = (q.reshape(32, 3, 32) * scale[..., None] + offset[..., None]).reshape(32, 96)
    err = np.abs(back - w.numpy())
    assert (err <= scale.repeat(32, 1) / 2 + 1e-6).all()
    assert err[4:].max() < 0.05 and err[3, 32:].max() < 0.05


@needs_cc
def test_a_layer_decodes_with_the_kernel_and_reads_prompts_with_its_weight():
    lib = qgemv.library()
    if lib is None:
        pytest.skip("the kernel could not be built here")
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48, bias=True)
    exact = torch.nn.Linear(64, 48, bias=True)
    exact.load_state_dict(layer.state_dict())
    assert qgemv.enable8(layer, lib) == 1 and type(layer) is qgemv.QgemvLinear
    assert isinstance(layer, torch.nn.Linear)
    with torch.inference_mode():
        prompt = torch.randn(1, qgemv.MAX_ROWS + 1, 64)
        assert torch.equal(layer(prompt), exact(prompt))  # prompts: the weight as it is
        step = torch.randn(1, 1, 64)
        got, want = layer(step), exact(step)
        assert not torch.equal(got, want) and torch.allclose(got, want, atol=0.03 * want.abs().max())
    step = torch.randn(1, 1, 64, requires_grad=True)
    assert torch.equal(layer(step), exact(step))  # training: the weight
    assert qgemv.disable(layer) == 1 and type(layer) is torch.nn.Linear and not hasattr(layer, "qblocks")


def test_no_compiler_means_no_kernel(tmp_path, monkeypatch):
    monkeypatch.setattr(qgemv, "_compiler", lambda: None)
    assert qgemv.build(tmp_path) is None


@needs_cc
def test_a_cache_that_cannot_be_written_means_no_kernel_not_an_error(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert qgemv.build(blocked) is None  # <blocked>/kernels cannot be made


@needs_cc
def test_the_build_is_kept_and_found_again(tmp_path, monkeypatch):
    first = qgemv.build(tmp_path)
    assert first is not None and first.parent == tmp_path / "kernels"
    stamp = first.stat().st_mtime_ns
    assert qgemv.build(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [first.name]  # no temporary left
    # a compiler that fails leaves nothing behind and no kernel
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "cc").write_text("#!/bin/sh\necho 'cc (fake) 1.0'\nexit 1\n")
    (fake / "cc").chmod(0o755)
    monkeypatch.setattr(qgemv, "_compiler", lambda: str(fake / "cc"))
    other = tmp_path / "other"
    assert qgemv.build(other) is None and not any((other / "kernels").iterdir())


def test_the_setting_reaches_the_generator(monkeypatch):
    from ragqa.answering.pipeline import make_generator
    from ragqa.config import Settings

    assert Settings().decode_kernel is True
    monkeypatch.setenv("RAGQA_DECODE_KERNEL", "0")
    settings = Settings.load()
    assert settings.decode_kernel is False and make_generator(settings).decode_kernel is False


@needs_cc
def test_the_kernel_target_can_be_named_for_another_cpus_code(tmp_path, monkeypatch):
    """RAGQA_KERNEL_MARCH (scripts/avx2_proxy.py) compiles the kernel for another target, e.g.
    the AVX2 code on a bigger CPU; the default is the machine's own."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("an x86 target")
    seen = []
    real = qgemv.build
    monkeypatch.setattr(qgemv, "build", lambda root, march="native": seen.append(march) or real(root, march=march))
    monkeypatch.setattr(qgemv, "_state", {})
    monkeypatch.setenv(qgemv.MARCH_ENV, "x86-64")
    lib = qgemv.library(tmp_path)
    assert seen == ["x86-64"] and lib is not None and qgemv.isa(lib) == "portable C"
    monkeypatch.setattr(qgemv, "_state", {})
    monkeypatch.delenv(qgemv.MARCH_ENV)
    qgemv.library(tmp_path)
    assert seen[-1] == "native"
