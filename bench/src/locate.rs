//! Where the `unisondb` server binary is: it lives in another package (`unisondb-node`), so Cargo's
//! `CARGO_BIN_EXE_unisondb` is not available to this crate.
//!
//! Order: `$UNISONDB_BIN`, then `unisondb` next to the running executable (`target/<profile>/` for the
//! bench binaries) or one directory up (`target/<profile>/deps/` holds the `cargo bench` executables).
//! Build it first: `cargo build --release -p unisondb-node --bin unisondb` (docs/BENCHMARKS.md).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The environment variable that names the `unisondb` binary explicitly.
pub const BIN_ENV: &str = "UNISONDB_BIN";

/// Path of the `unisondb` binary to start, or an error saying how to build it.
pub fn unisondb_bin() -> Result<PathBuf> {
    binary("unisondb", BIN_ENV, "unisondb-node")
}

/// Path of binary `name` of workspace package `package`: `$env` when set, else next to the running
/// executable or one directory up; the error says how to build it.
pub fn binary(name: &str, env: &str, package: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{env}={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("current executable")?;
    if let Some(p) = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
    {
        return Ok(p);
    }
    bail!(
        "no `{name}` binary next to {}: run `cargo build --release -p {package} --bin {name}` \
         first (same profile as this program), or set {env}=/path/to/{name}",
        exe.display()
    )
}
