"""Files uploaded through the UI: safe names, size limits, no overwriting, then added to an index.

    saved, problems = save_uploads([("report.pdf", data)], uploads_folder(index_dir), 20 * 2**20)
    report = Index.add(saved, index_dir, settings, warn=...)

or both steps at once, with the problems of each file named (``add_uploads``). Pure functions
apart from the files they write; the Streamlit app only calls them.

Rules:

* a file name is reduced to its last path component (``/`` and ``\\`` both count), control and
  shell-special characters become ``_``, leading dots are dropped (no dotfiles, no ``..``), the
  name is cut to 255 bytes (keeping its suffix) and an empty result becomes ``upload``;
* only ``UPLOAD_SUFFIXES`` are accepted; a file over ``max_bytes`` or an empty file is refused;
* files are only ever created inside ``folder``, never overwritten: a name that exists with other
  bytes gets ``-1``, ``-2``... before its suffix (the same bytes again reuse the existing file);
* a problem with one file is reported by its uploaded name and never stops the others.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ragqa.indexing.documents import printable, size_vs_limit

UPLOAD_SUFFIXES = (".pdf", ".txt", ".text", ".md", ".markdown", ".html", ".htm")
DEFAULT_MAX_MB = 20
MAX_NAME_BYTES = 255
_UNSAFE = re.compile(r"[^\w.\- ()+,=@]", re.UNICODE)  # \w keeps letters and digits of any script
_RESERVED_WINDOWS = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}


def safe_filename(name: str) -> str:
    """A harmless file name for ``name`` (which may be any string a browser sends): no folders,
    no hidden files, no control characters, at most 255 bytes, never empty."""
    name = unicodedata.normalize("NFC", str(name or ""))
    name = re.split(r"[/\\]", name)[-1]  # "../../etc/passwd" -> "passwd", "C:\\x\\a.txt" -> "a.txt"
    name = "".join(ch if unicodedata.category(ch)[0] != "C" else "_" for ch in name)
    name = _UNSAFE.sub("_", name)
    name = re.sub(r"\s+", " ", name).strip(" .")
    name = name.lstrip(".-_ ")  # no dotfiles, no "..", nothing that reads like an option
    name = re.sub(r"_{2,}", "_", name)
    stem, suffix = os.path.splitext(name)
    if not stem or stem.strip("._- ") == "":
        stem = "upload"
    if stem.split(".")[0].upper() in _RESERVED_WINDOWS:
        stem = "_" + stem
    suffix = suffix[:16]
    while len((stem + suffix).encode("utf-8")) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem + suffix


def uploads_folder(index_dir: str | Path) -> Path:
    """Where uploads for an index are kept: ``<parent>/uploads/<index name>/`` (beside the index,
    never inside its version folders)."""
    index_dir = Path(index_dir).resolve()
    return index_dir.parent / "uploads" / index_dir.name


def _candidates(name: str):
    stem, suffix = os.path.splitext(name)
    yield name
    n = 1
    while True:
        extra = f"-{n}"
        cut = stem
        while len((cut + extra + suffix).encode("utf-8")) > MAX_NAME_BYTES:
            cut = cut[:-1]
        yield cut + extra + suffix
        n += 1


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.is_file() and not path.is_symlink() and path.stat().st_size == len(data) \
            and path.read_bytes() == data
    except OSError:
        return False


def _write_new(folder: Path, name: str, data: bytes, reserved: Collection[str]) -> Path:
    """Writes ``data`` to a new file in ``folder`` (``name`` or ``name-N``), or returns the existing
    file holding exactly these bytes. Never replaces a file: the data goes to a hidden temp file
    that is hard-linked to the final name, which fails if that name exists."""
    tmp = None
    try:
        for candidate in _candidates(name):
            target = folder / candidate
            if candidate in reserved:
                continue
            if _same_bytes(target, data):
                return target
            if os.path.lexists(target):
                continue
            if tmp is None:
                fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=folder)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:  # somebody else took the name meanwhile
                continue
            except OSError:  # no hard links here: exclusive create instead
                try:
                    with open(target, "xb") as fh:
                        fh.write(data)
                except FileExistsError:
                    continue
            return target
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    raise AssertionError("unreachable")


def save_uploads(files: Sequence[tuple[str, bytes]], folder: str | Path, max_bytes: int, *,
                 suffixes: Collection[str] = UPLOAD_SUFFIXES,
                 reserved: Collection[str] = ()) -> tuple[list[Path], list[str]]:
    """Saves ``(uploaded name, bytes)`` pairs into ``folder`` under safe, new names.

    Returns the saved paths (in the order given; a file uploaded again with the same bytes gives
    its existing path) and one problem line per refused file, naming it as uploaded.
    ``reserved``: names not to use (e.g. document ids already in the index from elsewhere, which
    an upload of the same name would otherwise replace)."""
    results = _save_each(files, folder, max_bytes, suffixes, reserved)
    return [p for _, p, _ in results if p is not None], [e for _, _, e in results if e is not None]


def _save_each(files, folder, max_bytes, suffixes, reserved) -> list[tuple[str, Path | None, str | None]]:
    """(uploaded name, saved path or None, problem or None) for each file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    allowed = {s.lower() for s in suffixes}
    reserved = set(reserved)
    out: list[tuple[str, Path | None, str | None]] = []
    for original, data in files:
        shown = printable(str(original)) or "(no name)"  # as uploaded, on one line
        name = safe_filename(original)
        suffix = os.path.splitext(name)[1].lower()
        problem = None
        if suffix not in allowed:
            kind = f"'{suffix}'" if suffix else "(no extension)"
            problem = f"{shown}: unsupported file type {kind}; allowed: {', '.join(sorted(allowed))}"
        elif len(data) > max_bytes:
            size, limit = size_vs_limit(len(data), max_bytes)
            problem = f"{shown}: too large ({size} > the limit of {limit}); upload a smaller file"
        elif not data:
            problem = f"{shown}: empty file"
        if problem:
            out.append((shown, None, problem))
            continue
        try:
            path = _write_new(root, name, bytes(data), reserved)
        except OSError as exc:
            out.append((shown, None, f"{shown}: could not be saved ({exc.strerror or exc})"))
            continue
        out.append((shown, path, None))
    return out


@dataclass
class UploadResult:
    saved: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per file that was not indexed
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    documents: int = 0  # in the index afterwards
    chunks: int = 0
    version: str | None = None  # the new index version (None: nothing changed)


def add_uploads(files: Sequence[tuple[str, bytes]], index_dir: str | Path, settings=None, *,
                max_bytes: int = DEFAULT_MAX_MB * 2**20, folder: str | Path | None = None,
                progress: Callable[[int, int], None] | None = None) -> UploadResult:
    """Saves the uploads (``save_uploads``) and adds them to the index (``Index.add``). Files the
    index cannot read are reported by their uploaded name; the others are indexed."""
    from ragqa.config import Settings
    from ragqa.errors import RagqaError
    from ragqa.indexing.index import Index

    settings = settings or Settings.load()
    index_dir = Path(index_dir)
    folder = Path(folder) if folder is not None else uploads_folder(index_dir)
    root = folder.resolve() if folder.exists() else None
    reserved: set[str] = set()
    try:
        with Index.open(index_dir, settings) as idx:
            for d in idx.documents():
                src = Path(d["source"]) if d["source"] else None
                if root is None or src is None or src.parent != root:
                    reserved.add(d["doc_id"])
    except RagqaError:
        pass  # no index yet: Index.add creates it
    each = _save_each(files, folder, max_bytes, UPLOAD_SUFFIXES, reserved)
    saved = list(dict.fromkeys(p for _, p, _ in each if p is not None))
    result = UploadResult(saved=saved, problems=[e for _, _, e in each if e is not None])
    if not saved:
        return result
    shown = {str(p): orig for orig, p, _ in each if p is not None}
    warnings: list = []
    try:
        report = Index.add(saved, index_dir, settings, warn=warnings.append, progress=progress)
    except RagqaError as exc:
        result.problems.append(printable(f"the index was not changed: {exc}"))
        return result
    for w in warnings:
        name = shown.get(str(Path(w.path)), Path(w.path).name)
        result.problems.append(printable(f"{name}: {w.reason}"))
    result.added, result.updated, result.unchanged = report.added, report.updated, report.unchanged
    result.documents, result.chunks, result.version = report.documents, report.chunks, report.version
    return result

