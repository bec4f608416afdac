"""JSON Lines (.jsonl): one document per line, ``{"_id" | "id", "title", "text", ...}``; a bad
line is a warning (the first few named), the good lines are indexed."""

from __future__ import annotations

from typing import Any

from ragqa.files import a_json_type, describe_json_error, json_type
from ragqa.indexing.documents import (MAX_LINE_WARNINGS, Document, iter_lines, json_safe, loads_storable,
                                      LoadWarning, SourceFile, Warn)


def _id_str(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int)) or (isinstance(value, float) and value == value):
        s = str(value).strip()
        return s or None
    return None


def load(sf: SourceFile, text: str, warn: Warn) -> list[Document]:
    shown = str(sf.path)
    source = sf.source
    docs: list[Document] = []
    first_line: dict[str, int] = {}
    n_warned = 0
    n_suppressed = 0

    def bad(lineno: int, reason: str) -> None:
        nonlocal n_warned, n_suppressed
        if n_warned < MAX_LINE_WARNINGS:
            n_warned += 1
            warn(LoadWarning(shown, reason, lineno))
        else:
            n_suppressed += 1

    for lineno, line in enumerate(iter_lines(text), start=1):
        if not line.strip():
            continue
        try:
            obj = loads_storable(line)
        except ValueError as e:  # JSONDecodeError, or e.g. a number with too many digits
            bad(lineno, f"line {lineno} skipped: {describe_json_error(e, in_line=True)}")
            continue
        if not isinstance(obj, dict):
            bad(lineno, f"line {lineno} skipped: expected a JSON object, got {json_type(obj)}")
            continue
        id_key = "_id" if "_id" in obj else "id" if "id" in obj else None
        if id_key is None:
            bad(lineno, f'line {lineno} skipped: no "_id" or "id" field')
            continue
        doc_id = _id_str(obj[id_key])
        if doc_id is None:
            bad(lineno, f'line {lineno} skipped: "{id_key}" must be a non-empty string or number')
            continue
        body = obj.get("text")
        if not isinstance(body, str):
            what = "missing" if "text" not in obj else f"{a_json_type(body)}, not a string"
            bad(lineno, f'line {lineno} skipped: "text" is {what}')
            continue
        if not body.strip():
            bad(lineno, f'line {lineno} skipped: "text" is empty')
            continue
        if doc_id in first_line:
            bad(lineno, f"line {lineno} skipped: duplicate id {doc_id!r} (first seen on line {first_line[doc_id]})")
            continue
        first_line[doc_id] = lineno
        raw_title = obj.get("title")
        title = raw_title.strip() if isinstance(raw_title, str) else ""
        if not title and isinstance(raw_title, (int, float)) and not isinstance(raw_title, bool):
            title = str(raw_title)
        metadata = {
            k: v for k, v in obj.items() if k not in (id_key, "title", "text") and json_safe(v)
        }
        docs.append(Document(doc_id, body, title=title, source=source, metadata=metadata))
    if n_suppressed:
        warn(LoadWarning(shown, f"{n_suppressed} more broken line(s) skipped (only the first {MAX_LINE_WARNINGS} are listed)"))
    return docs
