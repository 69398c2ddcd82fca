//! (HA) A UnisonHub that starts as a single hub holding data and is converted into a group by
//! editing `replicas: 1` to `replicas: 3` (the operator recreates the StatefulSet around its pod and
//! restarts it; the pod converts its data into the group's log). Then, as a hub with `replicas: 3` (a Raft group per namespace) and a relayer following it.
//! Under a write load through the client Service (every acknowledgement recorded with its value),
//! the leader pod is deleted: the operator labels the new leader, writes resume through the same
//! Service with no client change, the relayer keeps serving reads throughout, `kubectl get uhub`
//! shows the new leader, and every member and the relayer hold every acknowledged record with
//! its value (compared record by record), the single hub's writes included. Then, under the same
//! load, the group is scaled 3 -> 5 -> 3 (`kubectl scale uhub`): every pod lists the new voters,
//! writes go on, and no acknowledged write is lost.

use super::*;

const HA: &str = "ha-hub";
const HA_EDGE: &str = "ha-edge";

/// Writes through one address (a Service's cluster IP) as a client would, recording (key, value)
/// of every acknowledged write; failures (no endpoint during a failover, 503 without a leader)
/// are retried with the next key, never counted as acknowledged.
struct ServiceWriter {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    failures: Arc<Mutex<u64>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ServiceWriter {
    fn start(ip: String, tag: &str) -> ServiceWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(0u64));
        let (s, a, f, tag) = (
            stop.clone(),
            acked.clone(),
            failures.clone(),
            tag.to_string(),
        );
        let handle = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                let key = format!("g-{tag}-{n:06}");
                let value = format!("group value {n}");
                n += 1;
                match put_kv(&ip, &key, value.as_bytes()) {
                    Ok(_) => {
                        a.lock().unwrap().push((key, b64(value.as_bytes())));
                        std::thread::sleep(Duration::from_millis(30));
                    }
                    Err(_) => {
                        *f.lock().unwrap() += 1;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        });
        ServiceWriter {
            stop,
            acked,
            failures,
            handle: Some(handle),
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the writer; returns the acknowledged (key, base64 value) pairs and the failures.
    fn finish(mut self) -> (Vec<(String, String)>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
        let failures = *self.failures.lock().unwrap();
        (self.acked.lock().unwrap().clone(), failures)
    }

    fn wait_for(&self, what: &str, n: usize, timeout: Duration) {
        wait_until(what, timeout, || {
            if self.count() >= n {
                Ok(())
            } else {
                Err(format!("{} acknowledged", self.count()))
            }
        });
    }
}

/// Every KV record of a pod (key -> base64 value), all pages.
fn kv_records(ip: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("http://{ip}:4000/api/v1/{NS}/kv?limit=1000");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let v = get_json(&url)?;
        for it in v["items"].as_array().cloned().unwrap_or_default() {
            out.insert(
                it["key"].as_str().unwrap_or_default().to_string(),
                it["value"].as_str().unwrap_or_default().to_string(),
            );
        }
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return Ok(out),
        }
    }
}

fn cluster_ip(c: &Cluster, svc: &str) -> String {
    c.kubectl(&[
        "get",
        "svc",
        svc,
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
    .trim()
    .to_string()
}

/// The pod IPs behind a Service (its Endpoints' ready addresses).
fn endpoint_ips(c: &Cluster, svc: &str) -> Result<Vec<String>, String> {
    let out = c.try_kubectl(&[
        "get",
        "endpoints",
        svc,
        "-n",
        NS,
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ])?;
    let mut ips: Vec<String> = out.split_whitespace().map(String::from).collect();
    ips.sort();
    Ok(ips)
}

fn leader_of(c: &Cluster) -> Result<String, String> {
    let st = status(c, "unisonhub", HA);
    st["leader"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| format!("no leader in the status yet: {st}"))
}

pub(super) fn hub_group_fails_over_under_writes(cx: &mut Ctx) {
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    let t = Instant::now();
    let c = &cx.c;
    let image = &cx.release_image;
    let manifest = format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata:\n  name: {HA}\nspec:\n  image: {image}\n  replicas: 1\n  namespaces: [{NS}]\n  storage:\n    size: 1Gi\n---\napiVersion: unisondb.io/v1alpha1\nkind: UnisonRelayer\nmetadata:\n  name: {HA_EDGE}\nspec:\n  image: {image}\n  upstream:\n    hubRef:\n      name: {HA}\n  replicas: 1\n  storage:\n    size: 1Gi\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    kwait(c, &format!("unisonhub/{HA}"), "5m");
    // A single hub with data first, then converted into a group of 3 in place.
    let hub_ip = cluster_ip(c, HA);
    let mut seeded = Vec::new();
    for n in 0..20 {
        let (key, value) = (format!("single-{n:03}"), format!("single hub value {n}"));
        wait_until(
            &format!("the single hub to take {key}"),
            Duration::from_secs(60),
            || put_kv(&hub_ip, &key, value.as_bytes()),
        );
        seeded.push((key, b64(value.as_bytes())));
    }
    timings.push(("single hub Ready, 20 writes", t.elapsed()));
    let t = Instant::now();
    c.kubectl(&[
        "patch",
        "unisonhub",
        HA,
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ]);
    let leader = wait_until(
        "the hub group's leader in its status",
        Duration::from_secs(120),
        || leader_of(c),
    );
    let leader_ip = pod_ip(c, &leader);
    wait_until(
        "the client Service to route to the leader pod only",
        Duration::from_secs(60),
        || match endpoint_ips(c, HA)? {
            ips if ips == [leader_ip.clone()] => Ok(()),
            ips => Err(format!("endpoints {ips:?}, leader {leader} at {leader_ip}")),
        },
    );
    let ro = endpoint_ips(c, &format!("{HA}-ro")).expect("read Service endpoints");
    assert_eq!(ro.len(), 3, "the read Service spans every member: {ro:?}");
    let pdb = c.json(&["get", "pdb", HA, "-n", NS]);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{pdb}");
    let sts = c.json(&["get", "statefulset", HA, "-n", NS]);
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    kwait(c, &format!("unisonrelayer/{HA_EDGE}"), "5m");
    wait_until(
        "the relayer to follow the group's followers first, then its read Service",
        Duration::from_secs(120),
        || {
            let up = status(c, "unisonrelayer", HA_EDGE)["upstream"].clone();
            let follows = up.as_str().is_some_and(|u| {
                u.split(',')
                    .map(|a| a.split("://").last().unwrap_or(a).split('.').next())
                    .eq([
                        Some(format!("{HA}-followers").as_str()),
                        Some(format!("{HA}-ro").as_str()),
                    ])
            });
            if follows {
                Ok(())
            } else {
                Err(format!("upstream {up}"))
            }
        },
    );
    kwait(c, &format!("unisonrelayer/{HA_EDGE}"), "5m");
    timings.push((
        "replicas 1 -> 3: group converted, relayer Ready, leader labelled",
        t.elapsed(),
    ));

    let writer = ServiceWriter::start(cluster_ip(c, HA), "ha");
    writer.wait_for(
        "writes through the group's client Service",
        20,
        Duration::from_secs(60),
    );
    let first = writer.acked.lock().unwrap()[0].0.clone();
    let read_url = format!(
        "http://{}:4000/api/v1/{NS}/kv/{first}",
        cluster_ip(c, HA_EDGE)
    );
    wait_until(
        "the relayer to serve a write made through the group",
        Duration::from_secs(60),
        || match curl(&[&read_url]) {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {}", String::from_utf8_lossy(&body))),
        },
    );
    let reader = Reader::start(read_url);
    let (old_uid, _) = pod_ready(c, &leader).expect("the leader pod is Ready");
    let t = Instant::now();
    c.kubectl(&["delete", "pod", &leader, "-n", NS, "--wait=false"]);
    let acked_before = writer.count();
    let new_leader = wait_until(
        "the status to name a new leader",
        Duration::from_secs(120),
        || match leader_of(c)? {
            l if l != leader => Ok(l),
            l => Err(format!("still {l}")),
        },
    );
    timings.push(("leader pod deleted → new leader in the status", t.elapsed()));
    let new_ip = pod_ip(c, &new_leader);
    wait_until(
        "the client Service to route to the new leader",
        Duration::from_secs(60),
        || match endpoint_ips(c, HA)? {
            ips if ips == [new_ip.clone()] => Ok(()),
            ips => Err(format!(
                "endpoints {ips:?}, new leader {new_leader} at {new_ip}"
            )),
        },
    );
    writer.wait_for(
        "writes to resume through the same Service",
        acked_before + 20,
        Duration::from_secs(90),
    );
    timings.push((
        "leader pod deleted → writes resumed through the Service",
        t.elapsed(),
    ));
    let table = c.kubectl(&["get", "uhub", HA, "-n", NS]);
    eprintln!("{table}");
    assert!(
        table.contains("LEADER") && table.contains(&new_leader),
        "`kubectl get uhub` shows the new leader {new_leader}:\n{table}"
    );
    wait_until(
        &format!("{leader} to be recreated and Ready"),
        Duration::from_secs(180),
        || match pod_ready(c, &leader)? {
            (uid, _) if uid == old_uid => Err("still the old pod".into()),
            _ => Ok(()),
        },
    );
    writer.wait_for(
        "more writes with every member back",
        acked_before + 40,
        Duration::from_secs(60),
    );
    // Scale 3 -> 5 -> 3 under the same write load: the new members join as voters, then the
    // operator removes the two highest from the group before it shrinks the StatefulSet.
    for (to, what) in [(5usize, "scaled 3 -> 5"), (3, "scaled 5 -> 3")] {
        let t = Instant::now();
        let before = writer.count();
        c.kubectl(&[
            "scale",
            "unisonhub",
            HA,
            "-n",
            NS,
            &format!("--replicas={to}"),
        ]);
        wait_until(
            &format!("{to} pods, each Ready and listing {to} voters"),
            Duration::from_secs(300),
            || {
                let pods = pods_of(c, HA);
                if pods.len() != to {
                    return Err(format!("pods {pods:?}"));
                }
                for pod in &pods {
                    pod_ready(c, pod)?;
                    let peers = get_json(&format!(
                        "http://{}:4000/status/peers?namespace={NS}",
                        pod_ip(c, pod)
                    ))?;
                    let voters = peers["peers"]
                        .as_array()
                        .map(|p| p.iter().filter(|m| m["voter"] == true).count())
                        .unwrap_or(0);
                    if voters != to {
                        return Err(format!("{pod} lists {voters} voters: {peers}"));
                    }
                }
                Ok(())
            },
        );
        writer.wait_for(
            &format!("writes to go on after being {what}"),
            before + 20,
            Duration::from_secs(90),
        );
        timings.push((what, t.elapsed()));
    }
    let (mut acked, failures) = writer.finish();
    let (reads, failed) = reader.finish();
    eprintln!(
        "[cluster] hub group failover: {} writes acknowledged ({failures} refused during the \
         failover and retried), {reads} relayer reads, {} failed",
        acked.len(),
        failed.len()
    );
    assert!(reads >= 20, "only {reads} reads were made");
    acked.extend(seeded);
    assert!(
        failed.is_empty(),
        "{} of {reads} reads from the relayer failed during the failover, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // 0 acknowledged writes lost, record by record, on every member and the relayer; the members
    // hold identical data.
    let mut members: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for pod in pods_of(c, HA).into_iter().chain(pods_of(c, HA_EDGE)) {
        let ip = pod_ip(c, &pod);
        let records = wait_until(
            &format!(
                "{pod} ({ip}) to hold all {} acknowledged writes",
                acked.len()
            ),
            Duration::from_secs(120),
            || {
                let have = kv_records(&ip)?;
                let wrong: Vec<&(String, String)> = acked
                    .iter()
                    .filter(|(k, v)| have.get(k) != Some(v))
                    .collect();
                if wrong.is_empty() {
                    Ok(have)
                } else {
                    Err(format!(
                        "{} missing or different, e.g. {:?}",
                        wrong.len(),
                        &wrong[..wrong.len().min(3)]
                    ))
                }
            },
        );
        members.push((pod, records));
    }
    for (pod, records) in &members[1..] {
        if pod.starts_with(HA_EDGE) {
            continue;
        }
        assert!(
            records == &members[0].1,
            "{pod} and {} differ ({} vs {} records)",
            members[0].0,
            records.len(),
            members[0].1.len()
        );
    }
    let events = c.kubectl(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        &format!("reason=LeaderChanged,involvedObject.name={HA}"),
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    // kube-runtime's Recorder folds repeats of one reason on one object into a series that keeps
    // the first note, so only the first leader is named there; the status names the new one.
    assert!(
        events.contains("leader pod"),
        "a LeaderChanged event on {HA}: {events:?}"
    );
    c.kubectl_stdin(&["delete", "-f", "-"], &manifest);
    wait_until(
        "the hub group's pods to go",
        Duration::from_secs(180),
        || {
            let left: Vec<String> = pods_of(c, HA)
                .into_iter()
                .chain(pods_of(c, HA_EDGE))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    for (what, d) in timings {
        cx.record(what, d);
    }
}
