"""Find input files and turn them into :class:`Document` objects.

Two steps, kept apart so that an index can skip files whose bytes have not changed:

* :func:`discover` walks the paths the user named and returns :class:`SourceFile` records
  (absolute path, the root it was found under, a relative id, its kind and size).
* :func:`load_file` reads one :class:`SourceFile` and returns its documents.

Bad *content* never raises: every problem becomes exactly one :class:`LoadWarning` handed to
the ``warn`` callback, and whatever is good in the file is still returned. Only a path the user
named that does not exist raises (:class:`~ragqa.errors.InputNotFound`).

Supported kinds: plain text, Markdown, HTML, PDF, JSON Lines (one document per line) and
SQuAD-format JSON (one document per paragraph).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ragqa.errors import InputNotFound

__all__ = [
    "Document",
    "LoadWarning",
    "SourceFile",
    "SUPPORTED_SUFFIXES",
    "discover",
    "load_file",
    "load_paths",
    "print_warning",
]

Warn = Callable[["LoadWarning"], None]

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".jsonl": "jsonl",
    ".json": "json",
}

_BLOCK = 1 << 20  # 1 MiB, for streamed hashing
_SNIFF = 8192  # bytes looked at for NUL (binary) detection
_BOM = b"\xef\xbb\xbf"
_MAX_LINE_WARNINGS = 20  # per jsonl file; the rest are summed up in one more warning


# --------------------------------------------------------------------------------------------
# data types
# --------------------------------------------------------------------------------------------


@dataclass
class Document:
    """One retrievable unit of text."""

    doc_id: str
    text: str
    title: str = ""
    source: str = ""  # absolute path of the file it came from
    metadata: dict = field(default_factory=dict)  # JSON-serialisable values only
    # PDFs: (page number starting at 1, start char offset in text), ascending
    pages: list[tuple[int, int]] | None = None

    def content_hash(self) -> str:
        """sha256 hex over title, text, metadata and pages; stable across runs and processes."""
        payload = {
            "title": self.title,
            "text": self.text,
            "metadata": self.metadata,
            "pages": [list(p) for p in self.pages] if self.pages is not None else None,
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LoadWarning:
    """A problem with one input file (or one line of it). The file, or line, was skipped."""

    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"warning: {where}: {self.reason}"


@dataclass(frozen=True)
class SourceFile:
    """A file found by :func:`discover`."""

    path: Path  # absolute, resolved
    root: Path  # the indexed root it was found under
    rel: str  # path relative to root, "/" separators; the document id for plain files
    kind: str  # "txt" | "md" | "html" | "pdf" | "jsonl" | "json"
    size: int

    def file_hash(self) -> str:
        """sha256 hex of the raw bytes, read in 1 MiB blocks."""
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            while chunk := f.read(_BLOCK):
                h.update(chunk)
        return h.hexdigest()


def print_warning(w: LoadWarning) -> None:
    """Default ``warn`` callback: one line on stderr."""
    print(str(w), file=sys.stderr)


# --------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------


def _kind_of(name: str) -> str | None:
    return SUPPORTED_SUFFIXES.get(os.path.splitext(name)[1].lower())


def _supported_list() -> str:
    return ", ".join(sorted(SUPPORTED_SUFFIXES))


def discover(paths: Sequence[str | Path], warn: Warn) -> list[SourceFile]:
    """Expand files and folders into a deterministic, duplicate-free list of supported files.

    Folders are walked recursively in sorted order, following symlinked folders without ever
    looping; hidden entries (name starting with ".") and unsupported suffixes inside folders
    are skipped silently. A file named directly with an unsupported suffix is warned about.
    Raises InputNotFound for a named path that does not exist.
    """
    if isinstance(paths, (str, Path)):  # a single path is an easy mistake; accept it
        paths = [paths]
    out: list[SourceFile] = []
    seen_files: set[Path] = set()
    seen_dirs: set[tuple[int, int]] = set()

    def add(path: Path, root: Path, rel: str, kind: str, size: int) -> None:
        if path in seen_files:
            return
        seen_files.add(path)
        out.append(SourceFile(path=path, root=root, rel=rel, kind=kind, size=size))

    for given in paths:
        p = Path(given)
        shown = str(given)
        if not os.path.exists(p):  # follows symlinks: a dangling link does not exist
            if os.path.islink(p):
                raise InputNotFound(f"{shown}: broken symbolic link (its target does not exist); check the path")
            raise InputNotFound(f"{shown}: no such file or directory; check the path")
        if p.is_dir():
            root = p.resolve()
            try:
                st = os.stat(root)
            except OSError as e:
                warn(LoadWarning(shown, f"skipped: cannot read folder ({_os_reason(e)})"))
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue
            seen_dirs.add(key)
            for path, rel, kind, size in _walk(root, "", seen_dirs, warn):
                add(path, root, rel, kind, size)
            continue
        # a file named directly
        kind = _kind_of(p.name)
        if kind is None:
            suffix = os.path.splitext(p.name)[1]
            what = f"'{suffix}'" if suffix else "(no extension)"
            warn(LoadWarning(shown, f"skipped: unsupported file type {what}; supported: {_supported_list()}"))
            continue
        if not p.is_file():
            warn(LoadWarning(shown, "skipped: not a regular file"))
            continue
        path = p.resolve()
        try:
            size = os.stat(path).st_size
        except OSError as e:
            warn(LoadWarning(shown, f"skipped: cannot read file ({_os_reason(e)})"))
            continue
        add(path, Path(os.path.abspath(p)).parent.resolve(), p.name, kind, size)
    return out


def _walk(
    folder: Path, prefix: str, seen_dirs: set[tuple[int, int]], warn: Warn
) -> Iterator[tuple[Path, str, str, int]]:
    """Yield (resolved path, rel, kind, size) under ``folder`` in sorted order."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        warn(LoadWarning(str(folder), f"skipped folder: cannot list it ({_os_reason(e)})"))
        return
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        rel = f"{prefix}{name}"
        try:
            is_dir = entry.is_dir()  # follows symlinks
            is_file = not is_dir and entry.is_file()
        except OSError:
            continue
        if is_dir:
            try:
                st = os.stat(entry.path)  # follows symlinks: a link to a seen folder is skipped
            except OSError as e:
                warn(LoadWarning(entry.path, f"skipped folder: cannot read it ({_os_reason(e)})"))
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                continue
            seen_dirs.add(key)
            yield from _walk(Path(entry.path), rel + "/", seen_dirs, warn)
            continue
        kind = _kind_of(name)
        if kind is None:
            continue
        if not is_file:
            if entry.is_symlink() and not os.path.exists(entry.path):
                warn(LoadWarning(entry.path, "skipped: broken symbolic link"))
            continue  # sockets, fifos, devices: silently ignored
        try:
            size = entry.stat().st_size
            path = Path(entry.path).resolve()
        except OSError as e:
            warn(LoadWarning(entry.path, f"skipped: cannot read file ({_os_reason(e)})"))
            continue
        yield path, rel, kind, size


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


class _Skip(Exception):
    """Internal: the whole file is skipped with this reason (and optional line)."""

    def __init__(self, reason: str, line: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.line = line


def _os_reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "it is a directory"
    if e.strerror:
        return e.strerror[:1].lower() + e.strerror[1:]
    return str(e) or type(e).__name__


def _read_bytes(sf: SourceFile, max_bytes: int) -> bytes:
    try:
        size = os.stat(sf.path).st_size
        if size > max_bytes:
            raise _Skip(f"skipped: file is {_human(size)}, larger than the {_human(max_bytes)} limit")
        with open(sf.path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise _Skip("skipped: file disappeared before it could be read") from None
    except PermissionError:
        raise _Skip("skipped: cannot read file (permission denied); check its permissions") from None
    except OSError as e:
        raise _Skip(f"skipped: cannot read file ({_os_reason(e)})") from None
    if len(data) > max_bytes:  # grew since stat
        raise _Skip(f"skipped: file is larger than the {_human(max_bytes)} limit")
    return data


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover


def _decode_text(data: bytes) -> str:
    """Bytes of a text-like file -> str, or _Skip for empty / binary / non-UTF-8 content."""
    if not data:
        raise _Skip("skipped: empty file")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise _Skip("skipped: UTF-16 encoded text; convert it to UTF-8")
    if b"\x00" in data[:_SNIFF]:
        raise _Skip("skipped: binary file (contains NUL bytes); not a text file")
    offset = 0
    if data.startswith(_BOM):
        data = data[len(_BOM):]
        offset = len(_BOM)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = data[e.start]
        raise _Skip(
            f"skipped: not valid UTF-8 (byte 0x{bad:02x} at offset {e.start + offset}); convert it to UTF-8"
        ) from None
    if not text.strip():
        raise _Skip("skipped: file contains only whitespace")
    return text.replace("\r\n", "\n")


def _check_line_lengths(text: str, max_line_chars: int) -> None:
    pos = 0
    lineno = 1
    n = len(text)
    if n <= max_line_chars:
        return
    while pos <= n:
        end = text.find("\n", pos)
        if end < 0:
            end = n
        length = end - pos
        if length > max_line_chars:
            raise _Skip(
                f"skipped: line {lineno} is {length:,} characters long (limit {max_line_chars:,}); "
                "it looks like minified or generated data, not prose",
                line=lineno,
            )
        pos = end + 1
        lineno += 1


def load_file(
    sf: SourceFile,
    warn: Warn,
    *,
    max_bytes: int = 200 * 2**20,
    max_line_chars: int = 1_000_000,
) -> list[Document]:
    """Read one file into documents. Never raises for bad content: it warns and skips instead."""
    shown = str(sf.path)
    try:
        data = _read_bytes(sf, max_bytes)
        if sf.kind == "pdf":
            return _load_pdf(sf, data, warn)
        text = _decode_text(data)
        if sf.kind in ("txt", "md", "html"):
            _check_line_lengths(text, max_line_chars)
        if sf.kind == "txt":
            return [Document(sf.rel, text, title=sf.path.stem, source=shown)]
        if sf.kind == "md":
            return [Document(sf.rel, text, title=_md_title(text) or sf.path.stem, source=shown)]
        if sf.kind == "html":
            return _load_html(sf, text)
        if sf.kind == "jsonl":
            return _load_jsonl(sf, text, warn)
        if sf.kind == "json":
            return _load_json(sf, text, warn)
        raise _Skip(f"skipped: unsupported kind {sf.kind!r}")
    except _Skip as s:
        warn(LoadWarning(shown, s.reason, s.line))
    except Exception as e:  # a loader bug or a library surprise must not stop the whole run
        warn(LoadWarning(shown, f"skipped: could not be read ({type(e).__name__}: {_one_line(e)})"))
    return []


def _one_line(e: BaseException, limit: int = 200) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


# --- markdown --------------------------------------------------------------------------------

_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _md_title(text: str) -> str:
    """Text of the first level-1 ATX heading ("# Title"), ignoring fenced code blocks."""
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker[0] * len(marker)
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is not None:
            continue
        h = _ATX_H1.match(line)
        if h and h.group(1).strip():
            return h.group(1).strip()
    return ""


# --- html ------------------------------------------------------------------------------------

_DROP_TAGS = ["script", "style", "noscript", "template", "svg", "head", "title"]
# Block elements end a line; "paragraph" blocks also leave a blank line around them.
_PARA_TAGS = [
    "address", "article", "aside", "blockquote", "body", "details", "dialog", "dl", "fieldset",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr",
    "html", "main", "menu", "nav", "ol", "p", "pre", "section", "table", "ul",
]
_LINE_TAGS = [
    "caption", "dd", "div", "dt", "figcaption", "legend", "li", "option", "summary", "td",
    "th", "tr", "tbody", "thead", "tfoot",
]
_LINE_MARK = "\ue000"  # private-use characters, removed from the input first
_PARA_MARK = "\ue001"
# a run of marks (with only whitespace between them) starts and ends with a mark: no backtracking
_MARKS = re.compile(r"[\ue000\ue001](?:[\s\ue000\ue001]*[\ue000\ue001])?")
_WS = re.compile(r"\s+")
_SPACES = re.compile(r"[^\S\n]+")


def _load_html(sf: SourceFile, html: str) -> list[Document]:
    from bs4 import BeautifulSoup
    from bs4.element import Comment, Declaration, Doctype, NavigableString, ProcessingInstruction

    html = html.replace(_LINE_MARK, "").replace(_PARA_MARK, "")
    soup = BeautifulSoup(html, "html.parser")
    title = ""
    t = soup.find("title")
    if t is not None:
        title = _WS.sub(" ", t.get_text()).strip()
    for name in _DROP_TAGS:
        while (tag := soup.find(name)) is not None:
            tag.decompose()
    if not title:
        h1 = soup.find("h1")
        if h1 is not None:
            title = _WS.sub(" ", h1.get_text(" ")).strip()
    for s in soup.find_all(string=lambda s: isinstance(s, (Comment, Declaration, Doctype, ProcessingInstruction))):
        s.extract()
    # HTML whitespace rules: runs of whitespace are one space, except inside <pre>/<textarea>
    for s in list(soup.find_all(string=True)):
        if s.find_parent(["pre", "textarea"]) is None:
            collapsed = _WS.sub(" ", str(s))
            if collapsed != s:
                s.replace_with(NavigableString(collapsed))
    for br in soup.find_all("br"):
        br.replace_with(_LINE_MARK)
    for names, mark in ((_PARA_TAGS, _PARA_MARK), (_LINE_TAGS, _LINE_MARK)):
        for tag in soup.find_all(names):
            if tag.parent is not None:
                tag.insert_before(mark)
                tag.insert_after(mark)
    raw = _MARKS.sub(lambda m: "\n\n" if _PARA_MARK in m.group(0) else "\n", soup.get_text())
    lines = [_SPACES.sub(" ", line).strip() for line in raw.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not text:
        raise _Skip("skipped: no visible text in this HTML file")
    return [Document(sf.rel, text, title=title or sf.path.stem, source=str(sf.path))]


# --- pdf -------------------------------------------------------------------------------------


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


def _load_pdf(sf: SourceFile, data: bytes, warn: Warn) -> list[Document]:
    shown = str(sf.path)
    if not data:
        raise _Skip("skipped: empty file")
    if b"%PDF-" not in data[:1024]:
        raise _Skip("skipped: not a PDF file (no %PDF header); is the extension wrong?")
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
                    raise _Skip("skipped: encrypted PDF that needs a password; decrypt it first")
            n_pages = len(reader.pages)
        except _Skip:
            raise
        except Exception as e:
            raise _Skip(f"skipped: corrupt or truncated PDF ({_one_line(e)})") from None
        if n_pages == 0:
            raise _Skip("skipped: PDF has no pages")

        texts: list[tuple[int, str]] = []
        failed: list[tuple[int, str]] = []
        for i in range(n_pages):
            try:
                page_text = reader.pages[i].extract_text() or ""
            except Exception as e:
                failed.append((i + 1, _one_line(e)))
                continue
            page_text = page_text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n").strip()
            if page_text:
                texts.append((i + 1, page_text))

        title = ""
        try:
            meta = reader.metadata
            if meta is not None and meta.title:
                title = _WS.sub(" ", str(meta.title)).strip()
        except Exception:
            title = ""

    if failed and len(failed) == n_pages:
        raise _Skip(f"skipped: corrupt PDF, text extraction failed on every page ({failed[0][1]})")
    for page_no, why in failed:
        warn(LoadWarning(shown, f"page {page_no} skipped: text extraction failed ({why})"))
    if not texts:
        if failed:
            return []  # the per-page warnings above already said why
        raise _Skip("skipped: no extractable text (image-only or scanned PDF?); run OCR on it first")

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
            title=title or sf.path.stem,
            source=shown,
            metadata={"page_count": n_pages},
            pages=pages,
        )
    ]


# --- jsonl -----------------------------------------------------------------------------------


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _id_str(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int)) or (isinstance(value, float) and value == value):
        s = str(value).strip()
        return s or None
    return None


def _load_jsonl(sf: SourceFile, text: str, warn: Warn) -> list[Document]:
    shown = str(sf.path)
    docs: list[Document] = []
    first_line: dict[str, int] = {}
    n_warned = 0
    n_suppressed = 0

    def bad(lineno: int, reason: str) -> None:
        nonlocal n_warned, n_suppressed
        if n_warned < _MAX_LINE_WARNINGS:
            n_warned += 1
            warn(LoadWarning(shown, reason, lineno))
        else:
            n_suppressed += 1

    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            bad(lineno, f"line {lineno} skipped: invalid JSON ({e.msg} at column {e.colno})")
            continue
        except ValueError as e:  # e.g. numbers with too many digits
            bad(lineno, f"line {lineno} skipped: invalid JSON ({_one_line(e)})")
            continue
        if not isinstance(obj, dict):
            bad(lineno, f"line {lineno} skipped: expected a JSON object, got {_json_type(obj)}")
            continue
        id_key = "_id" if "_id" in obj else "id" if "id" in obj else None
        if id_key is None:
            bad(lineno, f'line {lineno} skipped: no "_id" or "id" field')
            continue
        doc_id = _id_str(obj[id_key])
        if doc_id is None:
            bad(lineno, f'line {lineno} skipped: "{id_key}" must be a non-empty string or number')
            continue
        body = obj.get("text")
        if not isinstance(body, str):
            what = "missing" if "text" not in obj else f"a {_json_type(body)}, not a string"
            bad(lineno, f'line {lineno} skipped: "text" is {what}')
            continue
        if not body.strip():
            bad(lineno, f'line {lineno} skipped: "text" is empty')
            continue
        if doc_id in first_line:
            bad(lineno, f"line {lineno} skipped: duplicate id {doc_id!r} (first seen on line {first_line[doc_id]})")
            continue
        first_line[doc_id] = lineno
        raw_title = obj.get("title")
        title = raw_title.strip() if isinstance(raw_title, str) else ""
        if not title and isinstance(raw_title, (int, float)) and not isinstance(raw_title, bool):
            title = str(raw_title)
        metadata = {
            k: v for k, v in obj.items() if k not in (id_key, "title", "text") and _json_safe(v)
        }
        docs.append(Document(doc_id, body, title=title, source=shown, metadata=metadata))
    if n_suppressed:
        warn(LoadWarning(shown, f"{n_suppressed} more broken line(s) skipped (only the first {_MAX_LINE_WARNINGS} are listed)"))
    return docs


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__  # pragma: no cover


# --- json (SQuAD) ----------------------------------------------------------------------------


def _is_squad(obj: Any) -> bool:
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list) or not obj["data"]:
        return False
    return all(isinstance(a, dict) and isinstance(a.get("paragraphs"), list) for a in obj["data"])


def _load_json(sf: SourceFile, text: str, warn: Warn) -> list[Document]:
    shown = str(sf.path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Skip(f"skipped: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})", line=e.lineno) from None
    except ValueError as e:
        raise _Skip(f"skipped: invalid JSON ({_one_line(e)})") from None
    if not _is_squad(obj):
        raise _Skip("skipped: not a SQuAD-format json file; use .jsonl with one document per line")
    docs: list[Document] = []
    seen: set[str] = set()
    n_empty = 0
    dup_titles: list[str] = []
    for a_idx, article in enumerate(obj["data"]):
        raw_title = article.get("title")
        if not isinstance(raw_title, str) or not raw_title.strip():
            raw_title = f"article_{a_idx}"
        if raw_title in seen:
            dup_titles.append(raw_title)
            continue
        seen.add(raw_title)
        for p_idx, para in enumerate(article["paragraphs"]):
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str) or not context.strip():
                n_empty += 1
                continue
            qas = para.get("qas")
            qids = [
                str(qa["id"])
                for qa in (qas if isinstance(qas, list) else [])
                if isinstance(qa, dict) and _id_str(qa.get("id")) is not None
            ]
            docs.append(
                Document(
                    f"{raw_title}#{p_idx}",
                    context,  # kept byte-for-byte: SQuAD answer_start offsets point into it
                    title=raw_title.replace("_", " "),
                    source=shown,
                    metadata={"article": raw_title, "paragraph": p_idx, "question_ids": qids},
                )
            )
    if dup_titles:
        names = ", ".join(repr(t) for t in dup_titles[:3]) + (" ..." if len(dup_titles) > 3 else "")
        warn(LoadWarning(shown, f"skipped {len(dup_titles)} article(s) with a title already used ({names})"))
    if n_empty:
        warn(LoadWarning(shown, f'skipped {n_empty} paragraph(s) with a missing or empty "context"'))
    return docs


# --------------------------------------------------------------------------------------------
# convenience
# --------------------------------------------------------------------------------------------


def load_paths(
    paths: Sequence[str | Path],
    warn: Warn = print_warning,
    *,
    max_bytes: int = 200 * 2**20,
    max_line_chars: int = 1_000_000,
) -> list[Document]:
    """discover + load_file for each file. Documents whose id was already used are skipped
    with a warning, so the returned ids are unique."""
    docs: list[Document] = []
    owner: dict[str, str] = {}
    for sf in discover(paths, warn):
        for doc in load_file(sf, warn, max_bytes=max_bytes, max_line_chars=max_line_chars):
            if doc.doc_id in owner:
                warn(
                    LoadWarning(
                        doc.source or str(sf.path),
                        f"document {doc.doc_id!r} skipped: the same id already came from {owner[doc.doc_id]}; "
                        "rename one of them",
                    )
                )
                continue
            owner[doc.doc_id] = doc.source or str(sf.path)
            docs.append(doc)
    return docs
