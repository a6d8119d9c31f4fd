"""Python side of examples/bench_nemo.rs: NeMo 1.x's own way of writing and
reading a .nemo (torch.save into a folder, tarfile "w:gz" of the folder;
tarfile "r:gz" extractall, torch.load), timed.

  write --out F --layers N [--level L] [--tp N]   Megatron-BERT-345M-shaped fp32
                                                   QA model (N layers); prints JSON
  read --nemo F                                    prints JSON
"""
import argparse
import json
import os
import shutil
import tarfile
import tempfile
import time
import uuid

import torch

H, HEADS, FFN, POS, VOCAB = 1024, 16, 4096, 512, 30592


def state_dict(layers, tp, rank):
    g = torch.Generator().manual_seed(rank)
    r = lambda *s: torch.randn(*s, generator=g) * 0.02
    p = "bert_model.language_model."
    sd = {
        p + "embedding.word_embeddings.weight": r(VOCAB // tp, H),
        p + "embedding.position_embeddings.weight": r(POS, H),
        p + "embedding.tokentype_embeddings.weight": r(2, H),
    }
    for i in range(layers):
        q = f"{p}encoder.layers.{i}."
        sd[q + "input_layernorm.weight"] = r(H)
        sd[q + "input_layernorm.bias"] = r(H)
        sd[q + "self_attention.query_key_value.weight"] = r(3 * H // tp, H)
        sd[q + "self_attention.query_key_value.bias"] = r(3 * H // tp)
        sd[q + "self_attention.dense.weight"] = r(H, H // tp)
        sd[q + "self_attention.dense.bias"] = r(H)
        sd[q + "post_attention_layernorm.weight"] = r(H)
        sd[q + "post_attention_layernorm.bias"] = r(H)
        sd[q + "mlp.dense_h_to_4h.weight"] = r(FFN // tp, H)
        sd[q + "mlp.dense_h_to_4h.bias"] = r(FFN // tp)
        sd[q + "mlp.dense_4h_to_h.weight"] = r(H, FFN // tp)
        sd[q + "mlp.dense_4h_to_h.bias"] = r(H)
    sd[p + "encoder.final_layernorm.weight"] = r(H)
    sd[p + "encoder.final_layernorm.bias"] = r(H)
    sd["classifier.mlp.layer0.weight"] = r(2, H)
    sd["classifier.mlp.layer0.bias"] = r(2)
    return sd


def write(args):
    shards = [state_dict(args.layers, args.tp, r) for r in range(args.tp)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.out))) as folder:
        names = {b: f"{uuid.uuid4().hex}_{b}" for b in
                 ("vocab.txt", "megatron_checkpoint_version.json", "megatron-bert-345m-uncased_encoder_config.json")}
        put = lambda b, text: open(os.path.join(folder, names[b]), "w").write(text)
        put("vocab.txt", "".join(f"t{i}\n" for i in range(30522)))
        put("megatron_checkpoint_version.json", json.dumps({"checkpoint_version": 3.0}))
        put("megatron-bert-345m-uncased_encoder_config.json", json.dumps(
            {"hidden_size": H, "num_attention_heads": HEADS, "num_layers": args.layers, "max_position_embeddings": POS,
             "tokenizer_type": "BertWordPieceLowerCase"}, indent=2, sort_keys=True) + "\n")
        ref = lambda b: "nemo:" + names[b]
        conf = (
            "target: nemo.collections.nlp.models.question_answering.qa_model.QAModel\n"
            f"language_model:\n  pretrained_model_name: megatron-bert-345m-uncased\n"
            f"  config_file: {ref('megatron-bert-345m-uncased_encoder_config.json')}\n"
            f"tokenizer:\n  vocab_file: {ref('vocab.txt')}\n"
            "token_classifier:\n  num_layers: 1\n  num_classes: 2\n"
            f"megatron_checkpoint_version:\n  json: {ref('megatron_checkpoint_version.json')}\n"
        )
        with open(os.path.join(folder, "model_config.yaml"), "w") as f:
            f.write(conf)
        for r, sd in enumerate(shards):
            if args.tp == 1:
                path = os.path.join(folder, "model_weights.ckpt")
            else:
                os.makedirs(os.path.join(folder, f"mp_rank_{r:02d}"))
                path = os.path.join(folder, f"mp_rank_{r:02d}", "model_weights.ckpt")
            torch.save(sd, path)
        with tarfile.open(args.out, "w:gz", compresslevel=args.level) as tar:
            tar.add(folder, arcname=".")
    secs = time.perf_counter() - t0
    print(json.dumps({"write_s": secs, "bytes": os.path.getsize(args.out)}))


def read(args):
    t0 = time.perf_counter()
    folder = tempfile.mkdtemp()
    try:
        with tarfile.open(args.nemo, "r:gz") as tar:
            tar.extractall(folder)
        n = 0
        for root, _, files in os.walk(folder):
            for f in files:
                if f == "model_weights.ckpt":
                    sd = torch.load(os.path.join(root, f), map_location="cpu", weights_only=True)
                    n += sum(t.numel() for t in sd.values())
        secs = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder)
    print(json.dumps({"read_s": secs, "params": n}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--out", required=True)
    w.add_argument("--layers", type=int, default=24)
    w.add_argument("--tp", type=int, default=1)
    w.add_argument("--level", type=int, default=9)
    r = sub.add_parser("read")
    r.add_argument("--nemo", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    write(args) if args.cmd == "write" else read(args)


if __name__ == "__main__":
    main()
