"""End to end with the real packaged embedder (all-MiniLM-L6-v2) on a slice of the demo corpus."""

import pytest

from ragqa import Index, verify
from ragqa.config import Settings

from conftest import ROOT

pytestmark = pytest.mark.slow
DEMO = ROOT / "data" / "demo"


@pytest.fixture(scope="module")
def built(tmp_path_factory, minilm_dir):
    tmp = tmp_path_factory.mktemp("e2e")
    settings = Settings(cache_dir=tmp / "cache", threads=1)  # the defaults users get
    paths = [DEMO / "amazon_rainforest.txt", DEMO / "black_death.pdf", DEMO / "oxygen.html"]
    report = Index.build(paths, tmp / "idx", settings)
    return tmp / "idx", settings, report


def test_real_build_and_search(built):
    idx_dir, settings, report = built
    assert report.documents == 3 and report.skipped == 0 and report.chunks > 20
    assert verify(idx_dir) == []
    with Index.open(idx_dir, settings) as idx:
        info = idx.info()
        assert info["embedder"]["name"] == "all-MiniLM-L6-v2" and info["embedder"]["dim"] == 384
        for question, doc in [("Which disease killed much of Europe's population in the 14th century?", "black_death.pdf"),
                              ("What percentage of the Earth's atmosphere is oxygen?", "oxygen.html"),
                              ("How large is the Amazon basin?", "amazon_rainforest.txt")]:
            for mode in ("dense", "bm25", "hybrid"):
                assert idx.search(question, k=1, mode=mode)[0].doc_id == doc, (question, mode)
        pdf_hits = [h for h in idx.search("plague", k=10, mode="bm25") if h.doc_id == "black_death.pdf"]
        assert pdf_hits and all(h.page >= 1 for h in pdf_hits)


def test_torch_backend_reads_the_onnx_built_index(built):
    """ONNX and torch give the same vectors: an index built with one answers queries with the other."""
    idx_dir, settings, _ = built
    q = "Where did the plague come from?"
    with Index.open(idx_dir, settings.replace(embed_backend="torch")) as a, Index.open(idx_dir, settings) as b:
        ha, hb = a.search(q, k=5, mode="dense"), b.search(q, k=5, mode="dense")
        assert [h.chunk_id for h in ha] == [h.chunk_id for h in hb]
        assert all(abs(x.score - y.score) < 1e-4 for x, y in zip(ha, hb))


def test_rebuild_with_cache_embeds_nothing(built, tmp_path):
    idx_dir, settings, _ = built
    report = Index.build([DEMO / "amazon_rainforest.txt", DEMO / "black_death.pdf", DEMO / "oxygen.html"],
                         tmp_path / "idx2", settings)
    assert report.chunks > 20 and report.embedded == 0  # all answered by the shared embedding cache
    with Index.open(tmp_path / "idx2", settings) as idx:
        assert idx.info()["chunks"] == report.chunks


def test_an_upload_keeps_the_embedders_name(built, tmp_path):
    """Issue 19 point 5: after an upload the UI showed the embedder as a site-packages path (the
    update recorded the directory the index's own embedder was loaded from as its name)."""
    import shutil

    from ragqa.apps.uploads import add_uploads

    idx_dir, settings, _ = built
    copy = tmp_path / "idx"
    shutil.copytree(idx_dir, copy)
    result = add_uploads([("glaciers.txt", b"Glaciers carve deep U-shaped valleys as they move downhill.")],
                         copy, settings)
    assert result.added == 1
    with Index.open(copy, settings) as idx:
        assert idx.info()["embedder"]["name"] == "all-MiniLM-L6-v2"
