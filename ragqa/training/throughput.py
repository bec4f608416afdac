"""``ragqa bench train``: training steps/s of ragqa's Trainer path against a bare PEFT loop on the
same batch (goal: >= 0.95x).

Both train the same LoRA (r=8, the architecture's default targets) on the same base in fp32 with
the same optimizer (the one Trainer picks: torch's fused AdamW on current transformers) at the same
learning rate, on one fixed batch of ``batch_size`` x ``seq_len`` tokens (the
answer-only label mask of real training: the first half of each row is prompt, -100). The bare
loop is ``loss = model(**batch).loss; loss.backward(); opt.step(); opt.zero_grad()``; the ragqa
path is ``RagqaTrainer`` (transformers Trainer) as ``ragqa train`` builds it, with evaluation and
saving off. The bare loop's timed steps come before and after the Trainer's (a sandwich), so a
change in machine load during the run affects both alike; the first step of each path is
warm-up and not timed. Steps/s is the median over the timed steps.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from ragqa.training.trainer import Collator, Rows, TrainConfig, peft_config, trainer_class


def _batch_rows(vocab: int, batch_size: int, seq_len: int, seed: int = 0) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch_size):
        ids = torch.randint(10, vocab - 1, (seq_len,), generator=g).tolist()
        half = seq_len // 2
        rows.append({"input_ids": ids, "labels": [-100] * half + ids[half:]})
    return rows


def bench_train(*, model: str, cache_dir: Path, threads: int = 1, steps: int = 4, batch_size: int = 4,
                seq_len: int = 256, rounds: int = 2, log=print) -> dict:
    import torch
    from peft import get_peft_model
    from transformers import TrainerCallback, TrainingArguments

    from ragqa.generators.models import load_tokenizer, resolve_model
    from ragqa.training.trainer import load_training_model

    torch.set_num_threads(threads)
    path = resolve_model(model, cache_dir)
    cfg = TrainConfig(data=Path("."), out=Path("."), model=model, batch_size=batch_size, threads=threads)
    tokenizer = load_tokenizer(path)
    rows = None
    collate = Collator(tokenizer.pad_token_id or 0)

    def fresh():
        torch.manual_seed(0)
        base, _ = load_training_model(cfg, path)
        return get_peft_model(base, peft_config(cfg, base, path))

    # --- bare PEFT loop
    bare_model = fresh()
    rows = _batch_rows(bare_model.config.vocab_size, batch_size, seq_len)
    batch = collate(rows)
    bare_model.train()
    opt = None  # the same optimizer class and settings the Trainer uses (set below)

    def bare_steps(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            loss = bare_model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t)
        return times

    # --- ragqa's Trainer path, stepping on demand from a callback-controlled run
    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

    timer = StepTimer()
    trainer_model = fresh()
    total = rounds * steps + 1
    with tempfile.TemporaryDirectory(prefix="ragqa-bench-train-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch_size, learning_rate=cfg.lr,
            max_steps=total, lr_scheduler_type="constant", logging_steps=10 ** 6, eval_strategy="no",
            save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True, seed=0)
        from transformers import Trainer

        opt_cls, opt_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, bare_model)
        opt = opt_cls([p for p in bare_model.parameters() if p.requires_grad], **opt_kwargs)
        trainer = trainer_class()(model=trainer_model, args=args, train_dataset=Rows(rows * total),
                                  data_collator=collate, callbacks=[timer])
        bare_times = bare_steps(1)[1:]  # warm-up
        started = time.perf_counter()
        bare_times += bare_steps(steps)
        trainer.train()
        ragqa_times = timer.times[1:]
        bare_times += bare_steps(steps * (rounds - 1))
        wall = time.perf_counter() - started
    bare = 1 / statistics.median(bare_times)
    ours = 1 / statistics.median(ragqa_times)
    result = {"model": model, "threads": threads, "batch_size": batch_size, "seq_len": seq_len,
              "bare_steps": len(bare_times), "ragqa_steps": len(ragqa_times),
              "bare_steps_per_s": round(bare, 5), "ragqa_steps_per_s": round(ours, 5),
              "bare_step_s_median": round(1 / bare, 3), "ragqa_step_s_median": round(1 / ours, 3),
              "ratio": round(ours / bare, 3), "wall_s": round(wall, 1)}
    log(f"training throughput ({model}, {batch_size}x{seq_len} tokens, {threads} thread(s)): "
        f"bare PEFT loop {1 / bare:.2f} s/step, ragqa Trainer {1 / ours:.2f} s/step -> {ours / bare:.3f}x")
    return result
