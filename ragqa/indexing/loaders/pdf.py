"""PDF (.pdf): the text of every page (pypdf), with page numbers kept for citations; a page
without text (scanned) or a broken page is one warning, the rest is still indexed."""

from __future__ import annotations

import io
import logging
from contextlib import contextmanager
from typing import Iterator

from ragqa.files import one_line
from ragqa.indexing.documents import WHITESPACE, Document, LoadWarning, Skip, SourceFile, storable, Warn


@contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf logs every repair it makes; we report problems ourselves as one LoadWarning."""
    logger = logging.getLogger("pypdf")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


def load(sf: SourceFile, data: bytes, warn: Warn) -> list[Document]:
    shown = str(sf.path)
    if not data:
        raise Skip("skipped: empty file")
    if b"%PDF-" not in data[:1024]:
        raise Skip("skipped: not a PDF file (no %PDF header); is the extension wrong?")
    from pypdf import PdfReader

    with _quiet_pypdf():
        try:
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted:
                try:
                    ok = reader.decrypt("")
                except Exception:
                    ok = 0
                if not ok:
                    raise Skip("skipped: encrypted PDF that needs a password; decrypt it first")
            n_pages = len(reader.pages)
        except Skip:
            raise
        except Exception as e:
            raise Skip(f"skipped: corrupt or truncated PDF ({one_line(e, 200, type_name=False)})") from None
        if n_pages == 0:
            raise Skip("skipped: PDF has no pages")

        texts: list[tuple[int, str]] = []
        failed: list[tuple[int, str]] = []
        for i in range(n_pages):
            try:
                page_text = reader.pages[i].extract_text() or ""
            except Exception as e:
                failed.append((i + 1, one_line(e, 200, type_name=False)))
                continue
            page_text = page_text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n").strip()
            page_text = storable(page_text)  # a broken ToUnicode map can give lone surrogates
            if page_text:
                texts.append((i + 1, page_text))

        title = ""
        try:
            meta = reader.metadata
            if meta is not None and meta.title:
                title = storable(WHITESPACE.sub(" ", str(meta.title)).strip())
        except Exception:
            title = ""

    if failed and len(failed) == n_pages:
        raise Skip(f"skipped: corrupt PDF, text extraction failed on every page ({failed[0][1]})")
    for page_no, why in failed:
        warn(LoadWarning(shown, f"page {page_no} skipped: text extraction failed ({why})"))
    if not texts:
        if failed:
            return []  # the per-page warnings above already said why
        raise Skip("skipped: no extractable text (image-only or scanned PDF?); run OCR on it first")

    parts: list[str] = []
    pages: list[tuple[int, int]] = []
    offset = 0
    for page_no, page_text in texts:
        if parts:
            offset += 2  # the "\n\n" separator
        pages.append((page_no, offset))
        parts.append(page_text)
        offset += len(page_text)
    return [
        Document(
            sf.rel,
            "\n\n".join(parts),
            title=title or sf.title,
            source=sf.source,
            metadata={"page_count": n_pages},
            pages=pages,
        )
    ]
