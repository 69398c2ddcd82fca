//! The Raft RPC client: openraft's `RaftNetwork` over gRPC (`proto/raft.proto`).
//!
//! One tonic `Channel` per peer address, shared by every namespace group of the process; each
//! request names its namespace and carries openraft's request as bincode.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use parking_lot::{Mutex, RwLock};
use prometheus::{Histogram, IntCounter};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::durable::Durability;
use super::link::{Hello, Link, LinkError};
use super::proto::raft_client::RaftClient;
use super::proto::RaftRequest;
use super::{Member, TypeConfig};
use crate::replication::tls::ClientTls;

/// Node id -> HTTP address of the members, learned from the metadata every Raft RPC and every
/// answer carries (`group::NODE_HEADER`, `group::HTTP_HEADER`); followers proxy writes with it.
#[derive(Clone, Default)]
pub struct Directory(Arc<RwLock<HashMap<u64, String>>>);

impl Directory {
    pub fn get(&self, id: u64) -> Option<String> {
        self.0.read().get(&id).cloned()
    }

    pub fn insert(&self, id: u64, http: String) {
        self.0.write().insert(id, http);
    }

    /// Records the sender named in `md`, if it names itself.
    pub fn learn(&self, md: &MetadataMap) {
        let id = md
            .get(super::group::NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let http = md
            .get(super::group::HTTP_HEADER)
            .and_then(|v| v.to_str().ok());
        if let (Some(id), Some(http)) = (id, http) {
            self.note(id, http);
        }
    }

    /// Records `http` as member `id`'s address (an empty one says nothing).
    pub fn note(&self, id: u64, http: &str) {
        if !http.is_empty() && self.0.read().get(&id).map(String::as_str) != Some(http) {
            self.insert(id, http.to_string());
        }
    }
}

/// The shared channels to the peers, keyed by `host:port`.
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
    tls: Option<ClientTls>,
    /// Sent on every RPC and answer (`group::NODE_HEADER`, `group::HTTP_HEADER`).
    node_id: MetadataValue<Ascii>,
    http: Option<MetadataValue<Ascii>>,
    /// The same, as said on an AppendEntries link (`link.rs`).
    pub hello: Hello,
    pub directory: Directory,
}

impl Peers {
    /// With `tls`, peers are reached over `https` with the node's gRPC TLS material.
    pub fn new(
        tls: Option<ClientTls>,
        node_id: u64,
        http: String,
        directory: Directory,
    ) -> Arc<Peers> {
        Arc::new(Peers {
            channels: Mutex::new(HashMap::new()),
            tls,
            node_id: node_id.into(),
            http: http.parse().ok(),
            hello: Hello {
                node: node_id,
                http,
            },
            directory,
        })
    }

    /// Names this member in `md` (requests and answers alike).
    pub fn introduce(&self, md: &mut MetadataMap) {
        md.insert(super::group::NODE_HEADER, self.node_id.clone());
        if let Some(http) = &self.http {
            md.insert(super::group::HTTP_HEADER, http.clone());
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        if let Some(c) = self.channels.lock().get(addr) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10));
        if let Some(tls) = &self.tls {
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
            ep = ep.tls_config(tls.fresh().to_tonic(host))?;
        }
        let c = ep.connect_lazy();
        self.channels.lock().insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

impl Peers {
    /// A client for the member at `addr` and a request for `namespace` carrying `payload`, naming
    /// this member and bounded by `timeout`.
    fn call(
        &self,
        addr: &str,
        namespace: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<(RaftClient<Channel>, tonic::Request<RaftRequest>), String> {
        let channel = self.channel(addr).map_err(|e| e.to_string())?;
        let mut request = tonic::Request::new(RaftRequest {
            namespace: namespace.to_string(),
            payload,
        });
        request.set_timeout(timeout);
        self.introduce(request.metadata_mut());
        Ok((RaftClient::new(channel), request))
    }

    /// Asks the member at `addr` to campaign for `namespace`'s group now (leadership handoff).
    pub async fn elect(&self, addr: &str, namespace: &str) -> Result<(), String> {
        let (mut client, request) =
            self.call(addr, namespace, Vec::new(), Duration::from_secs(2))?;
        client
            .elect(request)
            .await
            .map(|_| ())
            .map_err(|s| format!("{addr} {}: {}", s.code(), s.message()))
    }

    /// Asks the member at `addr` whether it would vote for this one in `namespace`'s group.
    pub async fn pre_vote(
        &self,
        addr: &str,
        namespace: &str,
        ask: &super::prevote::Ask,
        timeout: Duration,
    ) -> Result<super::prevote::Answer, String> {
        let payload = bincode::serialize(ask).map_err(|e| e.to_string())?;
        let (mut client, request) = self.call(addr, namespace, payload, timeout)?;
        let reply = tokio::time::timeout(timeout, client.pre_vote(request))
            .await
            .map_err(|_| format!("{addr}: no answer within {timeout:?}"))?
            .map_err(|s| format!("{addr} {}: {}", s.code(), s.message()))?;
        bincode::deserialize(&reply.into_inner().payload).map_err(|e| format!("{addr}: {e}"))
    }

    /// Asks the member at `addr` to add `body` (`{"id","grpc_addr","http_addr"}`) to `namespace`'s
    /// group; waits at most `timeout` (the add waits until the new member caught up).
    pub async fn join(
        &self,
        addr: &str,
        namespace: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<String, String> {
        let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let (mut client, request) = self.call(addr, namespace, payload, timeout)?;
        let reply = client
            .join(request)
            .await
            .map_err(|s| format!("{addr} {}: {}", s.code(), s.message()))?;
        Ok(String::from_utf8_lossy(&reply.into_inner().payload).into_owned())
    }
}

/// openraft's network factory for one namespace group.
#[derive(Clone)]
pub struct Network {
    pub namespace: String,
    pub peers: Arc<Peers>,
    /// This member's durable log: the commit index it sends never passes it (`durable.rs`).
    pub durable: Durability,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &Member) -> PeerClient {
        PeerClient {
            namespace: self.namespace.clone(),
            target,
            addr: node.grpc.clone(),
            peers: self.peers.clone(),
            durable: self.durable.clone(),
            link: Link::default(),
            metrics: AppendMetrics::new(&self.namespace),
        }
    }
}

/// One peer as seen by one group.
pub struct PeerClient {
    namespace: String,
    target: u64,
    addr: String,
    peers: Arc<Peers>,
    durable: Durability,
    /// AppendEntries go over it (with gRPC's TLS when on) unless the peer refused it.
    link: Link,
    metrics: AppendMetrics,
}

/// Why a call did not produce the peer's answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CallError(String);

type RpcErr<E> = RPCError<u64, Member, RaftError<u64, E>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        kind: Kind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let channel = self
            .peers
            .channel(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let mut request = tonic::Request::new(RaftRequest {
            namespace: self.namespace.clone(),
            payload,
        });
        request.set_timeout(option.hard_ttl());
        self.peers.introduce(request.metadata_mut());
        let reply = match kind {
            Kind::Append => client.append_entries(request).await,
            Kind::Vote => client.vote(request).await,
            Kind::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|s| {
            let e = CallError(format!("{} {}: {}", self.addr, s.code(), s.message()));
            match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        self.peers.directory.learn(reply.metadata());
        let answer: Result<Resp, RaftError<u64, E>> =
            bincode::deserialize(&reply.into_inner().payload)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// How long an AppendEntries waits for the leader's own fsync of the commit index it carries.
const COMMIT_PATIENCE: Duration = Duration::from_millis(20);

/// What carried an AppendEntries (the `transport` label of its metrics).
#[derive(Clone, Copy)]
enum Transport {
    Link = 0,
    Grpc = 1,
}

/// One (group, peer)'s AppendEntries metrics, indexed by [`Transport`], resolved once: the labels
/// are looked up at client creation, not on every call of the write path.
struct AppendMetrics {
    sent: [IntCounter; 2],
    rtt: [Histogram; 2],
}

impl AppendMetrics {
    fn new(namespace: &str) -> AppendMetrics {
        let sent = |t| crate::metrics::RAFT_APPENDS_SENT.with_label_values(&[namespace, t]);
        let rtt = |t| crate::metrics::RAFT_APPEND_RTT_SECONDS.with_label_values(&[namespace, t]);
        AppendMetrics {
            sent: [sent("link"), sent("grpc")],
            rtt: [rtt("link"), rtt("grpc")],
        }
    }
}

/// Which RPC.
#[derive(Clone, Copy)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl PeerClient {
    /// An AppendEntries over the link, or over gRPC when the peer refuses it (for a while, after
    /// a refusal); says which carried it.
    async fn append(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> (
        Transport,
        Result<AppendEntriesResponse<u64>, RpcErr<openraft::error::Infallible>>,
    ) {
        if self.link.usable() {
            self.metrics.sent[Transport::Link as usize].inc();
            let directory = &self.peers.directory;
            let answer = self
                .link
                .call(
                    &self.addr,
                    self.peers.tls.as_ref(),
                    &self.peers.hello,
                    |h| directory.note(h.node, &h.http),
                    &self.namespace,
                    rpc,
                    option.hard_ttl(),
                )
                .await;
            let answer: Result<AppendEntriesResponse<u64>, RaftError<u64>> = match answer {
                Ok(answer) => answer,
                Err(LinkError::Unreachable(e)) => {
                    let e = RPCError::Unreachable(Unreachable::new(&CallError(e)));
                    return (Transport::Link, Err(e));
                }
                Err(LinkError::Invalid(e)) => {
                    let e = RPCError::Network(NetworkError::new(&CallError(e)));
                    return (Transport::Link, Err(e));
                }
                // An older member: this call and the next ones for a while go over gRPC.
                Err(LinkError::Refused(_)) => return self.append_grpc(rpc, option).await,
            };
            let answer =
                answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)));
            return (Transport::Link, answer);
        }
        self.append_grpc(rpc, option).await
    }

    async fn append_grpc(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> (
        Transport,
        Result<AppendEntriesResponse<u64>, RpcErr<openraft::error::Infallible>>,
    ) {
        self.metrics.sent[Transport::Grpc as usize].inc();
        (Transport::Grpc, self.call(Kind::Append, rpc, option).await)
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr<openraft::error::Infallible>> {
        // Gate 2 of `durable.rs`. The leader's fsync of a committed entry started before the
        // entry could commit, so the wait is short; a lower commit index is only learnt later.
        rpc.leader_commit = self
            .durable
            .settle(rpc.leader_commit, COMMIT_PATIENCE)
            .await;
        let started = (!rpc.entries.is_empty()).then(Instant::now);
        let (transport, answer) = self.append(&rpc, &option).await;
        // Round trips of entries only (heartbeats carry no fsync); a failed call says nothing.
        if let (Some(t), Ok(_)) = (started, &answer) {
            self.metrics.rtt[transport as usize].observe(t.elapsed().as_secs_f64());
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        self.call(Kind::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr<openraft::error::Infallible>> {
        self.call(Kind::Vote, &rpc, &option).await
    }
}
