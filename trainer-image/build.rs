//! Compiles `csrc/` (the tensor-parallel autograd shim, gradient, RNG and optimizer helpers) against the same
//! libtorch headers and C++ ABI that `torch-sys` uses: `LIBTORCH_USE_PYTORCH`
//! asks the Python interpreter's torch, otherwise `LIBTORCH` (or
//! `LIBTORCH_INCLUDE`) names an unpacked libtorch.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const PYTHON_PRINT: &str = "import os, torch\nfrom torch.utils import cpp_extension\n\
print('CXX11:', torch._C._GLIBCXX_USE_CXX11_ABI)\n\
print('LIB:', os.path.join(os.path.dirname(torch.__file__), 'lib'))\n\
for p in cpp_extension.include_paths():\n    print('INCLUDE:', p)\n";

fn env_rerun(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/tp_regions.cpp");
    println!("cargo:rerun-if-changed=csrc/grad_utils.cpp");
    println!("cargo:rerun-if-changed=csrc/rng_state.cpp");
    println!("cargo:rerun-if-changed=csrc/fused_adamw.cpp");
    println!("cargo:rerun-if-changed=build.rs");
    let (includes, cxx11_abi, lib_dir) = if env_rerun("LIBTORCH_USE_PYTORCH").is_some() {
        let python = env_rerun("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|| "python3".into());
        let out = Command::new(&python)
            .args(["-c", PYTHON_PRINT])
            .output()
            .unwrap_or_else(|e| {
                panic!("LIBTORCH_USE_PYTORCH is set but running {python} failed: {e}")
            });
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut includes = Vec::new();
        let mut abi = None;
        let mut lib_dir = None;
        for line in stdout.lines() {
            if let Some(p) = line.strip_prefix("INCLUDE: ") {
                includes.push(PathBuf::from(p));
            }
            if let Some(p) = line.strip_prefix("LIB: ") {
                lib_dir = Some(PathBuf::from(p));
            }
            match line.strip_prefix("CXX11: ") {
                Some("True") => abi = Some("1".to_string()),
                Some("False") => abi = Some("0".to_string()),
                _ => {}
            }
        }
        let abi = abi.unwrap_or_else(|| {
            panic!(
                "{python} did not report torch's C++ ABI (is torch installed in it?): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (includes, abi, lib_dir)
    } else {
        let root = env_rerun("LIBTORCH_INCLUDE")
            .or_else(|| env_rerun("LIBTORCH"))
            .unwrap_or_else(|| "/usr/lib/libtorch".into());
        let root = PathBuf::from(root);
        let abi = env_rerun("LIBTORCH_CXX11_ABI").unwrap_or_else(|| "1".into());
        (
            vec![
                root.join("include"),
                root.join("include/torch/csrc/api/include"),
            ],
            abi,
            Some(root.join("lib")),
        )
    };
    link_torch_cuda(lib_dir);
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .includes(&includes)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={cxx11_abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/tp_regions.cpp")
        .file("csrc/grad_utils.cpp")
        .file("csrc/rng_state.cpp")
        .file("csrc/fused_adamw.cpp")
        .compile("megatron_tp_shim");
}

/// Keeps `libtorch_cuda` among the binaries' needed libraries. torch-sys
/// links it, but nothing references its symbols (it registers the CUDA
/// backend from static initializers), so the linker's default `--as-needed`
/// drops it: the binaries then run CPU-only even on a GPU machine ("Could not
/// run 'aten::empty.memory_format' with arguments from the 'CUDA' backend").
/// The NEEDED entry is the library's soname, found at run time through
/// `LD_LIBRARY_PATH` like the rest of libtorch. CPU-only libtorch: nothing.
fn link_torch_cuda(lib_dir: Option<PathBuf>) {
    let Some(lib) = lib_dir.map(|d| d.join("libtorch_cuda.so")) else {
        return;
    };
    if lib.exists() {
        println!(
            "cargo:rustc-link-arg=-Wl,--no-as-needed,{},--as-needed",
            lib.display()
        );
    }
}
