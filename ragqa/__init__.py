"""ragqa: offline retrieval-augmented question answering over your own documents.

    from ragqa import Index
    Index.build(["docs/"], "indexes/mine")
    hits = Index.open("indexes/mine").search("How do I reset it?", k=5)

    from ragqa import RagQA
    with RagQA.open("indexes/mine") as qa:
        print(qa.ask("How do I reset it?").text)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# The names below load on first use (PEP 562), so `import ragqa` and `ragqa --help` do not pay
# for torch, transformers, FAISS or LangChain.
_EXPORTS = {
    "Settings": "ragqa.config",
    "Document": "ragqa.indexing.documents", "LoadWarning": "ragqa.indexing.documents",
    "ConfigError": "ragqa.errors", "EmbedderMismatch": "ragqa.errors", "IndexCorrupt": "ragqa.errors",
    "IndexLocked": "ragqa.errors", "IndexNotFound": "ragqa.errors", "IndexWriteError": "ragqa.errors",
    "InputNotFound": "ragqa.errors", "ModelError": "ragqa.errors", "RagqaError": "ragqa.errors",
    "GenerationSettings": "ragqa.generators.engine", "Generator": "ragqa.generators.engine",
    "BuildReport": "ragqa.indexing.index", "Index": "ragqa.indexing.index", "verify": "ragqa.indexing.index",
    "Answer": "ragqa.answering.pipeline", "RagQA": "ragqa.answering.pipeline",
    "Source": "ragqa.answering.pipeline", "Status": "ragqa.answering.pipeline",
    "Hit": "ragqa.indexing.retrieval",
}

if TYPE_CHECKING:
    from ragqa.answering.pipeline import Answer, RagQA, Source, Status
    from ragqa.config import Settings
    from ragqa.errors import (ConfigError, EmbedderMismatch, IndexCorrupt, IndexLocked, IndexNotFound,
                              IndexWriteError, InputNotFound, ModelError, RagqaError)
    from ragqa.generators.engine import GenerationSettings, Generator
    from ragqa.indexing.documents import Document, LoadWarning
    from ragqa.indexing.index import BuildReport, Index, verify
    from ragqa.indexing.retrieval import Hit


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ragqa' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    "Answer", "BuildReport", "ConfigError", "Document", "EmbedderMismatch", "GenerationSettings",
    "Generator", "Hit", "Index", "IndexCorrupt", "IndexLocked", "IndexNotFound", "IndexWriteError", "InputNotFound",
    "LoadWarning", "ModelError", "RagQA", "RagqaError", "Settings", "Source", "Status", "verify",
]
