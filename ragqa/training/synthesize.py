"""QA data from a document collection (``ragqa data synthesize``): the generator proposes an answer
span and a question for passages of an index, and only pairs that pass every filter are kept.

For each sampled passage:
  1. optionally summarise it first when it is long (the proposal then reads the summary; the
     answer must still occur in the passage itself);
  2. a few-shot prompt asks for ``Answer: <a short span copied from the passage>`` and
     ``Question: <a question whose answer it is>``;
  3. filters, each counted in the returned stats:
       - ``unparsed``       no "Answer:" / "Question:" lines in the output
       - ``not_in_passage`` the answer does not occur in the passage (or is over 12 words)
       - ``copied``         the question copies 8+ consecutive words of the passage, or
                            contains the answer
       - ``duplicate``      the same question again, or one with the same answer whose words
                            overlap a kept question's by 60%+ (Jaccard)
       - ``unanswerable``   asked back with the passage (the answering prompt), the generator's
                            answer has token F1 < 0.5 against the proposed answer
  4. survivors become qa records with provenance (doc, chunk, model output, check answer).

**Distillation** (``--teacher MODEL``): a second, usually bigger, generator answers every proposed
question from its passage with the answering prompt, and its answer is the record's target (the
proposed span stays among the ``answers`` it is scored against). The answerability filter is then
the teacher's answer agreeing with the proposal, so a student trained on the data learns the
teacher's answers on the user's own documents (``ragqa train --model FAST --data DIR``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from ragqa.training.data import Record

FEW_SHOT = [
    ("The Eiffel Tower was completed in 1889 as the entrance arch to the World's Fair. It is 330 "
     "metres tall and was the tallest man-made structure in the world until 1930.",
     "1889", "In what year was the Eiffel Tower completed?"),
    ("Photosynthesis converts light energy into chemical energy. In plants it takes place in the "
     "chloroplasts, which contain the green pigment chlorophyll.",
     "the chloroplasts", "Where does photosynthesis take place in plants?"),
]
SYSTEM = ("You write reading-comprehension questions. Given a passage, pick a short answer (a name, "
          "number, date or short phrase copied exactly from the passage) and write one question "
          "that this answer answers. The question must make sense without the passage and must "
          "not contain the answer. Reply in exactly two lines: 'Answer: ...' then 'Question: ...'.")
MAX_ANSWER_WORDS = 12
COPY_NGRAM = 8
DUP_JACCARD = 0.6
MIN_CHECK_F1 = 0.5


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _norm(text: str) -> str:
    return " ".join(_words(text))


def proposal_messages(passage: str) -> list[dict]:
    msgs = [{"role": "system", "content": SYSTEM}]
    for text, answer, question in FEW_SHOT:
        msgs.append({"role": "user", "content": f"Passage: {text}"})
        msgs.append({"role": "assistant", "content": f"Answer: {answer}\nQuestion: {question}"})
    msgs.append({"role": "user", "content": f"Passage: {passage}"})
    return msgs


def parse_proposal(text: str) -> tuple[str, str] | None:
    """``("1889", "In what year ...?")`` from the model's two lines, or None."""
    answer = re.search(r"answer\s*:\s*(.+)", text, re.I)
    question = re.search(r"question\s*:\s*(.+)", text, re.I)
    if not answer or not question:
        return None
    a = answer.group(1).strip().strip('"').rstrip(".").strip()
    q = question.group(1).strip().strip('"').strip()
    if not a or not q:
        return None
    return a, (q if q.endswith("?") else q + "?")


def copies_passage(question: str, passage: str, answer: str, n: int = COPY_NGRAM) -> bool:
    """True when the question holds ``n`` consecutive words of the passage, or the answer."""
    q, p = _words(question), _words(passage)
    if _norm(answer) and f" {_norm(answer)} " in f" {' '.join(q)} ":
        return True
    grams = {tuple(p[i:i + n]) for i in range(len(p) - n + 1)}
    return any(tuple(q[i:i + n]) in grams for i in range(len(q) - n + 1))


def is_duplicate(question: str, answer: str, kept: list[tuple[set[str], str]],
                 threshold: float = DUP_JACCARD) -> bool:
    """True for a question already kept, or a rewording of one with the same answer (questions
    about different things often share most of their words: "What is the capital of X?")."""
    words, ans = set(_words(question)), _norm(answer)
    for k_words, k_ans in kept:
        if words == k_words:
            return True
        if ans == k_ans and len(words & k_words) / max(1, len(words | k_words)) >= threshold:
            return True
    return False


def teacher_target(answer: str) -> str:
    """The teacher's answer as a record's output: citations and a closing full stop removed, as
    the training target adds the citation of the gold passage itself ("1960. [1]" -> "1960")."""
    from ragqa.evaluation.evaluate import answer_text

    return answer_text(answer).strip().rstrip(".").strip()


def synthesize(index, generator, *, n_passages: int = 50, variant: str = "base", seed: int = 0,
               summarize_over: int = 0, min_words: int = 40, max_new_tokens: int = 64,
               teacher=None, teacher_variant: str = "base", teacher_name: str = "",
               teacher_template: str | None = None,
               log: Callable[[str], None] | None = None) -> tuple[list[Record], dict]:
    """(records, stats) for up to ``n_passages`` passages sampled from ``index`` (see module doc);
    with ``teacher`` (a generator) its answers, asked with ``teacher_template`` (default: the qa
    template), are the targets (distillation)."""
    from ragqa.evaluation.evaluate import answer_text, token_f1
    from ragqa.generators.engine import GenerationSettings
    from ragqa.answering.prompting import Passage, build_plain_prompt, build_prompt, load_template, render

    settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=1.0)
    qa_template, sum_template = load_template("qa"), load_template("summarize")
    tokenizer = generator.tokenizer
    budget = min(1536, generator.context_length - max_new_tokens)
    checker, check_variant = (teacher, teacher_variant) if teacher is not None else (generator, variant)
    check_budget = min(1536, checker.context_length - max_new_tokens)
    check_template = load_template(teacher_template) if teacher is not None and teacher_template else qa_template
    ids = list(index.chunks.chunk_ids())
    random.Random(seed).shuffle(ids)
    stats = {"passages": 0, "proposed": 0, "unparsed": 0, "not_in_passage": 0, "copied": 0,
             "duplicate": 0, "unanswerable": 0, "kept": 0, "summarized": 0}
    kept_words: list[tuple[set[str], str]] = []
    records: list[Record] = []
    for start in range(0, len(ids), 64):
        if stats["passages"] >= n_passages:
            break
        rows = index.chunks.get(ids[start:start + 64])
        for cid in ids[start:start + 64]:
            row = rows.get(cid)
            if row is None or len(_words(row["text"])) < min_words:
                continue
            if stats["passages"] >= n_passages:
                break
            stats["passages"] += 1
            passage = row["text"].strip()
            source = passage
            if summarize_over and len(passage.split()) > summarize_over:
                prompt = build_plain_prompt(passage, sum_template, tokenizer, max_prompt_tokens=budget)
                source = generator.generate(prompt.text, variant=variant, settings=settings).text.strip() or passage
                stats["summarized"] += 1
            out = generator.generate(render(proposal_messages(source), tokenizer), variant=variant,
                                     settings=settings).text
            stats["proposed"] += 1
            parsed = parse_proposal(out)
            if parsed is None:
                stats["unparsed"] += 1
                continue
            answer, question = parsed
            if len(answer.split()) > MAX_ANSWER_WORDS or f" {_norm(answer)} " not in f" {_norm(passage)} ":
                stats["not_in_passage"] += 1
                continue
            if copies_passage(question, passage, answer):
                stats["copied"] += 1
                continue
            if is_duplicate(question, answer, kept_words):
                stats["duplicate"] += 1
                continue
            check_prompt = build_prompt(question, [Passage(text=passage, title=row["title"], doc_id=row["doc_id"])],
                                        check_template, checker.tokenizer, max_prompt_tokens=check_budget)
            check = answer_text(checker.generate(check_prompt.text, variant=check_variant, settings=settings).text)
            f1 = token_f1(check, [answer])
            if f1 < MIN_CHECK_F1:
                stats["unanswerable"] += 1
                continue
            target = teacher_target(check) if teacher is not None else answer
            if not target:
                stats["unanswerable"] += 1
                continue
            kept_words.append((set(_words(question)), _norm(answer)))
            stats["kept"] += 1
            provenance = {"chunk_id": cid, "doc_id": row["doc_id"], "proposal": out.strip(),
                          "check_answer": check, "check_f1": round(f1, 3), "summarized": source != passage}
            if teacher is not None:
                provenance["teacher"] = teacher_name or "teacher"
            records.append(Record(
                id=f"syn-{cid}", task="qa", input=question, output=target,
                answers=list(dict.fromkeys([target, answer])), context=passage, title=row["title"],
                doc=row["doc_id"], source=str(index.directory), provenance=provenance))
            if log:
                log(f"[{stats['kept']}/{stats['passages']}] {question} -> {target}")
    return records, stats
