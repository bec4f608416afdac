"""ragqa's Streamlit UI: chat with your documents.

Started by ``ragqa ui [--index DIR] [--port N]`` (``ragqa.apps.ui_launch``), or directly with
``streamlit run ui/app.py -- --index DIR``. The index may also come from env ``RAGQA_UI_INDEX``;
every index under ``indexes/`` (env ``RAGQA_UI_INDEXES``) is offered too. Settings come from
``Settings.load()`` (ragqa.toml, ``RAGQA_*``), e.g. ``RAGQA_MODEL=smollm2-135m-instruct``.

Only presentation lives here; answering, indexing uploads and recording feedback are library
calls (``RagQA``, ``ragqa.apps.uploads``, ``ragqa.apps.feedback``). One generator (one base model in
memory, every variant) is shared by all sessions through ``st.cache_resource``.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
import time
from pathlib import Path

import streamlit as st

from ragqa.config import RETRIEVAL_MODES, Settings
from ragqa.errors import EmbedderMismatch, RagqaError
from ragqa.apps.feedback import feedback_entry, record_feedback
from ragqa.generators.engine import describe_timings
from ragqa.answering.pipeline import Answer, RagQA, Status, make_generator
from ragqa.indexing.storage import IndexDir
from ragqa.apps.uploads import DEFAULT_MAX_MB, UPLOAD_SUFFIXES, add_uploads

HISTORY_TURNS = 4  # previous turns given to the pipeline to rewrite a follow-up


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


def _variant_card(entry: dict) -> dict:
    """What the sidebar shows about a variant: its card when the variant has one on disk."""
    info = {"kind": entry.get("kind", ""), "base model": entry.get("base_model", "")}
    path = entry.get("path") or ""
    if entry.get("kind") != "base" and path:
        from ragqa.generators import Card
        from ragqa.generators.registry import is_variant_dir

        if is_variant_dir(Path(path)):
            try:
                card = Card.load(Path(path))
            except RagqaError:
                card = None
            if card is not None:
                info.update({"kind": card.kind, "base model": card.base_model})
                data = card.extra.get("data") or card.extra.get("train_data")
                if data or card.data_hash:
                    info["data"] = " ".join(x for x in (str(data or ""), f"sha256 {card.data_hash[:12]}"
                                                          if card.data_hash else "") if x)
                if card.template:
                    info["template"] = card.template
                if card.metrics:
                    info["metrics"] = ", ".join(f"{k} {_num(v)}" for k, v in card.metrics.items())
        info["path"] = path
    return info


def _num(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------------------------ rendering

_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~$:{}])")
_WORD = re.compile(r"[^\W_]{4,}", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _md(text: str) -> str:
    """Plain text made safe for st.markdown (no markup, no LaTeX, no HTML)."""
    text = html.escape(" ".join(text.split()), quote=False)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"^([+\-.>0-9])", r"\\\1", text)


def _answer_md(text: str) -> str:
    """A model's answer for st.markdown: its markdown kept, but no LaTeX and no headings."""
    text = text.replace("$", r"\$")
    return re.sub(r"(?m)^(\s*)#", r"\1\\#", text)


def _html(text: str) -> str:
    return html.escape(" ".join(text.split()), quote=False)


def _highlight(passage: str, answer: str) -> str:
    """The passage as HTML, with the sentences that share words with the answer marked."""
    words = {w.lower() for w in _WORD.findall(answer)}
    out = []
    for sentence in _SENTENCE.split(" ".join(passage.split())):
        own = {w.lower() for w in _WORD.findall(sentence)}
        shared = len(own & words)
        if own and (shared >= 4 or shared / len(own) >= 0.5):
            out.append(f"<mark>{_html(sentence)}</mark>")
        else:
            out.append(_html(sentence))
    return " ".join(out)


def _timings(ans: Answer) -> str:
    t = ans.timings
    parts = [f"variant **{ans.variant}**"]
    if "rewrite_ms" in t:
        parts.append(f"rewrite {t['rewrite_ms']:.0f} ms")
    if "retrieve_ms" in t:
        parts.append(f"retrieve {t['retrieve_ms']:.0f} ms")
    if "generate_ms" in t:
        parts.append(describe_timings(t))
    elif "prompt_tokens" in t:
        parts.append(f"prompt {t['prompt_tokens']} tokens")
    return " · ".join(parts)


def _source_label(s) -> str:
    page = f", page {s.page}" if s.page else ""
    return f"{_md(s.title or s.doc_id)} ({_md(s.doc_id)}{page})"


def render_answer(ans: Answer, key: str, *, index_dir: str) -> None:
    if ans.abstained:
        st.warning(f"**I don't know.** {_md(ans.reason or '')}".strip())
        if ans.text and ans.text.strip() != "I don't know.":
            st.markdown(_answer_md(ans.text))
    else:
        st.markdown(_answer_md(ans.text))
    if ans.standalone_question:
        st.caption(f"Searched for: {_md(ans.standalone_question)}")
    if ans.sources:
        cited = [s for s in ans.sources if s.cited]
        if cited:
            st.markdown("Cited: " + " · ".join(f"**[{s.n}]** {_source_label(s)}" for s in cited))
        elif not ans.abstained:
            st.caption("The answer cites no passage; below, the sentences sharing words with it are marked.")
        with st.expander(f"Sources ({len(ans.sources)})"):
            mark_all = not cited
            for s in ans.sources:
                badge = " :green-badge[cited]" if s.cited else ""
                st.markdown(f"**[{s.n}]** {_source_label(s)} · score {s.score:.3f}{badge}")
                body = _highlight(s.text, ans.text) if (s.cited or mark_all) and not ans.abstained else _html(s.text)
                st.markdown(f"<div style='font-size:0.9em;margin:0 0 0.8em 1.2em'>{body}</div>",
                            unsafe_allow_html=True)
    if ans.prompt:
        with st.expander("Prompt (exactly what the model read)"):
            st.code(ans.prompt, language=None, wrap_lines=True)
    st.caption(_timings(ans))
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
        elif "error" in msg:
            st.error(msg["error"])
        elif len(msg["answers"]) == 1:
            render_answer(msg["answers"][0], f"{msg['id']}_0", index_dir=msg.get("index", index_dir))
        else:
            for j, (col, ans) in enumerate(zip(st.columns(len(msg["answers"])), msg["answers"])):
                with col:
                    st.markdown(f"##### {_md(ans.variant)}")
                    render_answer(ans, f"{msg['id']}_{j}", index_dir=msg.get("index", index_dir))


def stream_answer(qa: RagQA, question: str, variant: str, history, options: dict) -> Answer:
    """Shows the answer as it is generated; returns the finished Answer."""
    placeholder = st.empty()
    placeholder.caption(f"Searching the index and asking **{_md(variant)}**…")
    started = time.perf_counter()

    def status(st_: Status) -> None:  # what is happening before the first token
        placeholder.caption(f"{_md(st_.message[:1].upper() + st_.message[1:])}… "
                            f"({time.perf_counter() - started:.0f} s)")

    text = ""
    for piece in qa.stream(question, variant=variant, history=history, status=status, **options):
        if isinstance(piece, Answer):
            placeholder.empty()
            return piece
        text += piece
        placeholder.markdown(_answer_md(text) + " ▌")
    raise RagqaError("the answer stream ended without an answer")


# ------------------------------------------------------------------------------------ the page

st.set_page_config(page_title="ragqa", page_icon="📚", layout="wide")
state = st.session_state
state.setdefault("messages", [])
state.setdefault("uploads", 0)
state.setdefault("next_id", 0)  # ids of assistant messages (widget keys stay unique after a clear)

try:
    settings = Settings.load()
except RagqaError as exc:
    st.error(f"Bad settings: {exc}")
    st.stop()
os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
max_upload_mb = int(os.environ.get("RAGQA_UI_MAX_UPLOAD_MB", DEFAULT_MAX_MB))

choices = _index_choices(_given_index())
sidebar = st.sidebar
sidebar.title("ragqa")
if not choices:
    st.info("No index found. Build one with `ragqa index build PATH --index indexes/NAME`, then start "
            "`ragqa ui --index indexes/NAME`.")
    st.stop()
index_dir = sidebar.selectbox("Index", choices, format_func=_shown_path, key="index")
models = _model_choices(settings.model)
if len(models) > 1:  # each model keeps its own variants (a variant is trained on one base)
    chosen = sidebar.selectbox("Model", models, key="model",
                               help="Base model; the variants listed below are the ones trained on it")
    if chosen != settings.model:
        settings = settings.replace(model=chosen)
try:
    qa = _pipeline(index_dir, _version(index_dir), repr(settings), settings)
    info = qa.index.info()
except RagqaError as exc:
    st.error(f"Cannot open the index {_shown_path(index_dir)}: {exc}")
    st.stop()
sidebar.caption(f"{info['documents']} documents · {info['chunks']} chunks · {info['version']} · "
                f"embedder {info['embedder']['name']}")

variants = qa.variants()
names = [v["name"] for v in variants]
variant = sidebar.selectbox("Variant", names, key="variant",
                            help="base, or a tuned variant served on the same base model")
with sidebar.expander("Variant card", expanded=False):
    card = _variant_card(next(v for v in variants if v["name"] == variant))
    st.markdown("\n".join(f"- **{k}**: {_md(str(v))}" for k, v in card.items() if v))
compare = sidebar.toggle("Compare two variants", key="compare", disabled=len(names) < 2,
                         help="Answer each question with two variants side by side")
other = None
if compare and len(names) > 1:
    rest = [n for n in names if n != variant]
    other = sidebar.selectbox("Compare with", rest, key="variant_b")

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

sidebar.subheader("Add documents")
files = sidebar.file_uploader(f"PDF, text, Markdown or HTML (up to {max_upload_mb} MB each)",
                              type=[s.lstrip(".") for s in UPLOAD_SUFFIXES], accept_multiple_files=True,
                              key=f"uploader_{state.uploads}")
if sidebar.button("Add to index", key="add_docs", disabled=not files, type="primary"):
    bar = sidebar.progress(0.0, text="Saving the files…")

    def _progress(done: int, total: int) -> None:
        bar.progress(min(done / total, 1.0) if total else 1.0, text=f"Indexing: {done}/{total} documents")

    result = add_uploads([(f.name, f.getvalue()) for f in files], index_dir, settings,
                         max_bytes=max_upload_mb * 2**20, progress=_progress)
    bar.progress(1.0, text="Done")
    state.upload_result = result
    state.uploads += 1  # a fresh, empty uploader
    st.rerun()
result = state.get("upload_result")
if result is not None:
    if result.version or result.unchanged:
        sidebar.success(f"Indexed: {result.added} added, {result.updated} updated, {result.unchanged} unchanged "
                        f"({result.documents} documents, {result.chunks} chunks)")
    for problem in result.problems:
        sidebar.warning(_md(problem))

if sidebar.button("Clear the conversation", key="clear"):
    state.messages = []
    state.pop("feedback_done", None)
    st.rerun()

st.title("Ask your documents")
st.caption(f"Index {_shown_path(index_dir)} · model {settings.model}")

for msg in state.messages:
    render_message(msg, index_dir)

question = st.chat_input("Ask a question about your documents")
if question:
    history = [(m["answers"][0].question, m["answers"][0].text) for m in state.messages
               if m["role"] == "assistant" and m.get("answers")][-HISTORY_TURNS:]
    state.messages.append({"role": "user", "content": question})
    render_message(state.messages[-1], index_dir)
    wanted = [variant] + ([other] if other else [])
    msg: dict = {"role": "assistant", "index": index_dir, "id": state.next_id}
    state.next_id += 1
    with st.chat_message("assistant"):
        answers = []
        try:
            if len(wanted) == 1:
                answers.append(stream_answer(qa, question, variant, history, options))
            else:
                for col, name in zip(st.columns(len(wanted)), wanted):
                    with col:
                        st.markdown(f"##### {_md(name)}")
                        answers.append(stream_answer(qa, question, name, history, options))
            msg["answers"] = answers
        except Exception as exc:  # noqa: BLE001 - shown in the chat, the session goes on
            msg["error"] = f"Could not answer: {exc}" if isinstance(exc, RagqaError) else \
                f"Could not answer: {type(exc).__name__}: {exc}"
    state.messages.append(msg)
    st.rerun()  # draw the finished answer(s) with sources, timings and feedback
