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
    prompt_cache = False  # the virtual tokens are not in the ids a kept cache is matched on
    default_lr = 5e-3
    train_settings = ("num_virtual_tokens", "prefix_projection", "prefix_init_text")

    @classmethod
    def peft_config(cls, cfg, model, model_path):
        from peft import PrefixTuningConfig, TaskType

        # prefix_projection: the prefix is a two-layer MLP's output over learned embeddings while
        # training (Li & Liang's reparameterisation); PEFT saves the MLP's output, so it is served
        # like any prefix
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens,
                                  prefix_projection=bool(cfg.prefix_projection),
                                  encoder_hidden_size=model.config.hidden_size)

    @classmethod
    def init_trainable(cls, cfg, peft_model, tokenizer) -> None:
        """With ``prefix_init_text``: the prefix starts as the keys and values the base model
        computes for that text (Li & Liang's init from real activations of task text), so before
        any step the variant behaves as if the text preceded every prompt."""
        if not cfg.prefix_init_text:
            return
        name = peft_model.active_adapter
        config = peft_model.peft_config[name]
        weight = activation_prefix(peft_model.get_base_model(), tokenizer, cfg.prefix_init_text,
                                   config.num_virtual_tokens)
        embedding = peft_model.prompt_encoder[name].embedding.weight
        if weight.shape != embedding.shape:
            from ragqa.errors import ConfigError

            raise ConfigError(f"prefix init: the model's keys and values give {tuple(weight.shape)}, "
                              f"PEFT's prefix is {tuple(embedding.shape)}; train without --prefix-init-text")
        import torch

        with torch.no_grad():
            embedding.copy_(weight.to(embedding.dtype))

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


def init_ids(tokenizer, text: str, n: int) -> list[int]:
    """``n`` token ids of ``text`` (repeated when it is shorter, cut when longer)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        from ragqa.errors import ConfigError

        raise ConfigError("--prefix-init-text is empty after tokenizing; give some text")
    return (ids * (n // len(ids) + 1))[:n]


def activation_prefix(model, tokenizer, text: str, n: int):
    """[n, layers * 2 * kv_dim]: the base model's cached keys and values of ``text`` at every
    layer, in PEFT's prefix layout (per virtual token: layer 0 keys, layer 0 values, layer 1 keys,
    ...; each [kv heads x head dim])."""
    import torch

    ids = torch.tensor([init_ids(tokenizer, text, n)])
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    parts = []
    for layer in range(model.config.num_hidden_layers):
        if hasattr(cache, "layers"):
            keys, values = cache.layers[layer].keys, cache.layers[layer].values
        else:
            keys, values = cache[layer]
        for t in (keys, values):  # [1, kv heads, n, head dim] -> [n, kv heads x head dim]
            parts.append(t[0].permute(1, 0, 2).reshape(n, -1))
    return torch.cat(parts, dim=1)
