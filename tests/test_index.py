import json
import threading

import numpy as np
import pytest

from ragqa import EmbedderMismatch, Index, IndexLocked, IndexNotFound, InputNotFound, verify
from ragqa.indexing.embedding import FakeEmbedder
from ragqa.indexing.storage import IndexDir

from conftest import write_corpus


class CountingFake(FakeEmbedder):
    loaded = 0

    def encode(self, texts):
        CountingFake.loaded += 1
        return super().encode(texts)


def test_build_search_and_manifest(tmp_path, corpus, settings):
    report = Index.build([corpus], tmp_path / "idx", settings)
    assert (report.documents, report.added, report.removed, report.skipped) == (5, 5, 0, 0)
    assert report.chunks >= 5 and report.version == "v-000001"
    with Index.open(tmp_path / "idx", settings) as idx:
        hits = idx.search("the moon orbits", k=3, mode="dense")
        assert hits[0].doc_id == "doc1.txt"
        assert {"doc_id", "chunk_id", "score", "text", "source", "title"} <= set(hits[0].to_json())
        assert idx.search("honey bees nectar", k=1, mode="bm25")[0].doc_id == "doc4.txt"
        assert idx.search("volcanoes lava", k=1, mode="hybrid")[0].doc_id == "doc3.txt"
        info = idx.info()
    assert info["documents"] == 5 and info["embedder"]["name"] == "fake:32"
    assert {"name", "path", "dim"} <= set(info["embedder"]) and info["created"] and info["updated"]
    manifest = IndexDir(tmp_path / "idx").read_manifest()
    assert manifest["format_version"] == 1
    assert manifest["chunking"]["max_tokens"] == 128 and manifest["chunking"]["overlap"] == 32
    assert set(manifest["documents"]) == {f"doc{i}.txt" for i in range(5)}
    assert all(len(v["hash"]) == 64 for v in manifest["documents"].values())
    assert verify(tmp_path / "idx") == []


def test_no_pickle_on_disk(tmp_path, corpus, settings):
    Index.build([corpus], tmp_path / "idx", settings)
    for p in (tmp_path / "idx").rglob("*"):
        if p.is_file():
            head = p.read_bytes()[:2]
            assert head[:1] != b"\x80", f"{p} looks like a pickle"
            assert p.suffix not in (".pkl", ".pickle")
            if p.suffix == ".npy":
                np.load(p, allow_pickle=False)


def test_incremental_sync_add_update_remove(tmp_path, corpus, settings):
    idx_dir = tmp_path / "idx"
    Index.build([corpus], idx_dir, settings)
    (corpus / "doc0.txt").write_text("Completely new text about submarines diving deep.", encoding="utf-8")
    (corpus / "doc4.txt").unlink()
    (corpus / "new.md").write_text("# Kites\n\nKites fly in the wind on strings.", encoding="utf-8")
    emb = CountingFake(32)
    report = Index.build([corpus], idx_dir, settings, embedder=emb)
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 3)
    assert emb.calls == 2  # only the changed and the new document were embedded
    with Index.open(idx_dir, settings) as idx:
        assert idx.search("submarines diving", k=1)[0].doc_id == "doc0.txt"
        assert idx.search("kites wind strings", k=1)[0].title == "Kites"
        assert "doc4.txt" not in {d["doc_id"] for d in idx.documents()}
    assert verify(idx_dir) == []


def test_unchanged_rebuild_loads_nothing_and_writes_nothing(tmp_path, corpus, settings):
    idx_dir = tmp_path / "idx"
    Index.build([corpus], idx_dir, settings)
    before = sorted(p.name for p in idx_dir.iterdir())
    emb = CountingFake(32)
    report = Index.build([corpus], idx_dir, settings, embedder=emb)
    assert report.version is None and report.unchanged == 5 and emb.calls == 0
    assert sorted(p.name for p in idx_dir.iterdir()) == before


def test_touched_file_with_same_content_embeds_nothing(tmp_path, corpus, settings):
    idx_dir = tmp_path / "idx"
    Index.build([corpus], idx_dir, settings)
    (corpus / "doc2.txt").write_text((corpus / "doc2.txt").read_text() + "\n", encoding="utf-8")
    emb = CountingFake(32)
    report = Index.build([corpus], idx_dir, settings, embedder=emb)
    # a trailing newline changes the bytes, not the chunk text: the embedding cache answers
    assert report.updated + report.unchanged == 5 and emb.calls == 0
    assert verify(idx_dir) == []


def test_add_keeps_other_documents_and_remove_by_id(tmp_path, corpus, settings):
    idx_dir = tmp_path / "idx"
    Index.build([corpus], idx_dir, settings)
    other = write_corpus(tmp_path / "more", 2)
    (other / "doc0.txt").rename(other / "extra.txt")
    report = Index.add([other / "extra.txt"], idx_dir, settings)
    assert (report.added, report.removed, report.documents) == (1, 0, 6)
    report = Index.remove(["doc1.txt", "extra.txt"], idx_dir, settings)
    assert (report.removed, report.documents) == (2, 4)
    with pytest.raises(Exception, match="no document"):
        Index.remove(["nope"], idx_dir, settings)
    assert verify(idx_dir) == []


def test_missing_path_is_one_line_error(tmp_path, settings):
    with pytest.raises(InputNotFound, match="no such file"):
        Index.build([tmp_path / "missing"], tmp_path / "idx", settings)
    assert not (tmp_path / "idx").exists()


def test_open_missing_index(tmp_path, settings):
    with pytest.raises(IndexNotFound, match="ragqa index build"):
        Index.open(tmp_path / "nothing", settings)


def test_embedder_mismatch_is_an_error(tmp_path, corpus, settings):
    Index.build([corpus], tmp_path / "idx", settings)
    with pytest.raises(EmbedderMismatch, match="fake:16"):
        Index.open(tmp_path / "idx", settings, embedder="fake:16")
    with pytest.raises(EmbedderMismatch):
        Index.build([corpus], tmp_path / "idx", settings, embedder="fake:16")
    # --rebuild switches embedder on purpose
    report = Index.build([corpus], tmp_path / "idx", settings, embedder="fake:16", rebuild=True)
    assert report.added == 5
    assert IndexDir(tmp_path / "idx").read_manifest()["embedder"]["dim"] == 16


def test_second_build_is_locked_out(tmp_path, corpus, settings):
    idx_dir = tmp_path / "idx"
    Index.build([corpus], idx_dir, settings)
    started, release = threading.Event(), threading.Event()

    class Slow(FakeEmbedder):
        def encode(self, texts):
            started.set()
            release.wait(10)
            return super().encode(texts)

    (corpus / "doc0.txt").write_text("changed text", encoding="utf-8")
    t = threading.Thread(target=Index.build, args=([corpus], idx_dir, settings), kwargs={"embedder": Slow(32)})
    t.start()
    assert started.wait(10)
    try:
        with pytest.raises(IndexLocked, match="index is locked"):
            Index.build([corpus], idx_dir, settings)
    finally:
        release.set()
        t.join()
    assert verify(idx_dir) == []


def test_verify_detects_damage(tmp_path, corpus, settings):
    idx_dir = tmp_path / "idx"
    Index.build([corpus], idx_dir, settings)
    version = IndexDir(idx_dir).current()
    with open(version / "vectors.faiss", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff\xff\xff\xff")
    problems = verify(idx_dir)
    assert problems and "vectors.faiss" in problems[0]


def test_hnsw_index_supports_removal(tmp_path, settings):
    corpus = write_corpus(tmp_path / "docs", 8)
    s = settings.replace(index_type="hnsw")
    Index.build([corpus], tmp_path / "idx", s)
    (corpus / "doc3.txt").unlink()
    report = Index.build([corpus], tmp_path / "idx", s)
    assert report.removed == 1
    with Index.open(tmp_path / "idx", s) as idx:
        assert idx.info()["vector_store"]["index_type"] == "hnsw"
        assert "doc3.txt" not in {h.doc_id for h in idx.search("volcanoes lava", k=8, mode="dense")}
    assert verify(tmp_path / "idx") == []


def test_per_doc_keeps_best_chunk_per_document(tmp_path, settings):
    docs = tmp_path / "docs"
    docs.mkdir()
    long = " ".join(f"apple orchard tree {i}." for i in range(200))
    (docs / "long.txt").write_text(long, encoding="utf-8")
    (docs / "short.txt").write_text("an apple a day", encoding="utf-8")
    Index.build([docs], tmp_path / "idx", settings)
    with Index.open(tmp_path / "idx", settings) as idx:
        for mode in ("dense", "bm25", "hybrid"):
            hits = idx.search("apple orchard", k=5, mode=mode, per_doc=True)
            ids = [h.doc_id for h in hits]
            assert len(ids) == len(set(ids)), mode
            assert len(idx.search("apple orchard", k=5, mode=mode)) == 5


def test_broken_files_never_stop_the_build(tmp_path, settings):
    docs = tmp_path / "docs"
    write_corpus(docs, 3)
    (docs / "empty.txt").write_bytes(b"")
    (docs / "binary.md").write_bytes(b"\x00\x01\x02binary\x00")
    (docs / "latin1.txt").write_bytes("café".encode("latin-1"))
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog")
    (docs / "lines.jsonl").write_text('{"_id": "a", "text": "good line"}\n{broken\n{"_id": "b", "text": "ok"}\n')
    (docs / "huge.txt").write_text("x" * 1_200_000)
    warnings = []
    report = Index.build([docs], tmp_path / "idx", settings, warn=warnings.append)
    assert report.documents == 3 + 2  # three text files and two good jsonl lines
    assert report.skipped == 5
    assert len(warnings) == 6 and len(report.warnings) == 6
    joined = "\n".join(map(str, warnings))
    for name in ("empty.txt", "binary.md", "latin1.txt", "broken.pdf", "lines.jsonl:2", "huge.txt"):
        assert name in joined
    assert verify(tmp_path / "idx") == []


def test_unreadable_file_keeps_previous_version_of_its_documents(tmp_path, corpus, settings):
    Index.build([corpus], tmp_path / "idx", settings)
    (corpus / "doc2.txt").write_bytes(b"\xff\xfe\x00garbage")
    report = Index.build([corpus], tmp_path / "idx", settings, warn=lambda w: None)
    assert report.removed == 0 and report.documents == 5 and report.skipped == 1


def test_report_json_has_contract_keys(tmp_path, corpus, settings):
    out = Index.build([corpus], tmp_path / "idx", settings).to_json()
    assert {"documents", "chunks", "added", "updated", "removed", "unchanged", "skipped", "seconds"} <= set(out)
    json.dumps(out)


def test_term_coverage_weights_rare_and_unseen_terms():
    from ragqa.indexing.bm25 import BM25Index

    texts = ["The Eiffel Tower stands in Paris.", "Paris is the capital of France.",
             "Honey bees collect nectar in Paris parks.", "The tower of London is old."]
    bm = BM25Index.build(texts, list(range(len(texts))))
    full, capital, none = bm.coverage("Where is the Eiffel Tower?", [texts[0], texts[1], "Bees and nectar."])
    assert full == 1.0 and capital == 0.0 and none == 0.0
    # "tower" is in two chunks, "eiffel" in one: the rarer term carries more of the weight
    (only_tower,) = bm.coverage("Eiffel tower", [texts[3]])
    assert 0.3 < only_tower < 0.5
    # a term the index never saw weighs most: missing it leaves coverage below one half
    (paris_only,) = bm.coverage("Paris zeppelin", [texts[1]])
    assert paris_only < 0.5
    assert bm.coverage("the of is", texts[:1]) == [0.0]  # stopwords only
    assert BM25Index.build([], []).coverage("Eiffel", ["Eiffel"]) == [1.0]


def test_retrieval_reports_coverage_of_its_hits(tmp_path, corpus, settings):
    Index.build([corpus], tmp_path / "idx", settings)
    with Index.open(tmp_path / "idx", settings) as idx:
        on, off = idx.retrieve_batch(["honey bees nectar", "quantum chromodynamics gluon"], k=2,
                                     coverage=True)
        plain = idx.retrieve_batch(["honey bees nectar"], k=2)[0]  # not asked for: not computed
    assert on.coverage == 1.0 and off.coverage == 0.0 and plain.coverage == 0.0
    assert on.top_similarity > off.top_similarity
