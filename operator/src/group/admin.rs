//! Asking a hub group's members to act: hand leadership over before a restart, remove members
//! before a scale-down, list a namespace's members. A trait so reconcile scenarios can answer for
//! the nodes; [`HttpGroupAdmin`] is the real one (the node's HTTP API, docs/API.md "Hub groups").

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

/// The node calls the operator makes on a hub group. `base` is a member's HTTP API, e.g.
/// `http://10.1.2.3:4000`.
pub trait GroupAdmin: Send + Sync {
    /// `POST /api/v1/cluster/step-down`: the member hands over the namespaces it leads (best effort).
    fn step_down<'a>(&'a self, base: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// `DELETE /api/v1/cluster/members/{id}` on the leader: the member leaves every group.
    fn remove_member<'a>(&'a self, base: &'a str, id: u64) -> BoxFuture<'a, Result<(), String>>;
    /// `GET /status/peers?namespace=ns`: the ids of the namespace's members.
    fn member_ids<'a>(
        &'a self,
        base: &'a str,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u64>, String>>;
}

/// The ids in a `/status/peers` answer (`{"namespace", "peers": [{"id": 1, ...}]}`).
pub fn parse_peer_ids(body: &Value) -> Result<Vec<u64>, String> {
    let peers = body["peers"]
        .as_array()
        .ok_or_else(|| format!("no peers in {body}"))?;
    let mut ids = peers
        .iter()
        .map(|p| {
            p["id"]
                .as_u64()
                .ok_or_else(|| format!("peer without id: {p}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// The real admin: plain HTTP to the pod IP (members serve HTTP without TLS: `tls.http` is refused
/// for groups), short timeouts (a reconcile must not hang on a dead pod).
pub struct HttpGroupAdmin {
    http: reqwest::Client,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl HttpGroupAdmin {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        HttpGroupAdmin { http }
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Result<String, String> {
        let resp = req.send().await.map_err(|e| format!("{what}: {e}"))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{what}: {status}: {}", body.trim()))
        }
    }
}

impl Default for HttpGroupAdmin {
    fn default() -> Self {
        Self::new()
    }
}

impl GroupAdmin for HttpGroupAdmin {
    fn step_down<'a>(&'a self, base: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let url = format!("{base}/api/v1/cluster/step-down");
            self.call(self.http.post(&url), &format!("POST {url}"))
                .await
                .map(drop)
        })
    }

    fn remove_member<'a>(&'a self, base: &'a str, id: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let url = format!("{base}/api/v1/cluster/members/{id}");
            self.call(self.http.delete(&url), &format!("DELETE {url}"))
                .await
                .map(drop)
        })
    }

    fn member_ids<'a>(
        &'a self,
        base: &'a str,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u64>, String>> {
        Box::pin(async move {
            let url = format!("{base}/status/peers?namespace={namespace}");
            let body = self
                .call(self.http.get(&url), &format!("GET {url}"))
                .await?;
            let json: Value =
                serde_json::from_str(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))?;
            parse_peer_ids(&json)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peer_ids_are_read_sorted_and_bad_answers_refused() {
        let body = json!({"namespace": "a", "peers": [{"id": 3}, {"id": 1, "leader": true}]});
        assert_eq!(parse_peer_ids(&body), Ok(vec![1, 3]));
        assert!(parse_peer_ids(&json!({"error": "x"})).is_err());
        assert!(parse_peer_ids(&json!({"peers": [{"grpc_addr": "h:1"}]})).is_err());
    }
}
