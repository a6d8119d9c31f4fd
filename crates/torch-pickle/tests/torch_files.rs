//! The torch.save reader and writer against real PyTorch: files written by
//! `torch.save` (zip and legacy) load with identical values, and files
//! written here load in Python with identical values.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use tch::{Kind, Tensor};
use tempfile::TempDir;
use torch_pickle::{Container, Dict, Object, PickleError, Value};

/// A scratch directory removed on drop.
fn scratch(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("torch-pickle-{tag}-"))
        .tempdir()
        .unwrap()
}

/// Runs `tests/python/torch_files.py args...` with the reference Python
/// (`$MEGATRON_PYTHON`, set by `scripts/torch-env`: torch and safetensors),
/// panicking with its output on failure.
fn run_python(args: &[&str]) -> String {
    let python = std::env::var("MEGATRON_PYTHON").expect(
        "MEGATRON_PYTHON is not set: run `eval \"$(scripts/torch-env)\"` before `cargo test`",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/torch_files.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .expect("spawning the reference python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "torch_files.py {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Tensors from a safetensors file by name.
fn read_safetensors(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// Asserts same dtype, shape and bit-identical values.
fn assert_tensor_eq(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.kind(), want.kind(), "{name}: dtype");
    assert_eq!(got.size(), want.size(), "{name}: shape");
    assert!(
        got.equal(want),
        "{name}: values differ\n got {got}\nwant {want}"
    );
}

fn check_python_object(path: &Path, refs: &Path, want_container: Container) {
    let (obj, container) = torch_pickle::load(path).unwrap();
    assert_eq!(container, want_container);

    // Every tensor, by dotted path, equals PyTorch's contiguous copy.
    let want = read_safetensors(refs);
    let mut seen = 0;
    obj.visit_tensors("", &mut |name, t| {
        let w = want
            .get(name)
            .unwrap_or_else(|| panic!("unexpected tensor {name}"));
        assert_tensor_eq(name, t, w);
        seen += 1;
    });
    assert_eq!(seen, want.len(), "tensor count");

    // Views keep their strides and share storage as in Python.
    let model = obj.get("model").unwrap();
    assert!(model.as_dict().unwrap().ordered, "model is an OrderedDict");
    let transposed = model.get("transposed").unwrap().as_tensor().unwrap();
    assert_eq!(transposed.stride(), vec![1, 6]);
    let a = model.get("shared_a").unwrap().as_tensor().unwrap();
    let b = model.get("shared_b").unwrap().as_tensor().unwrap();
    assert_eq!(
        a.data_ptr() as usize + 4 * 4,
        b.data_ptr() as usize,
        "shared_a and shared_b are views of one storage"
    );

    // Plain values, Namespace attributes and dtype globals.
    assert_eq!(obj.get("iteration").unwrap().as_i64(), Some(1234));
    assert_eq!(obj.get("big").unwrap().as_i64(), Some(1 << 40));
    assert_eq!(obj.get("neg").unwrap().as_i64(), Some(-7));
    assert_eq!(obj.get("neg_big").unwrap().as_i64(), Some(-(1 << 35)));
    assert_eq!(obj.get("pi").unwrap().as_f64(), Some(2.71));
    assert_eq!(obj.get("checkpoint_version").unwrap().as_f64(), Some(3.0));
    assert_eq!(
        obj.get("text").unwrap().as_str(),
        Some("h\u{e9}llo \u{2603}")
    );
    assert!(obj.get("none").unwrap().is_none());
    let flags: Vec<_> = obj
        .get("flags")
        .unwrap()
        .as_list()
        .unwrap()
        .iter()
        .map(|v| v.as_bool())
        .collect();
    assert_eq!(flags, vec![Some(true), Some(false)]);
    let tuple = obj.get("tuple").unwrap().as_list().unwrap();
    assert_eq!(tuple[1].as_str(), Some("two"));
    assert!(matches!(obj.get("bytes").unwrap(), Value::Bytes(b) if b == b"\x00\x01abc"));
    assert_eq!(obj.get("dtype").unwrap().as_dtype(), Some(Kind::BFloat16));
    assert_eq!(
        obj.get("date").unwrap().class_name().as_deref(),
        Some("datetime.date")
    );

    let args = obj.get("args").unwrap();
    assert_eq!(args.class_name().as_deref(), Some("argparse.Namespace"));
    assert_eq!(args.get("num_layers").unwrap().as_i64(), Some(2));
    assert_eq!(args.get("lr").unwrap().as_f64(), Some(1.5e-4));
    assert_eq!(
        args.get("tokenizer_type").unwrap().as_str(),
        Some("BertWordPieceLowerCase")
    );
    assert_eq!(
        args.get("params_dtype").unwrap().as_dtype(),
        Some(Kind::Half)
    );
    assert_eq!(args.get("fp16").unwrap().as_bool(), Some(true));
    assert!(args.get("load").unwrap().is_none());
}

#[test]
fn reads_python_zip_and_legacy_files() {
    let dir = scratch("read");
    run_python(&["write", dir.path().to_str().unwrap()]);
    let refs = dir.path().join("ref.safetensors");
    check_python_object(&dir.path().join("zip.pt"), &refs, Container::Zip);
    check_python_object(&dir.path().join("legacy.pt"), &refs, Container::Legacy);
}

#[test]
fn writes_files_python_loads_with_weights_only() {
    let dir = scratch("write");
    let base = Tensor::arange(24, (Kind::Float, tch::Device::Cpu)).view([4, 6]) / 7.0;
    let tensors: Vec<(&str, Tensor)> = vec![
        (
            "f32",
            Tensor::randn([3, 5], (Kind::Float, tch::Device::Cpu)),
        ),
        (
            "f16",
            Tensor::randn([4], (Kind::Float, tch::Device::Cpu)).to_kind(Kind::Half),
        ),
        (
            "bf16",
            Tensor::randn([2, 3], (Kind::Float, tch::Device::Cpu)).to_kind(Kind::BFloat16),
        ),
        ("f64", Tensor::randn([2], (Kind::Double, tch::Device::Cpu))),
        (
            "i64",
            Tensor::arange(6, (Kind::Int64, tch::Device::Cpu)).view([2, 3]) - 3,
        ),
        ("i32", Tensor::from_slice(&[1i32, -2, i32::MAX])),
        ("u8", Tensor::from_slice(&[0u8, 7, 255])),
        ("bool", Tensor::from_slice(&[true, false, true])),
        ("scalar", Tensor::from(2.5f32)),
        (
            "empty",
            Tensor::zeros([0, 3], (Kind::Float, tch::Device::Cpu)),
        ),
        ("transposed", base.tr()),
        ("sliced", base.narrow(0, 1, 2).narrow(1, 2, 3)),
    ];
    let mut ordered = Dict::new(true);
    let mut expect = Vec::new();
    for (name, t) in &tensors {
        ordered.insert(*name, Value::Tensor(t.shallow_clone()));
        expect.push((format!("ordered.{name}"), t.contiguous()));
    }
    let mut nested = Dict::new(false);
    nested.insert("x", Value::Tensor(base.narrow(1, 1, 2)));
    expect.push(("nested.x".to_string(), base.narrow(1, 1, 2).contiguous()));
    nested.insert(
        "list",
        Value::List(vec![Value::Int(1), Value::Str("a".into())]),
    );

    let mut top = Dict::new(false);
    top.insert("ordered", Value::Dict(ordered));
    top.insert("nested", Value::Dict(nested));
    top.insert("iteration", Value::Int(80000));
    top.insert("big", Value::Int(1 << 40));
    top.insert("neg", Value::Int(-70000));
    top.insert("version", Value::Float(3.0));
    top.insert("name", Value::Str("m\u{e9}gatron".into()));
    top.insert("flag", Value::Bool(false));
    top.insert("nothing", Value::None);
    top.insert("pair", Value::Tuple(vec![Value::Int(1), Value::Float(0.5)]));
    let path = dir.path().join("rust.pt");
    torch_pickle::save(&path, &Value::Dict(top)).unwrap();

    let expect_path = dir.path().join("expect.safetensors");
    Tensor::write_safetensors(&expect, &expect_path).unwrap();
    let plain = serde_json::json!({
        "ordered": tensors.iter().map(|(n, _)| (n.to_string(), serde_json::json!("<tensor>"))).collect::<serde_json::Map<_, _>>(),
        "nested": {"x": "<tensor>", "list": [1, "a"]},
        "iteration": 80000, "big": 1u64 << 40, "neg": -70000, "version": 3.0,
        "name": "m\u{e9}gatron", "flag": false, "nothing": null, "pair": [1, 0.5],
    });
    let json_path = dir.path().join("expect.json");
    std::fs::write(&json_path, plain.to_string()).unwrap();
    let out = run_python(&[
        "check",
        path.to_str().unwrap(),
        expect_path.to_str().unwrap(),
        json_path.to_str().unwrap(),
    ]);
    assert!(out.contains("ok: 13 tensors"), "{out}");

    // And the reader reads its own output back.
    let (back, _) = torch_pickle::load(&path).unwrap();
    let sliced = back
        .get("ordered")
        .unwrap()
        .get("sliced")
        .unwrap()
        .as_tensor()
        .unwrap();
    assert_tensor_eq("sliced", sliced, &tensors[11].1);
}

#[test]
fn writes_objects_and_dtype_globals() {
    let dir = scratch("object");
    let mut attrs = Dict::new(false);
    attrs.insert("hidden_size", Value::Int(16));
    attrs.insert("params_dtype", Value::global("torch", "float16"));
    let ns = Value::Object(Box::new(Object {
        class: Value::global("argparse", "Namespace"),
        args: vec![],
        state: Some(Value::Dict(attrs)),
        items: vec![],
    }));
    let mut top = Dict::new(false);
    top.insert("args", ns);
    let path = dir.path().join("ns.pt");
    torch_pickle::save(&path, &Value::Dict(top)).unwrap();
    let (back, _) = torch_pickle::load(&path).unwrap();
    let args = back.get("args").unwrap();
    assert_eq!(args.class_name().as_deref(), Some("argparse.Namespace"));
    assert_eq!(args.get("hidden_size").unwrap().as_i64(), Some(16));
    assert_eq!(
        args.get("params_dtype").unwrap().as_dtype(),
        Some(Kind::Half)
    );
}

#[test]
fn rejects_garbage_with_a_clear_error() {
    let dir = scratch("bad");
    let path = dir.path().join("bad.pt");
    std::fs::write(&path, b"hello world, not a checkpoint").unwrap();
    let err = torch_pickle::load(&path).unwrap_err();
    assert!(err.is_invalid_input());
    assert!(err.to_string().contains("not a torch.save file"), "{err}");
    assert!(
        matches!(err.cause(), PickleError::NotATorchFile(_)),
        "{err:?}"
    );
    assert_eq!(err.path(), Some(path.as_path()));

    // A truncated zip checkpoint fails cleanly, never panics.
    let good = dir.path().join("good.pt");
    let mut d = Dict::new(false);
    d.insert(
        "w",
        Value::Tensor(Tensor::ones([64, 64], (Kind::Float, tch::Device::Cpu))),
    );
    torch_pickle::save(&good, &Value::Dict(d)).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = torch_pickle::load(&path).unwrap_err();
    assert!(err.is_invalid_input() && !err.is_io(), "{err}");
}
