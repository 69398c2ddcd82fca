//! A model of acknowledged KV writes: a load of puts over a fixed key set through the HTTP API,
//! each answer's LSN recorded, so a restored or replicated node can be compared key by key with
//! the state at any LSN.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::Error;

/// One acknowledged put: (LSN, key, value).
pub type Write = (u64, String, String);

/// Puts into one namespace of a node: key `i % keys` (`k00`, `k01`, ...), value `<i>-xxx...`.
#[derive(Clone, Debug)]
pub struct KvLoad {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub namespace: String,
    pub keys: u64,
    /// Bytes of filler after the write's number.
    pub value_len: usize,
}

impl KvLoad {
    /// The `default` namespace of the node whose HTTP API is on 127.0.0.1:`http`.
    pub fn new(http: u16, keys: u64, value_len: usize) -> KvLoad {
        KvLoad {
            base: format!("http://127.0.0.1:{http}"),
            namespace: "default".into(),
            keys,
            value_len,
        }
    }

    fn url(&self, key: &str) -> String {
        format!("{}/api/v1/{}/kv/{key}", self.base, self.namespace)
    }

    /// Puts number `first..first + n` one after the other; every one must be acknowledged.
    pub async fn write_all(&self, first: u64, n: u64) -> Result<Vec<Write>, Error> {
        let w = self.write_until_refused(first, n).await?;
        if w.len() as u64 != n {
            return Err(Error::Http {
                what: format!("{} puts into {}", n, self.base),
                detail: format!("the node stopped answering after {}", w.len()),
            });
        }
        Ok(w)
    }

    /// As [`KvLoad::write_all`], but stops early, returning what was acknowledged, when a request
    /// gets no answer (the node was killed); any answer but 200 is an error.
    pub async fn write_until_refused(&self, first: u64, n: u64) -> Result<Vec<Write>, Error> {
        let c = reqwest::Client::new();
        let mut out = Vec::new();
        for i in first..first + n {
            let key = format!("k{:02}", i % self.keys);
            let value = format!("{i:06}-{}", "x".repeat(self.value_len));
            let Ok(r) = c
                .put(self.url(&key))
                .json(&json!({"value": B64.encode(&value)}))
                .send()
                .await
            else {
                break;
            };
            let (status, v) = answer(r).await?;
            let lsn = v["lsn"].as_u64().filter(|_| status == 200);
            let Some(lsn) = lsn else {
                return Err(Error::Http {
                    what: format!("PUT {}", self.url(&key)),
                    detail: format!("{status}: {v}"),
                });
            };
            out.push((lsn, key, value));
        }
        Ok(out)
    }

    /// The namespace's last visible LSN (`GET /api/v1/{ns}/offset`).
    pub async fn lsn(&self) -> Result<u64, Error> {
        let url = format!("{}/api/v1/{}/offset", self.base, self.namespace);
        let (status, v) = call(reqwest::Client::new().get(&url)).await?;
        v["lsn"]
            .as_u64()
            .filter(|_| status == 200)
            .ok_or_else(|| Error::Http {
                what: format!("GET {url}"),
                detail: format!("{status}: {v}"),
            })
    }

    /// Every key of the model as the node has it now (absent keys left out).
    pub async fn dump(&self) -> Result<BTreeMap<String, String>, Error> {
        let c = reqwest::Client::new();
        let mut m = BTreeMap::new();
        for i in 0..self.keys {
            let key = format!("k{i:02}");
            let url = self.url(&key);
            let r = c.get(&url).send().await.map_err(|e| Error::Http {
                what: format!("GET {url}"),
                detail: e.to_string(),
            })?;
            let bad = |detail: String| Error::Http {
                what: format!("GET {url}"),
                detail,
            };
            match answer(r).await? {
                (200, v) => {
                    let bytes = v["value"]
                        .as_str()
                        .and_then(|s| B64.decode(s).ok())
                        .ok_or_else(|| bad(format!("no base64 value: {v}")))?;
                    let text = String::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
                    m.insert(key, text);
                }
                (404, _) => {}
                (status, v) => return Err(bad(format!("{status}: {v}"))),
            }
        }
        Ok(m)
    }
}

/// The state the writes give at `lsn`: each key's last value written at or below it.
pub fn state_at(writes: &[Write], lsn: u64) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (_, k, v) in writes.iter().filter(|(l, _, _)| *l <= lsn) {
        m.insert(k.clone(), v.clone());
    }
    m
}

/// Status and body of an answer (JSON, or the text as a JSON string).
pub async fn answer(r: reqwest::Response) -> Result<(u16, Value), Error> {
    let status = r.status().as_u16();
    let url = r.url().to_string();
    let text = r.text().await.map_err(|e| Error::Http {
        what: format!("reading the answer of {url}"),
        detail: e.to_string(),
    })?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Sends `r` and returns status and body (see [`answer`]).
pub async fn call(r: reqwest::RequestBuilder) -> Result<(u16, Value), Error> {
    let r = r.send().await.map_err(|e| Error::Http {
        what: "sending a request".into(),
        detail: e.to_string(),
    })?;
    answer(r).await
}
