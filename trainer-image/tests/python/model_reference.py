"""Reference numbers for the Rust model tests, from Hugging Face transformers.

Builds a random tiny Megatron-BERT (HF MegatronBertModel, pre-LN) or BERT
(HF BertModel, post-LN) with a span-QA head, writes its weights under our
canonical parameter names, runs it on random padded inputs in fp32 eval mode,
and writes the outputs plus the parameter gradients of the QA loss:

  python model_reference.py --arch megatron|bert --out DIR [--seed N]

DIR/config.json        our BertConfig (serde form)
DIR/weights.safetensors canonical names, including classifier.mlp.layer0 (QA)
DIR/io.safetensors      inputs, sequence_output, pooled_output, start/end logits, loss
DIR/grads.safetensors   d(QA loss)/d(param), canonical names (pooler excluded)
DIR/heads.safetensors   token/sequence classification head weights, logits, losses
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertModel,
    MegatronBertConfig,
    MegatronBertForQuestionAnswering,
    MegatronBertModel,
)

HIDDEN, HEADS, LAYERS, FFN = 64, 4, 2, 256
VOCAB, PADDED_VOCAB, MAX_POS, TYPES = 100, 128, 32, 2
BATCH, SEQ = 2, 16


def fuse_qkv(q, k, v):
    """HF's separate q/k/v rows -> Megatron's [heads, 3, head_dim] row order."""
    hd = HIDDEN // HEADS
    parts = [t.reshape(HEADS, hd, *t.shape[1:]) for t in (q, k, v)]
    return torch.stack(parts, dim=1).reshape(3 * HIDDEN, *q.shape[1:]).contiguous()


def canonical(named, arch):
    """HF parameter (or gradient) dict -> canonical names."""
    out = {}
    pre = "bert."
    get = lambda k: named[pre + k]
    out["embeddings.word_embeddings.weight"] = get("embeddings.word_embeddings.weight")
    out["embeddings.position_embeddings.weight"] = get("embeddings.position_embeddings.weight")
    out["embeddings.token_type_embeddings.weight"] = get("embeddings.token_type_embeddings.weight")
    if arch == "bert":
        for s in ("weight", "bias"):
            out[f"embeddings.layernorm.{s}"] = get(f"embeddings.LayerNorm.{s}")
    for i in range(LAYERS):
        hf = f"encoder.layer.{i}."
        us = f"encoder.layers.{i}."
        for s in ("weight", "bias"):
            out[us + f"self_attention.query_key_value.{s}"] = fuse_qkv(
                *(get(hf + f"attention.self.{n}.{s}") for n in ("query", "key", "value"))
            )
            out[us + f"self_attention.dense.{s}"] = get(hf + f"attention.output.dense.{s}")
            out[us + f"mlp.dense_h_to_4h.{s}"] = get(hf + f"intermediate.dense.{s}")
            out[us + f"mlp.dense_4h_to_h.{s}"] = get(hf + f"output.dense.{s}")
            if arch == "megatron":
                out[us + f"input_layernorm.{s}"] = get(hf + f"attention.ln.{s}")
                out[us + f"post_attention_layernorm.{s}"] = get(hf + f"ln.{s}")
            else:
                out[us + f"attention_output_layernorm.{s}"] = get(hf + f"attention.output.LayerNorm.{s}")
                out[us + f"output_layernorm.{s}"] = get(hf + f"output.LayerNorm.{s}")
    if arch == "megatron":
        for s in ("weight", "bias"):
            out[f"encoder.final_layernorm.{s}"] = get(f"encoder.ln.{s}")
    for s in ("weight", "bias"):
        if pre + f"pooler.dense.{s}" in named:
            out[f"pooler.dense.{s}"] = get(f"pooler.dense.{s}")
        out[f"classifier.mlp.layer0.{s}"] = named[f"qa_outputs.{s}"]
    return {k: v.detach().contiguous() for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["megatron", "bert"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)

    common = dict(
        vocab_size=PADDED_VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=MAX_POS,
        type_vocab_size=TYPES,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
        # HF gives the word embedding padding_idx=pad_token_id (no gradient
        # for that row); Megatron has none. Point it at a row no input uses.
        pad_token_id=PADDED_VOCAB - 1,
    )
    if args.arch == "megatron":
        eps = 1e-5
        cfg = MegatronBertConfig(layer_norm_eps=eps, **common)
        base, qa = MegatronBertModel(cfg), MegatronBertForQuestionAnswering(cfg)
    else:
        eps = 1e-12
        cfg = BertConfig(layer_norm_eps=eps, **common)
        base, qa = BertModel(cfg), BertForQuestionAnswering(cfg)
    with torch.no_grad():  # LayerNorms start at 1/0: perturb everything so they matter.
        for p in list(base.parameters()) + list(qa.qa_outputs.parameters()):
            p.add_(torch.randn_like(p) * 0.05)
    qa.bert.load_state_dict(base.state_dict(), strict=False)
    base.eval()
    qa.eval()

    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    lengths = [SEQ, SEQ - 5]
    mask = torch.zeros(BATCH, SEQ, dtype=torch.long)
    types = torch.zeros(BATCH, SEQ, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        types[b, n // 2 : n] = 1
        ids[b, n:] = 0
    start = torch.tensor([3, 2])
    end = torch.tensor([7, 9])

    with torch.no_grad():
        base_out = base(input_ids=ids, attention_mask=mask, token_type_ids=types)
    out = qa(input_ids=ids, attention_mask=mask, token_type_ids=types, start_positions=start, end_positions=end)
    out.loss.backward()

    named = dict(base.named_parameters(prefix="bert"))
    named.update({f"qa_outputs.{k}": v for k, v in qa.qa_outputs.named_parameters()})
    save_file(canonical(named, args.arch), os.path.join(args.out, "weights.safetensors"))
    grads = {k: p.grad for k, p in qa.named_parameters() if p.grad is not None}
    save_file(canonical(grads, args.arch), os.path.join(args.out, "grads.safetensors"))
    save_file(
        {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": types,
            "start_positions": start,
            "end_positions": end,
            "sequence_output": base_out.last_hidden_state.contiguous(),
            "pooled_output": base_out.pooler_output.contiguous(),
            "start_logits": out.start_logits.detach().contiguous(),
            "end_logits": out.end_logits.detach().contiguous(),
            "loss": out.loss.detach().reshape(1),
        },
        os.path.join(args.out, "io.safetensors"),
    )

    # NeMo-shaped two-layer heads on the sequence output (dropout off):
    # token classification with a loss mask, sequence classification on token 0.
    seq = base_out.last_hidden_state
    classes = 5
    heads = {}
    labels_tok = torch.randint(0, classes, (BATCH, SEQ))
    labels_seq = torch.tensor([1, 3])
    for name, x, labels in (("token", seq, labels_tok), ("sequence", seq[:, 0], labels_seq)):
        l0, l2 = torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.Linear(HIDDEN, classes)
        logits = l2(torch.relu(l0(x)))
        if name == "token":
            keep = mask.reshape(-1) > 0
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, classes)[keep], labels.reshape(-1)[keep])
        else:
            loss = torch.nn.functional.cross_entropy(logits, labels)
        for layer, lin in (("layer0", l0), ("layer2", l2)):
            heads[f"{name}.classifier.mlp.{layer}.weight"] = lin.weight.detach().contiguous()
            heads[f"{name}.classifier.mlp.{layer}.bias"] = lin.bias.detach().contiguous()
        heads[f"{name}.logits"] = logits.detach().contiguous()
        heads[f"{name}.labels"] = labels
        heads[f"{name}.loss"] = loss.detach().reshape(1)
    save_file(heads, os.path.join(args.out, "heads.safetensors"))

    ours = {
        "vocab_size": VOCAB,
        "padded_vocab_size": PADDED_VOCAB,
        "hidden_size": HIDDEN,
        "num_layers": LAYERS,
        "num_attention_heads": HEADS,
        "ffn_hidden_size": FFN,
        "max_position_embeddings": MAX_POS,
        "type_vocab_size": TYPES,
        "layernorm_epsilon": eps,
        "activation": "gelu",
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "make_vocab_size_divisible_by": 128,
        "architecture": "megatron_pre_ln" if args.arch == "megatron" else "bert_post_ln",
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(ours, f, indent=1)


if __name__ == "__main__":
    main()
