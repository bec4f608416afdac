"""Crash-safe, versioned index directories.

    DIR/
      CURRENT          the name of the live version, replaced atomically
      v-000007/        a complete version: manifest.json + data files, never modified once live
      .tmp-<pid>-*/    a version being written (removed by the next build if a crash left it)
      .lock            held (flock) by the one build allowed at a time

A build writes a whole new version into a temp dir on the same filesystem, fsyncs every file and
the dir, renames it to ``v-N``, then replaces ``CURRENT`` (write temp, fsync, rename, fsync dir).
A crash at any moment leaves ``CURRENT`` naming either the old or the new version, each complete.
The previous version is kept until the next build, so readers that opened it keep working.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ragqa.errors import IndexCorrupt, IndexLocked, IndexNotFound

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
_VERSION_RE = re.compile(r"^v-(\d{6,})$")


def version_number(version: Path) -> int:
    """The N of a ``v-N`` version directory."""
    m = _VERSION_RE.match(Path(version).name)
    if not m:
        raise IndexCorrupt(f"{version}: not a version directory (v-NNNNNN)")
    return int(m.group(1))


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    for root, dirs, files in os.walk(path):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON next to ``path``, fsync, rename over it: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


class IndexDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # --- reading -------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / CURRENT).is_file()

    def current(self) -> Path:
        marker = self.path / CURRENT
        if not marker.is_file():
            if not self.path.exists():
                raise IndexNotFound(f"{self.path}: no such index; build one with "
                                    f"`ragqa index build PATH --index {self.path}`")
            raise IndexNotFound(f"{self.path}: not a ragqa index (no {CURRENT} file); build one with "
                                f"`ragqa index build PATH --index {self.path}`")
        name = marker.read_text(encoding="utf-8").strip()
        version = self.path / name
        if not _VERSION_RE.match(name) or not (version / MANIFEST).is_file():
            raise IndexCorrupt(f"{marker}: names version {name!r}, which is missing; "
                               "rebuild with `ragqa index build --rebuild`")
        return version

    def read_manifest(self, version: Path | None = None) -> dict:
        version = version or self.current()
        try:
            manifest = json.loads((version / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise IndexCorrupt(f"{version / MANIFEST}: unreadable manifest ({exc})") from None
        fmt = manifest.get("format_version")
        if fmt != FORMAT_VERSION:
            raise IndexCorrupt(f"{version / MANIFEST}: format version {fmt!r}, this ragqa reads "
                               f"{FORMAT_VERSION}; rebuild with `ragqa index build --rebuild`")
        return manifest

    def versions(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.is_dir() and _VERSION_RE.match(p.name))

    # --- writing -------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / ".lock", "a+")
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexLocked(f"{self.path}: index is locked by another build; wait for it "
                                  "to finish and try again") from None
            yield
        finally:
            fh.close()  # closing releases the flock; the kernel also releases it if we die

    def next_number(self) -> int:
        """The number the next ``commit`` gives its version (call under ``lock``, after
        ``collect_garbage``)."""
        return max((version_number(p) for p in self.versions()), default=0) + 1

    def new_version(self) -> Path:
        """A fresh temp directory for the next version (call under ``lock``)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.path, prefix=f".tmp-{os.getpid()}-"))

    def commit(self, tmp: Path, manifest: dict) -> Path:
        """Write the manifest (with checksums of every data file) into ``tmp``, make it durable,
        and make it the live version. Returns the new version directory."""
        manifest = dict(manifest, format_version=FORMAT_VERSION)
        manifest["files"] = {p.relative_to(tmp).as_posix(): file_sha256(p)
                             for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != MANIFEST}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True, ensure_ascii=False)
            fh.write("\n")
        fsync_tree(tmp)
        version = self.path / f"v-{self.next_number():06d}"
        os.rename(tmp, version)
        fsync_path(self.path)
        marker_tmp = self.path / f".{CURRENT}.{os.getpid()}.tmp"
        with open(marker_tmp, "w", encoding="utf-8") as fh:
            fh.write(version.name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(marker_tmp, self.path / CURRENT)
        fsync_path(self.path)
        return version

    def collect_garbage(self, keep: int = 2) -> None:
        """Remove temp dirs left by crashed builds and all but the newest ``keep`` versions
        (the live one always kept). Call under ``lock``."""
        live = self.current().name if self.exists() else None
        for p in self.path.iterdir():
            if p.name.startswith(".tmp-") or (p.name.startswith(f".{CURRENT}.") and p.name.endswith(".tmp")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        versions = self.versions()
        if live is None:
            return
        live_i = [v.name for v in versions].index(live)
        for v in versions[: max(0, live_i - keep + 1)] + versions[live_i + 1:]:
            shutil.rmtree(v, ignore_errors=True)
