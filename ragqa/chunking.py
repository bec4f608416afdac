"""Token-aware chunking: Document -> Chunks that each fit the embedder's window.

Splitting is langchain-text-splitters' RecursiveCharacterTextSplitter (paragraphs, then lines,
sentences, words) with lengths measured in the embedder's own tokenizer. Its length arithmetic
adds up piece lengths, which is not exact for sub-word tokenizers, so every chunk is checked with
the tokenizer afterwards and any that is still too long is cut again at token boundaries: no text
is ever silently truncated by the embedder.

A chunk is embedded as ``title + "\\n" + text`` (the title gives each passage its context); the
token budget for the text leaves room for the title.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Protocol

from langchain_text_splitters import RecursiveCharacterTextSplitter

from ragqa.documents import Document

TITLE_MAX_TOKENS = 32
SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]


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

    def to_json(self) -> dict:
        return {"max_tokens": self.max_tokens, "overlap": self.overlap, "title_max_tokens": TITLE_MAX_TOKENS,
                "splitter": "RecursiveCharacterTextSplitter", "separators": SEPARATORS}


def clip_title(title: str, tok: Tokenizes) -> str:
    """The title cut at TITLE_MAX_TOKENS tokens (on a token boundary)."""
    offsets = tok.token_offsets(title)
    if len(offsets) <= TITLE_MAX_TOKENS:
        return title
    return title[: offsets[TITLE_MAX_TOKENS - 1][1]]


def chunk_document(doc: Document, tok: Tokenizes, settings: ChunkSettings) -> list[Chunk]:
    title = clip_title(doc.title, tok) if doc.title else ""
    # "title\n" costs the title's tokens (a newline is no token for word-piece tokenizers,
    # but count one to be safe for others)
    budget = settings.max_tokens - (tok.count_tokens(title) + 1 if title else 0)
    budget = max(budget, 8)
    overlap = min(settings.overlap, budget // 4)
    pieces: list[tuple[str, int]] = []
    if tok.count_tokens(doc.text) <= budget:
        pieces.append((doc.text.strip(), doc.text.find(doc.text.strip())))
    else:
        splitter = RecursiveCharacterTextSplitter(
            chunk_size=budget, chunk_overlap=overlap, length_function=tok.count_tokens,
            separators=SEPARATORS, keep_separator="end", strip_whitespace=True)
        # (the splitter's own add_start_index counts the overlap in characters, which is wrong
        # when lengths are tokens: find each chunk after the previous one's start instead)
        start = -1
        for part in splitter.split_text(doc.text):
            found = doc.text.find(part, start + 1)
            start = found if found >= 0 else max(start, 0)
            pieces.extend(_enforce_budget(part, start, tok, budget))
    chunks = []
    for text, start in pieces:
        if not text.strip():
            continue
        chunks.append(Chunk(doc_id=doc.doc_id, ord=len(chunks), text=text, start=start, title=doc.title,
                            source=doc.source, page=_page_at(doc, start), metadata=dict(doc.metadata)))
    return chunks


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


def _page_at(doc: Document, start: int) -> int | None:
    if not doc.pages:
        return None
    starts = [offset for _, offset in doc.pages]
    i = bisect.bisect_right(starts, start) - 1
    return doc.pages[max(i, 0)][0]
