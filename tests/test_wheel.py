"""A wheel install, not the checkout: `pip install` of the built wheel into a fresh environment,
then, from a folder that is no checkout, README's Python example, `ragqa demo`, the shipped
variants and the UI app all work from the installed package alone."""

import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # builds a wheel and starts subprocesses


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh environment whose ragqa is the wheel's: the wheel installed into its own folder,
    first on the path; the dependencies come from this venv's site-packages, whose editable
    finder for the checkout is not loaded (a path entry's .pth files are not processed)."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(root / "dist"), str(ROOT)], check=True, timeout=600)
    wheel = next((root / "dist").glob("ragqa-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                    "--target", str(root / "site"), str(wheel)], check=True, timeout=600)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "env")], check=True)
    purelib = Path(sysconfig.get_paths(vars={"base": str(root / "env"), "platbase": str(root / "env")})["purelib"])
    purelib.mkdir(parents=True, exist_ok=True)
    deps = sysconfig.get_paths()["purelib"]
    (purelib / "ragqa-wheel-test.pth").write_text(f"{root / 'site'}\n{deps}\n")
    work = root / "elsewhere"  # no checkout here: no data/, ui/ or adapters/
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGQA_") and k != "PYTHONPATH"}
    env.update(RAGQA_THREADS="1", RAGQA_CACHE_DIR=os.environ.get("RAGQA_CACHE_DIR", str(root / "cache")),
               HF_HUB_OFFLINE="1")
    return {"python": str(root / "env" / "bin" / "python"), "site": root / "site", "cwd": work, "env": env}


def run(installed, *args, timeout=600):
    return subprocess.run([installed["python"], *args], cwd=installed["cwd"], env=installed["env"],
                          capture_output=True, text=True, timeout=timeout)


def test_the_package_comes_from_the_wheel(installed):
    out = run(installed, "-c", "import ragqa, ragqa.resources as r; print(ragqa.__file__); print(r.demo_corpus()); "
                               "print(r.ui_app()); print(r.shipped_variants()); "
                               "import ragqa.generators.qgemv as q; print(q.SOURCE)")
    assert out.returncode == 0, out.stderr
    paths = out.stdout.split()
    assert all(p.startswith(str(installed["site"])) for p in paths), paths
    assert all(Path(p).exists() for p in paths), paths


def test_demo_and_the_python_example_run_from_any_folder(installed):
    out = run(installed, "-m", "ragqa", "demo", "--model", "fake")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "indexes/demo: 50 documents" in out.stdout and "A: " in out.stdout and "[1]" in out.stdout
    example = textwrap.dedent("""
        from ragqa import RagQA, Settings
        with RagQA.open("indexes/demo", Settings.load(model="fake")) as qa:
            answer = qa.ask("When did Apollo 11 land on the Moon?")
            print(answer.text)
            print(answer.sources[0].title)
    """)
    out = run(installed, "-c", example)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip()


def test_shipped_variants_are_found_from_any_folder(installed):
    out = run(installed, "-m", "ragqa", "variants", "list")
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("squad-lora-qwen", "squad-lora", "dialogsum-lora-qwen"):
        assert name in out.stdout, out.stdout


def test_the_ui_app_runs_from_the_wheel(installed):
    probe = textwrap.dedent("""
        import os
        from streamlit.testing.v1 import AppTest
        from ragqa.apps.ui_launch import app_path
        os.environ.update(RAGQA_MODEL="fake", RAGQA_UI_INDEX=os.path.abspath("indexes/demo"))
        at = AppTest.from_file(str(app_path()), default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        at.chat_input[0].set_value("When did Apollo 11 land on the Moon?").run()
        assert not at.exception, at.exception
        print(app_path())
        print(at.chat_message[-1].markdown[0].value)
    """)
    if not (installed["cwd"] / "indexes" / "demo").is_dir():
        assert run(installed, "-m", "ragqa", "demo", "--model", "fake").returncode == 0
    out = run(installed, "-c", probe)
    assert out.returncode == 0, out.stderr[-2000:]
    first, answer = out.stdout.strip().splitlines()[-2:]
    assert first.startswith(str(installed["site"])) and answer
