//! Token classification, text classification and relation extraction files,
//! batching and the data-parallel sampler; and the synthetic data generator
//! (tests/python/data_make_datasets.py) read back through the real readers.

use crate::support::{common, data_common};

use std::collections::HashSet;

use megatron_trainer::data::predictions::{
    write_class_predictions, write_squad_predictions, write_token_predictions,
};
use megatron_trainer::data::relation::{
    CHEMPROT_MARKERS, read_label_mapping, read_relation_extraction,
};
use megatron_trainer::data::squad::{SquadConfig, SquadFeaturizer, read_squad_file};
use megatron_trainer::data::text_classification::{read_text_classification, text_features};
use megatron_trainer::data::token_classification::{
    LabelIds, TokenClassificationFeaturizer, TokenExample, read_token_classification,
    word_predictions,
};
use megatron_trainer::data::{DataError, DataPosition, DistributedSampler, PaddedBatch, Padding};
use megatron_trainer::tokenizer::BertTokenizer;

fn uncased() -> BertTokenizer {
    BertTokenizer::from_name("megatron-bert-uncased").unwrap()
}

#[test]
fn token_classification_files_and_windows() {
    let dir = data_common::temp_dir("tok");
    let text = dir.join("text_train.txt");
    let labels = dir.join("labels_train.txt");
    std::fs::write(
        &text,
        "John lives in Zürich\nunbelievably long words\n\nHe works at NVIDIA Corp .\n",
    )
    .unwrap();
    std::fs::write(&labels, "B-PER O O B-LOC\nO O O\n\nO O O B-ORG I-ORG O\n").unwrap();
    let ex = read_token_classification(&text, Some(&labels)).unwrap();
    assert_eq!(ex.len(), 4);
    assert!(
        ex[2].words.is_empty(),
        "an empty line stays an (empty) sentence"
    );
    let all_labels: Vec<&str> = ex
        .iter()
        .flat_map(|e| e.labels.as_ref().unwrap().iter().map(String::as_str))
        .collect();
    let ids = LabelIds::from_training_labels(all_labels, "O").unwrap();
    assert_eq!(ids.names(), ["O", "B-LOC", "B-ORG", "B-PER", "I-ORG"]);
    ids.write(&dir.join("label_ids.csv")).unwrap();
    assert_eq!(LabelIds::read(&dir.join("label_ids.csv")).unwrap(), ids);

    let tok = uncased();
    let f = TokenClassificationFeaturizer::new(&tok, 128).unwrap();
    let feats = f.featurize_all(&ex, &ids).unwrap();
    assert_eq!(feats.len(), 4);
    let f0 = &feats[0];
    // [CLS] john lives in zurich [SEP]  (zürich -> zurich, one or more pieces)
    assert_eq!(f0.input_ids[0], tok.cls_id());
    assert_eq!(*f0.input_ids.last().unwrap(), tok.sep_id());
    assert_eq!(f0.word_starts.len(), 4);
    assert_eq!(f0.labels[f0.word_starts[0]], ids.id("B-PER").unwrap());
    assert_eq!(f0.labels[f0.word_starts[3]], ids.id("B-LOC").unwrap());
    let masked: usize = f0.loss_mask.iter().filter(|m| **m).count();
    assert_eq!(masked, 4, "only first sub-tokens count");
    let f1 = &feats[1];
    assert!(f1.input_ids.len() > 5, "unbelievably splits into pieces");
    assert!(
        !f1.loss_mask[f1.word_starts[0] + 1],
        "later pieces are ignored"
    );

    // long sentences split into windows at word boundaries; every word predicted once
    let words: Vec<String> = data_common::real_sentences()
        .join(" ")
        .split(' ')
        .take(300)
        .map(str::to_string)
        .collect();
    let long = TokenExample {
        words: words.clone(),
        labels: None,
    };
    let small = TokenClassificationFeaturizer::new(&tok, 32).unwrap();
    let wins = small.featurize(0, &long, &ids).unwrap();
    assert!(wins.len() > 10);
    assert!(wins.iter().all(|w| w.input_ids.len() <= 32));
    assert_eq!(
        wins.iter().map(|w| w.word_starts.len()).sum::<usize>(),
        words.len()
    );
    // predict "the word index mod 5" at every first sub-token: realigned per word
    let preds: Vec<Vec<usize>> = wins
        .iter()
        .map(|w| {
            let mut p = vec![0; w.input_ids.len() + 3];
            for (k, &pos) in w.word_starts.iter().enumerate() {
                p[pos] = (w.first_word + k) % 5;
            }
            p
        })
        .collect();
    let per_word = word_predictions(&wins, &preds, 1).unwrap();
    assert_eq!(
        per_word[0],
        (0..words.len()).map(|i| i % 5).collect::<Vec<_>>()
    );
    let names: Vec<Vec<&str>> = per_word
        .iter()
        .map(|s| s.iter().map(|&l| ids.name(l).unwrap()).collect())
        .collect();
    let out = dir.join("predictions.txt");
    write_token_predictions(&out, &names).unwrap();
    let back = std::fs::read_to_string(&out).unwrap();
    assert_eq!(back.lines().count(), 1);
    assert_eq!(
        back.trim_end().split(' ').count(),
        words.len(),
        "one label per input word"
    );

    // a word made only of control characters still gets a token and a prediction
    let odd = TokenExample {
        words: vec!["a".into(), "\u{7}".into(), "b".into()],
        labels: None,
    };
    let fo = f.featurize(0, &odd, &ids).unwrap();
    assert_eq!(fo[0].word_starts.len(), 3);
    assert_eq!(fo[0].input_ids[fo[0].word_starts[1]], tok.unk_id());

    // batches: labels and loss mask padded with zeros
    let refs: Vec<_> = feats.iter().collect();
    let b = PaddedBatch::collate(&refs, tok.pad_id(), Padding::Longest).unwrap();
    let longest = feats.iter().map(|f| f.input_ids.len()).max().unwrap();
    assert_eq!((b.batch_size, b.seq_len), (4, longest));
    let lm = b.loss_mask.as_ref().unwrap();
    assert_eq!(lm.iter().sum::<i64>(), 4 + 3 + 6);
    let t = b.to_tensors(tch::Device::Cpu);
    assert_eq!(t.input_ids.size(), [4, longest as i64]);
    assert_eq!(t.labels.as_ref().unwrap().size(), [4, longest as i64]);
    assert_eq!(
        t.attention_mask.sum(tch::Kind::Int64).int64_value(&[]),
        feats.iter().map(|f| f.input_ids.len() as i64).sum::<i64>()
    );
    assert_eq!(t.input_ids.kind(), tch::Kind::Int64);
}

#[test]
fn token_classification_errors_name_file_and_line() {
    let dir = data_common::temp_dir("tokerr");
    let text = dir.join("text.txt");
    let labels = dir.join("labels.txt");
    std::fs::write(&text, "a b c\nd e\n").unwrap();
    std::fs::write(&labels, "O O O\nO\n").unwrap();
    let err = read_token_classification(&text, Some(&labels)).unwrap_err();
    assert!(matches!(err, DataError::Line { line: 2, .. }), "{err}");
    assert!(
        err.to_string().contains("1 labels for the 2 words"),
        "{err}"
    );
    std::fs::write(&labels, "O O O\n").unwrap();
    let err = read_token_classification(&text, Some(&labels))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("labels.txt:2") && err.contains("has 2 lines but this file has 1"),
        "{err}"
    );
    std::fs::write(&labels, "O O O\nO O\nO\n").unwrap();
    let err = read_token_classification(&text, Some(&labels))
        .unwrap_err()
        .to_string();
    assert!(err.contains("labels.txt:3"), "{err}");
    std::fs::write(&text, b"ok\n\xff\xfe\n").unwrap();
    let err = read_token_classification(&text, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("text.txt:2") && err.contains("UTF-8"), "{err}");
    let ids = LabelIds::from_names(vec!["O".into(), "B-X".into()]).unwrap();
    let ex = TokenExample {
        words: vec!["w".into()],
        labels: Some(vec!["B-Y".into()]),
    };
    let err = TokenClassificationFeaturizer::new(&uncased(), 16)
        .unwrap()
        .featurize(0, &ex, &ids)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"B-Y\"") && err.contains("not in label_ids"),
        "{err}"
    );
    assert!(LabelIds::from_names(vec!["O".into(), "O".into()]).is_err());
}

#[test]
fn text_classification_tsv() {
    let dir = data_common::temp_dir("text");
    let p = dir.join("train.tsv");
    std::fs::write(
        &p,
        "sentence\tlabel\nthis is good\t1\nthis\thas a tab\t0\nbad one\t2\n",
    )
    .unwrap();
    let ex = read_text_classification(&p, 3, true).unwrap();
    assert_eq!(ex.len(), 3, "the header is skipped");
    assert_eq!(
        (ex[1].text.as_str(), ex[1].label, ex[1].line),
        ("this\thas a tab", Some(0), 3)
    );
    let err = read_text_classification(&p, 2, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.tsv:4") && err.contains("outside 0..2"),
        "{err}"
    );
    std::fs::write(&p, "a\t0\nb\tx\n").unwrap();
    let err = read_text_classification(&p, 2, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.tsv:2") && err.contains("not an integer"),
        "{err}"
    );
    std::fs::write(&p, "a\t0\nno tab here\n").unwrap();
    let err = read_text_classification(&p, 2, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.tsv:2") && err.contains("no TAB"),
        "{err}"
    );
    let unlabeled = read_text_classification(&p, 2, false).unwrap();
    assert_eq!(unlabeled[1].label, None);
    let out = dir.join("pred.txt");
    write_class_predictions(&out, &["neg", "pos"]).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "neg\npos\n");
    let squad: std::collections::HashMap<String, String> = [
        ("b".to_string(), "x".to_string()),
        ("a".to_string(), "Café".to_string()),
    ]
    .into_iter()
    .collect();
    write_squad_predictions(&out, &squad).unwrap();
    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(back, serde_json::json!({"a": "Café", "b": "x"}));
    let tok = uncased();
    let long = format!("{}\t1\n", "word ".repeat(200));
    std::fs::write(&p, long).unwrap();
    let ex = read_text_classification(&p, 2, true).unwrap();
    let feats = text_features(&tok, &ex, 64).unwrap();
    assert_eq!(feats[0].input_ids.len(), 64);
    assert_eq!(*feats[0].input_ids.last().unwrap(), tok.sep_id());
    let b = PaddedBatch::collate(&[&feats[0]], tok.pad_id(), Padding::Fixed(128)).unwrap();
    assert_eq!(b.labels, Some(vec![1]));
    assert_eq!(b.attention_mask.iter().sum::<i64>(), 64);
    assert!(PaddedBatch::collate(&[&feats[0]], tok.pad_id(), Padding::Fixed(32)).is_err());
}

#[test]
fn relation_extraction_chemprot_style() {
    let dir = data_common::temp_dir("re");
    let map = dir.join("label_mapping.tsv");
    std::fs::write(
        &map,
        "CPR:3\t0\nCPR:4\t1\nCPR:5\t2\nCPR:6\t3\nCPR:9\t4\nfalse\t5\n",
    )
    .unwrap();
    assert_eq!(
        read_label_mapping(&map).unwrap(),
        ["CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false"]
    );
    let tsv = dir.join("train.tsv");
    std::fs::write(
        &tsv,
        "sentence\tlabel\nIn @GENE$ cells, @CHEMICAL$ inhibited growth.\t1\n@CHEMICAL$ is a substrate of @GENE$.\t4\nno markers here\t5\n",
    )
    .unwrap();
    let ds = read_relation_extraction(&tsv, &map, &CHEMPROT_MARKERS, true).unwrap();
    assert_eq!(ds.examples.len(), 3);
    assert_eq!(ds.without_markers, 1);
    assert_eq!(ds.relation_names[ds.examples[0].label.unwrap()], "CPR:4");
    std::fs::write(&map, "CPR:3\t0\nCPR:4\t2\n").unwrap();
    let err = read_label_mapping(&map).unwrap_err().to_string();
    assert!(
        err.contains("label_mapping.tsv:2") && err.contains("ids must be 0..2"),
        "{err}"
    );
    std::fs::write(&map, "CPR:3\t0\nCPR:4\t1\n").unwrap();
    let err = read_relation_extraction(&tsv, &map, &CHEMPROT_MARKERS, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.tsv:3") && err.contains("outside 0..2"),
        "{err}"
    );
}

#[test]
fn sampler_shards_disjointly_and_resumes() {
    let len = 103;
    let n = 4;
    let samplers: Vec<_> = (0..n)
        .map(|r| DistributedSampler::new(len, n, r, true, 42).unwrap())
        .collect();
    assert_eq!(samplers[0].num_samples(), 26);
    for epoch in 0..3 {
        let shards: Vec<Vec<usize>> = samplers.iter().map(|s| s.epoch_indices(epoch)).collect();
        assert!(shards.iter().all(|s| s.len() == 26));
        let all: Vec<usize> = shards.concat();
        let distinct: HashSet<usize> = all.iter().copied().collect();
        assert_eq!(distinct.len(), len, "every sample once per epoch");
        assert_eq!(all.len() - len, 1, "104 - 103 = one padding repeat");
    }
    assert_ne!(
        samplers[0].epoch_indices(0),
        samplers[0].epoch_indices(1),
        "reshuffled per epoch"
    );
    assert_eq!(
        samplers[2].epoch_indices(5),
        DistributedSampler::new(len, n, 2, true, 42)
            .unwrap()
            .epoch_indices(5)
    );
    assert_ne!(
        samplers[0].epoch_indices(0),
        DistributedSampler::new(len, n, 0, true, 43)
            .unwrap()
            .epoch_indices(0)
    );
    let ordered = DistributedSampler::new(10, 3, 1, false, 0).unwrap();
    assert_eq!(
        ordered.epoch_indices(0),
        [1, 4, 7, 0],
        "no shuffle: strided, padded from the start"
    );

    // resuming from a saved position continues the same stream
    let s = &samplers[1];
    let full: Vec<(Vec<usize>, DataPosition)> = s
        .batches_from(DataPosition::default(), 8)
        .take(12)
        .collect();
    assert_eq!(
        full[3].0.len(),
        2,
        "last batch of the 26-sample epoch is short"
    );
    assert_eq!(full[3].1, DataPosition { epoch: 1, index: 0 });
    let saved = full[5].1;
    let resumed: Vec<_> = s.batches_from(saved, 8).take(6).collect();
    assert_eq!(resumed, full[6..12].to_vec());
    let json = serde_json::to_string(&saved).unwrap();
    assert_eq!(serde_json::from_str::<DataPosition>(&json).unwrap(), saved);
    assert!(DistributedSampler::new(10, 2, 2, true, 0).is_err());
    assert!(DistributedSampler::new(0, 1, 0, true, 0).is_err());
}

#[test]
fn generated_datasets_read_back() {
    let dir = data_common::temp_dir("gen");
    let status = std::process::Command::new(common::python())
        .arg(data_common::manifest_dir().join("tests/python/data_make_datasets.py"))
        .args([
            "--out",
            dir.to_str().unwrap(),
            "--train",
            "60",
            "--dev",
            "20",
            "--seed",
            "1",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let tok = uncased();
    let squad = read_squad_file(&dir.join("squad/train.json")).unwrap();
    assert_eq!(squad.len(), 60);
    let feats = SquadFeaturizer::new(&tok, SquadConfig::default())
        .unwrap()
        .featurize_all(&squad, 2)
        .unwrap();
    assert!(feats.iter().filter(|f| f.start_position > 0).count() >= 60);
    let tc = read_token_classification(
        &dir.join("token_classification/text_train.txt"),
        Some(&dir.join("token_classification/labels_train.txt")),
    )
    .unwrap();
    assert_eq!(tc.len(), 60);
    let labels: Vec<&str> = tc
        .iter()
        .flat_map(|e| e.labels.as_ref().unwrap().iter().map(String::as_str))
        .collect();
    let ids = LabelIds::from_training_labels(labels, "O").unwrap();
    assert_eq!(ids.names()[0], "O");
    assert!(ids.len() >= 3);
    let chance: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("chance.json")).unwrap()).unwrap();
    let k = chance["text_classification_num_classes"].as_u64().unwrap() as usize;
    assert_eq!(
        read_text_classification(&dir.join("text_classification/dev.tsv"), k, true)
            .unwrap()
            .len(),
        20
    );
    let re = read_relation_extraction(
        &dir.join("relation/train.tsv"),
        &dir.join("relation/label_mapping.tsv"),
        &CHEMPROT_MARKERS,
        true,
    )
    .unwrap();
    assert_eq!(
        (
            re.examples.len(),
            re.without_markers,
            re.relation_names.len()
        ),
        (60, 0, 3)
    );
}
