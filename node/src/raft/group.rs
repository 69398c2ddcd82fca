//! Running the groups of a process: one `openraft::Raft` per served namespace, the proposer that
//! turns a member's `write` into `client_write`, the bootstrap rule, and the figures `/stats`,
//! `/status/*` and metrics show.
//!
//! **Bootstrap**: a group starts when its member with the lowest node id finds itself uninitialized
//! (no log, no vote) after waiting two maximum election timeouts without hearing from a leader; it
//! then calls `initialize` with every configured member. A member that already has state never
//! initializes; one whose data was lost joins the existing group as an empty follower (the leader
//! keeps the whole log, so it catches up by replication).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use tokio_util::sync::CancellationToken;

use super::network::{Directory, Network, Peers};
use super::service::Groups;
use super::store::{LogStore, StateMachine};
use super::{Member, RaftHandle};
use crate::config::Config;
use crate::engine::{Commit, EngineError, Namespace, Proposer};
use crate::metrics;
use crate::storage::batch::Op;

/// gRPC metadata naming the sender's node id and HTTP address on every Raft RPC, so members learn
/// where to proxy writes (the leader's HTTP API) from the heartbeats themselves.
pub const NODE_HEADER: &str = "x-unisondb-node";
pub const HTTP_HEADER: &str = "x-unisondb-http";

/// The resolved `cluster` section.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub node_id: u64,
    pub members: BTreeMap<u64, Member>,
    /// This member's HTTP address for the others.
    pub advertise_http: String,
    pub raft: Arc<openraft::Config>,
}

impl ClusterSettings {
    /// `None` without a `cluster` section, or with one member: a single hub.
    pub fn from_config(cfg: &Config) -> Result<Option<ClusterSettings>, String> {
        let Some(c) = &cfg.cluster else {
            return Ok(None);
        };
        let host = hostname();
        let node_id = c.resolve_node_id(&host)?;
        let http_port = cfg
            .http
            .listen
            .rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        let mut members = BTreeMap::new();
        for (id, grpc) in c.members()? {
            let host = grpc.rsplit_once(':').map(|(h, _)| h).unwrap_or(&grpc);
            members.insert(
                id,
                Member {
                    http: format!("{host}:{http_port}"),
                    grpc,
                },
            );
        }
        if members.len() == 1 {
            // A group of one is a single hub: exactly as without the section.
            tracing::warn!("cluster.peers names one member: running as a single hub (no Raft)");
            return Ok(None);
        }
        let Some(me) = members.get_mut(&node_id) else {
            return Err(format!(
                "cluster: this member's id {node_id} is not in cluster.peers"
            ));
        };
        if !c.advertise_http.is_empty() {
            me.http = c.advertise_http.clone();
        }
        let advertise_http = me.http.clone();
        let raft = openraft::Config {
            cluster_name: "unisondb".into(),
            heartbeat_interval: c.heartbeat_ms,
            election_timeout_min: c.election_timeout_ms,
            election_timeout_max: c.election_timeout_ms * 2,
            // Snapshots let the log (the WAL) be purged; a member behind the purged log gets one.
            snapshot_policy: match c.snapshot_every_entries {
                0 => SnapshotPolicy::Never,
                n => SnapshotPolicy::LogsSinceLast(n),
            },
            max_in_snapshot_log_to_keep: c.keep_log_entries,
            max_payload_entries: 512,
            // Members campaign through the pre-vote (`prevote.rs`), not openraft's timer.
            enable_elect: false,
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("cluster: {e}"))?;
        Ok(Some(ClusterSettings {
            node_id,
            members,
            advertise_http,
            raft: Arc::new(raft),
        }))
    }

    /// Whether this member bootstraps groups (the lowest id).
    pub fn is_bootstrapper(&self) -> bool {
        self.members.keys().next() == Some(&self.node_id)
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        })
}

/// Everything cluster mode shares in a process: settings, groups, peers, the HTTP directory.
pub struct Cluster {
    pub settings: ClusterSettings,
    pub groups: Groups,
    pub peers: Arc<Peers>,
    /// Node id -> HTTP address, learned from RPC metadata (starts from the configured guesses).
    pub directory: Directory,
    /// Namespaces whose leader is handing off: new proposals are refused meanwhile.
    paused: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Groups whose elections this member stays out of for a while (after handing off).
    pub election_pauses: super::prevote::Pauses,
    /// The member namespaces whose pre-votes this member answers.
    pub prevote_targets: super::prevote::Targets,
    /// Groups this member started without any Raft state for: it votes in none of their elections
    /// for two maximum election timeouts, so a member whose volume was lost cannot vote twice in a
    /// term it forgot (the elections of that term have ended by then).
    pub blank_starts: super::prevote::Pauses,
    /// The bearer token of `/api/` (this member's own, which every member shares), for calls to
    /// the other members' HTTP API (auto-join).
    pub auth_token: Option<String>,
    http: std::sync::OnceLock<reqwest::Client>,
}

impl Cluster {
    pub fn new(settings: ClusterSettings, cfg: &Config) -> Result<Arc<Cluster>, String> {
        let tls = crate::replication::tls::ClientTls::from_files(
            &cfg.grpc.tls_ca_file,
            &cfg.grpc.tls_cert_file,
            &cfg.grpc.tls_key_file,
        )
        .map_err(|e| format!("cluster: gRPC TLS: {e}"))?;
        let directory = Directory::default();
        for (id, m) in &settings.members {
            directory.insert(*id, m.http.clone());
        }
        let auth_token = cfg.auth_token().map_err(|e| format!("cluster: {e}"))?;
        Ok(Arc::new(Cluster {
            paused: Default::default(),
            election_pauses: Default::default(),
            prevote_targets: Default::default(),
            blank_starts: Default::default(),
            auth_token,
            http: Default::default(),
            peers: Peers::new(
                tls,
                settings.node_id,
                settings.advertise_http.clone(),
                directory.clone(),
            ),
            settings,
            groups: Groups::default(),
            directory,
        }))
    }

    /// Refuses (`true`) or accepts again new proposals on `ns` (leadership handoff).
    pub fn pause_writes(&self, ns: &str, pause: bool) {
        let mut p = self.paused.lock();
        if pause {
            p.insert(ns.to_string());
        } else {
            p.remove(ns);
        }
    }

    fn writes_paused(&self, ns: &str) -> bool {
        self.paused.lock().contains(ns)
    }

    /// Whether this member stays out of `ns`'s elections now (it handed off its leadership).
    pub fn elections_paused(&self, ns: &str) -> bool {
        self.election_pauses.paused(ns)
    }

    /// The HTTP client for calls to other members (proxying, forwarding, auto-join).
    pub fn http_client(&self) -> reqwest::Client {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .build()
                    .unwrap_or_default()
            })
            .clone()
    }

    /// The HTTP address of member `id`.
    pub fn http_of(&self, id: u64) -> Option<String> {
        self.directory.get(id)
    }

    /// Starts the group of `ns` over its storage halves; the proposer is installed on `ns`.
    pub async fn start_group(
        self: &Arc<Self>,
        ns: &Namespace,
        log: LogStore,
        sm: StateMachine,
        shutdown: CancellationToken,
    ) -> Result<RaftHandle, String> {
        let name = ns.name().to_string();
        if log.is_blank() {
            let hold = Duration::from_millis(self.settings.raft.election_timeout_max * 2);
            self.blank_starts.pause(&name, hold);
        }
        let network = Network {
            namespace: name.clone(),
            peers: self.peers.clone(),
            durable: super::durable::Durability::new(ns.clone()),
        };
        let log = log.for_node(self.settings.node_id);
        let raft = openraft::Raft::new(
            self.settings.node_id,
            self.settings.raft.clone(),
            network,
            log,
            sm,
        )
        .await
        .map_err(|e| format!("namespace {name}: Raft did not start: {e}"))?;
        ns.set_proposer(Arc::new(RaftProposer {
            raft: raft.clone(),
            batcher: super::batcher::Batcher::start(raft.clone(), ns.clone()),
            cluster: Arc::downgrade(self),
            rt: tokio::runtime::Handle::current(),
        }));
        self.groups.insert(&name, raft.clone());
        self.prevote_targets.insert(ns);
        tokio::spawn(super::prevote::run(
            Arc::downgrade(self),
            ns.clone(),
            raft.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(watch_metrics(name.clone(), raft.clone(), shutdown.clone()));
        tokio::spawn(super::join::auto_join(
            name.clone(),
            raft.clone(),
            Arc::downgrade(self),
            shutdown.clone(),
        ));
        if self.settings.is_bootstrapper() {
            tokio::spawn(bootstrap(
                name,
                raft.clone(),
                self.settings.clone(),
                shutdown,
            ));
        }
        Ok(raft)
    }

    /// Hands off the leadership of every group this member leads (SIGTERM), within `within`.
    pub async fn step_down_all(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let groups = self.groups.all();
        let tasks = groups.iter().map(|(name, raft)| async move {
            match super::handoff::step_down(self, name, raft, None, deadline).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(namespace = %name, error = %e, "leadership handoff failed")
                }
            }
        });
        futures::future::join_all(tasks).await;
    }

    /// Stops every group (at shutdown, before the store closes).
    pub async fn shutdown(&self) {
        for (name, raft) in self.groups.all() {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(namespace = %name, error = %e, "Raft group did not stop cleanly");
            }
        }
    }
}

/// The bootstrap rule (module docs).
async fn bootstrap(
    name: String,
    raft: RaftHandle,
    settings: ClusterSettings,
    shutdown: CancellationToken,
) {
    let wait = Duration::from_millis(settings.raft.election_timeout_max * 2);
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.cancelled() => return,
    }
    match raft.is_initialized().await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(namespace = %name, error = %e, "cannot tell whether the group exists");
            return;
        }
    }
    if raft.metrics().borrow().current_leader.is_some() {
        return;
    }
    tracing::info!(namespace = %name, members = ?settings.members.keys().collect::<Vec<_>>(),
        "no Raft state here and no leader heard: initializing the group");
    if let Err(e) = raft.initialize(settings.members.clone()).await {
        tracing::warn!(namespace = %name, error = %e, "group initialization refused");
    }
}

/// Keeps the Raft metrics of one group up to date.
async fn watch_metrics(name: String, raft: RaftHandle, shutdown: CancellationToken) {
    let l = &[name.as_str()];
    let term = metrics::RAFT_TERM.with_label_values(l);
    let commit = metrics::RAFT_COMMIT_INDEX.with_label_values(l);
    let leader = metrics::RAFT_IS_LEADER.with_label_values(l);
    let changes = metrics::RAFT_LEADER_CHANGES.with_label_values(l);
    let mut rx = raft.metrics();
    let lease = raft.config().election_timeout_max;
    let mut last_leader = None;
    loop {
        {
            let m = rx.borrow_and_update();
            term.set(m.current_term as i64);
            commit.set(m.last_applied.map(|l| l.index as i64 + 1).unwrap_or(0));
            // A leader that lost its majority is not one for routing (Service labels).
            leader.set(i64::from(leads_with_quorum(&m, lease)));
            if m.current_leader != last_leader {
                if m.current_leader.is_some() {
                    changes.inc();
                }
                last_leader = m.current_leader;
            }
            if let Some(rep) = &m.replication {
                for (peer, matched) in rep {
                    metrics::RAFT_PEER_MATCH_INDEX
                        .with_label_values(&[name.as_str(), &peer.to_string()])
                        .set(matched.map(|l| l.index as i64 + 1).unwrap_or(0));
                }
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Leads and heard from a majority within the last `lease` ms: a leader cut off from its
/// majority cannot commit, and is no leader for routing.
fn leads_with_quorum(m: &openraft::RaftMetrics<u64, Member>, lease: u64) -> bool {
    m.state == ServerState::Leader && m.millis_since_quorum_ack.is_none_or(|t| t <= lease)
}

/// A member's `Namespace::write`: propose through the group and wait until applied here.
struct RaftProposer {
    raft: RaftHandle,
    /// Concurrent writes become one entry (`batcher.rs`).
    batcher: super::batcher::Batcher,
    cluster: std::sync::Weak<Cluster>,
    rt: tokio::runtime::Handle,
}

impl RaftProposer {
    /// Refuses a write this member cannot commit now (handing off, or cut off from its majority).
    fn admit(&self, ns: &Namespace) -> Result<(), EngineError> {
        if let Some(c) = self.cluster.upgrade() {
            if c.writes_paused(ns.name()) {
                return Err(EngineError::NotLeader {
                    name: ns.name().to_string(),
                    reason: "the leader is handing off its leadership; retry shortly".into(),
                });
            }
        }
        // A leader cut off from its majority cannot commit; say so at once instead of letting the
        // client wait (the majority elects another leader within about one lease).
        let m = self.raft.metrics();
        let m = m.borrow();
        let lease = self.raft.config().election_timeout_max;
        if m.state == ServerState::Leader && !leads_with_quorum(&m, lease) {
            return Err(EngineError::NotLeader {
                name: ns.name().to_string(),
                reason: format!(
                    "this member leads but has not heard from a majority of the group for {} ms \
                     (cut off?); retry shortly",
                    m.millis_since_quorum_ack.unwrap_or_default()
                ),
            });
        }
        Ok(())
    }

    /// Queues `ops` in the batcher: the answer arrives on the receiver.
    fn submit(
        &self,
        ns: &Namespace,
        ops: Vec<Op>,
    ) -> Result<tokio::sync::oneshot::Receiver<super::batcher::Outcome>, EngineError> {
        self.admit(ns)?;
        self.batcher
            .submit(ops)
            .ok_or_else(|| EngineError::NotLeader {
                name: ns.name().to_string(),
                reason: "the Raft group is stopping".into(),
            })
    }

    /// The commit, or why the write was not committed, from the batcher's answer.
    fn outcome(
        &self,
        ns: &Namespace,
        result: Result<super::batcher::Outcome, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<Commit, EngineError> {
        let refused = match result {
            Ok(Ok(applied)) => {
                return Ok(Commit {
                    lsn: applied.lsn,
                    hlc: applied.hlc,
                })
            }
            Ok(Err(r)) => r,
            Err(_) => super::batcher::Refused::Encode("the Raft group stopped".into()),
        };
        let name = ns.name().to_string();
        Err(match refused {
            super::batcher::Refused::Encode(reason) => EngineError::NotLeader {
                name,
                reason: format!("the write was not proposed: {reason}"),
            },
            super::batcher::Refused::Raft(e) => match e.as_ref() {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    let at = f
                        .leader_id
                        .and_then(|id| self.cluster.upgrade().and_then(|c| c.http_of(id)));
                    EngineError::NotLeader {
                        name,
                        reason: match (f.leader_id, at) {
                            (Some(id), Some(http)) => format!(
                                "this member is not the leader; the leader is node {id} at {http}"
                            ),
                            _ => "no leader now (election in progress); retry shortly".into(),
                        },
                    }
                }
                e => EngineError::NotLeader {
                    name,
                    reason: format!("the write was not committed: {e}"),
                },
            },
        })
    }
}

impl Proposer for RaftProposer {
    fn propose(&self, ns: &Namespace, ops: Vec<Op>) -> Result<Commit, EngineError> {
        let answer = self.submit(ns, ops)?;
        // Writers run on blocking threads; a caller on a runtime worker must not stall it.
        let result = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(answer))
            }
            _ => self.rt.block_on(answer),
        };
        self.outcome(ns, result)
    }

    fn propose_async<'a>(
        &'a self,
        ns: &'a Namespace,
        ops: Vec<Op>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Commit, EngineError>> + Send + 'a>>
    {
        Box::pin(async move {
            let answer = self.submit(ns, ops)?;
            let result = answer.await;
            self.outcome(ns, result)
        })
    }
}

/// `/stats` figures of one group.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupStatus {
    pub node_id: u64,
    pub role: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub leader_http: Option<String>,
    pub commit_index: u64,
    pub applied: u64,
    pub last_log_index: u64,
    /// On the leader: peer id -> last LSN known replicated there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_match_index: Option<BTreeMap<u64, u64>>,
    pub members: BTreeMap<u64, Member>,
    /// The voting members (the others are learners).
    pub voters: std::collections::BTreeSet<u64>,
}

impl Cluster {
    /// The status of `ns`'s group, if it runs here.
    pub fn status(&self, ns: &str) -> Option<GroupStatus> {
        let raft = self.groups.get(ns)?;
        let m = raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Follower => "follower",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let lsn = |l: Option<openraft::LogId<u64>>| l.map(|l| l.index + 1).unwrap_or(0);
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| {
                let mut n = n.clone();
                if let Some(http) = self.http_of(*id) {
                    n.http = http;
                }
                (*id, n)
            })
            .collect();
        Some(GroupStatus {
            node_id: self.settings.node_id,
            role: role.into(),
            term: m.current_term,
            leader_id: m.current_leader,
            leader_http: m.current_leader.and_then(|id| self.http_of(id)),
            commit_index: lsn(m.last_applied),
            applied: lsn(m.last_applied),
            last_log_index: m.last_log_index.map(|i| i + 1).unwrap_or(0),
            peer_match_index: m.replication.as_ref().map(|r| {
                r.iter()
                    .map(|(id, l)| (*id, lsn(*l)))
                    .collect::<BTreeMap<_, _>>()
            }),
            members,
            voters: m.membership_config.membership().voter_ids().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unisondb_config::ClusterConfig;

    fn cfg(peers: &[&str]) -> Config {
        let mut c = Config::default();
        c.http.listen = "0.0.0.0:4000".into();
        c.cluster = Some(ClusterConfig {
            node_id: Some(2),
            peers: peers.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        });
        c
    }

    #[test]
    fn settings_from_the_cluster_section() {
        assert!(ClusterSettings::from_config(&Config::default())
            .unwrap()
            .is_none());
        let s = ClusterSettings::from_config(&cfg(&[
            "hub-0.hub:4001",
            "hub-1.hub:4001",
            "hub-2.hub:4001",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.node_id, 2);
        assert!(!s.is_bootstrapper());
        assert_eq!(s.members[&1].grpc, "hub-0.hub:4001");
        assert_eq!(
            s.members[&3].http, "hub-2.hub:4000",
            "peer host, http.listen port"
        );
        assert_eq!(s.advertise_http, "hub-1.hub:4000");
        assert_eq!(
            (
                s.raft.election_timeout_min,
                s.raft.election_timeout_max,
                s.raft.heartbeat_interval
            ),
            (400, 800, 100)
        );
        let one = cfg(&["2=hub-1.hub:4001"]);
        assert!(
            ClusterSettings::from_config(&one).unwrap().is_none(),
            "a group of one is a single hub"
        );
    }
}
