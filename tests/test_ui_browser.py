"""The UI in a real browser: `streamlit run ui/app.py` (started as `ragqa ui` starts it) driven by
Playwright through Debian's Chromium (scripts/install-browser.sh installs both; never
`playwright install`). Fake generator and embedder, tmp index. Skips when the browser is absent.

Screenshots go to the test's tmp folder; README's and docs/ui.md's come from
scripts/ui_screenshots.py, on the real models.
"""

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

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


def _serve(tmp_path, settings, **extra_env):
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
           "RAGQA_VARIANTS_DIR": str(tmp_path / "adapters"), "HF_HUB_OFFLINE": "1", **extra_env}
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


@pytest.fixture
def server(tmp_path, settings):
    yield from _serve(tmp_path, settings)


@pytest.fixture
def slow_server(tmp_path, settings):
    """The fake model made slow: 1.5 s before it answers, 0.8 s between words (Stop has ~8 s to land
    on a loaded box)."""
    yield from _serve(tmp_path, settings, RAGQA_FAKE_DELAY_S="1.5", RAGQA_FAKE_PIECE_DELAY_S="0.8")


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True,
                             args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])


def _shots(tmp_path) -> Path:
    return tmp_path


def test_ask_switch_variant_upload_in_a_browser(server, tmp_path):
    url, index = server
    expect = sync_api.expect
    expect.set_options(timeout=20_000)
    shot = _shots(tmp_path) / "test-ui.png"
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
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


def test_live_status_stop_and_citation_links_in_a_browser(slow_server, tmp_path):
    url, index = slow_server
    expect = sync_api.expect
    expect.set_options(timeout=20_000)
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            box = page.get_by_test_id("stChatInputTextArea")
            expect(page.get_by_text("This index holds 4 documents")).to_be_visible()
            expect(page.get_by_role("button", name="What do the documents say about")).to_have_count(3)

            # while it works: a live stage with the seconds, no chat box, a Stop button
            box.fill("When did Apollo 11 land on the Moon?")
            box.press("Enter")
            status = page.get_by_text(re.compile("[◐◓◑◒]")).first  # the live status line
            expect(page.get_by_text("Reading 1 passage").or_(page.get_by_text("Reading 2 passages"))
                   .or_(page.get_by_text("Reading 3 passages")).or_(page.get_by_text("Reading 4 passages"))
                   ).to_be_visible()
            expect(box).to_be_disabled()
            first = status.inner_text()
            page.wait_for_timeout(1300)
            assert status.inner_text() != first  # it moves: the spinner and the seconds
            expect(page.get_by_text("Writing the answer")).to_be_visible()
            page.get_by_role("button", name="Stop").click()
            messages = page.get_by_test_id("stChatMessage")
            expect(messages).to_have_count(2)
            expect(messages.nth(1)).to_contain_text("Stopped after")
            expect(messages.nth(1)).to_contain_text("Apollo 11")  # what was written is kept
            expect(box).to_be_enabled()

            # a full answer: [1] in it links to source 1
            box.fill("When did Apollo 11 land on the Moon?")
            box.press("Enter")
            expect(messages).to_have_count(4)
            answer = messages.nth(3)
            expect(answer.get_by_text("variant base")).to_be_visible(timeout=60_000)
            link = answer.locator("p a.ragqa-cite").first
            expect(link).to_have_text("[1]")
            target = link.get_attribute("href")
            link.click()
            source = page.locator(target)
            expect(source).to_be_attached()
            page.wait_for_timeout(600)
            expect(answer.locator("mark").first).to_be_visible()  # the source's passage: its expander opened
            expect(answer.locator("mark").first).to_contain_text("Apollo 11 landed on the Moon")
            expect(source).to_be_in_viewport()
            page.screenshot(path=str(_shots(tmp_path) / "test-ui-answer.png"), animations="disabled")

            # the address keeps the choices: a reload comes back to them
            assert "variant=base" in page.url and "model=fake" in page.url and "index=" in page.url
            page.goto(page.url.replace("variant=base", "variant=fake-lora"))
            expect(page.get_by_test_id("stSidebar")).to_contain_text("Kind: LoRA adapter")  # fake-lora's card
            expect(page.get_by_role("combobox", name="Variant")).to_have_value("fake-lora")
        finally:
            browser.close()


def test_compare_mode_and_the_mobile_width_in_a_browser(server, tmp_path):
    url, index = server
    expect = sync_api.expect
    expect.set_options(timeout=20_000)
    shots = _shots(tmp_path)
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(url)
            page.get_by_text("Compare two variants").click()
            box = page.get_by_test_id("stChatInputTextArea")
            box.fill("Who makes honey?")
            box.press("Enter")
            answer = page.get_by_test_id("stChatMessage").nth(1)
            expect(answer).to_contain_text("(fake-lora)")
            expect(answer).to_contain_text("variant base")
            expect(answer).to_contain_text("variant fake-lora")
            page.wait_for_timeout(400)
            page.screenshot(path=str(shots / "test-ui-compare.png"), animations="disabled")

            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                     is_mobile=True, has_touch=True)
            phone.goto(url)
            box = phone.get_by_test_id("stChatInputTextArea")
            expect(box).to_be_visible()
            box.fill("When did Apollo 11 land on the Moon?")
            box.press("Enter")
            reply = phone.get_by_test_id("stChatMessage").nth(1)
            expect(reply).to_contain_text("July 20, 1969")
            expect(reply).to_contain_text("Cited: [1]")
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390 + 1, f"the page is {width} px wide on a 390 px phone"
            phone.wait_for_timeout(400)
            phone.screenshot(path=str(shots / "test-ui-mobile.png"), animations="disabled")
        finally:
            browser.close()
    for name in ("test-ui-compare.png", "test-ui-mobile.png"):
        assert (shots / name).stat().st_size > 10_000
