//! Moving the calling thread into another network namespace.
//!
//! A network namespace is per thread: after [`enter`], interfaces, netlink,
//! XDP attachment and AF_XDP sockets created by this thread see the
//! namespace's devices; other threads are unaffected. Used by the integration
//! tests (the dataplane runs inside a "node" namespace the test made) and for
//! several nodes on one machine.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::IoError;

/// Moves the calling thread into the network namespace at `path` (for
/// example `/run/netns/NAME`, as made by `ip netns add NAME`).
pub fn enter(path: &Path) -> Result<(), IoError> {
    let f = File::open(path).map_err(|e| IoError::Os {
        what: format!("open network namespace {}", path.display()),
        source: e,
    })?;
    // SAFETY: `f` is an open namespace file descriptor for the duration of the
    // call; setns changes only the calling thread's network namespace and
    // touches no memory of ours.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(IoError::Os {
            what: format!("setns into {}", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Moves the calling thread into the namespace `ip netns` knows as `name`.
pub fn enter_named(name: &str) -> Result<(), IoError> {
    enter(&Path::new("/run/netns").join(name))
}
