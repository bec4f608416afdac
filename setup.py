"""Only what pyproject.toml cannot say: a wheel carries the demo corpus, the Streamlit app and the
shipped variants (``data/demo``, ``ui/``, ``adapters/`` in the repository) under
``ragqa/_bundled/``, where ``ragqa.resources`` finds them, so an installed ragqa runs ``ragqa
demo``, ``ragqa ui`` and the shipped variants from any folder. An editable install reads the
checkout's folders instead."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# the same table as ragqa.resources.BUNDLED (read from there, so it has one owner)
_ns: dict = {"__file__": str(ROOT / "ragqa" / "resources.py"), "__name__": "ragqa_resources"}
exec(compile((ROOT / "ragqa" / "resources.py").read_text(), "resources.py", "exec"), _ns)
BUNDLED = _ns["BUNDLED"]


class BuildPyWithBundled(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "ragqa" / "_bundled"
        for name, source in BUNDLED.items():
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": BuildPyWithBundled})
