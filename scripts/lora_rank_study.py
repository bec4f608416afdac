"""The LoRA rank study (issue 21, point 4): one model, the same data, steps and seed, ranks
1, 2, 4, 8, 16, 64; quality on unseen questions against adapter size and step time.

    python scripts/lora_rank_study.py [--ranks 1,2,4,8,16,64] [--steps 16] [--out reports/lora-rank-study]

Needs `make tune`'s data (build/tune/squad-data from SQuAD articles 0-15, build/tune/squad-report.json
from articles 16-31, and build/tune/squad-all-index). Each rank trains with `ragqa train` into
build/rank-study/rank-R (alpha = 2 x rank, so the update's scale alpha / r stays 2 as in the shipped
r=8 / alpha=16 variants); a rank whose variant exists is not trained again, and an interrupted
training continues (`--resume`). Then one `ragqa eval qa` scores base and every rank on the same
unseen questions and passages, and this script writes results.json, table.md and rank.png in --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAGQA = [sys.executable, "-m", "ragqa"]


def run(args: list[str]) -> None:
    print("$", " ".join(args[2:] if args[:2] == RAGQA[:2] else args), flush=True)
    subprocess.run(args, check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="1,2,4,8,16,64")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", default="build/tune/squad-data")
    p.add_argument("--eval-data", default="build/tune/squad-report.json")
    p.add_argument("--index", default="build/tune/squad-all-index")
    p.add_argument("--questions", type=int, default=60)
    p.add_argument("--max-seq-len", type=int, default=768)
    p.add_argument("--work", default="build/rank-study")
    p.add_argument("--out", default="reports/lora-rank-study")
    p.add_argument("--reuse-eval", action="store_true", help="Use the evaluation already in --out/eval.")
    p.add_argument("--methods", default="", help="Also train these methods (e.g. ia3,ln-tuning) with the "
                   "same data, steps and seed and score them in the same evaluation (the PEFT classes).")
    a = p.parse_args(argv)
    ranks = [int(r) for r in a.ranks.split(",")]
    work, out = ROOT / a.work, ROOT / a.out
    work.mkdir(parents=True, exist_ok=True)
    for r in ranks:
        target = work / f"rank-{r}"
        if (target / "ragqa_variant.json").is_file():
            print(f"rank {r}: {target} exists, not trained again", flush=True)
            continue
        resume = ["--resume"] if (work / f".rank-{r}.partial").is_dir() else []
        run(RAGQA + ["train", "--data", a.data, "--out", str(target.relative_to(ROOT)), "--model", a.model,
                     "--method", "lora", "--lora-r", str(r), "--lora-alpha", str(2 * r), "--lr", "3e-4",
                     "--max-steps", str(a.steps), "--eval-steps", str(a.steps // 2), "--eval-examples", "16",
                     "--patience", "2", "--max-seq-len", str(a.max_seq_len), "--seed", "0", *resume])
    methods = [m for m in a.methods.split(",") if m]
    for method in methods:
        target = work / method
        if (target / "ragqa_variant.json").is_file():
            print(f"{method}: {target} exists, not trained again", flush=True)
            continue
        resume = ["--resume"] if (work / f".{method}.partial").is_dir() else []
        run(RAGQA + ["train", "--data", a.data, "--out", str(target.relative_to(ROOT)), "--model", a.model,
                     "--method", method, "--max-steps", str(a.steps), "--eval-steps", str(a.steps // 2),
                     "--eval-examples", "16", "--patience", "2", "--max-seq-len", str(a.max_seq_len),
                     "--seed", "0", *resume])
    # a full fine-tune is a model of its own: it enters as MODEL_DIR:base
    variants = ",".join(["base"] + [str((work / f"rank-{r}").relative_to(ROOT)) for r in ranks]
                        + [str((work / m).relative_to(ROOT)) + (":base" if m == "full" else "") for m in methods])
    if not (a.reuse_eval and (out / "eval" / "results.json").is_file()):
        run(RAGQA + ["eval", "qa", "--index", a.index, "--data", a.eval_data, "--model", a.model,
                     "--variants", variants, "--limit", str(a.questions), "--seed", "4",
                     "--report", str(out.relative_to(ROOT) / "eval")])
    evaluated = json.loads((out / "eval" / "results.json").read_text())["variants"]

    def result_of(directory: Path) -> dict:
        """The evaluation's row of a variant directory (labelled by the path given) or a model."""
        for key, value in evaluated.items():
            if key.rstrip("/").endswith("/" + directory.name) or key == directory.name or \
                    str(value.get("model", "")).rstrip("/").endswith("/" + directory.name):
                return value
        raise KeyError(directory.name)
    rows = []
    for r in ranks:
        target = work / f"rank-{r}"
        card = json.loads((target / "ragqa_variant.json").read_text())
        m = card["metrics"]
        result = result_of(target)
        rows.append({
            "rank": r, "alpha": 2 * r,
            "adapter_bytes": (target / "adapter_model.safetensors").stat().st_size,
            "seconds_per_step": m["train_seconds"] / max(1, m["steps"]), "steps": m["steps"],
            "best_step": m.get("best_step"), "validation_f1": m["validation"].get("f1"),
            "f1": result["f1"]["mean"] * 100, "f1_ci95": [x * 100 for x in result["f1"]["ci95"]],
            "em": result["em"]["mean"] * 100, "n": result["n"]})
    others = []
    for method in methods:
        card = json.loads((work / method / "ragqa_variant.json").read_text())
        m, result = card["metrics"], result_of(work / method)
        weights = "adapter_model.safetensors" if method != "full" else "model.safetensors"
        others.append({"method": method, "parameters": card["hyperparameters"].get("trainable_parameters"),
                       "adapter_bytes": (work / method / weights).stat().st_size,
                       "seconds_per_step": m["train_seconds"] / max(1, m["steps"]), "steps": m["steps"],
                       "best_step": m.get("best_step"), "validation_f1": m["validation"].get("f1"),
                       "lr": card["hyperparameters"].get("learning_rate"),
                       "f1": result["f1"]["mean"] * 100, "f1_ci95": [x * 100 for x in result["f1"]["ci95"]],
                       "em": result["em"]["mean"] * 100, "n": result["n"]})
    base = evaluated.get("base") or evaluated[a.model]  # labelled by the model when models differ
    summary = {"model": a.model, "steps": a.steps, "questions": a.questions, "data": a.data,
               "eval_data": a.eval_data, "base_f1": base["f1"]["mean"] * 100,
               "base_f1_ci95": [x * 100 for x in base["f1"]["ci95"]], "ranks": rows, "methods": others,
               "meta": json.loads((out / "eval" / "results.json").read_text())["meta"]}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"LoRA rank study: {a.model}, {a.steps} steps (batch 4, lr 3e-4, alpha = 2r, q/v projections, "
             f"seed 0) on {a.data}; F1 end to end on {a.questions} unseen questions ({a.eval_data}), "
             f"base F1 {summary['base_f1']:.1f} [{summary['base_f1_ci95'][0]:.1f}, {summary['base_f1_ci95'][1]:.1f}]",
             "", "| rank | adapter | s per step | validation F1 (best step) | F1 unseen [95% CI] | EM unseen |",
             "|---|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| {x['rank']} | {x['adapter_bytes'] / 1024:,.0f} KB | {x['seconds_per_step']:.1f} | "
                     f"{x['validation_f1']:.1f} ({x['best_step']}) | {x['f1']:.1f} [{x['f1_ci95'][0]:.1f}, "
                     f"{x['f1_ci95'][1]:.1f}] | {x['em']:.1f} |")
    if others:
        lines += ["", "| method | trainable parameters | adapter | lr | s per step | validation F1 (best step) | "
                  "F1 unseen [95% CI] | EM unseen |", "|---|---|---|---|---|---|---|---|"]
        for x in others:
            lines.append(f"| {x['method']} | {x['parameters']:,} | {x['adapter_bytes'] / 1024:,.0f} KB | {x['lr']:g} | "
                         f"{x['seconds_per_step']:.1f} | {x['validation_f1']:.1f} ({x['best_step']}) | {x['f1']:.1f} "
                         f"[{x['f1_ci95'][0]:.1f}, {x['f1_ci95'][1]:.1f}] | {x['em']:.1f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    xs = [x["rank"] for x in rows]
    ax.errorbar(xs, [x["f1"] for x in rows], yerr=[[x["f1"] - x["f1_ci95"][0] for x in rows],
                                                  [x["f1_ci95"][1] - x["f1"] for x in rows]],
                marker="o", capsize=3, label="F1 on unseen questions (95% CI)")
    ax.axhline(summary["base_f1"], color="grey", linestyle="--", label="base")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("LoRA rank r (adapter size grows with r)")
    ax.set_ylabel("F1")
    for x in rows:
        ax.annotate(f"{x['adapter_bytes'] / 1024:,.0f} KB", (x["rank"], x["f1"]), textcoords="offset points",
                    xytext=(0, 8), ha="center", fontsize=7)
    ax.set_title(f"LoRA rank on {a.model}, {a.steps} steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rank.png", dpi=120)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'rank.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
