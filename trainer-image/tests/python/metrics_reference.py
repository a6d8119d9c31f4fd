"""Reference metrics, re-implemented from the official definitions.

Reads one JSON request on stdin, writes the JSON answer on stdout:
  {"op": "squad", "dataset": <SQuAD "data" list>, "predictions": {id: text}}
      -> the official evaluate-v1.1.py logic: {"exact_match", "f1"}
  {"op": "normalize", "texts": [...]} -> {"normalized": [...]}
  {"op": "report", "y_true", "y_pred", "labels" (or null), "names" (or null), "digits"}
      -> scikit-learn classification_report (zero_division=0) without numpy:
         {"text", "per_class": [[p, r, f1, support]...], "accuracy", "macro", "weighted", "micro"}
"""
import json
import re
import string
import sys
from collections import Counter


# ---- SQuAD v1.1 (evaluate-v1.1.py) ----
def normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction, ground_truth):
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, gt) for gt in ground_truths)


def squad_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                ground_truths = [a["text"] for a in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += metric_max_over_ground_truths(exact_match_score, prediction, ground_truths)
                f1 += metric_max_over_ground_truths(f1_score, prediction, ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


# ---- scikit-learn classification_report ----
def prf(tp, pred, true):
    p = tp / pred if pred else 0.0
    r = tp / true if true else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def report(y_true, y_pred, labels, names, digits):
    seen = sorted(set(y_true) | set(y_pred))
    if labels is None:
        labels = seen
    micro_is_accuracy = set(labels) >= set(seen)
    if names is None:
        names = [str(l) for l in labels]
    rows = []
    tps = preds = trues = 0
    for l in labels:
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == l and p == l)
        pr = sum(1 for p in y_pred if p == l)
        su = sum(1 for t in y_true if t == l)
        tps, preds, trues = tps + tp, preds + pr, trues + su
        rows.append(list(prf(tp, pr, su)) + [su])
    micro = list(prf(tps, preds, trues)) + [trues]
    n = len(rows)
    macro = [sum(r[i] for r in rows) / n for i in range(3)] + [trues]
    weighted = [sum(r[i] * r[3] for r in rows) / trues if trues else 0.0 for i in range(3)] + [trues]
    # text, with scikit-learn's format strings
    headers = ["precision", "recall", "f1-score", "support"]
    width = max(max(len(cn) for cn in names), len("weighted avg"), digits)
    head_fmt = "{:>{width}s} " + " {:>9}" * len(headers)
    text = head_fmt.format("", *headers, width=width)
    text += "\n\n"
    row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    for name, r in zip(names, rows):
        text += row_fmt.format(name, *r, width=width, digits=digits)
    text += "\n"
    for heading, avg in (("micro avg", micro), ("macro avg", macro), ("weighted avg", weighted)):
        if heading == "micro avg" and micro_is_accuracy:
            row_fmt_accuracy = "{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n"
            text += row_fmt_accuracy.format("accuracy", "", "", *avg[2:], width=width, digits=digits)
        else:
            text += row_fmt.format(heading, *avg, width=width, digits=digits)
    correct = sum(1 for t, p in zip(y_true, y_pred) if t == p)
    return {
        "text": text,
        "per_class": rows,
        "micro": micro,
        "macro": macro,
        "weighted": weighted,
        "accuracy": correct / len(y_true) if y_true else 0.0,
    }


def main():
    req = json.load(sys.stdin)
    op = req["op"]
    if op == "squad":
        out = squad_evaluate(req["dataset"], req["predictions"])
    elif op == "normalize":
        out = {"normalized": [normalize_answer(t) for t in req["texts"]]}
    elif op == "report":
        out = report(req["y_true"], req["y_pred"], req["labels"], req["names"], req["digits"])
    else:
        raise SystemExit(f"unknown op {op}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
