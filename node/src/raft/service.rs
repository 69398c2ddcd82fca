//! The Raft RPC server: `unisondb.raft.v1.Raft` on the node's gRPC listener, dispatching each
//! request to its namespace's group.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;
use tonic::{Request, Response, Status};

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
}

impl RaftService {
    pub fn new(groups: Groups, peers: Arc<Peers>) -> RaftService {
        RaftService { groups, peers }
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

    fn group(&self, ns: &str) -> Result<RaftHandle, Status> {
        self.groups.get(ns).ok_or_else(|| {
            Status::unavailable(format!("no Raft group for namespace {ns:?} runs here"))
        })
    }
}

fn decode<T: serde::de::DeserializeOwned>(req: &RaftRequest) -> Result<T, Status> {
    bincode::deserialize(&req.payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft request: {e}")))
}

fn reply<T: Serialize>(answer: &T) -> Result<Response<RaftReply>, Status> {
    let payload = bincode::serialize(answer)
        .map_err(|e| Status::internal(format!("Raft answer does not encode: {e}")))?;
    Ok(Response::new(RaftReply { payload }))
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.learn(&request);
        let req = request.into_inner();
        let raft = self.group(&req.namespace)?;
        let answer = raft.append_entries(decode(&req)?).await;
        self.reply(&answer)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.learn(&request);
        let req = request.into_inner();
        let raft = self.group(&req.namespace)?;
        let answer = raft.vote(decode(&req)?).await;
        self.reply(&answer)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        let raft = self.group(&req.namespace)?;
        let answer = raft.install_snapshot(decode(&req)?).await;
        self.reply(&answer)
    }
}
