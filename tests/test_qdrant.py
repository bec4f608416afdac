"""The Qdrant backend: the same index behaviour as FAISS (sync, add, remove, hybrid search, verify,
crash safety, migration), in qdrant-client's embedded local mode, and against a real server when
one is available (a `qdrant` binary on PATH, or QDRANT_TEST_URL)."""

import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from ragqa import ConfigError, Index, IndexCorrupt, verify  # noqa: E402
from ragqa.apps.cli import main  # noqa: E402
from ragqa.indexing.index import migrate  # noqa: E402
from ragqa.indexing.storage import IndexDir  # noqa: E402

from conftest import ROOT, write_corpus  # noqa: E402

QUERIES = ["the moon orbits the earth", "bees make honey", "volcanoes lava", "trains rails", "apples"]


def _results(idx, mode):
    return [[(h.doc_id, h.chunk_id, round(h.score, 5)) for h in idx.search(q, k=4, mode=mode)] for q in QUERIES]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def qdrant_server(tmp_path_factory):
    """URL of a real Qdrant server: QDRANT_TEST_URL, or a `qdrant` binary started here."""
    url = os.environ.get("QDRANT_TEST_URL")
    if url:
        yield url
        return
    binary = shutil.which("qdrant")
    if not binary:
        pytest.skip("no Qdrant server: no `qdrant` binary on PATH and QDRANT_TEST_URL unset "
                    "(no registry here ships the server; see README 'Scaling out')")
    storage = tmp_path_factory.mktemp("qdrant-server")
    port = _free_port()
    env = dict(os.environ, QDRANT__STORAGE__STORAGE_PATH=str(storage), QDRANT__SERVICE__HTTP_PORT=str(port),
               QDRANT__SERVICE__GRPC_PORT=str(_free_port()), QDRANT__TELEMETRY_DISABLED="true")
    proc = subprocess.Popen([binary], cwd=storage, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.skip("the qdrant binary did not come up")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_local_mode_matches_faiss(tmp_path, corpus, settings):
    Index.build([corpus], tmp_path / "faiss", settings)
    report = Index.build([corpus], tmp_path / "q", settings.replace(vector_backend="qdrant"))
    assert report.added == 5
    manifest = IndexDir(tmp_path / "q").read_manifest()
    cfg = manifest["vector_store"]
    assert cfg["kind"] == "qdrant" and cfg["path"] == "qdrant" and cfg["collection"] == "ragqa-q"
    assert cfg["metric"] == "dot" and "url" not in cfg
    with Index.open(tmp_path / "faiss", settings) as a, Index.open(tmp_path / "q", settings) as b:
        for mode in ("dense", "bm25", "hybrid"):
            assert _results(a, mode) == _results(b, mode), mode
        assert b.info()["vector_store"]["kind"] == "qdrant"
    assert verify(tmp_path / "q") == []


def test_sync_add_remove_and_old_readers(tmp_path, corpus, settings):
    s = settings.replace(vector_backend="qdrant")
    idx_dir = tmp_path / "idx"
    Index.build([corpus], idx_dir, s)
    with Index.open(idx_dir, settings) as v1:
        before = _results(v1, "dense")
        (corpus / "doc0.txt").write_text("Completely new text about submarines diving deep.", encoding="utf-8")
        (corpus / "doc4.txt").unlink()
        (corpus / "new.md").write_text("# Kites\n\nKites fly in the wind on strings.", encoding="utf-8")
        # the settings need not name the backend again: the manifest says qdrant
        report = Index.build([corpus], idx_dir, settings)
        assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 3)
        # a reader of the previous version still sees exactly its own vectors
        assert _results(v1, "dense") == before
    with Index.open(idx_dir, settings) as v2:
        assert v2.search("submarines diving", k=1, mode="dense")[0].doc_id == "doc0.txt"
        assert v2.search("kites wind strings", k=1, mode="hybrid")[0].title == "Kites"
        assert "doc4.txt" not in {h.doc_id for h in v2.search("bees honey nectar", k=10, mode="dense")}
        assert len(v2.vectors) == v2.manifest["counts"]["chunks"]
    assert verify(idx_dir) == []
    other = write_corpus(tmp_path / "more", 2)
    (other / "doc0.txt").rename(other / "extra.txt")
    assert Index.add([other / "extra.txt"], idx_dir, settings).documents == 6
    assert Index.remove(["doc1.txt", "extra.txt"], idx_dir, settings).documents == 4
    assert verify(idx_dir) == []
    # points no kept version sees were purged: the collection holds the two kept versions' points
    from qdrant_client import QdrantClient

    from ragqa.indexing import qdrant_store

    assert not qdrant_store._CLIENTS  # every client was released
    client = QdrantClient(path=str(idx_dir / "qdrant"))
    try:
        total = client.count("ragqa-idx", exact=True).count
    finally:
        client.close()
    assert total <= 2 * IndexDir(idx_dir).read_manifest()["counts"]["chunks"] + 2


def test_crashed_write_is_invisible_and_cleaned(tmp_path, corpus, settings):
    from ragqa.indexing import vectorstore

    s = settings.replace(vector_backend="qdrant")
    idx_dir = tmp_path / "idx"
    Index.build([corpus], idx_dir, s)
    idir = IndexDir(idx_dir)
    manifest = idir.read_manifest()
    with Index.open(idx_dir, settings) as idx:
        before = _results(idx, "dense")
    # a build that died after writing to Qdrant, before its version was committed
    store = vectorstore.open_store(manifest["vector_store"], idir.current(), 32, settings, index_dir=idx_dir,
                                   write_version=idir.next_number())
    rng = np.random.default_rng(0)
    junk = rng.standard_normal((50, 32)).astype(np.float32)
    store.add(np.arange(1000, 1050), junk / np.linalg.norm(junk, axis=1, keepdims=True))
    store.remove(np.asarray([1, 2, 3]))
    store.close()
    with Index.open(idx_dir, settings) as idx:
        assert _results(idx, "dense") == before  # the live version does not see them
        assert len(idx.vectors) == manifest["counts"]["chunks"]
        # a query that hits the junk first still gets k visible results
        hits = idx.vectors.search_many(junk[:1], 3)[0]
        assert len(hits) == 3 and all(c < 1000 for c, _ in hits)
    assert verify(idx_dir) == []
    (corpus / "doc2.txt").write_text("penguins and kites", encoding="utf-8")
    Index.build([corpus], idx_dir, settings)  # cleans up the crashed write, then writes
    assert verify(idx_dir) == []
    with Index.open(idx_dir, settings) as idx:
        assert all(c < 1000 for c in idx.vectors.ids())


def test_rebuild_reuses_the_collection(tmp_path, corpus, settings):
    idx_dir = tmp_path / "idx"
    Index.build([corpus], idx_dir, settings.replace(vector_backend="qdrant"))
    first_next = IndexDir(idx_dir).read_manifest()["next_id"]
    report = Index.build([corpus], idx_dir, settings, rebuild=True)
    assert report.added == 5
    manifest = IndexDir(idx_dir).read_manifest()
    assert manifest["vector_store"]["kind"] == "qdrant" and manifest["next_id"] > first_next
    assert verify(idx_dir) == []
    with pytest.raises(ConfigError, match="16-dim|holds 32-dim"):
        Index.build([corpus], idx_dir, settings, embedder="fake:16", rebuild=True)
    with pytest.raises(ConfigError, match="keeps its vectors in qdrant"):
        Index.build([corpus], idx_dir, settings.replace(vector_backend="faiss"))
    with pytest.raises(ConfigError, match="Qdrant collection 'ragqa-idx', not 'other'"):
        Index.build([corpus], idx_dir, settings.replace(qdrant_collection="other"))
    # the same flags as the first build are fine
    assert Index.build([corpus], idx_dir, settings.replace(vector_backend="qdrant")).version is None


def test_collection_of_another_index_is_refused(tmp_path, corpus, settings):
    store = tmp_path / "shared-qdrant"
    s = settings.replace(vector_backend="qdrant", qdrant_path=str(store), qdrant_collection="docs")
    Index.build([corpus], tmp_path / "a", s)
    with pytest.raises(ConfigError, match="already exists and belongs to"):
        Index.build([corpus], tmp_path / "b", s)
    assert IndexDir(tmp_path / "a").read_manifest()["vector_store"]["path"] == str(store.resolve())


def test_migrate_faiss_to_qdrant_and_back(tmp_path, corpus, settings):
    Index.build([corpus], tmp_path / "idx", settings)
    with Index.open(tmp_path / "idx", settings) as idx:
        expected = {m: _results(idx, m) for m in ("dense", "hybrid")}
    report = migrate(tmp_path / "idx", f"qdrant://{tmp_path / 'qstore'}", tmp_path / "q", settings)
    assert report.chunks == IndexDir(tmp_path / "idx").read_manifest()["counts"]["chunks"]
    assert verify(tmp_path / "q") == [] and verify(tmp_path / "idx") == []
    with Index.open(tmp_path / "q", settings) as idx:
        assert idx.manifest["vector_store"]["kind"] == "qdrant"
        assert {m: _results(idx, m) for m in ("dense", "hybrid")} == expected
    # in place, back to FAISS (HNSW): a new version of the same index
    report = migrate(tmp_path / "q", "faiss:hnsw", settings=settings)
    assert report.version == "v-000002"
    with Index.open(tmp_path / "q", settings) as idx:
        assert idx.manifest["vector_store"]["kind"] == "faiss"
        assert idx.manifest["vector_store"]["index_type"] == "hnsw"
        assert _results(idx, "dense") == expected["dense"]
    assert verify(tmp_path / "q") == []
    # the index keeps syncing after a migration, and the old collection goes with its last version
    (corpus / "doc3.txt").unlink()
    Index.build([corpus], tmp_path / "q", settings)
    Index.build([corpus / "doc0.txt"], tmp_path / "q", settings, prune=False)
    assert verify(tmp_path / "q") == []
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path / "qstore"))
    try:
        assert not client.collection_exists("ragqa-q")
    finally:
        client.close()
    with pytest.raises(ConfigError, match="--to"):
        migrate(tmp_path / "idx", "elsewhere", tmp_path / "x", settings)


def test_missing_collection_is_a_clear_error(tmp_path, corpus, settings):
    Index.build([corpus], tmp_path / "idx", settings.replace(vector_backend="qdrant"))
    shutil.rmtree(tmp_path / "idx" / "qdrant")
    with pytest.raises(IndexCorrupt, match="collection 'ragqa-idx' is missing"):
        Index.open(tmp_path / "idx", settings)
    assert "is missing" in verify(tmp_path / "idx")[0]
    (corpus / "doc0.txt").write_text("changed", encoding="utf-8")
    with pytest.raises(IndexCorrupt, match="is missing"):  # an update never starts an empty collection
        Index.build([corpus], tmp_path / "idx", settings)


def test_cli_build_info_migrate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAGQA_EMBEDDER", "fake:32")
    monkeypatch.setenv("RAGQA_THREADS", "1")
    docs = write_corpus(tmp_path / "docs")
    assert main(["index", "build", str(docs), "--index", str(tmp_path / "idx"), "--backend", "qdrant",
                 "--qdrant-path", str(tmp_path / "qs"), "--qdrant-collection", "notes"]) == 0
    capsys.readouterr()
    assert main(["index", "info", "--index", str(tmp_path / "idx")]) == 0
    assert "qdrant notes (local" in capsys.readouterr().out
    assert main(["index", "migrate", "--from", str(tmp_path / "idx"), "--to", "faiss",
                 "--out", str(tmp_path / "f"), "--json"]) == 0
    assert main(["index", "verify", "--index", str(tmp_path / "f")]) == 0
    assert main(["search", "bees honey", "--index", str(tmp_path / "f"), "-k", "1"]) == 0
    assert "doc4.txt" in capsys.readouterr().out
    code = main(["index", "build", str(docs), "--index", str(tmp_path / "z"), "--qdrant-url", "ftp://x"])
    assert code == 2 and "http://" in capsys.readouterr().err


def test_ragqa_never_unpickles():
    """qdrant-client's local mode pickles points inside its own store (README says so); ragqa's
    own code neither imports pickle nor loads numpy arrays with allow_pickle."""
    for path in (ROOT / "ragqa").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import pickle" not in text and "allow_pickle=True" not in text, path


def test_server_behaves_like_local_mode(tmp_path, corpus, settings, qdrant_server):
    s = settings.replace(vector_backend="qdrant", qdrant_url=qdrant_server,
                         qdrant_collection=f"ragqa-test-{os.getpid()}-{time.monotonic_ns()}")
    Index.build([corpus], tmp_path / "faiss", settings)
    Index.build([corpus], tmp_path / "srv", s)
    with Index.open(tmp_path / "faiss", settings) as a, Index.open(tmp_path / "srv", settings) as b:
        for mode in ("dense", "hybrid"):
            assert _results(a, mode) == _results(b, mode)
    (corpus / "doc1.txt").unlink()
    assert Index.build([corpus], tmp_path / "srv", settings).removed == 1
    assert verify(tmp_path / "srv") == []
    migrate(tmp_path / "faiss", f"qdrant://{qdrant_server}", tmp_path / "m", settings,
            collection=s.qdrant_collection + "-m")
    assert verify(tmp_path / "m") == []


