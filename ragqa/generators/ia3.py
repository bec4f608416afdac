"""The ``ia3`` kind: learned vectors that rescale activations (IA3, an additive PEFT class).

IA3 learns one vector per target layer: it multiplies the outputs of the attention projections
(``k_proj`` / ``v_proj`` and the like) and the inputs of the feed-forward projection
(``down_proj``); everything else is the base model. PEFT refuses to hold an IA3 adapter in the
PeftModel that holds the LoRA adapters ("Cannot combine adapters with different peft types"), so
this kind does not go through PEFT when serving: its vectors are read once from
``adapter_model.safetensors`` and applied by forward hooks on the shared module's layers, put on
for one generation (inside ``base_context()``: no LoRA adapter underneath) and taken off after
it. The hooks work on whatever the layer is (its int4 / int8 decoding included), and switching
costs nothing. Greedy output equals a PeftModel of the adapter (tests/test_kinds.py).
"""

from __future__ import annotations

import contextlib

from ragqa.errors import ModelError
from ragqa.generators.registry import VariantKind, read_adapter_config, register_kind

PREFIX = "base_model.model."


def adapter_tensors(path, label: str, suffix: str) -> dict:
    """``{module name in the base model: tensor}`` for the adapter file's keys ending in
    ``suffix`` (PEFT saves them as ``base_model.model.<module>.<suffix>``)."""
    from safetensors.torch import load_file

    from ragqa.generators.registry import ADAPTER_WEIGHTS

    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ModelError(f"variant {label!r}: no {ADAPTER_WEIGHTS} in {path}")
    out = {}
    for key, tensor in load_file(str(weights)).items():
        if not key.endswith("." + suffix):
            raise ModelError(f"variant {label!r}: {ADAPTER_WEIGHTS} holds {key!r}, which is not "
                             f"an {suffix} tensor")
        name = key[:-len(suffix) - 1]
        out[name[len(PREFIX):] if name.startswith(PREFIX) else name] = tensor
    if not out:
        raise ModelError(f"variant {label!r}: {ADAPTER_WEIGHTS} is empty")
    return out


def find_module(model, name: str, label: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ModelError(f"variant {label!r}: the base model has no layer {name!r}; the variant "
                         "was trained on another base model") from None


@register_kind("ia3")
class IA3Kind(VariantKind):
    peft_type = "IA3"
    default_lr = 3e-3  # the IA3 paper's (T-Few) learning rate
    train_settings = ("target_modules",)

    @classmethod
    def peft_config(cls, cfg, model, model_path):
        from peft import IA3Config, TaskType

        if cfg.target_modules:  # down_proj-like layers are scaled on their input, as PEFT does
            feedforward = [t for t in cfg.target_modules if "down" in t or "fc2" in t or "wo" == t]
            return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=cfg.target_modules,
                             feedforward_modules=feedforward)
        return IA3Config(task_type=TaskType.CAUSAL_LM)  # PEFT's layers for the architecture

    def load(self) -> None:
        config = read_adapter_config(self.path)
        feedforward = config.get("feedforward_modules") or []
        feedforward = [feedforward] if isinstance(feedforward, str) else list(feedforward)
        model = self.host.model
        self.scales = []  # (module, vector, scales the input?)
        for name, vector in adapter_tensors(self.path, self.name, "ia3_l").items():
            module = find_module(model, name, self.name)
            on_input = any(name == f or name.endswith("." + f) for f in feedforward)
            base = getattr(module, "base_layer", module)  # a LoRA wrapper's own layer
            width = base.in_features if on_input else base.out_features
            if vector.numel() != width:
                raise ModelError(f"variant {self.name!r}: its {name} vector has {vector.numel()} "
                                 f"values, the layer {width}; it was trained on another base model")
            dtype = base.weight.dtype
            self.scales.append((module, vector.flatten().to(dtype), on_input))

    @contextlib.contextmanager
    def applied(self):
        handles = []
        try:
            for module, vector, on_input in self.scales:
                if on_input:
                    handles.append(module.register_forward_pre_hook(
                        lambda m, args, v=vector: (args[0] * v.to(args[0].dtype), *args[1:])))
                else:
                    handles.append(module.register_forward_hook(
                        lambda m, args, out, v=vector: out * v.to(out.dtype)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def generate(self, input_ids, attention_mask, **gen_kwargs):
        with self.host.base_context(), self.applied():
            out = self.host.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                           **gen_kwargs)
        return out[0, input_ids.shape[1]:]
