"""The ``ln-tuning`` kind: trained copies of the normalisation layers (a selective PEFT class).

LayerNorm tuning trains only the weights of the model's norm layers (RMSNorm here: a vector of
hidden size each, 0.03% of SmolLM2's weights) and leaves every other weight as it is. PEFT refuses
to hold it in the PeftModel that holds the LoRA adapters, and serving needs no PEFT at all: the
trained vectors are read once from ``adapter_model.safetensors`` and put in place of the norms'
own weights for one generation (inside ``base_context()``: no LoRA adapter underneath), then the
base weights are put back. Switching swaps a few dozen tensor references; nothing is copied.
Greedy output equals a PeftModel of the adapter (tests/test_kinds.py).
"""

from __future__ import annotations

import contextlib

from ragqa.errors import ModelError
from ragqa.generators.ia3 import adapter_tensors, find_module
from ragqa.generators.registry import VariantKind, register_kind

# the norms of a decoder layer and the final one (llama, qwen2, mistral, gemma layouts)
LN_TARGETS = ["input_layernorm", "post_attention_layernorm", "norm"]


@register_kind("ln-tuning")
class LNTuningKind(VariantKind):
    peft_type = "LN_TUNING"
    default_lr = 1e-3
    train_settings = ("target_modules",)

    @classmethod
    def peft_config(cls, cfg, model, model_path):
        from peft import LNTuningConfig, TaskType

        return LNTuningConfig(task_type=TaskType.CAUSAL_LM,
                              target_modules=cfg.target_modules or LN_TARGETS)

    def load(self) -> None:
        import torch

        model = self.host.model
        self.swaps = []  # (module, trained weight)
        for name, tensor in adapter_tensors(self.path, self.name, "ln_tuning_layers.weight").items():
            module = find_module(model, name, self.name)
            own = getattr(module, "weight", None)
            if not isinstance(own, torch.Tensor) or own.shape != tensor.shape:
                raise ModelError(f"variant {self.name!r}: its {name} weight has shape "
                                 f"{tuple(tensor.shape)}, the layer {tuple(own.shape) if own is not None else 'none'}; "
                                 "it was trained on another base model")
            self.swaps.append((module, torch.nn.Parameter(tensor.to(own.dtype), requires_grad=False)))

    @contextlib.contextmanager
    def applied(self):
        saved = []
        try:
            for module, weight in self.swaps:
                saved.append((module, module.weight))
                module.weight = weight
            yield
        finally:
            for module, weight in saved:
                module.weight = weight

    def generate(self, input_ids, attention_mask, **gen_kwargs):
        with self.host.base_context(), self.applied():
            out = self.host.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                           **gen_kwargs)
        return out[0, input_ids.shape[1]:]
