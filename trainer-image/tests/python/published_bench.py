"""The reference side of tests/benches/published.rs: fetch, verify and load a published
Megatron-LM weights file the way one would by hand.

  python published_bench.py fetch S3_URI DEST_DIR SHA256   (env: AWS_* credentials, ENDPOINT)
  python published_bench.py load PATH

`fetch` runs, one after the other, each as its own child process:
  1. `aws s3 cp S3_URI DEST_DIR/ --endpoint-url $ENDPOINT` (the AWS CLI, default settings);
  2. `sha256sum FILE` (the digest must equal SHA256);
  3. this script's `load FILE` (a fresh Python: `import torch`, then
     `torch.load(FILE, weights_only=False)`; Megatron-LM files pickle an argparse Namespace).
Each child's wall time and peak RSS (from os.wait4's rusage, so exactly that child) are printed
as one JSON object; for the load, also the time of torch.load alone (after `import torch`).
NGC's BERT weights are one .pt file each, so there is no unzip step.
"""
import json
import os
import resource
import subprocess
import sys
import time


def child(argv, env=None):
    """Runs argv; returns (seconds, peak RSS bytes, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # Read the pipes before waiting so a chatty child cannot block; then reap it with wait4
    # for its own rusage.
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{argv!r} failed ({proc.returncode}):\n{err.decode(errors='replace')}")
    return seconds, usage.ru_maxrss * 1024, out.decode()


def fetch(uri, dest_dir, sha256):
    endpoint = os.environ["ENDPOINT"]
    name = uri.rsplit("/", 1)[-1]
    path = os.path.join(dest_dir, name)
    cp_s, cp_rss, _ = child(
        ["aws", "s3", "cp", uri, dest_dir.rstrip("/") + "/", "--endpoint-url", endpoint,
         "--only-show-errors"])
    sum_s, sum_rss, out = child(["sha256sum", path])
    got = out.split()[0]
    if got != sha256:
        sys.exit(f"sha256 mismatch: {got} != {sha256}")
    load_s, load_rss, out = child([sys.executable, __file__, "load", path])
    inner = json.loads(out)
    print(json.dumps({
        "bytes": os.path.getsize(path),
        "cp_s": cp_s, "cp_rss": cp_rss,
        "sha256sum_s": sum_s, "sha256sum_rss": sum_rss,
        "load_process_s": load_s, "load_rss": load_rss,
        "import_s": inner["import_s"], "torch_load_s": inner["torch_load_s"],
        "import_rss": inner["import_rss"],
        "tensors": inner["tensors"],
    }))


def count_tensors(value):
    import torch
    if isinstance(value, torch.Tensor):
        return 1
    if isinstance(value, dict):
        return sum(count_tensors(v) for v in value.values())
    return 0


def load(path):
    start = time.perf_counter()
    import torch
    imported = time.perf_counter()
    # Peak RSS so far: the interpreter with torch imported, before the load.
    import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    state = torch.load(path, weights_only=False, map_location="cpu")
    loaded = time.perf_counter()
    tensors = count_tensors(state["model"])
    print(json.dumps({"import_s": imported - start, "torch_load_s": loaded - imported,
                      "import_rss": import_rss, "tensors": tensors}))


if __name__ == "__main__":
    if sys.argv[1] == "fetch":
        fetch(*sys.argv[2:5])
    elif sys.argv[1] == "load":
        load(sys.argv[2])
    else:
        sys.exit(__doc__)
