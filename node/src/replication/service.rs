//! The gRPC `Replication` service every node serves: WAL streams with acks, latest LSN, snapshots.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::acks::AckRegistry;
use super::history;
use super::proto::replication_server::{Replication, ReplicationServer};
use super::proto::stream_wal_request::Msg;
use super::proto::wal_batch::Control;
use super::proto::{
    LatestLsnRequest, LatestLsnResponse, Resume, SnapshotChunk, SnapshotRequest, Start,
    StreamWalRequest, WalBatch,
};
use super::snapshot_serve;
use super::stream::{history_from_wire, our_history, pump, tail_status, Recheck, StreamOptions};
use crate::db::Database;
use crate::engine::Namespace;

/// Serves the namespaces of one `Database`.
#[derive(Clone)]
pub struct ReplicationService {
    db: Database,
    acks: AckRegistry,
    opts: StreamOptions,
    shutdown: CancellationToken,
    /// Cluster mode: the Raft groups, so `LatestLsn` can state this member's role.
    raft: Option<crate::raft::service::Groups>,
}

impl ReplicationService {
    /// Cancelling `shutdown` ends every open stream (so a graceful server shutdown can complete).
    pub fn new(db: Database, acks: AckRegistry, shutdown: CancellationToken) -> Self {
        Self {
            db,
            acks,
            opts: StreamOptions::default(),
            shutdown,
            raft: None,
        }
    }

    /// Cluster mode: answer `LatestLsn` with this member's Raft role and term.
    pub fn with_raft_groups(mut self, groups: crate::raft::service::Groups) -> Self {
        self.raft = Some(groups);
        self
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

/// Runs the history check for a `Start`: where the replica's history and this node's agree.
fn check_history(ns: &Namespace, start: &Start) -> Resume {
    let (ours, last) = our_history(ns);
    let replica_last = start.last_lsn;
    let agreed = if replica_last == 0 && start.history.is_empty() {
        // A replica that sends no history (empty, or from before epochs): trust its position (it may
        // be ahead of a lagging relayer: the stream then waits until this node has its next LSN).
        start.from_lsn.saturating_sub(1)
    } else {
        history::agreed_lsn(
            &history_from_wire(&start.history),
            replica_last,
            &ours,
            last,
        )
    };
    Resume {
        agreed_lsn: agreed,
        server_last_epoch: ns.epoch_at(last),
        server_last_lsn: last,
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
        let resume = check_history(&ns, &start);
        let agreed = resume.agreed_lsn;
        let diverged = agreed < start.last_lsn;
        if diverged {
            tracing::warn!(namespace = ns.name(), replica = %start.replica_id, agreed_lsn = agreed,
                replica_last_lsn = start.last_lsn, replica_last_epoch = start.last_epoch,
                last_epoch = resume.server_last_epoch, "replica's history diverges from ours");
        }
        let from = agreed + 1;
        // Only durable records leave this node (see `engine::tail`).
        let mut tail = ns.tail_with(from, self.opts.limits()).durable_only();
        let (tx, rx) = mpsc::channel(4);
        let first = WalBatch {
            records: Vec::new(),
            latest_lsn: ns.latest_lsn(),
            latest_hlc: ns.latest_hlc(),
            control: Some(Control::Resume(resume)),
        };
        if let Err(e) = tail.open().await {
            if !diverged {
                // A trimmed start LSN answers OUT_OF_RANGE right away (the follower bootstraps).
                return Err(tail_status(e));
            }
            // The replica must first hear that it diverged, then that it needs a snapshot.
            let _ = tx.send(Ok(first)).await;
            let _ = tx.send(Err(tail_status(e))).await;
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        tracing::info!(namespace = ns.name(), from_lsn = from, replica = %start.replica_id,
            latest = ns.latest_lsn(), "replica attached");
        if tx.send(Ok(first)).await.is_err() {
            return Err(Status::cancelled("replica went away"));
        }
        // A replica ahead of this lagging node: re-run the check while it waits (see `history`).
        let verify = (agreed > ns.latest_lsn()).then(|| Recheck {
            history: history_from_wire(&start.history),
            last_lsn: start.last_lsn,
        });
        tokio::spawn(pump(
            tail,
            tx,
            self.opts.heartbeat,
            self.shutdown.clone(),
            verify,
        ));

        // Acks come back on the same stream; the stream ending is the replica going away.
        let tracker = self.acks.tracker(&start.namespace);
        let replica = if start.replica_id.is_empty() {
            format!("anonymous-{from}-{}", rand::random::<u32>())
        } else {
            start.replica_id.clone()
        };
        let ns_name = start.namespace.clone();
        // Acks are read only now, after the history check: an ack counts only for (epoch, LSN) pairs
        // of this node's history, so a diverged replica's stale position never answers `acks=N`.
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(StreamWalRequest {
                        msg: Some(Msg::Ack(a)),
                    })) => {
                        let counted = tracker.record_checked(
                            &replica,
                            a.epoch,
                            a.applied_lsn,
                            ns.latest_lsn(),
                            |lsn| ns.epoch_at(lsn),
                        );
                        if !counted {
                            tracing::debug!(namespace = %ns_name, %replica, lsn = a.applied_lsn,
                                epoch = a.epoch, "ack not in this node's history; ignored");
                        }
                    }
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
        let (raft_role, raft_term) = self
            .raft
            .as_ref()
            .and_then(|g| g.get(ns.name()))
            .map(|r| {
                let m = r.metrics().borrow().clone();
                let role = match m.state {
                    openraft::ServerState::Leader => "leader",
                    openraft::ServerState::Follower => "follower",
                    openraft::ServerState::Candidate => "candidate",
                    openraft::ServerState::Learner => "learner",
                    openraft::ServerState::Shutdown => "shutdown",
                };
                (role.to_string(), m.current_term)
            })
            .unwrap_or_default();
        Ok(Response::new(LatestLsnResponse {
            lsn: ns.latest_lsn(),
            hlc: ns.latest_hlc(),
            wal_first_lsn: first.unwrap_or(0),
            raft_role,
            raft_term,
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
