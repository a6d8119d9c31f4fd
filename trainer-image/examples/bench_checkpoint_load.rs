//! Benchmark: loading a Megatron-BERT-345M-shaped fp16 checkpoint (~670 MB)
//! with `checkpoint::megatron::load` vs Python `torch.load`, time and peak
//! RSS side by side.
//!
//! ```text
//! eval "$(scripts/torch-env)"
//! cargo run --release -p megatron-trainer --example bench_checkpoint_load [-- /tmp/bench-345m.pt]
//! ```
//! The checkpoint is generated once with `tests/python/ckpt_bench.py make`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use megatron_trainer::checkpoint::megatron;

fn status(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn main() -> anyhow::Result<()> {
    let path = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/tmp/bench-345m.pt".into()),
    );
    let python = std::env::var("MEGATRON_PYTHON")
        .map_err(|_| anyhow::anyhow!("run `eval \"$(scripts/torch-env)\"` first"))?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/ckpt_bench.py");
    if !path.exists() {
        eprintln!("generating {} ...", path.display());
        let st = Command::new(&python)
            .arg(&script)
            .arg("make")
            .arg(&path)
            .status()?;
        anyhow::ensure!(st.success(), "generating the checkpoint failed");
    }
    let file_bytes = std::fs::metadata(&path)?.len();

    // Warm libtorch and the page cache the same way for both sides.
    let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
    // (chunked, so the warm-up itself does not raise the peak RSS).
    let mut f = std::fs::File::open(&path)?;
    let mut buf = vec![0u8; 1 << 20];
    while std::io::Read::read(&mut f, &mut buf)? > 0 {}
    drop(buf);
    // Reset the peak-RSS mark where the kernel allows it.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status("VmRSS");
    let t0 = Instant::now();
    let (cfg, sd, info) = megatron::load(&path, 1, 0)?;
    let secs = t0.elapsed().as_secs_f64();
    let peak = status("VmHWM");
    let tensor_bytes: u64 = sd
        .values()
        .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
        .sum();
    drop(sd);

    let out = Command::new(&python)
        .arg(&script)
        .arg("load")
        .arg(&path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let f = |k: &str| py[k].as_f64().unwrap_or(0.0);
    let (py_secs, py_peak, py_before, py_bytes) = (
        f("seconds"),
        f("peak_rss") as u64,
        f("rss_before") as u64,
        f("tensor_bytes") as u64,
    );

    println!(
        "checkpoint: {} ({:.0} MiB, {} container, {} layers, hidden {})",
        path.display(),
        mib(file_bytes),
        info.container,
        cfg.num_layers,
        cfg.hidden_size
    );
    println!(
        "{:<28} {:>10} {:>14} {:>16} {:>14}",
        "", "seconds", "tensor MiB", "peak RSS MiB", "RSS growth MiB"
    );
    println!(
        "{:<28} {:>10.3} {:>14.0} {:>16.0} {:>14.0}",
        "rust megatron::load (TP 1)",
        secs,
        mib(tensor_bytes),
        mib(peak),
        mib(peak.saturating_sub(rss_before))
    );
    println!(
        "{:<28} {:>10.3} {:>14.0} {:>16.0} {:>14.0}",
        "python torch.load",
        py_secs,
        mib(py_bytes),
        mib(py_peak),
        mib(py_peak.saturating_sub(py_before))
    );
    println!(
        "time ratio rust/python:                      {:.2}",
        secs / py_secs
    );
    println!(
        "rust RSS growth / tensor bytes:              {:.3} (encoder weights returned; the file also holds lm_head/binary_head)",
        peak.saturating_sub(rss_before) as f64 / tensor_bytes as f64
    );
    println!(
        "rust RSS growth / file bytes:                {:.3}",
        peak.saturating_sub(rss_before) as f64 / file_bytes as f64
    );
    println!(
        "python RSS growth / file bytes:              {:.3}",
        py_peak.saturating_sub(py_before) as f64 / file_bytes as f64
    );
    Ok(())
}
