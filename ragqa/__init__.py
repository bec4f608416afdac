"""ragqa: offline retrieval-augmented question answering over your own documents.

    from ragqa import Index
    Index.build(["docs/"], "indexes/mine")
    hits = Index.open("indexes/mine").search("How do I reset it?", k=5)
"""

from ragqa.config import Settings
from ragqa.documents import Document, LoadWarning
from ragqa.errors import (ConfigError, EmbedderMismatch, IndexCorrupt, IndexLocked, IndexNotFound,
                          InputNotFound, ModelError, RagqaError)
from ragqa.index import BuildReport, Index, verify
from ragqa.retrieval import Hit

__version__ = "0.1.0"

__all__ = [
    "BuildReport", "ConfigError", "Document", "EmbedderMismatch", "Hit", "Index", "IndexCorrupt",
    "IndexLocked", "IndexNotFound", "InputNotFound", "LoadWarning", "ModelError", "RagqaError",
    "Settings", "verify",
]
