"""Decoding with int8 weights, prompt reading with the model's own.

On these CPUs a decoding step (one new token, one row per linear layer) is bound by the bytes of
weight it reads, and PyTorch's bf16 matrix-vector product reads them slowly: for
Qwen2.5-Coder-1.5B the linear layers alone took 235 ms per token (13 GB/s), while
``torch._weight_int8pack_mm`` over an int8 copy of the same weights (per-output-channel scales)
took 69 ms. Reading a prompt is a matrix-matrix product, where the bf16 kernel is 2.5x faster
than the int8 one. So each ``nn.Linear`` keeps its weight for inputs of more than ``MAX_ROWS``
rows (the prompt) and multiplies up to ``MAX_ROWS`` rows (decoding) with the int8 copy, at the
cost of that copy in memory (half the bf16 weights). The layers stay ``nn.Linear`` (the class is
switched in place), so PEFT wraps them for LoRA as before and every variant kind decodes the same
way. The int8 weights change the logits slightly, so greedy text can differ from the
full-precision model's at near ties: ``decode_int8 = false`` gives the exact model
(docs/answering.md "Generation speed").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_ROWS = 8  # rows up to which the int8 kernel was faster here (1: 0.10 vs 0.43 ms; 16: 0.78 vs 0.57 ms)


class Int8DecodeLinear(torch.nn.Linear):
    """An ``nn.Linear`` that also holds ``qweight`` (int8) and ``qscale`` (per output row)."""

    qweight: torch.Tensor
    qscale: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(1, x.shape[-1])
        if rows > MAX_ROWS or x.dtype != self.qscale.dtype or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        out = torch._weight_int8pack_mm(x.reshape(rows, x.shape[-1]), self.qweight, self.qscale)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])


def quantize(weight: torch.Tensor, qmax: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 (values in [-qmax, qmax]): (int8 weight, scale in the
    weight's dtype)."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / qmax).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-qmax, qmax).to(torch.int8)
    return q.contiguous(), scale.to(weight.dtype)


def enable(model: torch.nn.Module) -> int:
    """Gives every plain ``nn.Linear`` of ``model`` an int8 copy for decoding (in place); returns
    how many layers were converted (0 where the kernel does not run, e.g. float16 on this CPU)."""
    count = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear or module.weight.dtype not in (torch.bfloat16, torch.float32):
            continue
        q, scale = quantize(module.weight)
        try:  # the kernel may refuse a shape or dtype on some builds: then that layer stays as it is
            torch._weight_int8pack_mm(torch.zeros(1, module.in_features, dtype=scale.dtype), q, scale)
        except RuntimeError:
            continue
        module.register_buffer("qweight", q, persistent=False)
        module.register_buffer("qscale", scale, persistent=False)
        module.__class__ = Int8DecodeLinear
        count += 1
    return count


def switch_back(model: torch.nn.Module, cls: type, buffers: tuple[str, ...]) -> int:
    """Every layer of class ``cls`` back to a plain ``nn.Linear``, its ``buffers`` dropped; returns
    how many were switched back (the decoding layers of this module, gguf_int4 and head_int4)."""
    count = 0
    for module in model.modules():
        if type(module) is cls:
            for name in buffers:
                delattr(module, name)
            module.__class__ = torch.nn.Linear
            count += 1
    return count


def disable(model: torch.nn.Module) -> int:
    """Back to the exact layers (drops the int8 copies); returns how many were switched back."""
    return switch_back(model, Int8DecodeLinear, ("qweight", "qscale"))
