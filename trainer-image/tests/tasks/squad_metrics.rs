//! SQuAD v1.1 exact match / F1: hand-computed cases and the official
//! evaluate-v1.1.py logic (re-implemented in tests/python/metrics_reference.py)
//! on a generated set.

use crate::support::data_common;

use std::collections::HashMap;

use megatron_trainer::scores::{exact_match, f1_score, normalize_answer, squad_evaluate};
use rand::{Rng, SeedableRng};
use serde_json::json;

#[test]
fn normalisation_edge_cases() {
    assert_eq!(
        normalize_answer("The  Quick, brown fox!"),
        "quick brown fox"
    );
    assert_eq!(normalize_answer("an apple a day"), "apple day");
    assert_eq!(
        normalize_answer("theatre anatomy another"),
        "theatre anatomy another",
        "articles only as words"
    );
    assert_eq!(normalize_answer("?!..."), "", "punctuation only");
    assert_eq!(normalize_answer(""), "");
    // unicode punctuation is not in string.punctuation and stays
    assert_eq!(normalize_answer("«Paris» — “city”"), "«paris» — “city”");
    assert_eq!(
        normalize_answer("a-b the_c"),
        "ab thec",
        "underscore is punctuation, hyphen too"
    );
    assert_eq!(normalize_answer("the\u{a0}end\tof\nline"), "end of line");
    assert_eq!(normalize_answer("ÉCOLE à l'été"), "école à lété");
}

#[test]
fn hand_computed_scores() {
    assert_eq!(exact_match("The Eiffel Tower", "eiffel tower."), 1.0);
    assert_eq!(exact_match("Eiffel", "Eiffel Tower"), 0.0);
    // pred tokens: [eiffel], truth: [eiffel, tower] -> p 1, r 0.5, f1 2/3
    assert!((f1_score("Eiffel", "the Eiffel Tower") - 2.0 / 3.0).abs() < 1e-12);
    // bag overlap counts repeats once per match: pred [a? no: "paris paris"] vs "paris"
    assert!((f1_score("paris paris", "paris") - 2.0 * 0.5 * 1.0 / 1.5).abs() < 1e-12);
    assert_eq!(f1_score("", "anything"), 0.0, "empty prediction");
    assert_eq!(
        f1_score("the", "a"),
        0.0,
        "both normalise to nothing: no common token"
    );
    assert_eq!(
        exact_match("the", "a"),
        1.0,
        "both normalise to the empty string"
    );
    assert_eq!(
        f1_score("«Paris»", "Paris"),
        0.0,
        "unicode quotes stay part of the token"
    );

    let truths = [
        (
            "q1".to_string(),
            vec!["Denver Broncos".to_string(), "The Broncos".to_string()],
        ),
        ("q2".to_string(), vec!["1990".to_string()]),
        ("q3".to_string(), vec!["gold".to_string()]),
    ];
    let preds: HashMap<String, String> = [("q1", "broncos"), ("q2", "in 1990")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let s = squad_evaluate(
        truths.iter().map(|(i, t)| (i.as_str(), t.as_slice())),
        &preds,
    );
    // q1: EM 1 (vs "The Broncos"), F1 1; q2: EM 0, F1 2*0.5*1/1.5 = 2/3; q3 unanswered 0
    assert_eq!(s.total, 3);
    assert_eq!(s.unanswered, 1);
    assert!((s.exact_match - 100.0 / 3.0).abs() < 1e-9);
    assert!((s.f1 - 100.0 * (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-9);
}

#[test]
fn matches_the_official_script_on_a_generated_set() {
    let words: Vec<String> = data_common::real_sentences()
        .iter()
        .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
        .take(3000)
        .collect();
    let extras = [
        "the",
        "a",
        "an",
        "The",
        "A",
        "«",
        "»",
        "—",
        "…",
        "?",
        "!!",
        "Ünïcödé",
        "ÉTÉ",
        "_",
        "'",
        "\u{a0}",
        "x\u{301}",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let phrase = |rng: &mut rand_chacha::ChaCha8Rng| -> String {
        let n = rng.gen_range(0..6);
        (0..n)
            .map(|_| {
                if rng.gen_bool(0.3) {
                    extras[rng.gen_range(0..extras.len())].to_string()
                } else {
                    words[rng.gen_range(0..words.len())].clone()
                }
            })
            .collect::<Vec<_>>()
            .join(if rng.gen_bool(0.8) { " " } else { "  " })
    };
    let mut qas = Vec::new();
    let mut truths: Vec<(String, Vec<String>)> = Vec::new();
    let mut preds = HashMap::new();
    let mut texts = Vec::new();
    for i in 0..400 {
        let id = format!("id{i}");
        let n_truth = rng.gen_range(1..4);
        let t: Vec<String> = (0..n_truth).map(|_| phrase(&mut rng)).collect();
        let r: f64 = rng.r#gen();
        if r < 0.9 {
            // half the time a perturbed copy of a truth, else unrelated
            let p = if rng.gen_bool(0.5) {
                format!(
                    "{} {}",
                    t[0].to_uppercase(),
                    if rng.gen_bool(0.5) { "the" } else { "" }
                )
            } else {
                phrase(&mut rng)
            };
            texts.push(p.clone());
            preds.insert(id.clone(), p);
        }
        texts.extend(t.iter().cloned());
        qas.push(json!({"id": id, "question": "q", "answers": t.iter().map(|x| json!({"text": x, "answer_start": 0})).collect::<Vec<_>>()}));
        truths.push((id, t));
    }
    let dataset = json!([{"title": "gen", "paragraphs": [{"context": "c", "qas": qas}]}]);
    let want = data_common::python(
        "metrics_reference.py",
        &json!({"op": "squad", "dataset": dataset, "predictions": preds}),
    );
    let got = squad_evaluate(
        truths.iter().map(|(i, t)| (i.as_str(), t.as_slice())),
        &preds,
    );
    assert!(
        (got.exact_match - want["exact_match"].as_f64().unwrap()).abs() < 1e-9,
        "{got:?} vs {want}"
    );
    assert!(
        (got.f1 - want["f1"].as_f64().unwrap()).abs() < 1e-9,
        "{got:?} vs {want}"
    );
    assert!(
        got.exact_match > 5.0 && got.f1 > 5.0 && got.f1 < 100.0 && got.unanswered > 0,
        "the set exercises partial matches: {got:?}"
    );
    let norm = data_common::python(
        "metrics_reference.py",
        &json!({"op": "normalize", "texts": texts}),
    );
    for (t, n) in texts.iter().zip(norm["normalized"].as_array().unwrap()) {
        assert_eq!(
            normalize_answer(t),
            n.as_str().unwrap(),
            "normalising {t:?}"
        );
    }
}
