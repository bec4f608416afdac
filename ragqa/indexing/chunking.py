"""Token-aware chunking: Document -> Chunks that each fit the embedder's window.

Splitting is langchain-text-splitters' RecursiveCharacterTextSplitter (paragraphs, then lines,
sentences, words) with lengths measured in the embedder's own tokenizer. Its length arithmetic
adds up piece lengths, which is not exact for sub-word tokenizers, so every chunk is checked with
the tokenizer afterwards and any that is still too long is cut again at token boundaries: no text
is ever silently truncated by the embedder.

A chunk is embedded as ``title + "\\n" + text`` (the title gives each passage its context); the
token budget for the text leaves room for the title.

Memory and time are bounded by a *section*, not by the document: a text longer than
``ChunkSettings.section_chars`` is first cut into sections at paragraph boundaries (else line,
sentence, word boundaries; a hard cut only in a run without any), and each section is split on its
own; :func:`iter_chunks` yields the chunks of one section before it looks at the next. A text up
to that size is one section, so its chunks are exactly what splitting the whole text gives.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Protocol

from ragqa.indexing.documents import Document

if TYPE_CHECKING:  # imported where it splits: LangChain costs 0.16 s at import
    from langchain_text_splitters import RecursiveCharacterTextSplitter

TITLE_MAX_TOKENS = 32
SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
SECTION_CHARS = 200_000  # longer texts are split a section at a time (about 50k tokens of prose)


class Tokenizes(Protocol):
    @property
    def max_tokens(self) -> int: ...
    def count_tokens(self, text: str) -> int: ...
    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...


@dataclass
class Chunk:
    doc_id: str
    ord: int
    text: str
    start: int  # character offset of the chunk in the document text
    title: str = ""
    source: str = ""
    page: int | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def embed_text(self) -> str:
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class ChunkSettings:
    max_tokens: int  # for the embedded text, title included
    overlap: int = 32
    section_chars: int = SECTION_CHARS  # texts longer than this are split a section at a time

    def to_json(self) -> dict:
        return {"max_tokens": self.max_tokens, "overlap": self.overlap, "title_max_tokens": TITLE_MAX_TOKENS,
                "splitter": "RecursiveCharacterTextSplitter", "separators": SEPARATORS,
                "section_chars": self.section_chars}


def clip_title(title: str, tok: Tokenizes) -> str:
    """The title cut at TITLE_MAX_TOKENS tokens (on a token boundary)."""
    offsets = tok.token_offsets(title)
    if len(offsets) <= TITLE_MAX_TOKENS:
        return title
    return title[: offsets[TITLE_MAX_TOKENS - 1][1]]


def chunk_document(doc: Document, tok: Tokenizes, settings: ChunkSettings) -> list[Chunk]:
    """All the chunks of ``doc``: ``list(iter_chunks(doc, tok, settings))``."""
    return list(iter_chunks(doc, tok, settings))


def iter_chunks(doc: Document, tok: Tokenizes, settings: ChunkSettings) -> Iterator[Chunk]:
    """The chunks of ``doc`` in order (``ord`` 0, 1, ...; ``start`` is the offset of the chunk's
    text in ``doc.text``), one section of the text at a time: the memory it needs is bounded by
    ``settings.section_chars``, however long the document is. Each chunk's ``embed_text`` fits
    ``settings.max_tokens``; chunks overlap within a section, not across a section boundary."""
    title = clip_title(doc.title, tok) if doc.title else ""
    # "title\n" costs the title's tokens (a newline is no token for word-piece tokenizers,
    # but count one to be safe for others)
    budget = settings.max_tokens - (tok.count_tokens(title) + 1 if title else 0)
    budget = max(budget, 8)
    overlap = min(settings.overlap, budget // 4)
    counted: dict[str, int] = {}  # the splitter measures most pieces more than once

    def count_tokens(text: str) -> int:
        found = counted.get(text)
        if found is None:
            found = counted[text] = tok.count_tokens(text)
        return found

    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=budget, chunk_overlap=overlap, length_function=count_tokens,
        separators=SEPARATORS, keep_separator="end", strip_whitespace=True)
    page_starts = [offset for _, offset in doc.pages] if doc.pages else []
    n = 0
    for a, b in _sections(doc.text, settings.section_chars):
        counted.clear()  # (a section's pieces: bounded like the section)
        for text, start in _split_section(doc.text[a:b], tok, splitter, budget):  # [0:len] is no copy
            if not text.strip():
                continue
            yield Chunk(doc_id=doc.doc_id, ord=n, text=text, start=a + start, title=doc.title,
                        source=doc.source, page=_page_at(doc, page_starts, a + start),
                        metadata=dict(doc.metadata))
            n += 1


def _split_section(text: str, tok: Tokenizes, splitter: RecursiveCharacterTextSplitter,
                   budget: int) -> list[tuple[str, int]]:
    """(chunk text, offset in ``text``) for one section."""
    if tok.count_tokens(text) <= budget:
        stripped = text.strip()
        return [(stripped, text.find(stripped))]
    pieces: list[tuple[str, int]] = []
    # (the splitter's own add_start_index counts the overlap in characters, which is wrong
    # when lengths are tokens: find each chunk after the previous one's start instead)
    start = -1
    for part in splitter.split_text(text):
        found = text.find(part, start + 1)
        start = found if found >= 0 else max(start, 0)
        pieces.extend(_enforce_budget(part, start, tok, budget))
    return pieces


def _sections(text: str, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) spans that tile ``text``, each at most ``size`` characters (one span for a
    text that fits), ending at the last paragraph boundary before ``size``; without one, at the
    last line, sentence... word boundary (the splitter's own order); else exactly at ``size``. A
    separator stays at the end of its section, as the splitter keeps it (``keep_separator="end"``)."""
    n = len(text)
    pos = 0
    size = max(size, 1)
    while n - pos > size:
        limit = pos + size
        cut = limit
        for sep in SEPARATORS[:-1]:
            i = text.rfind(sep, pos, limit)
            if i > pos:
                cut = i + len(sep)
                break
        yield pos, cut
        pos = cut
    yield pos, n


def _enforce_budget(text: str, start: int, tok: Tokenizes, budget: int) -> list[tuple[str, int]]:
    """Cut ``text`` at token boundaries into pieces of at most ``budget`` tokens."""
    offsets = tok.token_offsets(text)
    if len(offsets) <= budget:
        return [(text, start)]
    out = []
    for i in range(0, len(offsets), budget):
        a = offsets[i][0]
        b = offsets[min(i + budget, len(offsets)) - 1][1]
        out.append((text[a:b], start + a))
    return out


def _page_at(doc: Document, page_starts: list[int], start: int) -> int | None:
    if not doc.pages:
        return None
    i = bisect.bisect_right(page_starts, start) - 1
    return doc.pages[max(i, 0)][0]
