//! Against a real kube-apiserver (v1.20.2, RBAC on): a real Helm install of the chart,
//! `kubectl apply --dry-run=server` of every rendered manifest and deploy/operator.yaml,
//! `kubectl auth can-i` as the operator's ServiceAccount for every verb it needs (and some it must
//! not have), a namespace-scoped install, and every example applied for real.
//! One test function: one control plane (~4 s to start) serves all steps.

use anyhow::Result;
use unisondb_e2e::*;
use unisondb_testkit::{ControlPlane, ControlPlaneOptions};

const MONITORING_STUB_CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor, listKind: ServiceMonitorList}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podmonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PodMonitor, plural: podmonitors, singular: podmonitor, listKind: PodMonitorList}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: prometheusrules.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PrometheusRule, plural: prometheusrules, singular: prometheusrule, listKind: PrometheusRuleList}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
"#;

fn can_i(k: &ControlPlane, sa: &str, verb: &str, resource: &str, ns: Option<&str>) -> Result<bool> {
    let (resource, sub) = resource
        .split_once('/')
        .map(|(r, s)| (r, Some(s)))
        .unwrap_or((resource, None));
    let sub_flag = sub.map(|s| format!("--subresource={s}"));
    let mut args = vec!["auth", "can-i", verb, resource, "--as", sa];
    if let Some(f) = &sub_flag {
        args.push(f);
    }
    match ns {
        Some(n) => {
            args.push("-n");
            args.push(n);
        }
        None => args.push("--all-namespaces"),
    }
    let o = k.kubectl_output(&args, None)?;
    let out = stdout(&o);
    match out.trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => anyhow::bail!("kubectl auth can-i {args:?}: {other} {}", stderr(&o)),
    }
}

/// (verb, resource as kubectl names it) the operator must be able to do in a watched namespace.
const MUST: &[(&str, &str)] = &[
    ("get", "unisonhubs.unisondb.io"),
    ("list", "unisonhubs.unisondb.io"),
    ("watch", "unisonhubs.unisondb.io"),
    ("get", "unisonrelayers.unisondb.io"),
    ("list", "unisonrelayers.unisondb.io"),
    ("watch", "unisonrelayers.unisondb.io"),
    ("patch", "unisonhubs.unisondb.io/status"),
    ("patch", "unisonrelayers.unisondb.io/status"),
    ("get", "statefulsets.apps"),
    ("list", "statefulsets.apps"),
    ("watch", "statefulsets.apps"),
    ("create", "statefulsets.apps"),
    ("patch", "statefulsets.apps"),
    ("list", "services"),
    ("watch", "services"),
    ("create", "services"),
    ("patch", "services"),
    ("list", "configmaps"),
    ("watch", "configmaps"),
    ("create", "configmaps"),
    ("patch", "configmaps"),
    ("list", "pods"),
    ("watch", "pods"),
    ("patch", "pods"),
    ("delete", "pods"),
    ("get", "jobs.batch"),
    ("list", "jobs.batch"),
    ("watch", "jobs.batch"),
    ("create", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("list", "persistentvolumeclaims"),
    ("patch", "persistentvolumeclaims"),
    ("create", "serviceaccounts"),
    ("patch", "serviceaccounts"),
    ("watch", "poddisruptionbudgets.policy"),
    ("create", "poddisruptionbudgets.policy"),
    ("patch", "poddisruptionbudgets.policy"),
    ("delete", "poddisruptionbudgets.policy"),
    ("get", "certificates.cert-manager.io"),
    ("list", "certificates.cert-manager.io"),
    ("watch", "certificates.cert-manager.io"),
    ("create", "certificates.cert-manager.io"),
    ("patch", "certificates.cert-manager.io"),
    ("delete", "certificates.cert-manager.io"),
    ("get", "unisonbackups.unisondb.io"),
    ("list", "unisonbackups.unisondb.io"),
    ("watch", "unisonbackups.unisondb.io"),
    ("create", "unisonbackups.unisondb.io"),
    ("patch", "unisonbackups.unisondb.io"),
    ("delete", "unisonbackups.unisondb.io"),
    ("patch", "unisonbackups.unisondb.io/status"),
    ("list", "unisonscheduledbackups.unisondb.io"),
    ("watch", "unisonscheduledbackups.unisondb.io"),
    ("patch", "unisonscheduledbackups.unisondb.io/status"),
    ("create", "events.events.k8s.io"),
    ("patch", "events.events.k8s.io"),
];
const MUST_NOT: &[(&str, &str)] = &[
    ("get", "secrets"),
    ("list", "secrets"),
    ("get", "pods"),
    ("patch", "jobs.batch"),
    ("update", "jobs.batch"),
    ("delete", "persistentvolumeclaims"),
    ("delete", "serviceaccounts"),
    ("delete", "statefulsets.apps"),
    ("delete", "unisonhubs.unisondb.io"),
    ("update", "unisonhubs.unisondb.io"),
    ("delete", "unisonscheduledbackups.unisondb.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("get", "leases.coordination.k8s.io"),
];

#[test]
fn chart_against_a_real_apiserver() -> Result<()> {
    let k = ControlPlane::start(ControlPlaneOptions {
        rbac: true,
        ..Default::default()
    })?;
    let kc = k.kubeconfig.display().to_string();
    for ns in ["unisondb-system", "apps", "ops2", "apps2"] {
        k.kubectl(&["create", "namespace", ns])?;
    }
    let o = k.kubectl_output(&["apply", "-f", "-"], Some(MONITORING_STUB_CRDS))?;
    assert!(o.status.success(), "{}", stderr(&o));
    // cert-manager's Certificate (a stand-in CRD: kubectl auth can-i resolves only served resources)
    let cert_crd = std::fs::read_to_string(
        repo_root().join("operator/tests/fixtures/cert-manager-certificate-crd.yaml"),
    )?;
    let o = k.kubectl_output(&["apply", "-f", "-"], Some(&cert_crd))?;
    assert!(o.status.success(), "{}", stderr(&o));

    // 1. a real Helm install (Helm's own release Secret storage, in-cluster)
    let out = run_ok(&mut helm(&[
        "install",
        "unisondb-operator",
        chart_dir().to_str().unwrap(),
        "-n",
        "unisondb-system",
        "--kubeconfig",
        &kc,
        "--old-apiserver",
    ]));
    assert!(out.contains("status=deployed"), "{out}");
    k.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/unisonhubs.unisondb.io",
        "crd/unisonrelayers.unisondb.io",
        "--timeout=60s",
    ])?;
    let objs = k.kubectl(&[
        "get",
        "deploy,sa,svc",
        "-n",
        "unisondb-system",
        "-o",
        "name",
    ])?;
    for want in [
        "deployment.apps/unisondb-operator",
        "serviceaccount/unisondb-operator",
        "service/unisondb-operator-metrics",
    ] {
        assert!(objs.contains(want), "{want} not installed: {objs}");
    }
    let crd = k.kubectl(&[
        "get",
        "crd",
        "unisonhubs.unisondb.io",
        "-o",
        "jsonpath={.metadata.annotations}",
    ])?;
    assert!(
        crd.contains("helm.sh/resource-policy") && crd.contains("keep"),
        "{crd}"
    );
    // helm upgrade (CRDs are templates: upgraded in place) with more features on
    let out = run_ok(&mut helm(&[
        "upgrade",
        "unisondb-operator",
        chart_dir().to_str().unwrap(),
        "-n",
        "unisondb-system",
        "--kubeconfig",
        &kc,
        "--old-apiserver",
        "--set",
        "replicas=2",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
    ]));
    assert!(out.contains("revision=2"), "{out}");
    assert!(
        k.kubectl(&[
            "get",
            "prometheusrule,servicemonitor,podmonitor",
            "-n",
            "unisondb-system",
            "-o",
            "name"
        ])?
        .lines()
        .count()
            == 3
    );

    // 2. every rendered manifest, and deploy/operator.yaml, pass server-side validation
    let matrix: &[&[&str]] = &[
        &[],
        &[
            "watchNamespace=apps",
            "replicas=3",
            "serviceMonitor.enabled=true",
            "prometheusRule.enabled=true",
            "grafanaDashboard.enabled=true",
        ],
    ];
    for sets in matrix {
        let text = template_text("dry", "unisondb-system", sets);
        let o = k.kubectl_output(
            &["apply", "--dry-run=server", "--validate=false", "-f", "-"],
            Some(&text),
        )?;
        assert!(
            o.status.success(),
            "dry-run of the chart with {sets:?}: {}",
            stderr(&o)
        );
    }
    let o = k.kubectl(&[
        "apply",
        "--dry-run=server",
        "--validate=false",
        "-f",
        repo_root().join("deploy/operator.yaml").to_str().unwrap(),
    ])?;
    assert!(o.contains("deployment.apps/unisondb-operator"), "{o}");

    // 3. RBAC as the operator's ServiceAccount (cluster-wide install)
    let sa = "system:serviceaccount:unisondb-system:unisondb-operator";
    for (verb, res) in MUST {
        assert!(
            can_i(&k, sa, verb, res, Some("apps"))?,
            "operator cannot {verb} {res} in apps"
        );
        assert!(
            can_i(&k, sa, verb, res, None)?,
            "operator cannot {verb} {res} cluster-wide"
        );
    }
    for (verb, res) in MUST_NOT {
        assert!(
            !can_i(&k, sa, verb, res, None)?,
            "operator may {verb} {res} cluster-wide"
        );
    }
    // leader election (replicas=2 after the upgrade): Lease access in its own namespace only
    for verb in ["get", "create", "update"] {
        assert!(
            can_i(
                &k,
                sa,
                verb,
                "leases.coordination.k8s.io",
                Some("unisondb-system")
            )?,
            "{verb} leases"
        );
        assert!(
            !can_i(&k, sa, verb, "leases.coordination.k8s.io", Some("apps"))?,
            "{verb} leases outside its namespace"
        );
    }

    // 4. namespace-scoped install: permissions in apps2 only
    run_ok(&mut helm(&[
        "install",
        "scoped",
        chart_dir().to_str().unwrap(),
        "-n",
        "ops2",
        "--kubeconfig",
        &kc,
        "--old-apiserver",
        "--set",
        "watchNamespace=apps2",
        "--set",
        "crds.install=false",
    ]));
    let sa2 = "system:serviceaccount:ops2:scoped-unisondb-operator";
    for (verb, res) in MUST {
        assert!(
            can_i(&k, sa2, verb, res, Some("apps2"))?,
            "scoped operator cannot {verb} {res} in apps2"
        );
        assert!(
            !can_i(&k, sa2, verb, res, Some("apps"))?,
            "scoped operator may {verb} {res} outside apps2"
        );
    }
    assert!(
        k.kubectl(&["get", "clusterrole", "-o", "name"])?
            .lines()
            .filter(|l| l.contains("scoped"))
            .count()
            == 0
    );

    // 5. every example: dry-run, then applied for real and read back
    let mut applied = 0;
    for e in std::fs::read_dir(repo_root().join("deploy/examples")).unwrap() {
        let p = e.unwrap().path();
        let p = p.to_str().unwrap();
        k.kubectl(&["apply", "--dry-run=server", "-n", "apps", "-f", p])?;
        let out = k.kubectl(&["apply", "-n", "apps", "-f", p])?;
        applied += out
            .lines()
            .filter(|l| l.starts_with("unisonhub") || l.starts_with("unisonrelayer"))
            .count();
    }
    let listed = k.kubectl(&[
        "get",
        "unisonhubs,unisonrelayers",
        "-n",
        "apps",
        "-o",
        "name",
    ])?;
    assert_eq!(listed.lines().count(), applied, "{listed}");
    assert!(
        applied >= 12,
        "expected every hub/relayer of the examples, got {applied}"
    );
    // the scale subresource answers for a relayer
    k.kubectl(&[
        "scale",
        "-n",
        "apps",
        "unisonrelayer/edge-relayers",
        "--replicas=5",
    ])?;
    let r = k.kubectl(&[
        "get",
        "-n",
        "apps",
        "unisonrelayer/edge-relayers",
        "-o",
        "jsonpath={.spec.replicas}",
    ])?;
    assert_eq!(r.trim(), "5");
    // a typo in an upstream field is dropped by the 1.20 server (no strict field validation),
    // which is why examples_validate_against_the_crd_schemas checks them offline.

    // 6. uninstall keeps the CRDs and the databases
    run_ok(&mut helm(&[
        "uninstall",
        "unisondb-operator",
        "-n",
        "unisondb-system",
        "--kubeconfig",
        &kc,
    ]));
    k.kubectl(&["get", "crd", "unisonhubs.unisondb.io"])?;
    assert_eq!(
        k.kubectl(&[
            "get",
            "unisonhubs,unisonrelayers",
            "-n",
            "apps",
            "-o",
            "name"
        ])?
        .lines()
        .count(),
        applied
    );
    Ok(())
}
