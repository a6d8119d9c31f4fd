"""PyTorch-eager counterpart of `examples/bench_step.rs`: forward + backward
step time of HF MegatronBertForQuestionAnswering (train mode, dropout 0.1).
Prints one JSON line: {"median_s": ..., "times_s": [...]}."""

import argparse
import json
import statistics
import time

import torch
from transformers import MegatronBertConfig, MegatronBertForQuestionAnswering


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=30592)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = MegatronBertConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        intermediate_size=4 * a.hidden,
        max_position_embeddings=512,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
    )
    model = MegatronBertForQuestionAnswering(cfg).train()
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
    mask = torch.ones(a.batch, a.seq, dtype=torch.long)
    for b in range(a.batch):
        mask[b, a.seq - 16 * b :] = 0 if b else 1
    types = torch.zeros_like(ids)
    start = torch.randint(0, a.seq // 2, (a.batch,))
    end = start + 3
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, start_positions=start, end_positions=end)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"median_s": statistics.median(times), "times_s": times}))


if __name__ == "__main__":
    main()
