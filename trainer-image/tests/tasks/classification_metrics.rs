//! Classification reports against scikit-learn's `classification_report`
//! definitions and text format (re-implemented without numpy in
//! tests/python/metrics_reference.py, since sklearn is not in the reference env).

use crate::support::data_common;

use megatron_trainer::scores::ClassificationReport;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn close(a: f64, b: &serde_json::Value) {
    assert!((a - b.as_f64().unwrap()).abs() < 1e-12, "{a} vs {b}");
}

fn check(
    y_true: &[usize],
    y_pred: &[usize],
    labels: Option<&[usize]>,
    names: &[&str],
    digits: usize,
) {
    let report =
        ClassificationReport::compute(y_true, y_pred, labels, |l| names[l].to_string()).unwrap();
    let want = data_common::python(
        "metrics_reference.py",
        &json!({"op": "report", "y_true": y_true, "y_pred": y_pred, "labels": labels,
                "names": report.labels.iter().map(|&l| names[l]).collect::<Vec<_>>(), "digits": digits}),
    );
    for (c, w) in report
        .per_class
        .iter()
        .zip(want["per_class"].as_array().unwrap())
    {
        close(c.precision, &w[0]);
        close(c.recall, &w[1]);
        close(c.f1, &w[2]);
        assert_eq!(c.support as u64, w[3].as_u64().unwrap());
    }
    for (ours, key) in [
        (&report.micro, "micro"),
        (&report.macro_avg, "macro"),
        (&report.weighted, "weighted"),
    ] {
        close(ours.precision, &want[key][0]);
        close(ours.recall, &want[key][1]);
        close(ours.f1, &want[key][2]);
    }
    close(report.accuracy, &want["accuracy"]);
    assert_eq!(report.to_text(digits), want["text"].as_str().unwrap());
}

#[test]
fn random_multiclass_report_matches_reference() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-MISC-LONG-NAME"];
    for trial in 0..6 {
        let n = 50 + trial * 40;
        let y_true: Vec<usize> = (0..n).map(|_| rng.gen_range(0..5)).collect();
        // 60% right, otherwise random (sometimes label 5, never true)
        let y_pred: Vec<usize> = y_true
            .iter()
            .map(|&t| {
                if rng.gen_bool(0.6) {
                    t
                } else {
                    rng.gen_range(0..6)
                }
            })
            .collect();
        check(&y_true, &y_pred, None, &names, 4);
        check(&y_true, &y_pred, Some(&[0, 1, 2, 3, 4, 5]), &names, 2);
        // a label subset: micro avg instead of accuracy
        check(&y_true, &y_pred, Some(&[1, 2, 3]), &names, 4);
    }
}

#[test]
fn zero_division_and_exact_text() {
    // class 2 never predicted, class 3 never true
    let y_true = [0, 0, 1, 1, 2];
    let y_pred = [0, 1, 1, 1, 3];
    let names = ["neg", "pos", "other", "x"];
    check(&y_true, &y_pred, None, &names, 4);
    let r =
        ClassificationReport::compute(&y_true, &y_pred, None, |l| names[l].to_string()).unwrap();
    assert_eq!(r.per_class[2].precision, 0.0);
    assert_eq!(r.per_class[3].recall, 0.0);
    assert!((r.accuracy - 0.6).abs() < 1e-12);
    let expected = "              precision    recall  f1-score   support

         neg     1.0000    0.5000    0.6667         2
         pos     0.6667    1.0000    0.8000         2
       other     0.0000    0.0000    0.0000         1
           x     0.0000    0.0000    0.0000         0

    accuracy                         0.6000         5
   macro avg     0.4167    0.3750    0.3667         5
weighted avg     0.6667    0.6000    0.5867         5
";
    assert_eq!(r.to_text(4), expected);
    assert!(ClassificationReport::compute(&[0], &[0, 1], None, |l| l.to_string()).is_err());
}
