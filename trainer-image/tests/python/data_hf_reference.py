"""Hugging Face reference outputs for the Rust tokenizer and SQuAD features.

Reads one JSON request on stdin, writes the JSON answer on stdout:
  {"op": "tokenize", "vocab_file", "lower", "texts": [...], "pairs": [[a, b], ...]}
  {"op": "squad_features", "vocab_file", "lower", "max_seq_length", "doc_stride",
   "max_query_length", "examples": [{"question", "context", "answer_start", "answer_text"}]}
The SQuAD preprocessing is Hugging Face run_qa's prepare_train_features, with the
question first cut to max_query_length tokens (NeMo's setting) and the start/end
search kept inside the context tokens.
"""
import json
import sys

from transformers import BertTokenizerFast


def tokenizer(req):
    return BertTokenizerFast(vocab_file=req["vocab_file"], do_lower_case=req["lower"])


def enc_dict(e):
    return {
        "ids": e["input_ids"],
        "tokens": e.tokens(),
        "type_ids": e["token_type_ids"],
        "offsets": [list(o) for o in e["offset_mapping"]],
    }


def op_tokenize(req):
    tok = tokenizer(req)
    out = {"texts": [], "pairs": []}
    for t in req["texts"]:
        out["texts"].append(enc_dict(tok(t, return_offsets_mapping=True)))
    for a, b in req["pairs"]:
        out["pairs"].append(enc_dict(tok(a, b, return_offsets_mapping=True)))
    return out


def cut_question(tok, q, n):
    q = q.lstrip()
    e = tok(q, add_special_tokens=False, return_offsets_mapping=True)
    if len(e["input_ids"]) <= n:
        return q
    return q[: e["offset_mapping"][n - 1][1]]


def op_squad_features(req):
    tok = tokenizer(req)
    feats = []
    for idx, ex in enumerate(req["examples"]):
        q = cut_question(tok, ex["question"], req["max_query_length"])
        t = tok(
            q,
            ex["context"],
            truncation="only_second",
            max_length=req["max_seq_length"],
            stride=req["doc_stride"],
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        for i in range(len(t["input_ids"])):
            offsets = t["offset_mapping"][i]
            seq = t.sequence_ids(i)
            start_char = ex["answer_start"]
            end_char = start_char + len(ex["answer_text"])
            ts = 0
            while seq[ts] != 1:
                ts += 1
            te = len(t["input_ids"][i]) - 1
            while seq[te] != 1:
                te -= 1
            ctx_end = te
            if not (offsets[ts][0] <= start_char and offsets[te][1] >= end_char):
                s, e = 0, 0
            else:
                while ts <= ctx_end and offsets[ts][0] <= start_char:
                    ts += 1
                s = ts - 1
                while offsets[te][1] >= end_char:
                    te -= 1
                e = te + 1
            feats.append(
                {
                    "example_index": idx,
                    "input_ids": t["input_ids"][i],
                    "token_type_ids": t["token_type_ids"][i],
                    "context_offsets": [list(o) if seq[k] == 1 else None for k, o in enumerate(offsets)],
                    "start_position": s,
                    "end_position": e,
                }
            )
    return {"features": feats}


def main():
    req = json.load(sys.stdin)
    out = {"tokenize": op_tokenize, "squad_features": op_squad_features}[req["op"]](req)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
