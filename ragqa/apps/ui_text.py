"""The words the chat UI (ui/app.py) shows, as plain functions of library objects, so they are
tested without a browser: a variant's card, why it said "I don't know", timings, the embedder's
name, example questions from the index, citation links, passages as people read them."""

from __future__ import annotations

import html
import re
from pathlib import Path

from ragqa.generators.engine import describe_timings, seconds

KINDS = {"base": "the base model, untuned", "lora": "LoRA adapter", "prompt-tuning": "soft prompt",
         "prefix-tuning": "prefix tuning", "ia3": "IA3 adapter", "ln-tuning": "LayerNorm tuning"}
_CITE = re.compile(r"\[(\d{1,2})\]")
_HEADING = re.compile(r"(?m)^\s{0,3}#{1,6}\s+")


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def variant_card(entry: dict, card=None) -> list[tuple[str, str]]:
    """(label, text) lines about a variant for people: what it is, what it was trained on, how it
    scored, how it was made; ``card`` is its ``Card`` (None for the base or a variant without one)."""
    kind = entry.get("kind", "")
    lines = [("Kind", KINDS.get(kind, kind or "unknown")), ("Base model", entry.get("base_model", ""))]
    if card is None:
        return [(k, v) for k, v in lines if v]
    lines = [("Kind", KINDS.get(card.kind, card.kind)), ("Base model", card.base_model)]
    data = card.extra.get("data") or {}
    if isinstance(data, dict) and data.get("dir"):
        train = (data.get("counts") or {}).get("train") or {}
        what = f"{data['dir']}"
        if train.get("examples"):
            what += f": {_count(train['examples'])} training examples"
            if train.get("documents"):
                what += f" from {_count(train['documents'])} documents"
        lines.append(("Trained on", what))
    elif data:
        lines.append(("Trained on", str(data)))
    m = card.metrics or {}
    val = m.get("validation") or {}
    if isinstance(val, dict) and val:
        named = {"f1": "F1", "em": "exact match", "rougeL": "ROUGE-L", "rouge1": "ROUGE-1", "loss": "loss"}
        scores = [f"{named.get(k, k)} {v:.1f}" for k, v in val.items()
                  if isinstance(v, (int, float)) and k != "loss"]
        if isinstance(val.get("loss"), (int, float)):
            scores.append(f"loss {val['loss']:.3f}")
        n = (card.hyperparameters or {}).get("validation_examples")
        lines.append(("Validation", ", ".join(scores) + (f" (on {n} held-out examples)" if n else "")))
    h = card.hyperparameters or {}
    steps = m.get("steps") or h.get("max_steps")
    if steps:
        took = f" in {seconds(1000 * m['train_seconds'])}" if m.get("train_seconds") else ""
        early = ", stopped early" if m.get("stopped_early") else ""
        rank = f", rank {h['lora_r']}" if card.kind == "lora" and h.get("lora_r") else ""
        lines.append(("Training", f"{steps} steps{took}{early}{rank}"))
    if card.template:
        lines.append(("Prompt template", card.template))
    if card.command:
        lines.append(("Made with", f"`{card.command}`"))
    return [(k, v) for k, v in lines if v]


def abstain_words(answer) -> tuple[str, str | None]:
    """(why it said "I don't know" in words, the numbers behind it or None)."""
    gate = getattr(answer, "gate", None)
    if gate:
        details = (f"relevance {gate['relevance']:.3f} = best similarity {gate['similarity']:.3f} + "
                   f"{gate['coverage_weight']:g} x term coverage {gate['coverage']:.3f}, below the "
                   f"threshold {gate['threshold']:.3f} (setting abstain_threshold)")
        return ("Nothing in the index matches this question closely enough to answer it. Try other "
                "words, or add the documents that cover it."), details
    reason = answer.reason or ""
    if reason == "no passage was found":
        return "The index has no passage to answer from.", None
    if reason.startswith("the model found no answer"):
        return "The passages found do not contain the answer.", None
    return (reason[:1].upper() + reason[1:] + ".") if reason else "", None


def timings_line(answer) -> str:
    """What the answer took, in seconds throughout."""
    t = answer.timings
    parts = []
    if "rewrite_ms" in t:
        parts.append(f"rewrote the follow-up in {seconds(t['rewrite_ms'])}")
    if "retrieve_ms" in t:
        parts.append(f"searched in {seconds(t['retrieve_ms'])}")
    if "generate_ms" in t:
        parts.append(describe_timings(t))
    elif "prompt_tokens" in t:
        parts.append(f"prompt {t['prompt_tokens']} tokens")
    return ", ".join(parts)


def embedder_label(name: str) -> str:
    """An embedder's name as people know it: a packaged model by its name, a directory by its
    folder name (never a site-packages path)."""
    from ragqa.indexing.embedding import PACKAGED_EMBEDDERS

    if "/" not in name and "\\" not in name:
        return name
    for packaged, (package, folder) in PACKAGED_EMBEDDERS.items():
        if package in name:
            return packaged
    return Path(name).name or name


def example_questions(documents: list[dict], n: int = 3) -> list[str]:
    """Up to ``n`` questions about documents spread over the index, one per distinct title (many
    records of one file often share its title)."""
    titles = list(dict.fromkeys(passage_text(d.get("title") or "").rstrip(".:") for d in documents))
    titles = [t for t in titles if t]
    if not titles:
        return []
    step = max(1, len(titles) // n)
    return [f"What do the documents say about {t}?" for t in titles[::step][:n]]


def passage_text(text: str) -> str:
    """A passage as people read it: no Markdown heading marks ("# Title" reads "Title")."""
    return " ".join(_HEADING.sub("", text).split())


def cite_anchor(key: str, n: int) -> str:
    return f"ragqa-src-{re.sub(r'[^A-Za-z0-9_-]', '-', key)}-{n}"


def answer_html(text: str, key: str, sources: int) -> str:
    """A model's answer for ``st.markdown(..., unsafe_allow_html=True)``: its own HTML escaped
    (Markdown kept), no LaTeX or headings, and each citation ``[n]`` of an existing source a link
    to that source (``cite_anchor``)."""
    safe = html.escape(text, quote=False).replace("$", r"\$")
    safe = re.sub(r"(?m)^(\s*)#", r"\1\\#", safe)

    def link(m: re.Match) -> str:
        n = int(m.group(1))
        if not 1 <= n <= sources:
            return m.group(0)
        return f'<a href="#{cite_anchor(key, n)}" class="ragqa-cite" title="source {n}">[{n}]</a>'

    return _CITE.sub(link, safe)
