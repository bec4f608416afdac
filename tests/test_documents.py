"""Tests for ragqa.indexing.documents: discovery, every loader, and the broken-file warnings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ragqa.indexing.documents import (
    SUPPORTED_SUFFIXES,
    Document,
    LoadWarning,
    SourceFile,
    discover,
    load_file,
    load_paths,
)
from ragqa.errors import InputNotFound

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    # fpdf2 is a dev extra: without it the PDF tests skip, the rest still run
    FPDF = pytest.importorskip("fpdf", reason="fpdf2 (pip install -e .[dev]) writes the test PDFs").FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


PDF_PAGES = [
    "Alpha page one talks about apples.",
    "Beta page two talks about bananas.",
    "Gamma page three talks about cherries.",
]


def collect():
    warnings: list[LoadWarning] = []
    return warnings, warnings.append


def load_one(path: Path, **kw) -> tuple[list[Document], list[LoadWarning]]:
    warnings, warn = collect()
    files = discover([path], warn)
    assert len(files) == 1, warnings
    docs = load_file(files[0], warn, **kw)
    return docs, warnings


# ---------------------------------------------------------------------------------------------
# small types
# ---------------------------------------------------------------------------------------------


def test_load_warning_str():
    assert str(LoadWarning("/x/a.txt", "skipped: empty file")) == "warning: /x/a.txt: skipped: empty file"
    assert str(LoadWarning("/x/a.jsonl", "bad", line=3)) == "warning: /x/a.jsonl:3: bad"


def test_supported_suffixes():
    assert SUPPORTED_SUFFIXES == {
        ".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".html": "html",
        ".htm": "html", ".pdf": "pdf", ".jsonl": "jsonl", ".json": "json",
    }


def test_content_hash_stable_and_sensitive():
    base = Document("a", "some text", title="T", source="/x", metadata={"b": 1, "a": [1, 2]})
    h = base.content_hash()
    assert len(h) == 64 and h == base.content_hash()
    # key order of metadata, doc_id and source do not matter
    same = Document("other-id", "some text", title="T", source="/y", metadata={"a": [1, 2], "b": 1})
    assert same.content_hash() == h
    assert Document("a", "some text!", title="T", metadata=base.metadata).content_hash() != h
    assert Document("a", "some text", title="T2", metadata=base.metadata).content_hash() != h
    assert Document("a", "some text", title="T", metadata={"b": 2, "a": [1, 2]}).content_hash() != h
    assert Document("a", "some text", title="T", metadata=base.metadata, pages=[(1, 0)]).content_hash() != h
    # no hash randomisation: equal content gives equal hashes
    assert Document("x", "y").content_hash() == Document("x", "y").content_hash()


def test_file_hash(tmp_path):
    import hashlib

    p = tmp_path / "a.txt"
    data = os.urandom(3 * 2**20 + 17)
    p.write_bytes(data)
    (sf,) = discover([p], lambda w: None)
    assert sf.file_hash() == hashlib.sha256(data).hexdigest()
    assert sf.size == len(data)


# ---------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------


def test_missing_path_raises(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InputNotFound) as ei:
        discover([missing], lambda w: None)
    msg = str(ei.value)
    assert "nope" in msg and "no such file or directory" in msg and "\n" not in msg
    assert ei.value.exit_code == 2
    with pytest.raises(InputNotFound):
        load_paths([missing], lambda w: None)


def test_recursive_relative_ids_hidden_and_unsupported(tmp_path):
    root = tmp_path / "docs"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden_dir").mkdir()
    (root / "b.txt").write_text("bee")
    (root / "a.md").write_text("# A\nalpha")
    (root / "sub" / "c.txt").write_text("sea")
    (root / "sub" / "deeper" / "d.HTML").write_text("<p>dee</p>")
    (root / ".secret.txt").write_text("hidden")
    (root / ".hidden_dir" / "e.txt").write_text("hidden too")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / "notes.docx").write_bytes(b"PK")
    warnings, warn = collect()
    files = discover([root], warn)
    assert warnings == []
    assert [f.rel for f in files] == ["a.md", "b.txt", "sub/c.txt", "sub/deeper/d.HTML"]
    assert [f.kind for f in files] == ["md", "txt", "txt", "html"]
    for f in files:
        assert f.path.is_absolute() and f.root == root.resolve()
    docs = load_paths([root], warn)
    assert [d.doc_id for d in docs] == ["a.md", "b.txt", "sub/c.txt", "sub/deeper/d.HTML"]
    assert docs[2].source == str((root / "sub" / "c.txt").resolve())
    # discovery is deterministic
    assert discover([root], warn) == files


def test_file_given_directly(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "x.txt"
    p.write_text("hello")
    (sf,) = discover([str(p)], lambda w: None)
    assert sf.rel == "x.txt" and sf.root == (tmp_path / "sub").resolve() and sf.kind == "txt"


def test_unsupported_file_given_directly_warns(tmp_path):
    p = tmp_path / "report.docx"
    p.write_bytes(b"PK\x03\x04")
    good = tmp_path / "ok.txt"
    good.write_text("fine")
    warnings, warn = collect()
    files = discover([p, good], warn)
    assert [f.rel for f in files] == ["ok.txt"]
    assert len(warnings) == 1 and "report.docx" in str(warnings[0]) and "unsupported" in warnings[0].reason


def test_symlink_loop_terminates_and_dedupes(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "top.txt").write_text("top")
    (root / "sub" / "inner.txt").write_text("inner")
    os.symlink(root, root / "sub" / "loop")  # sub/loop -> root: a cycle
    os.symlink(root / "sub", root / "alias")  # a second way to reach sub/
    os.symlink(root / "top.txt", root / "sub" / "link-to-top.txt")
    warnings, warn = collect()
    files = discover([root, root / "sub", root / "top.txt"], warn)
    assert warnings == []
    paths = [f.path for f in files]
    assert len(paths) == len(set(paths)) == 2
    # first reached in sorted walk order wins: "alias" sorts before "sub" and "top.txt"
    assert [f.rel for f in files] == ["alias/inner.txt", "alias/link-to-top.txt"]
    assert {f.path for f in files} == {(root / "sub" / "inner.txt").resolve(), (root / "top.txt").resolve()}


def test_symlinked_dir_is_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.txt").write_text("outside text")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "linked")
    files = discover([root], lambda w: None)
    assert [f.rel for f in files] == ["linked/o.txt"]
    assert files[0].path == (outside / "o.txt").resolve()


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------


def test_txt(tmp_path):
    p = tmp_path / "notes.text"
    p.write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")  # BOM + CRLF
    (doc,), warnings = load_one(p)
    assert warnings == []
    assert doc.doc_id == "notes.text" and doc.title == "notes"
    assert doc.text == "line one\nline two\n"
    assert doc.source == str(p.resolve()) and doc.pages is None and doc.metadata == {}


def test_markdown_title(tmp_path):
    p = tmp_path / "guide.md"
    p.write_text("```bash\n# not a title\n```\n\nIntro\n\n## Sub\n\n# Real Title #\n\nBody\n")
    (doc,), _ = load_one(p)
    assert doc.title == "Real Title"
    assert doc.text.startswith("```bash")
    q = tmp_path / "plain.markdown"
    q.write_text("no heading here\n#notaheading\n")
    (doc,), _ = load_one(q)
    assert doc.title == "plain"


def test_html(tmp_path):
    p = tmp_path / "page.html"
    p.write_text(
        "<!DOCTYPE html><html><head><title> The  Page </title><style>body{color:red}</style>"
        "<script>var x = 'hidden';</script></head><body>"
        "<noscript>enable js</noscript><template><p>tmpl</p></template>"
        "<svg><text>svgtext</text></svg><!-- a comment -->"
        "<h1>Heading</h1><p>Fish &amp; chips\n   cost &pound;5 with <b>bold</b> words.</p>"
        "<ul><li>one</li><li>two</li></ul><div>last<br>line</div>"
        "<script>alert(1)</script></body></html>"
    )
    (doc,), warnings = load_one(p)
    assert warnings == []
    assert doc.title == "The Page"
    assert doc.text == "Heading\n\nFish & chips cost £5 with bold words.\n\none\ntwo\n\nlast\nline"
    for hidden in ("hidden", "color", "enable js", "tmpl", "svgtext", "comment", "alert"):
        assert hidden not in doc.text


def test_html_title_fallbacks(tmp_path):
    a = tmp_path / "a.htm"
    a.write_text("<body><h1>First <i>H1</i></h1><h1>Second</h1><p>x</p></body>")
    (doc,), _ = load_one(a)
    assert doc.title == "First H1"
    b = tmp_path / "b.html"
    b.write_text("<p>just text</p>")
    (doc,), _ = load_one(b)
    assert doc.title == "b" and doc.text == "just text"


def test_pdf_pages_and_offsets(tmp_path):
    p = tmp_path / "report.pdf"
    p.write_bytes(make_pdf(PDF_PAGES, title="Quarterly Report"))
    (doc,), warnings = load_one(p)
    assert warnings == []
    assert doc.doc_id == "report.pdf"
    assert doc.title == "Quarterly Report"
    assert doc.metadata == {"page_count": 3}
    assert [n for n, _ in doc.pages] == [1, 2, 3]
    offsets = [o for _, o in doc.pages]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    for (n, start), expected in zip(doc.pages, PDF_PAGES):
        assert doc.text[start:].startswith(expected), (n, doc.text[start:start + 40])
    assert doc.text.split("\n\n") == PDF_PAGES


def test_pdf_blank_page_skipped_and_title_fallback(tmp_path):
    p = tmp_path / "scan.pdf"
    p.write_bytes(make_pdf(["First page.", "", "Third page."]))
    (doc,), warnings = load_one(p)
    assert warnings == []
    assert doc.title == "scan"
    assert doc.metadata == {"page_count": 3}
    assert doc.pages == [(1, 0), (3, len("First page.") + 2)]


def test_pdf_image_only_warns(tmp_path):
    p = tmp_path / "blank.pdf"
    p.write_bytes(make_pdf(["", ""]))
    docs, warnings = load_one(p)
    assert docs == [] and len(warnings) == 1
    assert "no extractable text" in warnings[0].reason


def test_pdf_page_failure_warns_once_and_keeps_rest(tmp_path, monkeypatch):
    import pypdf

    p = tmp_path / "partial.pdf"
    p.write_bytes(make_pdf(PDF_PAGES))
    original = pypdf.PageObject.extract_text

    def flaky(self, *a, **kw):
        text = original(self, *a, **kw)
        if "Beta" in text:
            raise ValueError("boom")
        return text

    monkeypatch.setattr(pypdf.PageObject, "extract_text", flaky)
    (doc,), warnings = load_one(p)
    assert len(warnings) == 1 and "page 2" in warnings[0].reason
    assert [n for n, _ in doc.pages] == [1, 3]
    assert "Beta" not in doc.text and "Gamma" in doc.text


def test_jsonl_with_metadata(tmp_path):
    p = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "d1", "title": "One", "text": "first doc", "url": "http://x", "tags": ["a", "b"]},
        {"id": 42, "text": "second doc", "score": 0.5, "nested": {"k": None}},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n   \n")
    docs, warnings = load_one(p)
    assert warnings == []
    assert [d.doc_id for d in docs] == ["d1", "42"]
    assert docs[0].title == "One" and docs[0].text == "first doc"
    assert docs[0].metadata == {"url": "http://x", "tags": ["a", "b"]}
    assert docs[1].title == "" and docs[1].metadata == {"score": 0.5, "nested": {"k": None}}
    assert all(d.source == str(p.resolve()) for d in docs)


def test_jsonl_each_bad_line_warned_with_line_number(tmp_path):
    p = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"id": "ok1", "text": "good"}),  # 1
        "{not json",  # 2
        json.dumps([1, 2]),  # 3
        json.dumps({"text": "no id"}),  # 4
        json.dumps({"id": "x", "text": 5}),  # 5
        json.dumps({"id": "y"}),  # 6
        json.dumps({"id": "z", "text": "   "}),  # 7
        json.dumps({"id": "ok1", "text": "dupe"}),  # 8
        json.dumps({"id": "ok2", "text": "also good"}),  # 9
    ]
    p.write_text("\n".join(lines))
    docs, warnings = load_one(p)
    assert [d.doc_id for d in docs] == ["ok1", "ok2"] and docs[0].text == "good"
    assert [w.line for w in warnings] == [2, 3, 4, 5, 6, 7, 8]
    for w in warnings:
        assert f"mixed.jsonl:{w.line}:" in str(w) and f"line {w.line}" in w.reason
    assert "duplicate" in warnings[-1].reason and "line 1" in warnings[-1].reason


def test_squad_json(tmp_path):
    squad = {
        "version": "1.1",
        "data": [
            {
                "title": "Super_Bowl_50",
                "paragraphs": [
                    {"context": "Super Bowl 50 was an American football game.",
                     "qas": [{"id": "q1", "question": "What?", "answers": []},
                             {"id": "q2", "question": "Who?", "answers": []}]},
                    {"context": "The game was played in 2016.", "qas": []},
                ],
            },
            {"title": "Normans", "paragraphs": [{"context": "The Normans were...", "qas": [{"id": "q3"}]}]},
        ],
    }
    p = tmp_path / "dev-v1.1.json"
    p.write_text(json.dumps(squad))
    docs, warnings = load_one(p)
    assert warnings == []
    assert [d.doc_id for d in docs] == ["Super_Bowl_50#0", "Super_Bowl_50#1", "Normans#0"]
    d0 = docs[0]
    assert d0.title == "Super Bowl 50" and d0.text == "Super Bowl 50 was an American football game."
    assert d0.metadata == {"article": "Super_Bowl_50", "paragraph": 0, "question_ids": ["q1", "q2"]}
    assert docs[1].metadata["paragraph"] == 1 and docs[1].metadata["question_ids"] == []
    assert docs[2].metadata == {"article": "Normans", "paragraph": 0, "question_ids": ["q3"]}


def test_non_squad_json_warns(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"name": "x", "items": [1, 2]}))
    docs, warnings = load_one(p)
    assert docs == [] and len(warnings) == 1
    assert "not a SQuAD-format json file; use .jsonl with one document per line" in warnings[0].reason


def test_too_large_file_warns(tmp_path):
    p = tmp_path / "big.txt"
    p.write_text("x" * 5000)
    docs, warnings = load_one(p, max_bytes=1000)
    assert docs == [] and len(warnings) == 1 and "larger than" in warnings[0].reason


def test_unreadable_file_warns(tmp_path):
    p = tmp_path / "gone.txt"
    p.write_text("x")
    (sf,) = discover([p], lambda w: None)
    p.unlink()
    p.mkdir()  # now reading it raises IsADirectoryError (an OSError)
    warnings, warn = collect()
    assert load_file(sf, warn) == []
    assert len(warnings) == 1 and "gone.txt" in str(warnings[0]) and "cannot read" in warnings[0].reason


def test_load_paths_duplicate_ids_across_roots(tmp_path):
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.txt").write_text(f"readme {name}")
    warnings, warn = collect()
    docs = load_paths([tmp_path / "one", tmp_path / "two"], warn)
    assert [d.text for d in docs] == ["readme one"]
    assert len(warnings) == 1 and "README.txt" in warnings[0].reason


# ---------------------------------------------------------------------------------------------
# broken files: exactly one warning each, good neighbours still load
# ---------------------------------------------------------------------------------------------

_GOOD_JSONL = [json.dumps({"id": f"g{i}", "text": f"good line {i}"}) for i in range(3)]


def _broken_cases():
    real_pdf = make_pdf(PDF_PAGES)
    return [
        ("empty.txt", b"", None, "empty"),
        ("spaces.md", b"  \n\t\n   ", None, "whitespace"),
        ("binary.txt", b"\x00\x01\x02\x03 some\x00data", None, "binary"),
        ("latin1.txt", "café crème".encode("latin-1"), None, "UTF-8"),
        ("truncated.pdf", real_pdf[: len(real_pdf) // 2], None, "PDF"),
        ("garbage.pdf", b"this is not a pdf at all\n" * 20, None, "PDF"),
        ("header-garbage.pdf", b"%PDF-1.4\n" + b"\x13\x37 junk " * 200, None, "PDF"),
        ("onebad.jsonl", ("\n".join(_GOOD_JSONL[:2] + ['{"id": "b", "text": ']
                                    + _GOOD_JSONL[2:]) + "\n").encode(), 3, "line 3"),
        ("minified.txt", b"a" * 2_000_000, 1, "2,000,000"),
        ("invalid.json", b'{\n  "data": [\n    {"title": "x",,}\n  ]\n}\n', 3, "not valid JSON"),
    ]


@pytest.mark.parametrize("name,data,line,needle", _broken_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_broken_file_one_warning(tmp_path, name, data, line, needle):
    folder = tmp_path / "in"
    folder.mkdir()
    bad = folder / name
    bad.write_bytes(data)
    (folder / "good.txt").write_text("a perfectly fine document")
    (folder / "good.md").write_text("# Fine\n\nmarkdown body")
    warnings, warn = collect()
    docs = load_paths([folder], warn)
    assert len(warnings) == 1, [str(w) for w in warnings]
    w = warnings[0]
    text = str(w)
    assert name in text and text.startswith("warning: ") and "\n" not in text
    assert needle in text
    if line is not None:
        assert w.line == line and f"{name}:{line}:" in text
    ids = {d.doc_id for d in docs}
    assert {"good.txt", "good.md"} <= ids
    if name.endswith(".jsonl"):
        assert {"g0", "g1", "g2"} <= ids
    else:
        assert name not in ids
    assert all(d.text.strip() for d in docs)


def test_utf8_error_reports_offset(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"hello world!\xff rest")
    docs, warnings = load_one(p)
    assert docs == []
    assert warnings[0].reason == "skipped: not valid UTF-8 (byte 0xff at offset 12); convert it to UTF-8"


def test_long_line_limit_is_configurable(tmp_path):
    p = tmp_path / "page.html"
    p.write_text("<p>" + "word " * 100 + "</p>")
    docs, warnings = load_one(p, max_line_chars=50)
    assert docs == [] and len(warnings) == 1 and "minified" in warnings[0].reason
    docs, warnings = load_one(p)
    assert len(docs) == 1 and warnings == []


def test_sourcefile_is_frozen(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("x")
    (sf,) = discover([p], lambda w: None)
    assert isinstance(sf, SourceFile)
    with pytest.raises(Exception):
        sf.rel = "b"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# bad input that used to break things
# ---------------------------------------------------------------------------------------------


def _make_file(folder: Path, raw_name: bytes, data: bytes) -> Path:
    path = folder / os.fsdecode(raw_name)
    try:
        path.write_bytes(data)
    except (OSError, UnicodeEncodeError):
        pytest.skip(f"this file system does not take the name {raw_name!r}")
    return path


def _storable_everywhere(doc: Document) -> None:
    import sqlite3

    for s in (doc.doc_id, doc.title, doc.source, json.dumps(doc.metadata, ensure_ascii=False)):
        s.encode("utf-8")
    json.dumps({"id": doc.doc_id, "source": doc.source}, ensure_ascii=False).encode("utf-8")
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE d (id TEXT, title TEXT, source TEXT, text TEXT)")
    db.execute("INSERT INTO d VALUES (?, ?, ?, ?)", (doc.doc_id, doc.title, doc.source, doc.text))
    assert len(doc.content_hash()) == 64


def test_file_name_that_is_not_utf8_is_loaded_under_a_storable_id(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    bad = _make_file(folder, b"bad\xff.txt", b"text of the badly named file")
    (folder / "good.txt").write_text("text of the good file")
    warnings, warn = collect()
    files = discover([folder], warn)
    assert sorted(f.rel for f in files) == ["bad\ufffd.txt", "good.txt"]
    docs = [d for sf in files for d in load_file(sf, warn)]
    assert warnings == []
    by_id = {d.doc_id: d for d in docs}
    assert set(by_id) == {"bad\ufffd.txt", "good.txt"}
    d = by_id["bad\ufffd.txt"]
    assert d.text == "text of the badly named file" and d.title == "bad\ufffd"
    assert d.source == str(bad.resolve()).replace("\udcff", "\ufffd")
    for doc in docs:
        _storable_everywhere(doc)
    (sf,) = [f for f in files if f.rel.startswith("bad")]
    assert sf.path == bad.resolve() and sf.source == d.source  # the real name still reads the file
    # in messages the byte is spelled out, so the user can tell which file it is
    assert str(LoadWarning(str(sf.path), "skipped: empty file")).endswith("bad\\xff.txt: skipped: empty file")
    assert [x.doc_id for x in load_paths([folder], warn)] == ["bad\ufffd.txt", "good.txt"]
    assert [x.doc_id for x in load_paths([bad], warn)] == ["bad\ufffd.txt"]  # named directly


def test_index_build_with_a_file_name_that_is_not_utf8(tmp_path):
    from ragqa import Index
    from ragqa.config import Settings

    folder = tmp_path / "in"
    folder.mkdir()
    _make_file(folder, b"bad\xff.txt", b"Badgers dig setts in the woods.")
    (folder / "good.txt").write_text("Otters swim in rivers.")
    settings = Settings(embedder="fake:32", cache_dir=tmp_path / "cache", threads=1)
    report = Index.build([folder], tmp_path / "idx", settings)
    assert report.documents == 2 and report.skipped == 0
    with Index.open(tmp_path / "idx", settings) as idx:
        assert {d["doc_id"] for d in idx.documents()} == {"bad\ufffd.txt", "good.txt"}


def test_lone_surrogate_escapes_in_json_become_replacement_characters(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a\\udcff", "text": "broken \\ud800 pair, fine \\ud83d\\ude00", "k": ["\\udfff"]}\n')
    (doc,), warnings = load_one(p)
    assert warnings == []
    assert doc.doc_id == "a\ufffd" and doc.text == "broken \ufffd pair, fine \U0001f600"
    assert doc.metadata == {"k": ["\ufffd"]}
    _storable_everywhere(doc)
    q = tmp_path / "squad.json"
    q.write_text(json.dumps({"data": [{"title": "T\ud800", "paragraphs": [{"context": "c\udc80"}]}]}))
    (doc,), warnings = load_one(q)
    assert warnings == [] and doc.doc_id == "T\ufffd#0" and doc.text == "c\ufffd"


def test_content_hash_is_unchanged_and_never_raises(monkeypatch):
    import hashlib

    import ragqa.indexing.documents as documents

    def before(d):  # the formula of earlier versions: indexes built by them must not re-embed
        payload = {"title": d.title, "text": d.text, "metadata": d.metadata,
                   "pages": [list(p) for p in d.pages] if d.pages is not None else None}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    docs = [
        Document("a", "", title=""),
        Document("b", 'quote " back\\slash\n\ttab \x01 ctl é 日本 \U0001f600 \u2028', title='T "x"',
                 metadata={"z": 1, "a": {"y": [1.5, None, True]}, "p": Path("/p")}, pages=[(1, 0), (2, 5)]),
        Document("c", "x" * 50 + "\\" * 7 + '"' * 3),
    ]
    for slice_chars in (documents._HASH_SLICE, 1, 7):
        monkeypatch.setattr(documents, "_HASH_SLICE", slice_chars)
        for d in docs:
            assert d.content_hash() == before(d), (slice_chars, d.doc_id)
    assert len(Document("d", "lone \udcff surrogate", title="\ud800").content_hash()) == 64


def test_html_without_closing_head_keeps_its_body(tmp_path):
    p = tmp_path / "open-head.html"
    p.write_text("<html><head><title>T</title><body><p>Visible text here.</p></body></html>")
    (doc,), warnings = load_one(p)
    assert warnings == []
    assert doc.title == "T" and doc.text == "Visible text here."
    q = tmp_path / "no-body.html"
    q.write_text('<html><head><meta charset="utf-8"><title>Only Head</title><link rel="x" href="y">'
                 "<style>p{}</style><script>var hidden;</script><h1>Heading</h1><p>Body text.</p>")
    (doc,), warnings = load_one(q)
    assert warnings == []
    assert doc.title == "Only Head" and doc.text == "Heading\n\nBody text."


def test_squad_bad_article_and_paragraph_skip_only_themselves(tmp_path):
    squad = {"data": [
        {"title": "Good", "paragraphs": [{"context": "First good paragraph.", "qas": [{"id": "q1"}]},
                                          {"qas": [{"id": "q2"}]},  # no context
                                          "not a paragraph",
                                          {"context": "Third good paragraph."}]},
        {"title": "Broken"},  # no paragraphs
        {"title": "Odd", "paragraphs": "oops"},
        ["not", "an", "article"],
        {"title": "Also_Good", "paragraphs": [{"context": "Another article."}]},
    ]}
    p = tmp_path / "mixed-squad.json"
    p.write_text(json.dumps(squad))
    docs, warnings = load_one(p)
    assert [d.doc_id for d in docs] == ["Good#0", "Good#3", "Also_Good#0"]
    assert docs[0].metadata["question_ids"] == ["q1"]
    assert len(warnings) == 2, [str(w) for w in warnings]
    articles, paragraphs = (str(w) for w in warnings)
    assert "mixed-squad.json" in articles and '3 article(s) without a "paragraphs" array' in articles
    assert "#1 'Broken' (no \"paragraphs\")" in articles
    assert "#2 'Odd' (\"paragraphs\" is a string, not an array)" in articles
    assert "#3 'article_3' (an array, not an object)" in articles
    assert "mixed-squad.json" in paragraphs and '2 paragraph(s) with a missing or empty "context"' in paragraphs
    assert "'Good' #1" in paragraphs and "'Good' #2 (a string, not an object)" in paragraphs
    assert all("\n" not in str(w) for w in warnings)


def test_json_with_no_squad_article_at_all_is_not_squad(tmp_path):
    p = tmp_path / "api.json"
    p.write_text(json.dumps({"data": [{"id": 1}, {"id": 2}]}))
    docs, warnings = load_one(p)
    assert docs == [] and len(warnings) == 1 and "not a SQuAD-format json file" in warnings[0].reason


@pytest.mark.parametrize("raw, shown", [
    ("plain/name.txt", "plain/name.txt"),
    ("a\nerror: b.txt", "a\\nerror: b.txt"),
    ("tab\there\r.txt", "tab\\there\\r.txt"),
    ("esc\x1b[31m.txt", "esc\\x1b[31m.txt"),
    ("ls\u2028ps\u2029.txt", "ls\\u2028ps\\u2029.txt"),
    ("rtl\u202egnp.txt", "rtl\\u202egnp.txt"),
    (os.fsdecode(b"bad\xff.txt"), "bad\\xff.txt"),
    ("café 日本 back\\slash.txt", "café 日本 back\\slash.txt"),
])
def test_printable(raw, shown):
    from ragqa.indexing.documents import printable

    assert printable(raw) == shown
    assert len(printable(raw).splitlines()) == 1 and printable(printable(raw)) == printable(raw)


def test_newline_in_a_file_name_gives_a_one_line_warning(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _make_file(folder, b"two\nerror: lines.txt", b"")  # empty: one warning
    (folder / "good.txt").write_text("fine")
    warnings, warn = collect()
    docs = load_paths([folder], warn)
    assert [d.doc_id for d in docs] == ["good.txt"]
    assert len(warnings) == 1
    text = str(warnings[0])
    assert text.splitlines() == [text] and text.endswith("two\\nerror: lines.txt: skipped: empty file")
    assert str(LoadWarning("/x/a\nb.jsonl", "bad\nreason", line=3)) == "warning: /x/a\\nb.jsonl:3: bad\\nreason"
    with pytest.raises(InputNotFound) as ei:
        discover([tmp_path / "missing\nfile.txt"], warn)
    assert "\n" not in str(ei.value) and "missing\\nfile.txt" in str(ei.value)


@pytest.mark.parametrize("size, limit, expected", [
    (20 * 2**20 + 1, 20 * 2**20, ("20,971,521 bytes", "20,971,520 bytes (20 MiB)")),
    (25 * 2**20 + 300_000, 20 * 2**20, ("25.3 MiB", "20 MiB")),
    (2049, 2048, ("2,049 bytes", "2,048 bytes (2 KiB)")),
    (101, 100, ("101 bytes", "100 bytes")),
    (3 * 2**30, 200 * 2**20, ("3 GiB", "200 MiB")),
])
def test_size_vs_limit(size, limit, expected):
    from ragqa.indexing.documents import size_vs_limit

    assert size_vs_limit(size, limit) == expected


def test_too_large_file_shows_the_difference(tmp_path):
    p = tmp_path / "big.txt"
    p.write_text("x" * 2049)
    docs, warnings = load_one(p, max_bytes=2048)
    assert docs == [] and warnings[0].reason == (
        "skipped: file is 2,049 bytes, larger than the limit of 2,048 bytes (2 KiB)")


def test_upload_just_over_the_limit_says_by_how_much(tmp_path):
    from ragqa.apps.uploads import save_uploads

    limit = 20 * 2**20
    saved, problems = save_uploads([("big.pdf", b"x" * (limit + 1)), ("ok.txt", b"fine")], tmp_path / "up", limit)
    assert [p.name for p in saved] == ["ok.txt"]
    assert problems == ["big.pdf: too large (20,971,521 bytes > the limit of 20,971,520 bytes (20 MiB)); "
                        "upload a smaller file"]
    _, problems = save_uploads([("huge.txt", b"x" * (limit + 5 * 2**20))], tmp_path / "up", limit)
    assert problems == ["huge.txt: too large (25 MiB > the limit of 20 MiB); upload a smaller file"]


def test_upload_name_with_a_newline_is_reported_on_one_line(tmp_path):
    from ragqa.apps.uploads import save_uploads

    _, problems = save_uploads([("a\nerror: b.exe", b"MZ"), ("e\r\n.md", b"")], tmp_path / "up", 100)
    assert len(problems) == 2 and all(len(p.splitlines()) == 1 for p in problems)
    assert problems[0].startswith("a\\nerror: b.exe: unsupported file type")
    assert problems[1] == "e\\r\\n.md: empty file"
