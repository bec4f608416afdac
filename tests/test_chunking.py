import re

import pytest

from ragqa.chunking import TITLE_MAX_TOKENS, ChunkSettings, chunk_document, clip_title
from ragqa.documents import Document
from ragqa.embedding import FakeEmbedder


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

    from ragqa.embedding import SentenceTransformerEmbedder

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
