"""The ``prompt-tuning`` kind: a soft prompt prepended through ``inputs_embeds``.

PEFT refuses to put a prompt-tuning adapter into the same PeftModel as LoRA adapters. A soft
prompt is only a [num_virtual_tokens, hidden] matrix (``prompt_embeddings`` in
adapter_model.safetensors), so it is read once and prepended to the prompt's token embeddings,
with the attention mask extended by ones, and the base model generates from ``inputs_embeds``
with every LoRA-style adapter disabled. ``input_ids`` of the same length go along (the prompt's
tokens after placeholders for the virtual ones) so the repetition penalty sees the prompt. The
output is token-identical to greedy decoding over ``PeftModel.from_pretrained(base, dir)``'s
forward pass (checked in tests/test_generators.py, repetition penalty included); PEFT's own
``generate`` no longer is, with transformers 5.24.
"""

from __future__ import annotations

from ragqa.errors import ModelError
from ragqa.generators.registry import (ADAPTER_WEIGHTS, VariantKind, read_adapter_config,
                                       register_kind)


def read_prompt_embeddings(path, label: str):
    from safetensors.torch import load_file

    weights_file = path / ADAPTER_WEIGHTS
    if not weights_file.is_file():
        raise ModelError(f"variant {label!r}: no {ADAPTER_WEIGHTS} in {path}")
    tensors = load_file(str(weights_file))
    if "prompt_embeddings" not in tensors:
        raise ModelError(f"variant {label!r}: {ADAPTER_WEIGHTS} has no prompt_embeddings "
                         f"(found {', '.join(sorted(tensors)[:5])}); is it a prompt-tuning adapter?")
    return tensors["prompt_embeddings"]


@register_kind("prompt-tuning")
class PromptTuningKind(VariantKind):
    prompt = None  # [1, num_virtual_tokens, hidden]
    peft_type = "PROMPT_TUNING"
    prompt_cache = False  # the virtual tokens are not in the ids a kept cache is matched on
    # prompt learning trains few parameters from a poor start and needs far larger steps (the
    # prompt-tuning paper uses 0.3 with Adafactor)
    default_lr = 3e-2
    train_settings = ("num_virtual_tokens", "prompt_init_text")

    @classmethod
    def peft_config(cls, cfg, model, model_path):
        from peft import PromptTuningConfig, PromptTuningInit, TaskType

        if cfg.prompt_init_text:  # start from the embeddings of a task description
            return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens,
                                      prompt_tuning_init=PromptTuningInit.TEXT,
                                      prompt_tuning_init_text=cfg.prompt_init_text,
                                      tokenizer_name_or_path=str(model_path))
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens)

    def load(self) -> None:
        config = read_adapter_config(self.path)
        prompt = read_prompt_embeddings(self.path, self.name)
        n_virtual = int(config.get("num_virtual_tokens") or prompt.shape[0])
        n_sub = int(config.get("num_transformer_submodules") or 1)
        hidden = self.host.model.get_input_embeddings().weight.shape[1]
        if prompt.ndim != 2 or prompt.shape[1] != hidden or prompt.shape[0] != n_virtual * n_sub:
            raise ModelError(f"variant {self.name!r}: soft prompt of shape {tuple(prompt.shape)} "
                             f"does not fit this base (hidden size {hidden}); it was trained on "
                             "another base model")
        # like PEFT: the first num_virtual_tokens rows (decoder-only models use one submodule)
        self.prompt = prompt[:n_virtual].unsqueeze(0)
        self.virtual_tokens = n_virtual

    def generate(self, input_ids, attention_mask, **gen_kwargs):
        import torch

        n = self.virtual_tokens
        with self.host.base_context():
            embeds = self.host.embed(input_ids)
            embeds = torch.cat([self.prompt.to(embeds.dtype), embeds], dim=1)
            mask = torch.cat([torch.ones(1, n, dtype=attention_mask.dtype), attention_mask], dim=1)
            # input_ids aligned with inputs_embeds, so logits processors (repetition penalty)
            # see the prompt's tokens as PEFT's generate does; the virtual positions repeat the
            # prompt's first token, which adds nothing to the set of penalised tokens
            ids = torch.cat([input_ids[:, :1].expand(1, n), input_ids], dim=1)
            out = self.host.model.generate(input_ids=ids, inputs_embeds=embeds,
                                           attention_mask=mask, **gen_kwargs)
        return out[0, ids.shape[1]:]
