"""Reference-based text overlap: corpus BLEU (sacrebleu) and mean ROUGE F1 (rouge-score)."""

from __future__ import annotations

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def bleu_rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """{'bleu': 0..100, 'rouge1' / 'rouge2' / 'rougeL': mean F1 in 0..1} for aligned lists."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("bleu_rouge needs at least one prediction")
    metrics = {"bleu": float(sacrebleu.corpus_bleu(predictions, [references]).score)}
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = [scorer.score(reference, prediction) for prediction, reference in zip(predictions, references)]
    for rouge_type in ROUGE_TYPES:
        metrics[rouge_type] = sum(score[rouge_type].fmeasure for score in scores) / len(scores)
    return metrics
