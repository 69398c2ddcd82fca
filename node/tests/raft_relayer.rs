//! A relayer whose `replication.upstream` lists every member of a hub group (three real processes
//! on loopback) follows the group, not one pod: it streams from a follower (never the leader while a
//! follower keeps up), and when its member is SIGKILLed, or becomes the leader, it moves on and
//! continues from the new member's history. Under a write load with every acknowledgement recorded,
//! the member it follows is killed, then the leader, then its member again (each restarted). After:
//! every acknowledged write is on the relayer, its keyspace equals a member's, and its WAL equals the
//! members' record by record (LSN, epoch, HLC, checksum) up to the commit index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use parking_lot::Mutex;
use serde_json::Value;
use unisondb_testkit::{loopback_config, NodeProcess, Ports, Wait};

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");
const NS: &str = "grp";

struct Member {
    id: u64,
    dir: PathBuf,
    ports: Ports,
    proc: NodeProcess,
}

fn members(root: &Path, n: u64) -> Vec<Member> {
    let ports: Vec<Ports> = (0..n).map(|_| Ports::free()).collect();
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("\"{}=127.0.0.1:{}\"", i + 1, p.grpc))
        .collect();
    (0..n)
        .map(|i| {
            let id = i + 1;
            let dir = root.join(format!("member-{id}"));
            let p = ports[i as usize];
            let mut yaml = loopback_config(&dir, p, &[NS], None, "");
            yaml.push_str(&format!(
                "cluster:\n  node_id: {id}\n  peers: [{}]\n  advertise_http: 127.0.0.1:{}\n",
                peers.join(", "),
                p.http
            ));
            let proc =
                NodeProcess::new(BIN, &format!("member-{id}"), &dir, yaml).dump_log_on_panic();
            Member {
                id,
                dir,
                ports: p,
                proc,
            }
        })
        .collect()
}

async fn get_json(c: &reqwest::Client, url: &str) -> Option<Value> {
    let r = c
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The member all running members agree leads.
async fn leader(c: &reqwest::Client, ms: &[Member]) -> Option<usize> {
    let mut claims = Vec::new();
    let mut named = Vec::new();
    for (i, m) in ms.iter().enumerate() {
        if !m.proc.is_started() {
            continue;
        }
        let v = get_json(c, &m.ports.url(&format!("/status/leader?namespace={NS}"))).await?;
        if v["role"] == "leader" {
            claims.push(i);
        }
        named.push(v["leader_id"].as_u64());
    }
    let [l] = claims[..] else { return None };
    named.iter().all(|n| *n == Some(ms[l].id)).then_some(l)
}

async fn wait_leader(c: &reqwest::Client, ms: &[Member]) -> anyhow::Result<usize> {
    Ok(Wait::new("an agreed leader", Duration::from_secs(40))
        .every(Duration::from_millis(100))
        .until_async(async || leader(c, ms).await.map(Some).ok_or("none yet"))
        .await?)
}

/// The member the relayer streams from now (its `/stats` names the upstream), if connected.
async fn followed(c: &reqwest::Client, relayer: &Ports, ms: &[Member]) -> Option<usize> {
    let s = get_json(c, &relayer.url(&format!("/api/v1/{NS}/stats"))).await?;
    let r = &s["replication"];
    if r["connected"] != true {
        return None;
    }
    let up = r["upstream"].as_str()?;
    ms.iter().position(|m| m.ports.grpc_url() == up)
}

async fn offset(c: &reqwest::Client, p: &Ports) -> Option<u64> {
    get_json(c, &p.url(&format!("/api/v1/{NS}/offset")))
        .await?
        .get("lsn")?
        .as_u64()
}

async fn all_kv(c: &reqwest::Client, p: &Ports) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut req = c
            .get(p.url(&format!("/api/v1/{NS}/kv")))
            .query(&[("limit", "1000")]);
        if let Some(a) = &after {
            req = req.query(&[("after", a.as_str())]);
        }
        let v: Value = req.send().await?.error_for_status()?.json().await?;
        for it in v["items"].as_array().context("scan items")? {
            out.insert(
                it["key"].as_str().unwrap_or_default().to_string(),
                it["value"].as_str().unwrap_or_default().to_string(),
            );
        }
        match v["next"].as_str() {
            Some(nx) => after = Some(nx.to_string()),
            None => return Ok(out),
        }
    }
}

fn wal_records(dir: &Path) -> anyhow::Result<Vec<(u64, u64, u64, u64)>> {
    let out = std::process::Command::new(BIN)
        .args(["wal", "inspect", "--json"])
        .arg(dir.join("data"))
        .output()
        .context("running unisondb wal inspect")?;
    if !out.status.success() {
        bail!(
            "wal inspect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[NS]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["lsn"].as_u64().unwrap_or(0),
                r["epoch"].as_u64().unwrap_or(0),
                r["hlc"].as_u64().unwrap_or(0),
                r["payload_crc32c"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Waits until the relayer streams from a follower (not the leader), and returns it.
async fn wait_on_follower(
    c: &reqwest::Client,
    relayer: &Ports,
    ms: &[Member],
    what: &str,
) -> anyhow::Result<usize> {
    Ok(Wait::new(
        format!("the relayer on a follower ({what})"),
        Duration::from_secs(40),
    )
    .every(Duration::from_millis(100))
    .until_async(async || {
        let (f, l) = (followed(c, relayer, ms).await, leader(c, ms).await);
        match (f, l) {
            (Some(f), Some(l)) if f != l => Ok(Some(f)),
            other => Err(format!("(followed, leader) = {other:?}")),
        }
    })
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relayer_follows_the_group_through_member_and_leader_kills() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let c = reqwest::Client::new();
    let mut ms = members(root.path(), 3);
    for m in ms.iter_mut() {
        m.proc.start()?;
    }
    for m in &ms {
        m.proc
            .wait_http_ok(&c, &m.ports.url("/readyz"), Duration::from_secs(30))
            .await?;
    }
    wait_leader(&c, &ms).await?;
    // The relayer lists every member (YAML list), the leader included.
    let list: Vec<String> = ms.iter().map(|m| m.ports.grpc_url()).collect();
    let rdir = root.path().join("relayer");
    let rports = Ports::free();
    let ryaml = loopback_config(
        &rdir,
        rports,
        &[NS],
        Some(&format!("[{}]", list.join(", "))),
        "",
    );
    let mut relayer = NodeProcess::new(BIN, "relayer", &rdir, ryaml).dump_log_on_panic();
    relayer.start()?;
    relayer
        .wait_http_ok(&c, &rports.url("/healthz"), Duration::from_secs(30))
        .await?;

    // Writes to any member, every acknowledgement recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<(String, String, u64)>>> = Arc::default();
    let urls: Vec<String> = ms.iter().map(|m| m.ports.url("")).collect();
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (c, urls, stop, acks) = (c.clone(), urls.clone(), stop.clone(), acks.clone());
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let (key, value) = (format!("w{t}-{i:06}"), format!("value-{t}-{i}"));
                    let r = c
                        .put(format!(
                            "{}/api/v1/{NS}/kv/{key}",
                            urls[(i + t) % urls.len()]
                        ))
                        .json(&serde_json::json!({"value": B64.encode(&value)}))
                        .timeout(Duration::from_secs(3))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let body: Value = r.json().await.unwrap_or_default();
                            acks.lock()
                                .push((key, value, body["lsn"].as_u64().unwrap_or(0)));
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
        })
        .collect();

    let first = wait_on_follower(&c, &rports, &ms, "at start").await?;
    eprintln!("relayer streams from member {}", ms[first].id);
    // Kill the member the relayer follows, then the leader, then its member again.
    for (k, kill_leader) in [false, true, false].into_iter().enumerate() {
        let l = wait_leader(&c, &ms).await?;
        let f = wait_on_follower(&c, &rports, &ms, "before a kill").await?;
        let victim = if kill_leader { l } else { f };
        let before = acks.lock().len();
        ms[victim].proc.kill();
        // Writes resume and the relayer keeps applying them from another member.
        let lsn_at_kill = offset(&c, &rports).await.unwrap_or(0);
        Wait::new("writes and the relayer to move on", Duration::from_secs(40))
            .every(Duration::from_millis(100))
            .until_async(async || {
                let n = acks.lock().len();
                let r = offset(&c, &rports).await.unwrap_or(0);
                let on = followed(&c, &rports, &ms).await;
                if n > before + 20 && r > lsn_at_kill + 10 && on.is_some_and(|o| o != victim) {
                    Ok(Some(()))
                } else {
                    Err(format!("{} new acks, relayer at {r} on {on:?}", n - before))
                }
            })
            .await?;
        eprintln!(
            "kill {}: member {} ({}) killed; relayer now on member {:?}",
            k + 1,
            ms[victim].id,
            if kill_leader {
                "leader"
            } else {
                "the relayer's upstream"
            },
            followed(&c, &rports, &ms).await.map(|i| ms[i].id)
        );
        ms[victim].proc.start()?;
        ms[victim]
            .proc
            .wait_http_ok(
                &c,
                &ms[victim].ports.url("/readyz"),
                Duration::from_secs(30),
            )
            .await?;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let acks = acks.lock().clone();
    // With everyone back, the relayer ends on a follower.
    let last = wait_on_follower(&c, &rports, &ms, "at the end").await?;

    let commit = Wait::new("members to converge", Duration::from_secs(30))
        .every(Duration::from_millis(100))
        .until_async(async || {
            let mut v = Vec::new();
            for m in &ms {
                v.push(offset(&c, &m.ports).await);
            }
            if v.iter().all(|x| x.is_some() && *x == v[0]) {
                Ok(Some(v[0].unwrap_or(0)))
            } else {
                Err(format!("{v:?}"))
            }
        })
        .await?;
    Wait::new("the relayer to catch up", Duration::from_secs(30))
        .every(Duration::from_millis(100))
        .until_async(async || match offset(&c, &rports).await {
            Some(l) if l >= commit => Ok(Some(())),
            other => Err(format!("relayer at {other:?}, commit {commit}")),
        })
        .await?;
    let (member_kv, relayer_kv) = (
        all_kv(&c, &ms[last].ports).await?,
        all_kv(&c, &rports).await?,
    );
    for (key, value, lsn) in &acks {
        let got = relayer_kv
            .get(key)
            .with_context(|| format!("acknowledged {key} (LSN {lsn}) missing on the relayer"))?;
        assert_eq!(B64.decode(got)?, value.as_bytes(), "{key}");
    }
    assert!(
        member_kv == relayer_kv,
        "relayer keyspace differs from a member's"
    );

    relayer.terminate(Duration::from_secs(20))?;
    for m in ms.iter_mut() {
        m.proc.terminate(Duration::from_secs(20))?;
    }
    let upto = |w: Vec<(u64, u64, u64, u64)>| -> Vec<_> {
        w.into_iter().filter(|r| r.0 <= commit).collect()
    };
    let reference = upto(wal_records(&ms[0].dir)?);
    assert_eq!(
        reference.len() as u64,
        commit,
        "member 1 holds every committed record"
    );
    for m in &ms[1..] {
        assert!(
            upto(wal_records(&m.dir)?) == reference,
            "member {}'s WAL differs",
            m.id
        );
    }
    assert!(
        upto(wal_records(&rdir)?) == reference,
        "the relayer's WAL differs from the members' up to the commit index {commit}"
    );
    eprintln!(
        "{} acknowledged writes, commit index {commit}; relayer identical record by record",
        acks.len()
    );
    Ok(())
}
