//! Free TCP ports, so tests running in parallel never collide on a fixed one.

use std::net::TcpListener;

/// A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it; the listener is closed).
///
/// Panics when the OS has no port to give: nothing a test could do about it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free TCP port on 127.0.0.1: {e}"))
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
        let p = free_port();
        assert!(TcpListener::bind(("127.0.0.1", p)).is_ok());
        let q = free_port_pair();
        assert!(TcpListener::bind(("0.0.0.0", q + 1)).is_ok());
    }
}
