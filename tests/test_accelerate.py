"""`ragqa train` under `accelerate launch`: the config files in configs/accelerate/ are valid
accelerate configs, and the launch code path runs on CPU in accelerate's single-process mode.
The multi-GPU (DDP) and DeepSpeed ZeRO-2 configs are only parsed here: they need GPUs."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("accelerate")

CONFIGS = ROOT / "configs" / "accelerate"


def _launch(config, *args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", RAGQA_THREADS="1",
               ACCELERATE_DISABLE_RICH="1")
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(CONFIGS / config), *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name,kind,processes", [("cpu-single.yaml", "NO", 1),
                                                 ("ddp-multi-gpu.yaml", "MULTI_GPU", 4),
                                                 ("deepspeed-zero2.yaml", "DEEPSPEED", 4)])
def test_configs_are_valid(name, kind, processes):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / name))
    assert str(cfg.distributed_type).endswith(kind) and cfg.num_processes == processes
    if kind == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == 2
    assert cfg.use_cpu == (kind == "NO")


@pytest.mark.slow  # starts a subprocess
def test_single_process_launch_runs_on_cpu(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from accelerate import PartialState\nimport ragqa\n"
                     "s = PartialState()\nprint('state', s.distributed_type, s.num_processes, s.device, ragqa.__file__)\n")
    out = _launch("cpu-single.yaml", probe)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("state")][0]
    assert "DistributedType.NO 1 cpu" in line and str(ROOT / "ragqa") in line


@pytest.mark.slow  # starts a subprocess
def test_ragqa_train_launches_under_accelerate():
    out = _launch("cpu-single.yaml", "-m", "ragqa.apps.cli", "train", "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--data" in out.stdout and "--out" in out.stdout


@pytest.mark.slow  # starts a subprocess
def test_ragqa_train_runs_unchanged_under_accelerate(tmp_path):
    """A real (tiny) training run through `accelerate launch`: the variant is written once."""
    import json

    from ragqa.training.data import ExampleSettings, build_dataset, import_squad
    from tiny import make_tiny_lm, squad_json, texts_of

    squad = squad_json(n_articles=4)
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    base = make_tiny_lm(tmp_path / "base", texts_of(squad) + ["I don't know."])
    build_dataset(import_squad(tmp_path / "squad.json"), tmp_path / "data", fractions=(0.5, 0.25, 0.25),
                  settings=ExampleSettings(k=2))
    out = tmp_path / "adapters" / "acc-lora"
    run = _launch("cpu-single.yaml", "-m", "ragqa.apps.cli", "train", "--data", tmp_path / "data", "--out", out,
                  "--model", base, "--max-steps", "2", "--batch-size", "2", "--eval-steps", "2",
                  "--eval-examples", "2", "--max-seq-len", "200")
    assert run.returncode == 0, run.stderr[-2000:]
    card = json.loads((out / "ragqa_variant.json").read_text())
    assert card["kind"] == "lora" and card["metrics"]["steps"] == 2
