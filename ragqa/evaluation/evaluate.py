"""Evaluation: answer metrics (SQuAD exact match and token F1) and retrieval metrics against
qrels (BEIR format).

SQuAD metrics follow the official v1.1 script: lower-case, remove punctuation and the articles
a/an/the, collapse whitespace; EM and F1 take the maximum over the gold answers.

Definitions follow BEIR / pytrec_eval: nDCG@k with graded gains rel / log2(rank + 1) and the ideal
ranking of all judged-relevant documents; Recall@k = |relevant in top k| / |relevant|; MRR@k =
1 / rank of the first relevant document (0 when none in the top k). Queries without any relevant
document in the qrels are left out.
"""

from __future__ import annotations

import collections
import copy
import csv
import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ragqa.errors import ConfigError, InputNotFound
from ragqa.files import read_jsonl, write_atomic, write_jsonl_atomic
from ragqa.memory import rss_mb as _rss_mb
from ragqa.memory import settle


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation.

    >>> normalize_answer("The  Denver Broncos!")
    'denver broncos'
    """
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_text(prediction: str) -> str:
    """The answer without ragqa's citation markers ("Paris [2]." -> "Paris."), as it is scored
    (``ragqa.answering.pipeline.strip_citations``: SQuAD normalisation would keep the digits)."""
    from ragqa.answering.pipeline import strip_citations

    return strip_citations(prediction)


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    return max((float(normalize_answer(prediction) == normalize_answer(g)) for g in golds), default=0.0)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    def f1(pred: str, gold: str) -> float:
        p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
        common = collections.Counter(p) & collections.Counter(g)
        same = sum(common.values())
        if same == 0:
            return 0.0
        precision, recall = same / len(p), same / len(g)
        return 2 * precision * recall / (precision + recall)

    return max((f1(prediction, g) for g in golds), default=0.0)


def faithfulness(answer: str, passages: Sequence[str]) -> float:
    """Model-free faithfulness proxy: the share of the answer's content words (SQuAD-normalised,
    stopwords removed) that occur in the passages it was given. 1.0 for an empty answer.

    >>> faithfulness("Paris, in France", ["The tower is in Paris."])
    0.5
    """
    from ragqa.answering.pipeline import content_words

    words = content_words(normalize_answer(answer_text(answer)))
    if not words:
        return 1.0
    seen = set().union(*(content_words(normalize_answer(p)) for p in passages)) if passages else set()
    return len(words & seen) / len(words)


def abstention_precision_recall(abstained: Sequence[bool], answerable: Sequence[bool]) -> dict[str, float | None]:
    """Precision: of the abstentions, the share on questions with no answer in the corpus; recall:
    of those questions, the share abstained on. None where undefined (nothing to divide by)."""
    pairs = list(zip(abstained, answerable))
    abst = [ans for a, ans in pairs if a]
    unanswerable = [a for a, ans in pairs if not ans]
    return {"abstain_precision": (sum(not x for x in abst) / len(abst)) if abst else None,
            "abstain_recall": (sum(unanswerable) / len(unanswerable)) if unanswerable else None}


def rouge(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """Per-item ROUGE-1/2/L F-measures (rouge-score, Porter stemming as in the ROUGE-1.5.5 -m flag)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    out = []
    for pred, ref in zip(predictions, references):
        sc = scorer.score(ref, pred)
        out.append({k: v.fmeasure for k, v in sc.items()})
    return out


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exponential smoothing), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """nDCG@k with graded gains.

    >>> round(ndcg_at_k(["a", "b"], {"b": 1}, 10), 4)
    0.6309
    """
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    rel = {d for d, g in relevant.items() if g > 0}
    return len(rel.intersection(ranked[:k])) / len(rel) if rel else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k]):
        if relevant.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def retrieval_scores(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]],
                     ks: Sequence[int] = (1, 10, 100)) -> dict[str, float]:
    """Mean nDCG@k, Recall@k and MRR@10 over the queries that have relevant documents."""
    qids = [q for q in qrels if any(g > 0 for g in qrels[q].values())]
    if not qids:
        raise ConfigError("the qrels hold no relevant documents")
    out: dict[str, float] = {"queries": len(qids)}
    for k in ks:
        out[f"ndcg@{k}"] = sum(ndcg_at_k(run.get(q, []), qrels[q], k) for q in qids) / len(qids)
        out[f"recall@{k}"] = sum(recall_at_k(run.get(q, []), qrels[q], k) for q in qids) / len(qids)
    out["mrr@10"] = sum(mrr_at_k(run.get(q, []), qrels[q], 10) for q in qids) / len(qids)
    return out


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV: ``query-id  corpus-id  score`` with a header line."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"{path}: no such qrels file")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not row or (n == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue
            try:
                qid, did, score = row[0], row[1], int(row[2])
            except (IndexError, ValueError):
                raise ConfigError(f"{path}:{n}: expected 'query-id<TAB>corpus-id<TAB>score'") from None
            qrels.setdefault(qid, {})[did] = score
    return qrels


def _jsonl(path: str | Path, expected: str, parse):
    """``parse(line_number, object)`` for each non-blank line of a JSONL file (read by
    ``ragqa.files.read_jsonl``, whose errors name ``path:line``); a line ``parse`` cannot use is a
    ConfigError naming ``path:line`` and what was ``expected``."""
    items = []
    for n, obj in read_jsonl(path):
        try:
            items.append(parse(n, obj))
        except (KeyError, TypeError, AttributeError):
            raise ConfigError(f"{path}:{n}: expected a JSON object with {expected}") from None
    return items


def read_queries(path: str | Path, text_key: str = "text") -> list[tuple[str, str]]:
    """JSONL lines with ``_id`` (or ``id``) and ``text_key`` -> [(id, text)]."""
    return _jsonl(path, f'"_id" (or "id") and "{text_key}"',
                  lambda n, obj: (str(obj["_id"] if "_id" in obj else obj["id"]), str(obj[text_key])))


def evaluate_retrieval(index, queries: Sequence[tuple[str, str]], qrels: Mapping[str, Mapping[str, int]],
                       mode: str | None = None, k: int = 100, batch: int = 64, progress=None) -> dict[str, float]:
    """Search every judged query (best chunk per document) and score the document rankings.
    ``progress(done, total)`` is called after each batch."""
    judged = [(q, t) for q, t in queries if q in qrels]
    run: dict[str, list[str]] = {}
    for start in range(0, len(judged), batch):
        part = judged[start:start + batch]
        for (qid, _), hits in zip(part, index.search_batch([t for _, t in part], k=k, mode=mode, per_doc=True)):
            run[qid] = [h.doc_id for h in hits]
        if progress:
            progress(min(start + batch, len(judged)), len(judged))
    return retrieval_scores(run, qrels, ks=tuple(x for x in (1, 10, 100) if x <= k))


def sample_queries(queries: Sequence[tuple[str, str]], qrels: Mapping[str, Mapping[str, int]],
                   limit: int | None, seed: int = 0) -> tuple[list[tuple[str, str]], dict[str, dict[str, int]]]:
    """A deterministic random sample of ``limit`` judged queries and the qrels cut to them (all
    judged queries without a limit), so unsampled queries do not count as misses."""
    judged = [(q, t) for q, t in queries if q in qrels]
    chosen = sample_items(judged, limit, seed)
    return chosen, {q: dict(qrels[q]) for q, _ in chosen}


# --- question answering ---------------------------------------------------------------------
@dataclass
class QAItem:
    id: str
    question: str
    answers: list[str]  # empty: the question has no answer in the corpus (abstention expected)
    gold_doc: str | None = None
    context: str | None = None
    title: str = ""


def load_qa_data(path: str | Path) -> list[QAItem]:
    """SQuAD-format json (read by ``ragqa.indexing.squad``: the gold document id is the id the
    index gives the paragraph, ``<title>#<paragraph index>``) or JSONL with ``question`` and
    ``answers`` (list) or ``answer`` (string), optional ``id``, ``doc_id``, ``context``."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"{path}: no such QA data file")
    items: list[QAItem] = []
    if path.suffix == ".json":
        from ragqa.indexing.squad import load_squad

        for article in load_squad(path):
            for para in article.paragraphs or []:
                for q in para.questions:
                    if q.id is None or q.question is None:
                        missing = "an \"id\"" if q.id is None else "a \"question\" string"
                        raise ConfigError(f"{path}: question #{q.position} of paragraph {para.id!r} has no {missing}; "
                                          "give every question an id and a question")
                    items.append(QAItem(q.id, q.question, [] if q.impossible else list(q.answers), para.id,
                                        para.context, article.display_title))
        return items

    def parse(n, obj):
        answers = obj["answers"] if "answers" in obj else [obj["answer"]]
        answers = [answers] if isinstance(answers, str) else answers
        return QAItem(str(obj.get("id", n)), str(obj["question"]), [str(a) for a in answers],
                      obj.get("doc_id"), obj.get("context"), obj.get("title", ""))

    return _jsonl(path, '"question" and "answers"', parse)


def sample_items(items: Sequence, limit: int | None, seed: int = 0) -> list:
    """A deterministic random sample of ``limit`` items (all of them, in order, without a limit)."""
    if not limit or limit >= len(items):
        return list(items)
    import random

    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]


def bootstrap_ci(values: Sequence[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    import numpy as np

    if not len(values):
        return (0.0, 0.0)
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(n, len(arr)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _summarise(rows: list[dict], keys: Sequence[str]) -> dict:
    out: dict = {"n": len(rows)}
    for key in keys:
        vals = [float(r[key]) for r in rows if r.get(key) is not None]
        mean = sum(vals) / len(vals) if vals else 0.0
        lo, hi = bootstrap_ci(vals)
        out[key] = {"mean": mean, "ci95": [lo, hi]}
    return out


def paired_vs_base(rows: Sequence[dict], variants: Sequence[str], metrics: Sequence[str],
                   base: str = "base") -> dict[str, dict]:
    """Per variant other than ``base``: for each metric, the mean of the per-item differences
    (variant - base, on the same items) with its 95% bootstrap interval, as ``{metric}_minus_base``.
    Items where either side has no value (None) are left out. Empty without a ``base`` variant.

    >>> rows = [{"id": "a", "variant": "base", "f1": 0.5}, {"id": "a", "variant": "v", "f1": 1.0}]
    >>> paired_vs_base(rows, ["base", "v"], ["f1"])["v"]["f1_minus_base"]["mean"]
    0.5
    """
    if base not in variants:
        return {}
    ref = {r["id"]: r for r in rows if r["variant"] == base}
    out: dict[str, dict] = {}
    for v in variants:
        if v == base:
            continue
        out[v] = {}
        for m in metrics:
            diffs = [float(r[m]) - float(ref[r["id"]][m]) for r in rows
                     if r["variant"] == v and r["id"] in ref and r.get(m) is not None
                     and ref[r["id"]].get(m) is not None]
            lo, hi = bootstrap_ci(diffs)
            out[v][f"{m}_minus_base"] = {"mean": sum(diffs) / len(diffs) if diffs else 0.0, "ci95": [lo, hi],
                                         "n": len(diffs)}
    return out


def latency_summary(rows: Sequence[dict], stages: Sequence[str]) -> dict:
    """Mean, p50 and p95 of each stage over the rows where it ran (not None), and the
    throughput: all new tokens over all generation seconds.

    >>> latency_summary([{"generate_ms": 100.0, "new_tokens": 5}, {"generate_ms": 300.0, "new_tokens": 15}],
    ...                 ["generate_ms"])["throughput"]["tokens_per_s"]
    50.0
    """
    import numpy as np

    out: dict = {}
    for key in stages:
        vals = [float(r[key]) for r in rows if r.get(key) is not None]
        if vals:
            out[key] = {"n": len(vals), "mean": sum(vals) / len(vals), "p50": float(np.percentile(vals, 50)),
                        "p95": float(np.percentile(vals, 95))}
    tokens = sum(int(r.get("new_tokens") or 0) for r in rows)
    seconds = sum(float(r.get("generate_ms") or 0.0) for r in rows) / 1000
    out["throughput"] = {"new_tokens": tokens, "generate_s": seconds,
                         "tokens_per_s": tokens / seconds if seconds > 0 else None}
    return out


def _generation_timings(result) -> dict:
    """A GenerationResult's per-stage numbers for a prediction row (None when nothing was generated)."""
    if result is None:
        return {"first_token_ms": None, "decode_ms": None, "generate_ms": None, "new_tokens": 0,
                "switch_ms": None}
    return {"first_token_ms": result.first_token_ms,
            "decode_ms": max(0.0, result.generate_ms - result.first_token_ms),
            "generate_ms": result.generate_ms, "new_tokens": result.new_tokens,
            "switch_ms": getattr(result, "switch_ms", 0.0)}


QA_METRICS = ("em", "f1", "gold_in_sources", "abstained", "faithfulness", "generate_s", "tokens_per_s")
QA_PAIRED = ("em", "f1", "faithfulness")
# per-stage numbers kept for every prediction (Answer.timings' names); decode_ms = generate - first token
QA_STAGES = ("retrieve_ms", "first_token_ms", "decode_ms", "generate_ms", "switch_ms", "tokens_per_s",
             "prompt_tokens", "new_tokens")


@dataclass(frozen=True)
class Contender:
    """One row of a comparison: ``variant`` ("base" or a variant name) served on ``model``."""

    label: str
    model: str
    variant: str


def contenders(names: Sequence[str], model: str, variant_base=None) -> list[Contender]:
    """The ``--variants`` list of ``eval qa`` / ``eval summarize`` as contenders. An entry is
    ``base`` or a variant NAME (both on ``model``), ``MODEL:base`` or ``MODEL:NAME`` (on that
    base model: a packaged name or a directory). ``variant_base(name)`` may name the base a
    variant's card was trained on, used when the entry names no model. When every contender is
    on one model the labels are the bare names (as before); otherwise a base model's row is
    labelled by the model's name."""
    parsed = []
    for name in names:
        on, sep, variant = name.rpartition(":")
        if not sep or not on:
            on, variant = "", name
        if not on and variant != "base" and variant_base is not None:
            on = variant_base(variant) or ""
        parsed.append((on or model, variant))
    one_model = len({m for m, _ in parsed}) == 1
    out, seen = [], set()
    for m, variant in parsed:
        label = variant if one_model or variant != "base" else m
        if label in seen:
            raise ConfigError(f"--variants: {label!r} is listed twice")
        seen.add(label)
        out.append(Contender(label, m, variant))
    return out


def _dir_mb(path) -> float | None:
    if not path:
        return None
    path = Path(str(path))
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def evaluate_qa(rag, items: Sequence[QAItem], variants: Sequence[str | Contender], *,
                gold_context: bool = False, k: int | None = None, template: str | None = None,
                progress=None, generator_for=None) -> tuple[dict, list[dict]]:
    """Every contender answers the same questions from the same passages: retrieval (or, with
    ``gold_context``, the gold paragraph alone) is the same for every one, so differences come from
    the generator (and the template a variant was trained with, which it reads by default). Answers are what ``RagQA.ask`` returns (the same post-processing), scored
    without their citation markers. ``variants``: names served by ``rag.generator``, or
    ``Contender`` entries; contenders on other base models are served one model at a time by
    ``generator_for(model)`` (one base in memory at a time), each on prompts built with its own
    tokenizer. Returns (summary per contender, prediction rows); each summary also records the
    model, its size on disk, the adapter's size and the process's memory while it served."""
    entries = [v if isinstance(v, Contender) else Contender(v, getattr(rag.generator, "model_name", ""), v)
               for v in variants]
    models = list(dict.fromkeys(e.model for e in entries))
    own = getattr(rag.generator, "model_name", None)
    rows: list[dict] = []
    memory: dict[str, float] = {}
    steps, done = len(items) * len(models), 0
    original = rag.generator
    try:
        for model in models:
            if len(models) > 1:  # one base in memory: drop the previous one before the next loads
                if rag.generator is not None:
                    getattr(rag.generator, "unload", lambda: None)()
                rag.generator = None
                settle()
            if model != own:
                if generator_for is None:
                    raise ConfigError(f"contender on {model}: this evaluation has no way to load another base model")
                rag.generator = generator_for(model)
            else:
                rag.generator = original
            mine = [e for e in entries if e.model == model]
            peak = 0.0
            for item in items:
                rows += _answer_item(rag, item, mine, gold_context=gold_context, k=k, template=template)
                peak = max(peak, _rss_mb())
                done += 1
                if progress:
                    progress(done, steps)
            memory[model] = peak
    finally:
        rag.generator = original
    order = {e.label: i for i, e in enumerate(entries)}
    rows.sort(key=lambda r: order[r["variant"]])  # stable: question order within a contender
    labels = [e.label for e in entries]
    summary = {e.label: _summarise([r for r in rows if r["variant"] == e.label], QA_METRICS) for e in entries}
    for e in entries:
        mine = [r for r in rows if r["variant"] == e.label]
        s = summary[e.label]
        s.update(abstention_precision_recall([bool(r["abstained"]) for r in mine], [r["answerable"] for r in mine]))
        s["latency"] = latency_summary(mine, QA_STAGES)
        s["model"], s["variant"] = e.model, e.variant
        s["rss_mb"] = memory.get(e.model)
        s["model_mb"] = _dir_mb(next((r["model_dir"] for r in mine if r.get("model_dir")), ""))
        s["adapter_mb"] = _dir_mb(next((r["variant_dir"] for r in mine if r.get("variant_dir")), ""))
    for v, diffs in paired_vs_base(rows, labels, QA_PAIRED, base=labels[0]).items():
        summary[v].update(diffs)
    return summary, rows


def _answer_item(rag, item: QAItem, entries: Sequence[Contender], *, gold_context: bool, k, template) -> list[dict]:
    """One question answered by each contender on ``rag.generator`` (one prompt for all of them).
    Each answer is the ``Answer`` the pipeline's public steps return (``prepare`` / ``shell_for``,
    then ``complete``: what ``RagQA.ask`` does), scored without its citation markers; abstention
    is the answer's ``abstained`` flag."""
    from ragqa.answering.prompting import Passage

    if gold_context and not item.context:
        raise ConfigError(f"question {item.id}: --gold-context needs the gold paragraph (SQuAD json)")
    prepared: dict[str, tuple] = {}  # one prompt per template (a variant reads the template it was trained with)

    def prepare(variant: str):
        name = rag.template_for(variant, template)
        if name not in prepared:
            if gold_context:
                prepared[name] = rag.shell_for(item.question, [Passage(item.context, item.title, item.gold_doc or "")],
                                               template=name)
            else:
                prepared[name] = rag.prepare(item.question, k=k, template=name)
        return prepared[name]

    gen = rag.generator
    model_dir = str(getattr(gen, "_path", "") or "")
    rows = []
    for e in entries:
        shell, prompt = prepare(e.variant)
        answer = rag.complete(copy.deepcopy(shell), prompt, variant=e.variant)
        generated = prompt is not None  # else the retrieval gate abstained without generating
        t = answer.timings
        abstained = answer.abstained
        scored = answer_text(answer.text)
        golds = item.answers
        variant_dir = ""
        if e.variant != "base" and hasattr(gen, "_find_variant_dir"):
            variant_dir = str(gen._find_variant_dir(e.variant))
        rows.append({
            "id": item.id, "variant": e.label, "model": e.model, "question": item.question,
            "prediction": answer.text, "answers": golds,
            "em": exact_match(scored, golds) if golds else float(abstained),
            "f1": token_f1(scored, golds) if golds else float(abstained),
            "abstained": float(abstained), "answerable": bool(golds),
            "faithfulness": None if abstained else faithfulness(answer.text, [s.text for s in answer.sources]),
            "gold_in_sources": (float(item.gold_doc in {s.doc_id for s in answer.sources}) if item.gold_doc else None),
            "generate_s": t["generate_ms"] / 1000 if generated else 0.0,
            "tokens_per_s": t.get("tokens_per_s") if generated else None,
            "prompt_tokens": prompt.tokens if generated else 0,
            "retrieve_ms": None if gold_context else t.get("retrieve_ms"), "model_dir": model_dir,
            "variant_dir": variant_dir, **_answer_timings(answer, generated)})
    return rows


def _answer_timings(answer, generated: bool) -> dict:
    """An Answer's per-stage generation numbers for a prediction row (None when nothing was generated)."""
    if not generated:
        return _generation_timings(None)
    t = answer.timings
    return {"first_token_ms": t.get("first_token_ms"), "decode_ms": t.get("decode_ms"),
            "generate_ms": t.get("generate_ms"), "new_tokens": t.get("new_tokens", 0),
            "switch_ms": t.get("switch_ms", 0.0)}


def which_to_pick(summary: dict, metric: str = "f1", label: str = "F1", scale: float = 100.0) -> str:
    """One line: the contender with the best ``metric``, and the fastest one whose score is not
    measurably worse (its 95% interval reaches the best one's mean)."""
    if len(summary) < 2:
        return ""
    digits = 1 if scale > 1 else 3
    best = max(summary, key=lambda v: summary[v][metric]["mean"])

    def p50(v):
        return ((summary[v].get("latency") or {}).get("generate_ms") or {}).get("p50") or 0.0

    b = summary[best]
    line = (f"Best answers: **{best}** ({label} {scale * b[metric]['mean']:.{digits}f}, "
            f"{p50(best) / 1000:.1f} s per answer p50).")
    faster = sorted((v for v in summary if v != best and 0 < p50(v) < p50(best)), key=p50)
    for v in faster:
        s = summary[v]
        line += (f" {v} answers in {p50(v) / 1000:.1f} s ({p50(best) / p50(v):.1f}x faster) with {label} "
                 f"{scale * s[metric]['mean']:.{digits}f}")
        lo, hi = s[metric]["ci95"]
        if hi >= b[metric]["mean"]:
            return line + ": not measurably worse on these questions, so pick it where speed matters."
        line += "; measurably worse here"
        break
    return line + f". Pick {best}."


def _cell(text, width: int = 160) -> str:
    """Text for one markdown table cell: one line, pipes escaped, cut to ``width`` characters."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 3] + "..."


def _examples_table(rows: list[dict], variants: Sequence[str], key: str, scale: float, *,
                    question: str, gold: str, n: int = 3) -> list[str]:
    """Worst and best ``n`` items by the first variant's ``key``, every variant's output side by
    side (each with its own score)."""
    first = [r for r in rows if r["variant"] == variants[0]]
    by_score = sorted(first, key=lambda r: (r[key], str(r["id"])))
    n = max(1, min(n, len(first) // 2))  # worst and best never show the same item twice
    by_id = {(r["id"], r["variant"]): r for r in rows}
    lines: list[str] = []
    for title, chosen in (("Worst", by_score[:n]), ("Best", by_score[-n:][::-1])):
        lines += [f"## {title} examples (by {variants[0]} {key})", "",
                  f"| {question} | {gold} | " + " | ".join(variants) + " |",
                  "|---|---|" + "---|" * len(variants)]
        for r in chosen:
            outs = []
            for v in variants:
                x = by_id.get((r["id"], v))
                outs.append(f"{_cell(x['prediction'])} ({key} {scale * x[key]:.0f})" if x else "")
            ref = r.get("answers", r.get("reference", ""))
            ref = "; ".join(ref[:2]) if isinstance(ref, list) else ref
            lines.append(f"| {_cell(r.get('question', r['id']), 200)} | {_cell(ref or '(no answer)', 200)} | "
                         + " | ".join(outs) + " |")
        lines.append("")
    return lines


def _ci(m: dict, scale: float = 100.0, digits: int = 1) -> str:
    return f"{scale * m['mean']:.{digits}f} [{scale * m['ci95'][0]:.{digits}f}, {scale * m['ci95'][1]:.{digits}f}]"


def _paired_table(summary: dict, metrics: Sequence[tuple[str, str]], scale: float, digits: int) -> list[str]:
    others = [v for v, s in summary.items() if any(f"{m}_minus_base" in s for m, _ in metrics)]
    if not others:
        return []
    base = next(v for v in summary if v not in others)  # the reference: the first row
    ref = "base" if base == "base" else "the first row"
    lines = [f"## Paired comparison with {base}", "",
             "| variant | " + " | ".join(f"{label} - {ref}" for _, label in metrics) + " | items |",
             "|---|" + "---|" * (len(metrics) + 1)]
    for v in others:
        s = summary[v]
        lines.append(f"| {v} | " + " | ".join(_ci(s[f"{m}_minus_base"], scale, digits) for m, _ in metrics)
                     + f" | {s[f'{metrics[0][0]}_minus_base']['n']} |")
    lines += ["", f"Mean of the per-item differences (variant - {base}, the same items and passages) with its "
              "bootstrap 95% interval: an interval that excludes 0 is a difference these items support.", ""]
    return lines


def _cost_table(summary: dict, metric: str = "f1", label: str = "F1", scale: float = 100.0) -> list[str]:
    """Quality against what it costs, one row per contender, and which to pick."""
    if not any("model" in s for s in summary.values()):
        return []
    lines = ["## Quality and cost", "",
             f"| contender | model | {label} | s per answer p50 | decode tokens/s | model on disk MB | adapter MB | "
             "process RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for v, s in summary.items():
        lat = s.get("latency") or {}
        p50 = (lat.get("generate_ms") or {}).get("p50")
        dec, n = (lat.get("decode_ms") or {}).get("mean"), (lat.get("new_tokens") or {}).get("mean")
        rate = (n - 1) / (dec / 1000) if dec and n and n > 1 else None

        def cell(x, fmt="{:.0f}"):
            return fmt.format(x) if x else "-"

        lines.append(f"| {v} | {s.get('model', '')} | {scale * s[metric]['mean']:.{1 if scale > 1 else 3}f} | "
                     f"{cell(p50 and p50 / 1000, '{:.1f}')} | "
                     f"{cell(rate, '{:.1f}')} | {cell(s.get('model_mb'))} | {cell(s.get('adapter_mb'), '{:.1f}')} | "
                     f"{cell(s.get('rss_mb'))} |")
    pick = which_to_pick(summary, metric, label, scale)
    return lines + ["", "Decode tokens/s: the tokens after the first over the time after the first (prompt reading "
                    "excluded). Process RSS: the largest resident memory of the evaluating process while that "
                    "model served (index and embedder included).", ""] + ([pick, ""] if pick else [])


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"


def _latency_table(summary: dict, stages: Sequence[tuple[str, str]]) -> list[str]:
    lines = ["## Latency and throughput", "",
             "| variant | " + " | ".join(f"{label} mean / p50 / p95" for _, label in stages)
             + " | tokens/s (all answers) |", "|---|" + "---|" * (len(stages) + 1)]
    for v, s in summary.items():
        lat = s.get("latency", {})
        cells = []
        for key, _ in stages:
            m = lat.get(key)
            cells.append(" / ".join(_num(m[x]) for x in ("mean", "p50", "p95")) if m else "-")
        tps = lat.get("throughput", {}).get("tokens_per_s")
        lines.append(f"| {v} | " + " | ".join(cells) + (f" | {tps:.1f} |" if tps else " | - |"))
    return lines + [""]


QA_CHART_METRICS = (("em", "EM"), ("f1", "F1"), ("gold_in_sources", "gold in sources"),
                    ("abstained", "abstained"), ("faithfulness", "faithfulness"))
QA_CHART_STAGES = (("retrieve_ms", "retrieve"), ("first_token_ms", "prompt + first token"),
                   ("decode_ms", "remaining tokens"))


@dataclass
class Report:
    """A written report: its folder, the Markdown of its tables (what ``ragqa eval`` prints) and
    the files it wrote. ``report / "report.md"`` works as with a path."""

    dir: Path
    tables: str
    files: list[str]

    def __truediv__(self, name: str) -> Path:
        return self.dir / name


def _finish_report(report_dir: Path, lines: list[str], n_tables: int, charts: bool, predictions: bool) -> Report:
    write_atomic(report_dir / "report.md", "\n".join(lines))
    files = ["report.md", "results.json"] + (["metrics.png", "latency.png"] if charts else []) + (
        ["predictions.jsonl"] if predictions else [])
    return Report(report_dir, "\n".join(lines[:n_tables]).rstrip(), [str(report_dir / f) for f in files])


def _start_report(report_dir, summary: dict, rows: list[dict], meta: dict, predictions: bool,
                  title: str) -> tuple[Path, list[str]]:
    """Creates ``report_dir``, writes results.json (and predictions.jsonl); returns the directory
    and report.md's first lines (title, settings)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(report_dir / "results.json", json.dumps({"meta": meta, "variants": summary}, indent=1) + "\n")
    if predictions:
        write_jsonl_atomic(report_dir / "predictions.jsonl", rows)
    return report_dir, [f"# {title}: {meta.get('data', '')}", "",
                        " ".join(f"{k}={v}" for k, v in meta.items() if k != "data"), ""]


def write_qa_report(report_dir: str | Path, summary: dict, rows: list[dict], meta: dict,
                    predictions: bool = False, charts: bool = True) -> Report:
    """report.md + results.json (+ predictions.jsonl) and the charts metrics.png and latency.png
    in ``report_dir``."""
    report_dir, lines = _start_report(report_dir, summary, rows, meta, predictions, "QA evaluation")
    lines += ["| variant | n | EM | F1 | gold passage in sources | abstained | faithfulness | generate s | F1 - base |",
              "|---|---|---|---|---|---|---|---|---|"]
    for v, s in summary.items():
        diff = _ci(s["f1_minus_base"]) if "f1_minus_base" in s else ""
        lines.append(f"| {v} | {s['n']} | {_ci(s['em'])} | {_ci(s['f1'])} | {_ci(s['gold_in_sources'])} | "
                     f"{_ci(s['abstained'])} | {_ci(s['faithfulness'])} | {s['generate_s']['mean']:.1f} | {diff} |")
    lines += ["", "Means with bootstrap 95% intervals, in percent (EM, F1, rates). Faithfulness: the share of "
              "an answer's content words found in its passages (answers that abstained left out).", ""]
    stages = (("retrieve_ms", "retrieve ms"), ("first_token_ms", "prompt + first token ms"),
              ("decode_ms", "remaining tokens ms"), ("prompt_tokens", "prompt tokens"), ("new_tokens", "new tokens"))
    lines += _paired_table(summary, [(m, {"em": "EM", "f1": "F1"}.get(m, m)) for m in QA_PAIRED], 100.0, 1)
    lines += _cost_table(summary)
    lines += _latency_table(summary, stages)
    lines += ["Per generated answer (questions the retrieval gate abstained on generate nothing and are left "
              "out); retrieval runs once per question and is shared by every variant.", ""]
    n_tables = len(lines)
    if charts:
        from ragqa.evaluation.charts import latency_chart, metric_chart

        metric_chart(summary, QA_CHART_METRICS, report_dir / "metrics.png", title=Path(meta.get("data", "")).name,
                     scale=100.0, ylabel="%")
        latency_chart(summary, QA_CHART_STAGES, report_dir / "latency.png")
        lines += ["![metrics per variant with 95% CIs](metrics.png)", "", "![latency by stage](latency.png)", ""]
    lines += _examples_table(rows, list(summary), "f1", 100.0, question="question", gold="gold")
    return _finish_report(report_dir, lines, n_tables, charts, predictions)


# --- summarisation ---------------------------------------------------------------------------
def load_summarization_data(path: str | Path) -> list[tuple[str, str, str]]:
    """(id, input, reference) from JSONL: DialogSum (``fname``, ``dialogue``, ``summary``),
    generic (``id``, ``input``, ``output``) or a split written by ``ragqa data import``
    (``id``, ``input``, ``target``)."""
    def parse(n, obj):
        if "dialogue" in obj:
            return str(obj.get("fname", n)), obj["dialogue"], obj["summary"]
        return str(obj.get("id", n)), obj["input"], obj["output"] if "output" in obj else obj["target"]

    return _jsonl(path, '"dialogue" and "summary" (or "input" and "output")', parse)


SUMMARY_METRICS = ("rouge1", "rouge2", "rougeL", "words", "generate_s")
SUMMARY_PAIRED = ("rouge1", "rouge2", "rougeL")
SUMMARY_STAGES = ("first_token_ms", "decode_ms", "generate_ms", "switch_ms", "tokens_per_s", "prompt_tokens",
                  "new_tokens")


def evaluate_summaries(generator, items: Sequence[tuple[str, str, str]], variants: Sequence[str | Contender], *,
                       template: str = "summarize", settings=None, progress=None,
                       generator_for=None) -> tuple[dict, list[dict]]:
    """Every contender summarises the same inputs; ROUGE-1/2/L (means with 95% CIs, and paired
    differences with the first contender), corpus BLEU, output length and per-stage latency.
    ``variants``: names served by ``generator``, or ``Contender`` entries; contenders on other
    base models are served one model at a time by ``generator_for(model)``, each on prompts built
    with its own tokenizer (as ``evaluate_qa``)."""
    from ragqa.answering.prompting import build_plain_prompt, load_template

    tmpl = load_template(template)
    own = getattr(generator, "model_name", "")
    entries = [v if isinstance(v, Contender) else Contender(v, own, v) for v in variants]
    models = list(dict.fromkeys(e.model for e in entries))
    rows: list[dict] = []
    memory: dict[str, float] = {}
    steps, done = len(items) * len(models), 0
    gen = None
    for model in models:
        if gen is not None and len(models) > 1:
            getattr(gen, "unload", lambda: None)()
            gen = None
            settle()
        if model == own:
            gen = generator
        elif generator_for is None:
            raise ConfigError(f"contender on {model}: this evaluation has no way to load another base model")
        else:
            gen = generator_for(model)
        budget = gen.context_length - (settings.max_new_tokens if settings else 128)
        mine = [e for e in entries if e.model == model]
        peak = 0.0
        for item_id, text, reference in items:
            prompt = build_plain_prompt(text, tmpl, gen.tokenizer, max_prompt_tokens=budget)
            for e in mine:
                out = gen.generate(prompt.text, variant=e.variant, settings=settings)
                variant_dir = (str(gen._find_variant_dir(e.variant))
                               if e.variant != "base" and hasattr(gen, "_find_variant_dir") else "")
                rows.append({"id": item_id, "variant": e.label, "model": e.model, "prediction": out.text.strip(),
                             "reference": reference, "generate_s": out.generate_ms / 1000,
                             "words": len(out.text.split()), "tokens_per_s": out.tokens_per_s,
                             "prompt_tokens": prompt.tokens, "model_dir": str(getattr(gen, "_path", "") or ""),
                             "variant_dir": variant_dir, **_generation_timings(out)})
            peak = max(peak, _rss_mb())
            done += 1
            if progress:
                progress(done, steps)
        memory[model] = peak
    order = {e.label: i for i, e in enumerate(entries)}
    rows.sort(key=lambda r: order[r["variant"]])
    labels = [e.label for e in entries]
    summary: dict = {}
    for e in entries:
        mine = [r for r in rows if r["variant"] == e.label]
        for r, sc in zip(mine, rouge([r["prediction"] for r in mine], [r["reference"] for r in mine])):
            r.update(sc)
        sm = summary[e.label] = _summarise(mine, SUMMARY_METRICS)
        sm["bleu"] = bleu([r["prediction"] for r in mine], [r["reference"] for r in mine])
        sm["latency"] = latency_summary(mine, SUMMARY_STAGES)
        sm["model"], sm["variant"], sm["rss_mb"] = e.model, e.variant, memory.get(e.model)
        sm["model_mb"] = _dir_mb(next((r["model_dir"] for r in mine if r.get("model_dir")), ""))
        sm["adapter_mb"] = _dir_mb(next((r["variant_dir"] for r in mine if r.get("variant_dir")), ""))
    for v, diffs in paired_vs_base(rows, labels, SUMMARY_PAIRED, base=labels[0]).items():
        summary[v].update(diffs)
    return summary, rows


SUMMARY_CHART_METRICS = (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"))
SUMMARY_CHART_STAGES = (("first_token_ms", "prompt + first token"), ("decode_ms", "remaining tokens"))


def write_summary_report(report_dir: str | Path, summary: dict, rows: list[dict], meta: dict,
                         predictions: bool = False, charts: bool = True) -> Report:
    """report.md + results.json (+ predictions.jsonl) and the charts metrics.png and latency.png
    in ``report_dir``."""
    report_dir, lines = _start_report(report_dir, summary, rows, meta, predictions, "Summarisation evaluation")
    lines += ["| variant | n | ROUGE-1 | ROUGE-2 | ROUGE-L | BLEU | words |", "|---|---|---|---|---|---|---|"]
    for v, m in summary.items():
        lines.append(f"| {v} | {m['n']} | {_ci(m['rouge1'], 1, 4)} | {_ci(m['rouge2'], 1, 4)} | "
                     f"{_ci(m['rougeL'], 1, 4)} | {m['bleu']:.2f} | {m['words']['mean']:.1f} |")
    lines += ["", "ROUGE F-measures: means with bootstrap 95% intervals; BLEU: corpus BLEU (sacrebleu), 0-100.", ""]
    lines += _paired_table(summary, SUMMARY_CHART_METRICS, 1.0, 4)
    lines += _cost_table(summary, "rouge1", "ROUGE-1", 1.0)
    lines += _latency_table(summary, (("first_token_ms", "prompt + first token ms"),
                                      ("decode_ms", "remaining tokens ms"), ("prompt_tokens", "prompt tokens"),
                                      ("new_tokens", "new tokens")))
    n_tables = len(lines)
    if charts:
        from ragqa.evaluation.charts import latency_chart, metric_chart

        metric_chart(summary, SUMMARY_CHART_METRICS, report_dir / "metrics.png",
                     title=Path(meta.get("data", "")).name)
        latency_chart(summary, SUMMARY_CHART_STAGES, report_dir / "latency.png")
        lines += ["![ROUGE per variant with 95% CIs](metrics.png)", "", "![latency by stage](latency.png)", ""]
    lines += _examples_table(rows, list(summary), "rougeL", 100.0, question="item", gold="reference")
    return _finish_report(report_dir, lines, n_tables, charts, predictions)
