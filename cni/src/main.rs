//! `twill`: the CNI plugin. Built in its own issue; until then it answers every
//! call with the CNI error "try again later" (code 11) so a runtime never
//! believes a pod was wired.
#![forbid(unsafe_code)]

fn main() {
    println!(
        "{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"twill CNI plugin is not implemented yet\"}}"
    );
    std::process::exit(1);
}
