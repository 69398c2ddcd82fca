//! The gRPC `Replication` service every node serves: WAL streams with acks, latest LSN, snapshots.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::acks::AckRegistry;
use super::proto::replication_server::{Replication, ReplicationServer};
use super::proto::stream_wal_request::Msg;
use super::proto::{
    LatestLsnRequest, LatestLsnResponse, SnapshotChunk, SnapshotRequest, StreamWalRequest, WalBatch,
};
use super::snapshot_serve;
use super::stream::{pump, tail_status, StreamOptions};
use crate::db::Database;
use crate::engine::Namespace;

/// Serves the namespaces of one `Database`.
#[derive(Clone)]
pub struct ReplicationService {
    db: Database,
    acks: AckRegistry,
    opts: StreamOptions,
    shutdown: CancellationToken,
}

impl ReplicationService {
    /// Cancelling `shutdown` ends every open stream (so a graceful server shutdown can complete).
    pub fn new(db: Database, acks: AckRegistry, shutdown: CancellationToken) -> Self {
        Self {
            db,
            acks,
            opts: StreamOptions::default(),
            shutdown,
        }
    }

    pub fn with_stream_options(mut self, opts: StreamOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The tonic server wrapper (add it to a `Server` router).
    pub fn into_server(self) -> ReplicationServer<Self> {
        ReplicationServer::new(self)
    }

    fn namespace(&self, name: &str) -> Result<Namespace, Status> {
        self.db
            .get(name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("unknown namespace {name:?}")))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Replication for ReplicationService {
    type StreamWalStream = BoxStream<WalBatch>;
    type StreamSnapshotStream = BoxStream<SnapshotChunk>;

    async fn stream_wal(
        &self,
        request: Request<Streaming<StreamWalRequest>>,
    ) -> Result<Response<Self::StreamWalStream>, Status> {
        let mut inbound = request.into_inner();
        let start = match inbound.message().await? {
            Some(StreamWalRequest {
                msg: Some(Msg::Start(s)),
            }) => s,
            _ => return Err(Status::invalid_argument("first message must be Start")),
        };
        let ns = self.namespace(&start.namespace)?;
        let from = start.from_lsn.max(1);
        let mut tail = ns.tail_with(from, self.opts.limits());
        // A trimmed start LSN answers OUT_OF_RANGE right away (the follower bootstraps).
        tail.open().await.map_err(tail_status)?;
        tracing::info!(namespace = ns.name(), from_lsn = from, replica = %start.replica_id,
            latest = ns.latest_lsn(), "replica attached");

        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(pump(tail, tx, self.opts.heartbeat, self.shutdown.clone()));

        // Acks come back on the same stream; the stream ending is the replica going away.
        let tracker = self.acks.tracker(&start.namespace);
        let replica = if start.replica_id.is_empty() {
            format!("anonymous-{from}-{}", rand::random::<u32>())
        } else {
            start.replica_id.clone()
        };
        let ns_name = start.namespace.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(StreamWalRequest {
                        msg: Some(Msg::Ack(a)),
                    })) => tracker.record(&replica, a.applied_lsn),
                    Ok(Some(_)) => {
                        tracing::warn!(namespace = %ns_name, %replica, "unexpected message after Start");
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(namespace = %ns_name, %replica, %status, "replica stream ended");
                        break;
                    }
                }
            }
            tracker.disconnected(&replica);
            tracing::info!(namespace = %ns_name, %replica, "replica detached");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn latest_lsn(
        &self,
        request: Request<LatestLsnRequest>,
    ) -> Result<Response<LatestLsnResponse>, Status> {
        let ns = self.namespace(&request.get_ref().namespace)?;
        let first = ns.wal_first_lsn();
        Ok(Response::new(LatestLsnResponse {
            lsn: ns.latest_lsn(),
            hlc: ns.latest_hlc(),
            wal_first_lsn: first.unwrap_or(0),
        }))
    }

    async fn stream_snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::StreamSnapshotStream>, Status> {
        let ns = self.namespace(&request.get_ref().namespace)?;
        let rx = snapshot_serve::serve(ns).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
