//! `unisondb probe URL [--expect-status 200] [--wait-secs N]`: one HTTP GET (retried for up to
//! `--wait-secs`), exit 0 when the answer has the expected status. A probe the node image already
//! carries, for Helm test hooks and debug pods (no curl in the image).

use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Arguments of `unisondb probe`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// URL to GET (plain http://), e.g. http://hub.default.svc:4000/readyz.
    pub url: String,
    /// Status the answer must have.
    #[arg(long, default_value_t = 200)]
    pub expect_status: u16,
    /// Keep trying (once a second) for this long before giving up; 0 = one attempt.
    #[arg(long, default_value_t = 0)]
    pub wait_secs: u64,
    /// Timeout of each attempt.
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
}

/// What one attempt saw: `Ok(status)` or a transport error.
async fn attempt(client: &reqwest::Client, url: &str) -> Result<u16, String> {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Runs the probe: prints one line per attempt outcome to stderr and the final verdict to stdout.
pub async fn probe(args: &ProbeArgs) -> bool {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs.max(1)))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("probe: {e}");
            return false;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    loop {
        let seen = attempt(&client, &args.url).await;
        match &seen {
            Ok(s) if *s == args.expect_status => {
                println!("probe: GET {} -> {s} (ok)", args.url);
                return true;
            }
            Ok(s) => eprintln!(
                "probe: GET {} -> {s}, want {}",
                args.url, args.expect_status
            ),
            Err(e) => eprintln!("probe: GET {}: {e}", args.url),
        }
        if Instant::now() >= deadline {
            println!("probe: GET {} failed: {seen:?}", args.url);
            return false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `unisondb probe` entry point: exit 0 on the expected status, 1 otherwise.
pub fn run(args: ProbeArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("probe: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if rt.block_on(probe(&args)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve(status: u16) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        addr
    }

    fn args(url: String, expect: u16) -> ProbeArgs {
        ProbeArgs {
            url,
            expect_status: expect,
            wait_secs: 0,
            timeout_secs: 2,
        }
    }

    #[tokio::test]
    async fn expected_status_passes_other_fails() {
        let ok = serve(200).await;
        assert!(probe(&args(format!("http://{ok}/readyz"), 200)).await);
        let unready = serve(503).await;
        assert!(!probe(&args(format!("http://{unready}/readyz"), 200)).await);
        assert!(probe(&args(format!("http://{unready}/readyz"), 503)).await);
        // nothing listening: a failure, not a hang
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!probe(&args(format!("http://{closed}/"), 200)).await);
    }
}
