"""A damaged index is never served: every file of a live version (the ``CURRENT`` pointer, the
manifest, each data file), truncated and byte-flipped in turn, makes ``search``, ``ask``,
``index info`` and a plain ``index build`` fail with one line that names the file and the
repair; the repair (``index build --rebuild``) works from every one of them."""

import shutil

import faiss
import pytest

from ragqa import Index, IndexCorrupt, Settings
from ragqa.apps.cli import main
from ragqa.indexing.storage import IndexDir

from conftest import write_corpus


@pytest.fixture(autouse=True)
def fake_embedder(monkeypatch):
    monkeypatch.setenv("RAGQA_EMBEDDER", "fake:32")
    monkeypatch.setenv("RAGQA_THREADS", "1")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("damage")
    docs = write_corpus(root / "docs")
    Index.build([docs], root / "idx", Settings(embedder="fake:32"))
    return docs, root / "idx"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _files(idx):
    version = IndexDir(idx).current()
    return ["CURRENT", f"{version.name}/manifest.json"] + sorted(
        p.relative_to(idx).as_posix() for p in version.rglob("*") if p.is_file() and p.name != "manifest.json")


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # one byte flipped in the middle (in the first byte for the short pointer)
        i = 0 if path.name == "CURRENT" else len(data) // 2
        data[i] ^= 0xFF
        path.write_bytes(bytes(data))


def _one_line_naming(err, name):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "--rebuild" in lines[0], err
    assert name in lines[0], (name, err)


def _cases():
    # the file names of a fresh index (stable: the corpus and the format fix them)
    return ["CURRENT", "manifest.json", "vectors.faiss", "chunks.sqlite", "bm25/chunk_ids.npy",
            "bm25/data.csc.index.npy", "bm25/indices.csc.index.npy", "bm25/indptr.csc.index.npy",
            "bm25/params.index.json", "bm25/vocab.index.json"]


def test_cases_cover_every_file(pristine):
    _, idx = pristine
    names = [f.split("/", 1)[1] if f.startswith("v-") else f for f in _files(idx)]
    assert sorted(names) == sorted(_cases())


@pytest.mark.parametrize("how", ["truncated", "flipped"])
@pytest.mark.parametrize("name", _cases())
def test_damage_is_refused_then_repaired(pristine, tmp_path, capsys, name, how):
    docs, clean = pristine
    idx = tmp_path / "idx"
    shutil.copytree(clean, idx)
    version = IndexDir(idx).current()
    target = idx / name if name == "CURRENT" else version / name
    _damage(target, how)
    shown = "CURRENT" if name == "CURRENT" else name.split("/")[-1]

    for args in (["search", "moon", "--index", idx],
                 ["ask", "What orbits the earth?", "--index", idx, "--model", "fake"],
                 ["index", "info", "--index", idx],
                 ["index", "build", docs, "--index", idx]):
        code, out, err = run(capsys, *args)
        assert code == 4, (args, code, out, err)
        assert out == "", (args, out)
        _one_line_naming(err, shown)
    assert run(capsys, "index", "verify", "--index", idx)[0] == 4

    code, out, err = run(capsys, "index", "build", docs, "--index", idx, "--rebuild")
    assert code == 0, err
    assert run(capsys, "index", "verify", "--index", idx)[0] == 0
    code, out, err = run(capsys, "search", "moon", "--index", idx, "--json")
    assert code == 0 and "doc1.txt" in out, err


def test_a_scaled_vector_is_refused(pristine, tmp_path):
    """The probe that once served an unrelated chunk at score 5.8: one stored vector set to 10x
    another's, file size unchanged."""
    _, clean = pristine
    idx = tmp_path / "idx"
    shutil.copytree(clean, idx)
    path = IndexDir(idx).current() / "vectors.faiss"
    index = faiss.read_index(str(path))
    base = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    vectors = faiss.rev_swig_ptr(base.get_xb(), base.ntotal * base.d).reshape(base.ntotal, base.d)
    vectors[1] = 10 * vectors[0]
    faiss.write_index(index, str(path))
    with pytest.raises(IndexCorrupt, match="vectors.faiss: damaged"):
        Index.open(idx, Settings(embedder="fake:32"))


def test_damage_after_open_is_named_not_served(pristine, tmp_path):
    """A file damaged while an index is open (after the checks) fails the read with the file's name."""
    _, clean = pristine
    idx = tmp_path / "idx"
    shutil.copytree(clean, idx)
    with Index.open(idx, Settings(embedder="fake:32")) as index:
        chunks = index.version / "chunks.sqlite"
        chunks.write_bytes(b"\0" * chunks.stat().st_size)
        with pytest.raises(IndexCorrupt, match="chunks.sqlite: unreadable"):
            index.search("moon", k=2, mode="bm25")


def test_old_manifests_without_checksums_still_open(pristine, tmp_path):
    """Indexes written before the xxh3 checksums (sha256 per file, no manifest checksum) open and
    are still checked."""
    import json

    from ragqa.files import file_sha256

    _, clean = pristine
    idx = tmp_path / "idx"
    shutil.copytree(clean, idx)
    version = IndexDir(idx).current()
    manifest = json.loads((version / "manifest.json").read_text())
    del manifest["manifest_xxh3_128"]
    manifest["files"] = {name: file_sha256(version / name) for name in manifest["files"]}
    (version / "manifest.json").write_text(json.dumps(manifest))
    with Index.open(idx, Settings(embedder="fake:32")) as index:
        assert index.search("moon", k=1)
    _damage(version / "chunks.sqlite", "flipped")
    with pytest.raises(IndexCorrupt, match="chunks.sqlite: damaged"):
        Index.open(idx, Settings(embedder="fake:32"))


def test_disk_full_says_the_old_version_is_intact(pristine, tmp_path, capsys, monkeypatch):
    import errno
    import os

    docs, clean = pristine
    idx = tmp_path / "idx"
    shutil.copytree(clean, idx)
    before = (idx / "CURRENT").read_text()
    (docs / "new.txt").write_text("A new document about comets and their tails.\n")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    try:
        code, out, err = run(capsys, "index", "build", docs, "--index", idx)
    finally:
        monkeypatch.setattr(os, "fsync", real_fsync)
        (docs / "new.txt").unlink()
    assert code == 5, err
    assert len(err.strip().splitlines()) == 1
    assert "no space left" in err and "current version is intact" in err
    assert (idx / "CURRENT").read_text() == before
    assert run(capsys, "index", "verify", "--index", idx)[0] == 0
    assert not [p for p in idx.iterdir() if p.name.startswith(".tmp-")]


def test_read_only_index_folder(pristine, tmp_path, capsys, monkeypatch):
    import errno

    docs, clean = pristine
    idx = tmp_path / "idx"
    shutil.copytree(clean, idx)

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(idx / ".lock"))

    monkeypatch.setattr(IndexDir, "lock", read_only)
    code, out, err = run(capsys, "index", "build", docs, "--index", idx)
    assert code == 5 and "read-only" in err and "intact" in err, err
    assert len(err.strip().splitlines()) == 1


def test_add_and_search_refuse_another_embedder(pristine, tmp_path, capsys):
    docs, clean = pristine
    idx = tmp_path / "idx"
    shutil.copytree(clean, idx)
    code, out, err = run(capsys, "search", "moon", "--index", idx, "--embedder", "fake:16")
    assert code == 2 and "built with embedder" in err, err
    code, out, err = run(capsys, "index", "add", docs, "--index", idx, "--embedder", "fake:16")
    assert code == 2 and "built with embedder" in err, err
    code, out, err = run(capsys, "search", "moon", "--index", idx, "--embedder", "fake:32")
    assert code == 0, err


def test_unknown_option_exits_2(capsys):
    code, out, err = run(capsys, "index", "build", "--no-such-option", "x")
    assert code == 2 and "No such option" in err
