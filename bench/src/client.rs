//! A blocking HTTP client for the bench threads: reqwest driven by a current-thread runtime owned by
//! the calling thread, so a request costs no hop to another thread (as reqwest's `blocking` has).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// One keep-alive connection's worth of client for `http://127.0.0.1:<port>`; use one per thread.
pub struct HttpClient {
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
    base: String,
}

/// The `lsn` field of a write response or a notification payload (other fields ignored).
#[derive(Deserialize)]
struct WithLsn {
    lsn: u64,
}

/// The `lsn` of a JSON body such as `{"success":true,"lsn":42}`, if it has one.
pub fn lsn_of(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<WithLsn>(body).ok().map(|w| w.lsn)
}

impl HttpClient {
    /// A client for the node whose HTTP API listens on 127.0.0.1:`port`.
    pub fn new(port: u16) -> Result<HttpClient> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()
            .context("reqwest client")?;
        Ok(HttpClient {
            client,
            rt,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Status code of `GET <path>`.
    pub fn get_status(&self, path: &str) -> Result<u16> {
        let url = format!("{}{path}", self.base);
        // `send` arms the request timeout, which needs the runtime: build the future inside it.
        let r = self
            .rt
            .block_on(async { self.client.get(url).send().await })?;
        Ok(r.status().as_u16())
    }

    /// `PUT /api/v1/<namespace>/kv/<key>` with a JSON `body`; returns the commit LSN.
    pub fn put_kv(&self, namespace: &str, key: &str, body: &[u8]) -> Result<u64> {
        let url = format!("{}/api/v1/{namespace}/kv/{key}", self.base);
        let (status, resp) = self.rt.block_on(async {
            let r = self
                .client
                .put(url)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await?;
            let status = r.status();
            Ok::<_, reqwest::Error>((status, r.bytes().await?))
        })?;
        if !status.is_success() {
            bail!("PUT {key}: {status} {}", String::from_utf8_lossy(&resp));
        }
        lsn_of(&resp).context("no lsn in PUT response")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_from_json() {
        assert_eq!(lsn_of(br#"{"success":true,"lsn":42}"#), Some(42));
        assert_eq!(
            lsn_of(br#"{"namespace":"bench","op":"put","lsn":7,"hlc":1}"#),
            Some(7)
        );
        assert_eq!(lsn_of(b"{}"), None);
    }
}
