"""The Streamlit UI without a browser (streamlit.testing AppTest, fake generator and embedder), and
its library parts: upload handling, feedback, the launcher."""

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from conftest import ROOT, write_corpus
from ragqa.apps.feedback import feedback_path, read_feedback, record_feedback
from ragqa.apps.uploads import add_uploads, safe_filename, save_uploads, uploads_folder

APP = str(ROOT / "ui" / "app.py")


# ------------------------------------------------------------------------------------ the app

@pytest.fixture
def index_dir(tmp_path, settings):
    from ragqa.indexing.index import Index

    Index.build([write_corpus(tmp_path / "docs")], tmp_path / "indexes" / "main", settings)
    return tmp_path / "indexes" / "main"


@pytest.fixture
def app(index_dir, tmp_path, monkeypatch):
    """A fresh AppTest of ui/app.py over the tmp index (fake generator and embedder)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RAGQA_MODEL", "fake")
    monkeypatch.setenv("RAGQA_EMBEDDER", "fake:32")
    monkeypatch.setenv("RAGQA_THREADS", "1")
    monkeypatch.setenv("RAGQA_ABSTAIN_THRESHOLD", "-1")
    monkeypatch.setenv("RAGQA_UI_INDEX", str(index_dir))
    monkeypatch.setenv("RAGQA_UI_INDEXES", str(tmp_path / "indexes"))
    monkeypatch.setenv("RAGQA_VARIANTS_DIR", str(tmp_path / "adapters"))

    def make():
        at = AppTest.from_file(APP, default_timeout=30)
        at.run()
        assert not at.exception, at.exception
        return at

    return make


def ask(at, question: str):
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at.chat_message[-1]


def texts(block) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "warning", "error", "success", "info")
                     for e in getattr(block, kind))


def test_question_gets_a_streamed_answer_with_sources(app):
    at = app()
    assert at.selectbox(key="variant").options == ["base", "fake-lora"]
    reply = ask(at, "Where do bees make honey?")
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    body = texts(reply)
    assert "[1]" in reply.markdown[0].value  # the fake copies passage [1] and cites it
    assert "Cited: **[1]**" in body and "variant **base**" in body and "retrieve" in body
    sources = reply.expander[0]
    assert sources.label.startswith("Sources (")
    assert "score" in texts(sources) and "<mark>" in texts(sources)  # the cited sentence is marked
    answer = at.session_state["messages"][-1]["answers"][0]
    assert not answer.abstained and answer.sources[0].cited and answer.variant == "base"


def test_follow_up_passes_the_history(app):
    at = app()
    ask(at, "Where do bees make honey?")
    reply = ask(at, "And what about penguins?")
    first, second = (m["answers"][0] for m in at.session_state["messages"] if m["role"] == "assistant")
    assert "rewrite_ms" not in first.timings
    assert "rewrite_ms" in second.timings  # only a question with history is rewritten
    assert "rewrite" in texts(reply)
    assert len(at.chat_message) == 4


def test_switching_the_variant_changes_who_answers(app):
    at = app()
    at.selectbox(key="variant").select("fake-lora").run()
    card = texts(at.sidebar.expander[0])
    assert "lora" in card and "fake-generator" in card
    reply = ask(at, "Where do bees make honey?")
    assert "(fake-lora)" in reply.markdown[0].value and "variant **fake-lora**" in texts(reply)
    assert at.session_state["messages"][-1]["answers"][0].variant == "fake-lora"


def test_compare_mode_answers_with_two_variants(app):
    at = app()
    at.toggle(key="compare").set_value(True).run()
    assert at.selectbox(key="variant_b").value == "fake-lora"
    ask(at, "Where do bees make honey?")
    answers = at.session_state["messages"][-1]["answers"]
    assert [a.variant for a in answers] == ["base", "fake-lora"]
    body = texts(at.chat_message[-1])
    assert "variant **base**" in body and "variant **fake-lora**" in body and " prompt tokens in " in body and "wrote " in body


def test_off_topic_question_says_i_dont_know_with_the_reason(app, monkeypatch):
    monkeypatch.setenv("RAGQA_ABSTAIN_THRESHOLD", "0.99")
    at = app()
    reply = ask(at, "What is the airspeed of an unladen swallow?")
    warning = reply.warning[0].value
    assert "I don't know" in warning and "threshold" in warning
    assert at.session_state["messages"][-1]["answers"][0].abstained


def test_a_damaged_index_is_not_served(app, index_dir):
    from ragqa.indexing.storage import IndexDir

    chunks = IndexDir(index_dir).current() / "chunks.sqlite"
    data = bytearray(chunks.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunks.write_bytes(bytes(data))
    at = app()
    assert not at.chat_input  # no question can be asked of it
    error = at.error[0].value
    assert "chunks.sqlite: damaged" in error and "--rebuild" in error


def test_settings_reach_the_pipeline(app):
    at = app()
    at.slider(key="top_k").set_value(2).run()
    at.selectbox(key="mode").select("dense").run()
    ask(at, "Where do bees make honey?")
    answer = at.session_state["messages"][-1]["answers"][0]
    assert len(answer.sources) == 2
    at.number_input(key="max_new_tokens").set_value(8).run()
    ask(at, "Where do bees make honey?")
    assert at.session_state["messages"][-1]["answers"][0].timings["new_tokens"] <= 8


def test_feedback_is_appended_beside_the_index(app, index_dir):
    at = app()
    ask(at, "Where do bees make honey?")
    at.feedback[0].set_value(1).run()
    assert not at.exception
    [entry] = read_feedback(index_dir)
    assert entry["verdict"] == "up" and entry["question"] == "Where do bees make honey?"
    assert entry["variant"] == "base" and entry["answer"] and entry["sources"][0]["doc_id"]
    assert "time" in entry
    assert feedback_path(index_dir).parent == index_dir.parent  # beside, not inside, the index
    assert "Feedback recorded" in texts(at.chat_message[-1])


def test_clearing_the_conversation_starts_fresh_feedback(app, index_dir):
    at = app()
    ask(at, "Where do bees make honey?")
    at.feedback[0].set_value(0).run()
    at.button(key="clear").click().run()
    assert not at.chat_message
    ask(at, "Where do bees make honey?")
    assert at.feedback[0].value is None and "Feedback recorded" not in texts(at.chat_message[-1])
    assert [e["verdict"] for e in read_feedback(index_dir)] == ["down"]


def test_index_picker_lists_indexes(app, index_dir, settings, tmp_path):
    from ragqa.indexing.index import Index

    Index.build([write_corpus(tmp_path / "other", n=2)], index_dir.parent / "other", settings)
    at = app()
    picker = at.selectbox(key="index")
    assert [Path(o).name for o in picker.options] == ["main", "other"]
    picker.select(picker.options[1]).run()
    assert "2 documents" in texts(at.sidebar)


def test_upload_adds_good_files_and_names_the_broken_one(app, index_dir):
    at = app()
    assert "5 documents" in texts(at.sidebar)
    at.sidebar.file_uploader[0].set_value([
        ("notes.txt", b"Glaciers carve valleys over thousands of years.", "text/plain"),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf"),
    ]).run()
    at.button(key="add_docs").click().run()
    assert not at.exception, at.exception
    side = texts(at.sidebar)
    assert "1 added" in side and "broken.pdf" in side
    assert "6 documents" in side  # the pipeline reopened the new index version
    assert (uploads_folder(index_dir) / "notes.txt").is_file()


# ------------------------------------------------------------------------------------ uploads

@pytest.mark.parametrize("name, expected", [
    ("../../etc/passwd", "passwd"),
    ("/etc/passwd", "passwd"),
    ("C:\\Users\\me\\report.pdf", "report.pdf"),
    ("..\\..\\windows\\win.ini", "win.ini"),
    ("", "upload"),
    ("..", "upload"),
    ("...", "upload"),
    (".bashrc", "bashrc"),
    (".hidden.txt", "hidden.txt"),
    ("résumé 2024.pdf", "résumé 2024.pdf"),
    ("東京.md", "東京.md"),
    ("a<b>c|d?.txt", "a_b_c_d_.txt"),
    ("tab\tand\nnewline\x00.txt", "tab_and_newline_.txt"),
    ("-rf.txt", "rf.txt"),
    ("CON.txt", "_CON.txt"),
])
def test_safe_filename(name, expected):
    assert safe_filename(name) == expected


def test_safe_filename_limits_the_length_and_keeps_the_suffix():
    name = safe_filename("é" * 300 + ".pdf")
    assert name.endswith(".pdf") and len(name.encode("utf-8")) <= 255
    assert "/" not in safe_filename("a/" * 50 + "b.txt")


def test_save_uploads_limits_renames_and_reports(tmp_path):
    folder = tmp_path / "uploads"
    files = [("../a.txt", b"one"), ("a.txt", b"two"), ("big.pdf", b"x" * 101), ("a.txt", b"one"),
             ("empty.md", b""), ("run.exe", b"MZ"), ("/abs/b.md", b"# B")]
    saved, problems = save_uploads(files, folder, max_bytes=100)
    assert [p.name for p in saved] == ["a.txt", "a-1.txt", "a.txt", "b.md"]  # same bytes: same file
    assert (folder / "a.txt").read_bytes() == b"one" and (folder / "a-1.txt").read_bytes() == b"two"
    assert all(p.parent == folder.resolve() for p in saved)
    assert len(problems) == 3
    assert problems[0].startswith("big.pdf: too large")
    assert problems[1].startswith("empty.md: empty")
    assert problems[2].startswith("run.exe: unsupported")
    assert sorted(p.name for p in folder.iterdir()) == ["a-1.txt", "a.txt", "b.md"]  # no temp files left
    assert not (tmp_path / "a.txt").exists()


def test_save_uploads_never_overwrites_a_reserved_or_existing_file(tmp_path):
    folder = tmp_path / "up"
    folder.mkdir()
    (folder / "doc.txt").write_bytes(b"old")
    saved, problems = save_uploads([("doc.txt", b"new"), ("x.txt", b"x")], folder, 100, reserved={"x.txt"})
    assert [p.name for p in saved] == ["doc-1.txt", "x-1.txt"] and not problems
    assert (folder / "doc.txt").read_bytes() == b"old"


def test_add_uploads_indexes_the_good_files(index_dir, settings):
    result = add_uploads([("good.md", b"# Glaciers\n\nGlaciers carve valleys."),
                          ("doc0.txt", b"Same name as a corpus document, other text."),
                          ("bad.html", b"\x00\x01\x02binary"), ("huge.txt", b"x" * 50)],
                         index_dir, settings, max_bytes=48)
    assert result.added == 2 and result.documents == 7, result
    assert any(p.startswith("huge.txt: too large") for p in result.problems)
    assert any(p.startswith("bad.html:") for p in result.problems)
    # the corpus' own doc0.txt is kept: the upload of the same name was saved as doc0-1.txt
    assert {p.name for p in result.saved} == {"good.md", "doc0-1.txt", "bad.html"}
    again = add_uploads([("good.md", b"# Glaciers\n\nGlaciers carve valleys.")], index_dir, settings)
    assert again.version is None and again.unchanged == 7 and not again.problems


# ------------------------------------------------------------------------------------ feedback

def test_record_feedback_appends_whole_lines(tmp_path):
    index = tmp_path / "indexes" / "x"
    threads = [threading.Thread(target=record_feedback, args=(index, {"verdict": "up", "n": i, "pad": "y" * 5000}))
               for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    lines = feedback_path(index).read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["n"] for line in lines) == list(range(8))
    assert feedback_path(index) == tmp_path / "indexes" / "x.feedback.jsonl"


# ------------------------------------------------------------------------------------ launcher

def test_launch_command(tmp_path, monkeypatch):
    from ragqa.apps import ui_launch

    cmd = ui_launch.command(tmp_path / "idx", 8765)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"] and Path(cmd[4]) == Path(APP)
    flags = dict(zip(cmd[5:cmd.index("--")][::2], cmd[5:cmd.index("--")][1::2]))
    assert flags["--server.port"] == "8765" and flags["--server.headless"] == "true"
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.fileWatcherType"] == "none"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert cmd[-2:] == ["--index", str((tmp_path / "idx").resolve())]

    seen = {}

    class FakePopen:
        def __init__(self, cmd, env):
            seen.update(cmd=cmd, env=env)

        def wait(self, timeout=None):
            return 3

    monkeypatch.setattr(ui_launch.subprocess, "Popen", FakePopen)
    (tmp_path / "idx").mkdir()
    assert ui_launch.launch(tmp_path / "idx", 8765) == 3
    assert seen["env"]["RAGQA_UI_INDEX"] == str((tmp_path / "idx").resolve())
    from ragqa.errors import RagqaError

    with pytest.raises(RagqaError, match="no such index"):
        ui_launch.launch(tmp_path / "missing", 8765)
    assert os.path.isfile(ui_launch.app_path())
