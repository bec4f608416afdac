"""One exception tree for ragqa.

    RagqaError                      every error ragqa raises on purpose
    ├── InputNotFound               a path the user named does not exist
    ├── ConfigError                 a setting or field has a bad value
    ├── IndexError_                 base of index problems
    │   ├── IndexNotFound           no index at that directory
    │   ├── IndexLocked             another build holds the index lock
    │   ├── IndexCorrupt            files on disk disagree (verify fails)
    │   ├── IndexWriteError         a new version cannot be written (disk full, read-only)
    │   └── EmbedderMismatch        the index was built with another embedder
    └── ModelError                  a model cannot be found or loaded

Library code raises these; only the CLI and the UI turn them into exit codes or on-screen
messages. Each message says what is wrong and what to do, on one line.
"""

from __future__ import annotations


class RagqaError(Exception):
    """Base of every error ragqa raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputNotFound(RagqaError):
    exit_code = 2


class ConfigError(RagqaError):
    exit_code = 2


class IndexError_(RagqaError):  # noqa: N801 - avoid shadowing the builtin IndexError
    exit_code = 1


class IndexNotFound(IndexError_):
    exit_code = 2


class IndexLocked(IndexError_):
    exit_code = 3


class IndexCorrupt(IndexError_):
    exit_code = 4


class IndexWriteError(IndexError_):
    exit_code = 5


class EmbedderMismatch(IndexError_):
    exit_code = 2


class ModelError(RagqaError):
    exit_code = 2
