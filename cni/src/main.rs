//! `twill`: the CNI plugin binary. Everything is in the library ([`cni::run`]).
#![forbid(unsafe_code)]

use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let (out, code) = cni::run(&|k| std::env::var(k).ok(), &stdin);
    if !out.is_empty() {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{out}");
        let _ = o.flush();
    }
    std::process::exit(code);
}
