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
    assert at.selectbox(key="variant:fake").options == ["base", "fake-lora"]
    reply = ask(at, "Where do bees make honey?")
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    body = texts(reply)
    assert "[1]" in reply.markdown[0].value  # the fake copies passage [1] and cites it
    assert "class='ragqa-cite'>[1]</a>" in body and "variant **base**" in body and "searched in" in body
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
    assert "rewrote the follow-up in" in texts(reply)
    assert len(at.chat_message) == 4


def test_switching_the_variant_changes_who_answers(app):
    at = app()
    at.selectbox(key="variant:fake").select("fake-lora").run()
    card = texts(at.sidebar.expander[0])
    assert "LoRA adapter" in card and "fake-generator" in card and "{" not in card
    reply = ask(at, "Where do bees make honey?")
    assert "(fake-lora)" in reply.markdown[0].value and "variant **fake-lora**" in texts(reply)
    assert at.session_state["messages"][-1]["answers"][0].variant == "fake-lora"


def test_compare_mode_answers_with_two_variants(app):
    at = app()
    at.toggle(key="compare").set_value(True).run()
    assert at.selectbox(key="variant_b:fake").value == "fake-lora"
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
    assert "I don't know" in warning and "closely enough" in warning  # in words
    assert "threshold" not in warning and "threshold" in texts(reply.expander[0])  # the numbers apart
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


def test_the_first_screen_shows_the_index_and_example_questions(app):
    at = app()
    first = texts(at.main)
    assert "This index holds **5 documents**: doc0, doc1, doc2, doc3, doc4." in first
    examples = [b for b in at.button if b.key and b.key.startswith("example_")]
    assert 2 <= len(examples) <= 3 and all(b.label.startswith("What do the documents say about ") for b in examples)
    examples[0].click().run()  # a click asks it
    assert not at.exception, at.exception
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert at.session_state["messages"][0]["content"] == examples[0].label
    assert "This index holds" not in texts(at.main)  # the conversation replaces the first screen


def test_the_chat_box_is_enabled_again_once_answered(app):
    at = app()
    ask(at, "Where do bees make honey?")
    assert not at.chat_input[0].disabled and at.session_state["job"] is None


def test_query_parameters_choose_and_follow_the_index_and_variant(app, index_dir, settings, tmp_path):
    from streamlit.testing.v1 import AppTest

    from ragqa.indexing.index import Index

    Index.build([write_corpus(tmp_path / "other", n=2)], index_dir.parent / "other", settings)
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["index"] = str(index_dir.parent / "other")
    at.query_params["variant"] = "fake-lora"
    at.run()
    assert not at.exception, at.exception
    assert Path(at.selectbox(key="index").value).name == "other"
    assert at.selectbox(key="variant:fake").value == "fake-lora"
    assert "2 documents" in texts(at.sidebar)
    at.selectbox(key="variant:fake").select("base").run()
    assert at.query_params["variant"] == "base" and at.query_params["model"] == "fake"
    assert at.query_params["index"].endswith("other")


def test_each_index_keeps_its_own_conversation(app, index_dir, settings, tmp_path):
    from ragqa.indexing.index import Index

    Index.build([write_corpus(tmp_path / "other", n=2)], index_dir.parent / "other", settings)
    at = app()
    ask(at, "Where do bees make honey?")
    picker = at.selectbox(key="index")
    main, other = picker.options
    picker.select(other).run()
    assert not at.chat_message and "This index holds **2 documents**" in texts(at.main)
    at.selectbox(key="index").select(main).run()
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert "reloading the page starts a new one" in texts(at.sidebar)  # said, not hidden


def test_a_stopped_answer_is_kept_and_marked(app):
    from ragqa.answering.pipeline import Answer

    at = app()
    partial = Answer(question="Where do bees make honey?", text="Bees make", sources=[], variant="base")
    at.session_state["conversations"][at.session_state["index"]] = [
        {"role": "user", "content": "Where do bees make honey?"},
        {"role": "assistant", "index": at.session_state["index"], "id": 99, "answers": [partial],
         "stopped": {"seconds": 7.2}}]
    at.run()
    reply = at.chat_message[-1]
    assert "Bees make" in reply.markdown[0].value
    assert "Stopped after 7 s: the answer was not finished." in texts(reply)
    assert not at.feedback  # nothing to rate on half an answer
    ask(at, "And what about penguins?")
    history = at.session_state["messages"]
    assert len(history) == 4  # the stopped answer stays; the next question is answered


def test_upload_of_only_broken_files_says_so_once(app, index_dir):
    at = app()
    at.sidebar.file_uploader[0].set_value([
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf")]).run()
    at.button(key="add_docs").click().run()
    side = texts(at.sidebar)
    assert "broken.pdf" in side and "Indexed:" not in side and not at.sidebar.success
    at.slider(key="top_k").set_value(3).run()  # the next interaction
    assert "broken.pdf" not in texts(at.sidebar)  # the message was shown once


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


@pytest.mark.slow  # starts `ragqa ui` and its streamlit child
def test_sigterm_to_ragqa_ui_stops_the_streamlit_child(index_dir, tmp_path):
    import signal
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAGQA_MODEL": "fake", "RAGQA_EMBEDDER": "fake:32", "RAGQA_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ragqa", "ui", "--index", str(index_dir), "--port", str(port)],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/_stcore/health"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.read().strip() == b"ok"
        except OSError:
            return False

    try:
        deadline = time.time() + 60
        while not healthy():
            assert proc.poll() is None and time.time() < deadline, "ragqa ui did not come up"
            time.sleep(0.25)
        proc.send_signal(signal.SIGTERM)  # to ragqa only, as a service manager does
        assert proc.wait(20) == 128 + signal.SIGTERM
        time.sleep(0.5)
        assert not healthy()  # the streamlit child stopped with it
    finally:
        if proc.poll() is None:
            proc.kill()
