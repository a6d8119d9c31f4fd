//! Rendezvous settings: explicit values, or torchrun's environment variables.

use std::net::IpAddr;
use std::time::Duration;

use super::group::CommError;

/// Default wait for every rank to reach the store (pods may pull images first).
pub const DEFAULT_RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(900);
/// Default limit for one collective.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(600);

/// Where and who this rank is, and how long to wait for peers.
#[derive(Clone, Debug, PartialEq)]
pub struct CommConfig {
    /// Host of rank 0's store (`MASTER_ADDR`): a DNS name or IP.
    pub master_addr: String,
    /// Port of rank 0's store (`MASTER_PORT`).
    pub master_port: u16,
    /// Global rank (`RANK`).
    pub rank: usize,
    /// Number of ranks (`WORLD_SIZE`).
    pub world_size: usize,
    /// Rank on this node (`LOCAL_RANK`): picks the GPU.
    pub local_rank: usize,
    /// Ranks on this node (`LOCAL_WORLD_SIZE`).
    pub local_world_size: usize,
    /// Tensor-parallel size: consecutive ranks form a tensor-parallel group.
    pub tp_size: usize,
    /// How long to wait for the store and every rank (`MEGATRON_RENDEZVOUS_TIMEOUT_SECS`).
    pub rendezvous_timeout: Duration,
    /// Limit for one collective (`MEGATRON_COMM_TIMEOUT_SECS`).
    pub op_timeout: Duration,
    /// Address peers use to reach this rank's data plane (`MEGATRON_COMM_ADDR`);
    /// default: the local address of the connection to the store.
    pub advertise_addr: Option<IpAddr>,
    /// Data-plane listen port (`MEGATRON_COMM_PORT`); 0 picks a free port.
    pub data_port: u16,
}

impl CommConfig {
    /// A configuration with default timeouts and `local_rank = rank`.
    pub fn new(
        master_addr: impl Into<String>,
        master_port: u16,
        rank: usize,
        world_size: usize,
        tp_size: usize,
    ) -> Self {
        Self {
            master_addr: master_addr.into(),
            master_port,
            rank,
            world_size,
            local_rank: rank,
            local_world_size: world_size,
            tp_size,
            rendezvous_timeout: DEFAULT_RENDEZVOUS_TIMEOUT,
            op_timeout: DEFAULT_OP_TIMEOUT,
            advertise_addr: None,
            data_port: 0,
        }
    }

    /// Reads torchrun's variables (`MASTER_ADDR`, `MASTER_PORT`, `RANK`,
    /// `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`) and the optional
    /// `MEGATRON_*` ones. `None` when neither `RANK` nor `WORLD_SIZE` is set
    /// (a single process).
    pub fn from_env(tp_size: usize) -> Result<Option<Self>, CommError> {
        Self::from_lookup(tp_size, |k| std::env::var(k).ok())
    }

    /// Like [`CommConfig::from_env`] with a custom variable lookup.
    pub fn from_lookup(
        tp_size: usize,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, CommError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        if get("RANK").is_none() && get("WORLD_SIZE").is_none() {
            return Ok(None);
        }
        let num = |var: &'static str, default: Option<usize>| -> Result<usize, CommError> {
            match get(var) {
                Some(v) => v.trim().parse().map_err(|_| CommError::Env {
                    var,
                    message: format!("{v:?} is not a non-negative integer"),
                }),
                None => default.ok_or(CommError::Env {
                    var,
                    message: "is not set; torchrun-style launch needs MASTER_ADDR, MASTER_PORT, \
                              RANK and WORLD_SIZE together"
                        .into(),
                }),
            }
        };
        let secs = |var: &'static str, default: Duration| -> Result<Duration, CommError> {
            match get(var) {
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or(CommError::Env {
                        var,
                        message: format!("{v:?} is not a positive number of seconds"),
                    }),
                None => Ok(default),
            }
        };
        let rank = num("RANK", None)?;
        let world_size = num("WORLD_SIZE", None)?;
        let master_addr = get("MASTER_ADDR").ok_or(CommError::Env {
            var: "MASTER_ADDR",
            message: "is not set: it must name rank 0's host (e.g. pod 0's DNS name)".into(),
        })?;
        let port = num("MASTER_PORT", None)?;
        let master_port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(CommError::Env {
                var: "MASTER_PORT",
                message: format!("{port} is not a TCP port (1-65535)"),
            })?;
        let data_port = num("MEGATRON_COMM_PORT", Some(0))?;
        let data_port = u16::try_from(data_port).map_err(|_| CommError::Env {
            var: "MEGATRON_COMM_PORT",
            message: format!("{data_port} is not a TCP port (0-65535)"),
        })?;
        let advertise_addr = match get("MEGATRON_COMM_ADDR") {
            None => None,
            Some(v) => Some(v.trim().parse().map_err(|_| CommError::Env {
                var: "MEGATRON_COMM_ADDR",
                message: format!("{v:?} is not an IP address"),
            })?),
        };
        let cfg = Self {
            master_addr: master_addr.trim().to_string(),
            master_port,
            rank,
            world_size,
            local_rank: num("LOCAL_RANK", Some(0))?,
            local_world_size: num("LOCAL_WORLD_SIZE", Some(1))?,
            tp_size,
            rendezvous_timeout: secs(
                "MEGATRON_RENDEZVOUS_TIMEOUT_SECS",
                DEFAULT_RENDEZVOUS_TIMEOUT,
            )?,
            op_timeout: secs("MEGATRON_COMM_TIMEOUT_SECS", DEFAULT_OP_TIMEOUT)?,
            advertise_addr,
            data_port,
        };
        cfg.validate()?;
        Ok(Some(cfg))
    }

    /// Checks that the ranks and sizes are consistent.
    pub fn validate(&self) -> Result<(), CommError> {
        if self.world_size == 0 {
            return Err(CommError::Config("WORLD_SIZE must be at least 1".into()));
        }
        if self.rank >= self.world_size {
            return Err(CommError::Config(format!(
                "RANK={} must be below WORLD_SIZE={}",
                self.rank, self.world_size
            )));
        }
        if self.tp_size == 0 || !self.world_size.is_multiple_of(self.tp_size) {
            return Err(CommError::Config(format!(
                "the tensor-parallel size {} must divide WORLD_SIZE={} (data-parallel size = \
                 WORLD_SIZE / tensor-parallel size)",
                self.tp_size, self.world_size
            )));
        }
        if self.local_world_size > 0 && self.local_rank >= self.local_world_size {
            return Err(CommError::Config(format!(
                "LOCAL_RANK={} must be below LOCAL_WORLD_SIZE={}",
                self.local_rank, self.local_world_size
            )));
        }
        if self.world_size > 1 && self.master_addr.is_empty() {
            return Err(CommError::Config("MASTER_ADDR must not be empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)], tp: usize) -> Result<Option<CommConfig>, CommError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CommConfig::from_lookup(tp, |k| m.get(k).cloned())
    }

    #[test]
    fn no_env_means_single_process() {
        assert_eq!(parse(&[], 1).unwrap(), None);
    }

    #[test]
    fn torchrun_env_is_read() {
        let c = parse(
            &[
                ("MASTER_ADDR", "job-0.job"),
                ("MASTER_PORT", "29500"),
                ("RANK", "3"),
                ("WORLD_SIZE", "4"),
                ("LOCAL_RANK", "1"),
                ("LOCAL_WORLD_SIZE", "2"),
                ("MEGATRON_COMM_TIMEOUT_SECS", "2.5"),
            ],
            2,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.rank, c.world_size, c.local_rank, c.tp_size),
            (3, 4, 1, 2)
        );
        assert_eq!(c.master_addr, "job-0.job");
        assert_eq!(c.op_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn errors_name_the_variable() {
        let e = parse(
            &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")],
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("MASTER_ADDR"), "{e}");
        let e = parse(
            &[
                ("RANK", "x"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "a"),
                ("MASTER_PORT", "1"),
            ],
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("RANK"), "{e}");
        let e = parse(
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "6"),
                ("MASTER_ADDR", "a"),
                ("MASTER_PORT", "1"),
            ],
            4,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("tensor-parallel size 4 must divide WORLD_SIZE=6"),
            "{e}"
        );
        let e = parse(
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "a"),
                ("MASTER_PORT", "70000"),
            ],
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("MASTER_PORT"), "{e}");
    }
}
