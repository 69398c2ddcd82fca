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

/// The shared test venv's Python (pyzmq, helm-python-sdk): `UNISONDB_E2E_VENV`, else `<cache>/venv`.
/// Errors naming the installer when it is missing.
pub fn venv_python() -> Result<PathBuf, crate::Error> {
    let venv = std::env::var_os("UNISONDB_E2E_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("venv"));
    let py = venv.join("bin/python");
    if py.exists() {
        Ok(py)
    } else {
        Err(crate::Error::Missing {
            path: py,
            hint: "run `bash scripts/install-deps.sh` (its e2e/*/install-deps.sh fill the venv)"
                .into(),
        })
    }
}
