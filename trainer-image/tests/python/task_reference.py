"""Recomputes a split's metrics from the data files and a predictions file,
independently of the trainer (the task_* tests compare them with ours).

Reads one JSON request on stdin, writes {"metrics": {...}} on stdout (names
without the val_/test_ prefix, classification scores x100):
  {"task": "squad", "data": FILE, "predictions": FILE}
      -> official evaluate-v1.1.py exact_match, f1
  {"task": "token", "text": FILE, "labels": FILE, "predictions": FILE, "label_names": [...]}
      -> word-level accuracy and macro precision/recall/f1 (scikit-learn's
         classification_report over the labels seen); checks one predicted
         label per word on every line
  {"task": "text", "data": FILE, "predictions": FILE, "class_names": [...] or null, "header": bool}
      -> accuracy, macro precision/recall/f1
  {"task": "relation", same as text, "negative": NAME or null}
      -> accuracy, micro precision/recall/f1 over every class but the negative one
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metrics_reference import report, squad_evaluate  # noqa: E402


def lines(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n") if text else []


def class_id(label, names):
    label = label.strip()
    if label.isdigit() and int(label) < len(names):
        return int(label)
    return names.index(label) if label in names else None


def read_tsv(path, names, header):
    gold = []
    for i, line in enumerate(lines(path)):
        if header and i == 0:
            continue
        sentence, label = line.rsplit("\t", 1)
        cid = class_id(label, names)
        if cid is None and i == 0:
            continue
        assert cid is not None, f"{path}:{i + 1}: bad label {label!r}"
        gold.append(cid)
    return gold


def pct(scores):
    return {"precision": 100 * scores[0], "recall": 100 * scores[1], "f1": 100 * scores[2]}


def main():
    req = json.load(sys.stdin)
    task = req["task"]
    if task == "squad":
        with open(req["data"], encoding="utf-8") as f:
            dataset = json.load(f)["data"]
        with open(req["predictions"], encoding="utf-8") as f:
            preds = json.load(f)
        metrics = squad_evaluate(dataset, preds)
    elif task == "token":
        names = req["label_names"]
        ids = {n: i for i, n in enumerate(names)}
        words, gold_lines, pred_lines = lines(req["text"]), lines(req["labels"]), lines(req["predictions"])
        assert len(words) == len(gold_lines) == len(pred_lines), "line counts differ"
        y_true, y_pred = [], []
        for i, (w, g, p) in enumerate(zip(words, gold_lines, pred_lines)):
            w, g, p = w.split(), g.split(), p.split()
            assert len(w) == len(g) == len(p), f"line {i + 1}: {len(w)} words, {len(g)} labels, {len(p)} predictions"
            y_true += [ids[x] for x in g]
            y_pred += [ids[x] for x in p]
        r = report(y_true, y_pred, None, None, 4)
        metrics = {"accuracy": 100 * r["accuracy"], **pct(r["macro"])}
    elif task in ("text", "relation"):
        names = req["class_names"]
        gold = read_tsv(req["data"], names, req.get("header", False))
        pred = [class_id(l, names) for l in lines(req["predictions"])]
        assert len(pred) == len(gold), f"{len(pred)} predictions for {len(gold)} sentences"
        if task == "text":
            r = report(gold, pred, None, None, 4)
            metrics = {"accuracy": 100 * r["accuracy"], **pct(r["macro"])}
        else:
            neg = req.get("negative")
            kept = [i for i, n in enumerate(names) if n != neg]
            r = report(gold, pred, kept, None, 4)
            metrics = {"accuracy": 100 * r["accuracy"], **pct(r["micro"])}
    else:
        raise SystemExit(f"unknown task {task}")
    json.dump({"metrics": metrics}, sys.stdout)


if __name__ == "__main__":
    main()
