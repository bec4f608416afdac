"""What every command shares (so ``cli`` and ``train_cli`` need not import each other)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ragqa.config import Settings


def command_settings(config: Path | None = None, **overrides) -> Settings:
    """The settings of one command (file, environment, flags), its thread count given to OpenMP
    before torch loads."""
    from ragqa.config import Settings

    settings = Settings.load(config, **overrides)
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
    return settings
