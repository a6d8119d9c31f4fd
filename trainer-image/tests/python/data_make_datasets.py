"""Builds small, learnable data sets for the four tasks from real English text
(the license texts in /usr/share/common-licenses, or any --source files).

Test data only: the fine-tuning tests use it to check that a model learns far
above chance. Deterministic for a given --seed.

  python data_make_datasets.py --out DIR [--seed 0] [--train 400] [--dev 100] [--source FILE ...]
                               [--squad-style cloze|facts] [--squad-filler 2]

Writes, under DIR:
  squad/{train,dev}.json           SQuAD v1.1, --squad-style cloze (the default): the question
                                   is a context sentence with one word replaced by "what"; the
                                   answer is that word.
                                   --squad-style facts: each context is --squad-filler source
                                   sentences with two facts placed among them ("The year is
                                   2007." / "The city is Paris."; six keys, each with values of
                                   its own kind); each fact is asked for ("What is the year?").
                                   The answer depends on the question and follows a fixed
                                   pattern, so a tiny model initialised at random learns it in a
                                   few hundred steps (examples/tiny-cpu-squad-demo.yaml)
  token_classification/{text_train,labels_train,text_dev,labels_dev}.txt
                                   NeMo format; labels: NUM (has a digit), CAP (capitalised),
                                   PUNCT (no letter or digit), O otherwise
  text_classification/{train,dev}.tsv
                                   NeMo TSV with header; label = which source file (0..k-1)
  relation/{train,dev}.tsv, relation/label_mapping.tsv
                                   ChemProt-style: two words replaced by @CHEMICAL$ / @GENE$;
                                   relation = CPR:3 if @CHEMICAL$ comes first and they are at
                                   most 5 words apart, CPR:4 if @GENE$ comes first and at most 5
                                   apart, false otherwise
  chance.json                      the chance level of each task (majority class / 1 / k)
"""
import argparse
import glob
import json
import os
import random
import re

DEFAULT_SOURCES = ["Apache-2.0", "GPL-3", "MPL-2.0", "Artistic", "LGPL-2.1"]


def sentences_of(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = " ".join(f.read().split())
    parts = re.split(r"(?<=[.;:])\s+", text)
    return [p for p in parts if 6 <= len(p.split()) <= 40]


def load_sources(paths):
    out = []
    for p in paths:
        s = sentences_of(p)
        if len(s) >= 20:
            out.append((os.path.basename(p), s))
    if len(out) < 2:
        raise SystemExit("need at least two source files with 20+ sentences each")
    return out


def squad_split(rng, sources, n, prefix):
    data = []
    made = 0
    all_sents = [s for _, ss in sources for s in ss]
    while made < n:
        ctx_sents = rng.sample(all_sents, 4)
        context = " ".join(ctx_sents)
        qas = []
        for k in range(2):
            sent = ctx_sents[rng.randrange(len(ctx_sents))]
            words = sent.split()
            cands = [i for i, w in enumerate(words) if re.fullmatch(r"[A-Za-z]{4,}", w)]
            if not cands:
                continue
            i = rng.choice(cands)
            answer = words[i]
            question = " ".join(words[:i] + ["what"] + words[i + 1 :]) + "?"
            sent_start = context.index(sent)
            start = sent_start + len(" ".join(words[:i])) + (1 if i else 0)
            assert context[start : start + len(answer)] == answer
            qas.append({"id": f"{prefix}{made}", "question": question,
                        "answers": [{"text": answer, "answer_start": start}]})
            made += 1
            if made >= n:
                break
        if qas:
            data.append({"title": f"synthetic-{len(data)}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.1", "data": data}


# Each key's values are of their own kind (and mostly absent from the source text), so the
# model can tell which fact a question asks for from the value as well as from the key.
FACT_VALUES = {
    "year": lambda rng: str(rng.randint(1950, 2030)),
    "version": lambda rng: f"{rng.randint(1, 9)}.{rng.randint(0, 9)}",
    "date": lambda rng: f"{rng.randint(1, 28)} {rng.choice(MONTHS)}",
    "author": lambda rng: rng.choice(NAMES),
    "city": lambda rng: rng.choice(CITIES),
    "colour": lambda rng: rng.choice(COLOURS),
}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "James",
         "Karen", "Louis", "Maria", "Nora", "Oscar", "Peter", "Rachel", "Simon", "Teresa", "Victor"]
CITIES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Dublin", "Lisbon",
          "Oslo", "Tokyo", "Cairo", "Boston", "Chicago", "Toronto", "Sydney", "Moscow", "Athens"]
COLOURS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple", "brown", "grey"]


def squad_facts_split(rng, sources, n, prefix, filler):
    """Contexts of `filler` short source sentences with two "The <key> is <value>." facts
    placed among them; one question per fact ("What is the <key>?")."""
    sents = [s for _, ss in sources for s in ss if len(s.split()) <= 25]
    keys_all = sorted(FACT_VALUES)
    data, made = [], 0
    while made < n:
        keys = rng.sample(keys_all, 2)
        vals = [FACT_VALUES[k](rng) for k in keys]
        parts = rng.sample(sents, filler)
        facts = [f"The {k} is {v}." for k, v in zip(keys, vals)]
        for f in facts:
            parts.insert(rng.randrange(len(parts) + 1), f)
        context = " ".join(parts)
        qas = []
        for k, v, f in zip(keys, vals, facts):
            if made >= n:
                break
            start = context.index(f) + len(f"The {k} is ")
            assert context[start : start + len(v)] == v
            qas.append({"id": f"{prefix}{made}", "question": f"What is the {k}?",
                        "answers": [{"text": v, "answer_start": start}]})
            made += 1
        data.append({"title": f"facts-{len(data)}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.1", "data": data}


def word_label(w):
    if any(c.isdigit() for c in w):
        return "NUM"
    if not any(c.isalnum() for c in w):
        return "PUNCT"
    if w[0].isupper():
        return "CAP"
    return "O"


def token_split(rng, sources, n):
    all_sents = [s for _, ss in sources for s in ss]
    texts, labels = [], []
    for _ in range(n):
        words = rng.choice(all_sents).split()
        texts.append(" ".join(words))
        labels.append(" ".join(word_label(w) for w in words))
    return texts, labels


def text_split(rng, sources, n):
    rows = []
    for _ in range(n):
        k = rng.randrange(len(sources))
        rows.append((rng.choice(sources[k][1]).replace("\t", " "), k))
    return rows


RELATIONS = ["CPR:3", "CPR:4", "false"]


def relation_split(rng, sources, n):
    all_sents = [s for _, ss in sources for s in ss]
    rows = []
    while len(rows) < n:
        words = rng.choice(all_sents).replace("\t", " ").split()
        if len(words) < 8:
            continue
        i = rng.randrange(len(words))
        near = [k for k in range(max(0, i - 5), min(len(words), i + 6)) if k != i]
        far = [k for k in range(len(words)) if abs(k - i) > 5]
        j = rng.choice(near) if (rng.random() < 2 / 3 or not far) else rng.choice(far)
        chem_first = rng.random() < 0.5
        a, b = (i, j) if i < j else (j, i)
        words[a] = "@CHEMICAL$" if chem_first else "@GENE$"
        words[b] = "@GENE$" if chem_first else "@CHEMICAL$"
        if b - a > 5:
            label = 2
        else:
            label = 0 if chem_first else 1
        rows.append((" ".join(words), label))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--dev", type=int, default=100)
    ap.add_argument("--source", nargs="*")
    ap.add_argument("--squad-style", choices=["cloze", "facts"], default="cloze",
                    help="cloze: a sentence with one word asked for (default); facts: key/value "
                         "facts among source sentences, learnable from scratch in a few hundred steps")
    ap.add_argument("--squad-filler", type=int, default=2,
                    help="source sentences per context besides the two facts (--squad-style facts)")
    args = ap.parse_args()
    paths = args.source or [
        p for p in (os.path.join("/usr/share/common-licenses", n) for n in DEFAULT_SOURCES) if os.path.exists(p)
    ]
    if not args.source and len(paths) < 2:
        paths = sorted(glob.glob("/usr/share/common-licenses/*"))[:5]
    sources = load_sources(paths)
    rng = random.Random(args.seed)
    out = args.out
    chance = {}

    os.makedirs(f"{out}/squad", exist_ok=True)
    for split, n in (("train", args.train), ("dev", args.dev)):
        with open(f"{out}/squad/{split}.json", "w", encoding="utf-8") as f:
            if args.squad_style == "facts":
                json.dump(squad_facts_split(rng, sources, n, f"{split}-q", args.squad_filler), f)
            else:
                json.dump(squad_split(rng, sources, n, f"{split}-q"), f)

    os.makedirs(f"{out}/token_classification", exist_ok=True)
    for split, n in (("train", args.train), ("dev", args.dev)):
        texts, labels = token_split(rng, sources, n)
        with open(f"{out}/token_classification/text_{split}.txt", "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        with open(f"{out}/token_classification/labels_{split}.txt", "w", encoding="utf-8") as f:
            f.write("\n".join(labels) + "\n")
        if split == "dev":
            flat = " ".join(labels).split()
            chance["token_classification_majority_accuracy"] = max(flat.count(l) for l in set(flat)) / len(flat)

    os.makedirs(f"{out}/text_classification", exist_ok=True)
    for split, n in (("train", args.train), ("dev", args.dev)):
        rows = text_split(rng, sources, n)
        with open(f"{out}/text_classification/{split}.tsv", "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n")
            for s, l in rows:
                f.write(f"{s}\t{l}\n")
        if split == "dev":
            ls = [l for _, l in rows]
            chance["text_classification_majority_accuracy"] = max(ls.count(l) for l in set(ls)) / len(ls)
    chance["text_classification_num_classes"] = len(sources)

    os.makedirs(f"{out}/relation", exist_ok=True)
    with open(f"{out}/relation/label_mapping.tsv", "w", encoding="utf-8") as f:
        for i, r in enumerate(RELATIONS):
            f.write(f"{r}\t{i}\n")
    for split, n in (("train", args.train), ("dev", args.dev)):
        rows = relation_split(rng, sources, n)
        with open(f"{out}/relation/{split}.tsv", "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n")
            for s, l in rows:
                f.write(f"{s}\t{l}\n")
        if split == "dev":
            ls = [l for _, l in rows]
            chance["relation_majority_accuracy"] = max(ls.count(l) for l in set(ls)) / len(ls)

    with open(f"{out}/chance.json", "w") as f:
        json.dump(chance, f, indent=1)


if __name__ == "__main__":
    main()
