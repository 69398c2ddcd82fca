//! Where things live: the repository, the e2e cache (venv, Kubernetes binaries).

use std::path::{Path, PathBuf};

/// The repository root (this crate lives in `<root>/testkit`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The installers' cache: `UNISONDB_E2E_CACHE`, else `~/.cache/unisondb-e2e` (venv, Kubernetes).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("UNISONDB_E2E_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/unisondb-e2e")
}

/// The Kubernetes v1.20.2 binaries: `K8S_BIN`, else `<cache>/k8s-1.20.2/bin`.
pub fn k8s_bin_dir() -> PathBuf {
    std::env::var_os("K8S_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("k8s-1.20.2/bin"))
}
