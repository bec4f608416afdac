"""The ``lora`` kind (and every other non-prompt PEFT type PeftModel loads: ia3, loha, lokr...).

All such adapters live in ONE PeftModel wrapping the shared base module in place: the first is
attached with ``PeftModel.from_pretrained``, the next ones with ``load_adapter``, and a call
switches with ``set_adapter`` (milliseconds; the base is never reloaded or copied). Adapter names
inside PEFT are short safe ids (``v0``, ``v1``...), never substrings of PEFT's parameter
prefixes (``lora_``, ``prompt``...), which would corrupt loading.
"""

from __future__ import annotations

from ragqa.generators.registry import VariantKind, register_kind


@register_kind("lora")
class LoraKind(VariantKind):
    def load(self) -> None:
        self.host.attach_adapter(self.path, self.adapter_name, self.name)

    def activate(self) -> None:
        peft = self.host.peft
        if peft.active_adapter != self.adapter_name:
            peft.set_adapter(self.adapter_name, inference_mode=True)

    def generate(self, input_ids, attention_mask, **gen_kwargs):
        self.activate()  # cheap when the engine already did
        out = self.host.peft.generate(input_ids=input_ids, attention_mask=attention_mask,
                                      **gen_kwargs)
        return out[0, input_ids.shape[1]:]
