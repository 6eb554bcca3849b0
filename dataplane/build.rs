//! Compiles the XDP steering program (`bpf/steer.c`) with clang for the BPF
//! target into `$OUT_DIR/steer.o`, which `src/io/xdp.rs` embeds.
//!
//! Needs clang and libbpf's headers (`bpf/bpf_helpers.h`): on Debian the
//! packages `clang` and `libbpf-dev` (`scripts/install-deps.sh` installs them).
//! `CLANG` overrides the compiler's path.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SRC: &str = "bpf/steer.c";

fn main() {
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("steer.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"]);
    // <linux/types.h> includes <asm/types.h>, which Debian keeps under the
    // multiarch directory that clang does not search for the bpf target.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    if Path::new(&multiarch).is_dir() {
        cmd.arg(format!("-I{multiarch}"));
    }
    cmd.arg("-c").arg(SRC).arg("-o").arg(&obj);

    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => panic!(
            "\n\ntwill: cannot run `{clang}` ({e}).\n\
             The XDP steering program {SRC} is compiled with clang for the BPF target.\n\
             Install clang and libbpf's headers (Debian: `apt-get install clang libbpf-dev`, \
             or run ./scripts/install-deps.sh), or point CLANG at a clang binary.\n"
        ),
    };
    if !status.success() {
        panic!(
            "\n\ntwill: `{clang}` failed to compile {SRC} for the BPF target ({status}).\n\
             If the error above is a missing <bpf/bpf_helpers.h> or <asm/types.h>, install \
             libbpf-dev and linux-libc-dev (./scripts/install-deps.sh).\n"
        );
    }
}
