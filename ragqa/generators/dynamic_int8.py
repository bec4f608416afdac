"""Decoding float32 models with fbgemm's dynamic int8 kernel.

On CPUs without native bf16 (AVX2 only) the generator runs in float32, and there PyTorch's
weight-only kernels are slow: ``torch._weight_int4pack_mm_for_cpu`` and
``torch._weight_int8pack_mm`` took 19.2 ms and 12.8 ms for one row through Qwen2.5-Coder-1.5B's
8960 x 1536 ``up_proj`` with float32 input, against 3.3 ms for the plain float32 product and
0.53 ms for fbgemm's ``quantized::linear_dynamic`` (2 threads, AMD EPYC with AVX2 only). With 4-bit
and int8 decoding on, the 1.5B model decoded at 0.5 tokens/s on that machine.

So on a float32 model each plain ``nn.Linear`` (the output layer too) keeps its weight (for
training, and for prompts unless ``prompts`` is on) and decodes one row at a time with an
int8 copy (per output channel, symmetric, packed once for fbgemm); the row itself is quantized to
8 bits when it is multiplied (one scale per row: "dynamic" quantization, with fbgemm's
``reduce_range`` against overflow on CPUs without VNNI).

With ``prompts`` on, prompts (more than one row) go through the same kernel too, with one scale
per row: each row is divided by its largest magnitude before fbgemm quantizes the whole input with
one scale, and the product multiplied back, so a token with massive activations no longer coarsens
every other token's 8 bits. To give rows 8 bits without overflowing the AVX2 kernel's 16-bit pair
sums, the weights are then 7-bit (|q| <= 63) and ``reduce_range`` is off. ``down_proj`` layers
(names in ``SEGMENTED_PROMPT_LAYERS``), whose input (the product of the gate and the up projection)
has the widest outliers, read prompts in segments of ``SEGMENT`` inputs, each with its own scale
per row (one fbgemm product per segment, summed), so an outlier coarsens only its segment. On two
prompts of the 1.5B model (474 and 730 tokens; the output layer exact) the next-token choice agreed
with the exact model's on 95.8% / 95.5% of positions (KL 0.013 / 0.010) this way, against 95.5% / 95.2%
(KL 0.012 / 0.008) with ``down_proj`` reading prompts in float32 (the rule before) and 93.6% /
93.3% with one scale per row; bf16 weights and inputs agree on 98.5%.
docs/answering.md says what it costs and gains end to end.

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


SEGMENTED_PROMPT_LAYERS = ("down_proj",)  # prompts in segments of SEGMENT inputs (see above)
SEGMENT = 320
# the weights' largest |q| for fbgemm's reduce_range: 7-bit rows take 8-bit weights, 8-bit rows
# 7-bit ones (the AVX2 kernel's 16-bit pair sums cannot overflow either way)
_WEIGHT_QMAX = {True: 127, False: 63}


class DynamicInt8DecodeLinear(torch.nn.Linear):
    """An ``nn.Linear`` that multiplies float32 rows (a decoding step; with ``dyn_prompts`` any
    number of rows) with ``dyn_packed``, fbgemm's packed int8 copy of its weight, adding the bias
    after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(1, x.shape[-1])
        if x.dtype != torch.float32 or torch.is_grad_enabled() or rows == 0 or (rows > 1 and not self.dyn_prompts):
            return F.linear(x, self.weight, self.bias)
        return product(self, x)


def product(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``x`` (float32, no autograd) through the module's ``dyn_packed`` copy (or its
    ``dyn_segments``, for prompts), plus its bias."""
    rows = x.numel() // max(1, x.shape[-1])
    x2 = x.reshape(rows, x.shape[-1])
    segments = getattr(module, "dyn_segments", None)
    if rows == 1 and hasattr(module, "dyn_packed"):  # one row: fbgemm's one scale is the row's own
        out = torch.ops.quantized.linear_dynamic(x2, module.dyn_packed, module.dyn_reduce_range)
    elif segments is not None:  # a scale per row and segment of inputs, the segments' products summed
        out = None
        for start, stop, packed in segments:
            y = _row_scaled(x2[:, start:stop], packed, False)
            out = y if out is None else out.add_(y)
    else:
        out = _row_scaled(x2, module.dyn_packed, module.dyn_reduce_range)
    if module.bias is not None:
        out = out.add_(module.bias)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _row_scaled(x2: torch.Tensor, packed, reduce_range: bool) -> torch.Tensor:
    """fbgemm's product with a scale per row: rows divided by their largest magnitude, the
    product multiplied back."""
    peak = x2.abs().amax(dim=-1, keepdim=True).clamp_min_(1e-30)
    return torch.ops.quantized.linear_dynamic(x2 / peak, packed, reduce_range).mul_(peak)


def pack(weight: torch.Tensor, qmax: int = 127):
    """fbgemm's packed int8 weight (no bias): the int8 copy ``int8_decode.quantize`` makes
    (symmetric per output channel, |q| <= ``qmax``), as a quantized tensor the kernel takes."""
    from ragqa.generators.int8_decode import quantize

    q, scale = quantize(weight, qmax)
    with warnings.catch_warnings():  # quantized tensors are deprecated for new code; the kernel is not
        warnings.simplefilter("ignore", UserWarning)
        qt = torch._make_per_channel_quantized_tensor(
            q, scale.double(), torch.zeros(q.shape[0], dtype=torch.long), 0)
    return torch.ops.quantized.linear_prepack(qt, None)


def pack_segments(weight: torch.Tensor, qmax: int = 63) -> list:
    """[(first input, end, fbgemm's packed copy of those columns)], ``SEGMENT`` inputs each (the
    last may be shorter), for prompts with a scale per row and segment."""
    k = weight.shape[1]
    return [(a, min(a + SEGMENT, k), pack(weight[:, a:min(a + SEGMENT, k)].contiguous(), qmax))
            for a in range(0, k, SEGMENT)]


def enable(model: torch.nn.Module, prompts: bool = False) -> int:
    """Gives every plain float32 ``nn.Linear`` of ``model`` an fbgemm int8 copy for decoding and,
    with ``prompts``, for reading prompts (``SEGMENTED_PROMPT_LAYERS`` in segments), in place;
    returns how many were switched (0 where fbgemm is missing)."""
    if not available():
        return 0
    count = 0
    for name, module in model.named_modules():
        if type(module) is not torch.nn.Linear or module.weight.dtype != torch.float32:
            continue
        module.dyn_reduce_range = not prompts  # 8-bit prompt rows
        module.dyn_packed = pack(module.weight, _WEIGHT_QMAX[module.dyn_reduce_range])
        module.dyn_prompts = bool(prompts)
        if prompts and name.endswith(SEGMENTED_PROMPT_LAYERS):
            module.dyn_segments = pack_segments(module.weight, _WEIGHT_QMAX[False])
        module.__class__ = DynamicInt8DecodeLinear
        count += 1
    return count


def enable_prompts(model: torch.nn.Module) -> int:
    """Where the decoding steps have another kernel (``qgemv``): gives each float32 linear layer
    that kernel took, but the output layer (which scores one row), an fbgemm copy for prompts only
    (8-bit rows, 7-bit weights; ``SEGMENTED_PROMPT_LAYERS`` in segments); returns how many."""
    from ragqa.generators.qgemv import QgemvLinear

    if not available():
        return 0
    head = model.get_output_embeddings()
    count = 0
    for name, module in model.named_modules():
        if type(module) is not QgemvLinear or module.weight.dtype != torch.float32 or module is head:
            continue
        module.dyn_reduce_range = False
        if name.endswith(SEGMENTED_PROMPT_LAYERS):
            module.dyn_segments = pack_segments(module.weight, _WEIGHT_QMAX[False])
        else:
            module.dyn_packed = pack(module.weight, _WEIGHT_QMAX[False])
        module.dyn_prompts = True
        count += 1
    return count


COPIES = ("dyn_packed", "dyn_segments", "dyn_reduce_range", "dyn_prompts")  # what enable* attach


def drop_copies(module: torch.nn.Module) -> None:
    """Removes the fbgemm copies ``enable`` / ``enable_prompts`` attached to ``module``."""
    for name in COPIES:
        if hasattr(module, name):
            delattr(module, name)


def disable(model: torch.nn.Module) -> int:
    """Back to the exact layers (drops the int8 copies); returns how many were switched back."""
    from ragqa.generators.int8_decode import switch_back

    for module in model.modules():
        if type(module) is DynamicInt8DecodeLinear:
            drop_copies(module)
    return switch_back(model, DynamicInt8DecodeLinear, ())
