import threading

import pytest

from ragqa import Index
from ragqa.answering.pipeline import Answer, RagQA, cited_numbers, is_abstention
from ragqa.testing import FakeGenerator


@pytest.fixture
def qa(tmp_path, settings):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "paris.txt").write_text("The Eiffel Tower is in Paris. It was finished in 1889.", encoding="utf-8")
    (docs / "moon.md").write_text("# Moon\n\nThe Moon orbits the Earth every 27 days. It has no air.", encoding="utf-8")
    Index.build([docs], tmp_path / "idx", settings)
    s = settings.replace(abstain_threshold=0.2, top_k=2)
    with RagQA.open(tmp_path / "idx", s, generator=FakeGenerator()) as rag:
        yield rag


def test_ask_answers_with_cited_sources(qa):
    ans = qa.ask("Where is the Eiffel Tower?")
    assert isinstance(ans, Answer) and not ans.abstained
    assert ans.text.startswith("The Eiffel Tower is in Paris.") and "[1]" in ans.text
    assert ans.sources[0].n == 1 and ans.sources[0].doc_id == "paris.txt" and ans.sources[0].cited
    assert ans.variant == "base"
    assert {"retrieve_ms", "prompt_tokens", "generate_ms", "tokens_per_s"} <= set(ans.timings)
    js = ans.to_json()
    assert {"answer", "abstained", "variant", "sources", "timings"} <= set(js)
    assert {"doc_id", "score", "text"} <= set(js["sources"][0])


def test_nothing_relevant_abstains_without_generating(qa):
    qa.settings = qa.settings.replace(abstain_threshold=0.99)
    ans = qa.ask("Where is the Eiffel Tower?")
    assert ans.abstained and ans.text == "I don't know." and "threshold" in ans.reason
    assert qa.generator.calls == []


def test_gate_adds_term_coverage_to_similarity(qa):
    question = "Where is the Eiffel Tower?"
    retrieval = qa.index.retrieve_batch([question], k=2, coverage=True)[0]
    sim, cov = retrieval.top_similarity, retrieval.coverage
    assert cov == 1.0
    # a threshold just above the similarity: similarity alone abstains, with coverage added it answers
    qa.settings = qa.settings.replace(abstain_threshold=sim + 0.05, abstain_coverage_weight=0.0)
    assert qa.ask(question).abstained
    qa.settings = qa.settings.replace(abstain_coverage_weight=0.1)
    assert qa.relevance(retrieval) == pytest.approx(sim + 0.1)
    assert not qa.ask(question).abstained
    qa.settings = qa.settings.replace(abstain_threshold=sim + 0.15)
    calls = len(qa.generator.calls)
    ans = qa.ask(question)
    assert ans.abstained and "term coverage 1.000" in ans.reason and len(qa.generator.calls) == calls


def test_model_abstention_is_flagged():
    assert is_abstention("I don't know.") and is_abstention("  I do not know the answer")
    assert not is_abstention("Paris [1]")
    assert cited_numbers("It is Paris [1], see also [3].") == {1, 3}


def test_variant_is_used_and_reported(qa):
    ans = qa.ask("Where is the Eiffel Tower?", variant="fake-lora")
    assert ans.variant == "fake-lora" and "(fake-lora)" in ans.text
    assert qa.generator.calls[-1][0] == "fake-lora"
    assert [v["name"] for v in qa.variants()] == ["base", "fake-lora"]


def test_stream_yields_pieces_then_answer(qa):
    items = list(qa.stream("Where is the Eiffel Tower?"))
    assert isinstance(items[-1], Answer)
    assert "".join(items[:-1]) == items[-1].text
    assert items[-1].sources[0].cited


def test_follow_up_is_rewritten_with_history(qa):
    history = [("Where is the Eiffel Tower?", "In Paris [1].")]
    ans = qa.ask("When was it finished?", history=history)
    assert qa.generator.calls[0][0] == "base" and "Where is the Eiffel Tower?" in qa.generator.calls[0][1]
    assert not ans.abstained and ans.sources


class Rewriter(FakeGenerator):
    """Answers rewrite prompts with ``reply`` (streamed word by word, counting what was read)."""

    def __init__(self, reply: str):
        super().__init__()
        self.reply, self.pieces_read = reply, 0

    def stream(self, prompt, variant="base", settings=None):
        if "Standalone question:" not in prompt:
            yield from super().stream(prompt, variant, settings)
            return
        self.calls.append((variant, prompt))
        for i, word in enumerate(self.reply.split(" ")):
            self.pieces_read += 1
            yield word if i == 0 else " " + word


def test_a_question_that_stands_alone_is_not_rewritten(qa):
    ans = qa.ask("When was the Eiffel Tower in Paris finished?", history=[("Where is the Moon?", "Up [1].")])
    assert "Standalone question:" not in qa.generator.calls[0][1] and "rewrite_ms" not in ans.timings
    assert ans.standalone_question is None


def test_the_rewrite_stops_at_its_first_line(qa):
    qa.generator = Rewriter("When was the Eiffel Tower finished?\nIt was finished in 1889 and " + "more " * 40)
    ans = qa.ask("When was it finished?", history=[("Where is the Eiffel Tower?", "In Paris [1].")])
    assert ans.standalone_question == "When was the Eiffel Tower finished?" and "rewrite_ms" in ans.timings
    assert qa.generator.pieces_read < 12  # stopped after the first line, not 48 tokens later


@pytest.mark.parametrize("reply", [
    "The best recipe for sourdough pizza dough would depend on personal preference. However, I will provide",
    "What is the whole long history of every tower ever built in Paris and in the rest of France and Europe "
    "and the world, with dates?",
    ""])
def test_a_rewrite_that_is_no_question_keeps_the_user_s_question(qa, reply):
    qa.generator = Rewriter(reply)
    ans = qa.ask("And what about that?", history=[("Where is the Eiffel Tower?", "In Paris [1].")])
    assert ans.standalone_question is None  # searched with the user's own words


def test_needs_rewrite_and_usable_rewrite():
    from ragqa.answering.pipeline import needs_rewrite, usable_rewrite

    assert needs_rewrite("When was it finished?") and needs_rewrite("And in 1970?")
    assert needs_rewrite("What about penguins?")
    assert not needs_rewrite("When was the Eiffel Tower in Paris finished?")
    assert usable_rewrite("When was it finished?", "When was the Eiffel Tower finished?")
    assert not usable_rewrite("When was it finished?", "It was finished in 1889.")


def test_threads_each_get_their_own_variant(qa):
    qa.generator.delay_s = 0.01
    errors = []

    def worker(variant):
        for _ in range(5):
            ans = qa.ask("Where is the Eiffel Tower?", variant=variant)
            if ans.variant != variant or (variant != "base") != ("(fake-lora)" in ans.text):
                errors.append((variant, ans.text))

    threads = [threading.Thread(target=worker, args=(v,)) for v in ("base", "fake-lora", "base", "fake-lora")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []


def test_few_shot_examples_are_chosen_by_similarity(qa, tmp_path):
    ex = tmp_path / "examples.jsonl"
    ex.write_text('{"question": "Where is Big Ben?", "answer": "London [1]"}\n'
                  '{"question": "How do bees make honey?", "answer": "From nectar [1]"}\n')
    qa.settings = qa.settings.replace(examples_file=str(ex), shots=1)
    qa.ask("Where is the Eiffel Tower?")
    prompt = qa.generator.calls[-1][1]
    assert "Where is Big Ben?" in prompt and "bees" not in prompt


def test_uncited_answer_gets_the_citation_of_its_passage():
    from ragqa.answering.pipeline import attribute

    passages = ["The Gemini program ran from 1962 to 1966.",
                "Apollo 11 landed on July 20, 1969 with Armstrong, Collins and Aldrin."]
    assert attribute("Apollo 11 landed on July 20, 1969.", passages) == 2
    assert attribute("Bananas are yellow.", passages) is None
    assert attribute("", passages) is None


def test_pipeline_adds_missing_citation(qa):
    class Uncited(FakeGenerator):
        def _answer(self, prompt, variant):
            return "The Eiffel Tower is in Paris."

    qa.generator = Uncited()
    ans = qa.ask("Where is the Eiffel Tower?")
    assert ans.text == "The Eiffel Tower is in Paris. [1]" and ans.auto_cited and ans.sources[0].cited


def test_stages_are_announced_before_generation_and_prompt_is_kept(qa):
    heard = []
    items = list(qa.stream("Where is the Eiffel Tower?", status=heard.append))
    ans = items[-1]
    assert [s.stage for s in heard] == ["retrieve", "read"]
    assert heard[-1].message == f"reading {len(ans.sources)} passages, {ans.timings['prompt_tokens']} tokens"
    # the prompt the status carries is exactly what the generator was given, and the answer keeps it
    assert heard[-1].prompt.text == qa.generator.calls[-1][1] == ans.prompt
    assert "prompt" not in ans.to_json() and ans.to_json(prompt=True)["prompt"] == ans.prompt


def test_timings_split_prompt_reading_from_decoding(qa):
    ans = qa.ask("Where is the Eiffel Tower?")
    t = ans.timings
    assert {"first_token_ms", "decode_ms", "prompt_tokens_per_s", "decode_tokens_per_s", "new_tokens"} <= set(t)
    assert t["first_token_ms"] + t["decode_ms"] == pytest.approx(t["generate_ms"], abs=0.2)


def test_stage_timings_of_a_long_prompt_and_a_short_answer():
    from ragqa.generators.engine import describe_timings, stage_timings

    # a 2-token answer after a 71 s prompt: the decode rate is not dragged down by the prompt
    t = stage_timings(prompt_tokens=961, new_tokens=2, generate_ms=71_100.0, first_token_ms=71_000.0)
    assert t["decode_tokens_per_s"] == pytest.approx(10.0)
    assert t["prompt_tokens_per_s"] == pytest.approx(961 / 71.0, abs=0.05)
    assert t["tokens_per_s"] == pytest.approx(0.03, abs=0.01)  # the whole-call figure, kept
    # every duration in seconds; no rate over fewer than 4 tokens (it said "0.0 tokens/s")
    assert describe_timings(t) == ("read 961 prompt tokens in 71 s (14 tokens/s), "
                                   "wrote 2 tokens in 0.10 s more")
    one = stage_timings(prompt_tokens=10, new_tokens=1, generate_ms=50.0, first_token_ms=50.0)
    assert one["decode_tokens_per_s"] is None and "wrote 1 token in 0.00 s more" in describe_timings(one)
    many = stage_timings(prompt_tokens=10, new_tokens=21, generate_ms=9_700.0, first_token_ms=5_100.0)
    assert describe_timings(many).endswith("wrote 21 tokens in 4.6 s more (4.3 tokens/s)")


def test_unknown_variant_is_refused_before_retrieval(qa, monkeypatch):
    from ragqa.errors import ModelError

    def no_retrieval(*a, **k):
        raise AssertionError("retrieval ran before the variant was checked")

    monkeypatch.setattr(qa.index, "retrieve_batch", no_retrieval)
    with pytest.raises(ModelError, match="no-such-variant"):
        qa.ask("Where is the Eiffel Tower?", variant="no-such-variant")
    assert qa.generator.calls == []


def test_a_variant_reads_the_template_it_was_trained_with(qa):
    class Trained(FakeGenerator):
        def variant_template(self, name):
            return {"fake-lora": "qa-concise", "sum-lora": "summarize", "odd-lora": "no-such-template",
                    "mixed-lora": "summarize,qa-concise"}.get(name)

    qa.generator = Trained()
    qa.settings = qa.settings.replace(template="qa")
    assert qa.template_for("fake-lora") == "qa-concise" and qa.template_for("base") == "qa"
    # a card naming a template that does not answer questions, or none ragqa has: the configured one
    assert qa.template_for("sum-lora") == "qa" and qa.template_for("odd-lora") == "qa"
    assert qa.template_for("fake-lora", "qa") == "qa"  # asked for explicitly: that one
    # trained on mixed tasks (the card lists them all): the one that answers questions
    assert qa.template_for("mixed-lora") == "qa-concise"
    from ragqa.answering.prompting import load_template

    qa.ask("Where is the Eiffel Tower?", variant="fake-lora")
    assert load_template("qa-concise").system.split("{")[0][:40] in qa.generator.calls[-1][1]


def test_repetition_penalty_comes_from_the_setting_then_the_template(qa):
    from ragqa.answering.pipeline import generation_settings
    from ragqa.answering.prompting import load_template

    assert load_template("qa-short").repetition_penalty == 1.0 and load_template("qa").repetition_penalty is None
    s = qa.settings.replace(repetition_penalty=None)
    assert generation_settings(s, load_template("qa-short")).repetition_penalty == 1.0
    assert generation_settings(s, load_template("summarize")).repetition_penalty == 1.1
    assert generation_settings(s.replace(repetition_penalty=1.3), load_template("qa-short")).repetition_penalty == 1.3


def test_template_penalty_must_be_a_positive_number(tmp_path):
    from ragqa.errors import ConfigError
    from ragqa.answering.prompting import load_template

    bad = tmp_path / "bad.toml"
    bad.write_text('system = "Answer."\nrepetition_penalty = "high"\n')
    with pytest.raises(ConfigError, match="repetition_penalty"):
        load_template(bad)


def test_public_api_is_exported():
    import ragqa

    assert set(ragqa.__all__) == {
        "Answer", "BuildReport", "ConfigError", "Document", "EmbedderMismatch", "GenerationSettings",
        "Generator", "Hit", "Index", "IndexCorrupt", "IndexLocked", "IndexNotFound", "IndexWriteError",
        "InputNotFound", "LoadWarning", "ModelError", "RagQA", "RagqaError", "Settings", "Source", "Status",
        "verify"}
    assert all(getattr(ragqa, name) is not None for name in ragqa.__all__)
    from ragqa import RagQA  # README's Python example starts with this line

    assert RagQA.open and RagQA.ask


def test_import_ragqa_and_the_cli_help_load_no_heavy_library():
    """`import ragqa` and `ragqa --help` stay fast because torch, transformers, FAISS and
    LangChain load only when used (measured, not asserted: docs/development.md)."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "faiss", "langchain_core", "sentence_transformers", "peft")
    probe = ("import sys, ragqa; from ragqa.apps.cli import main; "
             "code = main(['--help']); "
             f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
