"""Every example in README.md and docs/ runs: each `ragqa ...` line of a bash block parses
against the real command line (every option it names exists and takes what it is given;
optional `[...]` parts are checked too, placeholders such as DIR or N stand for any value), the
everyday commands of README's "Using it" block run for real on the demo corpus, and README's
Python examples run (the answering one on the packaged SmolLM2, so it is slow-marked)."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*(?:[./:-][A-Z0-9_]+)*|\.\.\.|\"\.\.\.\")$")


def blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """The `ragqa ...` lines of a bash block, continuations joined, comments dropped."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line.startswith("ragqa "):
            out.append(line)
    return out


def forms(line: str) -> list[list[str]]:
    """The line without its optional parts, and with them (first alternative of each a|b)."""
    def first_alt(text):
        return re.sub(r"(\S+?)\|\S+", lambda m: m.group(1), text)
    bare = re.sub(r"\[[^\[\]]*\]", " ", line)
    full = line
    while "[" in full:
        full = re.sub(r"\[([^\[\]]*)\]", lambda m: m.group(1).split(" | ")[0], full)
    return [shlex.split(first_alt(bare))[1:], shlex.split(first_alt(full))[1:]]


def parse(args: list[str]):
    """Parse like `ragqa ARGS` without running it: the command reached and its params."""
    from ragqa.apps.cli import app

    ctx = typer.main.get_command(app).make_context("ragqa", list(args))
    while hasattr(ctx.command, "commands"):
        rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
        if not rest:
            break
        name, cmd, rest = ctx.command.resolve_command(ctx, rest)
        ctx = cmd.make_context(name, rest, parent=ctx)
    assert not ctx.args, f"unexpected arguments {ctx.args}"
    return ctx


def _examples():
    for path in DOCS:
        for block in blocks(path, "bash"):
            for line in commands(block):
                yield pytest.param(line, id=f"{path.name}:{line[:60]}")


@pytest.mark.parametrize("line", list(_examples()))
def test_every_documented_command_parses(line):
    for args in forms(line):
        try:
            parse(args)
        except Exception as exc:  # noqa: BLE001
            message = str(getattr(exc, "message", exc)) or type(exc).__name__
            param = getattr(exc, "param", None)
            values = [args[i + 1] for i, a in enumerate(args[:-1]) if param is not None and a in param.opts]
            if type(exc).__name__ == "BadParameter" and values and all(PLACEHOLDER.match(v) for v in values):
                continue  # a placeholder (N, DIR, ...) where a number or choice goes
            raise AssertionError(f"`ragqa {shlex.join(args)}`: {type(exc).__name__}: {message}") from None


def test_the_examples_cover_the_commands_people_use():
    lines = [c for p in DOCS for b in blocks(p, "bash") for c in commands(b)]
    named = {" ".join(shlex.split(c)[1:3]) for c in lines}
    for command in ("index build", "index add", "index remove", "index info", "index verify", "search",
                    "ask", "train", "eval qa", "variants list", "bench answers"):
        assert any(n == command or n.startswith(command + " ") or n.split()[0] == command for n in named), command


def _sandbox(tmp_path) -> dict:
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "papers").mkdir()
    demo = ROOT / "data" / "demo"
    for name in ("apollo_program.md", "amazon_rainforest.txt"):
        shutil.copy(demo / name, home / "notes" / name)
    (home / "notes" / "old.md").write_text("# Old\n\nAn old note about routers: hold reset for ten seconds.\n")
    shutil.copy(demo / "black_death.pdf", home / "papers" / "paper.pdf")
    (home / "new.md").write_text("# New\n\nA new note about comets.\n")
    (home / "queries.jsonl").write_text('{"_id": "q1", "text": "reset the router"}\n')
    return {"home": home}


def test_the_using_it_block_runs(tmp_path, monkeypatch):
    """README's everyday index and search commands, run as written (optional parts dropped) in a
    home folder holding ~/notes and ~/papers/paper.pdf."""
    box = _sandbox(tmp_path)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Using it", 1)[1]
    lines = commands(blocks_from(block)[0])
    runnable = [c for c in lines if shlex.split(c)[1] in ("index", "search")
                and shlex.split(c)[2] not in ("migrate",) and "--backend" not in c and "DIR" not in c]
    assert len(runnable) >= 8, runnable
    env = {"HOME": str(box["home"]), "RAGQA_THREADS": "1"}
    for line in runnable:
        args = [a.replace("~", str(box["home"])) for a in forms(line)[0]]
        out = subprocess.run([sys.executable, "-m", "ragqa", *args], cwd=box["home"], capture_output=True,
                             text=True, timeout=600, env={**_env(), **env})
        assert out.returncode == 0, f"`ragqa {shlex.join(args)}`: {out.stderr[-1500:]}"


def blocks_from(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("RAGQA_")}


def test_readme_python_index_example_runs(tmp_path, monkeypatch):
    box = _sandbox(tmp_path)
    (box["home"] / "docs").mkdir()
    shutil.copy(ROOT / "data" / "demo" / "apollo_program.md", box["home"] / "docs")
    code = [b for b in blocks(ROOT / "README.md", "python") if "Index.build" in b]
    assert code
    out = subprocess.run([sys.executable, "-c", code[0]], cwd=box["home"], capture_output=True, text=True,
                         timeout=600, env={**_env(), "RAGQA_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.count("\n") == 5


@pytest.mark.slow  # answers with the packaged SmolLM2
def test_readme_python_answer_example_runs(tmp_path):
    code = [b for b in blocks(ROOT / "README.md", "python") if "RagQA.open" in b]
    assert code
    work = tmp_path / "w"
    work.mkdir()
    build = subprocess.run([sys.executable, "-m", "ragqa", "index", "build", str(ROOT / "data" / "demo"),
                            "--index", "indexes/demo"], cwd=work, capture_output=True, text=True, timeout=600,
                           env={**_env(), "RAGQA_THREADS": "1"})
    assert build.returncode == 0, build.stderr[-1500:]
    out = subprocess.run([sys.executable, "-c", code[0]], cwd=work, capture_output=True, text=True,
                         timeout=900, env={**_env(), "RAGQA_THREADS": "2"})
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.strip()


def test_the_answering_block_runs_with_the_fake_generator(tmp_path):
    """README's answering commands as written (optional parts dropped) over the demo corpus;
    the model is the fake generator here (RAGQA_MODEL=fake): the commands are the point."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "questions.jsonl").write_text('{"id": "1", "question": "Who flew Apollo 11?"}\n')
    (work / "dialogues.jsonl").write_text('{"id": "1", "input": "#Person1#: Hi. #Person2#: Hello."}\n')
    env = {**_env(), "RAGQA_THREADS": "1", "RAGQA_MODEL": "fake"}
    build = subprocess.run([sys.executable, "-m", "ragqa", "index", "build", str(ROOT / "data" / "demo"),
                            "--index", "indexes/demo"], cwd=work, capture_output=True, text=True, timeout=600, env=env)
    assert build.returncode == 0, build.stderr[-1500:]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = blocks_from(readme.split("Answering (", 1)[1])[0]
    lines = commands(block)
    assert {shlex.split(c)[1] for c in lines} >= {"ask", "generate", "variants"}
    for line in lines:
        args = forms(line)[0]
        out = subprocess.run([sys.executable, "-m", "ragqa", *args], cwd=work, capture_output=True, text=True,
                             timeout=600, env=env)
        assert out.returncode == 0, f"`ragqa {shlex.join(args)}`: {out.stderr[-1500:]}"
        assert out.stdout.strip(), line
