"""The UI in a real browser: `streamlit run ui/app.py` (started as `ragqa ui` starts it) driven by
Playwright through Debian's Chromium (scripts/install-browser.sh installs both; never
`playwright install`). Fake generator and embedder, tmp index. Skips when the browser is absent.

RAGQA_UI_SCREENSHOT=1 saves the screenshot to docs/ui.png (otherwise to the test's tmp folder).
"""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/lib/chromium/chromium-headless-shell")
                 if os.access(p, os.X_OK)), None)
if CHROMIUM is None:
    pytest.skip("no Chromium (run scripts/install-browser.sh)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed "
                               "(run scripts/install-browser.sh)")

CORPUS = {
    "apollo.html": "<html><head><title>Apollo 11</title></head><body><p>Apollo 11 landed on the Moon on "
                   "July 20, 1969. Neil Armstrong and Buzz Aldrin walked on the lunar surface while Michael "
                   "Collins stayed in lunar orbit.</p><p>The crew returned to Earth on July 24, 1969.</p>"
                   "</body></html>",
    "bees.txt": "Honey bees make honey from the nectar of flowers. A colony can hold tens of thousands of "
                "worker bees and a single queen.",
    "rivers.txt": "Rivers carry water from mountains and hills down to the sea. The Nile is one of the "
                  "longest rivers in the world.",
    "trains.html": "<html><head><title>Steam trains</title></head><body><p>Steam locomotives burn coal "
                   "to boil water; the steam drives the pistons that turn the wheels.</p></body></html>",
}
UPLOAD_TEXT = "Glaciers are rivers of ice. They carve deep U-shaped valleys as they move downhill.\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(f"streamlit not healthy after {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture
def server(tmp_path, settings):
    from ragqa.indexing.index import Index
    from ragqa.apps.ui_launch import command

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in CORPUS.items():
        (docs / name).write_text(text, encoding="utf-8")
    index = tmp_path / "indexes" / "demo"
    Index.build([docs], index, settings.replace(embedder="fake:64"))
    port = _free_port()
    env = {**os.environ, "RAGQA_MODEL": "fake", "RAGQA_EMBEDDER": "fake:64", "RAGQA_THREADS": "1",
           "RAGQA_ABSTAIN_THRESHOLD": "0.05", "RAGQA_CACHE_DIR": str(tmp_path / "cache"),
           "RAGQA_UI_INDEX": str(index), "RAGQA_UI_INDEXES": str(tmp_path / "indexes"),
           "RAGQA_VARIANTS_DIR": str(tmp_path / "adapters"), "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "streamlit.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command(index, port), env=env, cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc, log)
        yield url, index
    finally:
        _stop(proc)


def test_ask_switch_variant_upload_in_a_browser(server, tmp_path):
    url, index = server
    expect = sync_api.expect
    expect.set_options(timeout=20_000)
    shot = ROOT / "docs" / "ui.png" if os.environ.get("RAGQA_UI_SCREENSHOT") else tmp_path / "ui.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1150})
            page.goto(url)
            box = page.get_by_test_id("stChatInputTextArea")
            expect(box).to_be_visible()
            expect(page.get_by_text("4 documents · 4 chunks")).to_be_visible()

            # ask: the answer, its citation and its sources
            box.fill("When did Apollo 11 land on the Moon?")
            box.press("Enter")
            messages = page.get_by_test_id("stChatMessage")
            expect(messages).to_have_count(2)
            answer = messages.nth(1)
            expect(answer).to_contain_text("July 20, 1969")
            expect(answer).to_contain_text("Cited: [1]")
            expect(answer).to_contain_text("variant base")
            answer.get_by_text("Sources (").click()
            expect(answer.locator("mark").first).to_contain_text("Apollo 11 landed on the Moon")
            page.wait_for_timeout(500)  # the expander animates
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), animations="disabled")

            # switch the variant: the next answer comes from it
            page.get_by_role("combobox", name="Variant").click()
            page.get_by_role("option", name="fake-lora").click()
            box.fill("Who makes honey?")
            box.press("Enter")
            expect(messages).to_have_count(4)
            expect(messages.nth(3)).to_contain_text("(fake-lora)")
            expect(messages.nth(3)).to_contain_text("variant fake-lora")

            # upload a text file: it is indexed, and the index grows
            page.locator("section[data-testid='stSidebar'] input[type='file']").set_input_files(
                files=[{"name": "glaciers.txt", "mimeType": "text/plain", "buffer": UPLOAD_TEXT.encode()}])
            expect(page.get_by_text("glaciers.txt")).to_be_visible()
            page.get_by_role("button", name="Add to index").click()
            expect(page.get_by_text("1 added")).to_be_visible()
            expect(page.get_by_text("5 documents · 5 chunks")).to_be_visible()
        finally:
            browser.close()
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert (index.parent / "uploads" / "demo" / "glaciers.txt").read_text() == UPLOAD_TEXT
