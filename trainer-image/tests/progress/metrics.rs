//! The trainer's Prometheus endpoint: `/metrics` scraped over HTTP from a
//! running reporter and parsed with a strict OpenMetrics parser.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crds::{CheckpointStatus, uri::Uri};
use megatron_trainer::progress::{JobRef, Reporter, ReporterConfig};
use megatron_trainer::train::StepStats;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn scrape(addr: SocketAddr) -> (String, Exposition) {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("invalid OpenMetrics ({e:?}):\n{text}"));
    (content_type, parsed)
}

/// The value of family `name`'s sample with `labels` (gauge or counter).
fn value(exp: &Exposition, name: &str, labels: &[&str]) -> f64 {
    let family = exp
        .families
        .get(name)
        .unwrap_or_else(|| panic!("no metric family {name}"));
    let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    let sample = family
        .get_sample_by_label_values(&labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"));
    match &sample.value {
        OpenMetricsValue::Gauge(n) => n.as_f64(),
        OpenMetricsValue::Counter(c) => c.value.as_f64(),
        other => panic!("{name} is {other:?}"),
    }
}

fn stats(step: i64) -> StepStats {
    StepStats {
        step,
        total_steps: 10,
        epoch: 0.25 * step as f64,
        loss: step as f64,
        learning_rate: 3e-5,
        grad_norm: Some(1.5),
        loss_scale: Some(65536.0),
        samples_per_second: 42.5,
        tokens_per_second: 5440.0,
        eta_seconds: 12.0,
        skipped: step == 3,
    }
}

#[tokio::test]
async fn metrics_scraped_over_http() {
    let mut r = Reporter::new(ReporterConfig {
        metrics_addr: Some(any_port()),
        log_interval_steps: 4,
        ..Default::default()
    })
    .expect("reporter");
    let addr = r.metrics_addr().expect("bound address");
    assert_ne!(addr.port(), 0);

    let (content_type, before) = scrape(addr).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(value(&before, "megatron_trainer_step", &[]), 0.0);

    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for step in 1..=4 {
        r.step(&stats(step));
    }
    let val = BTreeMap::from([("val_f1".to_string(), 71.25), ("val_loss".to_string(), 0.5)]);
    r.validation(4, 1.0, &val);
    r.test_metrics(&BTreeMap::from([("test_f1".to_string(), 70.5)]));
    r.checkpoint_written(2.5, 4096);
    r.checkpoint_saved(
        CheckpointStatus {
            step: 4,
            uri: Uri::new("s3://bucket/run/checkpoints/step_00000004"),
            time: None,
            metric_name: None,
            metric: None,
            duration_seconds: Some(2.5),
        },
        None,
    );

    let (_, exp) = scrape(addr).await;
    let v = |name: &str| value(&exp, &format!("megatron_trainer_{name}"), &[]);
    assert_eq!(v("step"), 4.0);
    assert_eq!(v("total_steps"), 10.0);
    assert_eq!(v("epoch"), 1.0);
    // Mean over the log interval (steps 1..=4).
    assert_eq!(v("loss"), 2.5);
    assert_eq!(v("learning_rate"), 3e-5);
    assert_eq!(v("grad_norm"), 1.5);
    assert_eq!(v("loss_scale"), 65536.0);
    assert_eq!(v("samples_per_second"), 42.5);
    assert_eq!(v("tokens_per_second"), 5440.0);
    assert_eq!(v("eta_seconds"), 12.0);
    assert_eq!(v("skipped_steps"), 1.0);
    assert_eq!(v("checkpoints_saved"), 1.0);
    assert_eq!(v("latest_checkpoint_step"), 4.0);
    assert_eq!(v("validation_step"), 4.0);
    assert_eq!(v("attempt"), 0.0);
    assert_eq!(v("status_write_errors"), 0.0);
    let last = v("last_step_timestamp_seconds");
    assert!(
        last >= start.floor() && last < start + 60.0,
        "{last} vs {start}"
    );
    assert_eq!(
        value(&exp, "megatron_trainer_validation", &["val_f1"]),
        71.25
    );
    assert_eq!(
        value(&exp, "megatron_trainer_validation", &["val_loss"]),
        0.5
    );
    assert_eq!(value(&exp, "megatron_trainer_test", &["test_f1"]), 70.5);
    assert_eq!(
        exp.families["megatron_trainer_validation"].get_label_names(),
        ["metric"]
    );
    assert_eq!(
        exp.families["megatron_trainer_checkpoints_saved"].family_type,
        OpenMetricsType::Counter
    );
    let durations = &exp.families["megatron_trainer_checkpoint_duration_seconds"];
    assert_eq!(durations.family_type, OpenMetricsType::Histogram);
    match &durations.get_sample_by_label_values(&[]).unwrap().value {
        OpenMetricsValue::Histogram(h) => {
            assert_eq!((h.count, h.sum.map(|s| s.as_f64())), (Some(1), Some(2.5)));
        }
        other => panic!("checkpoint_duration_seconds is {other:?}"),
    }
    assert_eq!(v("checkpoint_bytes"), 4096.0);

    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    drop(r);
    assert!(
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .is_err(),
        "the server stops with the reporter"
    );
}

#[test]
fn no_server_off_rank0() {
    // Off rank 0 nothing is served even when an address is given.
    let r = Reporter::new(ReporterConfig {
        is_rank0: false,
        metrics_addr: Some(any_port()),
        job: Some(JobRef {
            name: "x".into(),
            namespace: "y".into(),
            attempt: 2,
        }),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(r.metrics_addr(), None);
    // The gauges exist without a server too.
    let text = Reporter::new(ReporterConfig::default())
        .unwrap()
        .metrics()
        .render();
    assert!(text.contains("megatron_trainer_step 0"), "{text}");
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let first = Reporter::new(ReporterConfig {
        metrics_addr: Some(any_port()),
        ..Default::default()
    })
    .unwrap();
    let taken = first.metrics_addr().unwrap();
    let err = Reporter::new(ReporterConfig {
        metrics_addr: Some(taken),
        ..Default::default()
    })
    .err()
    .expect("binding a taken port fails");
    let text = err.to_string();
    assert!(
        text.contains(&taken.to_string()) && text.contains("/metrics"),
        "{text}"
    );
}
