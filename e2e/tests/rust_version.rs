//! The workspace's `rust-version` is the true minimum: at least every dependency's declared
//! `rust-version` (from `cargo metadata`). Only the installed toolchain is ever built here, so this
//! is what keeps the number honest when a dependency is added or upgraded.

use std::process::Command;

use serde_json::Value;
use unisondb_e2e::repo_root;

fn parse(v: &str) -> Vec<u32> {
    let mut parts: Vec<u32> = v
        .split('.')
        .map(|p| {
            p.parse()
                .unwrap_or_else(|e| panic!("rust-version {v:?}: {e}"))
        })
        .collect();
    parts.resize(3, 0);
    parts
}

#[test]
fn workspace_rust_version_covers_every_dependency() {
    let ours = env!("CARGO_PKG_RUST_VERSION");
    assert!(!ours.is_empty(), "the workspace declares no rust-version");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(repo_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut too_new = Vec::new();
    let mut highest = (parse("1.0"), String::new());
    for p in packages {
        let (Some(name), Some(rv)) = (p["name"].as_str(), p["rust_version"].as_str()) else {
            continue;
        };
        let id = p["id"].as_str().unwrap_or_default();
        if members.contains(&id) {
            assert_eq!(rv, ours, "{name} must inherit the workspace rust-version");
            continue;
        }
        let v = parse(rv);
        if v > parse(ours) {
            too_new.push(format!("{name} {} needs {rv}", p["version"]));
        }
        if v > highest.0 {
            highest = (v, format!("{name} {rv}"));
        }
    }
    assert!(
        too_new.is_empty(),
        "rust-version {ours} in Cargo.toml is below what dependencies declare: {too_new:?}"
    );
    eprintln!("rust-version {ours}; highest dependency: {}", highest.1);
}
