"""``ragqa train``: a PEFT variant (LoRA, soft prompt, prefix) trained with transformers' Trainer.

    from ragqa.training.trainer import TrainConfig, train
    card = train(TrainConfig(data=Path("data/tune/squad"), out=Path("adapters/squad-lora"),
                             method="lora", model="smollm2-135m-instruct"))

What it does, in order:
  1. reads the examples ``ragqa data import`` wrote (train / validation), renders each one with
     the SAME prompt code and template answering uses (``prompting.build_prompt`` under the
     same token budget; the template's other phrasings are sampled for a share of the training
     examples, as FLAN does), and appends the target as the model's chat turn;
  2. masks the prompt in the labels: the loss is on the answer tokens only;
  3. trains with ``Trainer`` + PEFT on the base model in fp32 (QLoRA 4-bit with ``--qlora`` on a
     CUDA GPU with bitsandbytes), evaluating every ``eval_steps`` on the validation examples with
     the task metric (token F1 for qa, ROUGE-1 for summarize) by greedy generation, keeping the
     best checkpoint and stopping early when it stops improving;
  4. writes the variant directory atomically: the adapter, ``ragqa_variant.json`` (base model
     fingerprint, template, data hash, hyperparameters, validation metrics, the command) and
     ``training_log.json`` (the loss / metric curves).

Checkpoints live in ``<out>.partial/`` next to the output until training finishes, so an
interrupted run continues with ``--resume`` (same settings; checked).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragqa.errors import ConfigError, ModelError
from ragqa.generators.registry import trainable_kinds
from ragqa.training.data import read_examples, read_manifest

# the methods are the kinds that say how they are trained (one file per kind in ragqa/generators/)
# plus "full": every weight trained, written as a model directory of its own (``--model DIR``)
FULL = "full"
FULL_LR = 2e-5  # full fine-tuning's usual 1e-5..5e-5 (every weight moves)
METHODS = (*trainable_kinds(), FULL)
TASK_METRIC = {"qa": "f1", "summarize": "rouge1", "instruct": "rougeL"}
DEFAULT_INIT_TEXT = ("Answer the question briefly from the numbered passages and cite the passage "
                     "number in brackets.")


@dataclass
class TrainConfig:
    data: Path
    out: Path
    method: str = "lora"
    model: str = "smollm2-135m-instruct"
    epochs: float = 1.0
    max_steps: int = -1              # > 0 overrides epochs
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float | None = None  # None: the kind's default_lr
    warmup_steps: int = 5
    weight_decay: float = 0.0
    max_seq_len: int = 768           # prompt + answer tokens; passages beyond the budget drop
    limit_train: int | None = None   # first N training examples (after a seeded shuffle)
    eval_steps: int = 25
    eval_examples: int = 24          # validation examples (a seeded sample) scored at each
    #                                  evaluation: loss and the task metric by greedy generation
    eval_max_new_tokens: int = 48
    patience: int = 3                # evaluations without improvement before stopping
    seed: int = 0
    threads: int = 1
    phrasing_share: float = 0.5      # share of training examples rendered with another phrasing
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None  # None: generators.lora.LORA_TARGETS by architecture
    num_virtual_tokens: int = 20
    prompt_init_text: str | None = DEFAULT_INIT_TEXT  # prompt tuning; None: random init
    prefix_projection: bool = False  # prefix tuning: train the prefix through a two-layer MLP
    prefix_init_text: str | None = None  # prefix tuning: start from the model's keys / values of this text
    qlora: bool = False
    resume: bool = False
    overwrite: bool = False
    # multi-task mixing: more data directories trained on together with ``data``; ``mix`` weighs
    # [data, *mix_data] (each a share of the training examples; None: as many as each has).
    # Validation (and the best checkpoint) is ``data``'s task.
    mix_data: list[Path] = field(default_factory=list)
    mix: list[float] | None = None
    name: str | None = None          # the variant's name (default: the output directory's name)
    cache_dir: Path | None = None
    command: str = ""

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r}: use one of {', '.join(METHODS)}")
        for name in ("batch_size", "grad_accum", "eval_steps", "eval_examples", "max_seq_len",
                     "num_virtual_tokens", "threads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: give 1 or more")
        if not 1 <= self.lora_r <= 256:
            raise ConfigError(f"lora_r={self.lora_r}: give a rank from 1 to 256 (4-32 is usual)")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout={self.lora_dropout}: give a value in [0, 1)")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"learning_rate={self.learning_rate}: give a value > 0")
        if not 0 <= self.phrasing_share <= 1:
            raise ConfigError(f"phrasing_share={self.phrasing_share}: give a value in [0, 1]")
        if self.prefix_projection and self.resume:
            raise ConfigError("--resume does not work with --prefix-projection: its checkpoints hold the "
                              "projected prefix, not the MLP being trained; start the run again")
        if self.prefix_projection and self.prefix_init_text:
            raise ConfigError("prefix_projection and prefix_init_text are two ways to start a prefix; "
                              "give one of them (--prefix-projection or --prefix-init-text)")
        self.mix_data = [Path(d) for d in self.mix_data]
        if self.mix is not None:
            self.mix = [float(w) for w in self.mix]
            if len(self.mix) != 1 + len(self.mix_data):
                raise ConfigError(f"mix has {len(self.mix)} weights for {1 + len(self.mix_data)} data "
                                  "directories; give one weight per --data, in the same order")
            if any(w < 0 for w in self.mix) or not sum(self.mix) > 0:
                raise ConfigError(f"mix={','.join(map(str, self.mix))}: give weights >= 0 with a sum > 0")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("give epochs > 0 or max_steps > 0")

    @property
    def lr(self) -> float:
        if self.method == FULL:
            return self.learning_rate or FULL_LR
        return self.learning_rate or trainable_kinds()[self.method].default_lr

    def hyperparameters(self) -> dict:
        keys = ["method", "epochs", "max_steps", "batch_size", "grad_accum", "warmup_steps",
                "weight_decay", "max_seq_len", "limit_train", "eval_steps", "eval_examples",
                "patience", "seed", "phrasing_share"]
        keys += list(trainable_kinds()[self.method].train_settings) if self.method != FULL else []
        mixing = {"mix_data": [str(d) for d in self.mix_data], "mix": self.mix} if self.mix_data else {}
        return {"learning_rate": self.lr, **{k: getattr(self, k) for k in keys}, **mixing}


def mix_examples(sources: list[list], weights: list[float] | None, seed: int) -> list:
    """One training list from several (each already shuffled): with ``weights``, as many examples
    as all sources hold, each drawn from source i with probability weights[i] / sum (a source
    that runs out starts over: a small task is repeated, not dropped); without, all of them.
    Seeded and shuffled."""
    rng = random.Random(seed)
    if weights is None:
        mixed = [e for source in sources for e in source]
        rng.shuffle(mixed)
        return mixed
    live = [(i, w) for i, w in enumerate(weights) if w > 0 and sources[i]]
    total = sum(len(s) for s in sources)
    positions = [0] * len(sources)
    mixed = []
    for _ in range(total):
        i = rng.choices([i for i, _ in live], weights=[w for _, w in live])[0]
        mixed.append(sources[i][positions[i] % len(sources[i])])
        positions[i] += 1
    return mixed


# ----------------------------------------------------------------------------- features

def _render_target(tokenizer, prompt_messages: list[dict], prompt_text: str, target: str) -> str:
    """The text after the prompt when the chat template writes ``target`` as the assistant's
    turn, its end-of-turn marker included (what the model must learn to write, and to stop);
    ``target + eos`` for models without a chat template."""
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(
            prompt_messages + [{"role": "assistant", "content": target}], tokenize=False,
            add_generation_prompt=False)
        if full.startswith(prompt_text):
            return full[len(prompt_text):]
        marker = full.rfind(target)  # templates that render earlier turns differently
        if marker >= 0:
            return full[marker:]
    return target + (tokenizer.eos_token or "")


def _encode(tokenizer, text: str) -> list[int]:
    bos = tokenizer.bos_token
    return tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]


def _phrased(template, example_id: str, seed: int, share: float):
    """The template, or (for ``share`` of the examples, chosen by a hash of the id) the same
    template with one of its other phrasings as the system instruction."""
    if not template.alternates or share <= 0:
        return template
    rng = random.Random(f"{seed}\0{example_id}")
    if rng.random() >= share:
        return template
    return dataclasses.replace(template, system=rng.choice(template.alternates))


def build_prompt_for(example, template, tokenizer, max_prompt_tokens: int):
    """The inference prompt of a training example (the very code answering uses)."""
    from ragqa.answering.prompting import Passage, build_plain_prompt, build_prompt

    if template.kind == "qa":
        passages = [Passage(text=p["text"], title=p.get("title", ""), doc_id=p.get("doc_id", ""))
                    for p in example.passages]
        return build_prompt(example.input, passages, template, tokenizer,
                            max_prompt_tokens=max_prompt_tokens)
    return build_plain_prompt(example.input, template, tokenizer, max_prompt_tokens=max_prompt_tokens)


def featurize(examples, tokenizer, *, max_seq_len: int, virtual_tokens: int = 0,
              phrasing_share: float = 0.0, seed: int = 0) -> tuple[list[dict], dict]:
    """Examples -> [{"input_ids", "labels", "prompt_len", "example"}], with counts of what was
    dropped. Labels are -100 over the prompt: the loss is on the answer only. A qa example whose
    gold passage does not fit the budget (or loses its answer when cut) is dropped."""
    from ragqa.answering.prompting import load_template

    templates: dict[str, Any] = {}
    rows, stats = [], {"kept": 0, "gold_dropped": 0, "too_long": 0}
    for ex in examples:
        if ex.template not in templates:
            templates[ex.template] = load_template(ex.template)
        template = _phrased(templates[ex.template], ex.id, seed, phrasing_share)
        target_probe = _encode(tokenizer, ex.target)
        budget = max_seq_len - virtual_tokens - len(target_probe) - 8
        if budget < 32:
            stats["too_long"] += 1
            continue
        try:
            prompt = build_prompt_for(ex, template, tokenizer, budget)
        except ConfigError:
            stats["too_long"] += 1
            continue
        if ex.gold is not None:
            included = prompt.passages
            gold_text = ex.passages[ex.gold - 1]["text"]
            if (len(included) < ex.gold or not any(a.lower() in included[ex.gold - 1].text.lower()
                                                   for a in ex.answers)
                    or not gold_text.startswith(included[ex.gold - 1].text[:40])):
                stats["gold_dropped"] += 1
                continue
        prompt_ids = _encode(tokenizer, prompt.text)
        target_ids = tokenizer(_render_target(tokenizer, prompt.messages, prompt.text, ex.target),
                               add_special_tokens=False)["input_ids"]
        ids = prompt_ids + target_ids
        if len(ids) + virtual_tokens > max_seq_len:
            ids = ids[:max_seq_len - virtual_tokens]
            if len(ids) <= len(prompt_ids):
                stats["too_long"] += 1
                continue
        rows.append({"input_ids": ids, "labels": [-100] * len(prompt_ids) + ids[len(prompt_ids):],
                     "prompt_len": len(prompt_ids), "example": ex, "prompt": prompt.text})
        stats["kept"] += 1
    return rows, stats


class Collator:
    """Right-pads a batch; labels padded with -100."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class Rows:
    """A list of feature rows as a map-style dataset Trainer accepts."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[i]
        return {"input_ids": r["input_ids"], "labels": r["labels"]}


# ----------------------------------------------------------------------------- metrics

def score_outputs(task: str, predictions: list[str], examples) -> dict[str, float]:
    """The task metric of generated outputs: qa -> f1 and em (citations stripped); summarize /
    instruct -> rouge1 / rouge2 / rougeL."""
    from ragqa.evaluation.evaluate import answer_text, exact_match, rouge, token_f1

    if not predictions:
        return {}
    if task == "qa":
        f1 = [token_f1(answer_text(p), e.answers) for p, e in zip(predictions, examples)]
        em = [exact_match(answer_text(p), e.answers) for p, e in zip(predictions, examples)]
        return {"f1": 100 * sum(f1) / len(f1), "em": 100 * sum(em) / len(em)}
    scores = rouge(predictions, [e.answers[0] for e in examples])
    return {k: sum(s[k] for s in scores) / len(scores) for k in ("rouge1", "rouge2", "rougeL")}


def generate_outputs(model, tokenizer, rows, max_new_tokens: int) -> list[str]:
    """Greedy outputs for feature rows (their prompts only), one at a time (no padding effects)."""
    import torch

    from ragqa.generators.engine import stop_ids

    stop = stop_ids(tokenizer, model.generation_config)
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.no_grad():
            for r in rows:
                ids = torch.tensor([r["input_ids"][:r["prompt_len"]]])
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                     max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=stop, pad_token_id=tokenizer.pad_token_id,
                                     temperature=None, top_p=None, top_k=None)
                outputs.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    finally:
        if was_training:
            model.train()
    return outputs


def trainer_class():
    """transformers' Trainer with ragqa's evaluation (imported on use: transformers is heavy)."""
    from transformers import Trainer

    class RagqaTrainer(Trainer):
        """Trainer whose evaluation adds the task metric (by greedy generation) to the loss, so
        best-checkpoint selection and early stopping use F1 / ROUGE: ``task``, the rows scored
        (``metric_rows``, with their examples), new tokens per output and the tokenizer."""

        def __init__(self, *args, task: str = "qa", metric_rows: list | None = None,
                     gen_tokens: int = 48, gen_tokenizer=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.task, self.metric_rows = task, list(metric_rows or [])
            self.gen_tokens, self.gen_tokenizer = gen_tokens, gen_tokenizer

        def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
            output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
            preds = generate_outputs(self.model, self.gen_tokenizer, self.metric_rows, self.gen_tokens)
            for k, v in score_outputs(self.task, preds, [r["example"] for r in self.metric_rows]).items():
                output.metrics[f"{metric_key_prefix}_{k}"] = round(v, 4)
            return output

    return RagqaTrainer


# ----------------------------------------------------------------------------- peft

def peft_config(cfg: TrainConfig, model, model_path):
    """The PEFT config of ``cfg.method``, from that kind's own module."""
    return trainable_kinds()[cfg.method].peft_config(cfg, model, model_path)


def load_training_model(cfg: TrainConfig, path):
    import torch
    from transformers import AutoModelForCausalLM

    from ragqa.files import one_line
    from ragqa.generators.models import load_tokenizer

    tokenizer = load_tokenizer(path)
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if cfg.qlora:
        if cfg.method != "lora":
            raise ConfigError("--qlora works with --method lora only")
        if not torch.cuda.is_available():
            raise ConfigError("--qlora needs a CUDA GPU (4-bit bitsandbytes kernels); this machine "
                              "has none: train without --qlora")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("--qlora needs bitsandbytes: pip install bitsandbytes") from None
        from transformers import BitsAndBytesConfig

        kwargs = {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True), "dtype": torch.bfloat16}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except Exception as exc:
        raise ModelError(f"model {path}: cannot load it for training ({one_line(exc)})") from None
    if cfg.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


# ----------------------------------------------------------------------------- train

def _data_hash(manifests: list[dict]) -> str:
    """The training file's sha256 from the manifest; with mixing, the sha256 of those hashes."""
    hashes = [(m.get("files") or {}).get("train.jsonl", "") for m in manifests]
    if len(hashes) == 1:
        return hashes[0]
    import hashlib

    return hashlib.sha256("+".join(hashes).encode()).hexdigest()


def _partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _check_resume(work: Path, cfg: TrainConfig) -> bool:
    """True when a resumable run of the same settings is in ``work``."""
    saved = work / "train_config.json"
    if not saved.is_file() or not any(work.glob("checkpoint-*")):
        return False
    old = json.loads(saved.read_text())
    new = _config_json(cfg)
    # a setting added since the run started (absent in its file) matches when it has its default
    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(TrainConfig)}
    diff = [k for k in new if k not in ("resume", "command", "overwrite", "threads")
            and old.get(k, defaults.get(k)) != new[k]]
    if diff:
        raise ConfigError(f"--resume: {work} was started with other settings ({diff[0]}: "
                          f"{old.get(diff[0])!r} then, {new[diff[0]]!r} now); use the same settings "
                          "or start over without --resume")
    return True


def _config_json(cfg: TrainConfig) -> dict:
    data = asdict(cfg)
    return {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if k == "mix_data" else v)
            for k, v in data.items()}


def train(cfg: TrainConfig, log=print, callbacks=()):
    """Trains one variant; returns its Card. See the module docstring. ``callbacks``: extra
    transformers TrainerCallbacks (progress in a UI, tests)."""
    import torch
    from peft import get_peft_model
    from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

    from ragqa.config import default_cache_dir
    from ragqa.generators.models import model_fingerprint, resolve_model
    from ragqa.generators.registry import Card

    manifest = read_manifest(cfg.data)
    mixed_manifests = [read_manifest(d) for d in cfg.mix_data]
    out = cfg.out
    if out.exists() and not cfg.overwrite and not cfg.resume:
        raise ConfigError(f"{out} already exists; choose another --out or pass --overwrite")
    work = _partial_dir(out)
    resume = cfg.resume and work.is_dir() and _check_resume(work, cfg)
    if cfg.resume and not resume:
        log(f"nothing to resume in {work}: starting from the beginning")
    if not resume and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "train_config.json").write_text(json.dumps(_config_json(cfg), indent=2) + "\n")

    torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    model_path = resolve_model(cfg.model, cfg.cache_dir or default_cache_dir())
    model, tokenizer = load_training_model(cfg, model_path)

    train_examples = read_examples(cfg.data / "train.jsonl")
    val_examples = read_examples(cfg.data / "validation.jsonl")
    if not train_examples:
        raise ConfigError(f"{cfg.data / 'train.jsonl'}: no training examples")
    if not val_examples:
        raise ConfigError(f"{cfg.data / 'validation.jsonl'}: no validation examples; build the data "
                          "with a validation share > 0")
    rng = random.Random(cfg.seed)
    rng.shuffle(train_examples)
    if cfg.mix_data:  # multi-task: the other directories' training examples join; validation stays
        sources = [train_examples]
        for d in cfg.mix_data:
            more = read_examples(d / "train.jsonl")
            if not more:
                raise ConfigError(f"{d / 'train.jsonl'}: no training examples")
            rng.shuffle(more)
            sources.append(more)
        train_examples = mix_examples(sources, cfg.mix, cfg.seed)
    if cfg.limit_train:
        train_examples = train_examples[:cfg.limit_train]
    if cfg.max_steps > 0:  # featurize only what the steps can use (plus room for dropped ones)
        need = cfg.max_steps * cfg.batch_size * cfg.grad_accum
        train_examples = train_examples[:need + need // 10 + 8]
    tasks = {e.task for e in val_examples}  # the validation data's (with mixing: the first --data's)
    task = "qa" if "qa" in tasks else sorted(tasks)[0]
    templates = sorted({e.template for e in train_examples})
    # prompt learning (soft prompts, prefixes) puts virtual tokens before the text
    prompt_learning = cfg.method != FULL and "num_virtual_tokens" in trainable_kinds()[cfg.method].train_settings
    virtual = cfg.num_virtual_tokens if prompt_learning else 0

    train_rows, train_stats = featurize(train_examples, tokenizer, max_seq_len=cfg.max_seq_len,
                                        virtual_tokens=virtual, phrasing_share=cfg.phrasing_share,
                                        seed=cfg.seed)
    # a seeded sample of the validation split (scoring by generation is the slow part on a CPU)
    random.Random(cfg.seed + 1).shuffle(val_examples)
    val_rows, val_stats = featurize(val_examples[:2 * cfg.eval_examples], tokenizer,
                                    max_seq_len=cfg.max_seq_len, virtual_tokens=virtual)
    if not train_rows or not val_rows:
        raise ConfigError(f"no example fits max_seq_len={cfg.max_seq_len} (train {train_stats}, "
                          f"validation {val_stats}); raise --max-seq-len")
    metric_rows = val_rows[:cfg.eval_examples]
    log(f"{len(train_rows)} training / {len(val_rows)} validation examples "
        f"(dropped: train {train_stats}, validation {val_stats}); "
        f"{sum(len(r['input_ids']) for r in train_rows) / len(train_rows):.0f} tokens on average")

    if cfg.method == FULL:  # every weight trains; the result is a model directory, not an adapter
        model.requires_grad_(True)
    else:
        model = get_peft_model(model, peft_config(cfg, model, model_path))
        trainable_kinds()[cfg.method].init_trainable(cfg, model, tokenizer)
    if prompt_learning:  # validation generates with PEFT's generate (transformers >= 5.24)
        from ragqa.generators.peft_compat import fix_prompt_learning_generation

        fix_prompt_learning_generation(model)
    trainable, total = (model.get_nb_trainable_parameters() if cfg.method != FULL else
                        (sum(p.numel() for p in model.parameters() if p.requires_grad),
                         sum(p.numel() for p in model.parameters())))
    log(f"{cfg.method}: {trainable:,} trainable of {total:,} parameters")

    metric = TASK_METRIC[task]
    steps_per_epoch = math.ceil(len(train_rows) / (cfg.batch_size * cfg.grad_accum))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.epochs)
    use_cpu = not torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(work), per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, warmup_steps=cfg.warmup_steps, lr_scheduler_type="linear",
        logging_steps=max(1, min(10, cfg.eval_steps // 2)), logging_first_step=True,
        eval_strategy="steps", eval_steps=cfg.eval_steps, save_strategy="steps",
        # a projected prefix's checkpoints hold the prefix it projects (what is served), not the MLP
        # being trained, so they cannot be loaded back into training: its best one is copied instead
        save_steps=cfg.eval_steps, save_total_limit=2, load_best_model_at_end=not cfg.prefix_projection,
        metric_for_best_model=metric, greater_is_better=True, seed=cfg.seed, data_seed=cfg.seed,
        report_to="none", use_cpu=use_cpu, dataloader_num_workers=0, remove_unused_columns=False,
        bf16=bool(cfg.qlora), disable_tqdm=False)
    trainer = trainer_class()(model=model, args=args, train_dataset=Rows(train_rows),
                              eval_dataset=Rows(metric_rows), data_collator=Collator(tokenizer.pad_token_id),
                              callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.patience), *callbacks],
                              task=task, metric_rows=metric_rows, gen_tokens=cfg.eval_max_new_tokens,
                              gen_tokenizer=tokenizer)
    started = time.perf_counter()
    log(f"training up to {total_steps} steps, evaluating every {cfg.eval_steps} on "
        f"{len(metric_rows)} of {len(val_examples)} validation examples (loss and {metric})")
    try:
        trainer.train(resume_from_checkpoint=True if resume else None)
    except KeyboardInterrupt:
        log(f"interrupted: checkpoints are kept in {work}; continue with --resume")
        raise
    seconds = time.perf_counter() - started
    state = trainer.state
    evals = [h for h in state.log_history if f"eval_{metric}" in h]
    if not any(h.get("step") == state.global_step for h in evals):
        evals.append({**trainer.evaluate(), "step": state.global_step})
    best = max(evals, key=lambda h: h[f"eval_{metric}"])

    if not trainer.is_world_process_zero():  # under accelerate/DDP only rank 0 writes the variant
        return None
    # the variant directory, written next to its final place and renamed into it
    final_tmp = out.parent / f".{out.name}.final"
    shutil.rmtree(final_tmp, ignore_errors=True)
    best_dir = work / f"checkpoint-{best.get('step')}"
    if cfg.prefix_projection and (best_dir / "adapter_model.safetensors").is_file():
        final_tmp.mkdir(parents=True)
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(best_dir / f, final_tmp / f)
    elif cfg.method == FULL:  # a model directory in the base's stored dtype, with its tokenizer
        import torch

        stored = json.loads((Path(model_path) / "config.json").read_text()).get("dtype") or \
            json.loads((Path(model_path) / "config.json").read_text()).get("torch_dtype") or "float32"
        trainer.model.to(getattr(torch, str(stored), torch.float32)).save_pretrained(str(final_tmp))
        tokenizer.save_pretrained(str(final_tmp))
    else:  # the best checkpoint is loaded (or the last step is the best)
        trainer.model.save_pretrained(str(final_tmp))
    (final_tmp / "README.md").unlink(missing_ok=True)  # PEFT's blank model card; ours is the Card
    name = cfg.name or out.name
    card = Card(
        name=name, kind=cfg.method, base_model=cfg.model, base_fingerprint=model_fingerprint(model_path),
        template=templates[0] if len(templates) == 1 else ",".join(templates),
        data_hash=_data_hash([manifest, *mixed_manifests]),
        metrics={"validation": {k[5:]: v for k, v in best.items() if k.startswith("eval_")
                                and not k.endswith(("runtime", "per_second"))},
                 "best_step": best.get("step"), "steps": state.global_step,
                 "train_seconds": round(seconds, 1), "stopped_early": state.global_step < total_steps,
                 "task": task},
        hyperparameters={**cfg.hyperparameters(), "train_examples": len(train_rows),
                         "validation_examples": len(val_rows), "trainable_parameters": trainable},
        command=cfg.command or " ".join(sys.argv),
        extra={"data": {"dir": str(cfg.data), "manifest_created": manifest.get("created"),
                        "counts": manifest.get("counts")},
               **({"mixed_with": [{"dir": str(d), "weight": w, "counts": m.get("counts")} for d, w, m in
                                  zip(cfg.mix_data, (cfg.mix or [None] * 99)[1:], mixed_manifests)],
                   "mix_weights": {"data": (cfg.mix or [None])[0]}} if cfg.mix_data else {})})
    card.save(final_tmp)
    (final_tmp / "training_log.json").write_text(json.dumps(
        {"metric": metric, "best": best, "log_history": state.log_history,
         "train_seconds": round(seconds, 1), "steps": state.global_step}, indent=2) + "\n")
    if out.exists():
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(final_tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(final_tmp, out)
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {out} (best validation {metric} {best[f'eval_{metric}']:.3f} at step "
        f"{best.get('step')}, {state.global_step} steps, {seconds:.0f} s)")
    return card


__all__ = ["METHODS", "TrainConfig", "featurize", "train"]
