//! Examples validate against the CRD schemas (strictly: unknown fields fail), docs cover every CRD
//! field, every metric the alerts use, and name only files that exist.

use std::collections::BTreeSet;

use unisondb_e2e::schema::{crd_schema, spec_paths, validate};
use unisondb_e2e::*;

fn example_files() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(repo_root().join("deploy/examples"))
        .expect("deploy/examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn examples_cover_every_topology() {
    let names: BTreeSet<String> = example_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "single-server.yaml",
        "primary-relayers.yaml",
        "hub-and-spoke-edge.yaml",
        "multi-hub.yaml",
        "multi-hop.yaml",
        "hybrid.yaml",
        "backup-hub.yaml",
        "recovery-hub.yaml",
        "object-store-relayer.yaml",
    ] {
        assert!(names.contains(want), "deploy/examples/{want} missing");
    }
}

#[test]
fn examples_validate_against_the_crd_schemas() {
    let crds = repo_crds();
    let mut kinds = BTreeSet::new();
    for f in example_files() {
        for doc in yaml_file(&f) {
            let api = doc["apiVersion"].as_str().unwrap_or_default();
            if !api.starts_with("unisondb.io/") {
                continue;
            }
            kinds.insert(kind(&doc).to_string());
            let schema = crd_schema(&crds, api, kind(&doc))
                .unwrap_or_else(|| panic!("{}: no CRD for {api} {}", f.display(), kind(&doc)));
            let mut errs = Vec::new();
            let mut obj = doc.clone();
            obj.as_object_mut().unwrap().remove("apiVersion");
            obj.as_object_mut().unwrap().remove("kind");
            obj.as_object_mut().unwrap().remove("metadata");
            validate(
                schema,
                &obj,
                &format!("{}:{}", kind(&doc), name(&doc)),
                &mut errs,
            );
            assert!(errs.is_empty(), "{}: {errs:#?}", f.display());
            assert!(
                doc["metadata"].get("namespace").is_none(),
                "{}: examples are applied with -n",
                f.display()
            );
        }
    }
    assert!(
        kinds.contains("UnisonHub") && kinds.contains("UnisonRelayer"),
        "{kinds:?}"
    );
}

#[test]
fn the_validator_rejects_typos_and_bad_values() {
    // proves the check above can fail
    let crds = repo_crds();
    let s = crd_schema(&crds, "unisondb.io/v1alpha1", "UnisonRelayer").expect("UnisonRelayer CRD");
    let bad = serde_json::json!({"spec": {"image": "x", "upstream": {"hubref": {"name": "h"}}, "replicas": -1, "wal": {"fsync": "sometimes"}}});
    let mut errs = Vec::new();
    validate(s, &bad, "r", &mut errs);
    let all = errs.join("\n");
    for want in ["hubref: unknown field", "replicas: -1", "sometimes"] {
        assert!(all.contains(want), "expected an error about {want}: {all}");
    }
}

#[test]
fn operations_doc_covers_every_crd_field() {
    let doc = std::fs::read_to_string(repo_root().join("docs/OPERATIONS.md")).unwrap();
    let crds = repo_crds();
    let mut checked = 0;
    for c in &crds {
        let s = &c["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        for p in spec_paths(s) {
            assert!(
                doc.contains(&format!("`{p}`")),
                "docs/OPERATIONS.md does not document `{p}` ({})",
                c["spec"]["names"]["kind"]
            );
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "only {checked} field paths found: schema walk broken"
    );
}

#[test]
fn operations_doc_lists_every_alert_and_alerted_metric() {
    let doc = std::fs::read_to_string(repo_root().join("docs/OPERATIONS.md")).unwrap();
    let text = template_text("u", "unisondb-system", &["prometheusRule.enabled=true"]);
    let docs = yaml_docs(&text);
    let rule = of_kind(&docs, "PrometheusRule")[0];
    for g in rule["spec"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let alert = r["alert"].as_str().unwrap();
            assert!(
                doc.contains(&format!("### {alert}")),
                "no runbook section for {alert}"
            );
            let expr = r["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                if word.starts_with("unisondb_") {
                    let base = word.trim_end_matches("_bucket");
                    assert!(
                        doc.contains(&format!("`{base}`")),
                        "metric {base} (alert {alert}) not documented"
                    );
                }
            }
        }
    }
}

#[test]
fn kubernetes_doc_names_only_existing_files_and_real_objects() {
    let doc = std::fs::read_to_string(repo_root().join("docs/KUBERNETES.md"))
        .expect("docs/KUBERNETES.md");
    for w in doc.split(|c: char| c.is_whitespace() || c == '`' || c == '(' || c == ')') {
        if (w.starts_with("deploy/") || w.starts_with("charts/"))
            && (w.contains('.') || w.ends_with('/'))
        {
            assert!(
                repo_root().join(w).exists(),
                "docs/KUBERNETES.md names {w}, which does not exist"
            );
        }
    }
    // the names used in the walkthrough exist in the example it applies
    let ex = yaml_file(&repo_root().join("deploy/examples/primary-relayers.yaml"));
    for (k, n) in [("UnisonHub", "hub"), ("UnisonRelayer", "edge-relayers")] {
        assert!(
            ex.iter().any(|d| kind(d) == k && name(d) == n),
            "primary-relayers.yaml lacks {k} {n}"
        );
        assert!(
            doc.contains(&format!("{}/{n}", k.to_lowercase())),
            "walkthrough does not use {k}/{n}"
        );
    }
    for cmd in [
        "helm install",
        "kubectl apply -f deploy/operator.yaml",
        "kubectl scale",
        "port-forward",
        "zmq",
        "/metrics",
    ] {
        assert!(doc.contains(cmd), "docs/KUBERNETES.md lacks {cmd}");
    }
}
