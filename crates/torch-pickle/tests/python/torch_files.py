"""Reference torch.save files for the torch-pickle crate's reader and writer.

  write DIR   writes DIR/zip.pt and DIR/legacy.pt (the same object, zip and
              legacy containers) and DIR/ref.safetensors holding every tensor
              of the object, contiguous, under its dotted path.
  check FILE EXPECT.safetensors EXPECT.json
              torch.load(FILE, weights_only=True) and compare it with the
              tensors and plain values the Rust test expects; exits non-zero
              on any mismatch.
"""
import argparse
import collections
import datetime
import json
import sys

import torch
from safetensors.torch import load_file, save_file


def build():
    g = torch.Generator().manual_seed(1234)
    base = torch.randn(4, 6, generator=g)
    shared = torch.arange(10, dtype=torch.float32) * 0.5
    wide = torch.randn(5, 7, generator=g).half()
    model = collections.OrderedDict()
    model["f32"] = torch.randn(3, 4, generator=g)
    model["f16"] = torch.randn(5, generator=g).half()
    model["bf16"] = torch.randn(2, 3, generator=g).bfloat16()
    model["f64"] = torch.randn(2, 2, generator=g).double()
    model["i64"] = torch.arange(-3, 3).view(2, 3)
    model["i32"] = torch.tensor([1, -2, 2**31 - 1], dtype=torch.int32)
    model["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    model["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    model["u8"] = torch.randint(0, 256, (7,), generator=g).to(torch.uint8)
    model["bool"] = torch.tensor([True, False, True])
    model["scalar"] = torch.tensor(3.5)
    model["empty"] = torch.zeros(0, 3)
    model["transposed"] = base.t()
    model["sliced"] = base[1:3, 2:]
    model["strided"] = wide[:, ::2]
    model["shared_a"] = shared[0:4]
    model["shared_b"] = shared[4:10].view(2, 3)
    model["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    model.nested = None
    inner = {"deep": {"x": torch.randn(2, generator=g)}, "list": [torch.ones(2), torch.zeros(1)]}
    args = argparse.Namespace(
        num_layers=2,
        hidden_size=16,
        lr=1.5e-4,
        tokenizer_type="BertWordPieceLowerCase",
        params_dtype=torch.float16,
        fp16=True,
        load=None,
        seq=(1, 2),
    )
    return {
        "model": model,
        "inner": inner,
        "args": args,
        "dtype": torch.bfloat16,
        "iteration": 1234,
        "big": 2**40,
        "neg": -7,
        "neg_big": -(2**35),
        "pi": 2.71,
        "text": "h\u00e9llo \u2603",
        "none": None,
        "flags": [True, False],
        "tuple": (1, "two", 3.0),
        "bytes": b"\x00\x01abc",
        "date": datetime.date(2020, 1, 2),
        "checkpoint_version": 3.0,
    }


def flatten(obj, prefix, out):
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj.detach().contiguous().clone()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flatten(v, f"{prefix}.{i}" if prefix else str(i), out)


def write(d):
    obj = build()
    torch.save(obj, f"{d}/zip.pt")
    torch.save(obj, f"{d}/legacy.pt", _use_new_zipfile_serialization=False)
    tensors = {}
    flatten(obj, "", tensors)
    save_file(tensors, f"{d}/ref.safetensors")


def plain(obj):
    """JSON-comparable form of the non-tensor values."""
    if isinstance(obj, torch.Tensor):
        return "<tensor>"
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def check(path, expect_tensors, expect_json):
    obj = torch.load(path, weights_only=True)
    got = {}
    flatten(obj, "", got)
    want = load_file(expect_tensors)
    bad = []
    if set(got) != set(want):
        bad.append(f"tensor names differ: extra {sorted(set(got) - set(want))}, missing {sorted(set(want) - set(got))}")
    for k in sorted(set(got) & set(want)):
        g, w = got[k], want[k]
        if g.dtype != w.dtype or g.shape != w.shape or not torch.equal(g, w):
            bad.append(f"{k}: got {g.dtype} {tuple(g.shape)}, want {w.dtype} {tuple(w.shape)}")
    with open(expect_json) as f:
        want_plain = json.load(f)
    got_plain = plain(obj)
    if got_plain != want_plain:
        bad.append(f"plain values differ:\n got  {got_plain}\n want {want_plain}")
    if isinstance(obj, dict) and "ordered" in obj and not isinstance(obj["ordered"], collections.OrderedDict):
        bad.append(f"'ordered' is a {type(obj['ordered'])}, not an OrderedDict")
    if bad:
        print("\n".join(bad), file=sys.stderr)
        sys.exit(1)
    print(f"ok: {len(got)} tensors")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
