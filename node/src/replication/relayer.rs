//! Follower loop: keeps one local namespace identical to the same namespace on an upstream node.
//!
//! Each session connects, asks for the records after the local LSN, checks every record (CRC and
//! LSN = previous + 1, so a gap or duplicate is an error, never applied), appends and applies them
//! verbatim, then acknowledges the applied LSN upstream. Any failure ends the session; the loop
//! reconnects with jittered exponential backoff. If the upstream has trimmed the needed LSN, the loop
//! installs a snapshot and resumes after it.

use std::time::Duration;

use futures::FutureExt;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::bootstrap;
use super::lag::{Divergence, ReplicationState};
use super::proto::replication_client::ReplicationClient;
use super::proto::stream_wal_request::Msg;
use super::proto::wal_batch::Control;
use super::proto::{Ack, Resume, Start, StreamWalRequest, WalBatch};
use super::stream::{from_wire, history_to_wire};
use super::tls::ClientTls;
use super::upstream;
use super::ReplicationError;
use crate::engine::{FsyncPolicy, Namespace};

/// Largest message a follower accepts (a batch is capped near 1 MiB, but one record may be larger).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Reconnect delays: `initial · 2^attempt`, capped at `max`, jittered to 50–100 % of that.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        let jitter = rand::thread_rng().gen_range(0.5..=1.0);
        exp.mul_f64(jitter)
    }
}

/// How to follow one namespace.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// `http://host:port` or `https://host:port`; a bare `host:port` gets the scheme from `tls`.
    /// With several `candidates`, the one the current session uses.
    pub upstream: String,
    /// Every address of a hub group when `replication.upstream` lists more than one (empty for
    /// one): each session streams from the best of them (`super::upstream`).
    pub candidates: Vec<String>,
    pub tls: Option<ClientTls>,
    /// Stable identity of this node, so the upstream counts its acks once.
    pub replica_id: String,
    pub backoff: Backoff,
    /// No message (heartbeats come every second) for this long ends the session.
    pub silence_timeout: Duration,
    pub connect_timeout: Duration,
    /// With an object store to fall back to: give up on the upstream once no session has streamed
    /// for this long, so the caller follows the store meanwhile. `None`: retry forever.
    pub give_up_after: Option<Duration>,
}

impl FollowConfig {
    /// `upstream` is one address, or several separated by commas (the members of a hub group).
    pub fn new(upstream: impl Into<String>, replica_id: impl Into<String>) -> Self {
        let upstream = upstream.into();
        let list = unisondb_config::split_upstreams(&upstream);
        let (upstream, candidates) = match list.first() {
            Some(first) if list.len() > 1 => (first.clone(), list),
            _ => (upstream, Vec::new()),
        };
        Self {
            upstream,
            candidates,
            tls: None,
            replica_id: replica_id.into(),
            backoff: Backoff::default(),
            silence_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            give_up_after: None,
        }
    }

    /// The upstream address with a scheme matching the TLS setting.
    pub fn url(&self) -> String {
        if self.upstream.contains("://") {
            self.upstream.clone()
        } else if self.tls.is_some() {
            format!("https://{}", self.upstream)
        } else {
            format!("http://{}", self.upstream)
        }
    }

    fn endpoint(&self) -> Result<Endpoint, ReplicationError> {
        let url = self.url();
        let bad = |e: String| ReplicationError::BadAddress(url.clone(), e);
        let mut ep = Endpoint::from_shared(url.clone())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        let https = url.starts_with("https://");
        match (&self.tls, https) {
            (Some(tls), true) => {
                let host = ep.uri().host().unwrap_or("localhost").to_string();
                ep = ep.tls_config(tls.fresh().to_tonic(&host))?;
            }
            (None, false) => {}
            (Some(_), false) => {
                return Err(bad("TLS is configured but the address is http://".into()))
            }
            (None, true) => {
                return Err(bad(
                    "https:// needs replication.tls_ca_file to verify the upstream".into(),
                ))
            }
        }
        Ok(ep)
    }

    /// Opens a client to the upstream (used by sessions and by tests).
    pub async fn connect(&self) -> Result<ReplicationClient<Channel>, ReplicationError> {
        let channel = self.endpoint()?.connect().await?;
        Ok(ReplicationClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// Follows `ns` from `cfg.upstream` until `shutdown` is cancelled (returns `false`) or — with
/// `cfg.give_up_after` — until the upstream has streamed nothing for that long (returns `true`).
pub async fn follow(
    ns: Namespace,
    mut cfg: FollowConfig,
    state: ReplicationState,
    shutdown: CancellationToken,
) -> bool {
    let name = ns.name().to_string();
    state.register(&name, &cfg.url(), ns.latest_lsn(), ns.latest_hlc());
    // Seconds-lag grows while nothing arrives: `/metrics` refreshes the gauges when scraped
    // (`ReplicationState::publish_all`), so no timer wakes an idle relayer for them.
    let mut attempt = 0u32;
    // When the upstream last streamed to us (a session that received a batch resets `attempt`).
    let mut streamed_at = std::time::Instant::now();
    let mut lost = false;
    // Set when the last session ended to move to this member of the group.
    let mut moving_to: Option<String> = None;
    loop {
        if !cfg.candidates.is_empty() {
            let pick = match moving_to.take() {
                Some(to) => Some(to),
                None => tokio::select! {
                    r = upstream::pick(&cfg, &name) => r,
                    _ = shutdown.cancelled() => break,
                },
            };
            cfg.upstream = pick.unwrap_or_else(|| upstream::after(&cfg.candidates, &cfg.upstream));
            let url = cfg.url();
            state.update(&name, |p| p.upstream = url);
        }
        let result = tokio::select! {
            r = session(&ns, &cfg, &state, &mut attempt) => r,
            to = upstream::watch_if_group(&cfg, &name) => Err(ReplicationError::Moved(to)),
            _ = shutdown.cancelled() => break,
        };
        if let Err(ReplicationError::Moved(to)) = &result {
            state.disconnected(&name, None);
            moving_to = Some(to.clone());
            attempt = 0;
            continue;
        }
        if attempt == 0 {
            streamed_at = std::time::Instant::now();
        }
        let err = match result {
            Ok(()) => ReplicationError::Closed,
            Err(e) => e,
        };
        state.disconnected(&name, Some(err.to_string()));
        let needs_snapshot = match err {
            ReplicationError::Trimmed(lsn) => {
                tracing::warn!(namespace = %name, lsn, upstream = %cfg.url(),
                    "upstream trimmed the WAL we need; bootstrapping from a snapshot");
                Some(false)
            }
            // Already logged and counted when detected (`resume`).
            ReplicationError::Diverged { .. } => Some(true),
            _ => None,
        };
        if let Some(replacing) = needs_snapshot {
            let boot = tokio::select! {
                r = bootstrap(&ns, &cfg, replacing) => r,
                _ = shutdown.cancelled() => break,
            };
            match boot {
                Ok(at) => {
                    state.count_bootstrap(&name);
                    state.update(&name, |p| {
                        p.applied_lsn = at;
                        p.applied_hlc = ns.latest_hlc();
                    });
                    tracing::info!(namespace = %name, lsn = at, "snapshot installed");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(namespace = %name, error = %e, "snapshot bootstrap failed");
                    state.update(&name, |p| p.last_error = Some(e.to_string()));
                }
            }
        } else {
            tracing::warn!(namespace = %name, upstream = %cfg.url(), error = %err,
                "replication session ended; reconnecting");
        }
        if cfg
            .give_up_after
            .is_some_and(|bound| streamed_at.elapsed() >= bound)
        {
            tracing::warn!(namespace = %name, upstream = %cfg.url(), lsn = ns.latest_lsn(),
                "upstream unreachable for too long; falling back to the object store");
            lost = true;
            break;
        }
        state.count_reconnect(&name);
        let delay = cfg.backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    if !lost {
        state.disconnected(&name, None);
        tracing::info!(namespace = %name, "follower stopped");
    }
    lost
}

async fn bootstrap(
    ns: &Namespace,
    cfg: &FollowConfig,
    replacing: bool,
) -> Result<u64, ReplicationError> {
    let mut client = cfg.connect().await?;
    bootstrap::bootstrap(&mut client, ns, replacing).await
}

/// Acts on the upstream's history check: continue, truncate after the agreed LSN, or ask for a
/// snapshot (`Err(Diverged)`). Divergence is never silent: a warning, the
/// `unisondb_replication_divergences_total{action}` counter and `last_divergence` in `/stats`.
async fn resume(
    ns: &Namespace,
    state: &ReplicationState,
    upstream: &str,
    last: u64,
    r: &Resume,
) -> Result<(), ReplicationError> {
    let agreed = r.agreed_lsn;
    if agreed == last {
        return Ok(());
    }
    if agreed > last {
        return Err(ReplicationError::Protocol(format!(
            "upstream claims agreement up to LSN {agreed} but we hold only {last}"
        )));
    }
    let name = ns.name();
    let reason = format!(
        "local records {}..={last} (epoch {} at LSN {last}) are not in the history of {upstream} \
         (its last record: epoch {} at LSN {}); histories agree up to LSN {agreed}",
        agreed + 1,
        ns.epoch_at(last),
        r.server_last_epoch,
        r.server_last_lsn,
    );
    let checkpoint = ns.checkpoint_lsn()?;
    let action = if agreed >= checkpoint {
        let ns2 = ns.clone();
        match tokio::task::spawn_blocking(move || ns2.truncate_after(agreed)).await? {
            Ok(_) => "truncate",
            Err(crate::engine::EngineError::TruncateBelowCheckpoint { .. }) => "bootstrap",
            Err(e) => return Err(e.into()),
        }
    } else {
        "bootstrap"
    };
    tracing::warn!(namespace = name, upstream, agreed_lsn = agreed, discarded_from = agreed + 1,
        discarded_to = last, checkpoint, action, %reason, "replication history diverged");
    state.record_divergence(
        name,
        Divergence {
            at_ms: crate::storage::hlc::wall_ms(),
            agreed_lsn: agreed,
            discarded_from: agreed + 1,
            discarded_to: last,
            action: action.to_string(),
            reason,
        },
    );
    if action == "bootstrap" {
        return Err(ReplicationError::Diverged { agreed });
    }
    state.update(name, |p| {
        p.applied_lsn = agreed;
        p.applied_hlc = ns.latest_hlc();
    });
    Ok(())
}

/// One connection: stream, verify, apply, acknowledge, until something fails.
async fn session(
    ns: &Namespace,
    cfg: &FollowConfig,
    state: &ReplicationState,
    attempt: &mut u32,
) -> Result<(), ReplicationError> {
    let name = ns.name().to_string();
    let mut client = cfg.connect().await?;
    // Everything we state or acknowledge must be on disk (acks promise durability).
    let ns2 = ns.clone();
    let last = tokio::task::spawn_blocking(move || ns2.make_durable()).await??;
    let from = last + 1;
    let (req_tx, req_rx) = mpsc::channel(16);
    let start = StreamWalRequest {
        msg: Some(Msg::Start(Start {
            namespace: name.clone(),
            from_lsn: from,
            replica_id: cfg.replica_id.clone(),
            last_epoch: ns.epoch_at(last),
            last_lsn: last,
            history: history_to_wire(&ns.epoch_history(last)),
        })),
    };
    req_tx
        .send(start)
        .await
        .map_err(|_| ReplicationError::Closed)?;
    let mut inbound = client
        .stream_wal(ReceiverStream::new(req_rx))
        .await
        .map_err(|s| match s.code() {
            Code::OutOfRange => ReplicationError::Trimmed(from),
            _ => ReplicationError::Status(s),
        })?
        .into_inner();
    // The first message answers the history check (an upstream from before epochs sends none).
    let first = tokio::time::timeout(cfg.silence_timeout, inbound.message())
        .await
        .map_err(|_| ReplicationError::Silent(cfg.silence_timeout))??
        .ok_or(ReplicationError::Closed)?;
    let mut pending = None;
    match &first.control {
        Some(Control::Resume(r)) => resume(ns, state, &cfg.url(), last, r).await?,
        None => pending = Some(first),
    }
    let held = ns.latest_lsn();
    let mut acks = Acks::new(ns, held);
    // What we hold now counts as acknowledged (matters after a reconnect), in our (checked) history.
    acks.send(ns.epoch_at(held), held, &req_tx).await?;
    tracing::info!(namespace = %name, upstream = %cfg.url(), from_lsn = held + 1, "replicating");
    let mut expected = held + 1;
    loop {
        let batch = match pending.take() {
            Some(b) => b,
            None => {
                let msg = tokio::select! {
                    biased;
                    m = tokio::time::timeout(cfg.silence_timeout, inbound.message()) => m,
                    // `interval`: what the periodic fsync made durable is acknowledged now.
                    () = acks.durable_advanced() => {
                        acks.send_durable(ns, &req_tx).await?;
                        continue;
                    }
                };
                let msg = msg
                    .map_err(|_| ReplicationError::Silent(cfg.silence_timeout))?
                    .map_err(|s| stream_error(s, expected))?;
                let Some(batch) = msg else {
                    return Err(ReplicationError::Closed);
                };
                if *attempt > 0 {
                    *attempt = 0;
                }
                batch
            }
        };
        // Everything that already arrived joins this apply: one WAL append pass, one fsync and one
        // ack for all of it. While we fsync, the next messages queue up, so under load the batches
        // grow instead of the backlog (one fsync per 1-record message cannot keep up at 1,000/s).
        let mut batches = vec![batch];
        let mut gathered = batches[0].records.len();
        let mut ended = None;
        while gathered < GATHER_RECORDS {
            match inbound.message().now_or_never() {
                None => break,
                Some(Ok(Some(b))) => {
                    gathered += b.records.len();
                    batches.push(b);
                }
                Some(Ok(None)) => {
                    ended = Some(ReplicationError::Closed);
                    break;
                }
                Some(Err(s)) => {
                    ended = Some(stream_error(s, expected));
                    break;
                }
            }
        }
        apply_batches(ns, state, &mut acks, &req_tx, batches, &mut expected).await?;
        if let Some(e) = ended {
            // What arrived before the end is applied and acknowledged first.
            return Err(e);
        }
    }
}

/// At most this many records are gathered from already-received messages into one apply.
const GATHER_RECORDS: usize = 4096;

/// A stream error from the upstream; OUT_OF_RANGE means it trimmed the LSN we need next.
fn stream_error(s: tonic::Status, expected: u64) -> ReplicationError {
    match s.code() {
        Code::OutOfRange => ReplicationError::Trimmed(expected),
        _ => ReplicationError::Status(s),
    }
}

/// When this follower acknowledges, by its own `wal.fsync` (an ack always means durable here).
///
/// Under `interval` an apply does not fsync: the periodic fsync makes the records durable and the
/// ack follows it (so `acks=N` writes wait up to one of the replica's intervals). Under `always`
/// and `never` each apply fsyncs once for its whole batch and is acknowledged at once.
struct Acks {
    /// `Some` under `interval`: the WAL's durable-LSN notifications.
    durable: Option<tokio::sync::watch::Receiver<u64>>,
    /// Highest LSN applied in this session (acknowledged once durable).
    applied: u64,
    /// Highest LSN acknowledged in this session.
    acked: u64,
}

impl Acks {
    fn new(ns: &Namespace, held: u64) -> Self {
        let durable =
            matches!(ns.fsync_policy(), FsyncPolicy::Interval(_)).then(|| ns.subscribe_durable());
        Self {
            durable,
            applied: held,
            acked: held,
        }
    }

    /// Resolves when the durable LSN moved past what was acknowledged; never without deferred acks.
    async fn durable_advanced(&mut self) {
        let Some(rx) = self.durable.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            if (*rx.borrow_and_update()).min(self.applied) > self.acked {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Acknowledges everything applied that is durable now.
    async fn send_durable(
        &mut self,
        ns: &Namespace,
        req_tx: &mpsc::Sender<StreamWalRequest>,
    ) -> Result<(), ReplicationError> {
        let lsn = ns.durable_lsn().min(self.applied);
        if lsn > self.acked {
            self.send(ns.epoch_at(lsn), lsn, req_tx).await?;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        epoch: u64,
        lsn: u64,
        req_tx: &mpsc::Sender<StreamWalRequest>,
    ) -> Result<(), ReplicationError> {
        let ack = StreamWalRequest {
            msg: Some(Msg::Ack(Ack {
                applied_lsn: lsn,
                epoch,
            })),
        };
        req_tx
            .send(ack)
            .await
            .map_err(|_| ReplicationError::Closed)?;
        self.acked = lsn;
        Ok(())
    }
}

/// Verifies and applies received batches, then acknowledges them once durable (see [`Acks`]);
/// records lag contact.
async fn apply_batches(
    ns: &Namespace,
    state: &ReplicationState,
    acks: &mut Acks,
    req_tx: &mpsc::Sender<StreamWalRequest>,
    batches: Vec<WalBatch>,
    expected: &mut u64,
) -> Result<(), ReplicationError> {
    let name = ns.name();
    let latest = batches.iter().map(|b| b.latest_lsn).max().unwrap_or(0);
    let total: usize = batches.iter().map(|b| b.records.len()).sum();
    if total > 0 {
        let mut next = *expected;
        let mut records = Vec::with_capacity(total);
        for w in batches.into_iter().flat_map(|b| b.records) {
            let rec = from_wire(w).map_err(|lsn| {
                ReplicationError::Protocol(format!("record LSN {lsn} failed its CRC check"))
            })?;
            if rec.lsn != next {
                return Err(ReplicationError::Protocol(format!(
                    "expected LSN {next}, upstream sent {} ({})",
                    rec.lsn,
                    if rec.lsn < next { "duplicate" } else { "gap" }
                )));
            }
            next += 1;
            records.push(rec);
        }
        *expected = next;
        let n = records.len() as u64;
        let epoch = records.last().map(|r| r.epoch).unwrap_or(0);
        let commit = if acks.durable.is_some() {
            // No fsync here: on this task when cheap (see `Namespace::apply_replicated_async`).
            ns.apply_replicated_async(records).await?
        } else {
            // One fsync for the lot, before the ack.
            let ns2 = ns.clone();
            tokio::task::spawn_blocking(move || ns2.apply_replicated_durably(records)).await??
        };
        state.count_applied(name, n);
        acks.applied = commit.lsn;
        if acks.durable.is_none() {
            acks.send(epoch, commit.lsn, req_tx).await?;
        } else {
            // The periodic fsync may already have passed these records.
            acks.send_durable(ns, req_tx).await?;
        }
        state.update(name, |p| {
            p.applied_lsn = commit.lsn;
            p.applied_hlc = commit.hlc;
        });
    }
    state.contact(name, latest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for a in 0..40 {
            let d = b.delay(a);
            let cap = Duration::from_millis(100)
                .saturating_mul(1 << a.min(20))
                .min(Duration::from_secs(2));
            assert!(d <= cap && d >= cap / 2, "attempt {a}: {d:?} vs {cap:?}");
        }
    }
}
