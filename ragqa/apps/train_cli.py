"""``ragqa data ...`` and ``ragqa train``: thin Typer commands over ragqa.training (registered on
the main app in ragqa/apps/cli.py)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ragqa.errors import ConfigError
from ragqa.apps.common import command_settings

data_app = typer.Typer(no_args_is_help=True, help="Training data: import QA / summarisation data, "
                       "synthesize QA pairs from an index, split by document.")

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (train/validation/test "
                                      "jsonl + manifest.json).")]
SplitOpt = Annotated[str, typer.Option("--split", help="train,validation,test fractions (by document).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the split and the example sampling.")]
KOpt = Annotated[int, typer.Option("--k", help="Passages per QA example: the gold passage plus "
                                   "retrieved distractors.")]
IdkOpt = Annotated[float, typer.Option("--idk-share", help="Share of QA examples whose gold passage "
                                       "is left out, with the target \"I don't know.\".")]
IndexOpt = Annotated[Optional[Path], typer.Option("--index", "-i", help="Index whose retriever picks "
                                                  "the distractor passages (RAFT-style); without "
                                                  "it distractors are random passages of the split.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads (env RAGQA_THREADS).")]


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise ConfigError(f"--split {text!r}: give three fractions like 0.8,0.1,0.1")
    return parts  # type: ignore[return-value]


def _summary(manifest: dict, out: Path) -> None:
    counts = manifest["counts"]
    parts = [f"{s} {c['examples']} examples / {c['documents']} documents"
             + (f" ({c['abstain_examples']} abstain)" if c.get("abstain_examples") else "")
             for s, c in counts.items()]
    typer.echo(f"wrote {out}: " + "; ".join(parts))


def _open_index(index: Path | None, threads: int | None):
    if index is None:
        return None
    from ragqa.indexing.index import Index

    return Index.open(index, command_settings(threads=threads))


@data_app.command("import")
def data_import(
    kind: Annotated[str, typer.Argument(help="squad | dialogsum | jsonl")],
    files: Annotated[list[Path], typer.Argument(help="Data files (several are merged).")],
    out: OutOpt,
    index: IndexOpt = None,
    split: SplitOpt = "0.8,0.1,0.1",
    k: KOpt = 3,
    idk_share: IdkOpt = 0.15,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Import SQuAD json, DialogSum jsonl or generic jsonl into training examples, split by document."""
    from ragqa.training.data import IMPORTERS, ExampleSettings, build_dataset

    if kind not in IMPORTERS:
        raise ConfigError(f"unknown data kind {kind!r}; use one of {', '.join(IMPORTERS)}")
    records = [r for f in files for r in IMPORTERS[kind](f)]
    manifest = build_dataset(records, out, sources=files, fractions=_fractions(split),
                             settings=ExampleSettings(k=k, idk_share=idk_share, seed=seed),
                             index=_open_index(index, threads), index_dir=str(index) if index else None,
                             extra={"imported": {"kind": kind, "files": [str(f) for f in files]}})
    if json_out:
        typer.echo(json.dumps(manifest))
    else:
        _summary(manifest, out)


@data_app.command("synthesize")
def data_synthesize(
    index: Annotated[Path, typer.Option("--index", "-i", help="Index to take passages from.")],
    out: OutOpt,
    model: Annotated[Optional[str], typer.Option("--model", help="Generator that proposes "
                                                 "answers and questions (default: the teacher when "
                                                 "one is given, else the default model).")] = None,
    variant: Annotated[str, typer.Option("--variant", help="Its variant.")] = "base",
    teacher: Annotated[Optional[str], typer.Option("--teacher", help="Distillation: this model "
                                                   "(name or directory) answers every question, and "
                                                   "its answers are the targets a student is trained on.")] = None,
    teacher_variant: Annotated[str, typer.Option("--teacher-variant", help="The teacher's variant.")] = "base",
    passages: Annotated[int, typer.Option("--passages", help="How many passages to sample.")] = 50,
    summarize_over: Annotated[int, typer.Option("--summarize-over", help="Summarise passages longer "
                                                "than this many words first (0: never).")] = 0,
    split: SplitOpt = "0.8,0.1,0.1",
    k: KOpt = 3,
    idk_share: IdkOpt = 0.15,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
) -> None:
    """Make question/answer pairs from an index's passages with the generator, filter them, and
    write training data like `data import`. With --teacher the teacher's answers are the targets
    (distillation: train the fast model on them with `ragqa train --model FAST`)."""
    from ragqa.answering.pipeline import make_generator
    from ragqa.training.data import ExampleSettings, build_dataset
    from ragqa.training.synthesize import synthesize

    settings = command_settings(threads=threads, model=model or teacher)
    idx = _open_index(index, threads)
    generator = make_generator(settings)
    teacher_settings = teacher_gen = None
    if teacher is not None:
        teacher_settings = command_settings(threads=threads, model=teacher)
        same = teacher_settings.model == settings.model
        teacher_gen = generator if same else make_generator(teacher_settings)
    # unknown variants are refused before any passage is read
    for gen, name in ((generator, variant), (teacher_gen, teacher_variant)):
        if gen is not None and hasattr(gen, "check_variant"):
            gen.check_variant(name)
    teacher_template = None
    if teacher_gen is not None:  # the teacher answers as it is served: its variant's template, else the setting
        from ragqa.answering.prompting import trained_qa_template

        teacher_template = (trained_qa_template(getattr(teacher_gen, "variant_template",
                                                        lambda _: None)(teacher_variant))
                            or teacher_settings.template)
    records, stats = synthesize(idx, generator, n_passages=passages, variant=variant, seed=seed,
                                summarize_over=summarize_over, teacher=teacher_gen,
                                teacher_variant=teacher_variant,
                                teacher_template=teacher_template,
                                teacher_name=teacher_settings.model if teacher_settings else "",
                                log=lambda m: typer.echo(m, err=True))
    if not records:
        raise ConfigError(f"no question survived the filters ({stats}); try more --passages or a "
                          "stronger --model")
    manifest = build_dataset(records, out, fractions=_fractions(split),
                             settings=ExampleSettings(k=k, idk_share=idk_share, seed=seed), index=idx,
                             index_dir=str(index), extra={"synthesized": {
                                 **stats, "model": settings.model, "variant": variant,
                                 **({"teacher": teacher_settings.model, "teacher_variant": teacher_variant,
                                     "teacher_template": teacher_template} if teacher_settings else {})}})
    _summary(manifest, out)
    typer.echo(f"kept {stats['kept']} of {stats['proposed']} proposed pairs: {stats}")


def _weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        from ragqa.errors import ConfigError

        raise ConfigError(f"--mix {text!r}: give comma-separated numbers, one per --data, e.g. 0.7,0.3") from None


def train_command(
    data: Annotated[list[Path], typer.Option("--data", help="Directory written by `ragqa data import` "
                                             "or `ragqa data synthesize`; several (--data A --data B) "
                                             "train one variant on all of them (multi-task mixing; "
                                             "validation is the first one's task).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Variant directory to write, e.g. "
                                      "adapters/my-lora.")],
    method: Annotated[str, typer.Option("--method", help="lora | prompt-tuning | prefix-tuning | ia3 | ln-tuning | full (every weight; "
                                               "writes a model directory for --model)")] = "lora",
    model: Annotated[Optional[str], typer.Option("--model", help="Base model: packaged name or local "
                                                 "directory (default: smollm2-135m-instruct).")] = None,
    epochs: Annotated[float, typer.Option("--epochs")] = 1.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="> 0 overrides --epochs.")] = -1,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 4,
    grad_accum: Annotated[int, typer.Option("--grad-accum")] = 1,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default by method: "
                                                "lora 2e-4, prompt-tuning 3e-2, prefix-tuning 5e-3, ia3 3e-3, ln-tuning 1e-3, full 2e-5).")] = None,
    max_seq_len: Annotated[int, typer.Option("--max-seq-len", help="Prompt + answer tokens.")] = 768,
    limit_train: Annotated[Optional[int], typer.Option("--limit-train", help="Use N training examples.")] = None,
    eval_steps: Annotated[int, typer.Option("--eval-steps", help="Evaluate every N steps.")] = 25,
    eval_examples: Annotated[int, typer.Option("--eval-examples", help="Validation examples scored "
                                               "by generation at each evaluation.")] = 24,
    patience: Annotated[int, typer.Option("--patience", help="Evaluations without improvement "
                                          "before stopping early.")] = 3,
    lora_r: Annotated[int, typer.Option("--lora-r")] = 8,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha")] = 16,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout")] = 0.05,
    target_modules: Annotated[Optional[str], typer.Option("--target-modules", help="Comma-separated "
                                                          "module names, or all-linear (default: "
                                                          "attention q/v per architecture).")] = None,
    virtual_tokens: Annotated[int, typer.Option("--virtual-tokens", help="Soft prompt / prefix length.")] = 20,
    init_text: Annotated[Optional[str], typer.Option("--init-text", help="Soft prompt init text "
                                                     "('' for random init).")] = None,
    prefix_projection: Annotated[bool, typer.Option("--prefix-projection", help="Prefix tuning: train "
                                                    "the prefix through a two-layer MLP (Li & Liang).")] = False,
    prefix_init_text: Annotated[Optional[str], typer.Option("--prefix-init-text", help="Prefix tuning: "
                                                            "start from the model's keys and values of this "
                                                            "task text (Li & Liang's init).")] = None,
    phrasing_share: Annotated[float, typer.Option("--phrasing-share", help="Share of training "
                                                  "examples rendered with another phrasing.")] = 0.5,
    qlora: Annotated[bool, typer.Option("--qlora", help="4-bit QLoRA (CUDA + bitsandbytes only).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    mix: Annotated[Optional[str], typer.Option("--mix", help="Weights of the --data directories, "
                                               "comma-separated in their order, e.g. 0.7,0.3 (default: "
                                               "as many examples as each holds).")] = None,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
) -> None:
    """Train a variant (LoRA, soft prompt, prefix, IA3 or LayerNorm tuning) on the training data, with validation,
    early stopping and the best checkpoint kept; the result appears in `ragqa variants list`."""
    from ragqa.generators.models import FAST_MODEL
    from ragqa.training.trainer import DEFAULT_INIT_TEXT, TrainConfig, train

    settings = command_settings(threads=threads)
    cfg = TrainConfig(
        data=data[0], mix_data=list(data[1:]), mix=_weights(mix), out=out, method=method, model=model or FAST_MODEL, epochs=epochs, max_steps=max_steps,
        batch_size=batch_size, grad_accum=grad_accum, learning_rate=lr, max_seq_len=max_seq_len,
        limit_train=limit_train, eval_steps=eval_steps, eval_examples=eval_examples, patience=patience,
        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        target_modules=[t.strip() for t in target_modules.split(",")] if target_modules and
        target_modules != "all-linear" else ("all-linear" if target_modules else None),
        num_virtual_tokens=virtual_tokens,
        prompt_init_text=DEFAULT_INIT_TEXT if init_text is None else (init_text or None),
        prefix_projection=prefix_projection, prefix_init_text=prefix_init_text or None,
        phrasing_share=phrasing_share, qlora=qlora, resume=resume, overwrite=overwrite, seed=seed,
        threads=settings.threads, cache_dir=settings.cache_dir,
        command="ragqa " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    train(cfg, log=lambda m: typer.echo(m, err=True))


def bench_train_command(
    model: Annotated[Optional[str], typer.Option("--model", help="Base model (default: smollm2-135m-instruct).")] = None,
    steps: Annotated[int, typer.Option("--steps", help="Timed steps per block.")] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 4,
    seq_len: Annotated[int, typer.Option("--seq-len")] = 256,
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON.")] = Path("bench-results/train.json"),
    threads: ThreadsOpt = None,
) -> None:
    """Training steps/s: ragqa's Trainer path vs a bare PEFT loop on the same batch."""
    from ragqa.benchmarks.bench import machine_info
    from ragqa.generators.models import FAST_MODEL
    from ragqa.training.throughput import bench_train

    settings = command_settings(threads=threads)
    result = bench_train(model=model or FAST_MODEL, cache_dir=settings.cache_dir, threads=settings.threads,
                         steps=steps, batch_size=batch_size, seq_len=seq_len,
                         log=lambda m: typer.echo(m, err=True))
    from rich.console import Console
    from rich.table import Table

    table = Table(title="training throughput (same batch, same LoRA)")
    for col in ("path", "s/step (median)", "steps/s", "timed steps"):
        table.add_column(col)
    table.add_row("bare PEFT loop", f"{result['bare_step_s_median']:.2f}", f"{result['bare_steps_per_s']:.4f}",
                  str(result["bare_steps"]))
    table.add_row("ragqa train (Trainer)", f"{result['ragqa_step_s_median']:.2f}",
                  f"{result['ragqa_steps_per_s']:.4f}", str(result["ragqa_steps"]))
    Console().print(table)
    typer.echo(f"ratio ragqa / bare: {result['ratio']:.3f}x (goal >= 0.95x)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info(settings.threads), "train": result}, indent=1) + "\n")
    typer.echo(f"wrote {out}")
