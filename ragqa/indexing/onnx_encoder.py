"""Serve a sentence-transformers directory with onnxruntime instead of torch.

Only the common stack ``Transformer -> Pooling(mean) -> optional Normalize`` is supported
(:func:`check_supported`). The transformer is exported once, from the local weights, with torch's
TorchScript exporter into a cache directory owned by this model version:

    cache_dir/model.onnx         fp32 graph: input_ids, attention_mask[, token_type_ids] -> last_hidden_state
    cache_dir/model.int8.onnx    the same graph, weights dynamically quantised to int8 (only when asked)
    cache_dir/tokenizer.json     the directory's fast tokenizer as transformers builds it, truncation
                                 and padding switched off, pad id recorded

Later runs load those files with onnxruntime and ``tokenizers`` alone: neither torch nor
transformers is imported unless something has to be exported. Mean pooling and L2 normalisation
are done in numpy after the session. Every file is written to a temporary name unique to the
process, fsynced, then ``os.replace``-d into place, so processes exporting at the same time never
see or leave a half-written file (the last one to finish wins; both results are equal).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ragqa.errors import ConfigError, ModelError
from ragqa.files import one_line, publish

SUPPORTED = ("onnx", "onnx-int8", "onnx-int8-fast")

FP32_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
INT8_ALL_NAME = "model.int8-all.onnx"  # every constant-weight MatMul in int8 (backend onnx-int8-fast)
_QUANT_FILES = {"int8": INT8_NAME, "int8-all": INT8_ALL_NAME}
TOKENIZER_NAME = "tokenizer.json"
OUTPUT_NAME = "last_hidden_state"
_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
_TMP_MARK = ".tmp-"  # temporary files: .<final name>.tmp-<pid>-<hex>.onnx
_STALE_TMP_S = 3600.0  # temporaries older than this were left by a crashed export
_OPSET = 17

_ST_PREFIX = "sentence_transformers."
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


# --------------------------------------------------------------------------------------------
# the sentence-transformers directory
# --------------------------------------------------------------------------------------------


def _unsupported(model_dir: Path, why: str) -> ModelError:
    return ModelError(f"the ONNX backend cannot serve {model_dir}: {why}; use backend 'torch'")


def _read_json(path: Path, model_dir: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise _unsupported(model_dir, f"{path.name} is missing") from None
    except (OSError, ValueError) as exc:
        raise _unsupported(model_dir, f"cannot read {path} ({type(exc).__name__})") from None


def _read_json_optional(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _module_kind(type_name: Any) -> str | None:
    """'sentence_transformers.models.Pooling' (or the v5+ 'sentence_transformers.base.modules...'
    spelling) -> 'Pooling'; anything not from sentence_transformers -> None."""
    if not isinstance(type_name, str) or not type_name.startswith(_ST_PREFIX):
        return None
    return type_name.rsplit(".", 1)[-1]


def _pooling_modes(cfg: dict) -> set[str]:
    """The active pooling modes of a Pooling config, old (``pooling_mode_*_tokens`` booleans) or
    new (``pooling_mode``: a name or a list) style."""
    if "pooling_mode" in cfg:
        mode = cfg["pooling_mode"]
        return {mode} if isinstance(mode, str) else set(mode or ())
    modes = {name for key, name in _LEGACY_POOLING_KEYS.items() if cfg.get(key)}
    # a key we do not know, switched on, is some mode we cannot reproduce
    modes |= {k for k, v in cfg.items() if k.startswith("pooling_mode") and k not in _LEGACY_POOLING_KEYS and v}
    if not modes and not any(k in cfg for k in _LEGACY_POOLING_KEYS):
        return {"mean"}  # sentence-transformers' default
    return modes or {"none"}


class _StackInfo:
    """What the encoder needs to know about a supported directory."""

    def __init__(self, hf_dir: Path, st_config: dict, pooling_cfg: dict, normalize: bool):
        self.hf_dir = hf_dir
        self.st_config = st_config
        self.pooling_cfg = pooling_cfg
        self.normalize = normalize


def _inspect(model_dir: Path) -> _StackInfo:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise _unsupported(model_dir, "it is not a directory")
    modules = _read_json(model_dir / "modules.json", model_dir)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise _unsupported(model_dir, "modules.json is not a list of modules")
    modules = sorted(modules, key=lambda m: m.get("idx", 0))
    kinds = [_module_kind(m.get("type")) for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        stack = " -> ".join(str(m.get("type", "?")).rsplit(".", 1)[-1] for m in modules) or "nothing"
        raise _unsupported(model_dir, f"its modules are {stack}, only Transformer -> Pooling(mean) "
                                      "-> optional Normalize is supported")
    hf_dir = model_dir / str(modules[0].get("path") or "")
    pooling_cfg = _read_json(model_dir / str(modules[1].get("path") or "") / "config.json", model_dir)
    if not isinstance(pooling_cfg, dict):
        raise _unsupported(model_dir, "its pooling config is not a JSON object")
    modes = _pooling_modes(pooling_cfg)
    if modes != {"mean"}:
        raise _unsupported(model_dir, f"its pooling is {'+'.join(sorted(modes))}, only mean pooling "
                                      "is supported")
    if not (hf_dir / "config.json").is_file():
        raise _unsupported(model_dir, f"the transformer has no config.json in {hf_dir}")
    st_config = _read_json_optional(hf_dir / "sentence_bert_config.json")
    task = st_config.get("transformer_task")
    if task not in (None, "feature-extraction"):
        raise _unsupported(model_dir, f"its transformer task is {task!r}")
    top = _read_json_optional(model_dir / "config_sentence_transformers.json")
    if top.get("default_prompt_name"):
        raise _unsupported(model_dir, f"it prepends the prompt {top['default_prompt_name']!r} to every text")
    return _StackInfo(hf_dir, st_config, pooling_cfg, normalize=len(modules) == 3)


def check_supported(model_dir: Path) -> None:
    """Raise ModelError (one line, naming the directory and saying to use backend 'torch') unless the
    sentence-transformers directory is Transformer -> Pooling(mean tokens only) -> optional Normalize
    (read modules.json and the pooling config). Other module stacks are not supported by this backend."""
    _inspect(Path(model_dir))


# --------------------------------------------------------------------------------------------
# atomic files
# --------------------------------------------------------------------------------------------


def _tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:12]}.onnx")


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _clean_stale_temporaries(cache_dir: Path) -> None:
    now = time.time()
    try:
        entries = list(cache_dir.iterdir())
    except OSError:
        return
    for p in entries:
        if p.name.startswith(".") and _TMP_MARK in p.name:
            try:
                if now - p.stat().st_mtime > _STALE_TMP_S:
                    p.unlink()
            except OSError:
                pass


# --------------------------------------------------------------------------------------------
# the encoder
# --------------------------------------------------------------------------------------------


class OnnxEncoder:
    """Sentence embeddings from an onnxruntime session over a cached export of ``model_dir``.

    ``cache_dir`` belongs to this model version (the caller makes it fingerprint-specific). The
    first :meth:`load` (or :meth:`encode`) exports what is missing there; later ones only read.
    """

    #: how many exports this process has run (fp32 graphs, int8 graphs, tokenizers); tests use it
    exports = 0

    def __init__(self, model_dir: Path, cache_dir: Path, *, quantize: bool | str = False, threads: int = 1,
                 max_seq_length: int | None = None):
        """``quantize``: False (fp32), True or "int8" (the expanding FFN matmuls kept in fp32), or
        "int8-all" (every constant-weight matmul in int8: faster, vectors a little further off)."""
        self.model_dir = Path(model_dir)
        self.cache_dir = Path(cache_dir)
        self.quantize: str | None = ("int8" if quantize is True else quantize) or None
        if self.quantize is not None and self.quantize not in _QUANT_FILES:
            raise ConfigError(f"quantize={quantize!r} must be False, 'int8' or 'int8-all'")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"ONNX encoder threads must be a whole number >= 1, not {threads!r}")
        self.threads = threads
        info = _inspect(self.model_dir)  # cheap: a few small JSON files
        self._hf_dir = info.hf_dir
        self._st_config = info.st_config
        self.normalize = info.normalize
        hf_config = _read_json_optional(self._hf_dir / "config.json")
        positions = hf_config.get("max_position_embeddings")
        positions = positions if isinstance(positions, int) and positions > 0 else None
        if max_seq_length is None:
            max_seq_length = self._default_max_seq_length(positions)
        if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 1:
            raise ConfigError(f"max_seq_length must be a whole number >= 1, not {max_seq_length!r}")
        if positions is not None and max_seq_length > positions:
            raise ConfigError(f"max_seq_length {max_seq_length} exceeds the {positions} positions of "
                              f"the model in {self.model_dir}")
        self.max_seq_length = max_seq_length
        dim = info.pooling_cfg.get("word_embedding_dimension", info.pooling_cfg.get("embedding_dimension"))
        if not isinstance(dim, int):
            dim = hf_config.get("hidden_size") if isinstance(hf_config.get("hidden_size"), int) else None
        self._dim: int | None = dim
        self._lock = threading.Lock()
        self._session = None
        self._tokenizer = None
        self._pad_id = 0
        self._input_names: tuple[str, ...] = ()

    # -- public -------------------------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        """The ONNX file this encoder runs (it may not exist before :meth:`load`)."""
        return self.cache_dir / (_QUANT_FILES[self.quantize] if self.quantize else FP32_NAME)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.load()
        return int(self._dim)

    def load(self) -> None:
        """Export what is missing from the cache directory, then open the session and tokenizer.
        Idempotent and thread-safe."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime  # noqa: F401
                import tokenizers  # noqa: F401
            except ImportError as exc:
                raise ModelError(f"the ONNX backend needs onnxruntime and tokenizers ({one_line(exc)}); "
                                 "install them or use backend 'torch'") from None
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ModelError(f"cannot create the ONNX cache directory {self.cache_dir} "
                                 f"({one_line(exc)})") from None
            _clean_stale_temporaries(self.cache_dir)
            tokenizer, pad_id = self._load_tokenizer()
            session = self._open_session()
            names = tuple(i.name for i in session.get_inputs())
            unknown = [n for n in names if n not in _INPUT_NAMES]
            if unknown or "input_ids" not in names or "attention_mask" not in names:
                raise ModelError(f"the ONNX graph {self.model_path} has inputs {list(names)}; delete "
                                 f"{self.cache_dir} to export it again")
            out_dim = session.get_outputs()[0].shape[-1]
            if isinstance(out_dim, int):
                if self._dim is not None and self._dim != out_dim:
                    raise ModelError(f"the ONNX graph {self.model_path} gives {out_dim}-dim vectors but "
                                     f"{self.model_dir} says {self._dim}; delete {self.cache_dir}")
                self._dim = out_dim
            elif self._dim is None:
                self._dim = int(session.run(None, self._feed(names, [tokenizer.encode("a")], pad_id))[0].shape[-1])
            self._tokenizer, self._pad_id, self._input_names = tokenizer, pad_id, names
            self._session = session

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """float32 array (len(texts), dim), same order as texts. Tokenises with the directory's fast
        tokenizer (truncation to max_seq_length, padding per batch only to that batch's longest);
        batches are formed over texts sorted by token length to waste no padding; outputs are put back
        in the caller's order. Empty list -> (0, dim) array."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not one str")
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"encode() takes texts (str), got {type(t).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.load()
        tok = self._tokenizer
        # tokenizers' batch call fans out over every core: keep to one when asked for one thread
        encodings = tok.encode_batch(texts) if self.threads > 1 else [tok.encode(t) for t in texts]
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")  # longest first: the peak memory shows at once
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = [encodings[i] for i in idx]
            feed = self._feed(self._input_names, batch, self._pad_id)
            hidden = self._session.run([OUTPUT_NAME], feed)[0]
            out[idx] = self._pool(hidden, feed["attention_mask"])
        return out

    # -- helpers ------------------------------------------------------------------------------

    def _default_max_seq_length(self, positions: int | None) -> int:
        value = self._st_config.get("max_seq_length")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        # what sentence-transformers does without one: the tokenizer's limit, capped by the model's
        tok_cfg = _read_json_optional(self._hf_dir / "tokenizer_config.json")
        limits = [v for v in (tok_cfg.get("model_max_length"), positions)
                  if isinstance(v, int) and not isinstance(v, bool) and 0 < v]
        return min(limits) if limits else 512

    @staticmethod
    def _feed(names: Sequence[str], encodings: list, pad_id: int) -> dict[str, np.ndarray]:
        n, width = len(encodings), max(1, max(len(e.ids) for e in encodings))
        ids = np.full((n, width), pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for row, e in enumerate(encodings):
            k = len(e.ids)
            ids[row, :k] = e.ids
            mask[row, :k] = 1
            types[row, :k] = e.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: arrays[name] for name in names}

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        m = mask.astype(np.float32)[:, :, None]
        summed = (hidden.astype(np.float32, copy=False) * m).sum(axis=1)
        vecs = summed / np.maximum(m.sum(axis=1), 1e-9)
        if self.normalize:
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs

    def _session_options(self):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only
        return so

    def _open_session(self):
        """Open the session on the cached graph, exporting it first when missing. A cached file that
        onnxruntime refuses (damaged, written by an incompatible version) is exported once more."""
        import onnxruntime as ort

        path = self.model_path
        for attempt in (1, 2):
            if not path.is_file() or attempt == 2:
                self._export_missing(force=attempt == 2)
            try:
                return ort.InferenceSession(str(path), self._session_options(),
                                            providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
                if attempt == 2:
                    raise ModelError(f"onnxruntime cannot load {path} ({one_line(exc)}); delete "
                                     f"{self.cache_dir} or use backend 'torch'") from None
        raise AssertionError("unreachable")

    def _export_missing(self, force: bool) -> None:
        fp32 = self.cache_dir / FP32_NAME
        if force or not fp32.is_file():
            self._export_fp32(fp32)
        if self.quantize:
            int8 = self.cache_dir / _QUANT_FILES[self.quantize]
            if force or not int8.is_file():
                self._quantize(fp32, int8, every_matmul=self.quantize == "int8-all")

    # -- tokenizer ----------------------------------------------------------------------------

    def _load_tokenizer(self):
        from tokenizers import Tokenizer

        path = self.cache_dir / TOKENIZER_NAME
        tok = None
        if path.is_file():
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception:  # noqa: BLE001 - damaged: build it again below
                tok = None
        if tok is None:
            self._export_tokenizer(path)
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"cannot read the tokenizer {path} ({one_line(exc)}); delete "
                                 f"{self.cache_dir} or use backend 'torch'") from None
        pad_id = int((tok.padding or {}).get("pad_id", 0) or 0)
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_seq_length, strategy="longest_first")
        return tok, pad_id

    def _export_tokenizer(self, path: Path) -> None:
        """Save the directory's fast tokenizer exactly as transformers (hence sentence-transformers)
        builds it, so later loads need only the ``tokenizers`` package."""
        try:
            from transformers import AutoTokenizer

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hf_tok = AutoTokenizer.from_pretrained(str(self._hf_dir), use_fast=True)
            if not getattr(hf_tok, "is_fast", False):
                raise ModelError(f"the ONNX backend needs a fast tokenizer and {self._hf_dir} has none; "
                                 "use backend 'torch'")
            backend = hf_tok.backend_tokenizer
            if self._st_config.get("do_lower_case"):
                self._add_lowercase(backend)
            backend.no_truncation()
            pad_id = hf_tok.pad_token_id
            if pad_id is None:
                backend.no_padding()
            else:
                backend.enable_padding(pad_id=int(pad_id), pad_token=str(hf_tok.pad_token))
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"cannot load the tokenizer of {self._hf_dir} ({one_line(exc)}); "
                             "use backend 'torch'") from None
        tmp = _tmp_path(path)
        try:
            backend.save(str(tmp))
            publish(tmp, path)
        except OSError as exc:
            _remove_quietly(tmp)
            raise ModelError(f"cannot write {path} ({one_line(exc)})") from None
        type(self).exports += 1

    @staticmethod
    def _add_lowercase(backend) -> None:
        """sentence-transformers' ``do_lower_case``: lowercase before the tokenizer's own normaliser."""
        from tokenizers import normalizers

        current = backend.normalizer
        spec = json.dumps(json.loads(backend.to_str()).get("normalizer"))
        if '"lowercase": true' in spec or '"type": "Lowercase"' in spec:
            return
        parts = [normalizers.Lowercase()] + ([current] if current is not None else [])
        backend.normalizer = normalizers.Sequence(parts)

    # -- model export -------------------------------------------------------------------------

    def _export_fp32(self, final: Path) -> None:
        try:
            import torch
            from transformers import AutoModel
        except ImportError as exc:
            raise ModelError(f"exporting {self.model_dir} to ONNX needs torch and transformers "
                             f"({one_line(exc)}); use backend 'torch'") from None
        tmp = _tmp_path(final)
        old_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings, legacy-exporter notices
                model = self._load_torch_model(AutoModel)
                wrapper, names, example, check = self._traceable(torch, model)
                with torch.no_grad():
                    torch.onnx.export(
                        wrapper, example, str(tmp), dynamo=False, opset_version=_OPSET,
                        input_names=list(names), output_names=[OUTPUT_NAME],
                        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in (*names, OUTPUT_NAME)},
                        do_constant_folding=True,
                    )
                self._verify_export(torch, wrapper, tmp, names, check)
            publish(tmp, final)
        except ModelError:
            _remove_quietly(tmp)
            raise
        except Exception as exc:  # noqa: BLE001 - anything the exporter throws
            _remove_quietly(tmp)
            raise ModelError(f"cannot export {self.model_dir} to ONNX ({one_line(exc)}); use backend "
                             "'torch'") from None
        finally:
            torch.set_num_threads(old_threads)
        type(self).exports += 1

    def _load_torch_model(self, auto_model):
        try:
            from transformers.utils import logging as hf_logging

            bar_was_on = hf_logging.is_progress_bar_enabled()
        except (ImportError, AttributeError):
            hf_logging, bar_was_on = None, False
        if bar_was_on:
            hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of a CLI run
        try:
            try:  # eager attention: the padding mask is always an explicit input of the traced graph
                model = auto_model.from_pretrained(str(self._hf_dir), attn_implementation="eager")
            except (TypeError, ValueError):
                model = auto_model.from_pretrained(str(self._hf_dir))
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        return model.float().eval()

    @staticmethod
    def _traceable(torch, model):
        import inspect

        params = inspect.signature(model.forward).parameters
        names = ("input_ids", "attention_mask") + (("token_type_ids",) if "token_type_ids" in params else ())

        class _LastHiddenState(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, *args):
                out = self.inner(**dict(zip(names, args)), return_dict=True)
                return out.last_hidden_state

        wrapper = _LastHiddenState(model).eval()
        vocab = int(getattr(model.config, "vocab_size", 1000) or 1000)

        def inputs(lengths: list[int]) -> tuple:
            g = torch.Generator().manual_seed(len(lengths) * 1000 + max(lengths))
            width = max(lengths)
            ids = torch.randint(min(1000, vocab - 1), vocab, (len(lengths), width), generator=g)
            mask = torch.zeros((len(lengths), width), dtype=torch.long)
            for row, k in enumerate(lengths):
                mask[row, :k] = 1
            ids = ids * mask
            return (ids, mask, torch.zeros_like(ids))[: len(names)]

        # trace with padding present so the mask path is the one recorded; check another shape
        return wrapper, names, inputs([9, 5]), inputs([3, 17, 11])

    def _verify_export(self, torch, wrapper, path: Path, names, example) -> None:
        """Refuse a graph that disagrees with torch on inputs of another shape than the traced one."""
        import onnxruntime as ort

        so = self._session_options()
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT_NAME], {n: t.numpy() for n, t in zip(names, example)})[0]
        with torch.no_grad():
            want = wrapper(*example).numpy()
        mask = example[1].numpy().astype(bool)
        diff = float(np.abs(got - want)[mask].max())
        if not diff < 1e-3:
            raise ModelError(f"the ONNX export of {self.model_dir} disagrees with torch (max diff "
                             f"{diff:.2g}); use backend 'torch'")

    def _quantize(self, fp32: Path, final: Path, every_matmul: bool = False) -> None:
        """Dynamic int8 quantisation of the MatMuls with constant weights, per output channel.

        Measured on all-MiniLM-L6-v2 (cosine to the fp32 vectors, worst text of a mixed set; the
        worst are always the shortest texts): onnxruntime's default recipe (per-tensor, Gather
        too) 0.90; MatMul only, per channel 0.980 at 1.7x fp32's speed; that with the expanding
        projections (the FFN's first matmul, hidden -> 4 x hidden) left in fp32 0.989 at 1.4x. The
        last is the ``int8`` recipe; ``every_matmul`` is the second (backend onnx-int8-fast), whose
        SciFact retrieval equals fp32's (docs/indexing.md "Encoder backends"). The activations are
        quantised per tensor and per batch, so an int8 vector also depends slightly on its batch.
        """
        try:
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic
        except ImportError as exc:
            raise ModelError(f"int8 quantisation needs onnxruntime's quantization tools and onnx "
                             f"({one_line(exc)}); use backend 'onnx' or 'torch'") from None
        tmp = _tmp_path(final)
        try:
            graph = onnx.load(str(fp32), load_external_data=False).graph
            weights = {i.name: tuple(i.dims) for i in graph.initializer}
            expanding = [n.name for n in graph.node
                         if n.op_type == "MatMul" and len(weights.get(n.input[1], ())) == 2
                         and weights[n.input[1]][1] > weights[n.input[1]][0]]
            del graph
            with warnings.catch_warnings(), _quiet_quantizer_notices():
                warnings.simplefilter("ignore")
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                                 op_types_to_quantize=["MatMul"],
                                 nodes_to_exclude=[] if every_matmul else expanding,
                                 extra_options={"MatMulConstBOnly": True})
            publish(tmp, final)
        except Exception as exc:  # noqa: BLE001
            _remove_quietly(tmp)
            raise ModelError(f"cannot quantise {fp32} to int8 ({one_line(exc)}); use backend 'onnx'") from None
        type(self).exports += 1


class _DropQuantizerNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider")


@contextlib.contextmanager
def _quiet_quantizer_notices():
    """onnxruntime's quantiser logs 'Please consider to run pre-processing' on the root logger (its
    pre-processing fails on these graphs anyway). Drop that, and keep ``logging.warning`` from
    installing a root handler (``basicConfig``) behind the application's back."""
    root = logging.getLogger()
    guard = None
    if not root.handlers:
        guard = logging.NullHandler()
        root.addHandler(guard)
    notice_filter = _DropQuantizerNotices()
    root.addFilter(notice_filter)
    try:
        yield
    finally:
        root.removeFilter(notice_filter)
        if guard is not None:
            root.removeHandler(guard)
