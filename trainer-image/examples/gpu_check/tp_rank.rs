//! One rank of the TP=2 exactness check (a child of `exactness`): rendezvous
//! on loopback, this rank's shard of the reference weights on the shared
//! device, an fp32 forward and backward, the gradients gathered over the
//! tensor-parallel group; rank 0 writes logits, loss and gradients.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crds::Precision;
use megatron_trainer::comm::{self, CommConfig, ProcessGroup};
use megatron_trainer::model::gather_state_dict;
use megatron_trainer::parallel::TpGroup;
use tch::{Device, Tensor};

use super::cuda;
use super::error::Result;
use super::exactness::{Reference, model, qa_pass};
use super::host_staged::HostStaged;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub device: String,
    #[arg(long = "ref")]
    pub reference: PathBuf,
    #[arg(long)]
    pub rank: usize,
    #[arg(long)]
    pub master_port: u16,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    let device = cuda::device(&a.device)?;
    cuda::disable_tf32();
    tch::set_num_threads(1);
    let mut cfg = CommConfig::new("127.0.0.1", a.master_port, a.rank, 2, 2);
    cfg.rendezvous_timeout = Duration::from_secs(60);
    cfg.op_timeout = Duration::from_secs(60);
    let topo = comm::init(&cfg)?;
    let group: Arc<dyn ProcessGroup> = Arc::new(HostStaged::new(topo.tp.clone()));
    let tp = TpGroup::new(group.clone());
    let r = Reference::load(&a.reference)?;
    let m = model(&r, &tp, device)?;
    let pass = qa_pass(&m, &r.io, device, Precision::Fp32)?;
    let grads = gather_state_dict(&pass.grads, group.as_ref())?;
    if a.rank == 0 {
        let mut out: Vec<(String, Tensor)> = vec![
            ("start".into(), pass.start.f_contiguous()?),
            ("end".into(), pass.end.f_contiguous()?),
            ("loss".into(), Tensor::from_slice(&[pass.loss])),
        ];
        for (k, g) in grads {
            out.push((
                format!("grad.{k}"),
                g.f_to_device(Device::Cpu)?.f_contiguous()?,
            ));
        }
        Tensor::write_safetensors(&out, &a.out)?;
    }
    topo.world.barrier()?;
    Ok(())
}
