"""Decoding with the GGUF's own 4-bit weights.

The packaged models are GGUF files whose linear layers are mostly 4-bit blocks (Q4_K in the Qwen
models' Q4_K_M, Q4_1 in SmolLM2's): every 32 weights of a row share a scale and an offset, so
``w = scale * q + offset`` with ``q`` in 0..15. Converting the model dequantizes them to bf16,
which prompts are read with. A decoding step (one row per linear layer) is bound by the bytes of
weight it reads: PyTorch's int4 kernel (``torch._weight_int4pack_mm_for_cpu``) reads a quarter of
the bf16 bytes and half of the int8 copy's (``int8_decode``), and here took 31 ms per token over
Qwen2.5-Coder-1.5B's layers where int8 took 63 ms (``scripts``-free measurement in
docs/answering.md "Generation speed").

The 4-bit values are taken from the GGUF's blocks, not re-quantized from the bf16 weights, so
decoding multiplies by the very weights the prompt was read with (to bf16 rounding of each
group's scale and offset); re-quantizing the dequantized weights instead would add a second
rounding of about 4% of each weight. Q6_K tensors (half of Qwen's ``ffn_down`` and ``attn_v``) and
Q5_0 ones (the 0.5B's 896-wide layers, which K-quants' rows of 256 do not fit) are read the same
way, exactly, for the C kernel's 6-bit blocks: 6-bit values with an int8 scale per 16 weights and
an fp16 scale per 32 (7 bits a weight where the 7-bit copies took 9). The output layer keeps its
own path (``head_int4``); tensors of other types (Q8_0) keep the 7-bit copy.

The blocks are read once per machine into ``<converted dir>.int4.safetensors`` beside the
converted model (not inside it: the model's fingerprint covers its weight files), each layer
checked against the converted weights; a layer that does not match (another tensor order) is
left out and decodes with int8. Loading the file and packing it for the kernel takes a few
seconds.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

GROUP = 32
FORMAT = 3  # 3: Q6_K and Q5_0 layers too (``.q6lo`` / ``.q6hi`` / ``.d6`` / ``.sc6``)
SUFFIX = ".int4.safetensors"

# GGUF tensor names -> transformers module names (llama and qwen2 layouts)
_BLOCK_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def module_name(gguf_name: str) -> str | None:
    """``blk.3.ffn_up.weight`` -> ``model.layers.3.mlp.up_proj``; ``output.weight`` -> ``lm_head``."""
    if gguf_name == "output.weight":
        return "lm_head"
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[3] == "weight" and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}"
    return None


def _q4_k(blocks: np.ndarray):
    """Q4_K super-blocks (144 bytes: d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of
    nibbles for 256 weights) -> q [n, 256] uint8, scale and offset [n, 8] float32."""
    from gguf.quants import Q4_K

    n = blocks.shape[0]
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, m = Q4_K.get_scale_min(blocks[:, 4:16].copy())
    qs = blocks[:, 16:].reshape(n, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    q = (qs & np.uint8(0x0F)).reshape(n, 256)
    return q, d * sc.astype(np.float32), -(dmin * m.astype(np.float32))


def _q4_1(blocks: np.ndarray):
    """Q4_1 blocks (20 bytes: d, m, 16 bytes of nibbles for 32 weights) -> q [n, 32] uint8,
    scale and offset [n, 1] float32."""
    n = blocks.shape[0]
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 4:].reshape(n, 1, 16) >> np.array([0, 4], dtype=np.uint8).reshape(1, 2, 1)
    return (qs & np.uint8(0x0F)).reshape(n, 32), d, m


def _q6_k(blocks: np.ndarray):
    """Q6_K super-blocks (210 bytes: 128 bytes of low nibbles, 64 of high 2 bits, 16 int8 scales, fp16
    d; 256 weights) -> q [n, 256] uint8 in 0..63, d [n] float32, sc [n, 16] int8, with
    ``w = d * sc[j // 16] * (q[j] - 32)`` (gguf's own Q6_K layout)."""
    n = blocks.shape[0]
    ql = blocks[:, :128].reshape(n, 2, 1, 64) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    q = (ql & np.uint8(0x0F)).reshape(n, 256) | ((qh & np.uint8(0x03)).reshape(n, 256) << np.uint8(4))
    sc = blocks[:, 192:208].copy().view(np.int8)
    d = blocks[:, 208:210].copy().view(np.float16).astype(np.float32).reshape(n)
    return q, d, sc


def _q5_0(blocks: np.ndarray):
    """Q5_0 blocks (22 bytes: fp16 d, 4 bytes of high bits, 16 bytes of nibbles; 32 weights) ->
    q [n, 32] uint8 in 0..31, d [n] float32, with ``w = d * (q - 16)`` (gguf's own layout)."""
    n = blocks.shape[0]
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32).reshape(n)
    qh = blocks[:, 2:6].copy().view(np.uint32).reshape(n, 1) >> np.arange(32, dtype=np.uint32).reshape(1, 32)
    ql = blocks[:, 6:22].reshape(n, 1, 16) >> np.array([0, 4], dtype=np.uint8).reshape(1, 2, 1)
    q = (ql & np.uint8(0x0F)).reshape(n, 32) | ((qh & np.uint32(1)).astype(np.uint8) << np.uint8(4))
    return q, d


def tensor_blocks6(tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(q [N, K] uint8 in 0..63, d [N, K/32] float32, sc [N, K/16] int8) of a Q6_K or Q5_0 GGUF
    tensor, ``w = d * sc * (q - 32)`` (d per group of 32, sc per 16): the kernel's 6-bit blocks
    hold both exactly (Q5_0's ``d * (q - 16)`` as q + 16 with scales of 1); None for other types."""
    from gguf import GGMLQuantizationType as T

    if tensor.tensor_type not in (T.Q6_K, T.Q5_0) or len(tensor.shape) != 2:
        return None
    k, rows = (int(x) for x in tensor.shape)
    if tensor.tensor_type == T.Q5_0:
        q, d = _q5_0(np.asarray(tensor.data).reshape(-1, 22))
        return ((q + np.uint8(16)).reshape(rows, k), d.reshape(rows, k // GROUP),
                np.ones((rows, k // 16), dtype=np.int8))
    q, d, sc = _q6_k(np.asarray(tensor.data).reshape(-1, 210))
    return (q.reshape(rows, k), np.repeat(d.reshape(rows, k // 256), 256 // GROUP, axis=1),
            sc.reshape(rows, k // 16))


def tensor_blocks(tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(q [N, K] uint8, scale [N, K/32], offset [N, K/32]) of a 4-bit GGUF tensor (a
    ``gguf.ReaderTensor``), ``w = scale * q + offset`` per group of 32; None for other types."""
    from gguf import GGMLQuantizationType as T

    decode = {T.Q4_K: _q4_k, T.Q4_1: _q4_1}.get(tensor.tensor_type)
    if decode is None or len(tensor.shape) != 2:
        return None
    k, rows = (int(x) for x in tensor.shape)
    size = {T.Q4_K: 144, T.Q4_1: 20}[tensor.tensor_type]
    q, scale, offset = decode(np.asarray(tensor.data).reshape(-1, size))
    return q.reshape(rows, k), scale.reshape(rows, k // GROUP), offset.reshape(rows, k // GROUP)


def _row_orders(rows: int, config) -> list[np.ndarray | None]:
    """Row orders a GGUF tensor may have against the transformers weight: as it is, or (llama's
    q / k projections) llama.cpp's rope permutation undone, as transformers' GGUF loader does."""
    orders: list[np.ndarray | None] = [None]
    for heads in dict.fromkeys((getattr(config, "num_attention_heads", None),
                                getattr(config, "num_key_value_heads", None))):
        if heads and rows % (2 * heads) == 0:
            dim = rows // heads // 2
            orders.append(np.arange(rows).reshape(heads, dim, 2).swapaxes(2, 1).reshape(rows))
    return orders


def _dequantized(blocks, six: bool) -> np.ndarray:
    q, a, b = blocks
    rows, k = q.shape
    if six:  # a: d per group of 32, b: int8 scale per 16
        return ((q.reshape(rows, -1, 16).astype(np.float32) - 32) * b[..., None]
                * np.repeat(a, 2, axis=1)[..., None]).reshape(rows, k)
    return (q.reshape(rows, -1, GROUP) * a[..., None] + b[..., None]).reshape(rows, k)


def _matching(blocks, weight: np.ndarray, config, six: bool = False):
    """The blocks (``tensor_blocks``, or ``tensor_blocks6`` with ``six``) in the weight's row order
    when they dequantize to it (to bf16 rounding), else None (the layer then decodes with int8)."""
    rows = blocks[0].shape[0]
    tolerance = 2 ** -7 * float(np.abs(weight).max()) + 1e-6  # bf16 keeps 8 bits of each value
    for order in _row_orders(rows, config):
        ordered = blocks if order is None else tuple(part[order] for part in blocks)
        probe = slice(0, rows, max(1, rows // 64))  # 64 rows say whether the order is right
        if np.abs(_dequantized(tuple(part[probe] for part in ordered), six) - weight[probe]).max() <= tolerance:
            if np.abs(_dequantized(ordered, six) - weight).max() <= tolerance:
                return ordered
    return None


def build(gguf_file: Path, model, out: Path, *, gguf_sha256: str,
          status: Callable[[str], None] | None = None) -> int:
    """Reads every 4-bit (and Q6_K / Q5_0) linear layer of ``gguf_file`` that matches ``model``'s weights
    into ``out`` (safetensors: ``<module>.q`` two weights a byte, low nibble first, ``.scale`` and
    ``.offset`` float32 per group of 32; Q6_K and Q5_0 layers: ``.q6lo`` the low 4 bits likewise, ``.q6hi``
    the high 2 bits four weights a byte (first weight lowest), ``.d6`` float16 per 32 and ``.sc6``
    int8 per 16; the output layer is left to ``head_int4``); written to a temporary file and
    renamed into place. Returns the number of layers written."""
    import gguf
    from safetensors.numpy import save_file

    from ragqa.files import publish

    reader = gguf.GGUFReader(str(gguf_file))
    modules = dict(model.named_modules())
    tensors: dict[str, np.ndarray] = {}
    layers = 0
    quantized = [t for t in reader.tensors if module_name(t.name) in modules]
    for i, tensor in enumerate(quantized):
        name = module_name(tensor.name)
        module = modules[name]
        if not isinstance(module, torch.nn.Linear) or module.in_features % GROUP or module.out_features % 16:
            continue  # the kernel takes groups of 32 along a row and packs 16 rows at a time
        if status is not None and i % 16 == 0:
            status(f"reading the GGUF's 4- and 6-bit weights for decoding (once): {i}/{len(quantized)} layers")
        blocks = tensor_blocks(tensor)
        six = blocks is None and name != "lm_head"
        if six:
            blocks = tensor_blocks6(tensor)
        if blocks is None:
            continue
        weight = module.weight.detach().float().numpy()
        if blocks[0].shape != weight.shape:
            continue
        found = _matching(blocks, weight, model.config, six)
        if found is None:
            continue
        q = found[0]
        layers += 1
        if six:
            _, d, sc = found
            tensors[f"{name}.q6lo"], tensors[f"{name}.q6hi"] = _pack6(q)
            tensors[f"{name}.d6"] = np.ascontiguousarray(d, dtype=np.float16)  # fp16 in the GGUF
            tensors[f"{name}.sc6"] = np.ascontiguousarray(sc, dtype=np.int8)
            continue
        _, scale, offset = found
        tensors[f"{name}.q"] = np.ascontiguousarray(q[:, 0::2] | (q[:, 1::2] << 4))
        tensors[f"{name}.scale"] = np.ascontiguousarray(scale, dtype=np.float32)
        tensors[f"{name}.offset"] = np.ascontiguousarray(offset, dtype=np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": str(FORMAT), "gguf_sha256": gguf_sha256,
                                          "group": str(GROUP)})
        os.chmod(tmp, 0o644)
        publish(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return layers


def is_current(path: Path, gguf_sha256: str) -> bool:
    """Whether the 4-bit file at ``path`` was written, in this format, for that GGUF."""
    meta = file_metadata(path)
    return meta.get("format") == str(FORMAT) and meta.get("gguf_sha256") == gguf_sha256


def file_metadata(path: Path) -> dict:
    """The safetensors metadata of a 4-bit file ({} when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 0 < size < 1 << 26:
                return {}
            return json.loads(fh.read(size)).get("__metadata__") or {}
    except (OSError, ValueError):
        return {}


class Int4DecodeLinear(torch.nn.Linear):
    """An ``nn.Linear`` that decodes up to ``int8_decode.MAX_ROWS`` rows with the GGUF's 4-bit
    weights (``qweight4`` packed for the kernel, ``qsz4`` the groups' scales and zeros) and
    reads prompts (and trains) with its own weight."""

    def forward(self, x):
        import torch.nn.functional as F

        from ragqa.generators.int8_decode import MAX_ROWS

        rows = x.numel() // max(1, x.shape[-1])
        if rows > MAX_ROWS or x.dtype != self.qsz4.dtype or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        out = torch._weight_int4pack_mm_for_cpu(x.reshape(rows, x.shape[-1]), self.qweight4,
                                                GROUP, self.qsz4)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


def enable(model, path: Path, gguf_sha256: str, lib=None) -> int:
    """Gives each plain ``nn.Linear`` of ``model`` named in the 4-bit file ``path`` its 4-bit
    weights for decoding (in place): blocks of the C kernel ``lib`` (``qgemv.library()``) when
    given, else PyTorch's int4 kernel; returns how many layers were switched (0 when the file was
    written for another GGUF or no kernel is there)."""
    from safetensors import safe_open

    from ragqa.generators import qgemv

    if not is_current(path, gguf_sha256):
        return 0
    if lib is None and not hasattr(torch, "_weight_int4pack_mm_for_cpu"):
        return 0
    modules = dict(model.named_modules())
    count = 0
    with safe_open(str(path), "pt") as fh:
        keys = set(fh.keys())
        names = {key.rsplit(".", 1)[0] for key in keys}
        for name in sorted(names):
            module = modules.get(name)
            if module is None or type(module) is not torch.nn.Linear:
                continue
            dtype = module.weight.dtype
            if dtype not in (torch.bfloat16, torch.float32):
                continue
            if f"{name}.q6lo" in keys:  # Q6_K: the C kernel's 6-bit blocks, exact
                if lib is not None and qgemv.fits(module):
                    q6 = _unpack6(fh.get_tensor(f"{name}.q6lo"), fh.get_tensor(f"{name}.q6hi"))
                    if tuple(q6.shape) == tuple(module.weight.shape):
                        d = fh.get_tensor(f"{name}.d6").numpy()
                        qgemv.attach_blocks(module, qgemv.pack6(lib, q6, d, fh.get_tensor(f"{name}.sc6").numpy()), 6)
                        count += 1
                continue
            packed = fh.get_tensor(f"{name}.q")
            q = torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1)
            if tuple(q.shape) != tuple(module.weight.shape):
                continue
            scale, offset = fh.get_tensor(f"{name}.scale"), fh.get_tensor(f"{name}.offset")
            if lib is not None and qgemv.fits(module):  # this package's kernel (qgemv.py)
                qgemv.attach(module, lib, q.numpy(), scale.numpy(), offset.numpy(), bits=4)
                count += 1
                continue
            # the kernel computes (q - 8) * scale + zero
            sz = torch.stack([scale, offset + 8 * scale], dim=-1).transpose(0, 1).contiguous().to(dtype)
            module.register_buffer("qweight4", torch._convert_weight_to_int4pack_for_cpu(
                q.to(torch.int32).contiguous(), 1), persistent=False)
            module.register_buffer("qsz4", sz, persistent=False)
            module.__class__ = Int4DecodeLinear
            count += 1
    return count


def _pack6(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q [N, K] in 0..63 -> (low 4 bits two weights a byte, low nibble first; high 2 bits four
    weights a byte, first weight lowest): ``.q6lo`` / ``.q6hi``."""
    lo = (q[:, 0::2] & 0x0F) | ((q[:, 1::2] & 0x0F) << 4)
    hi = (q >> 4).reshape(q.shape[0], -1, 4)
    return (np.ascontiguousarray(lo, dtype=np.uint8),
            np.ascontiguousarray(hi[..., 0] | (hi[..., 1] << 2) | (hi[..., 2] << 4) | (hi[..., 3] << 6), dtype=np.uint8))


def _unpack6(lo: torch.Tensor, hi: torch.Tensor) -> np.ndarray:
    """``.q6lo`` / ``.q6hi`` (as ``build`` writes them) -> q [N, K] uint8 in 0..63."""
    lo, hi = lo.numpy(), hi.numpy()
    low = np.stack([lo & 0x0F, lo >> 4], axis=-1).reshape(lo.shape[0], -1)
    high = np.stack([(hi >> s) & 3 for s in (0, 2, 4, 6)], axis=-1).reshape(hi.shape[0], -1)
    return low | (high << 4)


def disable(model) -> int:
    """Back to the exact layers (drops the 4-bit weights); returns how many were switched back."""
    from ragqa.generators.int8_decode import switch_back

    return switch_back(model, Int4DecodeLinear, ("qweight4", "qsz4"))
