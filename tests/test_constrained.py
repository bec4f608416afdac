"""Decoding constrained to a JSON schema (ragqa.generators.constrained) on a toy tokenizer: every
step allows only tokens that keep the text valid JSON under the schema, free strings get a length
from the token budget, and digit loops are cut (the packaged model under the constraint: the
LangChain standard suite's structured-output tests and ``ragqa bench structured``)."""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lmformatenforcer")

from ragqa.generators.constrained import (MAX_DIGITS, budgeted, json_logits_processor,  # noqa: E402
                                          with_schema_instruction)

VOCAB = list('0123456789{}[]":, abcxyz') + ['"a', "true", "false", "<eos>"]
EOS = len(VOCAB) - 1


class ToyTokenizer:
    name_or_path = "toy"
    all_special_ids = [EOS]

    def __len__(self):
        return len(VOCAB)

    def encode(self, text, add_special_tokens=False):
        return [VOCAB.index(ch) for ch in text]

    def decode(self, ids, **_):
        return "".join(VOCAB[i] for i in ids if i != EOS)


def greedy(schema, prefer, max_new_tokens=60):
    """Decode with the constraint, the 'model' always preferring the tokens in ``prefer`` (in
    order) among those allowed; returns the text."""
    tok = ToyTokenizer()
    proc = json_logits_processor(tok, [EOS], schema, max_new_tokens)
    ids = torch.tensor([[VOCAB.index("x")]])  # a one-token prompt
    for _ in range(max_new_tokens):
        scores = torch.zeros(1, len(VOCAB))
        for rank, token in enumerate(reversed(prefer)):
            scores[0, VOCAB.index(token)] = rank + 1.0
        scores = proc(ids, scores)
        nxt = int(scores.argmax())
        if nxt == EOS:
            break
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return tok.decode(ids[0, 1:].tolist())


def test_only_json_valid_under_the_schema_comes_out():
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}
    text = greedy(schema, prefer=["x", "y", "1", "{", '"a', '"', ":", "true", "}"])
    assert json.loads(text) == {"a": True}


def test_a_digit_loop_is_cut_so_the_value_can_close():
    text = greedy({"type": "integer"}, prefer=["1"])
    assert text.strip() == "1" * MAX_DIGITS and json.loads(text) == int("1" * MAX_DIGITS)


def test_free_strings_get_a_length_from_the_budget():
    schema = {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "string", "enum": ["x"]}, "c": {"type": "string", "maxLength": 3},
        "d": {"type": "array", "items": {"type": "string"}}}}
    out = budgeted(schema, 40)
    assert out["properties"]["a"]["maxLength"] == out["properties"]["d"]["items"]["maxLength"] == 30
    assert "maxLength" not in out["properties"]["b"] and out["properties"]["c"]["maxLength"] == 3
    assert "maxLength" not in schema["properties"]["a"]  # the caller's schema is not changed
    assert budgeted(None, 40) is None
    text = greedy({"type": "string", "maxLength": 5}, prefer=["a"])  # the limit closes the string
    assert json.loads(text) == "aaaaa"


def test_the_schema_instruction_joins_the_system_message():
    schema = {"type": "object"}
    assert with_schema_instruction([{"role": "user", "content": "q"}], schema)[0]["role"] == "system"
    joined = with_schema_instruction([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}],
                                     schema)
    assert len(joined) == 2 and joined[0]["content"].startswith("Be brief.\n\nAnswer with one JSON object")
