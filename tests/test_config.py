"""ragqa.config.Settings: typed environment and TOML, precedence, validation messages, defaults."""

import os
from pathlib import Path

import pytest

from ragqa.config import (EMBED_BACKENDS, INDEX_TYPES, RETRIEVAL_MODES, VECTOR_BACKENDS, Settings,
                          default_cache_dir, default_threads)
from ragqa.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """No RAGQA_<FIELD> from the caller's shell (the suite runs with RAGQA_THREADS=1), no ragqa.toml."""
    for name in list(os.environ):
        if name.startswith("RAGQA_") and name[6:].lower() in Settings.model_fields and name != "RAGQA_CACHE_DIR":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _toml(tmp_path: Path, text: str, name: str = "ragqa.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def test_defaults_are_unchanged():
    s = Settings()
    assert s.model == "qwen2.5-coder-1.5b-instruct"
    assert s.template == "qa-short" and s.top_k == 3
    assert s.abstain_threshold == 0.62 and s.abstain_coverage_weight == 0.3
    assert s.embed_backend == "onnx-int8-fast" and s.embedder == "all-MiniLM-L6-v2"
    assert s.mode == "hybrid" and s.rrf_k == 10 and s.candidates == 100 and s.index_type == "flat"
    assert s.chunk_tokens is None and s.chunk_overlap == 32 and s.repetition_penalty is None
    assert s.decode_int8 is True and s.embedding_cache is True and s.do_sample is False
    assert s.request_timeout == 300.0 and s.max_prompt_tokens == 1536 and s.max_new_tokens == 96
    assert s.threads == default_threads() and s.cache_dir == default_cache_dir()
    assert isinstance(s.variants_dir, Path) and s.variants_dir == Path("adapters")
    assert isinstance(s.cache_dir, Path)
    assert RETRIEVAL_MODES == ("dense", "bm25", "hybrid") and INDEX_TYPES == ("flat", "hnsw")
    assert VECTOR_BACKENDS == ("faiss", "qdrant") and "onnx-int8-fast" in EMBED_BACKENDS


def test_construction_reads_no_environment(monkeypatch):
    monkeypatch.setenv("RAGQA_TOP_K", "7")
    assert Settings().top_k == 3 and Settings.load().top_k == 7


def test_path_fields_are_paths_and_repr_is_a_stable_key(tmp_path):
    s = Settings(cache_dir=str(tmp_path), variants_dir="elsewhere")
    assert s.cache_dir == tmp_path and s.variants_dir == Path("elsewhere")
    assert repr(s) == repr(Settings(cache_dir=tmp_path, variants_dir=Path("elsewhere")))
    assert repr(s).startswith("Settings(embedder='all-MiniLM-L6-v2', ")
    assert s == Settings(cache_dir=tmp_path, variants_dir="elsewhere") and s != s.replace(top_k=4)


@pytest.mark.parametrize("name, raw, what", [
    ("EMBEDDING_CACHE", "maybe", "true or false"),
    ("DECODE_INT8", "2", "true or false"),
    ("TOP_K", "three", "an integer >= 1"),
    ("CHUNK_TOKENS", "1.5", "an integer >= 16"),
    ("REQUEST_TIMEOUT", "soon", "a number of seconds > 0"),
    ("ABSTAIN_THRESHOLD", "high", "a number"),
])
def test_garbage_in_the_environment_is_an_error_naming_the_variable(monkeypatch, name, raw, what):
    monkeypatch.setenv(f"RAGQA_{name}", raw)
    with pytest.raises(ConfigError) as exc:
        Settings.load()
    message = _one_line(exc)
    assert f"environment RAGQA_{name}: setting {name.lower()}={raw!r} must be {what}" in message


@pytest.mark.parametrize("raw, expected", [("1", True), ("true", True), ("Yes", True), ("on", True),
                                           ("0", False), ("false", False), ("NO", False), ("off", False)])
def test_environment_booleans(monkeypatch, raw, expected):
    monkeypatch.setenv("RAGQA_DO_SAMPLE", raw)
    assert Settings.load().do_sample is expected


def test_environment_values_are_typed(monkeypatch, tmp_path):
    for name, raw in {"TOP_K": "5", "REQUEST_TIMEOUT": "12.5", "CHUNK_TOKENS": "256",
                      "VARIANTS_DIR": str(tmp_path), "MODEL": "fake", "EMBEDDING_CACHE": "0",
                      "MODE": "bm25", "REPETITION_PENALTY": "1.2"}.items():
        monkeypatch.setenv(f"RAGQA_{name}", raw)
    s = Settings.load()
    assert (s.top_k, s.request_timeout, s.chunk_tokens, s.model, s.embedding_cache, s.mode,
            s.repetition_penalty) == (5, 12.5, 256, "fake", False, "bm25", 1.2)
    assert s.variants_dir == tmp_path and isinstance(s.variants_dir, Path)


def test_empty_environment_values_are_unset(monkeypatch):
    monkeypatch.setenv("RAGQA_TOP_K", "")
    monkeypatch.setenv("RAGQA_CHUNK_TOKENS", "")
    s = Settings.load()
    assert s.top_k == 3 and s.chunk_tokens is None


def test_a_bad_value_in_the_environment_names_its_rule(monkeypatch):
    monkeypatch.setenv("RAGQA_MODE", "fuzzy")
    with pytest.raises(ConfigError, match=r"environment RAGQA_MODE: setting mode='fuzzy' must be one of "
                                          r"dense, bm25, hybrid$"):
        Settings.load()
    monkeypatch.setenv("RAGQA_MODE", "dense")
    monkeypatch.setenv("RAGQA_TOP_K", "0")
    with pytest.raises(ConfigError, match=r"environment RAGQA_TOP_K: setting top_k='0' must be >= 1$"):
        Settings.load()


def test_unknown_ragqa_variables_are_not_settings_and_are_ignored(monkeypatch):
    """As before: only RAGQA_<FIELD> is read. Other RAGQA_* names belong to other parts of ragqa
    (RAGQA_CONFIG, RAGQA_DEBUG, RAGQA_UI_INDEX, ...), so an unknown one is not an error."""
    monkeypatch.setenv("RAGQA_NO_SUCH_SETTING", "1")
    monkeypatch.setenv("RAGQA_DEBUG", "1")
    monkeypatch.setenv("ragqa_top_k", "9")  # lower case is not read (the names are upper case)
    assert Settings.load() == Settings()


@pytest.mark.parametrize("line, what", [
    ("top_k = \"3\"", "setting top_k='3' must be an integer >= 1"),
    ("top_k = 2.5", "setting top_k=2.5 must be an integer >= 1"),
    ("do_sample = 1", "setting do_sample=1 must be true or false"),
    ("embedding_cache = \"yes\"", "setting embedding_cache='yes' must be true or false"),
    ("request_timeout = \"300\"", "setting request_timeout='300' must be a number of seconds > 0"),
    ("model = 3", "setting model=3 must be a string"),
    ("cache_dir = 3", "setting cache_dir=3 must be a path"),
    ("mode = \"fuzzy\"", "setting mode='fuzzy' must be one of dense, bm25, hybrid"),
    ("max_new_tokens = 0", "setting max_new_tokens=0 must be >= 1"),
])
def test_wrong_types_in_the_file_are_errors_naming_file_and_field(tmp_path, line, what):
    path = _toml(tmp_path, f"[ragqa]\n{line}\n")
    with pytest.raises(ConfigError) as exc:
        Settings.load(path)
    assert _one_line(exc).startswith(f"{path}: {what}")


def test_the_file_takes_toml_types(tmp_path):
    path = _toml(tmp_path, "[ragqa]\ntop_k = 5\ntemperature = 1\ndo_sample = true\nvariants_dir = \"c\"\n"
                           "chunk_tokens = 128\n")
    s = Settings.load(path)
    assert (s.top_k, s.temperature, s.do_sample, s.chunk_tokens) == (5, 1.0, True, 128)
    assert s.variants_dir == Path("c") and isinstance(s.variants_dir, Path)
    assert Settings.load(_toml(tmp_path, "top_k = 4\n", "flat.toml")).top_k == 4  # no [ragqa] table


def test_unknown_key_in_the_file_is_an_error_naming_it(tmp_path):
    path = _toml(tmp_path, "[ragqa]\ntop_k = 5\ntopk = 4\n")
    with pytest.raises(ConfigError) as exc:
        Settings.load(path)
    assert _one_line(exc).startswith(f"{path}: unknown setting(s) topk; known: embedder, ")


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Settings.load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"invalid TOML .*; fix the file"):
        Settings.load(_toml(tmp_path, "top_k = = 3\n"))


def test_precedence_file_then_environment_then_overrides(tmp_path, monkeypatch):
    path = _toml(tmp_path, "[ragqa]\ntop_k = 5\nmodel = \"from-file\"\nshots = 2\n", "mine.toml")
    assert Settings.load(path).top_k == 5
    monkeypatch.setenv("RAGQA_TOP_K", "6")
    monkeypatch.setenv("RAGQA_MODEL", "from-env")
    s = Settings.load(path, model="from-flag", max_new_tokens=None)
    assert (s.top_k, s.model, s.shots, s.max_new_tokens) == (6, "from-flag", 2, 96)


def test_which_file(tmp_path, monkeypatch):
    _toml(tmp_path, "top_k = 4\n")  # ./ragqa.toml (the test runs in tmp_path)
    other = _toml(tmp_path, "top_k = 8\n", "other.toml")
    assert Settings.load().top_k == 4
    monkeypatch.setenv("RAGQA_CONFIG", str(other))
    assert Settings.load().top_k == 8
    assert Settings.load(tmp_path / "ragqa.toml").top_k == 4  # an explicit path wins


def test_overrides_are_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"^setting top_k=0 must be >= 1$"):
        Settings.load(top_k=0)
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.load(no_such_setting=1)


def test_replace_is_a_validated_copy():
    s = Settings()
    t = s.replace(top_k=5, model=None)
    assert t.top_k == 5 and s.top_k == 3 and t.model == s.model
    with pytest.raises(ConfigError, match=r"^setting top_k=0 must be >= 1$"):
        s.replace(top_k=0)
    with pytest.raises(ConfigError, match=r"^setting embed_backend='cuda' must be one of torch, onnx, "):
        s.replace(embed_backend="cuda")
    with pytest.raises(ConfigError, match=r"^setting do_sample='maybe' must be true or false"):
        s.replace(do_sample="maybe")
    with pytest.raises(ConfigError, match="unknown setting.*no_such"):
        s.replace(no_such=1)


@pytest.mark.parametrize("fields, message", [
    ({"gen_dtype": "int4"}, "setting gen_dtype='int4' must be one of auto, bfloat16, float32, float16"),
    ({"index_type": "ivf"}, "setting index_type='ivf' must be one of flat, hnsw"),
    ({"vector_backend": "milvus"}, "setting vector_backend='milvus' must be one of faiss, qdrant"),
    ({"mode": "x"}, "setting mode='x' must be one of dense, bm25, hybrid"),
    ({"hnsw_m": 0}, "setting hnsw_m=0 must be >= 1"),
    ({"chunk_tokens": 8}, "setting chunk_tokens=8 must be >= 16 (or unset)"),
    ({"request_timeout": 0}, "setting request_timeout=0 must be a number of seconds > 0"),
    ({"request_timeout": float("inf")}, "setting request_timeout=inf must be a number of seconds > 0"),
    ({"abstain_coverage_weight": -0.1}, "setting abstain_coverage_weight=-0.1 must be >= 0"),
    ({"shots": -1}, "setting shots=-1 must be >= 0"),
    ({"chunk_overlap": -1}, "setting chunk_overlap=-1 must be >= 0"),
])
def test_the_old_validation_messages_stay(fields, message):
    with pytest.raises(ConfigError) as exc:
        Settings(**fields)
    assert _one_line(exc) == message


def test_assignment_is_validated():
    s = Settings()
    s.model = "fake"
    assert s.model == "fake"
    with pytest.raises(ConfigError, match=r"^setting top_k=0 must be >= 1$"):
        s.top_k = 0


def test_every_setting_has_a_description():
    assert len(Settings.model_fields) >= 38
    for name, info in Settings.model_fields.items():
        assert info.description and len(info.description) > 10, name
