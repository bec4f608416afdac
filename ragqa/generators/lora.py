"""The ``lora`` kind (and the other non-prompt PEFT types PeftModel loads: loha, lokr...).

All such adapters live in ONE PeftModel wrapping the shared base module in place: the first is
attached with ``PeftModel.from_pretrained``, the next ones with ``load_adapter``, and a call
switches with ``set_adapter`` (milliseconds; the base is never reloaded or copied). Adapter names
inside PEFT are short safe ids (``v0``, ``v1``...), never substrings of PEFT's parameter
prefixes (``lora_``, ``prompt``...), which would corrupt loading.

PEFT keeps one adapter type per PeftModel ("Cannot combine adapters with different peft types";
checked with PEFT 0.21 on a tiny Llama), so IA3 and LN tuning have kinds of their own that do
not go through PEFT when serving (ia3.py, ln_tuning.py).
"""

from __future__ import annotations

from ragqa.generators.registry import VariantKind, register_kind


# attention projections per architecture (config.model_type); anything else: "all-linear"
LORA_TARGETS = {
    "llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"], "qwen3": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"], "gemma": ["q_proj", "v_proj"], "gemma3_text": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"], "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"], "opt": ["q_proj", "v_proj"],
}


@register_kind("lora")
class LoraKind(VariantKind):
    peft_type = "LORA"
    default_lr = 2e-4  # LoRA's usual 1e-4..3e-4
    train_settings = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "qlora")

    @classmethod
    def peft_config(cls, cfg, model, model_path):
        from peft import LoraConfig, TaskType

        targets = cfg.target_modules or LORA_TARGETS.get(model.config.model_type, "all-linear")
        return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, task_type=TaskType.CAUSAL_LM)

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
