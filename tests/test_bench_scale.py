"""`ragqa bench scale` on tiny sizes: the table and JSON come out with the promised fields (no
timing is asserted)."""

import json

from ragqa import Index, verify
from ragqa.benchmarks.scale import bench_scale, realistic_vectors, write_piece
from ragqa.apps.cli import main

from conftest import write_corpus


def test_generated_pieces_are_one_chunk_documents(tmp_path, settings):
    write_piece(tmp_path / "a.jsonl", 0, 50)
    write_piece(tmp_path / "b.jsonl", 50, 50)
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(lines) == 50 and lines[0]["_id"] == "d0" and len(lines[0]["text"].split()) == 12
    report = Index.add([tmp_path / "a.jsonl"], tmp_path / "idx", settings)
    report = Index.add([tmp_path / "b.jsonl"], tmp_path / "idx", settings)
    assert report.documents == 100 and report.chunks == 100
    assert verify(tmp_path / "idx") == []


def test_realistic_vectors_are_unit_and_near_their_seeds():
    import numpy as np

    seeds = np.eye(4, 16, dtype=np.float32)
    x = realistic_vectors(seeds, 100, 0.02, np.random.default_rng(0), batch=30)
    assert x.shape == (100, 16) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert (x @ seeds.T).max(axis=1).min() > 0.9


def test_bench_scale_writes_json(tmp_path, settings, capsys):
    Index.build([write_corpus(tmp_path / "docs", 8)], tmp_path / "seed-idx", settings)
    out = tmp_path / "scale.json"
    res = bench_scale(settings.replace(embedder="fake:32"), out, stream_chunks=300, pieces=3, hnsw_n=500, checks_at=2000,
                      vectors_from=tmp_path / "seed-idx", queries=None)
    saved = json.loads(out.read_text())
    assert saved["stream"]["total_chunks"] == 300 and len(saved["stream"]["pieces"]) == 3
    assert {"peak_rss_mb", "rss_mb", "seconds", "chunks"} <= set(saved["stream"]["pieces"][0])
    assert "peak_rss_mb_at_1m_extrapolated" in saved["stream"]
    last = saved["stream"]["pieces"][-1]
    assert last["open_s"] > 0 and 0 <= last["check_s"] <= last["open_s"] and last["live_bytes"] > 0
    assert saved["stream"]["checks_at"]["chunks"] == 2000 and saved["stream"]["checks_at"]["bytes"] > 0
    rows = saved["hnsw"]["rows"]
    assert rows[0]["index"] == "flat (exact)" and rows[0]["recall@10"] == 1.0 and "seed_recall@10" in rows[1]
    assert all(0 <= r["recall@10"] <= 1 for r in rows) and len(rows) == 6
    assert res["hnsw"]["n"] == 500
    assert "| index | efSearch |" in capsys.readouterr().out


def test_cli_bench_scale_without_vectors_skips_hnsw(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAGQA_THREADS", "1")
    out = tmp_path / "s.json"
    assert main(["bench", "scale", "--stream-chunks", "100", "--pieces", "2", "--checks-at", "0", "--out", str(out)]) == 0
    assert "HNSW part skipped" in capsys.readouterr().out
    assert json.loads(out.read_text())["stream"]["total_chunks"] == 100
