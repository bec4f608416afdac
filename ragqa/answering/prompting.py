"""Prompt assembly: question + retrieved passages -> the exact text fed to a causal LM.

Pure functions (file I/O only in ``load_template`` / ``load_examples``); the tokenizer is passed
in and only used to count tokens and to apply its chat template. No model is loaded here.

Messages built by ``build_prompt`` (template ``t``), in this order::

    {"role": "system",    "content": t.system}                  # {abstain_text} filled in
    {"role": "user",      "content": <example prompt>}          # one pair per few-shot example
    {"role": "assistant", "content": <example answer>}
    {"role": "user",      "content": <history question>}        # last 3 (user, assistant) turns
    {"role": "assistant", "content": <history answer>}
    {"role": "user",      "content": <final user message>}

The final user message (kind "qa")::

    {context_header}
    [1] Title one
    Text of the first passage.

    [2] Title two
    Text of the second passage.

    Question: {question}
    {answer_cue}

Each passage is ``t.passage`` formatted with n (citation number from 1), title, text, doc_id,
score; trailing spaces on each line are removed (so an empty title gives a bare ``[1]``).
Passages are separated by one blank line. With no passages, ``t.no_context`` stands in their
place. An empty ``context_header`` or ``answer_cue`` drops its line.

A few-shot example's user turn is ``t.example`` up to ``{answer}`` (right-stripped); when the
example has a context and ``t.example`` does not use ``{context}``, the context is shown first as
``{context_header}\\n{context}\\n\\n``. The assistant turn is the answer (plus any template text
after ``{answer}``).

Kind "plain" (``build_plain_prompt``, e.g. summarize) has no passages; the final user message is
``t.input`` formatted with the input, then ``\\n{answer_cue}``. Examples use ``{input}`` (an alias
of ``{question}``) and ``{answer}``.

``render`` applies the tokenizer's chat template (``add_generation_prompt=True``) when it has one,
else the plain layout::

    System: {system}

    User: {user}

    Assistant: {answer}

    User: {user}

    Assistant:

Token budget: passages are added in the given order (best first) while the whole rendered prompt
stays <= ``max_prompt_tokens``, counted as ``len(tokenizer(text, add_special_tokens=False)
["input_ids"])`` on the final text. Exact duplicates (whitespace collapsed, lowercased) are
dropped, as are empty passages. When the next passage does not fit whole and at least ``MIN_CUT_ROOM`` tokens of room
remain, it is cut after the last sentence end (". ", "? ", "! " or a newline) that fits -- or,
when no sentence end fits, at the last word that fits -- and " [...]" is appended
(``truncated=True``). Every passage after it is dropped. Each passage is tokenized once for an
estimate; the full prompt is then measured a few times (probe around the estimate, then binary
search), never once per passage.
"""

from __future__ import annotations

import dataclasses
import re
import string
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragqa.errors import ConfigError
from ragqa.files import read_jsonl
from ragqa.generators.protocol import count_tokens

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
HISTORY_TURNS = 3  # chat turns kept before the question
MIN_CUT_ROOM = 64  # tokens of room needed before a passage is cut to fit rather than dropped
CUT_MARKER = " [...]"
KINDS = ("qa", "plain")

# placeholders each formatted template field may use; other fields are literal text
_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "system": ("abstain_text",),
    "passage": ("n", "title", "text", "doc_id", "score"),
    "example": ("question", "answer", "context", "input"),
    "question": ("question",),
    "input": ("input",),
}


@dataclass
class Passage:
    text: str
    title: str = ""
    doc_id: str = ""
    score: float = 0.0


@dataclass
class Example:
    """A worked example for few-shot prompts (for kind "plain", ``question`` holds the input)."""

    question: str
    answer: str
    context: str = ""


@dataclass
class Template:
    name: str
    system: str
    passage: str = "[{n}] {title}\n{text}"
    context_header: str = "Context:"
    example: str = "Question: {question}\nAnswer: {answer}"
    question: str = "Question: {question}"
    answer_cue: str = "Answer:"
    no_context: str = "(no passages)"
    kind: str = "qa"
    input: str = "{input}"
    abstain_text: str = "I don't know."
    # other phrasings of ``system`` (as FLAN words one task several ways): training samples them,
    # answering always uses ``system``
    alternates: tuple[str, ...] = ()
    # the decoding this task wants unless the repetition_penalty setting says otherwise: an
    # extractive answer copies the passage, which a penalty on the prompt's tokens works against
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        where = f"template {self.name!r}"
        if isinstance(self.alternates, str) or not all(isinstance(a, str) for a in self.alternates):
            raise ConfigError(f"{where}: field 'alternates' must be a list of strings")
        self.alternates = tuple(self.alternates)
        for a in self.alternates:
            bad = [u for u in _fields_of(a, where, "alternates") if u not in _PLACEHOLDERS["system"]]
            if bad:
                raise ConfigError(f"{where}: field 'alternates' uses unknown placeholder {{{bad[0]}}}")
        if self.repetition_penalty is not None:
            if isinstance(self.repetition_penalty, bool) or not isinstance(self.repetition_penalty, (int, float)) \
                    or not self.repetition_penalty > 0:
                raise ConfigError(f"{where}: field 'repetition_penalty' must be a number > 0 (1.0 = off)")
            self.repetition_penalty = float(self.repetition_penalty)
        for f in dataclasses.fields(self):
            if f.name in ("alternates", "repetition_penalty"):
                continue
            if not isinstance(getattr(self, f.name), str):
                raise ConfigError(f"{where}: field {f.name!r} must be a string, "
                                  f"got {type(getattr(self, f.name)).__name__}")
        if self.kind not in KINDS:
            raise ConfigError(f"{where}: field 'kind' is {self.kind!r}; use one of {', '.join(KINDS)}")
        for name, allowed in _PLACEHOLDERS.items():
            used = _fields_of(getattr(self, name), where, name)
            bad = [u for u in used if u not in allowed]
            if bad:
                raise ConfigError(f"{where}: field {name!r} uses unknown placeholder {{{bad[0]}}}; "
                                  f"allowed: {', '.join('{' + a + '}' for a in allowed)} "
                                  "(write literal braces as {{ }})")
        if _fields_of(self.example, where, "example").count("answer") != 1:
            raise ConfigError(f"{where}: field 'example' must contain {{answer}} exactly once")


@dataclass
class Prompt:
    text: str  # the final string for the model
    messages: list[dict] = field(default_factory=list)  # before the chat template
    passages: list[Passage] = field(default_factory=list)  # included, in citation order
    dropped: int = 0  # passages left out (budget or duplicates)
    tokens: int = 0  # token count of text, special tokens as the chat template writes them
    truncated: bool = False  # the last included passage (or the plain input) was cut to fit


# --------------------------------------------------------------------------- templates


def _fields_of(fmt: str, where: str, name: str) -> list[str]:
    """Placeholder names in a format string; ConfigError when it does not parse."""
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise ConfigError(f"{where}: field {name!r} is not a valid format string ({exc}); "
                          "write literal braces as {{ }}") from None
    out = []
    for _, fname, _, _ in parsed:
        if fname is None:
            continue
        if not fname.isidentifier():
            raise ConfigError(f"{where}: field {name!r} has placeholder {{{fname}}}; "
                              "use a plain name like {question}")
        out.append(fname)
    return out


def list_templates() -> list[str]:
    """Names of the built-in templates (``ragqa/answering/templates/*.toml``)."""
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.toml"))


def trained_qa_template(trained: str | None,
                        load: Callable[[str], Template] | None = None) -> str | None:
    """The template a variant answers questions with, from its card's ``template``: one name, or
    several comma-separated for a variant trained on mixed tasks (``qa,summarize``). The first
    that answers questions (kind ``qa``); None when none does (a summarisation variant), or the
    card names none. ``load`` reads a template by name (default ``load_template``; the pipeline
    passes its cache)."""
    for name in (trained or "").split(","):
        name = name.strip()
        if not name:
            continue
        try:
            if (load or load_template)(name).kind == "qa":
                return name
        except ConfigError:
            continue
    return None


def load_template(name_or_path: str | Path) -> Template:
    """A built-in template by name, or a template TOML file by path.

    The TOML holds ``Template`` fields as top-level string keys (``system`` is required; ``name``
    defaults to the file name without ``.toml``). Unknown keys are an error.
    """
    builtins = list_templates()
    name = str(name_or_path)
    if name in builtins:
        path = TEMPLATES_DIR / f"{name}.toml"
    else:
        path = Path(name_or_path).expanduser()
        looks_like_path = path.suffix == ".toml" or "/" in name or "\\" in name
        if not path.is_file():
            if looks_like_path:
                raise ConfigError(f"{path}: template file not found; give an existing .toml file "
                                  f"or a built-in template ({', '.join(builtins)})")
            raise ConfigError(f"unknown template {name!r}; use a built-in template "
                              f"({', '.join(builtins)}) or a path to a .toml file")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix the file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read template ({exc.strerror})") from None
    known = {f.name for f in dataclasses.fields(Template)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} in template; "
                          f"known keys: {', '.join(sorted(known))}")
    if "system" not in data:
        raise ConfigError(f"{path}: template needs a 'system' key (the system instruction)")
    data.setdefault("name", path.stem)
    try:
        return Template(**data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_examples(path: str | Path) -> list[Example]:
    """Few-shot examples from JSONL: one object per line with string keys ``question``,
    ``answer`` and optional ``context`` (other keys are ignored; blank lines are skipped)."""
    path = Path(path)
    out = []
    for lineno, obj in read_jsonl(path, "examples file", missing=ConfigError):
        where = f"{path}:{lineno}"
        for key in ("question", "answer"):
            if not isinstance(obj.get(key), str):
                raise ConfigError(f"{where}: {key!r} must be present and a string")
        context = obj.get("context", "")
        if not isinstance(context, str):
            raise ConfigError(f"{where}: 'context' must be a string")
        out.append(Example(question=obj["question"], answer=obj["answer"], context=context))
    return out


# --------------------------------------------------------------------------- examples


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def select_examples(question: str, examples: Sequence[Example], k: int,
                    embed: Callable[[list[str]], np.ndarray] | None = None) -> list[Example]:
    """The ``k`` examples most similar to ``question``, most similar first (ties keep input order).

    Similarity: cosine of ``embed([question, *example questions])`` rows when ``embed`` is given,
    else Jaccard overlap of lowercased words.
    """
    if k < 0:
        raise ConfigError(f"number of few-shot examples k={k} must be >= 0")
    if k == 0 or not examples:
        return []
    if embed is not None:
        vecs = np.asarray(embed([question] + [e.question for e in examples]), dtype=np.float64)
        if vecs.ndim != 2 or vecs.shape[0] != len(examples) + 1:
            raise ValueError(f"embed returned shape {vecs.shape}, expected ({len(examples) + 1}, dim)")
        norms = np.linalg.norm(vecs, axis=1)
        norms[norms == 0] = 1.0
        vecs = vecs / norms[:, None]
        scores = (vecs[1:] @ vecs[0]).tolist()
    else:
        q = _words(question)
        scores = []
        for e in examples:
            w = _words(e.question)
            union = q | w
            scores.append(len(q & w) / len(union) if union else 0.0)
    order = sorted(range(len(examples)), key=lambda i: (-scores[i], i))
    return [examples[i] for i in order[:k]]


# --------------------------------------------------------------------------- rendering


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) and hasattr(tokenizer, "apply_chat_template")


def render(messages: list[dict], tokenizer: Any) -> str:
    """The model input for ``messages``: the tokenizer's chat template with a generation prompt,
    or (no chat template) ``System: ...\\n\\nUser: ...\\n\\nAssistant: ...\\n\\nAssistant:``."""
    if _has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    labels = {"system": "System", "user": "User", "assistant": "Assistant"}
    parts = [f"{labels.get(m['role'], str(m['role']).capitalize())}: {m['content']}" for m in messages]
    parts.append("Assistant:")
    return "\n\n".join(parts)


def _system(template: Template) -> dict:
    return {"role": "system", "content": template.system.format(abstain_text=template.abstain_text)}


def _example_messages(template: Template, examples: Sequence[Example]) -> list[dict]:
    before, _, after = template.example.partition("{answer}")
    uses_context = "context" in _fields_of(before, f"template {template.name!r}", "example")
    out = []
    for ex in examples:
        values = {"question": ex.question, "input": ex.question, "context": ex.context}
        user = before.format(**values).rstrip()
        if ex.context and not uses_context:
            header = f"{template.context_header}\n" if template.context_header else ""
            user = f"{header}{ex.context.strip()}\n\n{user}"
        assistant = (ex.answer + after.format(**values)).strip()
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return out


def _history_messages(history: Sequence[tuple[str, str]]) -> list[dict]:
    out = []
    for user, assistant in list(history)[-HISTORY_TURNS:]:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return out


_HSPACE = re.compile(r"[ \t\f\v\r]+")
_BLANKS = re.compile(r"\n{3,}")


def lean_text(text: str) -> str:
    """A passage as the model reads it: each run of spaces and tabs one space, lines stripped, at
    most one blank line in a row. Man pages, PDFs and HTML keep their layout in the index (and in
    the sources shown); in the prompt the layout cost tokens (a man page's options: 15% of the
    prompt) and no answer on development data depended on it."""
    lines = [_HSPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip("\n")


def _passage_block(template: Template, n: int, p: Passage, text: str | None = None) -> str:
    s = template.passage.format(n=n, title=p.title.strip(), text=lean_text(p.text if text is None else text),
                                doc_id=p.doc_id, score=p.score)
    return "\n".join(line.rstrip() for line in s.split("\n")).strip("\n")


def _qa_user(template: Template, question: str, blocks: list[str]) -> str:
    context = "\n\n".join(blocks) if blocks else template.no_context
    if template.context_header:
        context = f"{template.context_header}\n{context}"
    user = f"{context}\n\n{template.question.format(question=question.strip())}"
    if template.answer_cue:
        user += f"\n{template.answer_cue}"
    return user


def _cut_points(text: str) -> tuple[list[int], list[int]]:
    """Candidate cut ends in the stripped ``text``, ascending: after each sentence end (". ",
    "? ", "! ", optionally followed by a closing quote/bracket, or before a newline) and, as a
    fallback, after each word. An end p keeps ``text[:p]``; 0 and len(text) are excluded."""
    n = len(text)
    sentences = {m.end() for m in re.finditer(r"[.?!][\"')\]]*(?=\s)", text)}
    sentences |= {m.start() for m in re.finditer(r"[ \t\r]*\n", text)}
    words = {m.start() for m in re.finditer(r"\s+", text)}
    return (sorted(p for p in sentences if 0 < p < n), sorted(p for p in words if 0 < p < n))


def _largest_fitting(n: int, fits: Callable[[int], bool], guess: int) -> int:
    """Largest k in [0, n] with fits(k) (fits is monotone, fits(0) is taken as True). Probes
    ``guess`` and a neighbour first, then binary-searches what is left."""
    lo, hi = 0, n
    g = min(max(guess, 0), n)
    if g > 0:
        if fits(g):
            lo = g
            if g < hi:
                if fits(g + 1):
                    lo = g + 1
                else:
                    hi = g
        else:
            hi = g - 1
            if hi > lo:
                if fits(hi):
                    lo = hi
                else:
                    hi -= 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _cut_to_fit(text: str, fits_text: Callable[[str], bool]) -> str | None:
    """``text`` cut after the last sentence end (else the last word) such that
    ``fits_text(cut + CUT_MARKER)``; None when no cut fits."""
    for points in _cut_points(text):
        if not points:
            continue
        def fits(i: int) -> bool:
            return fits_text(text[:points[i - 1]].rstrip() + CUT_MARKER)
        best = _largest_fitting(len(points), fits, guess=0)
        if best > 0:
            return text[:points[best - 1]].rstrip() + CUT_MARKER
    return None


def _check_budget(max_prompt_tokens: int) -> None:
    if not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 1:
        raise ConfigError(f"max_prompt_tokens={max_prompt_tokens!r} must be a positive integer")


def _normalise(text: str) -> str:
    return " ".join(text.split()).lower()


# --------------------------------------------------------------------------- prompts


def build_prompt(question: str, passages: Sequence[Passage], template: Template, tokenizer: Any, *,
                 max_prompt_tokens: int, examples: Sequence[Example] = (),
                 history: Sequence[tuple[str, str]] = ()) -> Prompt:
    """The prompt for ``question`` with as many of ``passages`` (best first) as fit the budget.

    Raises ConfigError when the template is not kind "qa" or when even the prompt without
    passages is longer than ``max_prompt_tokens``.
    """
    if template.kind != "qa":
        raise ConfigError(f"template {template.name!r} is kind {template.kind!r}; "
                          "use build_plain_prompt for it or pick a qa template")
    _check_budget(max_prompt_tokens)
    head = [_system(template)] + _example_messages(template, examples) + _history_messages(history)

    def assemble(blocks: list[str]) -> tuple[list[dict], str]:
        msgs = head + [{"role": "user", "content": _qa_user(template, question, blocks)}]
        return msgs, render(msgs, tokenizer)

    measured: dict[tuple, int] = {}

    def measure(blocks: list[str]) -> int:
        key = tuple(blocks)
        if key not in measured:
            measured[key] = count_tokens(tokenizer, assemble(blocks)[1])
        return measured[key]

    base = measure([])
    if base > max_prompt_tokens:
        raise ConfigError(f"question and template {template.name!r} take {base} tokens, more than "
                          f"max_prompt_tokens={max_prompt_tokens}; shorten the question or raise "
                          "max_prompt_tokens")

    # drop exact duplicates, keep order
    seen: set[str] = set()
    unique: list[Passage] = []
    for p in passages:
        key = _normalise(p.text)
        if key and key not in seen:
            seen.add(key)
            unique.append(p)

    # estimate: each passage tokenized once, stopping once the estimate is over the budget
    blocks = [_passage_block(template, i + 1, p) for i, p in enumerate(unique)]
    est = base - count_tokens(tokenizer, template.no_context)
    guess = 0
    for b in blocks:
        est += count_tokens(tokenizer, b + "\n\n")
        if est > max_prompt_tokens:
            break
        guess += 1

    k = _largest_fitting(len(blocks), lambda j: measure(blocks[:j]) <= max_prompt_tokens, guess)
    included = list(unique[:k])
    chosen = blocks[:k]
    truncated = False
    if k < len(unique) and max_prompt_tokens - measure(chosen) >= MIN_CUT_ROOM:
        nxt = unique[k]
        text = nxt.text.strip()
        cut = _cut_to_fit(text, lambda t: measure(chosen + [_passage_block(template, k + 1, nxt, t)])
                          <= max_prompt_tokens)
        if cut is not None:
            chosen = chosen + [_passage_block(template, k + 1, nxt, cut)]
            included.append(dataclasses.replace(nxt, text=cut))
            truncated = True
    messages, text = assemble(chosen)
    return Prompt(text=text, messages=messages, passages=included, dropped=len(passages) - len(included),
                  tokens=measure(chosen), truncated=truncated)


def build_plain_prompt(input_text: str, template: Template, tokenizer: Any, *, max_prompt_tokens: int,
                       examples: Sequence[Example] = ()) -> Prompt:
    """The prompt for a kind "plain" template (e.g. summarize). An input that does not fit is cut
    after the last sentence end (or word) that fits, followed by " [...]" (``truncated=True``)."""
    if template.kind != "plain":
        raise ConfigError(f"template {template.name!r} is kind {template.kind!r}; "
                          "use build_prompt for it or pick a plain template such as 'summarize'")
    _check_budget(max_prompt_tokens)
    head = [_system(template)] + _example_messages(template, examples)

    def assemble(text: str) -> tuple[list[dict], str]:
        user = template.input.format(input=text)
        if template.answer_cue:
            user += f"\n{template.answer_cue}"
        msgs = head + [{"role": "user", "content": user}]
        return msgs, render(msgs, tokenizer)

    def measure(text: str) -> int:
        return count_tokens(tokenizer, assemble(text)[1])

    text = input_text.strip()
    tokens = measure(text)
    truncated = False
    if tokens > max_prompt_tokens:
        cut = _cut_to_fit(text, lambda t: measure(t) <= max_prompt_tokens)
        if cut is None:
            need = measure(CUT_MARKER.strip())
            raise ConfigError(f"template {template.name!r} needs more than {need} tokens even with the "
                              f"input cut, more than max_prompt_tokens={max_prompt_tokens}; raise "
                              "max_prompt_tokens or use fewer examples")
        text, truncated = cut, True
        tokens = measure(text)
    messages, rendered = assemble(text)
    return Prompt(text=rendered, messages=messages, passages=[], dropped=0, tokens=tokens,
                  truncated=truncated)


def rewrite_messages(question: str, history: Sequence[tuple[str, str]]) -> list[dict]:
    """Step 1 of the two-step chain: messages asking the model to turn a follow-up question into
    one standalone question, using the last 3 (user, assistant) turns. The model should output
    only the question."""
    turns = list(history)[-HISTORY_TURNS:]
    lines = []
    for user, assistant in turns:
        lines.append(f"User: {user.strip()}")
        lines.append(f"Assistant: {assistant.strip()}")
    chat = "\n".join(lines) if lines else "(no earlier messages)"
    system = ("Rewrite the follow-up question as one standalone question that can be understood "
              "without the chat history. Replace words like \"it\", \"he\" or \"that\" with what "
              "they refer to in the history. Do not answer the question. Output only the question.")
    user = f"Chat history:\n{chat}\n\nFollow-up question: {question.strip()}\nStandalone question:"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
