"""Decoding float32 models with fbgemm's dynamic int8 kernel.

On CPUs without native bf16 (AVX2 only) the generator runs in float32, and there PyTorch's
weight-only kernels are slow: ``torch._weight_int4pack_mm_for_cpu`` and
``torch._weight_int8pack_mm`` took 19.2 ms and 12.8 ms for one row through Qwen2.5-Coder-1.5B's
8960 x 1536 ``up_proj`` with float32 input, against 3.3 ms for the plain float32 product and
0.53 ms for fbgemm's ``quantized::linear_dynamic`` (2 threads, AMD EPYC with AVX2 only). With 4-bit
and int8 decoding on, the 1.5B model decoded at 0.5 tokens/s on that machine.

So on a float32 model each plain ``nn.Linear`` (the output layer too) keeps its weight for
prompts (more than one row: the float32 product, exact) and decodes one row at a time with an
int8 copy (per output channel, symmetric, packed once for fbgemm); the row itself is quantized to
8 bits when it is multiplied (one scale per row: "dynamic" quantization, with fbgemm's
``reduce_range`` against overflow on CPUs without VNNI). Quantizing whole prompts this way (one
scale for every token of a layer's input) was measured and not used: the next-token choice agreed
with the exact model's on 58% of 200 prompt positions (85% with ``down_proj`` left exact).

Like the other decoding layers the class is switched in place, so PEFT wraps it for LoRA and every
variant kind decodes the same way; training (autograd on) always uses the weight.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


def available() -> bool:
    """Whether this PyTorch build has fbgemm's int8 kernels (x86)."""
    engines = getattr(torch.backends.quantized, "supported_engines", [])
    return "fbgemm" in engines and hasattr(torch.ops.quantized, "linear_dynamic")


class DynamicInt8DecodeLinear(torch.nn.Linear):
    """An ``nn.Linear`` that multiplies a single float32 row (a decoding step) with ``dyn_packed``,
    fbgemm's packed int8 copy of its weight (and bias)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.numel() != x.shape[-1] or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        out = torch.ops.quantized.linear_dynamic(x.reshape(1, x.shape[-1]), self.dyn_packed, True)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def pack(weight: torch.Tensor, bias: torch.Tensor | None):
    """fbgemm's packed int8 weight: the int8 copy ``int8_decode.quantize`` makes (symmetric per
    output channel), as a quantized tensor the kernel takes."""
    from ragqa.generators.int8_decode import quantize

    q, scale = quantize(weight)
    with warnings.catch_warnings():  # quantized tensors are deprecated for new code; the kernel is not
        warnings.simplefilter("ignore", UserWarning)
        qt = torch._make_per_channel_quantized_tensor(
            q, scale.double(), torch.zeros(q.shape[0], dtype=torch.long), 0)
    return torch.ops.quantized.linear_prepack(qt, None if bias is None else bias.detach().float())


def enable(model: torch.nn.Module) -> int:
    """Gives every plain float32 ``nn.Linear`` of ``model`` an fbgemm int8 copy for decoding (in
    place); returns how many were switched (0 where fbgemm is missing)."""
    if not available():
        return 0
    count = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear or module.weight.dtype != torch.float32:
            continue
        module.dyn_packed = pack(module.weight, module.bias)
        module.__class__ = DynamicInt8DecodeLinear
        count += 1
    return count


def disable(model: torch.nn.Module) -> int:
    """Back to the exact layers (drops the int8 copies); returns how many were switched back."""
    from ragqa.generators.int8_decode import switch_back

    return switch_back(model, DynamicInt8DecodeLinear, ("dyn_packed",))
