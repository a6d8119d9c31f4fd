"""Python side of examples/bench_checkpoint_load.rs.

  make PATH   writes a Megatron-BERT-345M-shaped fp16 checkpoint (TP 1,
              checkpoint_version 3.0, Namespace args) to PATH.
  load PATH   torch.load(PATH) and print one JSON line: seconds, peak RSS
              (VmHWM) and RSS before loading, in bytes, tensor bytes.
"""
import argparse
import collections
import json
import sys
import time

import torch

H, LAYERS, HEADS, FFN, POS, VOCAB = 1024, 24, 16, 4096, 512, 30592


def make(path):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: (torch.randn(*s, generator=g) * 0.02).half()
    od = collections.OrderedDict
    enc = od()
    for i in range(LAYERS):
        p = f"layers.{i}."
        enc[p + "input_layernorm.weight"] = r(H)
        enc[p + "input_layernorm.bias"] = r(H)
        enc[p + "self_attention.query_key_value.weight"] = r(3 * H, H)
        enc[p + "self_attention.query_key_value.bias"] = r(3 * H)
        enc[p + "self_attention.dense.weight"] = r(H, H)
        enc[p + "self_attention.dense.bias"] = r(H)
        enc[p + "post_attention_layernorm.weight"] = r(H)
        enc[p + "post_attention_layernorm.bias"] = r(H)
        enc[p + "mlp.dense_h_to_4h.weight"] = r(FFN, H)
        enc[p + "mlp.dense_h_to_4h.bias"] = r(FFN)
        enc[p + "mlp.dense_4h_to_h.weight"] = r(H, FFN)
        enc[p + "mlp.dense_4h_to_h.bias"] = r(H)
    enc["final_layernorm.weight"] = r(H)
    enc["final_layernorm.bias"] = r(H)
    lm = od(
        embedding=od(
            word_embeddings=od(weight=r(VOCAB, H)),
            position_embeddings=od(weight=r(POS, H)),
            tokentype_embeddings=od(weight=r(2, H)),
        ),
        encoder=enc,
        pooler=od([("dense.weight", r(H, H)), ("dense.bias", r(H))]),
    )
    model = od(
        language_model=lm,
        lm_head=od([("bias", r(VOCAB)), ("dense.weight", r(H, H)), ("dense.bias", r(H)),
                    ("layernorm.weight", r(H)), ("layernorm.bias", r(H))]),
        binary_head=od(weight=r(2, H), bias=r(2)),
    )
    args = argparse.Namespace(num_layers=LAYERS, hidden_size=H, num_attention_heads=HEADS, ffn_hidden_size=FFN,
                              max_position_embeddings=POS, padded_vocab_size=VOCAB, make_vocab_size_divisible_by=128,
                              tensor_model_parallel_size=1, params_dtype=torch.float16, fp16=True)
    torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 1000, "model": model}, path)


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def load(path):
    before = status("VmRSS")
    t0 = time.perf_counter()
    obj = torch.load(path, weights_only=False)
    secs = time.perf_counter() - t0
    nbytes = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            nbytes += o.numel() * o.element_size()
        elif isinstance(o, dict):
            stack.extend(o.values())
    print(json.dumps({"seconds": secs, "peak_rss": status("VmHWM"), "rss_before": before, "tensor_bytes": nbytes}))


if __name__ == "__main__":
    {"make": make, "load": load}[sys.argv[1]](sys.argv[2])
