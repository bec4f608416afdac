"""ragqa: offline retrieval-augmented question answering over your own documents.

    from ragqa import Index
    Index.build(["docs/"], "indexes/mine")
    hits = Index.open("indexes/mine").search("How do I reset it?", k=5)

    from ragqa import RagQA
    with RagQA.open("indexes/mine") as qa:
        print(qa.ask("How do I reset it?").text)
"""

from ragqa.config import Settings
from ragqa.documents import Document, LoadWarning
from ragqa.errors import (ConfigError, EmbedderMismatch, IndexCorrupt, IndexLocked, IndexNotFound,
                          InputNotFound, ModelError, RagqaError)
from ragqa.generators import GenerationSettings, Generator
from ragqa.index import BuildReport, Index, verify
from ragqa.pipeline import Answer, RagQA, Source, Status
from ragqa.retrieval import Hit

__version__ = "0.1.0"

__all__ = [
    "Answer", "BuildReport", "ConfigError", "Document", "EmbedderMismatch", "GenerationSettings",
    "Generator", "Hit", "Index", "IndexCorrupt", "IndexLocked", "IndexNotFound", "InputNotFound",
    "LoadWarning", "ModelError", "RagQA", "RagqaError", "Settings", "Source", "Status", "verify",
]
