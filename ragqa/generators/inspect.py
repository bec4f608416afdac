"""``ragqa variants inspect``: what is inside a variant directory.

Every kind: the card, the adapter config, parameter count and size on disk. LoRA (and other
layer-injecting adapters): rank, alpha, dropout and the adapted modules. Soft prompts: for each
virtual token, the vocabulary tokens whose input embeddings are nearest by cosine similarity
(Lester et al. read soft prompts this way; they rarely decode to words, but the neighbours show
what the prompt drifted towards from its init text).
"""

from __future__ import annotations

from pathlib import Path

from ragqa.errors import ModelError
from ragqa.generators.registry import ADAPTER_WEIGHTS, Card, read_adapter_config


def _weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    path = directory / ADAPTER_WEIGHTS
    if not path.is_file():
        raise ModelError(f"variant {directory}: no {ADAPTER_WEIGHTS}")
    return load_file(str(path))


def _embedding_matrix(base_dir: Path):
    """The base model's input embedding matrix, read from its safetensors (no model load)."""
    from safetensors import safe_open

    files = sorted(Path(base_dir).glob("*.safetensors"))
    for f in files:
        with safe_open(str(f), "pt") as fh:
            for key in fh.keys():
                if key.endswith("embed_tokens.weight") or key.endswith("wte.weight") or \
                        key.endswith("word_embeddings.weight"):
                    return fh.get_tensor(key)
    raise ModelError(f"model {base_dir}: no input embedding matrix found in its safetensors files")


def nearest_tokens(prompt, embeddings, tokenizer, top: int = 5) -> list[list[tuple[str, float]]]:
    """For each row of ``prompt`` [n, hidden], the ``top`` (token, cosine) nearest rows of
    ``embeddings`` [vocab, hidden]."""
    import torch

    p = torch.nn.functional.normalize(prompt.float(), dim=-1)
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    sims = p @ e.T
    values, indices = sims.topk(top, dim=-1)
    return [[(tokenizer.convert_ids_to_tokens(int(i)), round(float(v), 3)) for v, i in zip(vs, ids)]
            for vs, ids in zip(values, indices)]


def inspect_variant(directory: Path, base_dir: Path | None = None, top: int = 5) -> dict:
    directory = Path(directory)
    card = Card.load(directory)
    config = read_adapter_config(directory)
    weights = _weights(directory)
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    out = {"name": card.name, "kind": card.kind, "base_model": card.base_model,
           "base_fingerprint": card.base_fingerprint, "template": card.template, "path": str(directory),
           "parameters": int(sum(t.numel() for t in weights.values())), "size_bytes": size,
           "adapter_bytes": (directory / ADAPTER_WEIGHTS).stat().st_size,
           "metrics": card.metrics, "hyperparameters": card.hyperparameters, "command": card.command}
    if card.kind == "prompt-tuning":
        from ragqa.generators.prompt_tuning import read_prompt_embeddings

        prompt = read_prompt_embeddings(directory, card.name)
        out["num_virtual_tokens"] = int(config.get("num_virtual_tokens") or prompt.shape[0])
        out["init_text"] = config.get("prompt_tuning_init_text")
        if base_dir is not None:
            from ragqa.generators.models import load_tokenizer

            emb = _embedding_matrix(base_dir)
            if emb.shape[1] != prompt.shape[1]:
                raise ModelError(f"variant {card.name!r}: soft prompt width {prompt.shape[1]} does not "
                                 f"match the base model's embeddings ({emb.shape[1]}); give its own base")
            out["nearest_tokens"] = nearest_tokens(prompt[:out["num_virtual_tokens"]], emb,
                                                   load_tokenizer(base_dir), top)
    elif card.kind == "prefix-tuning":
        out["num_virtual_tokens"] = int(config.get("num_virtual_tokens") or 0)
    else:
        modules: dict[str, int] = {}
        for key, t in weights.items():
            if ".lora_A." in key:
                modules[key.split(".lora_A.")[0].removeprefix("base_model.model.")] = int(t.shape[0])
        out.update(r=config.get("r"), lora_alpha=config.get("lora_alpha"),
                   lora_dropout=config.get("lora_dropout"), target_modules=config.get("target_modules"),
                   adapted_modules=len(modules), ranks=sorted(set(modules.values())))
    return out


def format_inspection(info: dict) -> str:
    lines = [f"{info['name']}: {info['kind']} on {info['base_model']} (fingerprint "
             f"{info['base_fingerprint'] or '?'}), template {info['template'] or '?'}",
             f"  {info['parameters']:,} parameters, {info['adapter_bytes'] / 1024:.1f} KiB adapter, "
             f"{info['size_bytes'] / 1024:.1f} KiB on disk"]
    if info["kind"] == "lora" or "r" in info:
        lines.append(f"  rank {info.get('r')} (ranks found: {info.get('ranks')}), alpha {info.get('lora_alpha')}, "
                     f"dropout {info.get('lora_dropout')}, {info.get('adapted_modules')} modules: "
                     f"{info.get('target_modules')}")
    if "num_virtual_tokens" in info:
        lines.append(f"  {info['num_virtual_tokens']} virtual tokens"
                     + (f", init text {info['init_text']!r}" if info.get("init_text") else ""))
    for i, near in enumerate(info.get("nearest_tokens") or []):
        lines.append(f"  v{i:<3d} " + "  ".join(f"{t!r} {s:.2f}" for t, s in near))
    val = (info.get("metrics") or {}).get("validation")
    if val:
        lines.append("  validation: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                   for k, v in val.items()))
    if info.get("command"):
        lines.append(f"  made with: {info['command']}")
    return "\n".join(lines)
