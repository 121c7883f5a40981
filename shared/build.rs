//! With the `cuda` feature, compiles the model's own CUDA kernels (src/model/ops/cuda/kernels.cu)
//! to PTX with `nvcc` (from `PATH`, or `$NVCC`), for the compute capability in
//! `CUDA_COMPUTE_CAP` (default 90: H100, H200). The PTX is embedded in the binary, so a mistake
//! in a kernel fails the build rather than the first training step. Without the feature it does
//! nothing.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let src = "src/model/ops/cuda/kernels.cu";
    println!("cargo::rerun-if-changed={src}");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=NVCC");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("ecg_kernels.ptx");
    let status = Command::new(&nvcc)
        .args([
            "--ptx",
            "-std=c++17",
            "-O3",
            &format!("-arch=compute_{cap}"),
            "-o",
        ])
        .arg(&out)
        .arg(src)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed ({s}) compiling {src}"),
        Err(e) => panic!(
            "cannot run {nvcc} to compile {src}: {e} (the `cuda` feature needs nvcc: scripts/build-cuda.sh installs one)"
        ),
    }
}
