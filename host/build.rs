//! Compiles the kernel program in `ebpf/` with clang (`-target bpf`). Without clang the
//! proxy still builds, and reports kernel offload as unavailable with the reason.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = PathBuf::from("../ebpf/udp_offload.c");
    println!("cargo::rerun-if-changed={}", source.display());
    println!("cargo::rustc-check-cfg=cfg(l7mp_ebpf)");
    // Installing clang or the libbpf headers later should bring the program in.
    println!("cargo::rerun-if-changed=/usr/include/bpf/bpf_helpers.h");
    println!("cargo::rerun-if-env-changed=PATH");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("udp_offload.o");
    // The kernel headers' asm/ directory sits under the multiarch include path.
    let multiarch = Command::new("cc")
        .arg("-print-multiarch")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "x86_64-linux-gnu".into());
    let compiled = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-Wall"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .output();
    match compiled {
        Ok(o) if o.status.success() => println!("cargo::rustc-cfg=l7mp_ebpf"),
        Ok(o) => println!(
            "cargo::warning=kernel offload disabled: clang failed on {}: {}",
            source.display(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or_default()
        ),
        Err(e) => println!(
            "cargo::warning=kernel offload disabled: no clang ({e}); install clang and libbpf-dev"
        ),
    }
}
