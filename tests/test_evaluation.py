import math

import pytest

from ragqa.evaluation.evaluate import (exact_match, mrr_at_k, ndcg_at_k, normalize_answer, recall_at_k, retrieval_scores,
                              read_qrels, token_f1)


@pytest.mark.parametrize("pred,golds,em,f1", [
    # cases worked by hand with the official SQuAD v1.1 evaluation script's rules
    ("Denver Broncos", ["Denver Broncos", "Broncos"], 1.0, 1.0),
    ("the Denver Broncos.", ["Denver Broncos"], 1.0, 1.0),
    ("Broncos of Denver", ["Denver Broncos"], 0.0, 0.8),
    ("Carolina", ["Carolina Panthers"], 0.0, 2 / 3),
    ("Levi's Stadium in Santa Clara", ["Levi's Stadium"], 0.0, 2 * (2 / 5) * 1 / (2 / 5 + 1)),
    ("", ["anything"], 0.0, 0.0),
])
def test_squad_em_f1(pred, golds, em, f1):
    assert exact_match(pred, golds) == em
    assert token_f1(pred, golds) == pytest.approx(f1)


def test_normalize():
    assert normalize_answer("An  Apple, the pie!") == "apple pie"


def test_ndcg_hand_computed():
    # one relevant doc at rank 2: 1/log2(3)
    assert ndcg_at_k(["a", "b", "c"], {"b": 1}, 10) == pytest.approx(1 / math.log2(3))
    # two relevant at ranks 1 and 3 of 2 relevant: (1 + 1/2) / (1 + 1/log2(3))
    assert ndcg_at_k(["a", "x", "b"], {"a": 1, "b": 1}, 10) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    # graded: gains 2 at rank 1, 1 missing -> 2 / (2 + 1/log2(3))
    assert ndcg_at_k(["a"], {"a": 2, "b": 1}, 10) == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert ndcg_at_k(["x", "a"], {"a": 1}, 1) == 0.0


def test_recall_and_mrr():
    assert recall_at_k(["a", "b", "c"], {"c": 1, "d": 1}, 2) == 0.0
    assert recall_at_k(["a", "b", "c"], {"c": 1, "d": 1}, 3) == 0.5
    assert mrr_at_k(["x", "y", "a"], {"a": 1}, 10) == pytest.approx(1 / 3)


def test_retrieval_scores_and_qrels(tmp_path):
    q = tmp_path / "qrels.tsv"
    q.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\nq3\td9\t0\n")
    qrels = read_qrels(q)
    assert qrels == {"q1": {"d1": 1}, "q2": {"d3": 1}, "q3": {"d9": 0}}
    scores = retrieval_scores({"q1": ["d1"], "q2": ["d2", "d3"]}, qrels, ks=(1, 10))
    assert scores["queries"] == 2  # q3 has no relevant document
    assert scores["ndcg@1"] == 0.5 and scores["recall@10"] == 1.0 and scores["mrr@10"] == pytest.approx(0.75)


def test_citations_are_not_scored():
    from ragqa.evaluation.evaluate import answer_text

    assert answer_text("Paris [2].") == "Paris."
    assert exact_match(answer_text("Denver Broncos [1][3]"), ["Denver Broncos"]) == 1.0


def test_rouge_matches_rouge_score_reference_example():
    """The example in rouge-score's README (without stemming it gives 0.7059 / 0.2667 / 0.5882)."""
    from rouge_score import rouge_scorer

    from ragqa.evaluation.evaluate import rouge

    ref, pred = "The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log."
    plain = rouge_scorer.RougeScorer(["rouge1", "rougeL"]).score(ref, pred)
    assert round(plain["rouge1"].fmeasure, 4) == 0.7059 and round(plain["rougeL"].fmeasure, 4) == 0.5882
    ours = rouge([pred], [ref])[0]
    assert ours["rouge1"] == pytest.approx(0.7059, abs=1e-3)  # stemming changes nothing here
    assert set(ours) == {"rouge1", "rouge2", "rougeL"}


def test_bleu_matches_sacrebleu_reference_example():
    """sacrebleu's README example scores 48.53 against two reference streams; with the first stream
    alone, corpus BLEU equals sacrebleu's own computation."""
    import sacrebleu

    from ragqa.evaluation.evaluate import bleu

    sys_ = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    refs = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
            ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    assert round(sacrebleu.corpus_bleu(sys_, refs).score, 2) == 48.53
    assert bleu(sys_, refs[0]) == pytest.approx(sacrebleu.corpus_bleu(sys_, [refs[0]]).score)


def test_faithfulness_and_abstention_pr():
    from ragqa.evaluation.evaluate import abstention_precision_recall, faithfulness

    assert faithfulness("Paris [1]", ["The tower is in Paris."]) == 1.0
    assert faithfulness("Berlin", ["The tower is in Paris."]) == 0.0
    pr = abstention_precision_recall([True, True, False, False], [False, True, False, True])
    assert pr == {"abstain_precision": 0.5, "abstain_recall": 0.5}
    assert abstention_precision_recall([False], [True]) == {"abstain_precision": None, "abstain_recall": None}
