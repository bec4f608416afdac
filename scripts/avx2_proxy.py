"""Runs a command with every library held to AVX2, to measure on a bigger CPU what an AVX2-only
CPU (such as an AMD EPYC without AVX512) would run.

    python scripts/avx2_proxy.py [--llama DIR] -- ragqa bench peer

It sets, for the command only:
- ``ATEN_CPU_CAPABILITY=avx2`` (PyTorch's own vectorised kernels), ``MKL_ENABLE_INSTRUCTIONS=AVX2``
  (float32 products), ``ONEDNN_MAX_CPU_ISA=AVX2``, ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` (int8
  prompts of float32 models);
- ``RAGQA_KERNEL_MARCH=x86-64-v3`` (the C decoding kernel compiled for AVX2, FMA and F16C);
- ``RAGQA_GEN_DTYPE=float32``, what ``gen_dtype auto`` picks without native bf16;
- with ``--llama DIR``, ``DIR`` first on ``PYTHONPATH``: a llama-cpp-python built for AVX2 alone
  (``pip install --target DIR`` with ``CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON
  -DGGML_F16C=ON -DGGML_AVX512=OFF ..."``, docs/answering.md), so that ``bench peer`` compares
  like with like.

Benchmark results record the limits they ran under (``machine.isa_limits``) and show them next
to the CPU flags. What this cannot imitate is the other CPU's memory and caches: it measures the
code, on this machine's memory.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

LIMITS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
          "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "RAGQA_KERNEL_MARCH": "x86-64-v3",
          "RAGQA_GEN_DTYPE": "float32"}


def environment(base: dict, llama: Path | None = None) -> dict:
    env = {**base, **LIMITS}
    if llama is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(llama), base.get("PYTHONPATH", "")) if p)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama", type=Path, help="a folder holding an AVX2-only llama-cpp-python")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("name the command to run after --")
    if args.llama is not None and not (args.llama / "llama_cpp").is_dir():
        parser.error(f"--llama {args.llama}: no llama_cpp package there; build it with pip install --target")
    if " avx2" not in Path("/proc/cpuinfo").read_text(errors="replace"):
        parser.error("this CPU has no AVX2: there is nothing to hold back to")
    os.execvpe(command[0], command, environment(dict(os.environ), args.llama))


if __name__ == "__main__":
    sys.exit(main())
