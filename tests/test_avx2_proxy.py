"""scripts/avx2_proxy.py: a command run with every library held to AVX2, and benchmark results
that say so."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("avx2_proxy", ROOT / "scripts" / "avx2_proxy.py")
proxy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(proxy)


def test_the_environment_holds_every_library_to_avx2(tmp_path):
    env = proxy.environment({"PATH": "/bin", "PYTHONPATH": "/x"}, tmp_path)
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert env["FBGEMM_ENABLE_INSTRUCTIONS"] == "AVX2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert env["RAGQA_KERNEL_MARCH"] == "x86-64-v3" and env["RAGQA_GEN_DTYPE"] == "float32"
    assert env["PYTHONPATH"].split(":") == [str(tmp_path), "/x"] and env["PATH"] == "/bin"
    assert "PYTHONPATH" not in proxy.environment({})


def test_the_limits_reach_the_command_and_the_results_record_them():
    if " avx2" not in Path("/proc/cpuinfo").read_text(errors="replace"):
        pytest.skip("needs an AVX2 CPU")
    code = ("import json, torch; from ragqa.benchmarks.bench import machine_info, flags_words, cpu_flags; "
            "m = machine_info(1); print(json.dumps([torch.backends.cpu.get_cpu_capability(), m['isa_limits'], "
            "flags_words({'machine': m, 'cpu_flags': cpu_flags()})]))")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "avx2_proxy.py"), "--", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    import json

    capability, limits, words = json.loads(done.stdout.strip().splitlines()[-1])
    assert capability == "AVX2"
    assert limits["FBGEMM_ENABLE_INSTRUCTIONS"] == "AVX2" and limits["RAGQA_KERNEL_MARCH"] == "x86-64-v3"
    # every limit the script sets is recorded (the dtype is a setting, recorded with the settings)
    assert limits == {k: v for k, v in proxy.LIMITS.items() if k != "RAGQA_GEN_DTYPE"}
    assert "code limited by ATEN_CPU_CAPABILITY=avx2" in words


def test_a_result_without_limits_shows_the_flags_alone():
    from ragqa.benchmarks.bench import flags_words

    assert flags_words({"machine": {"isa_limits": {}}, "cpu_flags": ["avx2", "avx512f"]}) == "[avx2 avx512f]"
    assert flags_words({"machine": {}, "cpu_flags": ["avx2"]}) == "[avx2]"  # results from before


def test_the_command_is_required_and_the_llama_folder_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        proxy.main([])
    with pytest.raises(SystemExit):
        proxy.main(["--llama", str(tmp_path), "--", "true"])
    assert "no llama_cpp package there" in capsys.readouterr().err
