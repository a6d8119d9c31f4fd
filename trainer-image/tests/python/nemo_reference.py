"""Python side of the .nemo tests: an independent reader of our archives and
a writer of archives in NeMo 1.x's own layout (the way NeMo 1.0-1.4 built
them: artifacts copied as uuid4().hex + '_' + basename into a folder, then
tarfile.open(path, "w:gz").add(folder, arcname=".")).

  python nemo_reference.py check --nemo F --full W.safetensors --config C.json
        --tp N --task qa|token|text [--labels a,b,c] --vocab V [--pooler]
      Opens F with tarfile (r:gz) and torch.load(weights_only=True) and checks
      the exact members, model_config.yaml fields, artifact contents, weight
      keys, dtypes, shapes and values against the canonical full weights W,
      sharded here with Megatron's rules. Prints "ok" and a summary.

  python nemo_reference.py make-qa --out DIR --case CASE [--case CASE ...]
      Builds a tiny random Hugging Face MegatronBertForQuestionAnswering and
      writes DIR/CASE/model.nemo for each case in NeMo 1.x's layout (CASE:
      parts joined by ~: tpN tensor-parallel size, vV checkpoint version of
      the QKV row order, old = transformer/attention module names, plain =
      uncompressed tar, omit=MEMBER or omit=vocab drops a file, bad=KEY cuts
      a row off one tensor), DIR/io.safetensors with inputs and HF start/end
      logits and DIR/full.safetensors with the canonical weights.
"""

import argparse
import io
import json
import os
import re
import tarfile
import tempfile
import uuid

import torch
import yaml
from safetensors.torch import load_file, save_file

HEX = r"[0-9a-f]{32}"

TARGETS = {
    "qa": "nemo.collections.nlp.models.question_answering.qa_model.QAModel",
    "token": "nemo.collections.nlp.models.token_classification.token_classification_model.TokenClassificationModel",
    "text": "nemo.collections.nlp.models.text_classification.text_classification_model.TextClassificationModel",
}


# ---------------------------------------------------------------- Megatron rules
def nemo_key(name):
    """Canonical name -> NeMo 1.x task-model key (written independently of the Rust code)."""
    if name.startswith("classifier."):
        return name
    emb = {
        "embeddings.word_embeddings.weight": "embedding.word_embeddings.weight",
        "embeddings.position_embeddings.weight": "embedding.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight": "embedding.tokentype_embeddings.weight",
    }
    if name in emb:
        return "bert_model.language_model." + emb[name]
    if name.startswith("encoder.") or name.startswith("pooler."):
        return "bert_model.language_model." + name
    raise ValueError(name)


def split_dim(name):
    if name == "embeddings.word_embeddings.weight":
        return 0
    for s in ("query_key_value.weight", "query_key_value.bias", "dense_h_to_4h.weight", "dense_h_to_4h.bias"):
        if name.endswith(s):
            return 0
    if name.endswith("self_attention.dense.weight") or name.endswith("dense_4h_to_h.weight"):
        return 1
    return None


def padded_vocab(vocab, tp, multiple=128):
    m = multiple * tp
    return (vocab + m - 1) // m * m


def shard(full, tp, rank, vocab):
    out = {}
    for name, t in full.items():
        if name == "embeddings.word_embeddings.weight":
            rows = padded_vocab(vocab, tp)
            t = t[:rows] if t.shape[0] >= rows else torch.cat([t, t.new_zeros(rows - t.shape[0], t.shape[1])])
        d = split_dim(name)
        if d is not None:
            n = t.shape[d] // tp
            t = t.narrow(d, rank * n, n)
        out[name] = t.contiguous()
    return out


# ---------------------------------------------------------------- check
def check(args):
    full = load_file(args.full)
    cfg = json.load(open(args.config))
    vocab_bytes = open(args.vocab, "rb").read()
    vocab = len([l for l in vocab_bytes.decode().splitlines() if l.strip()])
    labels = args.labels.split(",") if args.labels else None
    tp = args.tp

    with tarfile.open(args.nemo, "r:gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        by_name = {m.name: m for m in members}
        read = lambda n: tar.extractfile(by_name[n]).read()

        # Exact member list, in order.
        want = [r"\.", rf"\./{HEX}_[^/]+_encoder_config\.json", rf"\./{HEX}_megatron_checkpoint_version\.json",
                rf"\./{HEX}_vocab\.txt"]
        if labels:
            want.append(rf"\./{HEX}_label_ids\.csv")
        artifacts = sorted(names[1 : len(want)])
        assert names[1 : len(want)] == artifacts, f"artifacts not sorted: {names}"
        want.append(r"\./model_config\.yaml")
        if tp == 1:
            want.append(r"\./model_weights\.ckpt")
        else:
            for r in range(tp):
                want += [rf"\./mp_rank_{r:02d}", rf"\./mp_rank_{r:02d}/model_weights\.ckpt"]
        assert len(names) == len(want), f"members {names} != {want}"
        # Artifacts may be in any order among themselves (sorted by hash).
        head_n = 1 + len(artifacts)
        for pat in want[1:head_n]:
            assert sum(bool(re.fullmatch(pat, n)) for n in names[1:head_n]) == 1, (pat, names)
        for pat, n in list(zip(want, names))[head_n:] + [(want[0], names[0])]:
            assert re.fullmatch(pat, n), f"member {n} does not match {pat}"
        for n in names:
            m = by_name[n]
            assert m.isdir() == (n == "." or re.fullmatch(r"\./mp_rank_\d\d", n) is not None), n
        # NeMo 1.x: model parallel size = number of names containing mp_rank // 2.
        mp = [n for n in names if "mp_rank" in n]
        assert (len(mp) // 2 if mp else 1) == tp, mp

        conf = yaml.safe_load(read("./model_config.yaml"))
        assert conf["target"] == TARGETS[args.task], conf["target"]

        def artifact(ref):
            assert ref.startswith("nemo:"), ref
            return read("./" + ref[5:])

        assert artifact(conf["tokenizer"]["vocab_file"]) == vocab_bytes
        enc = json.loads(artifact(conf["language_model"]["config_file"]))
        for k in ("hidden_size", "num_attention_heads", "num_layers", "max_position_embeddings"):
            assert enc[k] == cfg[k], (k, enc[k], cfg[k])
        ver = json.loads(artifact(conf["megatron_checkpoint_version"]["json"]))
        assert ver == {"checkpoint_version": 3.0}, ver
        assert [n for n in names if "megatron_checkpoint_version.json" in n], names
        if args.task == "qa":
            tc = conf["token_classifier"]
            assert (tc["num_layers"], tc["num_classes"], tc["dropout"]) == (1, 2, 0.0), tc
        elif args.task == "token":
            assert conf["label_ids"] == {l: i for i, l in enumerate(labels)}, conf["label_ids"]
            assert artifact(conf["class_labels"]["class_labels_file"]).decode() == "\n".join(labels)
            assert conf["head"]["num_fc_layers"] == 2 and conf["head"]["fc_dropout"] == 0.5, conf["head"]
            assert conf["dataset"]["pad_label"] == labels[0]
        else:
            assert conf["dataset"]["num_classes"] == len(labels), conf["dataset"]
            assert conf["classifier_head"]["num_output_layers"] == 2, conf["classifier_head"]

        # Weights: exact keys, dtype, shape, values for every rank.
        expected_full = {k: v for k, v in full.items() if args.pooler or not k.startswith("pooler.")}
        total = 0
        for r in range(tp):
            member = "./model_weights.ckpt" if tp == 1 else f"./mp_rank_{r:02d}/model_weights.ckpt"
            sd = torch.load(io.BytesIO(read(member)), map_location="cpu", weights_only=True)
            assert isinstance(sd, dict), type(sd)
            want_sd = {nemo_key(k): v for k, v in shard(expected_full, tp, r, vocab).items()}
            assert set(sd) == set(want_sd), f"rank {r}: extra {set(sd) - set(want_sd)} missing {set(want_sd) - set(sd)}"
            # Module order: embedding first, then layers, final LayerNorm, head.
            keys = list(sd)
            assert keys[0] == "bert_model.language_model.embedding.word_embeddings.weight", keys[:3]
            assert keys[-1].startswith("classifier."), keys[-3:]
            for k, v in want_sd.items():
                got = sd[k]
                assert got.dtype == v.dtype, (k, got.dtype, v.dtype)
                assert tuple(got.shape) == tuple(v.shape), (k, got.shape, v.shape)
                assert torch.equal(got, v), f"rank {r}: {k} values differ"
                total += 1
    print(f"ok: {len(names)} members, {total} tensors checked over {tp} rank(s)")


# ---------------------------------------------------------------- make-qa
HIDDEN, HEADS, LAYERS, FFN, VOCAB, MAX_POS = 64, 4, 2, 256, 100, 32
BATCH, SEQ = 2, 16


def fuse_qkv(q, k, v):
    hd = HIDDEN // HEADS
    parts = [t.reshape(HEADS, hd, *t.shape[1:]) for t in (q, k, v)]
    return torch.stack(parts, dim=1).reshape(3 * HIDDEN, *q.shape[1:])


def to_version(t, version, heads):
    """Canonical [np, 3, hn] rows of one shard -> checkpoint version order."""
    hd = HIDDEN // HEADS
    rest = t.shape[1:]
    x = t.reshape(heads, 3, hd, *rest)
    if version == 0:
        x = x.transpose(0, 1)  # [3, np, hn]
    elif version == 1:
        x = x.transpose(1, 2)  # [np, hn, 3]
    return x.contiguous().reshape(t.shape)


def make_qa(args):
    from transformers import MegatronBertConfig, MegatronBertForQuestionAnswering

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    cfg = MegatronBertConfig(
        vocab_size=128, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=MAX_POS, type_vocab_size=2, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5,
        attn_implementation="eager", pad_token_id=127,
    )
    qa = MegatronBertForQuestionAnswering(cfg)
    with torch.no_grad():
        for p in qa.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    qa.eval()
    named = {k: v.detach() for k, v in qa.named_parameters()}
    g = lambda k: named["bert." + k]

    # Canonical full weights (TP=1 order); NeMo keys per rank in write_case.
    full = {
        "embeddings.word_embeddings.weight": g("embeddings.word_embeddings.weight")[:VOCAB],
        "embeddings.position_embeddings.weight": g("embeddings.position_embeddings.weight"),
        "embeddings.token_type_embeddings.weight": g("embeddings.token_type_embeddings.weight"),
    }
    for i in range(LAYERS):
        hf, us = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        for s in ("weight", "bias"):
            full[us + f"input_layernorm.{s}"] = g(hf + f"attention.ln.{s}")
            full[us + f"self_attention.query_key_value.{s}"] = fuse_qkv(
                *(g(hf + f"attention.self.{n}.{s}") for n in ("query", "key", "value")))
            full[us + f"self_attention.dense.{s}"] = g(hf + f"attention.output.dense.{s}")
            full[us + f"post_attention_layernorm.{s}"] = g(hf + f"ln.{s}")
            full[us + f"mlp.dense_h_to_4h.{s}"] = g(hf + f"intermediate.dense.{s}")
            full[us + f"mlp.dense_4h_to_h.{s}"] = g(hf + f"output.dense.{s}")
    for s in ("weight", "bias"):
        full[f"encoder.final_layernorm.{s}"] = g(f"encoder.ln.{s}")
        full[f"classifier.mlp.layer0.{s}"] = named[f"qa_outputs.{s}"]

    for spec in args.case:
        write_case(os.path.join(args.out, spec), full, case_args(spec))

    ids = torch.randint(5, VOCAB, (BATCH, SEQ))
    lengths = [SEQ, SEQ - 5]
    mask = torch.zeros(BATCH, SEQ, dtype=torch.long)
    types = torch.zeros(BATCH, SEQ, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        types[b, n // 2 : n] = 1
        ids[b, n:] = 0
    with torch.no_grad():
        o = qa(input_ids=ids, attention_mask=mask, token_type_ids=types)
    save_file({"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
               "start_logits": o.start_logits.contiguous(), "end_logits": o.end_logits.contiguous()},
              os.path.join(args.out, "io.safetensors"))
    save_file({k: v.contiguous() for k, v in full.items()}, os.path.join(args.out, "full.safetensors"))
    print("ok")


def case_args(spec):
    """`tp2-v0-old-plain-omit=model_config.yaml-bad=KEY` style case names."""
    c = {"tp": 1, "version": 3.0, "old_names": False, "plain_tar": False, "omit": None, "bad_shape": None}
    for part in spec.split("~"):
        if part.startswith("tp"):
            c["tp"] = int(part[2:])
        elif part.startswith("v"):
            c["version"] = float(part[1:])
        elif part == "old":
            c["old_names"] = True
        elif part == "plain":
            c["plain_tar"] = True
        elif part.startswith("omit="):
            c["omit"] = part[5:]
        elif part.startswith("bad="):
            c["bad_shape"] = part[4:]
        else:
            raise ValueError(f"unknown case part {part!r}")
    return argparse.Namespace(**c)


def write_case(out_dir, full, args):
    """Writes out_dir/model.nemo the way NeMo 1.x's save_to does."""
    tp = args.tp
    os.makedirs(out_dir, exist_ok=True)
    folder = tempfile.mkdtemp()
    art = lambda base: f"{uuid.uuid4().hex}_{base}"
    vocab_name, enc_name, ver_name = art("vocab.txt"), art("megatron-bert-uncased_encoder_config.json"), art(
        "megatron_checkpoint_version.json")
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(5, VOCAB)]
    open(os.path.join(folder, vocab_name), "w").write("\n".join(toks) + "\n")
    enc = {"hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_layers": LAYERS,
           "max_position_embeddings": MAX_POS, "vocab_file": "/tmp/nemo_nlp_tmp/vocab.txt",
           "tokenizer_type": "BertWordPieceLowerCase", "lazy_mpu_init": True, "onnx_safe": True}
    open(os.path.join(folder, enc_name), "w").write(json.dumps(enc, indent=2, sort_keys=True) + "\n")
    open(os.path.join(folder, ver_name), "w").write(json.dumps({"checkpoint_version": args.version}))
    conf = {
        "target": TARGETS["qa"],
        "nemo_path": None,
        "dataset": {"version_2_with_negative": False, "doc_stride": 128, "max_query_length": 64,
                    "max_seq_length": 384, "do_lower_case": True},
        "tokenizer": {"tokenizer_name": "megatron-bert-uncased", "vocab_file": "nemo:" + vocab_name,
                      "tokenizer_model": None, "special_tokens": None},
        "language_model": {"pretrained_model_name": "megatron-bert-uncased", "lm_checkpoint": None,
                           "config_file": "nemo:" + enc_name, "config": None},
        "token_classifier": {"num_layers": 1, "dropout": 0.0, "num_classes": 2, "activation": "relu",
                             "log_softmax": False, "use_transformer_init": True},
        "megatron_checkpoint_version": {"json": "nemo:" + ver_name},
    }
    open(os.path.join(folder, "model_config.yaml"), "w").write(yaml.safe_dump(conf))

    for r in range(tp):
        sd = {}
        for name, t in shard(full, tp, r, VOCAB).items():
            if "query_key_value" in name:
                t = to_version(t, args.version, HEADS // tp)
            key = nemo_key(name)
            if args.old_names:
                key = key.replace("language_model.encoder.", "language_model.transformer.").replace(
                    ".self_attention.", ".attention.")
            if key == args.bad_shape:
                t = t[:-1]
            sd[key] = t.clone()
        if tp == 1:
            path = os.path.join(folder, "model_weights.ckpt")
        else:
            os.makedirs(os.path.join(folder, f"mp_rank_{r:02d}"))
            path = os.path.join(folder, f"mp_rank_{r:02d}", "model_weights.ckpt")
        torch.save(sd, path)
    if args.omit:
        target = os.path.join(folder, args.omit)
        if args.omit == "vocab":
            target = os.path.join(folder, vocab_name)
        os.remove(target)
    with tarfile.open(os.path.join(out_dir, "model.nemo"), "w" if args.plain_tar else "w:gz") as tar:
        tar.add(folder, arcname=".")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--nemo", required=True)
    c.add_argument("--full", required=True)
    c.add_argument("--config", required=True)
    c.add_argument("--vocab", required=True)
    c.add_argument("--tp", type=int, required=True)
    c.add_argument("--task", choices=["qa", "token", "text"], required=True)
    c.add_argument("--labels")
    c.add_argument("--pooler", action="store_true")
    m = sub.add_parser("make-qa")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--case", action="append", required=True,
                   help="archive variant, parts joined by ~: tpN, vV, old, plain, omit=MEMBER|vocab, bad=KEY")
    args = ap.parse_args()
    check(args) if args.cmd == "check" else make_qa(args)


if __name__ == "__main__":
    main()
