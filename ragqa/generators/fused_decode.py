"""Decoding steps without transformers' per-layer Python: whole layers in C where they are plain.

A decoding step of Qwen2.5-Coder-1.5B took ~53 ms here, of which the C kernel's products were
~31 ms; the rest was ~1,100 small PyTorch operations between them (norms, rotary embeddings,
cache appends that copy the whole cache, attention, residual adds) and their dispatch. Here the
inner model's ``forward`` takes one-token steps (batch 1, no padding, a ``DynamicCache``) itself:

- a layer whose seven projections are the kernel's plain ``QgemvLinear`` (or LoRA wrappers of
  them whose adapters are off: the base variant while a LoRA is loaded) and whose norms are the
  model's own RMSNorm runs as one C call (``decode_layer`` in ``kernels/qgemv.c``): norm, q / k /
  v, rotary, the cache write, attention, o, norm, gate / up, SiLU, down, both residual adds;
- any other layer (an active LoRA, IA3 or LN-tuning wrappers, layers the kernel does not take)
  calls its modules as transformers does, with rotary, the cache write and attention in one C
  call (``attend_one``).

Each intermediate is rounded to the model's dtype where PyTorch rounds it, so only the order of
float32 sums differs from transformers' path. The cache grows in place: each layer's keys and
values are views of a buffer with room for ``GROW`` more tokens (transformers' ``DynamicCache``
copies the whole cache every step). Everything else (prompts, batches, padding masks, training,
other caches, output of attentions or hidden states) goes to the model's own ``forward``.
"""

from __future__ import annotations

import ctypes
import weakref

import torch

GROW = 256  # cache slots added when a layer's buffer is full
LAYERS = ("Qwen2DecoderLayer", "LlamaDecoderLayer")
NORMS = ("Qwen2RMSNorm", "LlamaRMSNorm")
MLPS = ("Qwen2MLP", "LlamaMLP")
_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_UNTOUCHED = ("output_attentions", "output_hidden_states")


def _state(module) -> tuple:
    """What a layer's plan depends on for this module: which module, where its decoding weights
    are, and for a LoRA wrapper which of its adapters act."""
    t = getattr(module, "qblocks", None)
    if t is None:
        t = getattr(module, "weight", None)
    where = t.data_ptr() if isinstance(t, torch.Tensor) else 0
    if not hasattr(module, "lora_A"):
        return id(module), where
    return (id(module), where, bool(module.disable_adapters), bool(module.merged),
            tuple(a for a in module.active_adapters if a in module.lora_A))


def _bare(module):
    """The kernel layer (``QgemvLinear``) a module computes as it is: itself, or a LoRA wrapper's
    base layer while none of the wrapper's adapters acts (off or not its own, none merged in); else
    None."""
    from ragqa.generators.qgemv import QgemvLinear

    if type(module) is QgemvLinear:
        return module
    base = getattr(module, "base_layer", None)
    if type(base) is QgemvLinear and hasattr(module, "lora_A") and not module.merged and (
            module.disable_adapters or not any(a in module.lora_A for a in module.active_adapters)):
        return base
    return None


def _shape(model):
    """(hidden, heads, kv heads, head dim, intermediate) of a model this module takes, else None."""
    config = model.config
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if (getattr(config, "model_type", None) not in ("qwen2", "llama") or layers is None
            or getattr(config, "hidden_act", None) != "silu"
            or getattr(config, "_attn_implementation", None) not in ("sdpa", "ragqa_sdpa")
            or any(t != "full_attention" for t in getattr(config, "layer_types", None) or ["full_attention"])
            or getattr(config, "use_sliding_window", False)
            or any(type(layer).__name__ not in LAYERS for layer in layers)
            or model.dtype not in (torch.bfloat16, torch.float32)):  # what the C code reads
        return None
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if (heads % kv or heads // kv > 64 or dim % 2 or dim > 512 or config.hidden_size % 32
            or config.intermediate_size % 32):  # what the C code takes
        return None
    return config.hidden_size, heads, kv, dim, config.intermediate_size


def enable(model, lib) -> bool:
    """Makes the model's inner ``forward`` take one-token decoding steps as above (in place);
    False where the model is of another kind or the kernel ``lib`` (``qgemv.library()``) is
    missing."""
    shape = _shape(model) if lib is not None else None
    if shape is None:
        return False
    inner = model.model
    if getattr(inner, "_ragqa_fused", None) is None:
        # a subclass, not a bound method stored on the module: that would be a reference cycle,
        # and the model's weights would outlive it until the garbage collector's next full pass
        inner._ragqa_fused = _Stepper(lib, shape)
        inner.__class__ = _fused_class(type(inner))
    return True


_CLASSES: dict = {}


def _fused_class(cls):
    """``cls`` with ``forward`` taking the one-token steps (one subclass per model class)."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(cls.__name__, (cls,), {"forward": _forward, "_ragqa_unfused": cls,
                                                      "__module__": cls.__module__})
    return _CLASSES[cls]


def stepper(model):
    """The model's stepper (its ``layers`` counts how many layers went each way), None when off."""
    return getattr(getattr(model, "model", None), "_ragqa_fused", None)


def disable(model) -> bool:
    """Back to transformers' own forward for every step."""
    inner = getattr(model, "model", None)
    if getattr(inner, "_ragqa_fused", None) is None:
        return False
    inner.__class__ = type(inner)._ragqa_unfused
    inner._ragqa_fused = None
    return True


def _forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None,
             inputs_embeds=None, use_cache=None, **kwargs):
    stepper = self._ragqa_fused
    if cache is None:
        cache = kwargs.pop("past_key_values", None)
    if stepper.takes(self, input_ids, attention_mask, cache, inputs_embeds, kwargs):
        return stepper.step(self, input_ids, position_ids, cache)
    return self._ragqa_unfused.forward(self, input_ids=input_ids, attention_mask=attention_mask,
                                       position_ids=position_ids, cache=cache,
                                       inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)


class _Stepper:
    """The fused steps' state for one inner model (which it does not hold: every call gets it)."""

    def __init__(self, lib, shape):
        self.lib = lib
        self.hidden, self.heads, self.kv, self.dim, self.inter = shape
        self.scratch = torch.empty(0, dtype=torch.uint8)
        self.scratch_cap = -1
        self._by_layer: dict = {}  # layer index -> (what its plan depends on, the plan)
        self.layers = {"c": 0, "modules": 0}  # layers stepped each way (tests, inspection)
        self._plans: list = []  # each layer's _plain(), checked on a generation's first step
        self._last = None       # (the cache the last step wrote, its length after it)

    def takes(self, inner, input_ids, attention_mask, cache, inputs_embeds, kwargs) -> bool:
        from transformers.cache_utils import DynamicCache, DynamicLayer

        if (input_ids is None or inputs_embeds is not None or input_ids.shape != (1, 1)
                or torch.is_grad_enabled() or type(cache) is not DynamicCache
                or any(kwargs.get(k) for k in _UNTOUCHED) or inner.training
                or inner.embed_tokens.weight.dtype not in (torch.bfloat16, torch.float32)):
            return False  # the C code reads bf16 or float32
        layers = cache.layers
        if len(layers) != len(inner.layers) or any(
                type(layer) is not DynamicLayer or not layer.is_initialized or layer.keys.shape[0] != 1
                for layer in layers):
            return False
        if attention_mask is not None:
            if isinstance(attention_mask, dict) or attention_mask.dim() != 2 or not bool(attention_mask.all()):
                return False
        return True

    def _room(self, layer):
        """(keys buffer, values buffer, slot of the new token): the layer's cache as views of
        buffers with room for the new token, moved into new ones when full."""
        keys, values = layer.keys, layer.values
        n = keys.shape[-2]
        room = getattr(layer, "_ragqa_room", None)
        if (room is None or room[0].data_ptr() != keys.data_ptr() or room[1].data_ptr() != values.data_ptr()
                or n >= room[0].shape[2] or room[0].dtype != keys.dtype or room[0].shape[1] != keys.shape[1]):
            cap = n + GROW
            kb = keys.new_empty((1, keys.shape[1], cap, keys.shape[3]))
            vb = values.new_empty((1, values.shape[1], cap, values.shape[3]))
            kb[:, :, :n] = keys
            vb[:, :, :n] = values
            room = layer._ragqa_room = (kb, vb)
        return room[0], room[1], n

    def _plain(self, layer):
        """The layer's C arguments (weights, bits, biases, eps, what they point into) when it is
        plain (its projections kernel layers or LoRA wrappers of them that add nothing now), else
        None; kept per layer until one of its modules, their tensors or their adapters change."""
        attn, mlp = layer.self_attn, layer.mlp
        mods = [getattr(attn, name, None) for name in _PROJ[:4]] + [getattr(mlp, name, None) for name in _PROJ[4:]]
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        key = tuple(map(_state, (*mods, *norms)))
        held = self._by_layer.get(attn.layer_idx)
        if held is None or held[0] != key:
            held = self._by_layer[attn.layer_idx] = (key, self._arguments(mlp, mods, norms))
        return held[1]

    @staticmethod
    def _arguments(mlp, mods, norms):
        mods = [_bare(m) for m in mods]
        if (any(m is None for m in mods) or any(type(n).__name__ not in NORMS for n in norms)
                or type(mlp).__name__ not in MLPS or norms[0].variance_epsilon != norms[1].variance_epsilon
                or any(n.weight.dtype != m.weight.dtype for n in norms for m in mods)
                or any(m.bias is not None and m.bias.dtype != m.weight.dtype for m in mods)):
            return None
        keep = tuple(m.qblocks for m in mods) + tuple(n.weight for n in norms)
        weights = (ctypes.c_void_p * 9)(*[t.data_ptr() for t in keep])
        bits = (ctypes.c_int * 7)(*[m.qbits for m in mods])
        biases = (ctypes.c_void_p * 7)(*[m.bias.data_ptr() if m.bias is not None else None for m in mods])
        return weights, bits, biases, float(norms[0].variance_epsilon), keep

    def step(self, inner, input_ids, position_ids, cache):
        from transformers.modeling_outputs import BaseModelOutputWithPast

        lib = self.lib
        h = inner.embed_tokens(input_ids).contiguous()
        if position_ids is None:
            position_ids = torch.full((1, 1), cache.get_seq_length(), dtype=torch.long)
        cos, sin = inner.rotary_emb(h, position_ids)
        cos, sin = cos.contiguous(), sin.contiguous()
        bf16 = int(h.dtype == torch.bfloat16)
        threads = torch.get_num_threads()
        # modules and adapters do not change within a generation (the generator holds its lock):
        # the layers' plans are checked when a step does not follow the last one
        n = cache.get_seq_length()
        if self._last is None or self._last[0]() is not cache or self._last[1] != n:
            self._plans = [self._plain(layer) for layer in inner.layers]
        for layer, held, plain in zip(inner.layers, cache.layers, self._plans):
            kb, vb, n = self._room(held)
            cap = kb.shape[2]
            if cap > self.scratch_cap:
                size = lib.decode_layer_scratch(self.hidden, self.heads, self.kv, self.dim, self.inter, cap)
                self.scratch, self.scratch_cap = torch.empty(size, dtype=torch.uint8), cap
            attn = layer.self_attn
            if plain is not None:
                self.layers["c"] += 1
                weights, bits, biases, eps, _keep = plain
                rc = lib.decode_layer(h.data_ptr(), bf16, self.hidden, self.heads, self.kv, self.dim,
                                      self.inter, weights, bits, biases, eps, cos.data_ptr(),
                                      sin.data_ptr(), kb.data_ptr(), vb.data_ptr(), cap, n,
                                      float(attn.scaling), self.scratch.data_ptr(), threads)
            else:
                self.layers["modules"] += 1
                x = layer.input_layernorm(h)
                q = attn.q_proj(x).contiguous()
                k = attn.k_proj(x).contiguous()
                v = attn.v_proj(x).contiguous()
                out = torch.empty_like(q)
                rc = lib.attend_one(q.data_ptr(), k.data_ptr(), v.data_ptr(), cos.data_ptr(),
                                    sin.data_ptr(), bf16, self.heads, self.kv, self.dim,
                                    kb.data_ptr(), vb.data_ptr(), cap, n, float(attn.scaling),
                                    out.data_ptr(), self.scratch.data_ptr(), threads)
                if rc == 0:
                    h = h + attn.o_proj(out)
                    h = h + layer.mlp(layer.post_attention_layernorm(h))
            if rc != 0:
                raise RuntimeError(f"fused decoding step: the C kernel refused layer {attn.layer_idx}'s sizes; "
                                   "RAGQA_FUSED_DECODE=0 (fused_decode = false) decodes with transformers' forward")
            held.keys, held.values = kb[:, :, :n + 1], vb[:, :, :n + 1]
        self._last = (weakref.ref(cache), cache.get_seq_length())
        return BaseModelOutputWithPast(last_hidden_state=inner.norm(h), cache=cache)
