"""Stop strings (OpenAI's and LangChain's ``stop``): the answer ends before the first one.

``cut_stream`` applies them to a generator's stream: text that could be the start of a stop
string is held back until the next piece decides, and the generation is stopped (the stream
closed) as soon as one appears, so no tokens are spent past it."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def find_stop(text: str, stop: Sequence[str] | None) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    found = [i for i in (text.find(s) for s in (stop or ()) if s) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stop: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that could be the start of a stop string."""
    best = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def cut_text(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """(``text`` before its first stop string, whether one was found)."""
    cut = find_stop(text, stop)
    return (text, False) if cut is None else (text[:cut], True)


@dataclass
class StreamEnd:
    result: Any = None     # what the source returned (a GenerationResult), None when it was cut
    stopped: bool = False  # a stop string ended it


def cut_stream(pieces: Iterable[str], stop: Sequence[str] | None) -> Generator[str, None, StreamEnd]:
    """The pieces of ``pieces`` up to the first stop string; returns a ``StreamEnd``. The source
    is closed when a stop string appears or the consumer stops early (closing a generator's
    stream stops the generation at its next token)."""
    stop = [s for s in (stop or ()) if s]
    it = iter(pieces)
    end = StreamEnd()
    pending = ""  # received, not yet given out (may be the start of a stop string)
    try:
        while True:
            try:
                piece = next(it)
            except StopIteration as finished:
                end.result = finished.value  # the real Generator returns its GenerationResult
                break
            pending += piece
            cut = find_stop(pending, stop)
            if cut is not None:
                pending = pending[:cut]
                end.stopped = True
                break
            keep = held_back(pending, stop) if stop else 0
            ready, pending = pending[:len(pending) - keep], pending[len(pending) - keep:]
            if ready:
                yield ready
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    if pending:
        yield pending
    return end
