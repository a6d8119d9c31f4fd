"""Hugging Face `Trainer` counterpart of `examples/bench_train_step.rs`: the
time of each fine-tuning step (data loading, forward, backward, gradient
clipping, AdamW with the Trainer's default optimizer, schedule) of
MegatronBertForQuestionAnswering in PyTorch eager on CPU.

Prints one JSON line: {"step_times_s": [...], "optim": "..."} for the steps
after --warmup. With --adamw it instead times torch.optim.AdamW.step() alone
on the model's parameters (random gradients), per-tensor (foreach=False) and
fused (the Trainer's default on torch >= 2.8, and what our optimizer runs):
{"adamw_single_s": median, "adamw_fused_s": median}.
"""

import argparse
import json
import time

import torch
from transformers import (
    MegatronBertConfig,
    MegatronBertForQuestionAnswering,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)


class QaSet(torch.utils.data.Dataset):
    """Pre-tokenized features padded to the sequence length (run_qa.py's default)."""

    def __init__(self, n, seq, vocab):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, vocab, (n, seq), generator=g)
        lengths = torch.randint(seq // 2, seq + 1, (n,), generator=g)
        pos = torch.arange(seq)
        self.mask = (pos[None, :] < lengths[:, None]).long()
        self.ids *= self.mask
        self.types = ((pos[None, :] >= lengths[:, None] // 2).long()) * self.mask
        self.start = torch.randint(1, seq // 2, (n,), generator=g)
        self.end = self.start + 3

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {
            "input_ids": self.ids[i],
            "attention_mask": self.mask[i],
            "token_type_ids": self.types[i],
            "start_positions": self.start[i],
            "end_positions": self.end[i],
        }


class StepTimer(TrainerCallback):
    def __init__(self):
        self.ends = []

    def on_step_end(self, args, state, control, **kw):
        self.ends.append(time.perf_counter())


def adamw_times(model, warmup, steps):
    out = {}
    for name, kw in (("adamw_single_s", dict(foreach=False)), ("adamw_fused_s", dict(fused=True))):
        params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01, **kw)
        times = []
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            opt.step()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        times.sort()
        out[name] = times[len(times) // 2]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=30592)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--adamw", action="store_true")
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
    model = MegatronBertForQuestionAnswering(cfg)
    if a.adamw:
        print(json.dumps(adamw_times(model, a.warmup, a.steps)))
        return
    total = a.warmup + a.steps + 1
    data = QaSet(a.batch * total, a.seq, a.vocab)
    args = TrainingArguments(
        output_dir=a.out_dir,
        per_device_train_batch_size=a.batch,
        max_steps=total,
        learning_rate=5e-5,
        weight_decay=0.01,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        use_cpu=True,
        dataloader_num_workers=0,
        logging_steps=1_000_000,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    timer = StepTimer()
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[timer])
    trainer.train()
    ends = timer.ends
    times = [b - a for a, b in zip(ends[a.warmup : -1], ends[a.warmup + 1 :])]
    print(json.dumps({"step_times_s": times, "optim": getattr(args.optim, "value", str(args.optim))}))


if __name__ == "__main__":
    main()
