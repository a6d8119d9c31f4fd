//! Tensor parallelism across real processes (the CPU TCP-ring backend):
//! the parallel layers against dense PyTorch ops, and the whole model at
//! TP=2 and TP=4 against TP=1 (outputs and gathered parameter gradients).

use crate::support::common;
use crate::support::model_util;

use std::path::PathBuf;

use megatron_trainer::comm;
use megatron_trainer::model::{
    BertTaskModel, HeadConfig, HeadOutput, StateDict, gather_state_dict, question_answering_loss,
    shard_state_dict,
};
use megatron_trainer::parallel::{
    ColumnParallelLinear, RowParallelLinear, TpGroup, VocabParallelEmbedding,
    all_reduce_gradients_mean,
};
use tch::{Device, Kind, Tensor, nn};

const REF_DIR_VAR: &str = "MODEL_TEST_REFERENCE_DIR";
const F32: (Kind, Device) = (Kind::Float, Device::Cpu);

fn child_group(tp: usize) -> (TpGroup, i64) {
    tch::set_num_threads(1);
    let topo = comm::init_from_env(tp).expect("rendezvous");
    let group = TpGroup::new(topo.tp.clone());
    let rank = group.rank();
    (group, rank)
}

fn set(var: &Tensor, value: &Tensor) {
    tch::no_grad(|| var.shallow_clone().copy_(value));
}

fn leaf(t: &Tensor) -> Tensor {
    t.detach().set_requires_grad(true)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// Without the all-reduce in copy-to-region's backward, rank r's input
/// gradient would only hold its own columns' contribution `g_r W_r`; the test
/// shows that plain local math gives exactly that wrong answer and that the
/// layer gives the full `g W`.
#[test]
fn column_parallel_backward_all_reduces_input_gradient() {
    if common::rank_child().is_some() {
        let (group, r) = child_group(2);
        tch::manual_seed(7); // same data on every rank
        let (x, w, b, c) = (
            Tensor::randn([4, 8], F32),
            Tensor::randn([6, 8], F32),
            Tensor::randn([6], F32),
            Tensor::randn([4, 6], F32),
        );
        // Dense reference.
        let xf = leaf(&x);
        let (wf, bf) = (leaf(&w), leaf(&b));
        let yf = xf.linear(&wf, Some(&bf));
        (&yf * &c).sum(Kind::Float).backward();

        let vs = nn::VarStore::new(Device::Cpu);
        let layer = ColumnParallelLinear::new(&vs.root(), 8, 6, true, 0.02, &group).unwrap();
        set(&layer.weight, &w.narrow(0, 3 * r, 3));
        set(layer.bias.as_ref().unwrap(), &b.narrow(0, 3 * r, 3));
        let c_r = c.narrow(1, 3 * r, 3);
        let xt = leaf(&x);
        let y = layer.forward(&xt).unwrap();
        (&y * &c_r).sum(Kind::Float).backward();
        assert!(
            max_diff(&y, &yf.narrow(1, 3 * r, 3)) < 1e-6,
            "forward shard"
        );
        let d_input = max_diff(&xt.grad(), &xf.grad());
        assert!(
            d_input < 1e-5,
            "input gradient differs from the dense one by {d_input}"
        );
        assert!(max_diff(&layer.weight.grad(), &wf.grad().narrow(0, 3 * r, 3)) < 1e-5);
        assert!(
            max_diff(
                &layer.bias.as_ref().unwrap().grad(),
                &bf.grad().narrow(0, 3 * r, 3)
            ) < 1e-5
        );

        // Negative control: the same local math without the region function.
        let xn = leaf(&x);
        let yn = xn.linear(&w.narrow(0, 3 * r, 3), Some(&b.narrow(0, 3 * r, 3)));
        (&yn * &c_r).sum(Kind::Float).backward();
        let d_local = max_diff(&xn.grad(), &xf.grad());
        assert!(
            d_local > 1e-2,
            "without the all-reduce the input gradient must be wrong ({d_local})"
        );
        common::emit("input_grad_diff", format!("{d_input:e}"));
        common::emit("input_grad_diff_without_all_reduce", format!("{d_local:e}"));
        return;
    }
    let outs = common::Ranks::new(
        module_path!(),
        "column_parallel_backward_all_reduces_input_gradient",
        2,
    )
    .run_ok();
    for o in &outs {
        println!(
            "rank {}: input grad diff {} (without all-reduce {})",
            o.rank,
            o.expect_value("input_grad_diff"),
            o.expect_value("input_grad_diff_without_all_reduce")
        );
    }
}

/// Row-parallel (all-reduce forward, identity backward, bias after the
/// reduce) and the vocab-parallel embedding against dense ops at TP=2.
#[test]
fn row_parallel_and_vocab_embedding_match_dense() {
    if common::rank_child().is_some() {
        let (group, r) = child_group(2);
        tch::manual_seed(11);
        let (x, w, b, c) = (
            Tensor::randn([4, 8], F32),
            Tensor::randn([6, 8], F32),
            Tensor::randn([6], F32),
            Tensor::randn([4, 6], F32),
        );
        let (xf, wf, bf) = (leaf(&x), leaf(&w), leaf(&b));
        let yf = xf.linear(&wf, Some(&bf));
        (&yf * &c).sum(Kind::Float).backward();
        let vs = nn::VarStore::new(Device::Cpu);
        let row = RowParallelLinear::new(&(vs.root() / "row"), 8, 6, true, 0.02, &group).unwrap();
        set(&row.weight, &w.narrow(1, 4 * r, 4));
        set(row.bias.as_ref().unwrap(), &b);
        let xr = leaf(&x.narrow(1, 4 * r, 4));
        let y = row.forward(&xr).unwrap();
        (&y * &c).sum(Kind::Float).backward();
        assert!(max_diff(&y, &yf) < 1e-5, "row-parallel forward");
        assert!(
            max_diff(&xr.grad(), &xf.grad().narrow(1, 4 * r, 4)) < 1e-5,
            "row-parallel input grad"
        );
        assert!(
            max_diff(&row.weight.grad(), &wf.grad().narrow(1, 4 * r, 4)) < 1e-5,
            "weight grad"
        );
        // Identity backward: the replicated bias gets the dense gradient, not tp times it.
        assert!(
            max_diff(&row.bias.as_ref().unwrap().grad(), &bf.grad()) < 1e-5,
            "bias grad"
        );

        let table = Tensor::randn([16, 4], F32);
        let ids = Tensor::randint(16, [3, 5], (Kind::Int64, Device::Cpu));
        let g = Tensor::randn([3, 5, 4], F32);
        let tf = leaf(&table);
        (Tensor::embedding(&tf, &ids, -1, false, false) * &g)
            .sum(Kind::Float)
            .backward();
        let emb = VocabParallelEmbedding::new(&(vs.root() / "emb"), 16, 4, 0.02, &group).unwrap();
        set(&emb.weight, &table.narrow(0, 8 * r, 8));
        let out = emb.forward(&ids).unwrap();
        assert!(
            max_diff(&out, &Tensor::embedding(&table, &ids, -1, false, false)) < 1e-6,
            "lookup"
        );
        (&out * &g).sum(Kind::Float).backward();
        assert!(
            max_diff(&emb.weight.grad(), &tf.grad().narrow(0, 8 * r, 8)) < 1e-5,
            "embedding grad"
        );
        common::emit("ok", 1);
        return;
    }
    common::Ranks::new(
        module_path!(),
        "row_parallel_and_vocab_embedding_match_dense",
        2,
    )
    .run_ok();
}

struct Step {
    sequence_output: Tensor,
    start_logits: Tensor,
    end_logits: Tensor,
    loss: Tensor,
    grads: StateDict,
}

fn qa_step(group: &TpGroup, cfg_dir: &std::path::Path, weights: &StateDict) -> Step {
    let cfg = model_util::config(cfg_dir);
    let io = model_util::read(cfg_dir.join("io.safetensors"));
    let mut model =
        BertTaskModel::new(&cfg, &HeadConfig::question_answering(), group, Device::Cpu).unwrap();
    model.load_state_dict(weights).unwrap();
    let (ids, types, mask) = (
        &io["input_ids"],
        &io["token_type_ids"],
        &io["attention_mask"],
    );
    let seq = model
        .encoder
        .forward(ids, Some(types), Some(mask), false)
        .unwrap();
    let HeadOutput::Span {
        start_logits,
        end_logits,
    } = model.head.forward(&seq, false).unwrap()
    else {
        panic!("span head")
    };
    let loss = question_answering_loss(
        &start_logits,
        &end_logits,
        &io["start_positions"],
        &io["end_positions"],
    )
    .unwrap();
    loss.f_backward()
        .expect("backward with tensor-parallel all-reduces");
    Step {
        sequence_output: seq,
        start_logits,
        end_logits,
        loss,
        grads: model.gradients(),
    }
}

fn tp_matches_tp1(test: &str, tp: usize) {
    if common::rank_child().is_some() {
        let dir = PathBuf::from(std::env::var(REF_DIR_VAR).unwrap());
        let (group, rank) = child_group(tp);
        let weights = model_util::read(dir.join("weights.safetensors"));
        let full = qa_step(&TpGroup::single(), &dir, &weights);
        let shard = shard_state_dict(&weights, tp as i64, rank).unwrap();
        let ours = qa_step(&group, &dir, &shard);

        let io = model_util::read(dir.join("io.safetensors"));
        let mask = &io["attention_mask"];
        let d_seq = model_util::max_abs_diff_masked(
            &ours.sequence_output,
            &full.sequence_output,
            Some(&mask.unsqueeze(-1)),
        );
        let d_start =
            model_util::max_abs_diff_masked(&ours.start_logits, &full.start_logits, Some(mask));
        let d_end = model_util::max_abs_diff_masked(&ours.end_logits, &full.end_logits, Some(mask));
        let d_loss = max_diff(&ours.loss, &full.loss);
        for (what, d) in [
            ("sequence output", d_seq),
            ("start", d_start),
            ("end", d_end),
            ("loss", d_loss),
        ] {
            assert!(
                d <= 1e-5,
                "TP={tp} rank {rank}: {what} differs from TP=1 by {d:e}"
            );
        }
        let gathered = gather_state_dict(&ours.grads, group.group().as_ref()).unwrap();
        assert_eq!(
            gathered.keys().collect::<Vec<_>>(),
            full.grads.keys().collect::<Vec<_>>(),
            "the same parameters must receive gradients"
        );
        let mut worst = (0.0f64, String::new());
        for (name, g) in &full.grads {
            let d = model_util::max_rel_diff(&gathered[name], g);
            if d > worst.0 {
                worst = (d, name.clone());
            }
        }
        assert!(
            worst.0 <= 1e-5,
            "TP={tp} rank {rank}: gradient of {} differs by {:e}",
            worst.1,
            worst.0
        );
        // Train mode: with the same seed on every rank of the group, dropout
        // on the replicated activations draws the same masks, so the ranks'
        // outputs stay identical (bit for bit: the ring's sums are too).
        let mut train_cfg = model_util::config(&dir);
        train_cfg.hidden_dropout = 0.1;
        train_cfg.attention_dropout = 0.1;
        let mut m = BertTaskModel::new(
            &train_cfg,
            &HeadConfig::question_answering(),
            &group,
            Device::Cpu,
        )
        .unwrap();
        m.load_state_dict(&shard).unwrap();
        tch::manual_seed(1234);
        let train_out = m
            .encoder
            .forward(&io["input_ids"], None, Some(mask), true)
            .unwrap();
        let eval_out = m
            .encoder
            .forward(&io["input_ids"], None, Some(mask), false)
            .unwrap();
        assert!(
            max_diff(&train_out, &eval_out) > 1e-3,
            "dropout must be active in train mode"
        );
        let checksum = train_out.abs().sum(Kind::Double).double_value(&[]);
        common::emit("train_checksum", format!("{checksum:.15e}"));
        common::emit(
            "max_output_diff",
            format!("{:e}", d_seq.max(d_start).max(d_end)),
        );
        common::emit("max_grad_rel_diff", format!("{:e} ({})", worst.0, worst.1));
        return;
    }
    let dir = model_util::hf_reference(&common::python(), "megatron");
    let outs = common::Ranks::new(module_path!(), test, tp)
        .env(REF_DIR_VAR, dir.display())
        .run_ok();
    let checksum = outs[0].expect_value("train_checksum");
    for o in &outs {
        assert_eq!(
            o.expect_value("train_checksum"),
            checksum,
            "TP ranks diverged in train mode"
        );
    }
    for o in &outs {
        println!(
            "TP={tp} rank {}: max output diff {}, max gradient relative diff {}",
            o.rank,
            o.expect_value("max_output_diff"),
            o.expect_value("max_grad_rel_diff")
        );
    }
}

#[test]
fn tp2_outputs_and_gradients_match_tp1() {
    tp_matches_tp1("tp2_outputs_and_gradients_match_tp1", 2);
}

#[test]
fn tp4_outputs_and_gradients_match_tp1() {
    tp_matches_tp1("tp4_outputs_and_gradients_match_tp1", 4);
}

/// Data-parallel gradient averaging over 2 processes (TP=1 each): every
/// gradient becomes the mean over ranks, parameters without one are skipped.
#[test]
fn data_parallel_gradients_are_averaged() {
    if let Some(child) = common::rank_child() {
        tch::set_num_threads(1);
        let topo = comm::init_from_env(1).expect("rendezvous");
        assert_eq!(topo.dp.size(), 2);
        let scale = (child.rank + 1) as f64;
        let a = Tensor::ones([3, 2], F32).set_requires_grad(true);
        let b = Tensor::ones([4], F32).set_requires_grad(true);
        let unused = Tensor::ones([2], F32).set_requires_grad(true);
        ((&a * scale).sum(Kind::Float) + (&b * (2.0 * scale)).sum(Kind::Float)).backward();
        all_reduce_gradients_mean(
            &[a.shallow_clone(), unused.shallow_clone(), b.shallow_clone()],
            topo.dp.as_ref(),
        )
        .unwrap();
        // Ranks contribute scale 1 and 2: means 1.5 and 3.0.
        assert!(max_diff(&a.grad(), &Tensor::full([3, 2], 1.5, F32)) < 1e-7);
        assert!(max_diff(&b.grad(), &Tensor::full([4], 3.0, F32)) < 1e-7);
        assert!(!unused.grad().defined());
        common::emit("ok", 1);
        return;
    }
    common::Ranks::new(module_path!(), "data_parallel_gradients_are_averaged", 2).run_ok();
}
