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
rounding of about 4% of each weight. Tensors of other types (Q6_K: Qwen's output layer and half
of ``ffn_down`` / ``attn_v``) keep the int8 copy.

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
FORMAT = 1
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


def _matching(blocks, weight: np.ndarray, config):
    """The blocks in the weight's row order when they dequantize to it (to bf16 rounding), else
    None (the layer then decodes with int8)."""
    q, scale, offset = blocks
    rows, k = q.shape
    tolerance = 2 ** -7 * float(np.abs(weight).max()) + 1e-6  # bf16 keeps 8 bits of each value
    for order in _row_orders(rows, config):
        qq, ss, oo = (q, scale, offset) if order is None else (q[order], scale[order], offset[order])
        probe = slice(0, rows, max(1, rows // 64))  # 64 rows say whether the order is right
        deq = (qq[probe].reshape(-1, k // GROUP, GROUP) * ss[probe][..., None]
               + oo[probe][..., None]).reshape(-1, k)
        if np.abs(deq - weight[probe]).max() <= tolerance:
            deq = (qq.reshape(rows, -1, GROUP) * ss[..., None] + oo[..., None]).reshape(rows, k)
            if np.abs(deq - weight).max() <= tolerance:
                return qq, ss, oo
    return None


def build(gguf_file: Path, model, out: Path, *, gguf_sha256: str,
          status: Callable[[str], None] | None = None) -> int:
    """Reads every 4-bit linear layer of ``gguf_file`` that matches ``model``'s weights into
    ``out`` (safetensors: ``<module>.q`` two weights a byte, low nibble first, ``.scale`` and
    ``.offset`` float32 per group of 32); written to a temporary file and renamed into place.
    Returns the number of layers written."""
    import gguf
    from safetensors.numpy import save_file

    from ragqa.files import publish

    reader = gguf.GGUFReader(str(gguf_file))
    modules = dict(model.named_modules())
    tensors: dict[str, np.ndarray] = {}
    quantized = [t for t in reader.tensors if module_name(t.name) in modules]
    for i, tensor in enumerate(quantized):
        name = module_name(tensor.name)
        module = modules[name]
        if not isinstance(module, torch.nn.Linear) or module.in_features % GROUP or module.out_features % 16:
            continue  # the kernel takes groups of 32 along a row and packs 16 rows at a time
        if status is not None and i % 16 == 0:
            status(f"reading the GGUF's 4-bit weights for decoding (once): {i}/{len(quantized)} layers")
        blocks = tensor_blocks(tensor)
        if blocks is None:
            continue
        weight = module.weight.detach().float().numpy()
        if blocks[0].shape != weight.shape:
            continue
        found = _matching(blocks, weight, model.config)
        if found is None:
            continue
        q, scale, offset = found
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
    return len(tensors) // 3


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
        names = {key.rsplit(".", 1)[0] for key in fh.keys()}
        for name in sorted(names):
            module = modules.get(name)
            if module is None or type(module) is not torch.nn.Linear:
                continue
            dtype = module.weight.dtype
            if dtype not in (torch.bfloat16, torch.float32):
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


def disable(model) -> int:
    """Back to the exact layers (drops the 4-bit weights); returns how many were switched back."""
    from ragqa.generators.int8_decode import switch_back

    return switch_back(model, Int4DecodeLinear, ("qweight4", "qsz4"))
