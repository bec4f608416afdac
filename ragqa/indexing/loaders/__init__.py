"""One module per document format, each with ``load(sf, content, ...) -> list[Document]``
(markdown gives only the ``title`` rule: its text is kept as it is). ``documents.load_file``
reads the bytes, decodes text and dispatches here by the file's kind; adding a format is a module
here, its suffixes in ``documents.SUPPORTED_SUFFIXES`` and one line in ``load_file``."""

from ragqa.indexing.loaders import html, jsonl, markdown, pdf, squad_json  # noqa: F401

__all__ = ["html", "jsonl", "markdown", "pdf", "squad_json"]
