"""The output layer while decoding: 4-bit scores for the whole vocabulary, exact ones for the best.

The output layer is the largest single matrix a decoding step reads (Qwen2.5-Coder-1.5B: 151,936
x 1,536, 233 MB as int8, 8.7 ms of a ~50 ms token here). Here it first scores every token with
a 4-bit copy of its weight (groups of 32 with a scale and a zero, quantized from the layer's own
weight; PyTorch's int4 kernel, 3.9 ms), then recomputes the ``EXACT`` best of those scores with
the full-precision rows and puts them back. So the tokens greedy decoding or top-p sampling can
pick get exact scores; only far-off tokens keep 4-bit ones. The pick changes only if the exact
best token is not among the 4-bit scores' best ``EXACT``, which did not happen in the steps
measured (docs/answering.md "Generation speed"). Prompts (more than ``MAX_ROWS`` rows) and
training use the weight as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ragqa.generators.int8_decode import MAX_ROWS

GROUP = 32
EXACT = 64  # best 4-bit scores recomputed exactly per row


def _groups(weight: torch.Tensor):
    """Asymmetric 4-bit groups of 32 along each row (``qgemv.grouped``), a slice of rows at a time
    (float32 copies of the whole matrix are big): (q [rows, K] uint8 in 0..15, scale, low)."""
    from ragqa.generators.qgemv import grouped

    for start in range(0, weight.shape[0], 16384):
        yield grouped(weight[start:start + 16384], 15, floor=1e-8)


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4-bit groups packed for PyTorch's kernel: (weight, scales and zeros [K/32, N, 2] in the
    weight's dtype), the kernel computing ``(q - 8) * scale + zero``."""
    packed, sz = [], []
    for q, scale, lo in _groups(weight):
        packed.append(torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1))
        sz.append(torch.stack([scale, lo + 8 * scale], -1).transpose(0, 1))
    return torch.cat(packed), torch.cat(sz, 1).contiguous().to(weight.dtype)


def quantize_blocks(weight: torch.Tensor, lib) -> torch.Tensor:
    """The same 4-bit groups as the blocks of this package's kernel (``qgemv``); slices of 16384
    rows are whole tiles, so their blocks concatenate."""
    from ragqa.generators import qgemv

    return torch.cat([qgemv.pack(lib, q.numpy(), scale.numpy(), lo.numpy(), 4)
                      for q, scale, lo in _groups(weight)])


class Int4HeadLinear(torch.nn.Linear):
    """An output ``nn.Linear`` scoring up to ``MAX_ROWS`` rows with ``qhead`` / ``qhead_sz``
    (4-bit), the best ``EXACT`` scores of each row recomputed with ``weight``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(1, x.shape[-1])
        if (rows > MAX_ROWS or x.dtype != self.weight.dtype or torch.is_grad_enabled()
                or self.bias is not None):
            return F.linear(x, self.weight, self.bias)
        x2 = x.reshape(rows, x.shape[-1])
        if self.qhead_sz is None:  # the blocks of this package's kernel
            from ragqa.generators import qgemv

            scores = qgemv.matmul(qgemv.loaded(), self.qhead, 4, self.out_features, x2)
        else:
            scores = torch._weight_int4pack_mm_for_cpu(x2, self.qhead, GROUP, self.qhead_sz)
        best = best_indices(scores, min(EXACT, scores.shape[-1]))  # [rows, EXACT]
        exact = torch.bmm(self.weight[best], x2.unsqueeze(-1)).squeeze(-1)  # [rows, EXACT]
        scores.scatter_(1, best, exact.to(scores.dtype))
        return scores.reshape(*x.shape[:-1], scores.shape[-1])


def best_indices(scores: torch.Tensor, k: int, chunk: int = 64) -> torch.Tensor:
    """The indices of each row's ``k`` largest scores (in no particular order), as ``topk`` finds
    them, only faster over a vocabulary: the ``k`` best all lie in the ``k`` chunks of ``chunk``
    scores whose maxima are largest (each chunk holding one of them has a maximum at least the
    k-th best score, and at most k chunks do), so ``topk`` runs over k chunk maxima and k * chunk
    scores instead of the whole row (0.1 against 0.37 ms for 151,936 bf16 scores here)."""
    rows, n = scores.shape
    if n % chunk or n // chunk < k:
        return scores.topk(k, dim=-1).indices
    chunks = scores.view(rows, n // chunk, chunk).amax(-1).topk(k, dim=-1).indices  # [rows, k]
    candidates = (chunks.unsqueeze(-1) * chunk + torch.arange(chunk)).view(rows, k * chunk)
    return candidates.gather(1, scores.gather(1, candidates).topk(k, dim=-1).indices)


def enable(model, lib=None) -> bool:
    """Gives the model's output layer its 4-bit copy (in place), as blocks of the C kernel ``lib``
    (``qgemv.library()``) when given, else for PyTorch's kernel; False where it is no plain
    ``nn.Linear`` of bf16 / fp32 weights without bias, its width is not a multiple of 32 or its
    vocabulary of 16, or the kernel is missing."""
    head = model.get_output_embeddings()
    if (type(head) is not torch.nn.Linear or head.bias is not None or head.in_features % GROUP
            or head.out_features % 16  # the kernel packs 16 rows at a time
            or head.weight.dtype not in (torch.bfloat16, torch.float32)
            or not hasattr(torch, "_weight_int4pack_mm_for_cpu")):
        return False
    if lib is not None:
        packed, sz = quantize_blocks(head.weight, lib), None
    else:
        packed, sz = quantize(head.weight)
    head.register_buffer("qhead", packed, persistent=False)
    head.register_buffer("qhead_sz", sz, persistent=False)
    head.__class__ = Int4HeadLinear
    return True


def disable(model) -> bool:
    """Back to the exact output layer."""
    from ragqa.generators.int8_decode import switch_back

    return switch_back(model.get_output_embeddings(), Int4HeadLinear, ("qhead", "qhead_sz")) == 1
