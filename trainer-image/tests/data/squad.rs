//! SQuAD reading, windowed features (against Hugging Face run_qa
//! preprocessing) and n-best answer selection.

use crate::support::data_common;

use std::path::Path;

use megatron_trainer::data::squad::{
    AnswerConfig, SquadConfig, SquadExample, SquadFeaturizer, best_answers, parse_squad_json,
    predictions_by_id,
};
use megatron_trainer::data::{DataError, PaddedBatch, Padding};
use megatron_trainer::scores::squad_evaluate;
use megatron_trainer::tokenizer::BertTokenizer;
use serde_json::json;

/// A SQuAD file from real sentences: each paragraph is many sentences, each
/// question's answer is one word of one sentence (early, middle, late).
fn real_squad_json(paragraphs: usize, sentences_per_paragraph: usize) -> serde_json::Value {
    let sents = data_common::real_sentences();
    let mut data = Vec::new();
    let mut qid = 0;
    for p in 0..paragraphs {
        let chosen: Vec<&String> = (0..sentences_per_paragraph)
            .map(|k| &sents[(p * 7 + k * 3) % sents.len()])
            .collect();
        let context = chosen
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let mut qas = Vec::new();
        for pick in [0, sentences_per_paragraph / 2, sentences_per_paragraph - 1] {
            let sent = chosen[pick];
            let words: Vec<&str> = sent.split(' ').collect();
            let w = words.len() / 2;
            let answer = words[w..(w + 2).min(words.len())].join(" ");
            let byte = context.find(sent.as_str()).unwrap()
                + words[..w].iter().map(|x| x.len() + 1).sum::<usize>();
            let start = context[..byte].chars().count();
            qas.push(json!({
                "id": format!("q{qid}"),
                "question": format!("  Which words follow {}?", words[..w].join(" ")),
                "answers": [{"text": answer, "answer_start": start}],
            }));
            qid += 1;
        }
        data.push(
            json!({"title": format!("t{p}"), "paragraphs": [{"context": context, "qas": qas}]}),
        );
    }
    json!({"version": "1.1", "data": data})
}

fn examples_of(v: &serde_json::Value) -> Vec<SquadExample> {
    parse_squad_json(&v.to_string(), Path::new("test.json")).unwrap()
}

fn check_against_hf(
    vocab: &str,
    lower: bool,
    name: &str,
    cfg: SquadConfig,
    examples: &[SquadExample],
) {
    let tok = BertTokenizer::from_name(name).unwrap();
    let f = SquadFeaturizer::new(&tok, cfg).unwrap();
    let ours = f.featurize_all(examples, 2).unwrap();
    let req = json!({
        "op": "squad_features",
        "vocab_file": data_common::vocab(vocab),
        "lower": lower,
        "max_seq_length": cfg.max_seq_length,
        "doc_stride": cfg.doc_stride,
        "max_query_length": cfg.max_query_length,
        "examples": examples.iter().map(|e| json!({
            "question": e.question, "context": &*e.context,
            "answer_start": e.answers[0].start_char, "answer_text": e.answers[0].text,
        })).collect::<Vec<_>>(),
    });
    let hf = data_common::python("data_hf_reference.py", &req);
    let hf = hf["features"].as_array().unwrap();
    assert_eq!(ours.len(), hf.len(), "number of windows");
    assert!(
        ours.len() > examples.len(),
        "the test must produce several windows per example"
    );
    let mut answered = 0;
    for (i, (o, h)) in ours.iter().zip(hf).enumerate() {
        assert_eq!(
            o.example_index,
            h["example_index"].as_u64().unwrap() as usize,
            "feature {i}"
        );
        let ids: Vec<u32> = serde_json::from_value(h["input_ids"].clone()).unwrap();
        let types: Vec<u32> = serde_json::from_value(h["token_type_ids"].clone()).unwrap();
        let offs: Vec<Option<(usize, usize)>> =
            serde_json::from_value(h["context_offsets"].clone()).unwrap();
        assert_eq!(o.input_ids, ids, "feature {i} ids");
        assert_eq!(o.token_type_ids, types, "feature {i} type ids");
        assert_eq!(o.context_offsets, offs, "feature {i} offsets");
        assert_eq!(
            (o.start_position, o.end_position),
            (
                h["start_position"].as_u64().unwrap() as usize,
                h["end_position"].as_u64().unwrap() as usize
            ),
            "feature {i} answer tokens"
        );
        assert!(o.input_ids.len() <= cfg.max_seq_length);
        answered += usize::from(o.start_position != 0);
    }
    assert!(
        answered >= examples.len(),
        "every answer lies in at least one window"
    );
}

#[test]
fn features_match_hugging_face_run_qa_small_windows() {
    let v = real_squad_json(4, 8);
    let cfg = SquadConfig {
        max_seq_length: 64,
        doc_stride: 16,
        max_query_length: 12,
    };
    check_against_hf(
        "bert-base-uncased-vocab.txt",
        true,
        "megatron-bert-uncased",
        cfg,
        &examples_of(&v),
    );
    check_against_hf(
        "bert-base-cased-vocab.txt",
        false,
        "megatron-bert-cased",
        cfg,
        &examples_of(&v),
    );
}

#[test]
fn features_match_hugging_face_run_qa_default_windows() {
    let v = real_squad_json(2, 40);
    check_against_hf(
        "bert-base-uncased-vocab.txt",
        true,
        "megatron-bert-uncased",
        SquadConfig::default(),
        &examples_of(&v),
    );
}

/// Logits that peak at the gold span in windows holding it (and at [CLS] elsewhere).
fn gold_logits(
    features: &[megatron_trainer::data::squad::SquadFeature],
    pad_to: usize,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    features
        .iter()
        .map(|f| {
            let mut s = vec![-5.0f32; pad_to];
            let mut e = vec![-5.0f32; pad_to];
            s[f.start_position] = 5.0 + f.start_position as f32 * 1e-3;
            e[f.end_position] = 5.0;
            (s, e)
        })
        .collect()
}

#[test]
fn gold_logits_give_exact_answers_from_the_original_text() {
    // uncased tokenizer, accented and capitalised answers: the text must come
    // back exactly as in the context, not lower-cased or accent-stripped
    let v = json!({"data": [{"title": "x", "paragraphs": [
        {"context": "Le Café de Flore est à Paris. Il a été fondé en 1887 par M. Dupont — célèbre!", "qas": [
            {"id": "a", "question": "Quel café?", "answers": [{"text": "Café de Flore", "answer_start": 3}]},
            {"id": "b", "question": "Quand?", "answers": [{"text": "1887", "answer_start": 48}]},
            {"id": "c", "question": "Qui?", "answers": [{"text": "M. Dupont — célèbre", "answer_start": 57}]}]}]}]});
    let examples = examples_of(&v);
    assert_eq!(
        &examples[1].context[53..57],
        "1887",
        "byte slice check (five 2-byte characters before it)"
    );
    let tok = BertTokenizer::from_name("megatron-bert-uncased").unwrap();
    let f = SquadFeaturizer::new(&tok, SquadConfig::default()).unwrap();
    let feats = f.featurize_all(&examples, 1).unwrap();
    let logits = gold_logits(&feats, 384);
    let preds = predictions_by_id(&examples, &feats, &logits, AnswerConfig::default());
    assert_eq!(preds["a"], "Café de Flore");
    assert_eq!(preds["b"], "1887");
    assert_eq!(preds["c"], "M. Dupont — célèbre");
    let truths: Vec<(String, Vec<String>)> = examples
        .iter()
        .map(|e| {
            (
                e.id.clone(),
                e.answers.iter().map(|a| a.text.clone()).collect(),
            )
        })
        .collect();
    let scores = squad_evaluate(
        truths.iter().map(|(i, t)| (i.as_str(), t.as_slice())),
        &preds,
    );
    assert_eq!(
        (scores.exact_match, scores.f1, scores.total),
        (100.0, 100.0, 3)
    );
}

#[test]
fn long_contexts_merge_windows_by_best_score() {
    let v = real_squad_json(3, 30);
    let examples = examples_of(&v);
    let tok = BertTokenizer::from_name("megatron-bert-cased").unwrap();
    let cfg = SquadConfig {
        max_seq_length: 96,
        doc_stride: 32,
        max_query_length: 16,
    };
    let f = SquadFeaturizer::new(&tok, cfg).unwrap();
    let feats = f.featurize_all(&examples, 1).unwrap();
    assert!(feats.len() > 3 * examples.len());
    let logits = gold_logits(&feats, 96);
    let preds = predictions_by_id(&examples, &feats, &logits, AnswerConfig::default());
    for ex in &examples {
        assert_eq!(preds[&ex.id], ex.answers[0].text, "question {}", ex.id);
    }
    // batches of these features pad to the longest or to max_seq_length
    let refs: Vec<_> = feats.iter().take(5).collect();
    let b = PaddedBatch::collate(&refs, tok.pad_id(), Padding::Fixed(96)).unwrap();
    assert_eq!((b.batch_size, b.seq_len), (5, 96));
    assert_eq!(b.start_positions.as_ref().unwrap().len(), 5);
}

#[test]
fn n_best_rules() {
    let v = json!({"data": [{"title": "x", "paragraphs": [{"context": "alpha beta gamma delta epsilon", "qas": [
        {"id": "q", "question": "which?", "answers": [{"text": "gamma", "answer_start": 11}]}]}]}]});
    let examples = examples_of(&v);
    let tok = BertTokenizer::from_name("megatron-bert-uncased").unwrap();
    let f = SquadFeaturizer::new(&tok, SquadConfig::default()).unwrap();
    let feats = f.featurize(0, &examples[0]).unwrap();
    assert_eq!(feats.len(), 1);
    let feat = &feats[0];
    // [CLS] which ? [SEP] alpha beta gamma delta epsilon [SEP]
    assert_eq!(feat.input_ids.len(), 10);
    assert_eq!((feat.start_position, feat.end_position), (6, 6));
    let n = feat.input_ids.len();
    let cfg = AnswerConfig {
        n_best: 20,
        max_answer_length: 2,
    };
    // best start is [CLS] and a question token (never chosen), then end < start pairs
    let mut s = vec![0.0f32; n];
    let mut e = vec![0.0f32; n];
    s[0] = 100.0;
    s[1] = 90.0;
    e[2] = 95.0;
    // context tokens: alpha 4, beta 5, gamma 6, delta 7, epsilon 8; [SEP] 9
    s[7] = 10.0; // delta
    e[4] = 9.0; // alpha: ends before delta starts; alone with start alpha it is valid
    e[7] = 3.0; // delta..delta
    s[4] = 1.0; // alpha
    e[8] = 8.0; // epsilon: delta..epsilon is 2 tokens
    let answers = best_answers(&examples[0], &[(feat, &s, &e)], cfg);
    assert_eq!(answers[0].text, "delta epsilon");
    assert_eq!(answers[0].score, 18.0);
    assert!(
        answers.iter().all(|a| a.text != "alpha beta gamma"),
        "longer than 2 tokens"
    );
    assert!(answers.iter().all(|a| !a.text.is_empty()));
    let p: f32 = answers.iter().map(|a| a.probability).sum();
    assert!((p - 1.0).abs() < 1e-5);
    // a second window with a better score wins
    let mut s2 = vec![0.0f32; n];
    let mut e2 = vec![0.0f32; n];
    s2[6] = 50.0;
    e2[6] = 50.0;
    let answers = best_answers(&examples[0], &[(feat, &s, &e), (feat, &s2, &e2)], cfg);
    assert_eq!(answers[0].text, "gamma");
    // nothing valid: empty list, predicted text ""
    let none = best_answers(
        &examples[0],
        &[(feat, &[0.0f32; 4][..], &[0.0f32; 4][..])],
        cfg,
    );
    assert!(none.is_empty());
    let preds = predictions_by_id(&examples, &[], &[], cfg);
    assert_eq!(preds["q"], "");
}

#[test]
fn bad_files_name_the_place() {
    let p = Path::new("train.json");
    let err = parse_squad_json("{\"data\": [\n{\"title\": 1,}\n]}", p).unwrap_err();
    assert!(matches!(err, DataError::Line { line: 2, .. }), "{err}");
    assert!(err.to_string().starts_with("train.json:2:"), "{err}");
    let missing = parse_squad_json(
        "{\"data\": [{\"paragraphs\": [{\"context\": \"c\", \"qas\": [{\"id\": \"1\"}]}]}]}",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(missing.contains("question"), "{missing}");
    let outside = json!({"data": [{"paragraphs": [{"context": "short", "qas": [
        {"id": "x", "question": "q", "answers": [{"text": "shorter", "answer_start": 2}]}]}]}]});
    let err = parse_squad_json(&outside.to_string(), p)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data[0].paragraphs[0].qas[0].answers[0]") && err.contains("outside"),
        "{err}"
    );
    let dup = json!({"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "x", "question": "q", "answers": []}, {"id": "x", "question": "r", "answers": []}]}]}]});
    let err = parse_squad_json(&dup.to_string(), p)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"x\" appears twice"), "{err}");
    let tok = BertTokenizer::from_name("megatron-bert-uncased").unwrap();
    let bad = SquadConfig {
        max_seq_length: 128,
        doc_stride: 128,
        max_query_length: 64,
    };
    let err = SquadFeaturizer::new(&tok, bad).err().unwrap().to_string();
    assert!(err.contains("doc_stride"), "{err}");
}

#[test]
fn questions_are_cut_to_max_query_length() {
    let tok = BertTokenizer::from_name("megatron-bert-uncased").unwrap();
    let f = SquadFeaturizer::new(
        &tok,
        SquadConfig {
            max_seq_length: 64,
            doc_stride: 8,
            max_query_length: 5,
        },
    )
    .unwrap();
    assert_eq!(
        f.question_text("  one two three four five six seven")
            .unwrap(),
        "one two three four five"
    );
    assert_eq!(f.question_text("unbelievably").unwrap(), "unbelievably");
}
