"""Builds a small ChemProt-style relation extraction data set from real
English text (the license texts in /usr/share/common-licenses), for the
task learning test. Deterministic for a given --seed.

  python task_make_relations.py --out DIR [--seed 0] [--train 800] [--dev 200]

Each sentence gets two words replaced by @CHEMICAL$ and @GENE$ (either order,
2 to 6 words apart) and a word between them replaced by a trigger: an
up-regulation verb (relation CPR:3), an inhibition verb (CPR:4) or a neutral
word (false). Writes DIR/{train,dev}.tsv with a `sentence<TAB>label` header
and class NAMES as labels, and DIR/chance.json with the majority-class accuracy
of the dev split.
"""
import argparse
import json
import os
import random
import re

SOURCES = ["Apache-2.0", "GPL-3", "MPL-2.0", "Artistic", "LGPL-2.1"]
TRIGGERS = {
    "CPR:3": ["activates", "induces", "increases", "stimulates", "enhances", "upregulates"],
    "CPR:4": ["inhibits", "blocks", "reduces", "suppresses", "decreases", "antagonizes"],
    "false": ["and", "with", "near", "or", "beside", "unlike"],
}


def sentences():
    out = []
    for name in SOURCES:
        path = os.path.join("/usr/share/common-licenses", name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = " ".join(f.read().split())
        out += [s for s in re.split(r"(?<=[.;:])\s+", text) if 8 <= len(s.split()) <= 40]
    if len(out) < 50:
        raise SystemExit("need the license texts of /usr/share/common-licenses")
    return out


def split(rng, sents, n):
    rows = []
    for _ in range(n):
        words = rng.choice(sents).replace("\t", " ").split()
        gap = rng.randint(2, 6)
        i = rng.randrange(len(words) - gap)
        j = i + gap
        chem_first = rng.random() < 0.5
        words[i] = "@CHEMICAL$" if chem_first else "@GENE$"
        words[j] = "@GENE$" if chem_first else "@CHEMICAL$"
        label = rng.choice(sorted(TRIGGERS))
        words[rng.randrange(i + 1, j)] = rng.choice(TRIGGERS[label])
        rows.append((" ".join(words), label))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=800)
    ap.add_argument("--dev", type=int, default=200)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sents = sentences()
    os.makedirs(args.out, exist_ok=True)
    chance = {}
    for name, n in (("train", args.train), ("dev", args.dev)):
        rows = split(rng, sents, n)
        with open(os.path.join(args.out, f"{name}.tsv"), "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n")
            for s, l in rows:
                f.write(f"{s}\t{l}\n")
        if name == "dev":
            labels = [l for _, l in rows]
            chance["majority_accuracy"] = max(labels.count(l) for l in set(labels)) / len(labels)
    with open(os.path.join(args.out, "chance.json"), "w") as f:
        json.dump(chance, f)


if __name__ == "__main__":
    main()
