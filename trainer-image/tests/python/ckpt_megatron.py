"""Tiny Megatron-LM BERT checkpoints written the way Megatron-LM writes them.

  make OUT --version {0,1,2,3} --tp K [--naming old|new] [--legacy]
       [--release] [--no-args] [--dtype float16|float32]
      Writes OUT/latest_checkpointed_iteration.txt and
      OUT/{iter_0000100|release}/mp_rank_NN/model_optim_rng.pt for K ranks
      (per-version QKV layout within each rank's shard, vocabulary padded to
      make_vocab_size_divisible_by x K, Namespace args, optimizer and RNG
      states), and OUT/reference.safetensors with the full canonical tensors
      (QKV rows in [heads, 3, head_dim] order, the padded embedding).
  check OUT TP REF.safetensors
      Loads a checkpoint written by the Rust writer (checkpoint_version 3.0,
      TP ranks) with torch.load, reassembles the full canonical tensors and
      compares them with REF; exits non-zero on mismatch.
"""
import argparse
import collections
import random
import sys

import torch
from safetensors.torch import load_file, save_file

LAYERS, HIDDEN, HEADS, FFN, MAX_POS, VOCAB, DIVISIBLE = 2, 16, 4, 64, 32, 100, 8
HEAD_DIM = HIDDEN // HEADS


def padded_vocab(tp):
    m = DIVISIBLE * tp
    return (VOCAB + m - 1) // m * m


def reference(tp, dtype):
    """Full canonical tensors (TP=1 layout) for a checkpoint with `tp` ranks."""
    g = torch.Generator().manual_seed(7)
    r = lambda *s: torch.randn(*s, generator=g).to(dtype)
    ref = collections.OrderedDict()
    ref["embeddings.word_embeddings.weight"] = r(padded_vocab(tp), HIDDEN)
    ref["embeddings.position_embeddings.weight"] = r(MAX_POS, HIDDEN)
    ref["embeddings.token_type_embeddings.weight"] = r(2, HIDDEN)
    for i in range(LAYERS):
        p = f"encoder.layers.{i}."
        ref[p + "input_layernorm.weight"] = r(HIDDEN)
        ref[p + "input_layernorm.bias"] = r(HIDDEN)
        ref[p + "self_attention.query_key_value.weight"] = r(3 * HIDDEN, HIDDEN)
        ref[p + "self_attention.query_key_value.bias"] = r(3 * HIDDEN)
        ref[p + "self_attention.dense.weight"] = r(HIDDEN, HIDDEN)
        ref[p + "self_attention.dense.bias"] = r(HIDDEN)
        ref[p + "post_attention_layernorm.weight"] = r(HIDDEN)
        ref[p + "post_attention_layernorm.bias"] = r(HIDDEN)
        ref[p + "mlp.dense_h_to_4h.weight"] = r(FFN, HIDDEN)
        ref[p + "mlp.dense_h_to_4h.bias"] = r(FFN)
        ref[p + "mlp.dense_4h_to_h.weight"] = r(HIDDEN, FFN)
        ref[p + "mlp.dense_4h_to_h.bias"] = r(HIDDEN)
    ref["encoder.final_layernorm.weight"] = r(HIDDEN)
    ref["encoder.final_layernorm.bias"] = r(HIDDEN)
    ref["pooler.dense.weight"] = r(HIDDEN, HIDDEN)
    ref["pooler.dense.bias"] = r(HIDDEN)
    ref["lm_head.dense.weight"] = r(HIDDEN, HIDDEN)
    ref["lm_head.dense.bias"] = r(HIDDEN)
    ref["lm_head.layernorm.weight"] = r(HIDDEN)
    ref["lm_head.layernorm.bias"] = r(HIDDEN)
    ref["lm_head.bias"] = r(padded_vocab(tp))
    ref["binary_head.weight"] = r(2, HIDDEN)
    ref["binary_head.bias"] = r(2)
    return ref


def split_dim(name):
    if name in ("embeddings.word_embeddings.weight", "lm_head.bias"):
        return 0
    if name.endswith(("query_key_value.weight", "query_key_value.bias", "dense_h_to_4h.weight", "dense_h_to_4h.bias")):
        return 0
    if name.endswith(("self_attention.dense.weight", "dense_4h_to_h.weight")):
        return 1
    return None


def to_version_order(t, version, heads):
    """Canonical [np, 3, hn] rows of one shard -> the version's row order."""
    rest = t.shape[1:]
    v = t.reshape(heads, 3, HEAD_DIM, *rest)
    if version == 0:
        v = v.transpose(0, 1)  # [3, np, hn]
    elif version == 1:
        v = v.transpose(1, 2)  # [np, hn, 3]
    return v.contiguous().reshape(t.shape)


def megatron_model(shard, naming, version):
    """Megatron's nested model dict for one rank (state_dict_for_save_checkpoint)."""
    enc_key = "transformer" if naming == "old" else "encoder"
    attn = "attention" if naming == "old" else "self_attention"
    od = collections.OrderedDict
    embedding = od(
        word_embeddings=od(weight=shard["embeddings.word_embeddings.weight"]),
        position_embeddings=od(weight=shard["embeddings.position_embeddings.weight"]),
        tokentype_embeddings=od(weight=shard["embeddings.token_type_embeddings.weight"]),
    )
    encoder = od()
    for name, t in shard.items():
        if name.startswith("encoder."):
            key = name[len("encoder."):].replace("self_attention.", attn + ".")
            encoder[key] = t
    pooler = od((k[len("pooler."):], v) for k, v in shard.items() if k.startswith("pooler."))
    lm = od([("embedding", embedding), (enc_key, encoder), ("pooler", pooler)])
    lm_head = od((k[len("lm_head."):], v) for k, v in shard.items() if k.startswith("lm_head."))
    binary = od((k[len("binary_head."):], v) for k, v in shard.items() if k.startswith("binary_head."))
    return od(language_model=lm, lm_head=lm_head, binary_head=binary)


def make(a):
    dtype = getattr(torch, a.dtype)
    ref = reference(a.tp, dtype)
    heads_per_rank = HEADS // a.tp
    it_dir = "release" if a.release else "iter_0000100"
    import os

    for rank in range(a.tp):
        shard = collections.OrderedDict()
        for name, t in ref.items():
            d = split_dim(name)
            s = t if d is None else t.chunk(a.tp, dim=d)[rank]
            if "query_key_value" in name:
                s = to_version_order(s, a.version, heads_per_rank)
            shard[name] = s.clone()
        state = {}
        if not a.no_args:
            ns = argparse.Namespace(
                num_layers=LAYERS,
                hidden_size=HIDDEN,
                num_attention_heads=HEADS,
                max_position_embeddings=MAX_POS,
                padded_vocab_size=padded_vocab(a.tp),
                make_vocab_size_divisible_by=DIVISIBLE,
                tokenizer_type="BertWordPieceLowerCase",
                params_dtype=dtype,
                fp16=dtype == torch.float16,
                seq_length=MAX_POS,
                lr=1e-4,
                save=None,
            )
            if a.version >= 2:
                ns.tensor_model_parallel_size = a.tp
                ns.pipeline_model_parallel_size = 1
                ns.ffn_hidden_size = FFN
                ns.layernorm_epsilon = 1e-5
            else:
                ns.model_parallel_size = a.tp
            state["args"] = ns
        if a.version != 0:
            state["checkpoint_version"] = float(a.version)
        state["iteration"] = 0 if a.release else 100
        state["model"] = megatron_model(shard, a.naming, a.version)
        state["optimizer"] = {
            "state": {0: {"exp_avg": torch.zeros(3), "step": 10}},
            "param_groups": [{"lr": 1e-4, "params": [0]}],
        }
        state["random_rng_state"] = random.getstate()
        state["torch_rng_state"] = torch.get_rng_state()
        try:
            import numpy

            state["np_rng_state"] = numpy.random.get_state()
        except ImportError:
            pass
        d = f"{a.out}/{it_dir}/mp_rank_{rank:02d}"
        os.makedirs(d, exist_ok=True)
        torch.save(state, f"{d}/model_optim_rng.pt", _use_new_zipfile_serialization=not a.legacy)
    with open(f"{a.out}/latest_checkpointed_iteration.txt", "w") as f:
        f.write("release" if a.release else "100")
    save_file({k: v.contiguous() for k, v in ref.items()}, f"{a.out}/reference.safetensors")


def check(out, tp, ref_path):
    with open(f"{out}/latest_checkpointed_iteration.txt") as f:
        it = f.read().strip()
    it_dir = "release" if it == "release" else f"iter_{int(it):07d}"
    states = [
        torch.load(f"{out}/{it_dir}/mp_rank_{r:02d}/model_optim_rng.pt", weights_only=False)
        for r in range(tp)
    ]
    bad = []
    for s in states:
        if s.get("checkpoint_version") != 3.0:
            bad.append(f"checkpoint_version {s.get('checkpoint_version')}")
        if s["args"].tensor_model_parallel_size != tp:
            bad.append(f"args.tensor_model_parallel_size {s['args'].tensor_model_parallel_size}")
    flat = [dict() for _ in range(tp)]
    for r, s in enumerate(states):
        m = s["model"]
        lm = m["language_model"]
        for k in ("word_embeddings", "position_embeddings", "tokentype_embeddings"):
            name = "token_type_embeddings" if k == "tokentype_embeddings" else k
            flat[r][f"embeddings.{name}.weight"] = lm["embedding"][k]["weight"]
        for k, v in lm["encoder"].items():
            flat[r]["encoder." + k] = v
        for k, v in lm["pooler"].items():
            flat[r]["pooler." + k] = v
        for k, v in m.get("lm_head", {}).items():
            flat[r]["lm_head." + k] = v
        for k, v in m.get("binary_head", {}).items():
            flat[r]["binary_head." + k] = v
    ref = load_file(ref_path)
    if set(flat[0]) != set(ref):
        bad.append(f"names differ: {sorted(set(flat[0]) ^ set(ref))}")
    for name in sorted(set(flat[0]) & set(ref)):
        d = split_dim(name)
        full = flat[0][name] if d is None else torch.cat([f[name] for f in flat], dim=d)
        want = ref[name]
        if d == 0 and name in ("embeddings.word_embeddings.weight", "lm_head.bias"):
            # Padding rows are zeros beyond the reference's rows.
            if full.shape[0] % (DIVISIBLE * tp) != 0:
                bad.append(f"{name}: {full.shape[0]} rows not padded for tp {tp}")
            n = min(full.shape[0], want.shape[0])
            if full[n:].abs().sum() != 0:
                bad.append(f"{name}: padding rows are not zero")
            full, want = full[:n], want[:n]
        if full.dtype != want.dtype or full.shape != want.shape or not torch.equal(full, want):
            bad.append(f"{name}: got {full.dtype} {tuple(full.shape)}, want {want.dtype} {tuple(want.shape)}")
    if bad:
        print("\n".join(bad), file=sys.stderr)
        sys.exit(1)
    print(f"ok: {len(ref)} tensors over {tp} ranks")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        p = argparse.ArgumentParser()
        p.add_argument("out")
        p.add_argument("--version", type=int, choices=[0, 1, 2, 3], required=True)
        p.add_argument("--tp", type=int, default=1)
        p.add_argument("--naming", choices=["old", "new"], default="new")
        p.add_argument("--legacy", action="store_true")
        p.add_argument("--release", action="store_true")
        p.add_argument("--no-args", action="store_true")
        p.add_argument("--dtype", default="float16")
        make(p.parse_args(sys.argv[2:]))
    elif sys.argv[1] == "check":
        check(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
