"""Files ragqa ships beside its code: the demo corpus, the Streamlit app and the shipped variants.

In a checkout they are the repository's own ``data/demo``, ``ui/`` and ``adapters/``; a wheel
carries copies under ``ragqa/_bundled/`` (``setup.py`` puts them there at build time), so
``ragqa demo``, ``ragqa ui`` and the shipped variants work from any folder after ``pip install``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent  # the repository root when running from a checkout
# name -> the folder in the repository it is copied from (setup.py reads this too)
BUNDLED = {"demo": "data/demo", "ui": "ui", "variants": "adapters"}
# the shared benchmark data beside a development checkout (used only by dev defaults)
SHARED_DATA = CHECKOUT.parent / "shared" / "data"


def bundled(name: str) -> Path:
    """The folder of a shipped resource: the wheel's copy, else the checkout's."""
    inside = PACKAGE / "_bundled" / name
    return inside if inside.is_dir() else CHECKOUT / BUNDLED[name]


def demo_corpus() -> Path:
    return bundled("demo")


def ui_app() -> Path:
    return bundled("ui") / "app.py"


def shipped_variants() -> Path:
    return bundled("variants")
