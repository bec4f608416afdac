import re

import pytest

from ragqa.indexing.chunking import (
    SECTION_CHARS,
    TITLE_MAX_TOKENS,
    ChunkSettings,
    _sections,
    chunk_document,
    clip_title,
    iter_chunks,
)
from ragqa.indexing.documents import Document
from ragqa.indexing.embedding import FakeEmbedder


def words(text):
    return re.findall(r"\w+", text)


@pytest.mark.parametrize("text", ["", "one", "short text that fits."])
def test_small_documents_are_one_chunk_or_none(text):
    chunks = chunk_document(Document("d", text), FakeEmbedder(max_tokens=50), ChunkSettings(50, 5))
    assert len(chunks) == (1 if text.strip() else 0)
    if chunks:
        assert chunks[0].text == text and chunks[0].start == 0


def test_long_document_chunks_fit_and_lose_nothing():
    tok = FakeEmbedder(max_tokens=40)
    text = "\n\n".join(" ".join(f"w{p}x{i}" for i in range(37)) + "." for p in range(12))
    doc = Document("d", text, title="A title here")
    chunks = chunk_document(doc, tok, ChunkSettings(40, 8))
    assert len(chunks) > 5
    for c in chunks:
        assert tok.count_tokens(c.embed_text) <= 40
        assert text[c.start:c.start + len(c.text)] == c.text  # offsets point into the document
        assert c.title == "A title here" and c.doc_id == "d"
    assert [c.ord for c in chunks] == list(range(len(chunks)))
    covered = set(w for c in chunks for w in words(c.text))
    assert covered == set(words(text))


def test_one_giant_word_run_is_cut_at_token_boundaries():
    tok = FakeEmbedder(max_tokens=20)
    text = ",".join(["x"] * 500)  # no separator the splitter likes
    chunks = chunk_document(Document("d", text), tok, ChunkSettings(20, 0))
    assert all(tok.count_tokens(c.text) <= 20 for c in chunks)
    assert sum(c.text.count("x") for c in chunks) == 500


def test_pages_follow_offsets():
    tok = FakeEmbedder(max_tokens=30)
    page1 = " ".join(f"alpha{i}" for i in range(40))
    page2 = " ".join(f"beta{i}" for i in range(40))
    text = page1 + "\n\n" + page2
    doc = Document("d.pdf", text, pages=[(1, 0), (2, len(page1) + 2)])
    chunks = chunk_document(doc, tok, ChunkSettings(30, 0))
    for c in chunks:
        expected = 1 if c.start < len(page1) + 2 else 2
        assert c.page == expected, (c.start, c.text[:20])
    assert {c.page for c in chunks} == {1, 2}


def test_title_is_clipped():
    tok = FakeEmbedder()
    title = " ".join(f"t{i}" for i in range(100))
    assert tok.count_tokens(clip_title(title, tok)) == TITLE_MAX_TOKENS
    assert clip_title("short title", tok) == "short title"


@pytest.mark.slow
def test_real_tokenizer_no_chunk_is_truncated(minilm_dir):
    """Silent truncation loses text: every chunk, title included, must fit the model's window
    as the model itself tokenizes it (with [CLS] and [SEP])."""
    from sentence_transformers import SentenceTransformer

    from ragqa.indexing.embedding import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder(str(minilm_dir), backend="torch", threads=1)
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    assert emb.max_tokens == model.max_seq_length - 2
    text = ("Électricité d'Hydro-Québec: 1,234,567.89 kWh — naïve façade ünïcödé. "
            "Supercalifragilisticexpialidocious antidisestablishmentarianism 日本語のテキスト. " * 40)
    doc = Document("d", text, title="A rather long title about electricity and other tokens")
    chunks = chunk_document(doc, emb, ChunkSettings(emb.max_tokens, 32))
    assert len(chunks) > 3
    for c in chunks:
        ids = model.tokenizer(c.embed_text)["input_ids"]
        assert len(ids) <= model.max_seq_length, len(ids)
    assert set(words(text)) <= set(w for c in chunks for w in words(c.text))


# ------------------------------------------------------------------------------- long documents

def _chunks_as_before(doc, tok, settings):
    """chunk_document as it was before sections: the splitter over the whole text at once."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from ragqa.indexing.chunking import SEPARATORS, _enforce_budget

    title = clip_title(doc.title, tok) if doc.title else ""
    budget = max(settings.max_tokens - (tok.count_tokens(title) + 1 if title else 0), 8)
    overlap = min(settings.overlap, budget // 4)
    if tok.count_tokens(doc.text) <= budget:
        pieces = [(doc.text.strip(), doc.text.find(doc.text.strip()))]
    else:
        splitter = RecursiveCharacterTextSplitter(
            chunk_size=budget, chunk_overlap=overlap, length_function=tok.count_tokens,
            separators=SEPARATORS, keep_separator="end", strip_whitespace=True)
        pieces, start = [], -1
        for part in splitter.split_text(doc.text):
            found = doc.text.find(part, start + 1)
            start = found if found >= 0 else max(start, 0)
            pieces.extend(_enforce_budget(part, start, tok, budget))
    return [(text, start) for text, start in pieces if text.strip()]


def _prose(n_paragraphs, seed=0, words_per_paragraph=(20, 120)):
    import random

    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(400)] + ["the", "a", "of", "and", "to"]
    paragraphs = []
    for _ in range(n_paragraphs):
        sentences = []
        n = rng.randint(*words_per_paragraph)
        while n > 0:
            k = min(n, rng.randint(4, 18))
            sentences.append(" ".join(rng.choice(vocab) for _ in range(k)).capitalize() + rng.choice(".?!;"))
            n -= k
        paragraphs.append(" ".join(sentences) + ("\nA second line." if rng.random() < 0.2 else ""))
    return "\n\n".join(paragraphs) + "\n"


@pytest.mark.parametrize("text, title, settings", [
    (_prose(300, seed=1), "A title here", ChunkSettings(40, 8)),
    (_prose(60, seed=2), "", ChunkSettings(128, 32)),
    (",".join(["x"] * 500), "", ChunkSettings(20, 0)),
    ("  \n\n  lead and trail spaces.  \n", "T", ChunkSettings(50, 5)),
])
def test_a_document_within_one_section_gives_the_same_chunks_as_before(text, title, settings):
    tok = FakeEmbedder(max_tokens=settings.max_tokens)
    assert len(text) <= settings.section_chars
    doc = Document("d", text, title=title)
    chunks = chunk_document(doc, tok, settings)
    assert [(c.text, c.start) for c in chunks] == _chunks_as_before(doc, tok, settings)
    assert [c.ord for c in chunks] == list(range(len(chunks)))


class _Recording(FakeEmbedder):
    """Remembers the longest text it was asked to tokenize."""

    longest = 0

    def token_offsets(self, text):
        self.longest = max(self.longest, len(text))
        return super().token_offsets(text)


def test_a_long_document_is_split_a_section_at_a_time():
    text = _prose(400, seed=3)
    settings = ChunkSettings(40, 8, section_chars=3000)
    tok = _Recording(max_tokens=40)
    doc = Document("big", text, title="Big", pages=[(1, 0), (2, len(text) // 2)])
    chunks = list(iter_chunks(doc, tok, settings))
    assert tok.longest <= 3000 < len(text) // 10  # no tokenizer call saw more than a section
    assert [c.ord for c in chunks] == list(range(len(chunks)))
    starts = [c.start for c in chunks]
    assert starts == sorted(starts)
    for c in chunks:
        assert text[c.start:c.start + len(c.text)] == c.text
        assert tok.count_tokens(c.embed_text) <= 40
        assert c.page == (1 if c.start < len(text) // 2 else 2)
    assert set(words(text)) == set(w for c in chunks for w in words(c.text))
    assert chunk_document(doc, tok, settings) == chunks
    # sections end on paragraph boundaries: no chunk straddles one
    for a, b in _sections(text, 3000):
        assert b == len(text) or text[:b].endswith("\n\n")
        assert all(c.start + len(c.text) <= b for c in chunks if a <= c.start < b)


def test_iter_chunks_is_lazy():
    text = _prose(2000, seed=4)
    tok = _Recording(max_tokens=64)
    first = next(iter_chunks(Document("d", text), tok, ChunkSettings(64, 8, section_chars=5000)))
    assert first.ord == 0 and first.start == 0 and tok.longest <= 5000


def test_default_sections_bound_what_the_tokenizer_sees():
    text = _prose(3 * SECTION_CHARS // 400, seed=5)  # ~350-character paragraphs: about 2.5 sections
    assert len(text) > 2 * SECTION_CHARS
    tok = _Recording(max_tokens=128)
    chunks = chunk_document(Document("d", text), tok, ChunkSettings(128, 32))
    assert tok.longest <= SECTION_CHARS
    assert all(text[c.start:c.start + len(c.text)] == c.text for c in chunks)


@pytest.mark.parametrize("text, size, expected", [
    ("short", 10, [(0, 5)]),
    ("aaaa\n\nbbbb\n\ncccc", 12, [(0, 12), (12, 16)]),  # the last paragraph break that fits
    ("aaaa\n\nbbbbbbbbbbbbbbbb", 10, [(0, 6), (6, 16), (16, 22)]),  # then hard cuts
    ("aaaa bbbb\ncccc dddd", 12, [(0, 10), (10, 19)]),  # a line break before a space
    ("aaaa bbbb cccc", 12, [(0, 10), (10, 14)]),
])
def test_sections(text, size, expected):
    spans = list(_sections(text, size))
    assert spans == expected
    assert "".join(text[a:b] for a, b in spans) == text and all(b - a <= size for a, b in spans)
