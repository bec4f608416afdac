"""README's Chat UI screenshots, taken from the real app on the demo index with the configured model
(default Qwen2.5-Coder-1.5B): docs/ui-answer.png (an answer with a citation clicked open),
docs/ui-compare.png (two variants side by side), docs/ui-mobile.png (a 390 px phone), and
docs/ui-waiting.png (the live status while the model reads). Prints what the status line said
while the first answer was written, with the seconds.

    .venv/bin/python scripts/ui_screenshots.py [--index indexes/demo] [--out docs]

Needs Chromium and playwright (scripts/install-browser.sh). Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/lib/chromium/chromium-headless-shell")
                 if os.access(p, os.X_OK)), None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=Path, default=ROOT / "indexes" / "demo")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    if CHROMIUM is None:
        sys.exit("no Chromium: run scripts/install-browser.sh")
    from playwright.sync_api import expect, sync_playwright

    from ragqa.apps.ui_launch import command

    if not args.index.exists():
        subprocess.run([sys.executable, "-m", "ragqa", "index", "build", str(ROOT / "data" / "demo"),
                        "--index", str(args.index)], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile("w", prefix="ragqa-ui-screenshots-", suffix=".log", delete=False)
    proc = subprocess.Popen(command(args.index, port), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(160):
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.25)
        expect.set_options(timeout=600_000)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(url)
            box = page.get_by_test_id("stChatInputTextArea")
            expect(box).to_be_visible()
            box.fill("When did Apollo 11 land on the Moon, and who walked on it?")
            box.press("Enter")
            status = page.get_by_text(re.compile("[◐◓◑◒]")).first
            seen, started, shot = [], time.time(), False
            while page.get_by_text(re.compile(r"^variant .* searched in")).count() == 0:
                if status.count():
                    try:
                        line = status.inner_text(timeout=1000)
                    except Exception:  # noqa: BLE001 - it went away between count and read
                        line = ""
                    stage = re.sub(r"^[◐◓◑◒] ", "", line)
                    if stage and (not seen or seen[-1][1].split(" · ")[0] != stage.split(" · ")[0]):
                        seen.append((time.time() - started, stage))
                    if not shot and stage.startswith("Reading"):
                        page.screenshot(path=str(args.out / "ui-waiting.png"), animations="disabled")
                        shot = True
                time.sleep(0.5)
            print("what the status line said while the first answer was written:")
            for t, stage in seen:
                print(f"  {t:6.1f} s  {stage}")
            link = page.locator("p a.ragqa-cite").first
            link.click()
            page.wait_for_timeout(800)
            page.get_by_test_id("stChatMessage").nth(1).evaluate("el => el.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            page.screenshot(path=str(args.out / "ui-answer.png"), animations="disabled")

            # compare: the shipped variants are Qwen2.5-Coder-0.5B's (and SmolLM2's); the address picks it
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(f"{url}/?model=qwen2.5-coder-0.5b-instruct&variant=base")
            page.get_by_text("Compare two variants").click()
            page.get_by_role("combobox", name="Compare with").click()
            page.get_by_role("option", name="squad-lora-qwen").click()
            page.wait_for_timeout(800)
            def ask_and_shoot(page, question: str, answers: int, name: str) -> None:
                box = page.get_by_test_id("stChatInputTextArea")
                box.fill(question)
                box.press("Enter")
                expect(page.get_by_text(re.compile(r"^variant .* searched in"))).to_have_count(answers)
                page.wait_for_timeout(800)
                page.screenshot(path=str(args.out / name), animations="disabled")

            ask_and_shoot(page, "When did Apollo 11 land on the Moon?", 2, "ui-compare.png")
            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                     is_mobile=True, has_touch=True)
            phone.goto(url)
            ask_and_shoot(phone, "What caused the Black Death?", 1, "ui-mobile.png")
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        log.close()
    for name in ("ui-answer.png", "ui-compare.png", "ui-mobile.png", "ui-waiting.png"):
        print(args.out / name, (args.out / name).stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
