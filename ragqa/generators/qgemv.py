"""Decoding-step products with grouped 4-, 6- or 8-bit weights and int8 activations, in C.

PyTorch's CPU int4 kernel (``torch._weight_int4pack_mm_for_cpu``) turns every 4-bit weight back
into a float before multiplying. For one decoding row that work, not the memory, limits it: on a
2-core Xeon it read Qwen2.5-Coder-1.5B's 8960 x 1536 ``up_proj`` at 17 GB/s; this kernel reads its
4-bit blocks from memory at 25-27 GB/s, where a plain read of the same bytes runs at 28-30 GB/s
(2 threads, 344 MB of blocks, 2026-12-07). ``kernels/qgemv.c`` does what llama.cpp does instead: each row is quantized to
int8 per group of 32 inputs (one scale per group), and 16 output rows x 4 inputs are multiplied
per integer dot-product instruction (AVX512-VNNI ``vpdpbusd``; ``vpmaddubsw`` on AVX2 / AVX512BW;
portable C elsewhere). The weights keep their groups of 32 with a scale and an offset (fp16), or
(GGUF Q6_K, ``pack6``) 6-bit values with an int8 scale per 16 and the super-block's fp16 scale.

The C file ships with the package and is compiled on first use with the machine's C compiler
(``cc -O3 -march=native -fopenmp``; ``RAGQA_KERNEL_MARCH`` names another target, e.g.
``x86-64-v3`` for the AVX2 code on a bigger CPU, as ``scripts/avx2_proxy.py`` measures) into
``<cache>/kernels/``, keyed by the source, the compiler, the flags and the CPU; the ``decode_kernel`` setting off, or no compiler, leaves decoding on PyTorch's
kernels (and fbgemm's for float32 models). OpenMP
resolves to the ``libgomp.so.1`` torch has already loaded, so the kernel runs on torch's own
threads (as many as ``torch.get_num_threads()``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

GROUP = 32
TILE = 16
MAX_ROWS = 8
SOURCE = Path(__file__).with_name("kernels") / "qgemv.c"
ABI = 3
MARCH_ENV = "RAGQA_KERNEL_MARCH"  # the compiler's -march (default native)

_lock = threading.Lock()
_state: dict = {}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_key() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    import platform

    return platform.machine() + platform.processor()


def build(cache_dir: Path, *, march: str = "native") -> Path | None:
    """Compiles the kernel for this machine (once; later calls find it) and returns the shared
    library's path, or None without a C compiler or when the build fails."""
    cc = _compiler()
    if cc is None:
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    flags = ["-O3", f"-march={march}", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(flags),
                                    _cpu_key()]).encode()).hexdigest()[:16]
    out = Path(cache_dir) / "kernels" / f"qgemv-{key}.so"
    if out.exists():
        return out
    try:  # a cache folder that cannot be written: no kernel, not an error
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".qgemv-", suffix=".so", dir=out.parent)
    except OSError:
        return None
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags, "-o", tmp, str(SOURCE), "-lm"], capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            return None
        os.replace(tmp, out)
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def _bind(path: Path):
    lib = ctypes.CDLL(str(path))
    if lib.qgemv_abi() != ABI:
        return None
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.qgemv.argtypes = [p, i, i, i, p, i, i, p, i, p, p, i]
    lib.qgemv.restype = i
    lib.qgemv_pack.argtypes = [p, p, p, i, i, i, p]
    lib.qgemv_pack.restype = i
    lib.qgemv_pack6.argtypes = [p, p, p, i, i, p]
    lib.qgemv_pack6.restype = i
    f = ctypes.c_float  # the fused decoding step's functions (fused_decode.py)
    lib.attend_one.argtypes = [p, p, p, p, p, i, i, i, i, p, p, i, i, f, p, p, i]
    lib.attend_one.restype = i
    lib.decode_layer.argtypes = [p, i, i, i, i, i, i, p, p, p, f, p, p, p, p, i, i, f, p, i]
    lib.decode_layer.restype = i
    lib.decode_layer_scratch.argtypes = [i, i, i, i, i, i]
    lib.decode_layer_scratch.restype = ctypes.c_size_t
    lib.attend_one_scratch.argtypes = [i, i, i]
    lib.attend_one_scratch.restype = ctypes.c_size_t
    return lib


def library(cache_dir: Path | None = None):
    """The loaded kernel (ctypes), compiled into ``cache_dir`` (default: ``default_cache_dir()``)
    the first time; None where it cannot be built here. Loaded once per process: later calls return
    it whatever folder they name."""
    with _lock:
        if "lib" not in _state:
            if cache_dir is None:
                from ragqa.config import default_cache_dir

                cache_dir = default_cache_dir()
            base = Path(cache_dir)
            path = build(base, march=os.environ.get(MARCH_ENV) or "native")
            try:
                _state["lib"] = _bind(path) if path is not None else None
            except OSError:  # a file that does not load (another architecture, truncated)
                _state["lib"] = None
        return _state["lib"]


def loaded():
    """The kernel ``library()`` loaded (a decoding step's lookup, no lock), else None."""
    return _state.get("lib")


def isa(lib) -> str:
    return {3: "avx512-vnni", 2: "avx512bw", 1: "avx2", 0: "portable C"}.get(lib.qgemv_isa(), "?")


def block_bytes(bits: int) -> int:
    return {4: 320, 6: 448, 8: 576}[bits]


def pack(lib, q: np.ndarray, scale: np.ndarray, offset: np.ndarray, bits: int) -> torch.Tensor:
    """q [n, k] uint8 (0..15 or 0..127), scale / offset [n, k/32] with ``w = scale * q + offset``
    -> the kernel's blocks (uint8 tensor)."""
    n, k = q.shape
    q = np.ascontiguousarray(q, dtype=np.uint8)
    s = np.ascontiguousarray(scale, dtype=np.float16)
    o = np.ascontiguousarray(offset, dtype=np.float16)
    out = torch.empty((n // TILE) * (k // GROUP) * block_bytes(bits), dtype=torch.uint8)
    rc = lib.qgemv_pack(q.ctypes.data, s.ctypes.data, o.ctypes.data, bits, n, k, out.data_ptr())
    if rc != 0:
        raise ValueError(f"qgemv: cannot pack a {n} x {k} weight in {bits} bits")
    return out


def pack6(lib, q: np.ndarray, d: np.ndarray, sc: np.ndarray) -> torch.Tensor:
    """GGUF Q6_K weights, exactly: q [n, k] uint8 (0..63), d [n, k/32] (each group's super-block
    scale, fp16 values) and sc [n, k/16] int8, with ``w = d * sc * (q - 32)`` -> the kernel's 6-bit
    blocks (uint8 tensor)."""
    n, k = q.shape
    q = np.ascontiguousarray(q, dtype=np.uint8)
    dd = np.ascontiguousarray(d, dtype=np.float16)
    s = np.ascontiguousarray(sc, dtype=np.int8)
    if dd.shape != (n, k // GROUP) or s.shape != (n, k // 16):
        raise ValueError(f"qgemv: a {n} x {k} 6-bit weight takes d [{n}, {k // GROUP}] and sc [{n}, {k // 16}]")
    out = torch.empty((n // TILE) * (k // GROUP) * block_bytes(6), dtype=torch.uint8)
    if lib.qgemv_pack6(q.ctypes.data, dd.ctypes.data, s.ctypes.data, n, k, out.data_ptr()) != 0:
        raise ValueError(f"qgemv: cannot pack a {n} x {k} weight in 6 bits")
    return out


def grouped(weight: torch.Tensor, qmax: int, floor: float = 1e-12):
    """Asymmetric groups of 32 along each row: (q [n, k] uint8 in 0..qmax, scale, low [n, k/32]
    float32) with ``w ~ scale * q + low``; ``floor`` is the smallest scale (a constant group)."""
    n, k = weight.shape
    w = weight.detach().float().reshape(n, k // GROUP, GROUP)
    lo, hi = w.amin(-1), w.amax(-1)
    scale = ((hi - lo) / qmax).clamp(min=floor)
    q = torch.round((w - lo[..., None]) / scale[..., None]).clamp(0, qmax).to(torch.uint8)
    return q.reshape(n, k), scale, lo


def quantize8(weight: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """7-bit groups of 32 (q in 0..127, so AVX2's 16-bit pair sums cannot overflow) as numpy
    arrays: (q [n, k] uint8, scale, offset [n, k/32] float32)."""
    q, scale, lo = grouped(weight, 127)
    return q.numpy(), scale.numpy(), lo.numpy()


_scratch = threading.local()


def _work(size: int) -> torch.Tensor:
    """The kernel's scratch (the quantized row), one buffer per thread, grown as needed."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < size:
        buf = _scratch.buf = torch.empty(max(size, 1 << 16), dtype=torch.uint8)
    return buf


def matmul(lib, blocks: torch.Tensor, bits: int, n: int, x: torch.Tensor,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., k] (float32 or bf16, at most ``MAX_ROWS`` rows) -> [..., n] in x's dtype."""
    k = x.shape[-1]
    m = x.numel() // k
    x2 = x.reshape(m, k)
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    out = torch.empty((m, n), dtype=x.dtype)
    work = _work(m * k + 64 + 16 * m * (k // GROUP))
    bf16 = int(x.dtype == torch.bfloat16)
    rc = lib.qgemv(blocks.data_ptr(), bits, n, k, x2.data_ptr(), bf16, m, out.data_ptr(), bf16,
                   bias.data_ptr() if bias is not None else None, work.data_ptr(),
                   torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"qgemv: cannot multiply {m} x {k} by a {n}-row {bits}-bit weight")
    return out.reshape(*x.shape[:-1], n)


class QgemvLinear(torch.nn.Linear):
    """An ``nn.Linear`` that multiplies up to ``MAX_ROWS`` rows (a decoding step) with ``qblocks``
    (``qbits``-bit groups, this module's kernel) and reads prompts (and trains) with its weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(1, x.shape[-1])
        if rows > MAX_ROWS or x.dtype != self.weight.dtype or torch.is_grad_enabled():
            if getattr(self, "dyn_prompts", False) and not torch.is_grad_enabled():
                from ragqa.generators import dynamic_int8  # float32 prompts with fbgemm's int8

                return dynamic_int8.product(self, x)
            return F.linear(x, self.weight, self.bias)
        return matmul(loaded(), self.qblocks, self.qbits, self.out_features, x, self.bias)


def fits(module) -> bool:
    """Whether the kernel takes this layer: a plain bf16 / float32 ``nn.Linear`` whose inputs
    come in groups of 32 and outputs in tiles of 16."""
    return (type(module) is torch.nn.Linear and module.weight.dtype in (torch.bfloat16, torch.float32)
            and module.in_features % GROUP == 0 and module.out_features % TILE == 0)


def attach(module, lib, q: np.ndarray, scale: np.ndarray, offset: np.ndarray, bits: int) -> None:
    """Makes ``module`` (``fits``) a ``QgemvLinear`` decoding with these weights (in place)."""
    attach_blocks(module, pack(lib, q, scale, offset, bits), bits)


def attach_blocks(module, blocks: torch.Tensor, bits: int) -> None:
    """Makes ``module`` (``fits``) a ``QgemvLinear`` decoding with packed ``blocks`` (in place)."""
    module.register_buffer("qblocks", blocks, persistent=False)
    module.qbits = bits
    module.__class__ = QgemvLinear


def enable8(model, lib) -> int:
    """Every plain linear layer the kernel takes decodes with 7-bit groups of its own weight;
    returns how many."""
    count = 0
    for module in model.modules():
        if fits(module):
            attach(module, lib, *quantize8(module.weight), bits=8)
            count += 1
    return count


def disable(model) -> int:
    """Back to the exact layers; returns how many were switched back."""
    from ragqa.generators.dynamic_int8 import drop_copies
    from ragqa.generators.int8_decode import switch_back

    for module in model.modules():  # fbgemm's prompt copies (dynamic_int8.enable_prompts) too
        if type(module) is QgemvLinear:
            drop_copies(module)
    return switch_back(model, QgemvLinear, ("qblocks", "qbits"))
