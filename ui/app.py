"""ragqa's Streamlit UI: chat with your documents.

Started by ``ragqa ui [--index DIR] [--port N]`` (``ragqa.apps.ui_launch``), or directly with
``streamlit run ui/app.py -- --index DIR``. The index may also come from env ``RAGQA_UI_INDEX``
or the page's ``?index=`` (with ``&model=`` and ``&variant=``: a reload keeps them); every index
under ``indexes/`` (env ``RAGQA_UI_INDEXES``) is offered too. Settings come from
``Settings.load()`` (ragqa.toml, ``RAGQA_*``), e.g. ``RAGQA_MODEL=smollm2-135m-instruct``.

Only presentation lives here; answering, indexing uploads and recording feedback are library
calls (``RagQA``, ``ragqa.apps.uploads``, ``ragqa.apps.feedback``), the words shown are
``ragqa.apps.ui_text``. One generator (one base model in memory, every variant) is shared by all
sessions through ``st.cache_resource``.

An answer is written by a worker thread while the script shows its stage and the seconds passed
(``Job``, kept in the session, so a rerun shows it again where it is); the chat box is disabled
meanwhile, and Stop ends the generation at its next token: the partial answer is kept, marked as
stopped.
"""

from __future__ import annotations

import argparse
import html
import os
import queue
import re
import sys
import threading
import time
from pathlib import Path

import streamlit as st

from ragqa.config import RETRIEVAL_MODES, Settings
from ragqa.errors import EmbedderMismatch, RagqaError
from ragqa.apps import ui_text
from ragqa.apps.feedback import feedback_entry, record_feedback
from ragqa.answering.pipeline import ABSTAIN_TEXT, Answer, RagQA, make_generator
from ragqa.indexing.storage import IndexDir
from ragqa.apps.uploads import DEFAULT_MAX_MB, UPLOAD_SUFFIXES, add_uploads

HISTORY_TURNS = 4  # previous turns given to the pipeline to rewrite a follow-up
TICK_S = 0.25  # how often the live status is redrawn while an answer is written
SPINNER = "◐◓◑◒"


# ------------------------------------------------------------------------------------ resources

def _given_index() -> str | None:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--index")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.index or os.environ.get("RAGQA_UI_INDEX") or None


def _index_choices(given: str | None) -> list[str]:
    """The given index first, then every index under indexes/ (folders holding a CURRENT file)."""
    out: list[str] = []
    if given:
        out.append(str(Path(given).resolve()))
    root = Path(os.environ.get("RAGQA_UI_INDEXES", "indexes"))
    if root.is_dir():
        for sub in sorted(root.iterdir()):
            if IndexDir(sub).exists() and str(sub.resolve()) not in out:
                out.append(str(sub.resolve()))
    return out


def _shown_path(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _version(index_dir: str) -> str:
    """The live version's name (the cache key of the opened index); "" when it cannot be read,
    and then opening the index says what is wrong."""
    try:
        return IndexDir(index_dir).current().name
    except RagqaError:
        return ""


@st.cache_resource(show_spinner=False)
def _generator(key: str, _settings: Settings):
    """One generator per model for the whole server: one base model in memory for all variants
    and sessions (it loads lazily, on the first answer)."""
    return make_generator(_settings)


@st.cache_resource(show_spinner=False)
def _embedders(index_dir: str) -> dict:
    """The index's embedder, kept across the index's versions (an upload makes a new version)."""
    return {}


@st.cache_resource(show_spinner=False, max_entries=6)
def _pipeline(index_dir: str, version: str, key: str, _settings: Settings) -> RagQA:
    """The pipeline over one version of an index (a new version after an upload opens anew)."""
    from ragqa.indexing.index import Index

    held = _embedders(index_dir)
    index = None
    if "embedder" in held:
        try:
            index = Index.open(index_dir, _settings, embedder=held["embedder"])
        except EmbedderMismatch:  # rebuilt with another embedder
            index = None
    if index is None:
        index = Index.open(index_dir, _settings)
    held["embedder"] = index.embedder
    generator = _generator(_generator_key(_settings), _settings)
    return RagQA(index, generator, _settings)


def _model_choices(configured: str) -> list[str]:
    """The configured model first, then every other packaged model that is installed."""
    if configured == "fake":
        return [configured]
    from ragqa.generators.models import BASE_MODELS, is_available

    return [configured] + [m for m in BASE_MODELS if m != configured and is_available(m)]


def _generator_key(s: Settings) -> str:
    return repr((s.model, str(s.variants_dir), str(s.cache_dir), s.gen_dtype, s.threads))


def _card(entry: dict):
    """The variant's Card when it has one on disk (None for the base)."""
    path = entry.get("path") or ""
    if entry.get("kind") == "base" or not path:
        return None
    from ragqa.generators import Card
    from ragqa.generators.registry import is_variant_dir

    if not is_variant_dir(Path(path)):
        return None
    try:
        return Card.load(Path(path))
    except RagqaError:
        return None


def _param_choice(name: str, options: list[str], shown=lambda o: o) -> int:
    """The index in ``options`` the page's query parameter ``name`` names (0 when none does)."""
    wanted = st.query_params.get(name)
    for i, option in enumerate(options):
        if wanted and wanted in (option, shown(option)):
            return i
    return 0


# ------------------------------------------------------------------------------------ rendering

_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~$:{}])")
_WORD = re.compile(r"[^\W_]{4,}", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _md(text: str) -> str:
    """Plain text made safe for st.markdown (no markup, no LaTeX, no HTML)."""
    text = html.escape(" ".join(text.split()), quote=False)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"^([+\-.>0-9])", r"\\\1", text)


def _highlight(passage: str, answer: str) -> str:
    """The passage as HTML (Markdown heading marks dropped), with the sentences that share words
    with the answer marked."""
    words = {w.lower() for w in _WORD.findall(answer)}
    out = []
    for sentence in _SENTENCE.split(ui_text.passage_text(passage)):
        own = {w.lower() for w in _WORD.findall(sentence)}
        shared = len(own & words)
        text = html.escape(sentence, quote=False)
        out.append(f"<mark>{text}</mark>" if own and (shared >= 4 or shared / len(own) >= 0.5) else text)
    return " ".join(out)


def _source_label(s) -> str:
    page = f", page {s.page}" if s.page else ""
    return f"{_md(ui_text.passage_text(s.title or s.doc_id))} ({_md(s.doc_id)}{page})"


def render_answer(ans: Answer, key: str, *, index_dir: str, stopped: dict | None = None) -> None:
    n_sources = len(ans.sources)
    if stopped is not None:
        if ans.text:
            st.markdown(ui_text.answer_html(ans.text, key, n_sources), unsafe_allow_html=True)
        st.info(f"Stopped after {stopped['seconds']:.0f} s: the answer was not finished.",
                icon=":material/stop_circle:")
    elif ans.abstained:
        words, details = ui_text.abstain_words(ans)
        st.warning(f"**{ABSTAIN_TEXT}** {_md(words)}".strip())
        if details:
            with st.expander("Why (the numbers)"):
                st.caption(_md(details))
        if ans.text and ans.text.strip() != ABSTAIN_TEXT:
            st.markdown(ui_text.answer_html(ans.text, key, n_sources), unsafe_allow_html=True)
    else:
        st.markdown(ui_text.answer_html(ans.text, key, n_sources), unsafe_allow_html=True)
    if ans.standalone_question:
        st.caption(f"Searched for: {_md(ans.standalone_question)}")
    if ans.sources:
        cited = [s for s in ans.sources if s.cited]
        if cited:
            st.markdown("Cited: " + " · ".join(
                f"<a href='#{ui_text.cite_anchor(key, s.n)}' class='ragqa-cite'>[{s.n}]</a> {_source_label(s)}"
                for s in cited), unsafe_allow_html=True)
        elif not ans.abstained and stopped is None:
            st.caption("The answer cites no passage; below, the sentences sharing words with it are marked.")
        with st.expander(f"Sources ({n_sources})", expanded=bool(st.query_params.get("sources"))):
            mark_all = not cited
            for s in ans.sources:
                badge = " :green-badge[cited]" if s.cited else ""
                st.markdown(f"<span id='{ui_text.cite_anchor(key, s.n)}'></span>**[{s.n}]** {_source_label(s)}"
                            f" · score {s.score:.3f}{badge}", unsafe_allow_html=True)
                body = (_highlight(s.text, ans.text) if (s.cited or mark_all) and not ans.abstained
                        else _highlight(s.text, ""))
                st.markdown(f"<div style='font-size:0.9em;margin:0 0 0.8em 1.2em'>{body}</div>",
                            unsafe_allow_html=True)
    if ans.prompt:
        with st.expander("Prompt (exactly what the model read)"):
            st.code(ans.prompt, language=None, wrap_lines=True)
    line = ui_text.timings_line(ans)
    st.caption(f"variant **{_md(ans.variant)}**" + (f" · {line}" if line else ""))
    if stopped is None:
        st.feedback("thumbs", key=f"fb_{key}", on_change=_on_feedback, args=(key, ans, index_dir))
        done = st.session_state.get("feedback_done", {}).get(key)
        if done:
            st.caption(f"Feedback recorded (thumbs {done}). Thank you.")


def _on_feedback(key: str, ans: Answer, index_dir: str) -> None:
    value = st.session_state.get(f"fb_{key}")
    if value is None:
        return
    verdict = "up" if value == 1 else "down"
    record_feedback(index_dir, feedback_entry(ans, verdict, index=index_dir))
    st.session_state.setdefault("feedback_done", {})[key] = verdict


def render_message(msg: dict, index_dir: str) -> None:
    with st.chat_message(msg["role"]):
        if msg["role"] == "user":
            st.markdown(_md(msg["content"]))
            return
        if "error" in msg:
            st.error(msg["error"])
        answers = msg.get("answers", [])
        stopped = msg.get("stopped")
        where = [st.container()] if len(answers) == 1 else st.columns(len(answers)) if answers else []
        for j, (col, ans) in enumerate(zip(where, answers)):
            with col:
                if len(answers) > 1:
                    st.markdown(f"##### {_md(ans.variant)}")
                render_answer(ans, f"{msg['id']}_{j}", index_dir=msg.get("index", index_dir),
                              stopped=stopped if stopped and j == len(answers) - 1 else None)


# ------------------------------------------------------------------------------------ answering live

class Job:
    """One question answered by a worker thread, variant after variant (``RagQA.stream``; the model
    is loaded first, with its one-time conversion's steps, when it is not in memory yet). It lives
    in the session, not in a script run: any rerun (a click, the page redrawing) shows it again
    where it is; ``stop()`` closes the stream, so the generation ends at its next token."""

    def __init__(self, qa: RagQA, question: str, variants: list[str], history, options: dict,
                 index: str, msg_id: int):
        self.question, self.variants, self.index, self.id = question, variants, index, msg_id
        self.events: queue.Queue = queue.Queue()
        self.cancel = threading.Event()
        self.started = time.perf_counter()
        self.stage = "starting"
        self.text = ""  # of the variant being written
        self.shell: Answer | None = None  # its sources, known from the "read" stage on
        self.answers: list[Answer] = []
        self.error: BaseException | None = None
        self.stopped_after: float | None = None
        self.done = False
        self._recorded = False
        self._lock = threading.Lock()
        threading.Thread(target=self._work, args=(qa, history, options), name="ragqa-ui-answer",
                         daemon=True).start()

    def _work(self, qa: RagQA, history, options: dict) -> None:
        try:
            gen = qa.generator
            if not getattr(gen, "loaded", True):
                gen.load(status=lambda message: self.events.put(("stage", message)))
            for variant in self.variants:
                self.events.put(("next", variant))
                stream = qa.stream(self.question, variant=variant, history=history,
                                   status=lambda s: self.events.put(("status", s)), **options)
                try:
                    for item in stream:
                        if self.cancel.is_set():
                            break
                        self.events.put(("answer" if isinstance(item, Answer) else "piece", item))
                finally:
                    stream.close()
                if self.cancel.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - shown in the chat
            self.events.put(("error", exc))
        finally:
            self.events.put(("end", None))

    def poll(self) -> bool:
        """Takes in what the worker said; True once it has finished."""
        with self._lock:
            while True:
                try:
                    kind, value = self.events.get_nowait()
                except queue.Empty:
                    return self.done
                if kind == "next":
                    self.stage, self.text, self.shell = "starting", "", None
                elif kind == "stage":
                    self.stage = value
                elif kind == "status":
                    self.stage = str(value)
                    if value.answer is not None:
                        self.shell = value.answer
                elif kind == "piece":
                    self.stage = "writing the answer"
                    self.text += value
                elif kind == "answer":
                    self.answers.append(value)
                    self.text, self.shell = "", None
                elif kind == "error":
                    self.error = value
                elif kind == "end":
                    if self.cancel.is_set() and len(self.answers) < len(self.variants):
                        self.stopped_after = self.seconds
                        variant = self.variants[len(self.answers)]
                        shell = self.shell or Answer(question=self.question, text="", sources=[], variant=variant)
                        shell.text = self.text.strip()
                        self.answers.append(shell)
                    self.done = True

    def stop(self) -> None:
        self.cancel.set()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def status_line(self, tick: int) -> str:
        stage = self.stage[:1].upper() + self.stage[1:]
        if self.stage.startswith("reading"):
            stage += ": nothing is written until the model has read them"
        n = len(self.text.split())
        words = f" · {n} word{'s' if n != 1 else ''}" if self.text else ""
        return f"{SPINNER[tick % len(SPINNER)]} **{_md(stage)}** · {self.seconds:.0f} s{words}"

    def message(self) -> dict | None:
        """The chat message it became, once (None before it finished, or after another run took it)."""
        with self._lock:
            if not self.done or self._recorded:
                return None
            self._recorded = True
        msg: dict = {"role": "assistant", "index": self.index, "id": self.id, "answers": self.answers}
        if self.stopped_after is not None:
            msg["stopped"] = {"seconds": self.stopped_after}
        if self.error is not None:
            exc = self.error
            msg["error"] = (f"Could not answer: {exc}" if isinstance(exc, RagqaError)
                            else f"Could not answer: {type(exc).__name__}: {exc}")
        return msg


def show_job(job: Job, messages: list) -> None:
    """The answer being written: its stage and seconds, its text so far, a Stop button; redrawn
    every TICK_S until it has finished, then kept in the conversation."""
    with st.chat_message("assistant"):
        st.button("Stop", key=f"stop_{job.id}", icon=":material/stop_circle:", on_click=job.stop,
                  disabled=job.cancel.is_set(), help="Stop this answer (what was written is kept)")
        many = len(job.variants) > 1
        where = st.columns(len(job.variants)) if many else [st.container()]
        slots = []
        for col, name in zip(where, job.variants):
            with col:
                if many:
                    st.markdown(f"##### {_md(name)}")
                slots.append((st.empty(), st.empty()))
        tick = 0
        while not job.poll():
            n = len(job.answers)
            for j, (status, text) in enumerate(slots):
                if j < n:
                    text.markdown(ui_text.answer_html(job.answers[j].text, f"{job.id}_{j}",
                                                      len(job.answers[j].sources)), unsafe_allow_html=True)
                    status.caption(f"variant **{_md(job.answers[j].variant)}** · done")
                elif j == n:
                    status.caption(job.status_line(tick))
                    if job.text:
                        sources = len(job.shell.sources) if job.shell else 0
                        text.markdown(ui_text.answer_html(job.text, f"{job.id}_{j}", sources) + " ▌",
                                      unsafe_allow_html=True)
                else:
                    status.caption("waiting for the first variant")
            tick += 1
            time.sleep(TICK_S)
    msg = job.message()
    if msg is not None:
        messages.append(msg)
    if st.session_state.get("job") is job:
        st.session_state.job = None
    st.rerun()  # the finished answer(s) with sources, timings and feedback; the chat box again


def _ask(question: str, messages: list, qa: RagQA, wanted: list[str], options: dict, index: str) -> None:
    """Start answering ``question`` (the chat box is disabled until it has finished)."""
    state = st.session_state
    history = [(m["answers"][0].question, m["answers"][0].text) for m in messages
               if m["role"] == "assistant" and m.get("answers") and not m.get("stopped")][-HISTORY_TURNS:]
    messages.append({"role": "user", "content": question})
    state.job = Job(qa, question, wanted, history, options, index, state.next_id)
    state.next_id += 1


# ------------------------------------------------------------------------------------ the page

st.set_page_config(page_title="ragqa", page_icon="📚", layout="wide")
state = st.session_state
state.setdefault("conversations", {})  # index directory -> its messages, kept while the tab is open
state.setdefault("uploads", 0)
state.setdefault("next_id", 0)  # ids of assistant messages (widget keys stay unique after a clear)
state.setdefault("job", None)  # the question being answered (a Job)

try:
    settings = Settings.load()
except RagqaError as exc:
    st.error(f"Bad settings: {exc}")
    st.stop()
os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
max_upload_mb = int(os.environ.get("RAGQA_UI_MAX_UPLOAD_MB", DEFAULT_MAX_MB))
busy = state.job is not None

choices = _index_choices(_given_index())
sidebar = st.sidebar
sidebar.title("ragqa")
if not choices:
    st.info("No index found. Build one with `ragqa index build PATH --index indexes/NAME`, then start "
            "`ragqa ui --index indexes/NAME`.")
    st.stop()
index_dir = sidebar.selectbox("Index", choices, format_func=_shown_path, key="index", disabled=busy,
                              index=_param_choice("index", choices, _shown_path))
models = _model_choices(settings.model)
if len(models) > 1:  # each model keeps its own variants (a variant is trained on one base)
    chosen = sidebar.selectbox("Model", models, key="model", index=_param_choice("model", models), disabled=busy,
                               help="Base model; the variants listed below are the ones trained on it")
    if chosen != settings.model:
        settings = settings.replace(model=chosen)
try:
    qa = _pipeline(index_dir, _version(index_dir), repr(settings), settings)
    info = qa.index.info()
except RagqaError as exc:
    st.error(f"Cannot open the index {_shown_path(index_dir)}: {exc}")
    st.stop()
sidebar.caption(f"{info['documents']} documents · {info['chunks']} chunks · "
                f"embedder {ui_text.embedder_label(info['embedder']['name'])}")

variants = qa.variants()  # this model's own: a variant is served on the base it was trained on
names = [v["name"] for v in variants]
variant = sidebar.selectbox("Variant", names, key=f"variant:{settings.model}",
                            index=_param_choice("variant", names),
                            help="base, or a tuned variant served on the same base model")
entry = next(v for v in variants if v["name"] == variant)
with sidebar.expander("Variant card", expanded=False):
    st.markdown("\n".join(f"- **{k}**: {v if k == 'Made with' else _md(v)}"
                          for k, v in ui_text.variant_card(entry, _card(entry))))
compare = sidebar.toggle("Compare two variants", key="compare", disabled=len(names) < 2,
                         help="Answer each question with two variants side by side")
other = None
if compare and len(names) > 1:
    rest = [n for n in names if n != variant]
    other = sidebar.selectbox("Compare with", rest, key=f"variant_b:{settings.model}")

sidebar.subheader("Retrieval")
top_k = sidebar.slider("Passages (top-k)", 1, 12, min(settings.top_k, 12), key="top_k")
mode = sidebar.selectbox("Retrieval mode", RETRIEVAL_MODES, index=RETRIEVAL_MODES.index(settings.mode),
                         key="mode")
sidebar.subheader("Generation")
max_new_tokens = sidebar.number_input("Max new tokens", 8, 1024, settings.max_new_tokens, step=8,
                                      key="max_new_tokens")
do_sample = sidebar.toggle("Sampling", value=settings.do_sample, key="do_sample",
                           help="Off: greedy decoding (deterministic)")
temperature = sidebar.slider("Temperature", 0.05, 2.0, float(settings.temperature), step=0.05,
                             key="temperature", disabled=not do_sample)
options = dict(k=int(top_k), mode=mode, max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample),
               temperature=float(temperature))
# a reload (or a shared link) opens the same index, model and variant
wanted_params = {"index": _shown_path(index_dir), "model": settings.model, "variant": variant}
if any(st.query_params.get(k) != v for k, v in wanted_params.items()):
    st.query_params.update(wanted_params)

sidebar.subheader("Add documents")
files = sidebar.file_uploader(f"PDF, text, Markdown or HTML (up to {max_upload_mb} MB each)",
                              type=[s.lstrip(".") for s in UPLOAD_SUFFIXES], accept_multiple_files=True,
                              key=f"uploader_{state.uploads}")
if sidebar.button("Add to index", key="add_docs", disabled=not files or busy, type="primary"):
    bar = sidebar.progress(0.0, text="Saving the files…")

    def _progress(done: int, total: int) -> None:
        bar.progress(min(done / total, 1.0) if total else 1.0, text=f"Indexing: {done}/{total} documents")

    result = add_uploads([(f.name, f.getvalue()) for f in files], index_dir, settings,
                         max_bytes=max_upload_mb * 2**20, progress=_progress)
    bar.progress(1.0, text="Done")
    state.upload_result = result
    state.uploads += 1  # a fresh, empty uploader
    st.rerun()
result = state.pop("upload_result", None)  # shown once, after the upload that made it
if result is not None:
    if result.added or result.updated:
        sidebar.success(f"Indexed: {result.added} added, {result.updated} updated "
                        f"({result.documents} documents, {result.chunks} chunks now)")
    elif not result.problems:
        sidebar.info(f"Nothing new: {result.unchanged} file(s) were already in the index.")
    for problem in result.problems:
        sidebar.warning(_md(problem))

messages = state.conversations.setdefault(index_dir, [])
state.messages = messages  # the shown index's conversation
if sidebar.button("Clear the conversation", key="clear", disabled=busy):
    messages.clear()
    state.pop("feedback_done", None)
    st.rerun()
sidebar.caption("Each index keeps its own conversation while this tab is open; reloading the page "
                "starts a new one (the index, model and variant stay: they are in the address).")

st.title("Ask your documents")
st.caption(f"Index {_shown_path(index_dir)} · model {settings.model}")
ask_args = (messages, qa, [variant] + ([other] if other else []), options, index_dir)

if not messages and not busy:  # the first screen: what the index holds, questions to start with
    with st.container():  # one element: nothing of it lingers, greyed, while the first answer is written
        docs = qa.index.documents()
        titles = list(dict.fromkeys(ui_text.passage_text(d["title"] or d["doc_id"]) for d in docs))
        shown = ", ".join(titles[:6]) + (f" and {len(titles) - 6} more" if len(titles) > 6 else "")
        st.markdown(f"This index holds **{len(docs)} document{'s' if len(docs) != 1 else ''}**: {_md(shown)}.")
        examples = ui_text.example_questions(docs)
        if examples:
            st.caption("Ask anything about them, or start with one of these:")
            for i, q in enumerate(examples):
                st.button(q, key=f"example_{i}", on_click=_ask, args=(q, *ask_args))

for msg in messages:
    render_message(msg, index_dir)

question = st.chat_input("Writing the answer… (Stop is above)" if busy else "Ask a question about your documents",
                         disabled=busy, key="ask")
if question and not busy:
    _ask(question, *ask_args)
    st.rerun()
if busy:
    show_job(state.job, state.conversations.setdefault(state.job.index, []))
