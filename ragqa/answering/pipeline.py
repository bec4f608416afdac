"""The facade: ``RagQA.open(index_dir).ask(question) -> Answer``.

question -> (optional: rewrite a follow-up into a standalone question using the chat history)
         -> retrieve passages -> "I don't know" without generating when nothing is relevant
         -> prompt under a token budget with numbered passages -> generate with the chosen
            variant -> Answer with its sources and timings.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ragqa.config import Settings
from ragqa.indexing.index import Index
from ragqa.indexing.retrieval import Retrieval, dataclass_json
from ragqa.answering.prompting import (Passage, Prompt, build_prompt, load_examples, load_template, render,
                             rewrite_messages, select_examples, trained_qa_template)

ABSTAIN_TEXT = "I don't know."
_ABSTAIN_RE = re.compile(r"^\W*(i\s+(do\s+not|don't|don’t)\s+know|i\s+cannot\s+answer|unknown)\b", re.I)
_CITE_RE = re.compile(r"\[(\d{1,2})\]")  # a citation marker: [1] .. [99], the passage numbers of a prompt
_CITE_STRIP_RE = re.compile(r"\s*\[\d{1,2}\]")


@dataclass
class Source:
    n: int  # the citation number used in the prompt and the answer: [n]
    doc_id: str
    title: str
    text: str
    score: float
    chunk_id: int
    source: str = ""
    page: int | None = None
    cited: bool = False  # the answer refers to it

    def to_json(self) -> dict:
        return dataclass_json(self)


@dataclass
class Answer:
    question: str
    text: str
    sources: list[Source]
    variant: str
    abstained: bool = False
    reason: str | None = None
    standalone_question: str | None = None  # the rewritten follow-up, when history was used
    auto_cited: bool = False  # the model cited nothing; ragqa added the citation of the passage used
    # retrieve_ms, rewrite_ms, then generators.engine.stage_timings: first_token_ms (reading the
    # prompt), decode_ms, prompt_tokens, new_tokens, prompt_tokens_per_s, decode_tokens_per_s, ...
    timings: dict = field(default_factory=dict)
    prompt: str | None = None  # the exact text the model was given (None when it was not asked)
    template: str | None = None  # the template the prompt was built with
    # why the relevance gate said "I don't know": relevance, similarity, coverage, weight, threshold
    gate: dict | None = None

    def to_json(self, prompt: bool = False) -> dict:
        """The answer as JSON; ``prompt=True`` adds the exact model input as ``"prompt"``."""
        return {"question": self.question, "answer": self.text, "abstained": self.abstained,
                "reason": self.reason, "variant": self.variant, "auto_cited": self.auto_cited,
                "sources": [s.to_json() for s in self.sources], "timings": self.timings,
                **({"standalone_question": self.standalone_question} if self.standalone_question else {}),
                **({"gate": self.gate} if self.gate else {}),
                **({"prompt": self.prompt, "template": self.template} if prompt else {})}


@dataclass
class Status:
    """One stage of an answer as it starts, for whoever waits on it (``ask --stream``, the UI):
    ``stage`` is "rewrite", "retrieve" or "read" (the model reads the prompt: nothing is written
    until that ends); ``prompt`` and ``answer`` (the shell: sources, no text) are set from "read"
    on. ``str(status)`` is the message."""

    stage: str
    message: str
    prompt: Prompt | None = None
    answer: Answer | None = None  # from "read" on: the answer's shell (its sources, no text yet)

    def __str__(self) -> str:
        return self.message


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an the of in on at to for by with and or is are was were be been it its this that as "
                  "from which who what when where how did does do has have had not no".split())


def content_words(text: str) -> set[str]:
    """The lower-cased words of ``text`` without stopwords: what ``attribute`` matches answers to
    passages by (and evaluation's faithfulness counts)."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def attribute(answer: str, passages: Sequence[str], min_overlap: float = 0.5) -> int | None:
    """The citation number (from 1) of the passage that shares most of the answer's content words,
    when it shares at least ``min_overlap`` of them; None otherwise.

    >>> attribute("Armstrong and Aldrin landed in 1969", ["Gemini flights", "Armstrong and Aldrin landed on July 20, 1969"])
    2
    """
    words = content_words(answer)
    if not words:
        return None
    best, best_n = 0.0, None
    for n, text in enumerate(passages, 1):
        share = len(words & content_words(text)) / len(words)
        if share > best:
            best, best_n = share, n
    return best_n if best >= min_overlap else None


def is_abstention(text: str) -> bool:
    return bool(_ABSTAIN_RE.match(text.strip()))


def cited_numbers(text: str) -> set[int]:
    return {int(n) for n in _CITE_RE.findall(text)}


def strip_citations(text: str) -> str:
    """``text`` without its citation markers and the space before each ("Paris [2]." -> "Paris."):
    an answer as it is scored (SQuAD normalisation drops the brackets but not the digits)."""
    return _CITE_STRIP_RE.sub("", text).strip()


REWRITE_MAX_TOKENS = 48  # a standalone question; the rewrite stops at its first line anyway
# words by which a follow-up leans on the conversation ("When was it finished?", "What about him?")
_ANAPHORA = frozenset("it its itself he him his she her hers they them their theirs this that these those "
                      "there then one ones such same former latter also too else other another about".split())


_LEADS_ON = re.compile(r"^\W*(and|but|so|also|then|what about|how about)\b", re.I)
_TOKEN = re.compile(r"[A-Za-z0-9][\w'-]*")


def needs_rewrite(question: str) -> bool:
    """Whether a follow-up needs the history to be understood: it starts by leaning on what was
    said ("And ...", "What about ..."), has fewer than three content words ("Who was on the
    crew?"), or has a word that points back (it, they, that, there, ...) while naming nothing
    itself (no capitalised name after its first word, no number: "Which team had the best season
    in their history?" stands alone, its "their" points inside it). A question that stands alone
    is searched as it is, with no generation before retrieval. Measured by
    scripts/measure_rewrite_test.py (docs/ui.md): 35 of 40 written follow-ups caught, 9.4% of
    SQuAD's standalone development questions rewritten for nothing (the earlier test, any
    pointing word: 36 of 40, and 25.7%)."""
    if _LEADS_ON.search(question):
        return True
    if len(content_words(question)) < 3:
        return True
    words = set(re.findall(r"[a-z']+", question.lower()))
    if not words & _ANAPHORA:
        return False
    tokens = _TOKEN.findall(question)
    names = [t for i, t in enumerate(tokens) if (i and t[0].isupper()) or t[0].isdigit()]
    return not names


def usable_rewrite(question: str, rewritten: str) -> bool:
    """A rewrite replaces the user's question only when it is a question (ends with "?") and not
    far longer than it (at most twice its words plus 12): otherwise the model answered, explained
    or rambled, and the user's own words search better."""
    if not rewritten.endswith("?"):
        return False
    return len(rewritten.split()) <= 2 * len(question.split()) + 12


def make_generator(settings: Settings):
    """The Generator the settings describe (lazy: nothing loads until the first use); model
    "fake" is the deterministic test generator (ragqa.testing); "openai:URL" an OpenAI-compatible
    server such as vLLM (ragqa.generators.openai_client)."""
    if settings.model == "fake":
        from ragqa.testing import FakeGenerator

        return FakeGenerator()
    if settings.model.startswith("openai:"):
        from ragqa.generators.openai_client import OpenAIGenerator

        tokenizer = settings.generator_tokenizer
        if tokenizer == "fake":  # the tests' whitespace tokenizer
            from ragqa.testing import WordTokenizer

            tokenizer = WordTokenizer()
        return OpenAIGenerator(settings.model[len("openai:"):], tokenizer=tokenizer,
                               cache_dir=settings.cache_dir, base_model=settings.generator_base_model or None,
                               timeout=float(settings.request_timeout))
    from ragqa.generators import Generator

    return Generator(settings.model, cache_dir=settings.cache_dir, variants_dir=settings.variants_dir,
                     dtype=settings.gen_dtype, threads=settings.threads, decode_int8=settings.decode_int8,
                     decode_int4=settings.decode_int4, decode_dynamic_int8=settings.decode_dynamic_int8,
                     prompt_dynamic_int8=settings.prompt_dynamic_int8,
                     decode_kernel=settings.decode_kernel, fused_decode=settings.fused_decode,
                     prompt_cache=settings.prompt_cache,
                     system_cache=settings.system_cache)


def model_for_variants(settings: Settings, variants: Sequence[str]) -> Settings:
    """``settings`` with the model switched to the base the first non-base variant was trained on,
    when its card names another base than the configured model (so ``--variant squad-lora``
    works without also naming ``--model``). Unchanged when there is nothing to switch to."""
    from ragqa.errors import ModelError
    from ragqa.generators.models import BASE_MODELS
    from ragqa.generators.registry import Card, find_variant_dir

    for name in variants:
        if name == "base":
            continue
        try:
            base = Card.load(find_variant_dir(name, settings.variants_dir)).base_model
        except ModelError:
            return settings
        if base and base != settings.model and (base in BASE_MODELS or Path(base).is_dir()):
            return settings.replace(model=base)
        return settings
    return settings


def generation_settings(settings: Settings, template=None, **overrides):
    """GenerationSettings from the config, with per-call overrides (None values ignored). The
    repetition penalty: the setting when set, else the template's (a ``Template``), else 1.1."""
    from ragqa.generators import GenerationSettings

    penalty = settings.repetition_penalty
    if penalty is None:
        penalty = getattr(template, "repetition_penalty", None)
    values = dict(max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                  temperature=settings.temperature,
                  repetition_penalty=GenerationSettings.repetition_penalty if penalty is None else penalty)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GenerationSettings(**values)


class RagQA:
    """Retrieval + one generator (one base model in memory, any number of variants)."""

    def __init__(self, index: Index, generator, settings: Settings):
        self.index = index
        self.generator = generator
        self.settings = settings
        self._template_cache: dict = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, index_dir: str | Path, settings: Settings | None = None, *, model: str | None = None,
             generator=None) -> RagQA:
        """Open an index and (lazily) its generator. ``model``: a packaged model name, a local
        transformers directory or a hub id; ``generator``: any object with the Generator interface
        (tests pass a fake)."""
        settings = settings or Settings.load()
        if model:
            settings = settings.replace(model=model)
        index = Index.open(index_dir, settings)
        return cls(index, generator or make_generator(settings), settings)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> RagQA:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def variants(self) -> list[dict]:
        return self.generator.variants()

    def _examples(self, question: str):
        """The few-shot examples for this question: the `shots` most similar by the index's embedder."""
        s = self.settings
        if not s.shots or not s.examples_file:
            return []
        if "_examples" not in self._template_cache:
            self._template_cache["_examples"] = load_examples(s.examples_file)
        return select_examples(question, self._template_cache["_examples"], s.shots, embed=self.index.embedder.encode)

    def template_for(self, variant: str, template: str | None = None) -> str:
        """The template a call uses: the one asked for, else the one the variant was trained with
        (its card's, so a tuned variant reads the prompt it learned), else the configured one."""
        if template:
            return template
        if variant != "base":
            trained = getattr(self.generator, "variant_template", lambda name: None)(variant)
            trained = trained_qa_template(trained, self._template)  # may name a summarisation one, or several
            if trained:
                return trained
        return self.settings.template

    def _template(self, name: str | None):
        name = name or self.settings.template
        if name not in self._template_cache:
            self._template_cache[name] = load_template(name)
        return self._template_cache[name]

    def generation_for(self, template: str | None = None, **overrides):
        """The GenerationSettings of a call with ``template`` (a name; its decoding preferences) and
        ``overrides`` (None values ignored)."""
        return generation_settings(self.settings, self._template(template), **overrides)

    # --- the steps ---------------------------------------------------------------------
    def standalone(self, question: str, history: Sequence[tuple[str, str]], variant: str = "base") -> str:
        """Step 1 of the chain: rewrite a follow-up into a standalone question. No rewrite without
        history or for a question that stands alone (``needs_rewrite``); the rewrite stops at its
        first line, and the user's own question is kept when the rewrite is no question or far
        longer (``usable_rewrite``: a small model sometimes answers instead of rewriting)."""
        if not history or not needs_rewrite(question):
            return question
        return self._rewrite(question, history)

    def _rewrite(self, question: str, history: Sequence[tuple[str, str]]) -> str:
        prompt = render(rewrite_messages(question, history), self.generator.tokenizer)
        pieces = self.generator.stream(prompt, variant="base",
                                       settings=self.generation_for(max_new_tokens=REWRITE_MAX_TOKENS, do_sample=False))
        text = ""
        try:
            for piece in pieces:  # closing the stream stops the generation at the next token
                text += piece
                if "\n" in text.strip():
                    break
        finally:
            pieces.close()
        rewritten = text.strip().splitlines()[0].strip() if text.strip() else ""
        return rewritten if usable_rewrite(question, rewritten) else question

    def check_variant(self, variant: str) -> None:
        """ModelError for a variant the generator does not know, before anything slow happens
        (retrieval, loading the model)."""
        check = getattr(self.generator, "check_variant", None)
        if check is not None:
            check(variant)

    def prepare(self, question: str, *, k: int | None = None, mode: str | None = None,
                history: Sequence[tuple[str, str]] = (), template: str | None = None,
                variant: str = "base", status: Callable[[Status], None] | None = None
                ) -> tuple[Answer, Prompt | None]:
        """Everything before generation: an Answer shell (abstained when nothing is relevant) and
        the prompt to generate from (None when abstained). ``status`` hears each stage as it
        starts: a ``Status`` ("retrieving passages", "reading 4 passages, 961 tokens", ...)."""
        self.check_variant(variant)
        template = self.template_for(variant, template)
        status = status or (lambda message: None)
        timings: dict = {}
        rewriting = bool(history) and needs_rewrite(question)
        if rewriting:
            status(Status("rewrite", "rewriting the follow-up into a standalone question"))
        standalone = question
        if rewriting:
            t0 = time.perf_counter()
            standalone = self._rewrite(question, history)
            timings["rewrite_ms"] = round(1000 * (time.perf_counter() - t0), 1)
        t1 = time.perf_counter()
        status(Status("retrieve", "retrieving passages"))
        retrieval = self.index.retrieve_batch([standalone], k=k or self.settings.top_k, mode=mode,
                                             coverage=True)[0]
        timings["retrieve_ms"] = round(1000 * (time.perf_counter() - t1), 1)
        answer = Answer(question=question, text="", sources=[], variant=variant, timings=timings,
                        standalone_question=standalone if standalone != question else None, template=template)
        hits = retrieval.hits
        relevance = self.relevance(retrieval)
        if not hits or (relevance is not None and relevance < self.settings.abstain_threshold):
            answer.text = ABSTAIN_TEXT
            answer.abstained = True
            w = self.settings.abstain_coverage_weight
            answer.reason = ("no passage was found" if not hits else
                             f"nothing relevant found (relevance {relevance:.3f} = best similarity "
                             f"{retrieval.top_similarity:.3f} + {w:g} x term coverage {retrieval.coverage:.3f}"
                             f" < threshold {self.settings.abstain_threshold:.3f})")
            if hits:
                answer.gate = {"relevance": round(relevance, 4), "similarity": round(retrieval.top_similarity, 4),
                               "coverage": round(retrieval.coverage, 4), "coverage_weight": w,
                               "threshold": self.settings.abstain_threshold}
            return answer, None
        passages = [Passage(text=h.text, title=h.title, doc_id=h.doc_id, score=h.score) for h in hits]
        prompt = self.prompt_for(standalone, passages, template=template, history=history)
        by_text = {id(p): h for p, h in zip(passages, hits)}
        for n, p in enumerate(prompt.passages, 1):
            h = by_text.get(id(p)) or next((h for h in hits if h.doc_id == p.doc_id), hits[0])
            answer.sources.append(Source(n=n, doc_id=h.doc_id, title=h.title, text=p.text, score=h.score,
                                         chunk_id=h.chunk_id, source=h.source, page=h.page))
        timings["prompt_tokens"] = prompt.tokens
        answer.prompt = prompt.text
        n = len(prompt.passages)
        status(Status("read", f"reading {n} passage{'s' if n != 1 else ''}, {prompt.tokens} tokens",
                      prompt, answer))
        return answer, prompt

    def shell_for(self, question: str, passages: Sequence[Passage], *, template: str | None = None,
                  variant: str = "base") -> tuple[Answer, Prompt]:
        """``prepare`` over given passages instead of retrieved ones (no gate): what
        ``eval qa --gold-context`` answers from."""
        prompt = self.prompt_for(question, passages, template=template)
        sources = [Source(n=n, doc_id=p.doc_id, title=p.title, text=p.text, score=p.score, chunk_id=-1)
                   for n, p in enumerate(prompt.passages, 1)]
        return Answer(question=question, text="", sources=sources, variant=variant, template=template,
                      timings={"prompt_tokens": prompt.tokens}, prompt=prompt.text), prompt

    def relevance(self, retrieval: Retrieval) -> float | None:
        """How relevant the retrieved passages look: best dense similarity + abstain_coverage_weight x
        term coverage (None without dense similarities, i.e. in bm25 mode: no gate)."""
        if retrieval.top_similarity is None:
            return None
        return retrieval.top_similarity + self.settings.abstain_coverage_weight * retrieval.coverage

    def prompt_for(self, question: str, passages: Sequence[Passage], *, template: str | None = None,
                   history: Sequence[tuple[str, str]] = ()) -> Prompt:
        """The prompt for ``question`` over the given passages (best first) under the token budget."""
        return build_prompt(question, passages, self._template(template), self.generator.tokenizer,
                            max_prompt_tokens=min(self.settings.max_prompt_tokens,
                                                  self.generator.context_length - self.settings.max_new_tokens),
                            history=history, examples=self._examples(question))

    def finish(self, answer: Answer, text: str, result) -> Answer:
        """The last step: the model's text as the user gets it (citations checked, one added when
        the model cited nothing, abstention recognised) with the generation's timings."""
        answer.text = text.strip()
        cited = cited_numbers(answer.text)
        if not cited and answer.sources and not is_abstention(answer.text):
            # small models often answer from a passage without citing it: cite the passage the
            # answer's words come from (flagged, so a caller can tell model and ragqa citations apart)
            n = attribute(answer.text, [s.text for s in answer.sources])
            if n is not None:
                answer.text = f"{answer.text} [{n}]"
                answer.auto_cited = True
                cited = {n}
        for s in answer.sources:
            s.cited = s.n in cited
        if is_abstention(answer.text):
            answer.abstained = True
            answer.reason = "the model found no answer in the passages"
        if result is not None:
            answer.timings.update(result.timings())
            if getattr(result, "switch_ms", None) is not None:  # activating the variant's adapter
                answer.timings["switch_ms"] = round(float(result.switch_ms), 3)
        return answer

    def complete(self, answer: Answer, prompt: Prompt | None, variant: str | None = None,
                 **generation) -> Answer:
        """The rest of ``ask`` after ``prepare`` (or ``shell_for``): generate from ``prompt`` with
        ``variant`` (default: the answer's) and ``finish``. A shell without a prompt (it abstained)
        is returned as it is. ``answer`` is filled in: pass a copy to complete one shell for several
        variants."""
        if variant is not None:
            answer.variant = variant
        if prompt is None:
            return answer
        result = self.generator.generate(prompt.text, variant=answer.variant,
                                         settings=self.generation_for(answer.template, **generation))
        return self.finish(answer, result.text, result)

    # --- asking ------------------------------------------------------------------------
    def ask(self, question: str, variant: str = "base", *, k: int | None = None, mode: str | None = None,
            history: Sequence[tuple[str, str]] = (), template: str | None = None,
            status: Callable[[Status], None] | None = None, **generation) -> Answer:
        """The answer to ``question`` from the index; ``status`` hears each stage as it starts."""
        answer, prompt = self.prepare(question, k=k, mode=mode, history=history, template=template,
                                      variant=variant, status=status)
        return self.complete(answer, prompt, **generation)

    def stream(self, question: str, variant: str = "base", *, k: int | None = None, mode: str | None = None,
               history: Sequence[tuple[str, str]] = (), template: str | None = None,
               status: Callable[[Status], None] | None = None, stop: Sequence[str] = (),
               **generation) -> Iterator[str | Answer]:
        """Yields text pieces as they are generated, then the finished Answer (last item). The
        answer ends before the first ``stop`` string (the generation stops there). Closing the
        stream early stops the generation at its next token."""
        from ragqa.generators.stopping import cut_stream

        answer, prompt = self.prepare(question, k=k, mode=mode, history=history, template=template,
                                      variant=variant, status=status)
        if prompt is None:
            yield answer.text
            yield answer
            return
        t0 = time.perf_counter()
        pieces = []
        first = None
        pieces_iter = cut_stream(self.generator.stream(prompt.text, variant=variant,
                                                       settings=self.generation_for(answer.template, **generation)),
                                 stop)
        result = None
        try:
            while True:
                try:
                    piece = next(pieces_iter)
                except StopIteration as end:  # the Generator returns its GenerationResult
                    result = end.value.result if hasattr(end.value.result, "timings") else None
                    break
                if first is None:
                    first = time.perf_counter()
                pieces.append(piece)
                yield piece
        finally:
            pieces_iter.close()  # a consumer that stops early stops the generation
        total = time.perf_counter() - t0
        answer = self.finish(answer, "".join(pieces), result)
        if result is None:  # cut by a stop string, or a generator that returns nothing (a fake, a
            # remote server): time it here
            from ragqa.generators.engine import stage_timings

            from ragqa.generators.protocol import count_tokens

            new_tokens = count_tokens(self.generator.tokenizer, "".join(pieces))
            answer.timings.update(stage_timings(prompt.tokens, new_tokens, 1000 * total,
                                                1000 * ((first or time.perf_counter()) - t0)))
        yield answer
