//! File and directory names of training checkpoints, as NeMo's experiment
//! manager lays them out: `mp_rank_NN/<name>-last.ckpt` and top-k files
//! `mp_rank_NN/<name>--val_loss=0.35-epoch=0.ckpt`.

use crate::train::{TrainError, TrainResult};

/// `mp_rank_00` for tensor-parallel rank 0.
pub fn rank_dir(tp_rank: usize) -> String {
    format!("mp_rank_{tp_rank:02}")
}

/// `<name>-last.ckpt`: the newest checkpoint of a rank (overwritten by each save).
pub fn last_file(name: &str) -> String {
    format!("{name}-last.ckpt")
}

/// `<name>--<metric>=<value:.2f>-epoch=<epoch>.ckpt` (Lightning's
/// `{monitor}={value:.2f}-{epoch}` template with NeMo's `--` separator).
pub fn metric_file(name: &str, metric: &str, value: f64, epoch: i64) -> String {
    format!("{name}--{metric}={value:.2}-epoch={epoch}.ckpt")
}

/// `<name>--step=<step>-epoch=<epoch>.ckpt`, for saves without a monitored metric.
pub fn step_file(name: &str, step: u64, epoch: i64) -> String {
    format!("{name}--step={step}-epoch={epoch}.ckpt")
}

/// `file` with Lightning's `-vN` suffix before `.ckpt` (name clashes).
pub fn versioned(file: &str, version: usize) -> String {
    let stem = file.strip_suffix(".ckpt").unwrap_or(file);
    format!("{stem}-v{version}.ckpt")
}

/// Checks a checkpoint name (the `<name>` of the files): a plain file-name
/// prefix without path separators or `=`.
pub fn check_name(name: &str) -> TrainResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(TrainError::InvalidInput(format!(
            "checkpoint name '{name}' must be 1-100 characters of a-z, A-Z, 0-9, '_', '-', '.' \
             and not start with '.' (e.g. megatron_bert)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_nemo() {
        assert_eq!(rank_dir(1), "mp_rank_01");
        assert_eq!(last_file("megatron_bert"), "megatron_bert-last.ckpt");
        assert_eq!(
            metric_file("megatron_bert", "val_loss", 0.3456, 0),
            "megatron_bert--val_loss=0.35-epoch=0.ckpt"
        );
        assert_eq!(
            step_file("megatron_bert", 600, 2),
            "megatron_bert--step=600-epoch=2.ckpt"
        );
        assert_eq!(
            versioned("a--x=1.00-epoch=0.ckpt", 1),
            "a--x=1.00-epoch=0-v1.ckpt"
        );
        assert!(check_name("megatron_bert").is_ok());
        assert!(check_name("a/b").unwrap_err().is_invalid_input());
        assert!(check_name("").is_err());
    }
}
