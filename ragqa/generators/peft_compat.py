"""PEFT prompt-learning generation under transformers >= 5.24.

transformers 5.24 renamed the generation cache argument from ``past_key_values`` to ``cache``
(and stopped passing ``cache_position``). PEFT 0.21's ``PeftModelForCausalLM.
prepare_inputs_for_generation`` still looks for ``past_key_values``, so it never sees the cache:

- prefix tuning injects the prefix as ``past_key_values`` beside the ``cache`` that ``generate``
  passes, and the model keeps ``cache`` and drops the prefix: the variant writes what its base
  writes;
- prompt tuning believes every step is the first one and prepends the soft prompt again at
  each new token.

``fix_prompt_learning_generation`` renames the key on the way into PEFT's logic and back on
the way out, so PEFT works as it did before. Greedy output then equals a step-by-step greedy
loop over the PeftModel's full forward pass, the pass training optimises
(tests/test_generators.py). With older transformers there is no ``cache`` key and nothing
changes. Idempotent.

PEFT 0.22 reads the cache under transformers' own name (``peft.import_utils.
get_transformers_cache_name``); there, renaming would hide the cache from PEFT, so
``peft_knows_cache_name`` turns the fix off.
"""

from __future__ import annotations


def peft_knows_cache_name() -> bool:
    """True where PEFT itself looks up the generation cache under the name transformers uses."""
    try:
        from peft.import_utils import get_transformers_cache_name
    except ImportError:
        return False
    return get_transformers_cache_name() == "cache"


def fix_prompt_learning_generation(peft_model) -> None:
    if getattr(peft_model, "_ragqa_cache_fix", False) or peft_knows_cache_name():
        return
    base_prepare = peft_model.base_model_prepare_inputs_for_generation
    peft_prepare = peft_model.prepare_inputs_for_generation
    renamed = []

    def base_prepare_for_peft(*args, **kwargs):
        inputs = base_prepare(*args, **kwargs)
        if "cache" in inputs and "past_key_values" not in inputs:
            inputs["past_key_values"] = inputs.pop("cache")
            renamed.append(True)
        return inputs

    def prepare_inputs_for_generation(*args, **kwargs):
        # PEFT's generate() later restores the base model's own prepare function from
        # base_model_prepare_inputs_for_generation, so the renaming one is only swapped in for
        # the duration of this call (generation holds the model: no other call runs meanwhile)
        renamed.clear()
        peft_model.base_model_prepare_inputs_for_generation = base_prepare_for_peft
        try:
            inputs = peft_prepare(*args, **kwargs)
        finally:
            peft_model.base_model_prepare_inputs_for_generation = base_prepare
        if renamed and "past_key_values" in inputs:
            inputs["cache"] = inputs.pop("past_key_values")
        return inputs

    peft_model.prepare_inputs_for_generation = prepare_inputs_for_generation
    peft_model._ragqa_cache_fix = True
