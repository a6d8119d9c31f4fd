//! Attention dropout draws from Megatron's model-parallel generator: at TP=2
//! (two real processes, CPU ring backend) the ranks draw different masks for
//! their heads, while hidden dropout on replicated activations keeps using
//! the shared default generator (the ranks' outputs stay identical), and the
//! same seed reproduces every mask.
//!
//! To make "different masks" observable, both ranks get the *same* local
//! head weights: their attention outputs are then bit-identical in eval mode,
//! so any train-mode difference comes from the dropout masks alone. With a
//! single shared generator (seeded alike on both ranks) they would match.

use crate::support::common;

use megatron_trainer::comm;
use megatron_trainer::model::{BertConfig, BertTaskModel, HeadConfig};
use megatron_trainer::parallel::TpGroup;
use tch::{Device, Kind, Tensor};

const TP: usize = 2;
const F32: (Kind, Device) = (Kind::Float, Device::Cpu);

fn tiny_config() -> BertConfig {
    let mut cfg = BertConfig::megatron_345m(60);
    cfg.make_vocab_size_divisible_by = 8;
    cfg.padded_vocab_size = cfg.padded_vocab_for(TP as i64);
    cfg.hidden_size = 32;
    cfg.num_layers = 2;
    cfg.num_attention_heads = 4;
    cfg.ffn_hidden_size = 64;
    cfg.max_position_embeddings = 16;
    cfg.hidden_dropout = 0.1;
    cfg.attention_dropout = 0.5;
    cfg
}

fn checksum(t: &Tensor) -> String {
    // Weighted so that moving a dropped element changes the sum.
    let w = Tensor::arange(t.numel() as i64, (Kind::Double, Device::Cpu)).sin();
    let s = (t.to_kind(Kind::Double).flatten(0, -1) * w).sum(Kind::Double);
    format!("{:.17e}", s.double_value(&[]))
}

struct Run {
    ctx_eval: Tensor,
    ctx_train: Tensor,
    ctx_train_again: Tensor,
    encoder_train: Tensor,
}

/// Builds the model after `tch::manual_seed(seed)` (the documented seeding
/// rule), gives both ranks the same first-layer heads, and runs attention
/// and the encoder in both modes.
fn run(group: &TpGroup, seed: i64) -> Run {
    let cfg = tiny_config();
    tch::manual_seed(seed);
    let model =
        BertTaskModel::new(&cfg, &HeadConfig::question_answering(), group, Device::Cpu).unwrap();
    assert_eq!(
        model.encoder.model_parallel_rng().seed(),
        (seed + 2718 + group.rank()) as u64,
        "tracker seeded like Megatron's model_parallel_cuda_manual_seed"
    );
    let attn = &model.encoder.layers[0].self_attention;
    // Identical inputs and identical local heads on every rank.
    let rows = 3 * cfg.hidden_size / TP as i64;
    let w = Tensor::randn([rows, cfg.hidden_size], F32) * 0.3;
    let b = Tensor::randn([rows], F32) * 0.1;
    let x = Tensor::randn([2, 8, cfg.hidden_size], F32);
    tch::no_grad(|| {
        attn.query_key_value.weight.shallow_clone().copy_(&w);
        attn.query_key_value
            .bias
            .as_ref()
            .unwrap()
            .shallow_clone()
            .copy_(&b);
    });
    let mask =
        Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 8]);
    let key_mask = mask.ne(0).view([2, 1, 1, 8]);
    let ctx_eval = attn.context(&x, Some(&key_mask), false).unwrap();
    let ctx_train = attn.context(&x, Some(&key_mask), true).unwrap();
    let ctx_train_again = attn.context(&x, Some(&key_mask), true).unwrap();
    let ids = Tensor::from_slice(&[5i64, 9, 13, 2, 40, 7, 0, 0, 3, 17, 22, 59, 1, 8, 30, 11])
        .view([2, 8]);
    let encoder_train = model
        .encoder
        .forward(&ids, None, Some(&mask), true)
        .unwrap();
    Run {
        ctx_eval,
        ctx_train,
        ctx_train_again,
        encoder_train,
    }
}

fn bits_equal(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.eq_tensor(b).all().int64_value(&[]) == 1
}

#[test]
fn tp_ranks_draw_different_attention_masks_and_same_seed_repeats() {
    if common::rank_child().is_some() {
        tch::set_num_threads(1);
        let topo = comm::init_from_env(TP).expect("rendezvous");
        let group = TpGroup::new(topo.tp.clone());
        let first = run(&group, 5);
        let second = run(&group, 5);
        let other_seed = run(&group, 6);

        assert!(
            !bits_equal(&first.ctx_train, &first.ctx_eval),
            "attention dropout must be active in train mode"
        );
        assert!(
            !bits_equal(&first.ctx_train, &first.ctx_train_again),
            "the model-parallel stream advances between forward passes"
        );
        for (what, a, b) in [
            ("attention (train)", &first.ctx_train, &second.ctx_train),
            (
                "attention (2nd train pass)",
                &first.ctx_train_again,
                &second.ctx_train_again,
            ),
            (
                "encoder output (train)",
                &first.encoder_train,
                &second.encoder_train,
            ),
        ] {
            assert!(bits_equal(a, b), "same seed, different {what}");
        }
        assert!(
            !bits_equal(&first.ctx_train, &other_seed.ctx_train),
            "another seed must draw other masks"
        );
        common::emit("ctx_eval", checksum(&first.ctx_eval));
        common::emit("ctx_train", checksum(&first.ctx_train));
        common::emit("encoder_train", checksum(&first.encoder_train));
        return;
    }
    let outs = common::Ranks::new(
        module_path!(),
        "tp_ranks_draw_different_attention_masks_and_same_seed_repeats",
        TP,
    )
    .run_ok();
    let (r0, r1) = (&outs[0], &outs[1]);
    assert_eq!(
        r0.expect_value("ctx_eval"),
        r1.expect_value("ctx_eval"),
        "both ranks hold the same heads: eval attention must match bit for bit"
    );
    assert_ne!(
        r0.expect_value("ctx_train"),
        r1.expect_value("ctx_train"),
        "TP ranks drew the same attention-dropout masks for their heads"
    );
    assert_eq!(
        r0.expect_value("encoder_train"),
        r1.expect_value("encoder_train"),
        "hidden dropout must draw the same masks on every rank (replicated output)"
    );
    println!(
        "rank 0 / rank 1 attention checksums (train): {} / {}",
        r0.expect_value("ctx_train"),
        r1.expect_value("ctx_train")
    );
}
