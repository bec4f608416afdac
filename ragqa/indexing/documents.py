"""Find input files and turn them into :class:`Document` objects.

Two steps, kept apart so that an index can skip files whose bytes have not changed:

* :func:`discover` walks the paths the user named and returns :class:`SourceFile` records
  (absolute path, the root it was found under, a relative id, its kind and size).
* :func:`load_file` reads one :class:`SourceFile` and returns its documents.

Bad *content* never raises: every problem becomes exactly one :class:`LoadWarning` handed to
the ``warn`` callback, and whatever is good in the file is still returned. Only a path the user
named that does not exist raises (:class:`~ragqa.errors.InputNotFound`).

File names need not be text: on Linux a name is any bytes, and Python hands one that is not UTF-8
over as a str with "surrogate escapes", which UTF-8 (so JSON files and SQLite) cannot hold.
:attr:`SourceFile.path` keeps the real name (it is what opens the file); ids, titles and
:attr:`Document.source` use :func:`storable`, the same name with U+FFFD for each such byte, as a
file manager shows it; messages use :func:`printable`, which spells the byte out (``\\xff``) and
escapes control characters, so every warning is one line that tells which file it means.

Supported kinds: plain text, Markdown, HTML, PDF, JSON Lines (one document per line) and
SQuAD-format JSON (one document per paragraph).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ragqa.errors import InputNotFound
from ragqa.files import file_sha256, one_line

__all__ = [
    "Document",
    "LoadWarning",
    "SourceFile",
    "SUPPORTED_SUFFIXES",
    "discover",
    "human_size",
    "load_file",
    "load_paths",
    "print_warning",
    "printable",
    "size_vs_limit",
    "storable",
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

_SNIFF = 8192  # bytes looked at for NUL (binary) detection
_BOM = b"\xef\xbb\xbf"
MAX_LINE_WARNINGS = 20  # per jsonl file; the rest are summed up in one more warning
MAX_LISTED = 3  # bad articles / paragraphs named in a SQuAD file's warning
_HASH_SLICE = 1 << 20  # characters of text serialised at a time by content_hash


# --------------------------------------------------------------------------------------------
# names and sizes in messages
# --------------------------------------------------------------------------------------------

_SURROGATES = re.compile("[\ud800-\udfff]")
# bidirectional controls: they reorder what a terminal shows, so a name could pass for another
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def storable(s: str) -> str:
    """``s`` with every lone surrogate (an undecodable byte of a file name, or a bad ``\\ud800``
    escape in JSON) replaced by U+FFFD, so it can be encoded as UTF-8: written to JSON or SQLite."""
    if s.isascii():
        return s
    return _SURROGATES.sub("\ufffd", s)


def printable(s: str) -> str:
    """``s`` for a one-line message: control characters, line and paragraph separators and
    bidirectional controls escaped as Python writes them (``\\n``, ``\\x1b``, ``\\u2028``), an
    undecodable file-name byte as ``\\xNN``; anything else (spaces, accents, backslashes) as is."""
    if s.isprintable():
        return s
    return "".join(_escape(ch) for ch in s)


def _escape(ch: str) -> str:
    if ch.isprintable():
        return ch
    if ch in "\n\r\t":
        return repr(ch)[1:-1]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in _BIDI:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch  # other non-printables (no-break space, joiners, private use) do not break lines


def human_size(n: int) -> str:
    """512 bytes, 1.5 KiB, 20 MiB, 200.3 MiB."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f}".rstrip("0").rstrip(".") + f" {unit}"


def size_vs_limit(size: int, limit: int) -> tuple[str, str]:
    """``size`` and ``limit`` for "X > the limit of Y": rounded, or in exact bytes where the rounded
    values would read the same ("20,971,521 bytes", "20,971,520 bytes (20 MiB)")."""
    a, b = human_size(size), human_size(limit)
    if a != b:
        return a, b
    return f"{size:,} bytes", f"{limit:,} bytes" + (f" ({b})" if limit >= 1024 else "")


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
        """sha256 hex over title, text, metadata and pages; stable across runs and processes.

        The bytes hashed are ``json.dumps`` of ``{"metadata", "pages", "text", "title"}`` (keys
        sorted, compact, not ASCII-only) as UTF-8, with the text serialised a slice at a time
        (JSON escapes each character on its own, so the bytes are the same) so that a 100 MB text
        is not copied twice more to be hashed."""
        h = hashlib.sha256()

        def put(raw: bytes, value: Any, quoted: bool = True) -> None:
            blob = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
            h.update(raw)
            h.update((blob if quoted else blob[1:-1]).encode("utf-8", "surrogatepass"))  # never raises

        put(b'{"metadata":', self.metadata)
        put(b',"pages":', [list(p) for p in self.pages] if self.pages is not None else None)
        h.update(b',"text":"')
        for i in range(0, len(self.text), _HASH_SLICE):
            put(b"", self.text[i:i + _HASH_SLICE], quoted=False)
        put(b'","title":', self.title)
        h.update(b"}")
        return h.hexdigest()


@dataclass(frozen=True)
class LoadWarning:
    """A problem with one input file (or one line of it). The file, or line, was skipped."""

    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"warning: {printable(where)}: {printable(self.reason)}"  # always one line


@dataclass(frozen=True)
class SourceFile:
    """A file found by :func:`discover`."""

    path: Path  # absolute, resolved: the real name, for reading (see storable() for the others)
    root: Path  # the indexed root it was found under
    rel: str  # path relative to root, "/" separators, storable(); the document id for plain files
    kind: str  # "txt" | "md" | "html" | "pdf" | "jsonl" | "json"
    size: int

    @property
    def source(self) -> str:
        """The absolute path as text that JSON and SQLite can hold (``storable``): the documents'
        ``source``, and the key to use for this file wherever it is stored."""
        return storable(str(self.path))

    @property
    def title(self) -> str:
        """The file name without its suffix (``storable``): the title when the file has none."""
        return storable(self.path.stem)

    def file_hash(self) -> str:
        """sha256 hex of the raw bytes, read in 1 MiB blocks."""
        return file_sha256(self.path)


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
                raise InputNotFound(f"{printable(shown)}: broken symbolic link (its target does not exist); "
                                    "check the path")
            raise InputNotFound(f"{printable(shown)}: no such file or directory; check the path")
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
        add(path, Path(os.path.abspath(p)).parent.resolve(), storable(p.name), kind, size)
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
        rel = f"{prefix}{storable(name)}"
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


class Skip(Exception):
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
            shown, limit = size_vs_limit(size, max_bytes)
            raise Skip(f"skipped: file is {shown}, larger than the limit of {limit}")
        with open(sf.path, "rb") as f:
            data = f.read(size + 1)  # (not max_bytes + 1: that much would be allocated up front)
            if len(data) > size:  # it grew since stat: read on, up to the limit
                data += f.read(max_bytes + 1 - len(data))
    except FileNotFoundError:
        raise Skip("skipped: file disappeared before it could be read") from None
    except PermissionError:
        raise Skip("skipped: cannot read file (permission denied); check its permissions") from None
    except OSError as e:
        raise Skip(f"skipped: cannot read file ({_os_reason(e)})") from None
    if len(data) > max_bytes:  # grew since stat
        raise Skip(f"skipped: file is larger than the limit of {human_size(max_bytes)}")
    return data


def _decode_text(data: bytes) -> str:
    """Bytes of a text-like file -> str (BOM dropped, line ends left as they are), or Skip for
    empty / binary / non-UTF-8 content. Makes no copy of the bytes, nor of the text."""
    if not data:
        raise Skip("skipped: empty file")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise Skip("skipped: UTF-16 encoded text; convert it to UTF-8")
    if b"\x00" in data[:_SNIFF]:
        raise Skip("skipped: binary file (contains NUL bytes); not a text file")
    offset = len(_BOM) if data.startswith(_BOM) else 0
    view = memoryview(data)[offset:]
    try:
        text = str(view, "utf-8")
    except UnicodeDecodeError as e:
        raise Skip(
            f"skipped: not valid UTF-8 (byte 0x{view[e.start]:02x} at offset {e.start + offset}); convert it to UTF-8"
        ) from None
    finally:
        view.release()
    if not text or text.isspace():
        raise Skip("skipped: file contains only whitespace")
    return text


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
            raise Skip(
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
        from ragqa.indexing import loaders  # one module per format

        if sf.kind == "pdf":
            return loaders.pdf.load(sf, data, warn)
        text = _decode_text(data)
        del data  # a big file is not kept as bytes beside its text
        text = text.replace("\r\n", "\n")  # the same str when there is no CRLF: no copy
        if sf.kind in ("txt", "md", "html"):
            _check_line_lengths(text, max_line_chars)
        if sf.kind == "txt":
            return [Document(sf.rel, text, title=sf.title, source=sf.source)]
        if sf.kind == "md":
            return [Document(sf.rel, text, title=loaders.markdown.title(text) or sf.title, source=sf.source)]
        if sf.kind == "html":
            return loaders.html.load(sf, text)
        if sf.kind == "jsonl":
            return loaders.jsonl.load(sf, text, warn)
        if sf.kind == "json":
            return loaders.squad_json.load(sf, text, warn)
        raise Skip(f"skipped: unsupported kind {sf.kind!r}")
    except Skip as s:
        warn(LoadWarning(shown, s.reason, s.line))
    except Exception as e:  # a loader bug or a library surprise must not stop the whole run
        warn(LoadWarning(shown, f"skipped: could not be read ({one_line(e, 200)})"))
    return []


# --- text helpers the loaders share -------------------------------------------------------

WHITESPACE = re.compile(r"\s+")


def iter_lines(text: str) -> Iterator[str]:
    """The lines of ``text``, one at a time (``text.split("\\n")`` would copy all of it at once)."""
    pos = 0
    while (end := text.find("\n", pos)) >= 0:
        yield text[pos:end]
        pos = end + 1
    yield text[pos:]


# --- JSON that SQLite and JSON files can hold ----------------------------------------------

def json_safe(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


# a \\uXXXX escape of a UTF-16 surrogate: alone (no pair) it decodes to a str UTF-8 cannot hold
_JSON_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def loads_storable(text: str) -> Any:
    """json.loads, with lone surrogates in the strings (and keys) made ``storable`` (as every JSON
    input ragqa indexes or scores is read, so ids from it match)."""
    obj = json.loads(text)
    return _storable_json(obj) if _JSON_SURROGATE.search(text) else obj


def _storable_json(value: Any) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        return [_storable_json(v) for v in value]
    if isinstance(value, dict):
        return {storable(k): _storable_json(v) for k, v in value.items()}
    return value


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
