"""Decoding constrained to a JSON schema (structured output): at each step only the tokens that keep
the text a valid prefix of a JSON value matching the schema may be chosen, so the answer always
parses and validates (lm-format-enforcer's ``TokenEnforcer`` + ``JsonSchemaParser``).

lm-format-enforcer's own transformers integration imports a module transformers 5 removed, so the
tokenizer table it needs is built here (the same recipe) and applied by a small
``LogitsProcessor``. The table is built once per tokenizer and cached: it decodes every token of
the vocabulary twice (measured by ``ragqa bench structured``)."""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

_TABLES: dict[tuple, Any] = {}
_TABLES_LOCK = threading.Lock()


def _regular_tokens(tokenizer, vocab_size: int) -> list[tuple[int, str, bool]]:
    """(id, text, starts a word) for every non-special token: lm-format-enforcer's recipe."""
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    out = []
    for token in range(vocab_size):
        if token in special:
            continue
        after_zero = tokenizer.decode([zero, token])[1:]
        alone = tokenizer.decode([token])
        out.append((token, after_zero, len(after_zero) > len(alone)))
    return out


def _decode(tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode(tokens).rstrip("\ufffd")


def tokenizer_table(tokenizer, eos_ids: list[int]):
    """lm-format-enforcer's per-tokenizer data, built once per (tokenizer, eos ids)."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), tuple(eos_ids), id(tokenizer))
    with _TABLES_LOCK:
        table = _TABLES.get(key)
        if table is None:
            vocab_size = len(tokenizer)
            table = TokenEnforcerTokenizerData(_regular_tokens(tokenizer, vocab_size),
                                               functools.partial(_decode, tokenizer), list(eos_ids),
                                               False, vocab_size)
            _TABLES[key] = table
        return table


# JSON whitespace allowed in a row (a newline and an indent); a model left free pads with blank lines
MAX_WHITESPACE = 4
# digits allowed in a row: a small model loops on digits ("2019345672222...") in numbers, which
# have no length limit, and in strings; 16 is beyond a double's precision and any date or id
MAX_DIGITS = 16
_OPEN_STRING_KEYS = ("maxLength", "enum", "const", "pattern", "format")


def _string_nodes(node: Any, out: list) -> list:
    """The schema's free string nodes (type string, no length, enum, const, pattern or format)."""
    if isinstance(node, dict):
        if node.get("type") == "string" and not any(k in node for k in _OPEN_STRING_KEYS):
            out.append(node)
        for value in node.values():
            _string_nodes(value, out)
    elif isinstance(node, list):
        for value in node:
            _string_nodes(value, out)
    return out


def budgeted(schema: dict | None, max_new_tokens: int) -> dict | None:
    """A copy of ``schema`` whose free strings have a ``maxLength`` from the token budget, so the
    value can close before ``max_new_tokens`` run out (a small model left free writes one string
    until the budget ends, and the JSON never completes). Counting 2 characters a token (English
    runs 3-4), the strings share 3/4 of the budget; the rest is for keys and punctuation. A
    heuristic: a text of one character per token can still run out."""
    if not schema:
        return schema
    schema = json.loads(json.dumps(schema))
    nodes = _string_nodes(schema, [])
    if nodes:
        length = max(8, int(2 * 0.75 * max_new_tokens / len(nodes)))
        for node in nodes:
            node["maxLength"] = length
    return schema


def json_logits_processor(tokenizer, eos_ids: list[int], schema: dict | None, max_new_tokens: int):
    """A transformers ``LogitsProcessor`` that allows only tokens continuing a JSON value valid
    under ``schema`` (None: any JSON value) and the end of sequence once the value is complete.
    Fields come in the schema's order; free strings are kept within the token budget
    (``budgeted``)."""
    import torch
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer
    from transformers import LogitsProcessor

    parser = JsonSchemaParser(budgeted(schema, max_new_tokens))
    table = tokenizer_table(tokenizer, eos_ids)
    enforcer = TokenEnforcer(table, parser)
    parser.config.max_consecutive_whitespaces = MAX_WHITESPACE
    parser.config.force_json_field_order = True
    text_of, digit_led = _token_texts(table)

    class JsonSchemaLogits(LogitsProcessor):
        def __init__(self):
            self.calls = 0
            self.digits = 0  # digits at the end of the text so far

        def __call__(self, input_ids, scores):
            if self.calls:  # the token chosen after the previous call
                piece = text_of.get(int(input_ids[0, -1]), "")
                run = len(piece) - len(piece.rstrip("0123456789"))
                self.digits = self.digits + run if run == len(piece) else run
            self.calls += 1
            allowed = [t for t in enforcer.get_allowed_tokens(input_ids[0].tolist()).allowed_tokens
                       if t < scores.shape[-1]]
            if self.digits >= MAX_DIGITS:
                kept = [t for t in allowed if t not in digit_led]
                allowed = kept or allowed
            mask = torch.full_like(scores, float("-inf"))
            mask[:, allowed] = 0
            return scores + mask

    return JsonSchemaLogits()


@functools.lru_cache(maxsize=4)
def _token_texts(table) -> tuple[dict, frozenset]:
    """(token id -> its text, the tokens whose text starts with a digit) of a tokenizer table."""
    texts = {token: text for token, text, _ in table.regular_tokens}
    return texts, frozenset(t for t, text in texts.items() if text[:1].isdigit())


def schema_instruction(schema: dict | None) -> str:
    """The system instruction that tells the model what the constrained decoding will enforce
    (a model that knows the format writes better values into it)."""
    if not schema:
        return "Answer with one JSON object and nothing else."
    return ("Answer with one JSON object that matches this JSON schema, and nothing else:\n"
            + json.dumps(schema, ensure_ascii=False))


def with_schema_instruction(messages: list[dict], schema: dict | None) -> list[dict]:
    """``messages`` (``[{"role", "content"}]``) with ``schema_instruction`` added to the system
    message (one is put first when there is none)."""
    instruction = schema_instruction(schema)
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0], content=f"{messages[0]['content']}\n\n{instruction}".strip())
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]
