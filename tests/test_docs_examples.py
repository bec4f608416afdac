"""Every example in README.md and docs/ is checked: each `ragqa ...` line of a bash block parses
against the real command line (every option it names exists and takes what it is given; optional
`[...]` parts are checked too, placeholders such as DIR or N stand for any value); README's
everyday index, search and answering blocks run as written on the demo corpus; every other
documented line runs with its placeholders filled in (indexing into Qdrant's local mode and back,
evaluation, data import, training a LoRA on SmolLM2 for a few steps, inspecting it), except those
in NOT_RUN, each with its reason (benchmarks, servers, question synthesis); README's Python
examples run (the answering one on the packaged SmolLM2, so it is slow-marked; the HTTP clients'
one against a running `ragqa serve` in test_serve_e2e.py)."""

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
                    "ask", "train", "eval qa", "variants list", "bench answers", "serve"):
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
    """docs/usage.md's everyday index and search commands and README's three, run as written (optional parts dropped) in a
    home folder holding ~/notes and ~/papers/paper.pdf."""
    box = _sandbox(tmp_path)
    usage = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    block = usage.split("## Every command", 1)[1]
    lines = commands(blocks_from(block)[0])
    runnable = [c for c in lines if shlex.split(c)[1] in ("index", "search")
                and shlex.split(c)[2] not in ("migrate",) and "--backend" not in c and "DIR" not in c]
    assert len(runnable) >= 8, runnable
    readme = (ROOT / "README.md").read_text(encoding="utf-8").split("## Using it", 1)[1]
    runnable += commands(blocks_from(readme)[0])  # README's three, the answer by the fake generator
    env = {"HOME": str(box["home"]), "RAGQA_THREADS": "1", "RAGQA_MODEL": "fake"}
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
    code = [b for p in DOCS for b in blocks(p, "python") if "Index.build" in b]
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
    """docs/usage.md's answering commands as written (optional parts dropped) over the demo corpus;
    the model is the fake generator here (RAGQA_MODEL=fake): the commands are the point."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "questions.jsonl").write_text('{"id": "1", "question": "Who flew Apollo 11?"}\n')
    (work / "dialogues.jsonl").write_text('{"id": "1", "input": "#Person1#: Hi. #Person2#: Hello."}\n')
    env = {**_env(), "RAGQA_THREADS": "1", "RAGQA_MODEL": "fake"}
    build = subprocess.run([sys.executable, "-m", "ragqa", "index", "build", str(ROOT / "data" / "demo"),
                            "--index", "indexes/demo"], cwd=work, capture_output=True, text=True, timeout=600, env=env)
    assert build.returncode == 0, build.stderr[-1500:]
    usage = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    block = blocks_from(usage.split("Answering (", 1)[1])[0]
    lines = commands(block)
    assert {shlex.split(c)[1] for c in lines} >= {"ask", "generate", "variants"}
    for line in lines:
        args = forms(line)[0]
        out = subprocess.run([sys.executable, "-m", "ragqa", *args], cwd=work, capture_output=True, text=True,
                             timeout=600, env=env)
        assert out.returncode == 0, f"`ragqa {shlex.join(args)}`: {out.stderr[-1500:]}"
        assert out.stdout.strip(), line


# documented commands that are not run here, and why (every other documented line runs below)
NOT_RUN = {
    "bench": "a measurement of minutes to an hour on the real models; tests/test_bench_*.py run every "
             "benchmark with small parameters",
    "synthesize": "a real model writes the questions (minutes of generation: the fake generator writes "
                  "none); tests/test_training.py::test_synthesize_filters runs it with a scripted generator",
    "serve": "a server that runs until it is stopped; tests/test_serve_e2e.py starts `ragqa serve` on the "
             "packaged SmolLM2 and runs README's client example against it",
    "http": "needs a server (Qdrant, vLLM) that no registry here ships; tests/test_qdrant.py and "
            "tests/test_openai_generator.py cover these paths against local mode and a fake server",
}


def _why_not_run(line: str) -> str | None:
    args = shlex.split(line)
    if args[1] == "bench":
        return NOT_RUN["bench"]
    if args[1:3] == ["data", "synthesize"]:
        return NOT_RUN["synthesize"]
    if args[1] == "serve":
        return NOT_RUN["serve"]
    if "http://" in line or "HOST" in line:
        return NOT_RUN["http"]
    return None


def _tiny_data(root: Path) -> dict:
    """Small real-format files for the documented commands' placeholders."""
    import json

    context = ("Apollo 11 landed on the Moon on July 20, 1969. Neil Armstrong and Buzz Aldrin walked on the "
               "surface while Michael Collins orbited.")
    questions = [("When did Apollo 11 land?", "July 20, 1969"), ("Who orbited the Moon?", "Michael Collins"),
                 ("Who walked on the Moon?", "Neil Armstrong and Buzz Aldrin")]
    squad = {"version": "1.1", "data": [  # ten articles: the import splits by document
        {"title": f"Apollo part {n}", "paragraphs": [{"context": context, "qas": [
            {"id": f"q{n}-{i}", "question": q, "answers": [{"text": a, "answer_start": context.find(a)}]}
            for i, (q, a) in enumerate(questions)]}]} for n in range(10)]}
    (root / "squad.json").write_text(json.dumps(squad))
    (root / "dialogsum.jsonl").write_text("".join(json.dumps(
        {"fname": f"d{i}", "dialogue": "#Person1#: Shall we meet at noon? #Person2#: Yes, at the cafe.",
         "summary": "They agree to meet at noon at the cafe."}) + "\n" for i in range(12)))
    (root / "mine.jsonl").write_text("".join(json.dumps(  # ten contexts: the import splits by document
        {"question": f"When did mission {n} land?", "context": f"Mission {n} landed on July {n + 1}, 1969.",
         "answer": f"July {n + 1}, 1969"}) + "\n" for n in range(10)))
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "Apollo 11 landing"}\n')
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tapollo_program.md\t1\n")
    return {"squad.json": "squad.json", "dev.json": "squad.json", "FILE": "squad.json",
            "dialogsum.jsonl": "dialogsum.jsonl", "mine.jsonl": "mine.jsonl"}


@pytest.mark.slow  # indexes, evaluates and trains (SmolLM2, a few steps) as the docs say
def test_every_other_documented_command_runs(tmp_path):
    """Each documented `ragqa` line not in NOT_RUN, in the order the docs give them, with its
    placeholders filled in: DIR / IDX / INDEX an index of the demo corpus, DATA / data-dir (and
    the mixing example's qa-data / dialogsum-data) the data the import made, NAME the variant `ragqa train` made, squad.json / FILE / dev.json a small
    SQuAD file (and so on); the generator is the fake one except for training, which is real."""
    work = tmp_path / "w"
    work.mkdir()
    files = _tiny_data(work)
    shutil.copytree(ROOT / "data" / "demo", work / "docs")
    env = {**_env(), "RAGQA_THREADS": "1", "RAGQA_MODEL": "fake", "RAGQA_VARIANTS_DIR": str(work / "adapters")}

    def ragqa(args):
        return subprocess.run([sys.executable, "-m", "ragqa", *args], cwd=work, capture_output=True, text=True,
                              timeout=900, env=env)

    assert ragqa(["index", "build", "docs", "--index", "idx"]).returncode == 0
    values = {"DIR": "idx", "IDX": "idx", "INDEX": "idx", "DOCS": "docs", "docs/": "docs", "DATA": "data",
              "data-dir": "data", "adapters/NAME": "adapters/tuned", "NAME": "adapters/tuned",
              # the mixing example's two directories: the data the last import made, twice
              "qa-data": "data", "dialogsum-data": "data",
              "base,NAME,MODEL:base": "base,fake-lora,smollm2-135m-instruct:base", "qdrant:///srv/q": f"qdrant://{work / 'q'}",
              "indexes/scifact": "idx",
              **files}
    ran, skipped = [], []  # noqa: F841 (kept for a debugger)
    done_reports = 0
    for path in DOCS:
        for block in blocks(path, "bash"):
            for line in commands(block):
                covered = path.name in ("README.md", "usage.md") and shlex.split(line)[1] in (
                    "index", "search", "ask", "generate") and "qdrant" not in line  # they run in the tests above
                if _why_not_run(line) or covered or line.startswith("ragqa variants list"):
                    skipped.append(line)
                    continue
                args = [values.get(a, a) for a in forms(line)[0]]
                if "--backend" in args:  # a new index that keeps its vectors in Qdrant's local mode
                    args[args.index("--index") + 1] = f"idx-{len(ran)}"
                if "--report" in args:  # each report into its own folder
                    done_reports += 1
                    args[args.index("--report") + 1] = f"report-{done_reports}"
                if args[:2] == ["data", "import"] and (work / "data").exists():
                    shutil.rmtree(work / "data")  # each import makes the data anew
                if args[:1] == ["train"]:
                    env_train = {"RAGQA_MODEL": "smollm2-135m-instruct"}
                    args += ["--max-steps", "2", "--eval-steps", "1", "--eval-examples", "2", "--overwrite"]
                    out = subprocess.run([sys.executable, "-m", "ragqa", *args], cwd=work, capture_output=True,
                                         text=True, timeout=900, env={**env, **env_train})
                else:
                    out = ragqa(args)
                assert out.returncode == 0, f"{path.name}: `ragqa {shlex.join(args)}`: {out.stderr[-1500:]}"
                ran.append(line)
    assert len(ran) >= 12, ran
