"""Files, one owner for each rule: reading JSON Lines, writing a file atomically, the sha256 of a
file, and an exception as one line of text.

    for line_no, obj in read_jsonl(path, "examples file"):   # (line number, JSON object)
        ...
    write_json_atomic(path, {"a": 1})                         # readers see the old or the new file
    write_jsonl_atomic(path, rows)
    file_sha256(path)
    one_line(exc)                                             # "ValueError: bad value"

**Reading JSONL.** Lines end at ``\\n`` only (a U+2028 inside a JSON string is no line break, as
``str.splitlines`` would make it), a UTF-8 byte-order mark is allowed, blank lines are skipped
and line numbers count every line, as an editor shows them. Every problem is one line naming
the file (and line), in one wording::

    PATH: no such WHAT                             (InputNotFound, or the caller's ``missing``)
    PATH: cannot read WHAT (permission denied)     (ConfigError, as all below)
    PATH:LINE: not valid UTF-8 (byte 0xff at offset 6 of the line); convert the file to UTF-8
    PATH:LINE: not valid JSON (Expecting value at column 1); fix or remove that line
    PATH:LINE: expected a JSON object, got an array; fix or remove that line

**Writing atomically.** The bytes go to a temp file beside the target (``.NAME.PID-HEX.tmp``, made
with the usual permissions, not mkstemp's 0600), which is flushed, fsynced, renamed over the
target, and then the directory is fsynced: after a crash the target holds the old or the new
bytes, never a part. A failure removes the temp file and raises.

Index files have their own checksums (xxh3, ``ragqa.indexing.storage``); sha256 here is for
provenance (training data manifests, document hashes, checks against published digests).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ragqa.errors import ConfigError, InputNotFound, RagqaError

__all__ = [
    "a_json_type",
    "describe_json_error",
    "file_sha256",
    "fsync_dir",
    "fsync_path",
    "json_type",
    "one_line",
    "publish",
    "read_jsonl",
    "write_atomic",
    "write_json_atomic",
    "write_jsonl_atomic",
]

_BLOCK = 1 << 20  # 1 MiB, for streamed hashing
_BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------------------------
# messages
# --------------------------------------------------------------------------------------------


def one_line(exc: BaseException | str, limit: int = 300, *, type_name: bool = True) -> str:
    """An exception as one line of at most ``limit`` characters: ``Type: message`` (the message
    alone with ``type_name=False``; the type's name alone when the message is empty), every run
    of whitespace (newlines included) one space, cut with "..." when longer.

    >>> one_line(ValueError("bad\\n  value"))
    'ValueError: bad value'
    >>> one_line(KeyError(), type_name=False)
    'KeyError'
    """
    if isinstance(exc, BaseException):
        message = " ".join(str(exc).split())
        name = type(exc).__name__
        text = (f"{name}: {message}" if type_name else message) if message else name
    else:
        text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type: null, boolean, number, string, array, object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def a_json_type(value: Any) -> str:
    """``json_type`` with its article: "a string", "an array"."""
    kind = json_type(value)
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def describe_json_error(exc: ValueError, *, in_line: bool = False) -> str:
    """The one wording of a JSON decoding problem: ``not valid JSON (Expecting value at line 3
    column 5)``; ``in_line=True`` (the text was one line of a JSONL file): ``... at column 5``."""
    if isinstance(exc, json.JSONDecodeError):
        where = f"column {exc.colno}" if in_line else f"line {exc.lineno} column {exc.colno}"
        return f"not valid JSON ({exc.msg} at {where})"
    return f"not valid JSON ({one_line(exc, 200, type_name=False)})"  # e.g. a number with too many digits


def _read_reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return one_line(exc, 200)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_jsonl(path: str | Path, what: str = "file", *, missing: type[RagqaError] = InputNotFound,
               skip_bad: bool = False) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSON Lines file, read as it goes.

    ``what`` names the file in messages ("no such examples file"). A missing file raises
    ``missing`` (InputNotFound unless the caller's users expect another error) at once; a file
    that cannot be read or decoded, a line that is not JSON or not a JSON object, a ConfigError
    when the reading gets there (see the module docstring for the wording). ``skip_bad=True``
    skips such lines (and undecodable bytes) silently instead: for logs whose last line a crash
    may have cut."""
    path = Path(path)
    if not path.is_file():
        raise missing(f"{path}: no such {what}")
    return _jsonl(path, what, missing, skip_bad)


def _jsonl(path: Path, what: str, missing: type[RagqaError], skip_bad: bool) -> Iterator[tuple[int, dict]]:
    try:
        fh = open(path, "rb")  # lines split at b"\n" only, each decoded on its own: exact line numbers
    except FileNotFoundError:
        raise missing(f"{path}: no such {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({_read_reason(exc)})") from None
    with fh:
        n = 0
        while True:
            try:
                raw = fh.readline()
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read {what} ({_read_reason(exc)})") from None
            if not raw:
                return
            n += 1
            if n == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                line = raw.decode("utf-8", "replace" if skip_bad else "strict")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                                  f"{exc.start} of the line); convert the file to UTF-8") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                if skip_bad:
                    continue
                raise ConfigError(f"{path}:{n}: {describe_json_error(exc, in_line=True)}; "
                                  "fix or remove that line") from None
            if not isinstance(obj, dict):
                if skip_bad:
                    continue
                raise ConfigError(f"{path}:{n}: expected a JSON object, got {a_json_type(obj)}; "
                                  "fix or remove that line")
            yield n, obj


def file_sha256(path: str | Path) -> str:
    """sha256 hex of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

# errors that mean "directories cannot be fsynced here" (some network and FUSE file systems,
# Windows), not that the data is in danger
_NO_DIR_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM,
                errno.EISDIR}


def fsync_path(path: str | Path) -> None:
    """fsync a file or directory by name (raises OSError)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """fsync a directory, so a rename in it is durable; a file system that cannot fsync
    directories is no error (the rename is still atomic), a failing disk is."""
    try:
        fsync_path(path)
    except OSError as exc:
        if exc.errno not in _NO_DIR_SYNC:
            raise


def publish(tmp: str | Path, final: str | Path) -> None:
    """Make the written file ``tmp`` the file ``final`` durably: fsync it, rename it over
    ``final`` (atomic on one file system), fsync the directory."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def _temp_beside(path: Path, binary: bool) -> tuple[Path, IO]:
    """A new temp file next to ``path``, open for writing, with the permissions a plain open
    would give (0666 less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        return tmp, (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline=""))
    raise FileExistsError(f"{path}: no free temp file name beside it")  # pragma: no cover


def write_atomic(path: str | Path, data: str | bytes | Callable[[IO], None], *, binary: bool = False) -> Path:
    """Write ``path`` atomically and durably (see the module docstring); returns it. ``data``:
    the text (UTF-8), the bytes, or a function that writes to the open file (a text file, a
    binary one with ``binary=True``)."""
    path = Path(path)
    binary = binary or isinstance(data, (bytes, bytearray, memoryview))
    tmp, fh = _temp_beside(path, binary)
    try:
        with fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = 1, sort_keys: bool = True) -> Path:
    """``data`` as JSON (UTF-8, not ASCII-escaped, a final newline), written atomically."""
    def write(fh: IO) -> None:
        json.dump(data, fh, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
        fh.write("\n")

    return write_atomic(path, write)


def write_jsonl_atomic(path: str | Path, rows: Iterable[Any]) -> Path:
    """One JSON value per line (UTF-8, not ASCII-escaped), written atomically; ``rows`` may be a
    generator (nothing is held in memory but the current row)."""
    def write(fh: IO) -> None:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    return write_atomic(path, write)
