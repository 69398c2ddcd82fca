//! Prometheus metrics of the node, all prefixed `unisondb_` and labelled by `namespace`.
//!
//! One process-wide registry; modules record into it, `/metrics` renders it.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec_with_registry, register_int_counter_vec_with_registry,
    register_int_gauge_vec_with_registry, HistogramVec, IntCounterVec, IntGaugeVec, Registry,
};

/// The registry `/metrics` renders.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

macro_rules! counter {
    ($name:ident, $metric:expr, $help:expr) => {
        pub static $name: LazyLock<IntCounterVec> = LazyLock::new(|| {
            register_int_counter_vec_with_registry!($metric, $help, &["namespace"], REGISTRY)
                .expect("metric registers once")
        });
    };
}

macro_rules! gauge {
    ($name:ident, $metric:expr, $help:expr) => {
        pub static $name: LazyLock<IntGaugeVec> = LazyLock::new(|| {
            register_int_gauge_vec_with_registry!($metric, $help, &["namespace"], REGISTRY)
                .expect("metric registers once")
        });
    };
}

counter!(
    WAL_APPENDS,
    "unisondb_wal_appends_total",
    "WAL records appended"
);
counter!(
    WAL_BYTES,
    "unisondb_wal_bytes_total",
    "WAL payload bytes appended"
);
counter!(
    WAL_FSYNCS,
    "unisondb_wal_fsyncs_total",
    "WAL fsync calls (one per commit group)"
);
counter!(
    COMMITS_INLINE,
    "unisondb_commits_inline_total",
    "Commits run on the caller's task (no hop to the blocking pool: ARCHITECTURE.md, work on the runtime)"
);
counter!(
    FLUSHES,
    "unisondb_memtable_flushes_total",
    "Memtables flushed to the B+Tree"
);
counter!(
    CHECKSUM_FAILURES,
    "unisondb_checksum_failures_total",
    "B+Tree pages whose checksum failed on a read (the read failed; the namespace is degraded)"
);
counter!(
    WAL_SEGMENTS_DELETED,
    "unisondb_wal_segments_deleted_total",
    "WAL segments removed by retention"
);
counter!(
    ARCHIVE_UPLOADS,
    "unisondb_archive_uploads_total",
    "WAL objects uploaded to the archive store"
);
counter!(
    ARCHIVE_UPLOAD_BYTES,
    "unisondb_archive_upload_bytes_total",
    "Bytes of WAL objects uploaded to the archive store"
);
counter!(
    ARCHIVE_ERRORS,
    "unisondb_archive_errors_total",
    "Failed archive operations (listing, reading the WAL, uploads); each is retried"
);
gauge!(
    ARCHIVE_LSN,
    "unisondb_archive_archived_lsn",
    "Last LSN in the archive store (everything up to it is archived)"
);
gauge!(
    ARCHIVE_LAG,
    "unisondb_archive_lag_records",
    "Durable records not yet in the archive store"
);
counter!(
    OBJSTORE_FOLLOW_OBJECTS,
    "unisondb_objstore_follow_objects_fetched_total",
    "Objects (WAL objects and base backup files) a relayer fetched from the object store"
);
counter!(
    OBJSTORE_FOLLOW_ERRORS,
    "unisondb_objstore_follow_errors_total",
    "Failed rounds of following the object store (listing, fetching, verifying, applying); retried"
);
gauge!(
    OBJSTORE_FOLLOW_LSN,
    "unisondb_objstore_follow_applied_lsn",
    "Last LSN the relayer holds while it follows the object store"
);
gauge!(
    OBJSTORE_FOLLOW_MODE,
    "unisondb_objstore_follow_mode",
    "What a relayer with replication.object_store follows now: 0 = the object store, 1 = its gRPC upstream"
);
gauge!(LSN, "unisondb_lsn", "Last visible LSN of the namespace");
gauge!(
    CHECKPOINT_LSN,
    "unisondb_checkpoint_lsn",
    "LSN reflected in the B+Tree"
);
gauge!(
    MEMTABLE_BYTES,
    "unisondb_memtable_bytes",
    "Bytes held by active and sealed memtables"
);
gauge!(
    BTREE_PAGES,
    "unisondb_btree_pages",
    "Pages in the B+Tree file"
);
gauge!(
    BTREE_FILE_BYTES,
    "unisondb_btree_file_bytes",
    "Size of the B+Tree file"
);
gauge!(
    WAL_SEGMENTS,
    "unisondb_wal_segments",
    "WAL segment files on disk"
);

/// fsync latency; buckets from 50 µs to 1 s.
pub static WAL_FSYNC_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec_with_registry!(
        "unisondb_wal_fsync_seconds",
        "Latency of WAL fsync",
        &["namespace"],
        vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0],
        REGISTRY
    )
    .expect("metric registers once")
});

/// Commit group size: how many writes shared one fsync.
pub static COMMIT_GROUP_SIZE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec_with_registry!(
        "unisondb_commit_group_size",
        "Writes committed together under one fsync",
        &["namespace"],
        vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
        REGISTRY
    )
    .expect("metric registers once")
});

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if encoder.encode(&REGISTRY.gather(), &mut buf).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

gauge!(
    RAFT_TERM,
    "unisondb_raft_term",
    "Cluster mode: the current Raft term (= epoch of new records) of the namespace's group"
);
gauge!(
    RAFT_COMMIT_INDEX,
    "unisondb_raft_commit_index",
    "Cluster mode: the last applied (committed) LSN of the namespace's group on this member"
);
gauge!(
    RAFT_IS_LEADER,
    "unisondb_raft_is_leader",
    "Cluster mode: 1 while this member leads the namespace's group"
);
counter!(
    RAFT_LEADER_CHANGES,
    "unisondb_raft_leader_changes_total",
    "Cluster mode: times this member saw the namespace's group change leader"
);

/// Cluster mode: AppendEntries sent, by transport (`link`: raft/link.rs; `grpc`: to a member that
/// refused the link, e.g. an older one), so an operator sees which path the hot loop takes.
pub static RAFT_APPENDS_SENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec_with_registry!(
        "unisondb_raft_appends_sent_total",
        "Cluster mode: AppendEntries sent to followers, by transport (link or grpc)",
        &["namespace", "transport"],
        REGISTRY
    )
    .expect("metric registers once")
});

/// Buckets of the Raft round trips: 100 µs to 1 s.
const RAFT_RTT_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Cluster mode (leader): an AppendEntries carrying entries, from send to answer; it includes the
/// follower's fsync, so with `unisondb_raft_append_serve_seconds` it splits a quorum write's time.
pub static RAFT_APPEND_RTT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec_with_registry!(
        "unisondb_raft_append_rtt_seconds",
        "Cluster mode (on the leader): round trip of AppendEntries carrying entries, by transport",
        &["namespace", "transport"],
        RAFT_RTT_BUCKETS.to_vec(),
        REGISTRY
    )
    .expect("metric registers once")
});

/// Cluster mode (follower): handling of an AppendEntries carrying entries (append and fsync).
pub static RAFT_APPEND_SERVE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec_with_registry!(
        "unisondb_raft_append_serve_seconds",
        "Cluster mode (on a follower): time to append and fsync an AppendEntries carrying entries",
        &["namespace"],
        RAFT_RTT_BUCKETS.to_vec(),
        REGISTRY
    )
    .expect("metric registers once")
});

/// Cluster mode: per-peer replication position, reported by the leader only.
pub static RAFT_PEER_MATCH_INDEX: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec_with_registry!(
        "unisondb_raft_peer_match_index",
        "Cluster mode (on the leader): the last LSN known replicated on each peer",
        &["namespace", "peer"],
        REGISTRY
    )
    .expect("metric registers once")
});
