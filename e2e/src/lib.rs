//! Helpers for the packaging tests: the shared venv (Helm via `e2e/helm/helm-lite.py`), YAML through
//! `e2e/helm/yaml2json.py`, a Dockerfile parser, a CRD-schema validator, and a throwaway real
//! kube-apiserver (RBAC on) for server-side checks. Missing tools fail with the installer's name.

pub mod apiserver;
pub mod cluster;
pub mod dockerfile;
pub mod schema;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub const HELM_INSTALLER: &str = "e2e/helm/install-deps.sh";

/// The repository root (this crate lives in `<root>/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e has a parent")
        .to_path_buf()
}

pub fn cache_dir() -> PathBuf {
    if let Ok(d) = std::env::var("UNISONDB_E2E_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var("HOME").expect("HOME is set");
    Path::new(&home).join(".cache/unisondb-e2e")
}

/// The venv's Python with helm-python-sdk and pyyaml; panics naming the installer when missing.
pub fn python() -> PathBuf {
    let py = cache_dir().join("venv/bin/python");
    assert!(
        py.exists(),
        "{} not found: run `bash {HELM_INSTALLER}` (or ./test.sh, which runs it)",
        py.display()
    );
    let ok = Command::new(&py)
        .args(["-c", "import helm_python, yaml"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "helm-python-sdk or pyyaml missing in {}: run `bash {HELM_INSTALLER}`",
        py.display()
    );
    py
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/unisondb-operator")
}

/// Runs a command, returning its output; panics if it could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts success, returning stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// `helm-lite.py ARGS...`.
pub fn helm(args: &[&str]) -> Command {
    let mut c = Command::new(python());
    c.arg(repo_root().join("e2e/helm/helm-lite.py"));
    c.args(args);
    c.current_dir(repo_root());
    c
}

/// Renders the chart (`helm template`) with `--set` values; returns the manifest text.
pub fn template_text(release: &str, namespace: &str, sets: &[&str]) -> String {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let mut args = vec!["template", release, chart, "-n", namespace];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    run_ok(&mut helm(&args))
}

/// Renders the chart and parses every document.
pub fn template(sets: &[&str]) -> Vec<Value> {
    yaml_docs(&template_text("unisondb-operator", "unisondb-system", sets))
}

/// Parses a YAML stream into its documents (via pyyaml).
pub fn yaml_docs(text: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg(repo_root().join("e2e/helm/yaml2json.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn yaml2json.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "invalid YAML: {}", stderr(&o));
    match serde_json::from_slice(&o.stdout).expect("yaml2json output is JSON") {
        Value::Array(v) => v,
        other => panic!("expected a list of documents, got {other}"),
    }
}

pub fn yaml_file(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    yaml_docs(&text)
}

pub fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

pub fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or("")
}

pub fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

/// The workspace version from the root Cargo.toml (`[workspace.package] version`).
pub fn workspace_version() -> String {
    let text = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let mut in_section = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section = t == "[workspace.package]";
            continue;
        }
        if in_section {
            if let Some(rest) = t.strip_prefix("version") {
                let v = rest.trim_start().trim_start_matches('=').trim();
                return v.trim_matches('"').to_string();
            }
        }
    }
    panic!("no [workspace.package] version in Cargo.toml")
}

/// The CRD files the repository ships (`crds/*.yaml`, generated by `unisondb-operator crd`).
pub fn repo_crd_files() -> Vec<PathBuf> {
    let dir = repo_root().join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} -- the CRDs come from the operator (crds/, `unisondb-operator crd`); \
                 merge the operator branch, then run e2e/helm/sync.sh",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no CRD YAML in {}", dir.display());
    files
}

/// Every CRD the repository ships, parsed.
pub fn repo_crds() -> Vec<Value> {
    repo_crd_files().iter().flat_map(|p| yaml_file(p)).collect()
}

/// The first difference between two JSON values (numbers compared by value, so `1` == `1.0`),
/// as `path: left != right`; None when equal.
pub fn first_diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let d = first_diff(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                );
                if d.is_some() {
                    return d;
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_diff(p, q, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => {
            let s = |v: &Value| v.to_string().chars().take(200).collect::<String>();
            Some(format!("{path}: {} != {}", s(a), s(b)))
        }
    }
}
