"""A tiny, randomly initialised Megatron-LM BERT checkpoint for the end-to-end runs.

  python tiny_megatron_bert.py OUT [--tp 2] [--hidden 64] [--heads 4] [--layers 2] [--ffn 256]
                                   [--max-positions 128] [--vocab 30522]

Writes OUT/latest_checkpointed_iteration.txt and OUT/iter_0000100/mp_rank_NN/model_optim_rng.pt
(checkpoint_version 3.0, float32, BERT-style initialisation): the architecture of
examples/tiny-cpu-squad.yaml with the bert-base-uncased vocabulary size. The writer is the repository's Megatron-LM test writer
(trainer-image/tests/python/ckpt_megatron.py) at these dimensions.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "trainer-image", "tests", "python"))
import ckpt_megatron  # noqa: E402
import torch  # noqa: E402


def initialised(reference):
    """The writer's tensors re-drawn like a BERT initialisation (normal std 0.02, zero biases,
    LayerNorm weight 1), so the tiny model trains like a real one."""
    def wrapped(tp, dtype):
        g = torch.Generator().manual_seed(7)
        out = reference(tp, dtype)
        for name, t in out.items():
            if "layernorm" in name:
                out[name] = (torch.ones_like(t) if name.endswith(".weight") else torch.zeros_like(t))
            elif name.endswith(".bias"):
                out[name] = torch.zeros_like(t)
            else:
                out[name] = (torch.randn(t.shape, generator=g) * 0.02).to(dtype)
        return out
    return wrapped


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=256)
    ap.add_argument("--max-positions", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=30522)
    a = ap.parse_args()
    c = ckpt_megatron
    c.LAYERS, c.HIDDEN, c.HEADS, c.FFN, c.MAX_POS, c.VOCAB = (
        a.layers, a.hidden, a.heads, a.ffn, a.max_positions, a.vocab)
    c.HEAD_DIM = a.hidden // a.heads
    c.reference = initialised(c.reference)
    c.make(argparse.Namespace(out=a.out, version=3, tp=a.tp, naming="new", legacy=False,
                              release=False, no_args=False, dtype="float32"))
    # The full tensors the writer keeps for its own checks are not part of a checkpoint.
    os.remove(os.path.join(a.out, "reference.safetensors"))
    print(a.out)


if __name__ == "__main__":
    main()
