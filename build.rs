//! With the `cuda` feature: compile every kernels/NAME.cu to $OUT_DIR/NAME.ptx with nvcc; the code that
//! launches them embeds the PTX (`include_str!`), and the driver JIT-compiles it for the GPU at first use.
//! Without it: nothing, so CPU builds and CI need no CUDA toolkit.
//!
//! nvcc at build time rather than NVRTC at run time: the CUDA build already needs nvcc (candle-kernels
//! compiles its kernels the same way), while NVRTC would add libnvrtc to what the binary needs on the
//! GPU machine and a compile at every start.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for v in ["NVCC", "CUDA_ROOT", "CUDA_HOME", "CUDA_PATH", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = nvcc();
    // PTX for a virtual architecture: the driver JITs it for this GPU or any newer one. The default
    // (sm_80, Ampere) is the oldest with native bf16; scripts/build-cuda.sh sets 90 (H100/H200).
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut sources: Vec<PathBuf> = std::fs::read_dir("kernels")
        .expect("kernels/ holds the CUDA sources")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    for src in sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let stem = src.file_stem().expect("a .cu file has a stem").to_string_lossy().into_owned();
        let out = out_dir.join(format!("{stem}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}")])
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{} failed ({s}) compiling {}", nvcc.display(), src.display()),
            Err(e) => panic!(
                "cannot run {} ({e}): the cuda feature needs nvcc; set NVCC or CUDA_ROOT (scripts/build-cuda.sh does)",
                nvcc.display()
            ),
        }
    }
}

fn nvcc() -> PathBuf {
    if let Some(p) = std::env::var_os("NVCC") {
        return p.into();
    }
    for v in ["CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = std::env::var_os(v) {
            let p = PathBuf::from(root).join("bin/nvcc");
            if p.exists() {
                return p;
            }
        }
    }
    "nvcc".into()
}
