//! Helm chart: lint (default values and a matrix), rendered output checks (RBAC covers every
//! API call the operator makes and nothing more, labels, probes, CRDs, namespaced mode, leader
//! election), version drift, the CRD copy, deploy/operator.yaml drift and `helm package`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use unisondb_e2e::*;

const MATRIX: &[&[&str]] = &[
    &[],
    &["watchNamespace=apps"],
    &["serviceMonitor.enabled=true"],
    &["replicas=2"],
    &[
        "watchNamespace=apps",
        "replicas=3",
        "serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "grafanaDashboard.enabled=true",
    ],
    &[
        "crds.install=false",
        "rbac.create=false",
        "serviceAccount.create=false",
        "serviceAccount.name=custom",
    ],
];

fn lint(sets: &[&str]) -> std::process::Output {
    let chart = chart_dir();
    let mut args = vec!["lint", chart.to_str().unwrap(), "--strict"];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    run(&mut helm(&args))
}

#[test]
fn lint_strict_default_and_matrix() {
    for sets in MATRIX {
        let o = lint(sets);
        assert!(
            o.status.success(),
            "lint --strict {sets:?} failed:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stdout(&o).contains("0 chart(s) failed"), "{}", stdout(&o));
    }
}

#[test]
fn lint_rejects_values_the_schema_forbids() {
    for bad in [
        &["replicas=-1"][..],
        &["leaderElection.mode=sometimes"],
        &["image.pullPolicy=Sometimes"],
        &["typoKey=1"],
        &["watchNamespace=Not_A_Namespace"],
    ] {
        let o = lint(bad);
        assert!(
            !o.status.success(),
            "lint accepted {bad:?}:\n{}",
            stdout(&o)
        );
    }
}

#[test]
fn chart_versions_follow_the_workspace_version() {
    let chart = yaml_file(&chart_dir().join("Chart.yaml")).remove(0);
    let v = workspace_version();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(v),
        "Chart.yaml appVersion"
    );
    let version = chart["version"].as_str().expect("Chart.yaml version");
    let semver = |s: &str| -> Vec<u64> {
        s.split(['.', '-'])
            .take(3)
            .map(|p| p.parse().unwrap_or_else(|_| panic!("{s} is not a semver")))
            .collect()
    };
    assert!(
        semver(version) >= semver(v),
        "Chart.yaml version {version} is below the workspace version {v}"
    );
    // the previous chart release, kept for the upgrade test (cluster_e2e), is older
    let prev = previous_chart();
    let prev_version = prev
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("unisondb-operator-")
        .trim_end_matches(".tgz")
        .to_string();
    assert!(
        semver(&prev_version) < semver(version),
        "bump Chart.yaml version ({version}): the previous release {prev_version} is kept as {}",
        prev.display()
    );
    let dep = template(&[]);
    let d = &of_kind(&dep, "Deployment")[0];
    let image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(
        image.ends_with(&format!(":{v}")),
        "default image tag is the appVersion: {image}"
    );
}

/// (apiGroup, resource, verb) the operator needs, each with the call site; plus the rule source.
/// Kept in sync with operator/src by `rbac_table_knows_every_api_the_operator_uses`.
const NEEDED: &[(&str, &str, &[&str], &str)] = &[
    (
        "unisondb.io",
        "unisonhubs",
        &["get", "list", "watch"],
        "controller.rs watches; reconcile GETs",
    ),
    (
        "unisondb.io",
        "unisonrelayers",
        &["get", "list", "watch"],
        "controller.rs watches; reconcile GETs the chain",
    ),
    (
        "unisondb.io",
        "unisonhubs/status",
        &["patch"],
        "status.rs patch_status",
    ),
    (
        "unisondb.io",
        "unisonrelayers/status",
        &["patch"],
        "status.rs patch_status",
    ),
    (
        "apps",
        "statefulsets",
        &["get", "list", "watch", "create", "patch"],
        "server-side apply + get_opt + owns()",
    ),
    (
        "",
        "services",
        &["list", "watch", "create", "patch"],
        "server-side apply + owns()",
    ),
    (
        "",
        "configmaps",
        &["list", "watch", "create", "patch"],
        "server-side apply + owns()",
    ),
    (
        "policy",
        "poddisruptionbudgets",
        &["get", "list", "watch", "create", "patch", "delete"],
        "apply_dynamic / delete_owned_dynamic (GET: only an owned PDB is deleted); owned watch",
    ),
    (
        "",
        "serviceaccounts",
        &["list", "watch", "create", "patch"],
        "server-side apply of each node's ServiceAccount + owns()",
    ),
    (
        "",
        "persistentvolumeclaims",
        &["list", "patch"],
        "volumes.rs grows a node's PVCs in place",
    ),
    (
        "",
        "pods",
        &["list", "watch", "patch", "delete"],
        "connectivity.rs lists a following node's pods to read their /metrics; backup/mod.rs lists a backup Job's pods for its termination message; group/mod.rs watches hub pods, labels a hub group's leader and deletes outdated members in a rolling update",
    ),
    (
        "batch",
        "jobs",
        &["get", "list", "watch", "create", "delete"],
        "backup/mod.rs: one Job per namespace for hubs with httpAuth or tls.http (get_opt, create, owns(), delete past the deadline)",
    ),
    (
        "cert-manager.io",
        "certificates",
        &["get", "list", "watch", "create", "patch", "delete"],
        "build/certificate.rs via apply_dynamic (spec.tls.certManager); owned watch; reconcile deletes it when the spec drops it",
    ),
    (
        "unisondb.io",
        "unisonbackups",
        &["get", "list", "watch", "create", "patch", "delete"],
        "backup/mod.rs watches; backup/schedule.rs applies, lists and prunes",
    ),
    (
        "unisondb.io",
        "unisonscheduledbackups",
        &["get", "list", "watch"],
        "backup/schedule.rs controller",
    ),
    (
        "unisondb.io",
        "unisonbackups/status",
        &["patch"],
        "backup/mod.rs patch_status",
    ),
    (
        "unisondb.io",
        "unisonscheduledbackups/status",
        &["patch"],
        "backup/schedule.rs patch_status",
    ),
    (
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "kube-runtime Recorder",
    ),
];
const LEASE: (&str, &str, &[&str]) = (
    "coordination.k8s.io",
    "leases",
    &["get", "create", "update"],
);

type Grants = BTreeSet<(String, String, String)>;

fn grants(role: &Value) -> Grants {
    let mut g = Grants::new();
    for r in role["rules"].as_array().expect("rules") {
        for grp in r["apiGroups"].as_array().unwrap() {
            for res in r["resources"].as_array().unwrap() {
                for v in r["verbs"].as_array().unwrap() {
                    g.insert((
                        grp.as_str().unwrap().into(),
                        res.as_str().unwrap().into(),
                        v.as_str().unwrap().into(),
                    ));
                }
            }
        }
    }
    g
}

fn assert_covers(g: &Grants, group: &str, res: &str, verbs: &[&str], why: &str) {
    for v in verbs {
        assert!(
            g.contains(&(group.into(), res.into(), (*v).into())),
            "RBAC lacks {v} {group}/{res} ({why}); has {g:?}"
        );
    }
}

fn assert_least_privilege(g: &Grants) {
    for (grp, res, verb) in g {
        assert!(
            grp != "*" && res != "*" && verb != "*",
            "wildcard grant {grp}/{res} {verb}"
        );
        assert!(
            res != "secrets",
            "the operator never reads Secrets (TLS/auth Secrets are only mounted by name)"
        );
        assert!(
            res != "pods" || ["list", "watch", "patch", "delete"].contains(&verb.as_str()),
            "the operator only lists/watches pods (IPs for /metrics, backup Jobs' termination messages), labels hub group leaders and deletes outdated group members: {verb} pods granted"
        );
        assert!(
            !["escalate", "bind", "impersonate"].contains(&verb.as_str()),
            "{verb} granted"
        );
    }
}

#[test]
fn rbac_cluster_mode_covers_every_call_and_nothing_more() {
    let docs = template(&[]);
    let roles = of_kind(&docs, "ClusterRole");
    assert_eq!(roles.len(), 1, "one ClusterRole in cluster mode");
    let g = grants(roles[0]);
    for (grp, res, verbs, why) in NEEDED {
        assert_covers(&g, grp, res, verbs, why);
    }
    assert_least_privilege(&g);
    let allowed: BTreeSet<(String, String)> = NEEDED
        .iter()
        .map(|(a, b, _, _)| (a.to_string(), b.to_string()))
        .chain([
            ("unisondb.io".into(), "unisonhubs/finalizers".into()),
            ("unisondb.io".into(), "unisonrelayers/finalizers".into()),
            (
                "unisondb.io".into(),
                "unisonscheduledbackups/finalizers".into(),
            ),
        ])
        .collect();
    for (grp, res, _) in &g {
        assert!(
            allowed.contains(&(grp.clone(), res.clone())),
            "ClusterRole grants {grp}/{res}, which the operator does not use"
        );
    }
    let crb = &of_kind(&docs, "ClusterRoleBinding")[0];
    assert_eq!(crb["roleRef"]["name"], roles[0]["metadata"]["name"]);
    let sa = &of_kind(&docs, "ServiceAccount")[0];
    assert_eq!(crb["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(crb["subjects"][0]["namespace"], "unisondb-system");
    assert!(
        of_kind(&docs, "Role").is_empty(),
        "one replica: no leader election, no Lease Role"
    );
    // the rules are commented with why (in the rendered text)
    let text = template_text("unisondb-operator", "unisondb-system", &[]);
    let rules_block = text
        .split("kind: ClusterRole\n")
        .nth(1)
        .unwrap()
        .split("---")
        .next()
        .unwrap();
    let comments = rules_block
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .count();
    let rules = rules_block
        .lines()
        .filter(|l| l.trim_start().starts_with("- apiGroups"))
        .count();
    assert!(
        rules > 0 && comments >= rules,
        "every rule carries a comment ({comments} comments, {rules} rules)"
    );
}

#[test]
fn rbac_namespaced_mode_uses_roles_only() {
    let docs = template(&["watchNamespace=apps", "replicas=2"]);
    assert!(
        of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ClusterRoleBinding").is_empty(),
        "no cluster-wide RBAC in namespaced mode"
    );
    let roles = of_kind(&docs, "Role");
    let main = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "apps")
        .expect("Role in the watched namespace");
    let g = grants(main);
    for (grp, res, verbs, why) in NEEDED {
        assert_covers(&g, grp, res, verbs, why);
    }
    assert_least_privilege(&g);
    let rb = of_kind(&docs, "RoleBinding")
        .into_iter()
        .find(|r| r["metadata"]["namespace"] == "apps")
        .expect("RoleBinding in apps");
    assert_eq!(rb["roleRef"]["kind"], "Role");
    assert_eq!(rb["subjects"][0]["namespace"], "unisondb-system");
    let d = &of_kind(&docs, "Deployment")[0];
    let args = container_args(d);
    assert!(
        args.contains(&"--watch-namespace=apps".to_string()),
        "{args:?}"
    );
}

fn container_args(d: &Value) -> Vec<String> {
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn leader_election_follows_replicas() {
    // one replica: off, Recreate strategy, no Lease permissions
    let docs = template(&[]);
    let d = &of_kind(&docs, "Deployment")[0];
    let args = container_args(d);
    assert!(args.contains(&"--no-leader-elect".into()), "{args:?}");
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    for n in [2, 3] {
        let docs = template(&[&format!("replicas={n}")]);
        let d = &of_kind(&docs, "Deployment")[0];
        assert_eq!(d["spec"]["replicas"], n);
        let args = container_args(d);
        assert!(!args.contains(&"--no-leader-elect".into()), "{args:?}");
        assert!(
            args.iter().any(|a| a.starts_with("--lease-name=")),
            "{args:?}"
        );
        assert!(
            d["spec"]["strategy"].is_null(),
            "rolling update with leader election"
        );
        let lease_role = of_kind(&docs, "Role")
            .into_iter()
            .find(|r| r["metadata"]["namespace"] == "unisondb-system")
            .expect("Lease Role in the release namespace");
        let g = grants(lease_role);
        assert_covers(&g, LEASE.0, LEASE.1, LEASE.2, "leader.rs");
        assert_eq!(
            g.len(),
            LEASE.2.len(),
            "the Lease Role grants only Lease access: {g:?}"
        );
        // the Lease namespace comes from the downward API
        let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(env
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "POD_NAMESPACE"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"));
    }
    // forced on with one replica, forced off with two
    let d = template(&["leaderElection.mode=on"]);
    assert!(!container_args(of_kind(&d, "Deployment")[0]).contains(&"--no-leader-elect".into()));
    let d = template(&["leaderElection.mode=off", "replicas=2"]);
    assert!(container_args(of_kind(&d, "Deployment")[0]).contains(&"--no-leader-elect".into()));
}

#[test]
fn deployment_runs_the_operator_safely() {
    let docs = template(&[]);
    let d = &of_kind(&docs, "Deployment")[0];
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["command"], serde_json::json!(["unisondb-operator"]));
    assert_eq!(container_args(d)[0], "run");
    assert!(container_args(d).contains(&"--listen=0.0.0.0:8080".into()));
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for p in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            c[p]["httpGet"]["port"], c["ports"][0]["name"],
            "{p} targets the metrics port"
        );
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert!(
        c["resources"]["requests"]["memory"].is_string()
            && c["resources"]["limits"]["memory"].is_string()
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        pod["serviceAccountName"],
        of_kind(&docs, "ServiceAccount")[0]["metadata"]["name"]
    );
    // image settings flow through
    let docs = template(&[
        "image.repository=registry.local/udb",
        "image.tag=9.9.9",
        "image.pullPolicy=Never",
    ]);
    let c = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.local/udb:9.9.9");
    assert_eq!(c["imagePullPolicy"], "Never");
}

#[test]
fn every_object_is_labelled_and_selectors_match() {
    let docs = template(&[
        "serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "grafanaDashboard.enabled=true",
        "replicas=2",
    ]);
    for d in &docs {
        let l = &d["metadata"]["labels"];
        for k in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ] {
            assert!(l[k].is_string(), "{} {} lacks label {k}", kind(d), name(d));
        }
    }
    let dep = &of_kind(&docs, "Deployment")[0];
    let pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    let sel = dep["spec"]["selector"]["matchLabels"].as_object().unwrap();
    for (k, v) in sel {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "Deployment selector {k} matches its pods"
        );
    }
    let svc = &of_kind(&docs, "Service")[0];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "metrics Service selects the operator pods"
        );
    }
    assert_eq!(
        svc["spec"]["ports"][0]["protocol"], "TCP",
        "protocol set (1.20 server-side apply)"
    );
    let sm = &of_kind(&docs, "ServiceMonitor")[0];
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            svc["metadata"]["labels"][k.as_str()],
            *v,
            "ServiceMonitor selects the metrics Service"
        );
    }
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
}

#[test]
fn optional_monitoring_objects_are_off_by_default() {
    let docs = template(&[]);
    for k in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(of_kind(&docs, k).is_empty(), "{k} rendered by default");
    }
    assert!(
        of_kind(&docs, "ConfigMap").is_empty(),
        "dashboard ConfigMap rendered by default"
    );
    let docs = template(&["grafanaDashboard.enabled=true"]);
    let cm = &of_kind(&docs, "ConfigMap")[0];
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dash: Value = serde_json::from_str(cm["data"]["unisondb.json"].as_str().unwrap())
        .expect("dashboard is JSON");
    let exprs: String = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["targets"][0]["expr"].as_str().unwrap().to_string())
        .collect();
    for m in [
        "unisondb_replication_lag_records",
        "unisondb_replication_lag_seconds",
        "unisondb_wal_fsync_seconds",
        "unisondb_operator_reconcile_errors_total",
        "unisondb_replication_divergences_total",
        "unisondb_checksum_failures_total",
        "kubelet_volume_stats_available_bytes",
        "up{component=\"hub\"}",
    ] {
        assert!(exprs.contains(m), "dashboard shows {m}");
    }
}

/// Alert name -> expression, from the rendered PrometheusRule.
pub fn alerts() -> BTreeMap<String, Value> {
    let docs = template(&["prometheusRule.enabled=true"]);
    let rule = &of_kind(&docs, "PrometheusRule")[0];
    let mut out = BTreeMap::new();
    for g in rule["spec"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            out.insert(r["alert"].as_str().unwrap().to_string(), r.clone());
        }
    }
    out
}

#[test]
fn alerts_cover_the_metrics_and_link_runbooks() {
    let alerts = alerts();
    let all_exprs: String = alerts
        .values()
        .map(|r| r["expr"].as_str().unwrap().to_string() + "\n")
        .collect();
    for m in [
        "unisondb_replication_lag_records",
        "unisondb_replication_lag_seconds",
        "unisondb_replication_connected",
        "unisondb_wal_fsync_seconds_bucket",
        "unisondb_operator_reconcile_errors_total",
        "unisondb_replication_divergences_total",
        "unisondb_checksum_failures_total",
        "kubelet_volume_stats_available_bytes",
        "component=\"hub\"",
        "unisondb_operator_leader",
    ] {
        assert!(all_exprs.contains(m), "no alert on {m}");
    }
    let ops = std::fs::read_to_string(repo_root().join("docs/OPERATIONS.md"))
        .expect("docs/OPERATIONS.md");
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
                    ' ' => Some('-'),
                    _ => None,
                })
                .collect()
        })
        .collect();
    for (name, r) in &alerts {
        let url = r["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let (base, anchor) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: runbook_url without anchor"));
        assert!(base.ends_with("docs/OPERATIONS.md"), "{name}: {url}");
        assert!(
            anchors.contains(anchor),
            "{name}: anchor #{anchor} is not a heading of docs/OPERATIONS.md"
        );
        assert!(
            r["labels"]["severity"].is_string() && r["for"].is_string(),
            "{name}: severity and for"
        );
        assert!(
            r["annotations"]["summary"].as_str().unwrap().contains("{{"),
            "{name}: Prometheus templating survives Helm"
        );
    }
}

/// Prometheus's own checker accepts the rendered rules (PromQL syntax, templates, durations), and
/// the PodMonitor adds the `component` label UnisonDBHubDown selects on.
#[test]
fn rendered_alert_rules_pass_promtool() {
    let docs = template(&["prometheusRule.enabled=true", "serviceMonitor.enabled=true"]);
    let rule = &of_kind(&docs, "PrometheusRule")[0];
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.yaml");
    std::fs::write(
        &file,
        serde_yaml_ng::to_string(&rule["spec"]).expect("rules YAML"),
    )
    .expect("write rules");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool missing ({e}): run `bash e2e/cluster/install-deps.sh` (Debian's prometheus)")
        });
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pm = &of_kind(&docs, "PodMonitor")[0];
    let relabel =
        serde_json::to_string(&pm["spec"]["podMetricsEndpoints"][0]["relabelings"]).unwrap();
    assert!(
        relabel.contains("\"targetLabel\":\"component\""),
        "{relabel}"
    );
    let hub_down = &alerts()["UnisonDBHubDown"];
    assert!(
        hub_down["expr"]
            .as_str()
            .unwrap()
            .contains("job=\"unisondb-system/unisondb-operator-nodes\""),
        "UnisonDBHubDown selects the PodMonitor's job: {}",
        hub_down["expr"]
    );
}

#[test]
fn crds_are_rendered_from_the_chart_copy_with_keep_policy() {
    let repo = repo_crds();
    let docs = template(&[]);
    let crds = of_kind(&docs, "CustomResourceDefinition");
    let names: BTreeSet<&str> = crds.iter().map(|c| name(c)).collect();
    for c in &repo {
        assert!(
            names.contains(name(c)),
            "CRD {} not rendered by the chart",
            name(c)
        );
    }
    assert!(
        names.contains("unisonhubs.unisondb.io") && names.contains("unisonrelayers.unisondb.io"),
        "{names:?}"
    );
    for c in &crds {
        assert_eq!(
            c["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep",
            "{}",
            name(c)
        );
        let orig = repo.iter().find(|r| name(r) == name(c)).unwrap();
        if let Some(d) = first_diff(&c["spec"], &orig["spec"], "spec") {
            panic!("{}: the rendered CRD differs from crds/ at {d}", name(c));
        }
    }
    let relayer = crds
        .iter()
        .find(|c| name(c) == "unisonrelayers.unisondb.io")
        .unwrap();
    assert!(
        relayer["spec"]["versions"][0]["subresources"]["scale"].is_object(),
        "kubectl scale works"
    );
    assert!(of_kind(
        &template(&["crds.install=false"]),
        "CustomResourceDefinition"
    )
    .is_empty());
}

#[test]
fn chart_crd_copy_matches_repo_crds() {
    let dst = chart_dir().join("files/crds");
    let mut copied: Vec<String> = std::fs::read_dir(&dst)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    copied.sort();
    let repo = repo_crd_files();
    let want: Vec<String> = repo
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        copied, want,
        "charts/unisondb-operator/files/crds differs from crds/: run e2e/helm/sync.sh"
    );
    for p in &repo {
        let a = std::fs::read(p).unwrap();
        let b = std::fs::read(dst.join(p.file_name().unwrap())).unwrap();
        assert!(
            a == b,
            "{} drifted from crds/: run e2e/helm/sync.sh",
            p.display()
        );
    }
}

#[test]
fn deploy_operator_yaml_is_the_rendered_chart() {
    let want = run_ok(
        std::process::Command::new(python()).arg(repo_root().join("e2e/helm/render-deploy.py")),
    );
    let have = std::fs::read_to_string(repo_root().join("deploy/operator.yaml"))
        .expect("deploy/operator.yaml");
    assert!(
        have == want,
        "deploy/operator.yaml is stale: run e2e/helm/sync.sh"
    );
    let docs = yaml_docs(&have);
    assert_eq!(kind(&docs[0]), "Namespace");
    for k in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            !of_kind(&docs, k).is_empty(),
            "deploy/operator.yaml lacks a {k}"
        );
    }
    for d in &docs[1..] {
        if kind(d) != "CustomResourceDefinition" && !kind(d).starts_with("Cluster") {
            assert_eq!(
                d["metadata"]["namespace"],
                "unisondb-system",
                "{} {}",
                kind(d),
                name(d)
            );
        }
    }
}

#[test]
fn helm_package_is_self_contained() {
    let dir = std::env::temp_dir().join(format!("unisondb-pkg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = run_ok(&mut helm(&[
        "package",
        chart_dir().to_str().unwrap(),
        "-d",
        dir.to_str().unwrap(),
    ]));
    let tgz = out.trim().to_string();
    assert!(
        tgz.ends_with(&format!("unisondb-operator-{}.tgz", chart_version())),
        "{tgz}"
    );
    let list = run_ok(std::process::Command::new("tar").args(["tzf", &tgz]));
    for f in repo_crd_files() {
        let want = format!(
            "unisondb-operator/files/crds/{}",
            f.file_name().unwrap().to_string_lossy()
        );
        assert!(
            list.lines().any(|l| l == want),
            "{want} not in the package:\n{list}"
        );
    }
    // the packaged chart renders the CRDs on its own
    let text = run_ok(&mut helm(&["template", "x", &tgz]));
    assert!(yaml_docs(&text)
        .iter()
        .any(|d| kind(d) == "CustomResourceDefinition"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn notes_tell_what_to_do_next() {
    let notes = std::fs::read_to_string(chart_dir().join("templates/NOTES.txt")).unwrap();
    for s in [
        "rollout status",
        "deploy/examples/",
        "kubectl scale",
        "port-forward",
        "OPERATIONS.md",
    ] {
        assert!(notes.contains(s), "NOTES.txt lacks {s}");
    }
    for ex in notes
        .split_whitespace()
        .filter(|w| w.starts_with("deploy/examples/"))
    {
        assert!(
            repo_root().join(ex).exists(),
            "NOTES.txt names {ex}, which does not exist"
        );
    }
}

/// Every Kubernetes type the operator builds an `Api` for must be in the RBAC table above: a new
/// API call in operator/src without a chart rule fails here.
#[test]
fn rbac_table_knows_every_api_the_operator_uses() {
    let src = repo_root().join("operator/src");
    assert!(
        src.exists(),
        "{} missing: merge the operator branch (this test reads its API calls)",
        src.display()
    );
    let known: BTreeMap<&str, &str> = [
        ("UnisonHub", "unisonhubs"),
        ("UnisonRelayer", "unisonrelayers"),
        ("UnisonBackup", "unisonbackups"),
        ("UnisonScheduledBackup", "unisonscheduledbackups"),
        ("StatefulSet", "statefulsets"),
        ("Service", "services"),
        ("ConfigMap", "configmaps"),
        ("Lease", "leases"),
        ("DynamicObject", "poddisruptionbudgets"),
        ("Pod", "pods"),
        ("Job", "jobs"),
        ("ServiceAccount", "serviceaccounts"),
        ("PersistentVolumeClaim", "persistentvolumeclaims"),
        ("K", "(generic helper: the concrete types are listed here)"),
    ]
    .into_iter()
    .collect();
    let mut files = vec![src.clone()];
    let mut used = BTreeSet::new();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(
                std::fs::read_dir(&p)
                    .unwrap()
                    .filter_map(|e| e.ok().map(|e| e.path())),
            );
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for pat in ["Api<", "Api::<", "api::<"] {
            for (i, _) in text.match_indices(pat) {
                let rest = &text[i + pat.len()..];
                let ty: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !ty.is_empty() {
                    used.insert((ty, p.strip_prefix(&src).unwrap().display().to_string()));
                }
            }
        }
    }
    assert!(
        used.iter().any(|(t, _)| t == "StatefulSet"),
        "scan found no Api<StatefulSet>: the scanner is broken"
    );
    let rules: BTreeSet<&str> = NEEDED.iter().map(|n| n.1).chain([LEASE.1]).collect();
    for (ty, file) in &used {
        let res = known.get(ty.as_str()).unwrap_or_else(|| {
            panic!(
                "operator/src/{file} uses Api<{ty}>: add its RBAC rule to the chart and to NEEDED"
            )
        });
        if *ty != "K" {
            assert!(rules.contains(res), "{ty} -> {res} has no rule");
        }
    }
    // the PDB via DynamicObject: both API versions the operator may pick
    let pdb = std::fs::read_to_string(src.join("build/pdb.rs")).unwrap_or_default();
    assert!(
        pdb.contains("policy/v1"),
        "PDB versions moved: check the poddisruptionbudgets rule"
    );
    // ... and cert-manager's Certificates, also through DynamicObject
    let cert = std::fs::read_to_string(src.join("build/certificate.rs")).unwrap_or_default();
    assert!(
        cert.contains("\"cert-manager.io\"") && cert.contains("\"certificates\""),
        "Certificate API moved: check the certificates.cert-manager.io rule"
    );
    assert!(
        rules.contains("certificates"),
        "no certificates.cert-manager.io rule"
    );
    // the operator reads no Secrets (the chart grants none); Pods only from connectivity.rs and
    // backup/mod.rs (list: /metrics, and a backup Job's termination message), controller.rs (watch
    // hub pods) and group/mod.rs (list, label and delete a hub group's members)
    let pod_users = [
        "connectivity.rs",
        "backup/mod.rs",
        "controller.rs",
        "group/mod.rs",
    ];
    for (ty, file) in &used {
        assert!(ty != "Secret", "operator/src/{file} now reads {ty}: grant it narrowly and update assert_least_privilege");
        assert!(
            ty != "Pod" || pod_users.contains(&file.as_str()),
            "operator/src/{file} now uses Pods: only {pod_users:?} do (RBAC grants list, watch, patch, delete)"
        );
    }
}

/// `helm test` hooks: pods from the node image (`unisondb probe`, nothing else pulled), no API
/// token, non-root; the operator check targets its metrics Service; the node check appears only
/// with `tests.nodeService` and targets that client Service's `/readyz`.
#[test]
fn helm_test_hooks_probe_the_operator_and_a_node() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let hooks = |sets: &[&str]| -> Vec<Value> {
        let mut args = vec!["template", "rel", chart, "-n", "ops", "--show-hooks"];
        for s in sets {
            args.push("--set");
            args.push(s);
        }
        yaml_docs(&run_ok(&mut helm(&args)))
            .into_iter()
            .filter(|d| d["metadata"]["annotations"]["helm.sh/hook"] == "test")
            .collect()
    };
    let command = |pod: &Value, section: &str| -> Vec<String> {
        pod["spec"][section]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                c["command"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    // default: only the operator check
    let pods = hooks(&["nodeImage=registry.local/unisondb:node"]);
    assert_eq!(pods.len(), 1, "{pods:?}");
    let op = &pods[0];
    assert_eq!(kind(op), "Pod");
    assert_eq!(
        op["metadata"]["name"],
        "rel-unisondb-operator-test-operator"
    );
    assert_eq!(
        op["metadata"]["labels"]["app.kubernetes.io/component"],
        "test"
    );
    assert_eq!(op["spec"]["restartPolicy"], "Never");
    // passing test pods are removed: `helm uninstall` does not delete hook resources
    assert_eq!(
        op["metadata"]["annotations"]["helm.sh/hook-delete-policy"],
        "before-hook-creation,hook-succeeded"
    );
    assert_eq!(op["spec"]["automountServiceAccountToken"], false);
    assert_eq!(op["spec"]["securityContext"]["runAsNonRoot"], true);
    for c in op["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(op["spec"]["containers"].as_array().unwrap())
    {
        assert_eq!(c["image"], "registry.local/unisondb:node", "the node image");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    }
    let checks = [command(op, "initContainers"), command(op, "containers")].concat();
    assert_eq!(
        checks,
        vec![
            "unisondb probe http://rel-unisondb-operator-metrics.ops.svc:8080/healthz --wait-secs 60",
            "unisondb probe http://rel-unisondb-operator-metrics.ops.svc:8080/metrics --wait-secs 60",
        ]
    );
    // the metrics Service must not select the test pod
    let docs = yaml_docs(&template_text("rel", "ops", &[]));
    let svc = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "rel-unisondb-operator-metrics")
        .expect("metrics Service");
    let selects = svc["spec"]["selector"]
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| &op["metadata"]["labels"][k] == v);
    assert!(!selects, "the operator's Service would select the test pod");
    // without a chart image override, the node image defaults to the chart's image
    let pods = hooks(&[]);
    assert_eq!(
        pods[0]["spec"]["containers"][0]["image"],
        format!("ghcr.io/unisondb/unisondb:{}", workspace_version())
    );

    // a node Service, short and namespaced forms
    for (svc, url) in [
        ("hub", "http://hub.ops.svc:4000/readyz"),
        ("edge.apps", "http://edge.apps.svc:4000/readyz"),
    ] {
        let set = format!("tests.nodeService={svc}");
        let pods = hooks(&[set.as_str()]);
        assert_eq!(pods.len(), 2);
        let node = pods
            .iter()
            .find(|p| p["metadata"]["name"] == "rel-unisondb-operator-test-node")
            .expect("node test pod");
        assert_eq!(
            command(node, "containers"),
            vec![format!("unisondb probe {url} --wait-secs 60")]
        );
    }
    // off
    assert!(hooks(&["tests.enabled=false", "tests.nodeService=hub"]).is_empty());
    // the probe the hooks run exists in the node binary
    let main = std::fs::read_to_string(repo_root().join("node/src/main.rs")).unwrap();
    assert!(
        main.contains("Probe {"),
        "node/src/main.rs has no probe subcommand"
    );
}
