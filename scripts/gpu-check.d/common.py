"""Helpers shared by the gpu-check reference scripts (our code; Hugging Face
transformers is imported only as the reference implementation).

Every script writes one JSON object of raw measurements to --json; the
limits, ratios and MFU are computed in one place, report.py.
"""

import json
import os
import sys

import torch


def device_of(name):
    """torch.device for --device; `cuda` without a GPU is an error, not a skip."""
    if name == "cuda":
        if not torch.cuda.is_available():
            sys.exit("gpu-check: --device cuda but torch sees no GPU (driver? CUDA_VISIBLE_DEVICES?)")
        return torch.device("cuda", 0)
    return torch.device("cpu")


def no_tf32():
    """fp32 exactness compares true fp32 math: TF32 off for matmuls and cuDNN."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib():
    """Peak resident memory of this process (the CPU stand-in for GPU memory)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def memory_figures(device):
    """The memory the step used, measured the same way as the Rust side:
    on CUDA the device memory in use (total - free: the caching allocator's
    reservations plus the CUDA context, which the allocator never returns on
    its own, so after the steps this is their peak); on CPU the peak RSS."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return {
            "peak_mem_mib": (total - free) / 2**20,
            "peak_mem_kind": "cuda total-free after the timed steps",
            "torch_max_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "torch_max_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
        }
    return {"peak_mem_mib": peak_rss_mib(), "peak_mem_kind": "cpu VmHWM"}


def versions():
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["cuda"] = torch.version.cuda
    return out


def is_oom(err):
    """Whether an exception is an out-of-memory (the only failure a batch search may
    absorb): the caching allocator's, or cuBLAS/cuDNN failing to allocate on a full card."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    text = str(err).lower()
    return isinstance(err, oom) or any(
        m in text for m in ("out of memory", "status_alloc_failed", "not_enough_workspace")
    )


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    print(json.dumps(obj, sort_keys=True))


def add_shape_args(ap):
    """The model shape flags, the same names as the Rust example's."""
    ap.add_argument("--hidden", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--ffn", type=int, default=0, help="0: 4 x hidden")
    ap.add_argument("--vocab", type=int, required=True, help="tokenizer vocabulary (ids drawn below it)")
    ap.add_argument("--padded-vocab", type=int, required=True, help="embedding rows (Megatron's padding)")
    ap.add_argument("--seq", type=int, required=True)


def hf_config(args, dropout, attn):
    """HF MegatronBertConfig of the shape; pad_token_id points at a row no input
    uses (HF's padding_idx gets no gradient; Megatron has none)."""
    from transformers import MegatronBertConfig

    return MegatronBertConfig(
        vocab_size=args.padded_vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.ffn or 4 * args.hidden,
        max_position_embeddings=max(512, args.seq),
        type_vocab_size=2,
        hidden_act="gelu",
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        layer_norm_eps=1e-5,
        pad_token_id=args.padded_vocab - 1,
        attn_implementation=attn,
    )
