//! The Raft RPC server: `unisondb.raft.v1.Raft` on the node's gRPC listener, dispatching each
//! request to its namespace's group.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::group::Cluster;
use super::members::{self, Change};
use super::network::Peers;
use super::proto::raft_server::{Raft, RaftServer};
use super::proto::{RaftReply, RaftRequest};
use super::RaftHandle;

/// The groups this process runs, by namespace (filled once they start).
#[derive(Clone, Default)]
pub struct Groups(Arc<RwLock<HashMap<String, RaftHandle>>>);

impl Groups {
    pub fn insert(&self, namespace: &str, raft: RaftHandle) {
        self.0.write().insert(namespace.to_string(), raft);
    }

    pub fn get(&self, namespace: &str) -> Option<RaftHandle> {
        self.0.read().get(namespace).cloned()
    }

    pub fn all(&self) -> Vec<(String, RaftHandle)> {
        let mut v: Vec<_> = self
            .0
            .read()
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// The tonic service.
#[derive(Clone)]
pub struct RaftService {
    groups: Groups,
    /// Learns senders from requests and names this member in answers.
    peers: Arc<Peers>,
    /// For membership requests (`Join`), which run the cluster-wide change path.
    cluster: Weak<Cluster>,
}

impl RaftService {
    pub fn new(cluster: &Arc<Cluster>) -> RaftService {
        RaftService {
            groups: cluster.groups.clone(),
            peers: cluster.peers.clone(),
            cluster: Arc::downgrade(cluster),
        }
    }

    /// Records the sender's HTTP address (the leader's, for followers that proxy writes).
    fn learn<T>(&self, request: &Request<T>) {
        self.peers.directory.learn(request.metadata());
    }

    /// The answer, naming this member (so the leader learns its followers' addresses too).
    fn reply<T: Serialize>(&self, answer: &T) -> Result<Response<RaftReply>, Status> {
        let mut r = reply(answer)?;
        self.peers.introduce(r.metadata_mut());
        Ok(r)
    }

    /// The groups it dispatches to (the replication service states roles from them).
    pub fn groups(&self) -> Groups {
        self.groups.clone()
    }

    pub fn into_server(self) -> RaftServer<RaftService> {
        RaftServer::new(self)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }

    /// An AppendEntries (bincode) for `ns`'s group, answered in bincode: the gRPC call and the
    /// link (`link.rs`) share it.
    pub(super) async fn append_payload(&self, ns: &str, payload: &[u8]) -> Result<Vec<u8>, Status> {
        let raft = self.group(ns)?;
        let req: openraft::raft::AppendEntriesRequest<super::TypeConfig> = decode(payload)?;
        let timer = (!req.entries.is_empty()).then(|| {
            crate::metrics::RAFT_APPEND_SERVE_SECONDS
                .with_label_values(&[ns])
                .start_timer()
        });
        let answer = raft.append_entries(req).await;
        drop(timer);
        encode(&answer)
    }

    /// Records a member that introduced itself on a link.
    pub(super) fn met(&self, node: u64, http: &str) {
        self.peers.directory.note(node, http);
    }

    /// This member, as it introduces itself on a link.
    pub(super) fn hello(&self) -> super::link::Hello {
        self.peers.hello.clone()
    }

    fn group(&self, ns: &str) -> Result<RaftHandle, Status> {
        self.groups.get(ns).ok_or_else(|| {
            Status::unavailable(format!("no Raft group for namespace {ns:?} runs here"))
        })
    }
}

/// `grpc-timeout` (`<digits><unit>`, gRPC over HTTP/2) as a duration.
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    bincode::deserialize(payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft request: {e}")))
}

fn encode<T: Serialize>(answer: &T) -> Result<Vec<u8>, Status> {
    bincode::serialize(answer)
        .map_err(|e| Status::internal(format!("Raft answer does not encode: {e}")))
}

fn reply<T: Serialize>(answer: &T) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(RaftReply {
        payload: encode(answer)?,
    }))
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.learn(&request);
        let req = request.into_inner();
        let mut r = Response::new(RaftReply {
            payload: self.append_payload(&req.namespace, &req.payload).await?,
        });
        self.peers.introduce(r.metadata_mut());
        Ok(r)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.learn(&request);
        let req = request.into_inner();
        let raft = self.group(&req.namespace)?;
        if let Some(c) = self.cluster.upgrade() {
            if c.blank_starts.paused(&req.namespace) {
                return Err(Status::unavailable(
                    "this member started without Raft state (a new or lost volume) and votes in \
                     no election for two election timeouts",
                ));
            }
        }
        let answer = raft.vote(decode(&req.payload)?).await;
        self.reply(&answer)
    }

    async fn elect(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.learn(&request);
        let req = request.into_inner();
        let raft = self.group(&req.namespace)?;
        tracing::info!(namespace = %req.namespace, "the leader hands off: campaigning now");
        raft.trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(format!("Raft stopped: {e}")))?;
        self.reply(&())
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        let raft = self.group(&req.namespace)?;
        let cluster = self
            .cluster
            .upgrade()
            .ok_or_else(|| Status::unavailable("shutting down"))?;
        let ns = cluster
            .prevote_targets
            .get(&req.namespace)
            .ok_or_else(|| Status::unavailable("the group is starting"))?;
        let ask: super::prevote::Ask = decode(&req.payload)?;
        let answer = super::prevote::answer(&cluster, &ns, &raft, &ask).await;
        self.reply(&answer)
    }

    async fn join(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.learn(&request);
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .unwrap_or(Duration::from_secs(30));
        let req = request.into_inner();
        let cluster = self
            .cluster
            .upgrade()
            .ok_or_else(|| Status::unavailable("shutting down"))?;
        let v: serde_json::Value = serde_json::from_slice(&req.payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable join request: {e}")))?;
        let (Some(id), Some(grpc)) = (v["id"].as_u64(), v["grpc_addr"].as_str()) else {
            return Err(Status::invalid_argument(
                "a join request needs id and grpc_addr",
            ));
        };
        let member = super::Member {
            grpc: grpc.to_string(),
            http: v["http_addr"].as_str().unwrap_or_default().to_string(),
        };
        // Answer a little before the caller gives up.
        let deadline =
            tokio::time::Instant::now() + timeout.saturating_sub(Duration::from_millis(500));
        let report = members::run(
            &cluster,
            vec![req.namespace.clone()],
            Change::Add { id, member },
            deadline,
            false,
        )
        .await;
        if let Some(o) = report.done.get(&req.namespace) {
            let mut r = Response::new(RaftReply {
                payload: serde_json::to_vec(o).unwrap_or_default(),
            });
            self.peers.introduce(r.metadata_mut());
            return Ok(r);
        }
        let why = report
            .pending
            .values()
            .chain(report.refused.values())
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        Err(if report.refused.is_empty() {
            Status::deadline_exceeded(why)
        } else {
            Status::failed_precondition(why)
        })
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        let raft = self.group(&req.namespace)?;
        let answer = raft.install_snapshot(decode(&req.payload)?).await;
        self.reply(&answer)
    }
}
