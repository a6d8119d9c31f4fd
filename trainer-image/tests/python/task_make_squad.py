"""Builds a small SQuAD v1.1 data set from real English text (the license
texts in /usr/share/common-licenses) that a tiny model learns from scratch
within a minute, for the task learning test. Deterministic for a given --seed.

  python task_make_squad.py --out DIR [--seed 0] [--train 800] [--dev 200]

Each context is three license sentences with two facts placed among them
("The licensor is Copyright." / "The year is 2007.", values drawn from the
text or at random); each question asks for one of the two facts ("What is
the year?"), so the answer depends on the question and lies in the context.
Writes DIR/{train,dev}.json.
"""
import argparse
import json
import os
import random
import re

SOURCES = ["Apache-2.0", "GPL-3", "MPL-2.0", "Artistic", "LGPL-2.1"]
KEYS = ["licensor", "version", "year", "author", "owner"]


def sentences():
    out = []
    for name in SOURCES:
        path = os.path.join("/usr/share/common-licenses", name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = " ".join(f.read().split())
        out += [s for s in re.split(r"(?<=[.;:])\s+", text) if 6 <= len(s.split()) <= 25]
    if len(out) < 50:
        raise SystemExit("need the license texts of /usr/share/common-licenses")
    return out


def value(rng, key, words):
    if key == "version":
        return f"{rng.randint(1, 9)}.{rng.randint(0, 9)}"
    if key == "year":
        return str(rng.randint(1980, 2030))
    return rng.choice(words)


def split(rng, sents, words, n, prefix):
    data, made = [], 0
    while made < n:
        keys = rng.sample(KEYS, 2)
        vals = [value(rng, k, words) for k in keys]
        parts = rng.sample(sents, 3)
        facts = [f"The {k} is {v}." for k, v in zip(keys, vals)]
        for f in facts:
            parts.insert(rng.randrange(len(parts) + 1), f)
        context = " ".join(parts)
        qas = []
        for k, v, f in zip(keys, vals, facts):
            start = context.index(f) + len(f"The {k} is ")
            assert context[start : start + len(v)] == v
            qas.append({"id": f"{prefix}{made}", "question": f"What is the {k}?",
                        "answers": [{"text": v, "answer_start": start}]})
            made += 1
        data.append({"title": f"licenses-{len(data)}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.1", "data": data}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=800)
    ap.add_argument("--dev", type=int, default=200)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sents = sentences()
    words = sorted({w for s in sents for w in re.findall(r"\b[A-Z][a-z]{3,}\b", s)})
    os.makedirs(args.out, exist_ok=True)
    for name, n in (("train", args.train), ("dev", args.dev)):
        with open(os.path.join(args.out, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(split(rng, sents, words, n, f"{name}-"), f)


if __name__ == "__main__":
    main()
