//! Storage benchmark: redb's workload against UnisonDB's namespace engine and peer engines.
//!
//! `cargo bench -p unisondb-bench --bench kv -- [--n N] [--json FILE] [--engines a,b] [--dir DIR]`
//! (`-- --help` lists them; `--features rocksdb` adds the rocksdb peer).
//!
//! Every engine runs in a fresh temp dir on the same filesystem, with the same keys (24 random bytes),
//! values (150 random bytes) and operation order (fixed seed). Writes are durable: each commit returns
//! only once its data is fsync'd (see docs/BENCHMARKS.md for each engine's mode).

use std::fs::File;
use std::io::Write;
use std::ops::Bound;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use unisondb_bench::stats::percentile;

const KEY_LEN: usize = 24;
const VALUE_LEN: usize = 150;
const SEED: u64 = 0x5EED_CAFE;
const INDIVIDUAL_WRITES: usize = 1_000;
const BATCHES: usize = 100;
const BATCH_SIZE: usize = 1_000;
const SCANS: usize = 200_000;
const SCAN_LEN: usize = 10;
const READ_THREADS: usize = 2;
const FLOOR_SAMPLES: usize = 1_000;

type Kv = (Vec<u8>, Vec<u8>);

/// A read view for one thread (some engines' read transactions must stay on their thread).
trait Reader {
    /// Returns the value's length (0 when absent).
    fn get(&mut self, key: &[u8]) -> Result<usize>;
    /// Reads up to `n` entries from `key` on; returns how many there were.
    fn scan(&mut self, key: &[u8], n: usize) -> Result<usize>;
}

trait Engine: Sync {
    /// Inserts all pairs in one durable transaction.
    fn write(&self, kvs: &[Kv]) -> Result<()>;
    /// Removes all keys in one durable transaction.
    fn remove(&self, keys: &[&[u8]]) -> Result<()>;
    fn reader(&self) -> Result<Box<dyn Reader + '_>>;
    /// Called before the read phases (ours: move the memtable into the B+Tree).
    fn settle(&self) -> Result<()> {
        Ok(())
    }
    /// Extra detail printed after the size phase.
    fn describe(&self) -> Result<String> {
        Ok(String::new())
    }
}

mod ours {
    use super::*;
    use unisondb::engine::{EngineOptions, FsyncPolicy, Namespace, Snapshot};
    use unisondb::storage::batch::WriteBatch;

    pub struct Ours(pub Namespace);

    pub fn open(dir: &Path) -> Result<Ours> {
        let opts = EngineOptions {
            fsync: FsyncPolicy::Always,
            ..EngineOptions::default()
        };
        Ok(Ours(Namespace::open(dir, "bench", opts)?))
    }

    struct R(Snapshot);

    impl Reader for R {
        fn get(&mut self, key: &[u8]) -> Result<usize> {
            Ok(self.0.get(key)?.map_or(0, |v| v.len()))
        }
        fn scan(&mut self, key: &[u8], n: usize) -> Result<usize> {
            // The borrowing visitor: slices of the mapping, like LMDB's and redb's ranges.
            let mut got = 0;
            self.0
                .scan(Bound::Included(key), Bound::Unbounded, false, |_, _| {
                    got += 1;
                    got < n
                })?;
            Ok(got)
        }
    }

    impl Engine for Ours {
        fn write(&self, kvs: &[Kv]) -> Result<()> {
            let mut b = WriteBatch::new();
            b.ops.reserve(kvs.len());
            for (k, v) in kvs {
                b.put(k.clone(), v.clone());
            }
            self.0.write(b)?;
            Ok(())
        }
        fn remove(&self, keys: &[&[u8]]) -> Result<()> {
            let mut b = WriteBatch::new();
            for k in keys {
                b.delete(k.to_vec());
            }
            self.0.write(b)?;
            Ok(())
        }
        fn reader(&self) -> Result<Box<dyn Reader + '_>> {
            Ok(Box::new(R(self.0.snapshot()?)))
        }
        fn settle(&self) -> Result<()> {
            Ok(self.0.flush()?)
        }
        fn describe(&self) -> Result<String> {
            let s = self.0.stats()?;
            let wal: u64 = s.wal_segments.iter().map(|g| g.size_bytes).sum();
            Ok(format!(
                "B+Tree file {:.1} MiB ({} of {} pages free), WAL {:.1} MiB in {} segments",
                mib(s.tree.file_size),
                s.tree.free_pages,
                s.tree.total_pages,
                mib(wal),
                s.wal_segments.len()
            ))
        }
    }
}

mod redb_peer {
    use super::*;
    use redb::{Database, Durability, ReadOnlyTable, TableDefinition};

    const T: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

    pub struct Redb(Database);

    pub fn open(dir: &Path) -> Result<Redb> {
        Ok(Redb(Database::create(dir.join("db.redb"))?))
    }

    struct R(ReadOnlyTable<&'static [u8], &'static [u8]>);

    impl Reader for R {
        fn get(&mut self, key: &[u8]) -> Result<usize> {
            Ok(self.0.get(key)?.map_or(0, |v| v.value().len()))
        }
        fn scan(&mut self, key: &[u8], n: usize) -> Result<usize> {
            let mut got = 0;
            for kv in self.0.range(key..)?.take(n) {
                kv?;
                got += 1;
            }
            Ok(got)
        }
    }

    impl Engine for Redb {
        fn write(&self, kvs: &[Kv]) -> Result<()> {
            let mut txn = self.0.begin_write()?;
            txn.set_durability(Durability::Immediate);
            {
                let mut t = txn.open_table(T)?;
                for (k, v) in kvs {
                    t.insert(k.as_slice(), v.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        }
        fn remove(&self, keys: &[&[u8]]) -> Result<()> {
            let mut txn = self.0.begin_write()?;
            txn.set_durability(Durability::Immediate);
            {
                let mut t = txn.open_table(T)?;
                for k in keys {
                    t.remove(*k)?;
                }
            }
            txn.commit()?;
            Ok(())
        }
        fn reader(&self) -> Result<Box<dyn Reader + '_>> {
            Ok(Box::new(R(self.0.begin_read()?.open_table(T)?)))
        }
    }
}

mod lmdb {
    use super::*;
    use heed::types::Bytes;
    use heed::{Database, Env, EnvOpenOptions, RoTxn, WithTls};

    pub struct Lmdb {
        env: Env,
        db: Database<Bytes, Bytes>,
    }

    pub fn open(dir: &Path) -> Result<Lmdb> {
        // SAFETY: the directory is fresh and only this process opens it.
        let env = unsafe { EnvOpenOptions::new().map_size(64 << 30).open(dir)? };
        let mut txn = env.write_txn()?;
        let db = env.create_database(&mut txn, None)?;
        txn.commit()?;
        Ok(Lmdb { env, db })
    }

    struct R<'a> {
        txn: RoTxn<'a, WithTls>,
        db: Database<Bytes, Bytes>,
    }

    impl Reader for R<'_> {
        fn get(&mut self, key: &[u8]) -> Result<usize> {
            Ok(self.db.get(&self.txn, key)?.map_or(0, <[u8]>::len))
        }
        fn scan(&mut self, key: &[u8], n: usize) -> Result<usize> {
            let range = (Bound::Included(key), Bound::Unbounded);
            let mut got = 0;
            for kv in self.db.range(&self.txn, &range)?.take(n) {
                kv?;
                got += 1;
            }
            Ok(got)
        }
    }

    impl Engine for Lmdb {
        fn write(&self, kvs: &[Kv]) -> Result<()> {
            let mut txn = self.env.write_txn()?;
            for (k, v) in kvs {
                self.db.put(&mut txn, k, v)?;
            }
            txn.commit()?;
            Ok(())
        }
        fn remove(&self, keys: &[&[u8]]) -> Result<()> {
            let mut txn = self.env.write_txn()?;
            for k in keys {
                self.db.delete(&mut txn, k)?;
            }
            txn.commit()?;
            Ok(())
        }
        fn reader(&self) -> Result<Box<dyn Reader + '_>> {
            Ok(Box::new(R {
                txn: self.env.read_txn()?,
                db: self.db,
            }))
        }
    }
}

mod fjall_peer {
    use super::*;
    use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

    pub struct Fjall {
        ks: Keyspace,
        part: PartitionHandle,
    }

    pub fn open(dir: &Path) -> Result<Fjall> {
        let ks = Config::new(dir).open()?;
        let part = ks.open_partition("kv", PartitionCreateOptions::default())?;
        Ok(Fjall { ks, part })
    }

    struct R(PartitionHandle);

    impl Reader for R {
        fn get(&mut self, key: &[u8]) -> Result<usize> {
            Ok(self.0.get(key)?.map_or(0, |v| v.len()))
        }
        fn scan(&mut self, key: &[u8], n: usize) -> Result<usize> {
            let mut got = 0;
            for kv in self.0.range(key..).take(n) {
                kv?;
                got += 1;
            }
            Ok(got)
        }
    }

    impl Engine for Fjall {
        fn write(&self, kvs: &[Kv]) -> Result<()> {
            let mut b = self.ks.batch().durability(Some(PersistMode::SyncAll));
            for (k, v) in kvs {
                b.insert(&self.part, k.as_slice(), v.as_slice());
            }
            b.commit()?;
            Ok(())
        }
        fn remove(&self, keys: &[&[u8]]) -> Result<()> {
            let mut b = self.ks.batch().durability(Some(PersistMode::SyncAll));
            for k in keys {
                b.remove(&self.part, *k);
            }
            b.commit()?;
            Ok(())
        }
        fn reader(&self) -> Result<Box<dyn Reader + '_>> {
            Ok(Box::new(R(self.part.clone())))
        }
    }
}

mod sled_peer {
    use super::*;

    pub struct Sled(sled::Db);

    pub fn open(dir: &Path) -> Result<Sled> {
        Ok(Sled(sled::open(dir)?))
    }

    struct R(sled::Db);

    impl Reader for R {
        fn get(&mut self, key: &[u8]) -> Result<usize> {
            Ok(self.0.get(key)?.map_or(0, |v| v.len()))
        }
        fn scan(&mut self, key: &[u8], n: usize) -> Result<usize> {
            let mut got = 0;
            for kv in self.0.range(key..).take(n) {
                kv?;
                got += 1;
            }
            Ok(got)
        }
    }

    impl Engine for Sled {
        fn write(&self, kvs: &[Kv]) -> Result<()> {
            let mut b = sled::Batch::default();
            for (k, v) in kvs {
                b.insert(k.as_slice(), v.as_slice());
            }
            self.0.apply_batch(b)?;
            self.0.flush()?;
            Ok(())
        }
        fn remove(&self, keys: &[&[u8]]) -> Result<()> {
            let mut b = sled::Batch::default();
            for k in keys {
                b.remove(*k);
            }
            self.0.apply_batch(b)?;
            self.0.flush()?;
            Ok(())
        }
        fn reader(&self) -> Result<Box<dyn Reader + '_>> {
            Ok(Box::new(R(self.0.clone())))
        }
    }
}

mod sqlite {
    use super::*;
    use rusqlite::{params, Connection, OptionalExtension};
    use std::sync::Mutex;

    pub struct Sqlite {
        path: PathBuf,
        conn: Mutex<Connection>,
    }

    fn connect(path: &Path) -> Result<Connection> {
        let c = Connection::open(path)?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "FULL")?;
        Ok(c)
    }

    pub fn open(dir: &Path) -> Result<Sqlite> {
        let path = dir.join("db.sqlite");
        let c = connect(&path)?;
        c.execute_batch("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")?;
        Ok(Sqlite {
            path,
            conn: Mutex::new(c),
        })
    }

    struct R(Connection);

    impl Reader for R {
        fn get(&mut self, key: &[u8]) -> Result<usize> {
            let mut st = self
                .0
                .prepare_cached("SELECT length(v) FROM kv WHERE k = ?1")?;
            let len: Option<i64> = st.query_row([key], |r| r.get(0)).optional()?;
            Ok(len.unwrap_or(0) as usize)
        }
        fn scan(&mut self, key: &[u8], n: usize) -> Result<usize> {
            let mut st = self
                .0
                .prepare_cached("SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k LIMIT ?2")?;
            let mut rows = st.query(params![key, n as i64])?;
            let mut got = 0;
            while let Some(r) = rows.next()? {
                let v = r.get_ref(1)?.as_blob()?;
                got += usize::from(!v.is_empty());
            }
            Ok(got)
        }
    }

    impl Sqlite {
        fn txn(&self, f: impl FnOnce(&rusqlite::Transaction) -> Result<()>) -> Result<()> {
            let mut c = self.conn.lock().expect("sqlite mutex");
            let t = c.transaction()?;
            f(&t)?;
            t.commit()?;
            Ok(())
        }
    }

    impl Engine for Sqlite {
        fn write(&self, kvs: &[Kv]) -> Result<()> {
            self.txn(|t| {
                let mut st =
                    t.prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)")?;
                for (k, v) in kvs {
                    st.execute(params![k, v])?;
                }
                Ok(())
            })
        }
        fn remove(&self, keys: &[&[u8]]) -> Result<()> {
            self.txn(|t| {
                let mut st = t.prepare_cached("DELETE FROM kv WHERE k = ?1")?;
                for k in keys {
                    st.execute([k])?;
                }
                Ok(())
            })
        }
        fn reader(&self) -> Result<Box<dyn Reader + '_>> {
            Ok(Box::new(R(connect(&self.path)?)))
        }
    }
}

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;
    use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

    pub struct Rocks(DB);

    pub fn open(dir: &Path) -> Result<Rocks> {
        let mut o = Options::default();
        o.create_if_missing(true);
        Ok(Rocks(DB::open(&o, dir)?))
    }

    struct R<'a>(&'a DB);

    impl Reader for R<'_> {
        fn get(&mut self, key: &[u8]) -> Result<usize> {
            Ok(self.0.get_pinned(key)?.map_or(0, |v| v.len()))
        }
        fn scan(&mut self, key: &[u8], n: usize) -> Result<usize> {
            let mut got = 0;
            for kv in self
                .0
                .iterator(IteratorMode::From(key, Direction::Forward))
                .take(n)
            {
                kv?;
                got += 1;
            }
            Ok(got)
        }
    }

    impl Rocks {
        fn commit(&self, b: WriteBatch) -> Result<()> {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            Ok(self.0.write_opt(b, &wo)?)
        }
    }

    impl Engine for Rocks {
        fn write(&self, kvs: &[Kv]) -> Result<()> {
            let mut b = WriteBatch::default();
            for (k, v) in kvs {
                b.put(k, v);
            }
            self.commit(b)
        }
        fn remove(&self, keys: &[&[u8]]) -> Result<()> {
            let mut b = WriteBatch::default();
            for k in keys {
                b.delete(k);
            }
            self.commit(b)
        }
        fn reader(&self) -> Result<Box<dyn Reader + '_>> {
            Ok(Box::new(R(&self.0)))
        }
    }
}

const OURS: &str = "unisondb";
const ENGINES: &[&str] = &[
    OURS,
    "redb",
    "lmdb",
    "fjall",
    "sled",
    "sqlite",
    #[cfg(feature = "rocksdb")]
    "rocksdb",
];

fn open(name: &str, dir: &Path) -> Result<Box<dyn Engine>> {
    Ok(match name {
        OURS => Box::new(ours::open(dir)?),
        "redb" => Box::new(redb_peer::open(dir)?),
        "lmdb" => Box::new(lmdb::open(dir)?),
        "fjall" => Box::new(fjall_peer::open(dir)?),
        "sled" => Box::new(sled_peer::open(dir)?),
        "sqlite" => Box::new(sqlite::open(dir)?),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => Box::new(rocks::open(dir)?),
        other => bail!("unknown engine {other:?}; known: {}", ENGINES.join(", ")),
    })
}

/// The workload, generated once from the fixed seed so every engine sees the same operations.
struct Workload {
    bulk: Vec<Kv>,
    individual: Vec<Kv>,
    batches: Vec<Vec<Kv>>,
    /// Indexes into `bulk`, in random order.
    read_order: Vec<usize>,
    scan_starts: Vec<usize>,
    /// Half of the bulk keys, in random order.
    removals: Vec<usize>,
}

fn random_kv(rng: &mut StdRng) -> Kv {
    let mut k = vec![0u8; KEY_LEN];
    let mut v = vec![0u8; VALUE_LEN];
    rng.fill(&mut k[..]);
    rng.fill(&mut v[..]);
    (k, v)
}

impl Workload {
    fn new(n: usize) -> Workload {
        let mut rng = StdRng::seed_from_u64(SEED);
        let bulk = (0..n).map(|_| random_kv(&mut rng)).collect();
        let individual = (0..INDIVIDUAL_WRITES)
            .map(|_| random_kv(&mut rng))
            .collect();
        let batches = (0..BATCHES)
            .map(|_| (0..BATCH_SIZE).map(|_| random_kv(&mut rng)).collect())
            .collect();
        let mut read_order: Vec<usize> = (0..n).collect();
        read_order.shuffle(&mut rng);
        let scan_starts = (0..SCANS).map(|_| rng.gen_range(0..n)).collect();
        let mut removals: Vec<usize> = (0..n).collect();
        removals.shuffle(&mut rng);
        removals.truncate(n / 2);
        Workload {
            bulk,
            individual,
            batches,
            read_order,
            scan_starts,
            removals,
        }
    }
}

#[derive(Default, Clone)]
struct Results {
    bulk_load: Duration,
    /// Ours only: bulk load plus moving the memtable into the B+Tree.
    bulk_load_flush: Option<Duration>,
    individual: Duration,
    individual_p50: Duration,
    individual_p99: Duration,
    /// fdatasync floor measured just before this engine's individual writes (the disk is shared).
    floor: Duration,
    batch: Duration,
    reads_first: Duration,
    reads: Duration,
    reads_2t: Duration,
    ranges: Duration,
    removals: Duration,
    size_bytes: u64,
    /// Ours only: the B+Tree file's and the WAL's share of `size_bytes`.
    tree_bytes: Option<u64>,
    wal_bytes: Option<u64>,
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let t = Instant::now();
    let out = f()?;
    Ok((out, t.elapsed()))
}

fn read_all(e: &dyn Engine, w: &Workload, order: &[usize]) -> Result<()> {
    let mut r = e.reader()?;
    for &i in order {
        let (k, v) = &w.bulk[i];
        if r.get(k)? != v.len() {
            bail!("key {i} missing or wrong length");
        }
    }
    Ok(())
}

/// Allocated bytes of every file under `dir` (sparse files count what they use).
fn disk_usage(dir: &Path) -> Result<u64> {
    disk_usage_of(dir, &|_| true)
}

/// Allocated bytes of the files under `dir` whose name `keep` accepts.
fn disk_usage_of(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            disk_usage_of(&entry.path(), keep)?
        } else if keep(&entry.file_name().to_string_lossy()) {
            meta.blocks() * 512
        } else {
            0
        };
    }
    Ok(total)
}

fn run_engine(name: &str, w: &Workload, base: &Path) -> Result<Results> {
    let tmp = tempfile::tempdir_in(base)?;
    let e = open(name, tmp.path()).with_context(|| format!("opening {name}"))?;
    let e = e.as_ref();
    let mut r = Results::default();
    let log = |phase: &str, d: Duration| eprintln!("  {name:<9} {phase:<22} {:>10.1} ms", ms(d));

    r.bulk_load = timed(|| e.write(&w.bulk))?.1;
    log("bulk load", r.bulk_load);
    if name == OURS {
        let flush = timed(|| e.settle())?.1;
        r.bulk_load_flush = Some(r.bulk_load + flush);
        log("bulk load + flush", r.bulk_load + flush);
    }

    r.floor = fdatasync_floor(base, FLOOR_SAMPLES / 5)?;
    let mut lat = Vec::with_capacity(w.individual.len());
    let start = Instant::now();
    for kv in &w.individual {
        let t = Instant::now();
        e.write(std::slice::from_ref(kv))?;
        lat.push(t.elapsed());
    }
    r.individual = start.elapsed();
    lat.sort();
    r.individual_p50 = percentile(&lat, 0.50).unwrap_or_default();
    r.individual_p99 = percentile(&lat, 0.99).unwrap_or_default();
    log("individual writes", r.individual);

    r.batch = timed(|| {
        for b in &w.batches {
            e.write(b)?;
        }
        Ok(())
    })?
    .1;
    log("batch writes", r.batch);

    e.settle()?;
    r.reads_first = timed(|| read_all(e, w, &w.read_order))?.1;
    r.reads = timed(|| read_all(e, w, &w.read_order))?.1;
    log("random reads", r.reads);

    let chunk = w.read_order.len().div_ceil(READ_THREADS);
    r.reads_2t = timed(|| {
        std::thread::scope(|s| {
            let handles: Vec<_> = w
                .read_order
                .chunks(chunk)
                .map(|part| s.spawn(move || read_all(e, w, part)))
                .collect();
            for h in handles {
                h.join().expect("reader thread panicked")?;
            }
            Ok(())
        })
    })?
    .1;
    log("random reads 2 threads", r.reads_2t);

    r.ranges = timed(|| {
        let mut rd = e.reader()?;
        for &i in &w.scan_starts {
            if rd.scan(&w.bulk[i].0, SCAN_LEN)? == 0 {
                bail!("scan from key {i} returned nothing");
            }
        }
        Ok(())
    })?
    .1;
    log("range reads", r.ranges);

    let keys: Vec<&[u8]> = w.removals.iter().map(|&i| w.bulk[i].0.as_slice()).collect();
    r.removals = timed(|| e.remove(&keys))?.1;
    log("removals", r.removals);

    e.settle()?;
    r.size_bytes = disk_usage(tmp.path())?;
    eprintln!("  {name:<9} {:<22} {:>10.1} MiB", "size", mib(r.size_bytes));
    if name == OURS {
        r.tree_bytes = Some(disk_usage_of(tmp.path(), &|f| f == "tree.db")?);
        r.wal_bytes = Some(disk_usage_of(tmp.path(), &|f| f.ends_with(".wal"))?);
    }
    let detail = e.describe()?;
    if !detail.is_empty() {
        eprintln!("  {name:<9} {detail}");
    }
    Ok(r)
}

/// p50 latency of appending 128 bytes to a file and fdatasync'ing it: the floor for a durable commit.
fn fdatasync_floor(base: &Path, samples: usize) -> Result<Duration> {
    let tmp = tempfile::tempdir_in(base)?;
    let mut f = File::create(tmp.path().join("floor"))?;
    let buf = [0xA5u8; 128];
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    lat.sort();
    percentile(&lat, 0.50).context("no fdatasync samples")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// The table's rows: label, value per engine, how to print it; lower is better for all.
struct Row {
    label: &'static str,
    get: fn(&Results) -> Option<f64>,
    unit: &'static str,
    /// Counted in the geometric mean.
    in_mean: bool,
    /// A durable-write row: engines in `NOT_FSYNC` are not the best peer here.
    durable: bool,
}

/// sled 0.34's `flush` ends in `sync_file_range`, which neither flushes the drive cache nor the file's
/// metadata: its commits are not durable in the sense the others' are.
const NOT_FSYNC: &[&str] = &["sled"];

const ROWS: &[Row] = &[
    Row {
        label: "bulk load (durable)",
        get: |r| Some(ms(r.bulk_load)),
        unit: "ms",
        durable: true,
        in_mean: true,
    },
    Row {
        label: "bulk load + flush to tree",
        get: |r| r.bulk_load_flush.map(ms),
        unit: "ms",
        durable: true,
        in_mean: false,
    },
    Row {
        label: "individual writes",
        get: |r| Some(ms(r.individual)),
        unit: "ms",
        durable: true,
        in_mean: true,
    },
    Row {
        label: "individual p50",
        get: |r| Some(us(r.individual_p50)),
        unit: "us",
        durable: true,
        in_mean: false,
    },
    Row {
        label: "  fdatasync floor then",
        get: |r| Some(us(r.floor)),
        unit: "us floor",
        durable: false,
        in_mean: false,
    },
    Row {
        label: "individual p99",
        get: |r| Some(us(r.individual_p99)),
        unit: "us",
        durable: true,
        in_mean: false,
    },
    Row {
        label: "batch writes",
        get: |r| Some(ms(r.batch)),
        unit: "ms",
        durable: true,
        in_mean: true,
    },
    Row {
        label: "random reads (1st pass)",
        get: |r| Some(ms(r.reads_first)),
        unit: "ms",
        durable: false,
        in_mean: false,
    },
    Row {
        label: "random reads",
        get: |r| Some(ms(r.reads)),
        unit: "ms",
        durable: false,
        in_mean: true,
    },
    Row {
        label: "random reads (2 threads)",
        get: |r| Some(ms(r.reads_2t)),
        unit: "ms",
        durable: false,
        in_mean: true,
    },
    Row {
        label: "range reads",
        get: |r| Some(ms(r.ranges)),
        unit: "ms",
        durable: false,
        in_mean: true,
    },
    Row {
        label: "removals",
        get: |r| Some(ms(r.removals)),
        unit: "ms",
        durable: true,
        in_mean: true,
    },
    Row {
        label: "size on disk",
        get: |r| Some(mib(r.size_bytes)),
        unit: "MiB",
        durable: false,
        in_mean: true,
    },
    // Ours split in its B+Tree file (against the peers' whole size) and its WAL (kept by retention).
    Row {
        label: "size: B+Tree file",
        get: |r| Some(mib(r.tree_bytes.unwrap_or(r.size_bytes))),
        unit: "MiB",
        durable: false,
        in_mean: false,
    },
    Row {
        label: "size: WAL",
        get: |r| r.wal_bytes.map(mib),
        unit: "MiB",
        durable: false,
        in_mean: false,
    },
];

fn print_table(n: usize, floor: Duration, results: &[(String, Results)]) {
    let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    let ours = results.iter().find(|(n, _)| n == OURS).map(|(_, r)| r);
    let has_redb = names.contains(&"redb");
    print!("\n{:<28}", format!("N = {n}"));
    for name in &names {
        print!("{name:>11}");
    }
    println!("{:>12}{:>10}{:>10}", "ours/best", "ours/redb", "ours/lmdb");
    let mut logs = Vec::new();
    for row in ROWS {
        print!(
            "{:<28}",
            format!("{} ({})", row.label, row.unit.trim_end_matches(" floor"))
        );
        for (_, r) in results {
            match (row.get)(r) {
                Some(v) => print!("{v:>11.1}"),
                None => print!("{:>11}", "-"),
            }
        }
        // The floor row is context, not a contest.
        let mine = ours
            .and_then(|r| (row.get)(r))
            .filter(|_| row.unit != "us floor");
        let peer = |f: &dyn Fn(&str) -> bool| {
            results
                .iter()
                .filter(|(n, _)| n != OURS && f(n))
                .filter(|(n, _)| !(row.durable && NOT_FSYNC.contains(&n.as_str())))
                .filter_map(|(_, r)| (row.get)(r))
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))
        };
        let best = peer(&|_| true);
        let redb = peer(&|n| n == "redb");
        let lmdb = peer(&|n| n == "lmdb");
        for other in [best, redb, lmdb] {
            match (mine, other) {
                (Some(a), Some(b)) if b > 0.0 => print!("{:>11.2}x", a / b),
                _ => print!("{:>12}", "-"),
            }
        }
        println!();
        if let (true, Some(a), Some(b)) = (row.in_mean, mine, best) {
            if a > 0.0 && b > 0.0 {
                logs.push((a / b).ln());
            }
        }
    }
    println!("fdatasync floor p50 (us)    {:>11.1}", us(floor));
    if let Some(r) = ours {
        println!(
            "ours individual p50 / fdatasync floor measured just before: {:.2}x",
            us(r.individual_p50) / us(r.floor)
        );
    }
    println!("best peer on write rows excludes {NOT_FSYNC:?} (commits not fsync-durable)");
    if !logs.is_empty() {
        let g = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
        println!(
            "geometric mean of ours/best peer over {} rows: {g:.2}x{}",
            logs.len(),
            if has_redb { "" } else { " (redb not run)" }
        );
    }
}

fn write_json(path: &Path, floor: Duration, results: &[(String, Results)]) -> Result<()> {
    let mut engines = serde_json::Map::new();
    for (name, r) in results {
        let mut e = serde_json::json!({
            "bulk_load_ms": ms(r.bulk_load),
            "individual_writes_ms": ms(r.individual),
            "individual_p50_us": us(r.individual_p50),
            "individual_p99_us": us(r.individual_p99),
            "fdatasync_p50_us_before_individual": us(r.floor),
            "batch_writes_ms": ms(r.batch),
            "random_reads_ms": ms(r.reads),
            "random_reads_first_ms": ms(r.reads_first),
            "random_reads_2t_ms": ms(r.reads_2t),
            "range_reads_ms": ms(r.ranges),
            "removals_ms": ms(r.removals),
            "size_bytes": r.size_bytes,
        });
        if let Some(d) = r.bulk_load_flush {
            e["bulk_load_flush_ms"] = ms(d).into();
        }
        if let (Some(t), Some(w)) = (r.tree_bytes, r.wal_bytes) {
            e["tree_bytes"] = t.into();
            e["wal_bytes"] = w.into();
        }
        engines.insert(name.clone(), e);
    }
    let doc = serde_json::json!({
        "engines": engines,
        "floor": { "fdatasync_p50_us": us(floor) },
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}

/// redb's benchmark workload against UnisonDB's engine and the peer engines.
#[derive(Parser, Debug)]
#[command(name = "kv")]
struct Args {
    /// Pairs in the bulk load (underscores allowed: 1_000_000).
    #[arg(long, default_value = "1000000", value_parser = parse_n)]
    n: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Engines to run, in order (default: all built in).
    #[arg(long, value_delimiter = ',', default_values_t = ENGINES.iter().map(|s| s.to_string()))]
    engines: Vec<String>,
    /// Where the engines' temp dirs go (default: $TMPDIR).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// Passed by `cargo bench` to harness-less benches; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_n(s: &str) -> Result<usize, String> {
    let n: usize = s.replace('_', "").parse().map_err(|e| format!("{e}"))?;
    if n < 2 {
        return Err("must be at least 2".into());
    }
    Ok(n)
}

fn main() -> Result<()> {
    let args = Args::parse();
    eprintln!(
        "generating workload: N = {}, {KEY_LEN}-byte keys, {VALUE_LEN}-byte values, seed {SEED:#x}",
        args.n
    );
    let w = Workload::new(args.n);
    let floor = fdatasync_floor(&args.dir, FLOOR_SAMPLES)?;
    eprintln!("fdatasync floor p50: {:.1} us", us(floor));
    let mut results = Vec::new();
    for name in &args.engines {
        let r = run_engine(name, &w, &args.dir).with_context(|| format!("engine {name}"))?;
        results.push((name.clone(), r));
    }
    print_table(args.n, floor, &results);
    if let Some(path) = &args.json {
        write_json(path, floor, &results)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
