//! Free TCP ports, so tests running in parallel never collide on a fixed one.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Ports handed out per process, from a base that depends on the process id.
const SPAN: usize = 1000;

/// Set by [`use_whole_port_range`].
static WHOLE: AtomicBool = AtomicBool::new(false);

/// Lets this process draw from all of 12000..32000 instead of its block of 1000: for a bench that
/// needs thousands of ports (1,000 relayers) and runs alone on the machine.
pub fn use_whole_port_range() {
    WHOLE.store(true, Ordering::Relaxed);
}

/// A TCP port below the ephemeral range (32768+) that nothing listens on now, distinct on every call.
///
/// A port found free by binding `:0` can be taken by an outgoing connection before the child process
/// binds it (seen as "address in use" with many nodes connecting to each other); ports below the
/// ephemeral range are never used for outgoing connections. Each process draws from its own block of
/// 1000, so test binaries and benches running side by side rarely meet. Panics when the block is used
/// up: nothing a test could do about it.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (base, span) = if WHOLE.load(Ordering::Relaxed) {
        (12_000, 20 * SPAN)
    } else {
        (12_000 + (std::process::id() as usize % 20) * SPAN, SPAN)
    };
    loop {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(i < span, "no free TCP port left in {base}..{}", base + span);
        let port = (base + i) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// A port `p` such that `p` and `p + 1` are both free on every address (the cluster's API server
/// and kubelet pair). Panics after 200 attempts.
pub fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("0.0.0.0:0") else {
            continue;
        };
        let p = l.local_addr().map(|a| a.port()).unwrap_or(0);
        if p == 0 || p == u16::MAX {
            continue;
        }
        if TcpListener::bind(("0.0.0.0", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free pair of TCP ports")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_bindable() {
        let (p, p2) = (free_port(), free_port());
        assert_ne!(p, p2);
        assert!(p < 32_768 && p2 < 32_768);
        assert!(TcpListener::bind(("127.0.0.1", p)).is_ok());
        let q = free_port_pair();
        assert!(TcpListener::bind(("0.0.0.0", q + 1)).is_ok());
    }
}
