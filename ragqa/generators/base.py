"""The ``base`` kind: the base model with every adapter disabled.

When a PeftModel wraps the module (after the first LoRA-style variant), generation runs inside
``peft_model.disable_adapter()``: the LoRA layers call their base layer only, which gives the
plain model's output bit for bit.
"""

from __future__ import annotations

from ragqa.generators.registry import VariantKind, register_kind


@register_kind("base")
class BaseKind(VariantKind):
    def generate(self, input_ids, attention_mask, **gen_kwargs):
        with self.host.base_context():
            out = self.host.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                           **gen_kwargs)
        return out[0, input_ids.shape[1]:]
