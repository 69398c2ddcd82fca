//! The Dockerfile builds what CI builds, and its runtime stage has the facts the chart, the
//! operator's StatefulSets and the release image assembly rely on.

use unisondb_e2e::dockerfile::{self, Dockerfile};
use unisondb_e2e::repo_root;

fn df() -> Dockerfile {
    dockerfile::parse(&std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap())
}

/// The `cargo build` line of scripts/build-release.sh (the release build CI runs).
fn release_build_command() -> String {
    let text = std::fs::read_to_string(repo_root().join("scripts/build-release.sh")).unwrap();
    let cmds: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo build"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        cmds.len(),
        1,
        "scripts/build-release.sh must have exactly one cargo build line"
    );
    cmds[0].clone()
}

#[test]
fn builder_runs_the_release_build_command() {
    let df = df();
    let builder = df.stage("builder").expect("a stage named builder");
    let builds: Vec<String> = df
        .run_commands(builder)
        .into_iter()
        .filter(|c| c.starts_with("cargo build"))
        .collect();
    let expected = release_build_command();
    assert_eq!(
        builds,
        vec![expected.clone()],
        "Dockerfile cargo build differs from scripts/build-release.sh"
    );
    assert!(
        expected.contains("--release") && expected.contains("--locked"),
        "{expected}"
    );
    for bin in ["unisondb", "unisondb-operator"] {
        assert!(
            expected.contains(&format!("--bin {bin}")),
            "release build must build {bin}"
        );
    }
    // no other stage compiles anything
    for s in &df.stages {
        if s.name.as_deref() != Some("builder") {
            assert!(
                df.run_commands(s).iter().all(|c| !c.starts_with("cargo")),
                "cargo outside the builder stage"
            );
        }
    }
}

#[test]
fn builder_rust_is_at_least_the_workspace_msrv() {
    let df = df();
    let v = df
        .global_args
        .get("RUST_VERSION")
        .expect("ARG RUST_VERSION before FROM");
    // The workspace's rust-version, which this crate inherits.
    let msrv = env!("CARGO_PKG_RUST_VERSION");
    let parse = |s: &str| {
        s.split('.')
            .map(|p| p.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert!(
        parse(v) >= parse(msrv),
        "RUST_VERSION {v} < rust-version {msrv}"
    );
    // The default builder base is the official Rust image of that version.
    let base = df.resolve(&df.stage("builder").unwrap().from);
    assert!(
        base.starts_with(&format!("rust:{v}-")),
        "builder base {base}"
    );
}

#[test]
fn base_images_are_build_arguments() {
    // The cluster test builds with bases made from Debian's packages (e2e/image/build.sh).
    let df = df();
    assert_eq!(df.stage("builder").unwrap().from, "${BUILDER_IMAGE}");
    assert_eq!(df.runtime().from, "${RUNTIME_IMAGE}");
    for arg in ["BUILDER_IMAGE", "RUNTIME_IMAGE"] {
        assert!(df.global_args.contains_key(arg), "ARG {arg} before FROM");
    }
    let script = std::fs::read_to_string(repo_root().join("e2e/image/build.sh")).unwrap();
    for arg in ["BUILDER_IMAGE", "RUNTIME_IMAGE"] {
        assert!(
            script.contains(&format!("--build-arg {arg}=")),
            "build.sh sets {arg}"
        );
    }
}

#[test]
fn builder_strips_the_binaries() {
    let df = df();
    let builder = df.stage("builder").unwrap();
    assert!(
        df.run_commands(builder)
            .iter()
            .any(|c| c == "strip /out/unisondb /out/unisondb-operator"),
        "the builder strips both binaries"
    );
}

#[test]
fn runtime_stage_facts() {
    let f = df().runtime_facts();
    assert!(
        f.base.starts_with("debian:") || f.base.contains("distroless"),
        "small runtime base: {}",
        f.base
    );
    assert_eq!(
        f.user.split(':').next(),
        Some("65532"),
        "non-root user 65532"
    );
    assert_eq!(f.expose, vec![4000, 4001, 4002]);
    assert_eq!(f.volumes, vec!["/var/lib/unisondb".to_string()]);
    assert_eq!(
        f.env.get("UNISONDB_SERVER_DATA_DIR").map(String::as_str),
        Some("/var/lib/unisondb")
    );
    for bin in ["unisondb", "unisondb-operator"] {
        assert!(
            f.copies.iter().any(|(src, dst)| src.starts_with("builder:")
                && src.ends_with(&format!("/{bin}"))
                && dst == &format!("/usr/local/bin/{bin}")),
            "{bin} copied from the builder onto PATH: {:?}",
            f.copies
        );
    }
    for l in [
        "title",
        "description",
        "source",
        "licenses",
        "version",
        "revision",
    ] {
        assert!(
            f.labels
                .contains_key(&format!("org.opencontainers.image.{l}")),
            "OCI label {l}"
        );
    }
    assert_eq!(f.labels["org.opencontainers.image.licenses"], "Apache-2.0");
    // entrypoint dispatches to either program
    assert_eq!(
        f.entrypoint.last().map(String::as_str),
        Some("/usr/local/bin/docker-entrypoint.sh")
    );
    assert!(f
        .copies
        .iter()
        .any(|(s, d)| s == "docker/entrypoint.sh" && d == "/usr/local/bin/docker-entrypoint.sh"));
    assert_eq!(f.cmd.first().map(String::as_str), Some("unisondb"));
}

#[test]
fn entrypoint_dispatches_on_the_program_name() {
    // Run the real script with stub programs on PATH.
    let dir = std::env::temp_dir().join(format!("unisondb-entry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for bin in ["unisondb", "unisondb-operator"] {
        let p = dir.join(bin);
        std::fs::write(&p, format!("#!/bin/sh\necho {bin} \"$@\"\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let run = |args: &[&str]| {
        let o = std::process::Command::new("sh")
            .arg(repo_root().join("docker/entrypoint.sh"))
            .args(args)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(run(&["unisondb-operator", "run"]), "unisondb-operator run");
    assert_eq!(
        run(&["unisondb", "server", "--mode", "relayer"]),
        "unisondb server --mode relayer"
    );
    assert_eq!(
        run(&["server", "--mode", "replicator"]),
        "unisondb server --mode replicator"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dockerignore_keeps_the_context_small_but_complete() {
    let text = std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    let pats: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target", ".git"] {
        assert!(pats.contains(&must), ".dockerignore must exclude {must}");
    }
    // what the build needs must not be excluded
    for need in [
        "Cargo.toml",
        "Cargo.lock",
        "node",
        "operator",
        "proto",
        "e2e",
        "docker",
        "scripts",
    ] {
        assert!(
            !pats.contains(&need),
            ".dockerignore excludes {need}, which the build needs"
        );
    }
}
