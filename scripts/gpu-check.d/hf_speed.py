"""Hugging Face's side of gpu-check steps 3 and 4: a SQuAD fine-tuning step of
MegatronBertForQuestionAnswering in PyTorch eager with the settings our
trainer uses: train mode (dropout 0.1), bf16 autocast over forward and loss,
backward, global-norm clipping at 1.0, torch.optim.AdamW(fused=True) with
weight decay 0.01 except biases and LayerNorms, a linear schedule, gradients
dropped (set_to_none), and the loss read back every step (our loop does too).
Attention is SDPA (--attn auto): transformers' own where it has it for
MegatronBert, else (4.x and 5.x have only the eager matmul-softmax-matmul)
HF's attention module with its score computation swapped for
torch.nn.functional.scaled_dot_product_attention on HF's own query/key/value
projections, as transformers' BertSdpaSelfAttention does for BERT. The JSON
says which ran; --attn eager keeps HF's eager attention.

  --search 8,16,..  largest micro batch that fits (2 steps each; an
                    out-of-memory error means "does not fit", any other error fails)
  --batch N         time --steps steps after --warmup at micro batch N

Each batch is made on the CPU and copied to the device, as our trainer's
collation does. --simulate-oom-above N makes batches above N fail as out of
memory: the CPU rehearsal's stand-in for a full card.
"""

import argparse
import gc
import statistics
import time

import torch

import common


def sdpa_forward(self, hidden_states, attention_mask=None, *args, **kwargs):
    """MegatronBertSelfAttention.forward with SDPA (self-attention only, no cache)."""
    b, s, _ = hidden_states.shape
    heads = lambda x: x.view(b, s, -1, self.attention_head_size).transpose(1, 2)
    q, k, v = (heads(lin(hidden_states)) for lin in (self.query, self.key, self.value))
    mask = attention_mask
    if mask is not None and mask.dtype.is_floating_point:  # additive (0 / dtype min) -> keep flags
        mask = mask > torch.finfo(mask.dtype).min / 2
    ctx = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0
    )
    return ctx.transpose(1, 2).reshape(b, s, self.all_head_size), None


def build(args, device):
    import transformers
    from transformers import MegatronBertForQuestionAnswering
    from transformers.models.megatron_bert import modeling_megatron_bert as hf

    model, attn = None, args.attn
    with device:  # parameters made (and initialized) on the device
        if args.attn in ("auto", "sdpa"):
            try:
                model = MegatronBertForQuestionAnswering(common.hf_config(args, dropout=0.1, attn="sdpa"))
            except ValueError:  # "does not support an attention implementation through sdpa yet"
                if args.attn == "sdpa":
                    raise
                hf.MegatronBertSelfAttention.forward = sdpa_forward
                attn = f"eager module, SDPA patched in (transformers {transformers.__version__} has no SDPA for MegatronBert)"
        if model is None:
            model = MegatronBertForQuestionAnswering(common.hf_config(args, dropout=0.1, attn="eager"))
            attn = attn if attn != "auto" else "eager"
        else:
            attn = model.config._attn_implementation
    model.to(device).train()
    no_decay = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    no_decay |= {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": 0.01},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=5e-5, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / 10000))
    return model, opt, sched, attn


def make_batch(args, b, gen):
    s = args.seq
    ids = torch.randint(1, args.vocab, (b, s), generator=gen)
    types = torch.zeros(b, s, dtype=torch.long)
    types[:, s // 2 :] = 1
    start = torch.randint(1, s // 2, (b,), generator=gen)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones(b, s, dtype=torch.long),
        "token_type_ids": types,
        "start_positions": start,
        "end_positions": start + 3,
    }


def step(state, args, b, device, gen):
    model, opt, sched, _ = state
    if args.simulate_oom_above and b > args.simulate_oom_above:
        raise RuntimeError(f"CUDA out of memory (simulated above micro batch {args.simulate_oom_above})")
    batch = {k: v.to(device) for k, v in make_batch(args, b, gen).items()}
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def fits(state, args, b, device, gen):
    try:
        for _ in range(2):
            step(state, args, b, device, gen)
        return True
    except Exception as e:  # noqa: BLE001 - only out-of-memory is absorbed
        if not common.is_oom(e):
            raise
        print(f"micro batch {b}: out of memory ({str(e).splitlines()[0][:160]})", flush=True)
    state[1].zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return False


def search(state, args, device, gen, candidates):
    """Largest candidate that fits, by bisection (fitting is monotone in the batch)."""
    lo, hi, probes = -1, len(candidates), {}
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok = fits(state, args, candidates[mid], device, gen)
        probes[candidates[mid]] = ok
        print(f"micro batch {candidates[mid]}: {'fits' if ok else 'does not fit'}", flush=True)
        lo, hi = (mid, hi) if ok else (lo, mid)
    return (candidates[lo] if lo >= 0 else 0), probes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cuda", "cpu"], required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--search", help="comma-separated candidate micro batches, ascending")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--attn", choices=["auto", "sdpa", "eager"], default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--simulate-oom-above", type=int, default=0)
    common.add_shape_args(ap)
    args = ap.parse_args()
    device = common.device_of(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    state = build(args, device)
    out = {"hf_attn_implementation": state[3], **common.versions()}
    if args.search:
        candidates = [int(c) for c in args.search.split(",")]
        largest, probes = search(state, args, device, gen, candidates)
        out.update(largest_batch=largest, probes={str(k): v for k, v in probes.items()},
                   capped=largest == candidates[-1])
    if args.batch:
        times = []
        for i in range(args.warmup + args.steps):
            common.sync(device)
            t0 = time.perf_counter()
            loss = step(state, args, args.batch, device, gen)
            common.sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        out.update(batch=args.batch, step_s_median=statistics.median(times), step_s=times,
                   last_loss=loss, **common.memory_figures(device))
    common.write_json(args.json, out)


if __name__ == "__main__":
    main()
