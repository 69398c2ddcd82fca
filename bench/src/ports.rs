//! Free TCP ports on 127.0.0.1 for the processes a benchmark starts.
//!
//! LOCAL COPY of what `testkit/` provides (see the crate docs).

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Result};

/// Ports handed out per process, from a base that depends on the process id.
const SPAN: usize = 1000;

/// A port below the ephemeral range (32768+) that nothing listens on now.
///
/// With ~100 processes connecting to each other, a port found free by binding `:0` can be taken by an
/// outgoing connection before the child binds it; ports below the ephemeral range are never used for
/// outgoing connections. Each call returns a different port (up to 1000 per process).
pub fn free_port() -> Result<u16> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 12_000 + (std::process::id() as usize % 20) * SPAN;
    loop {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        if i >= SPAN {
            bail!("no free port left in {base}..{}", base + SPAN);
        }
        let port = (base + i) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let (a, b) = (free_port().unwrap(), free_port().unwrap());
        assert_ne!(a, b);
        assert!(a < 32_768 && b < 32_768);
        TcpListener::bind(("127.0.0.1", a)).unwrap();
    }
}
