"""The ``prefix-tuning`` kind: a prompt-learning PeftModel of its own around the SAME module.

PEFT cannot mix prefix tuning with LoRA in one PeftModel, and a prefix is per-layer key/value
state whose exact injection (cache type, positions, masks) is PEFT's business. So each
prefix-tuning variant gets its own ``PeftModel.from_pretrained(host.model, dir)``: a prompt
learning PeftModel injects no layers, it only holds the prefix and wraps the shared base module
(no weight is copied), and it runs inside the LoRA PeftModel's ``disable_adapter()`` so no LoRA
adapter is active underneath. Greedy output equals a step-by-step greedy loop over the
PeftModel's full forward pass, the pass training optimises (tests).
"""

from __future__ import annotations

import warnings

from ragqa.generators.peft_compat import fix_prompt_learning_generation
from ragqa.generators.registry import VariantKind, read_adapter_config, register_kind


@register_kind("prefix-tuning")
class PrefixTuningKind(VariantKind):
    peft_type = "PREFIX_TUNING"
    default_lr = 5e-3
    train_settings = ("num_virtual_tokens",)

    @classmethod
    def peft_config(cls, cfg, model, model_path):
        from peft import PrefixTuningConfig, TaskType

        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens)

    def load(self) -> None:
        from peft import PeftModel

        config = read_adapter_config(self.path)
        self.virtual_tokens = int(config.get("num_virtual_tokens") or 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.peft = PeftModel.from_pretrained(self.host.model, str(self.path),
                                                  adapter_name=self.adapter_name,
                                                  is_trainable=False)
        self.peft.eval()
        fix_prompt_learning_generation(self.peft)  # transformers >= 5.24: see peft_compat

    def generate(self, input_ids, attention_mask, **gen_kwargs):
        with self.host.base_context():
            out = self.peft.generate(input_ids=input_ids, attention_mask=attention_mask,
                                     **gen_kwargs)
        return out[0, input_ids.shape[1]:]
