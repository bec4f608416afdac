"""ragqa.answering.prompting: exact layouts, token budget, templates, few-shot selection. No model hub."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ragqa.errors import ConfigError  # noqa: E402
from ragqa.answering.prompting import (  # noqa: E402
    CUT_MARKER,
    MIN_CUT_ROOM,
    Example,
    Passage,
    Template,
    build_plain_prompt,
    build_prompt,
    list_templates,
    load_examples,
    load_template,
    render,
    rewrite_messages,
    select_examples,
)

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

QA_SYSTEM = ("Answer the question using only the numbered passages in the context. Cite each passage "
             "you use by its number in square brackets, like [1]. Keep the answer brief: one or two "
             "sentences. If the passages do not contain the answer, reply exactly: I don't know.")


class WordTokenizer:
    """Fake tokenizer: one token per whitespace-separated word; no chat template. Counts calls."""

    chat_template = None

    def __init__(self):
        self.calls = 0

    def __call__(self, text, add_special_tokens=True):
        self.calls += 1
        return {"input_ids": list(range(len(text.split())))}


@pytest.fixture(scope="module")
def chat_tok():
    """A tiny real PreTrainedTokenizerFast (word level, whitespace split) with a ChatML template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    for w in "system user assistant Context: Question: Answer: [1] [2] Paris is the capital of France.".split():
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = CHATML
    return tok


@pytest.fixture
def qa():
    return load_template("qa")


@pytest.fixture
def tok():
    return WordTokenizer()


def ntok(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


PARIS = Passage("Paris is the capital of France.", title="France", doc_id="d1", score=0.9)
BERLIN = Passage("Berlin is the capital of Germany.", title="Germany", doc_id="d2", score=0.5)
Q = "What is the capital of France?"


# --------------------------------------------------------------------------- exact layouts


def test_one_passage_plain_layout(qa, tok):
    p = build_prompt(Q, [PARIS], qa, tok, max_prompt_tokens=1000)
    assert p.text == (
        f"System: {QA_SYSTEM}\n\n"
        "User: Context:\n[1] France\nParis is the capital of France.\n\n"
        "Question: What is the capital of France?\nAnswer:\n\n"
        "Assistant:"
    )
    assert p.messages == [
        {"role": "system", "content": QA_SYSTEM},
        {"role": "user", "content": "Context:\n[1] France\nParis is the capital of France.\n\n"
                                    "Question: What is the capital of France?\nAnswer:"},
    ]
    assert p.passages == [PARIS] and p.dropped == 0 and not p.truncated
    assert p.tokens == len(p.text.split())


def test_two_passages_numbered_in_order(qa, tok):
    p = build_prompt(Q, [BERLIN, PARIS], qa, tok, max_prompt_tokens=1000)
    assert p.messages[-1]["content"] == (
        "Context:\n"
        "[1] Germany\nBerlin is the capital of Germany.\n\n"
        "[2] France\nParis is the capital of France.\n\n"
        "Question: What is the capital of France?\nAnswer:"
    )
    assert p.passages == [BERLIN, PARIS]  # [1] is passages[0]


def test_empty_title_gives_bare_number(qa, tok):
    p = build_prompt(Q, [Passage("Paris is the capital of France.")], qa, tok, max_prompt_tokens=1000)
    assert p.messages[-1]["content"].startswith("Context:\n[1]\nParis is the capital of France.\n\n")


def test_passage_layout_is_made_lean_for_the_model_only(qa, tok):
    """A man page's runs of spaces and tabs cost tokens: the model reads one space for each run,
    stripped lines and at most one blank line; the passage itself (the sources shown) keeps its
    layout."""
    page = Passage("       -S     sort by file size, largest first\n\n\n\n"
                   "       --sort=WORD\n\t      sort by WORD  instead of\tname  \n", title=" ls.1 ")
    p = build_prompt("Which ls option sorts by size?", [page], qa, tok, max_prompt_tokens=1000)
    assert p.messages[-1]["content"].startswith(
        "Context:\n[1] ls.1\n-S sort by file size, largest first\n\n--sort=WORD\n"
        "sort by WORD instead of name\n\nQuestion:")
    assert p.passages == [page]


def test_empty_retrieval_uses_no_context(qa, tok):
    p = build_prompt(Q, [], qa, tok, max_prompt_tokens=1000)
    assert p.text == (
        f"System: {QA_SYSTEM}\n\n"
        "User: Context:\n(no passages)\n\n"
        "Question: What is the capital of France?\nAnswer:\n\n"
        "Assistant:"
    )
    assert p.passages == [] and p.dropped == 0


def test_few_shot_one_example(qa, tok):
    ex = Example("Where is the Eiffel Tower?", "In Paris [1].", context="[1] Eiffel Tower\nIt stands in Paris.")
    p = build_prompt(Q, [PARIS], qa, tok, max_prompt_tokens=1000, examples=[ex])
    assert p.text == (
        f"System: {QA_SYSTEM}\n\n"
        "User: Context:\n[1] Eiffel Tower\nIt stands in Paris.\n\n"
        "Question: Where is the Eiffel Tower?\nAnswer:\n\n"
        "Assistant: In Paris [1].\n\n"
        "User: Context:\n[1] France\nParis is the capital of France.\n\n"
        "Question: What is the capital of France?\nAnswer:\n\n"
        "Assistant:"
    )
    # an example without context is just the question
    p = build_prompt(Q, [PARIS], qa, tok, max_prompt_tokens=1000, examples=[Example("2+2?", "4")])
    assert p.messages[1:3] == [{"role": "user", "content": "Question: 2+2?\nAnswer:"},
                               {"role": "assistant", "content": "4"}]


def test_plain_summarize_prompt(tok):
    t = load_template("summarize")
    dialogue = "Amy: Lunch at noon?\nBob: Sure, see you there."
    p = build_plain_prompt(dialogue, t, tok, max_prompt_tokens=1000)
    assert p.text == (
        "System: Summarize the text in one or two sentences. Say who is involved and what happens "
        "or is decided. Write only the summary.\n\n"
        "User: Text:\nAmy: Lunch at noon?\nBob: Sure, see you there.\nSummary:\n\n"
        "Assistant:"
    )
    assert not p.truncated and p.passages == [] and p.tokens == len(p.text.split())
    p = build_plain_prompt(dialogue, t, tok, max_prompt_tokens=1000,
                           examples=[Example("Ann: Hi!\nTom: Hello!", "Ann and Tom greet each other.")])
    assert p.messages[1:3] == [{"role": "user", "content": "Text:\nAnn: Hi!\nTom: Hello!\nSummary:"},
                               {"role": "assistant", "content": "Ann and Tom greet each other."}]


def test_chat_template_applied(qa, chat_tok):
    p = build_prompt(Q, [PARIS], qa, chat_tok, max_prompt_tokens=1000)
    assert p.text == (
        f"<|im_start|>system\n{QA_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nContext:\n[1] France\nParis is the capital of France.\n\n"
        "Question: What is the capital of France?\nAnswer:<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert p.tokens == ntok(chat_tok, p.text)
    assert chat_tok(p.text, add_special_tokens=False)["input_ids"][0] == 1  # <|im_start|> is one token


def test_render_plain_and_chat(chat_tok):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"}, {"role": "user", "content": "U2"}]
    assert render(msgs, WordTokenizer()) == "System: S\n\nUser: U\n\nAssistant: A\n\nUser: U2\n\nAssistant:"
    assert render(msgs, chat_tok) == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                                      "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
                                      "<|im_start|>assistant\n")


def test_history_keeps_last_three_turns(qa, tok):
    history = [(f"q{i}", f"a{i}") for i in range(5)]
    p = build_prompt(Q, [PARIS], qa, tok, max_prompt_tokens=1000, history=history)
    assert [m["content"] for m in p.messages[1:-1]] == ["q2", "a2", "q3", "a3", "q4", "a4"]
    assert [m["role"] for m in p.messages[1:-1]] == ["user", "assistant"] * 3


# --------------------------------------------------------------------------- budget


def _sentences(prefix, n, words=10):
    return " ".join(f"{prefix} sentence {i} " + " ".join(["word"] * (words - 4)) + " end." for i in range(n))


@pytest.mark.parametrize("which", ["fake", "chat"])
def test_budget_exact_includes_both_one_less_drops_short(qa, tok, chat_tok, which):
    tk = tok if which == "fake" else chat_tok
    full = build_prompt(Q, [PARIS, BERLIN], qa, tk, max_prompt_tokens=10_000)
    p = build_prompt(Q, [PARIS, BERLIN], qa, tk, max_prompt_tokens=full.tokens)
    assert p.passages == [PARIS, BERLIN] and p.text == full.text and p.tokens == full.tokens
    p = build_prompt(Q, [PARIS, BERLIN], qa, tk, max_prompt_tokens=full.tokens - 1)
    # BERLIN is short, so less than MIN_CUT_ROOM tokens of room are left: dropped, not cut
    assert p.passages == [PARIS] and p.dropped == 1 and not p.truncated
    assert p.tokens <= full.tokens - 1


@pytest.mark.parametrize("which", ["fake", "chat"])
def test_budget_one_less_cuts_long_second_passage(qa, tok, chat_tok, which):
    tk = tok if which == "fake" else chat_tok
    long = Passage(_sentences("Long", 20), title="Long")
    full = build_prompt(Q, [PARIS, long], qa, tk, max_prompt_tokens=10_000)
    p = build_prompt(Q, [PARIS, long], qa, tk, max_prompt_tokens=full.tokens - 1)
    assert p.truncated and p.dropped == 0 and len(p.passages) == 2
    cut = p.passages[1].text
    assert cut.endswith("end." + CUT_MARKER)
    assert long.text.startswith(cut[: -len(CUT_MARKER)])
    assert cut == _sentences("Long", 19) + CUT_MARKER  # exactly the last sentence went
    assert p.tokens == ntok(tk, p.text) <= full.tokens - 1
    assert p.messages[-1]["content"].count(CUT_MARKER) == 1


def test_cut_mid_way_ends_at_sentence_boundary(qa, tok, chat_tok):
    long = Passage(_sentences("Long", 20), title="Long")  # 10 words per sentence
    for tk in (tok, chat_tok):
        base = build_prompt(Q, [], qa, tk, max_prompt_tokens=10_000).tokens
        budget = base + 5 + 10 * 8 + 3  # room for ~8 sentences, not sentence-aligned
        p = build_prompt(Q, [long, PARIS], qa, tk, max_prompt_tokens=budget)
        assert p.truncated and p.tokens <= budget and p.dropped == 1  # PARIS after the cut is dropped
        cut = p.passages[0].text
        assert cut.endswith(". [...]") and p.passages[0].title == "Long"
        kept = cut[: -len(CUT_MARKER)]
        n = kept.count("end.")
        assert kept == _sentences("Long", n) and 5 <= n < 20
        # maximal: one more sentence would not fit
        more = dataclasses.replace(long, text=_sentences("Long", n + 1) + CUT_MARKER)
        assert build_prompt(Q, [more], qa, tk, max_prompt_tokens=10_000).tokens > budget


def test_cut_falls_back_to_words_without_sentence_end(qa, tok):
    long = Passage(" ".join(f"w{i}" for i in range(300)))
    base = build_prompt(Q, [], qa, tok, max_prompt_tokens=10_000).tokens
    p = build_prompt(Q, [long], qa, tok, max_prompt_tokens=base + 100)
    assert p.truncated and p.passages[0].text.endswith(CUT_MARKER) and p.tokens == base + 100


def test_little_room_stops_instead_of_cutting(qa, tok):
    long = Passage(_sentences("Long", 20))
    base = build_prompt(Q, [], qa, tok, max_prompt_tokens=10_000).tokens
    p = build_prompt(Q, [long], qa, tok, max_prompt_tokens=base + MIN_CUT_ROOM - 1)
    assert p.passages == [] and p.dropped == 1 and not p.truncated
    assert "(no passages)" in p.text
    p = build_prompt(Q, [long], qa, tok, max_prompt_tokens=base + MIN_CUT_ROOM + 5)
    assert p.truncated and len(p.passages) == 1


def test_passages_after_first_misfit_are_dropped(qa, tok):
    big = Passage("x " * 200)
    tiny = Passage("Tiny.")
    full = build_prompt(Q, [PARIS], qa, tok, max_prompt_tokens=10_000)
    p = build_prompt(Q, [PARIS, big, tiny], qa, tok, max_prompt_tokens=full.tokens + 20)
    assert p.passages == [PARIS] and p.dropped == 2


def test_duplicates_dropped_and_counted(qa, tok):
    dup = Passage("  paris IS the   capital\nof france. ", title="Other title")
    p = build_prompt(Q, [PARIS, dup, BERLIN, PARIS], qa, tok, max_prompt_tokens=1000)
    assert p.passages == [PARIS, BERLIN] and p.dropped == 2
    assert "[2] Germany" in p.text and "[3]" not in p.text


def test_budget_too_small_for_bare_question(qa, tok):
    base = build_prompt(Q, [], qa, tok, max_prompt_tokens=10_000).tokens
    build_prompt(Q, [PARIS], qa, tok, max_prompt_tokens=base)  # exactly enough: fine, no passages
    with pytest.raises(ConfigError, match="max_prompt_tokens"):
        build_prompt(Q, [PARIS], qa, tok, max_prompt_tokens=base - 1)


def test_many_passages_tokenize_linearly(qa):
    tk = WordTokenizer()
    ps = [Passage(_sentences(f"P{i}", 3), title=f"T{i}") for i in range(20)]
    base = build_prompt(Q, [], qa, tk, max_prompt_tokens=10_000).tokens
    tk.calls = 0
    p = build_prompt(Q, ps, qa, tk, max_prompt_tokens=base + 10 * 33)
    assert len(p.passages) >= 9
    assert tk.calls <= 20 + 12, tk.calls  # one estimate per passage + a few full measurements


def test_plain_input_cut_at_sentence(tok):
    t = load_template("summarize")
    text = _sentences("Dialog", 30)
    full = build_plain_prompt(text, t, tok, max_prompt_tokens=10_000)
    p = build_plain_prompt(text, t, tok, max_prompt_tokens=full.tokens - 25)
    assert p.truncated and p.tokens <= full.tokens - 25
    kept = p.messages[-1]["content"].removeprefix("Text:\n").removesuffix("\nSummary:")
    assert kept == _sentences("Dialog", 27) + CUT_MARKER
    with pytest.raises(ConfigError, match="max_prompt_tokens"):
        build_plain_prompt(text, t, tok, max_prompt_tokens=5)


def test_kind_mismatch(qa, tok):
    with pytest.raises(ConfigError, match="build_prompt"):
        build_plain_prompt("x", qa, tok, max_prompt_tokens=100)
    with pytest.raises(ConfigError, match="build_plain_prompt"):
        build_prompt(Q, [], load_template("summarize"), tok, max_prompt_tokens=100)


# --------------------------------------------------------------------------- examples


EXAMPLES = [Example("How tall is Mount Everest?", "8849 m"),
            Example("What is the capital of Italy?", "Rome"),
            Example("Who wrote Hamlet?", "Shakespeare")]


def test_select_examples_word_overlap():
    got = select_examples("What is the capital of Spain?", EXAMPLES, k=2)
    assert got[0] is EXAMPLES[1] and len(got) == 2
    assert select_examples("anything", EXAMPLES, k=0) == []
    assert select_examples("anything", EXAMPLES, k=10) == EXAMPLES  # all ties: input order


def test_select_examples_with_embed():
    vec = {"q": [1.0, 0.0], EXAMPLES[0].question: [0.0, 1.0], EXAMPLES[1].question: [-1.0, 0.0],
           EXAMPLES[2].question: [3.0, 0.3]}
    seen = []

    def embed(texts):
        seen.append(list(texts))
        return np.array([vec[t] for t in texts], dtype=np.float32)

    assert select_examples("q", EXAMPLES, k=2, embed=embed) == [EXAMPLES[2], EXAMPLES[0]]
    assert len(seen) == 1  # one call for the question and all examples


def test_load_examples(tmp_path):
    f = tmp_path / "ex.jsonl"
    f.write_text('{"question": "Q1", "answer": "A1"}\n\n{"question": "Q2", "answer": "A2", "context": "C"}\n')
    assert load_examples(f) == [Example("Q1", "A1"), Example("Q2", "A2", "C")]
    f.write_text('{"question": "Q1", "answer": "A1"}\n{"question": "Q2"}\n')
    with pytest.raises(ConfigError, match=r"ex\.jsonl:2: 'answer'"):
        load_examples(f)
    f.write_text("not json\n")
    with pytest.raises(ConfigError, match=r"ex\.jsonl:1: not valid JSON"):
        load_examples(f)


# --------------------------------------------------------------------------- templates


def test_builtin_templates_load():
    assert {"qa", "qa-concise", "summarize"} <= set(list_templates())
    for name in ("qa", "qa-concise", "summarize"):
        t = load_template(name)
        assert isinstance(t, Template) and t.name == name and t.system
    assert load_template("qa").kind == "qa" and load_template("qa-concise").kind == "qa"
    assert load_template("summarize").kind == "plain"
    assert "{abstain_text}" in load_template("qa").system


def test_unknown_template_lists_builtins():
    with pytest.raises(ConfigError) as err:
        load_template("nope")
    msg = str(err.value)
    assert "nope" in msg and "qa, qa-concise, qa-short, summarize" in msg and "\n" not in msg


def test_user_template_file(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('system = "Be brief. Say {abstain_text}"\nanswer_cue = "A:"\n')
    t = load_template(str(f))
    assert t.name == "mine" and t.answer_cue == "A:"
    f.write_text('system = "x"\nsytem_prompt = "typo"\n')
    with pytest.raises(ConfigError, match=r"mine\.toml: unknown key 'sytem_prompt'"):
        load_template(f)
    f.write_text('system = "x"\npassage = "[{num}] {text}"\n')
    with pytest.raises(ConfigError, match=r"mine\.toml.*'passage'.*\{num\}"):
        load_template(f)
    f.write_text('answer_cue = "x"\n')
    with pytest.raises(ConfigError, match="system"):
        load_template(f)
    with pytest.raises(ConfigError, match="not found"):
        load_template(str(tmp_path / "missing.toml"))


# --------------------------------------------------------------------------- rewrite


def test_rewrite_messages():
    history = [("Who founded Rome?", "Romulus [1]."), ("When?", "In 753 BC [2].")]
    msgs = rewrite_messages("Where was he born?", history)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "standalone question" in msgs[0]["content"] and "Output only the question" in msgs[0]["content"]
    assert msgs[1]["content"] == ("Chat history:\nUser: Who founded Rome?\nAssistant: Romulus [1].\n"
                                  "User: When?\nAssistant: In 753 BC [2].\n\n"
                                  "Follow-up question: Where was he born?\nStandalone question:")
    many = [(f"q{i}", f"a{i}") for i in range(6)]
    content = rewrite_messages("next?", many)[1]["content"]
    assert "q2" not in content and "q3" in content and "q5" in content
