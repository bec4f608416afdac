"""SIGKILL a build at random moments: the index must always open and verify as either the
previous or the new version, never a mix, and the next build must succeed."""

import os
import random
import signal
import subprocess

import pytest
import sys
import time

from ragqa import Index, verify
from ragqa.indexing.storage import IndexDir

from conftest import ROOT


def _docs(root, rng, n):
    root.mkdir(exist_ok=True)
    for i in range(n):
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma"]) for _ in range(120))
        (root / f"d{i:03d}.txt").write_text(f"Doc {i} {rng.random()}. {words}", encoding="utf-8")


def _state(idx_dir):
    m = IndexDir(idx_dir).read_manifest()
    return {d: v["hash"] for d, v in m["documents"].items()}


def _build(corpus, idx_dir, env):
    return subprocess.Popen([sys.executable, "-m", "ragqa.apps.cli", "index", "build", str(corpus), "--index",
                             str(idx_dir), "--embedder", "fake:64", "--json"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow  # kills subprocess builds
def test_sigkill_during_builds_never_corrupts(tmp_path):
    rng = random.Random(1234)
    corpus, idx_dir = tmp_path / "docs", tmp_path / "idx"
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAGQA_CACHE_DIR=str(tmp_path / "cache"),
               RAGQA_EMBEDDING_CACHE="false")
    _docs(corpus, rng, 150)
    t0 = time.monotonic()
    assert _build(corpus, idx_dir, env).wait(120) == 0
    full = time.monotonic() - t0
    kills = 0
    # at least 8 rounds, and more (up to 24) until 3 builds were really killed: on a loaded box an
    # incremental build often finishes before the random moment comes
    for round_ in range(24):
        if round_ >= 8 and kills >= 3:
            break
        before = _state(idx_dir)
        # change a few documents, remove one, add one
        for p in rng.sample(sorted(corpus.iterdir()), 20):
            p.write_text(p.read_text() + f" changed {round_}", encoding="utf-8")
        sorted(corpus.iterdir())[0].unlink()
        (corpus / f"new{round_}.txt").write_text(f"new document {round_} omega", encoding="utf-8")
        proc = _build(corpus, idx_dir, env)
        time.sleep(rng.uniform(0.0, full * 1.1))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(60)
        assert verify(idx_dir) == [], f"round {round_}"
        after_kill = _state(idx_dir)
        with Index.open(idx_dir) as idx:
            assert idx.search("omega alpha", k=3, mode="bm25")
        assert _build(corpus, idx_dir, env).wait(120) == 0
        complete = _state(idx_dir)
        assert after_kill in (before, complete), f"round {round_}: a mix of versions"
        assert verify(idx_dir) == []
    assert kills >= 3  # the test really interrupted builds
    leftovers = [p.name for p in idx_dir.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []
