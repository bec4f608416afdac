"""User feedback on answers (thumbs up / down), one JSON object per line in a file beside the index.

    record_feedback("indexes/demo", feedback_entry(answer, "up"))   # -> indexes/demo.feedback.jsonl

The file lives next to the index directory (``<index>.feedback.jsonl``), never inside its version
folders, so index builds never touch it. Each line is appended under an exclusive ``flock``,
flushed and fsynced: concurrent sessions never interleave lines and a crash loses at most the line
being written.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ragqa.files import read_jsonl

VERDICTS = ("up", "down")


def feedback_path(index_dir: str | Path) -> Path:
    index_dir = Path(index_dir).resolve()
    return index_dir.parent / f"{index_dir.name}.feedback.jsonl"


def feedback_entry(answer, verdict: str, *, index: str | Path | None = None, **extra: Any) -> dict:
    """The record for one verdict on an ``Answer``: question, answer, variant, sources, verdict."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} must be one of {', '.join(VERDICTS)}")
    entry = {
        "question": answer.question,
        "answer": answer.text,
        "variant": answer.variant,
        "abstained": answer.abstained,
        "reason": answer.reason,
        "standalone_question": answer.standalone_question,
        "sources": [{"n": s.n, "doc_id": s.doc_id, "title": s.title, "score": round(float(s.score), 6),
                     "page": s.page, "cited": s.cited, "chunk_id": s.chunk_id} for s in answer.sources],
        "verdict": verdict,
    }
    if index is not None:
        entry["index"] = str(index)
    entry.update(extra)
    return entry


def record_feedback(index_dir: str | Path, entry: dict) -> Path:
    """Appends ``entry`` (plus ``time``, UTC ISO 8601, unless given) as one line; returns the file."""
    path = feedback_path(index_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **entry}
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return path


def read_feedback(index_dir: str | Path) -> list[dict]:
    """Every recorded entry (a damaged line, such as one a crash cut, is skipped)."""
    path = feedback_path(index_dir)
    if not path.is_file():
        return []
    return [obj for _, obj in read_jsonl(path, "feedback file", skip_bad=True)]
