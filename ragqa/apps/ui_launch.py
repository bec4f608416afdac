"""Start the Streamlit UI (``ragqa ui``): ``streamlit run ui/app.py`` as a child process.

The app is ``ui/app.py`` beside the package (an editable install or a source checkout); the index
goes to it both as ``-- --index DIR`` and as env ``RAGQA_UI_INDEX``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ragqa.errors import RagqaError
from ragqa.apps.uploads import DEFAULT_MAX_MB
from ragqa import resources

DEFAULT_PORT = 8501


def app_path() -> Path:
    """The Streamlit app: ``ui/app.py`` of the checkout or the wheel's copy (``RAGQA_UI_APP``
    overrides)."""
    override = os.environ.get("RAGQA_UI_APP")
    path = Path(override) if override else resources.ui_app()
    if not path.is_file():
        raise RagqaError(f"{path}: the Streamlit app was not found; reinstall ragqa (its wheel carries "
                         "the app) or set RAGQA_UI_APP=/path/to/ui/app.py")
    return path


def command(index: Path | None = None, port: int | None = None, headless: bool = True,
            address: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_path()),
           "--server.headless", "true" if headless else "false",
           "--browser.gatherUsageStats", "false",
           "--server.address", address,
           "--server.port", str(port or DEFAULT_PORT),
           "--server.fileWatcherType", "none",
           "--client.toolbarMode", "minimal",
           "--server.maxUploadSize", os.environ.get("RAGQA_UI_MAX_UPLOAD_MB", str(DEFAULT_MAX_MB))]
    if index is not None:
        cmd += ["--", "--index", str(Path(index).resolve())]
    return cmd


def launch(index: Path | None = None, port: int | None = None, headless: bool = True) -> int:
    """Runs the UI until it exits (Ctrl-C stops it); returns its exit code."""
    if index is not None and not Path(index).exists():
        raise RagqaError(f"{index}: no such index; build one with `ragqa index build PATH --index {index}`")
    env = dict(os.environ)
    if index is not None:
        env["RAGQA_UI_INDEX"] = str(Path(index).resolve())
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    proc = subprocess.Popen(command(index, port, headless), env=env)

    def forward(signum, frame):  # SIGTERM to `ragqa ui` stops streamlit too (it is not left serving)
        raise _Stop(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return proc.wait()
    except (KeyboardInterrupt, _Stop) as stop:  # Ctrl-C reaches both; SIGTERM only this process
        code = 130 if isinstance(stop, KeyboardInterrupt) else 128 + stop.signum
        try:
            proc.send_signal(signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM)
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            proc.kill()
            proc.wait()
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Stop(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
