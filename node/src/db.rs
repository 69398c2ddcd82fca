//! A process's set of namespaces, each in its own directory under the data directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::engine::{validate_name, EngineError, EngineOptions, Namespace, Role};

/// All namespaces a node serves; looked up by name on every request.
#[derive(Clone)]
pub struct Database {
    data_dir: PathBuf,
    namespaces: BTreeMap<String, Namespace>,
}

impl Database {
    /// Opens (creating as needed) every named namespace under `data_dir`, all owned by this node.
    pub fn open(
        data_dir: &Path,
        names: &[String],
        opts: &EngineOptions,
    ) -> Result<Database, EngineError> {
        Database::open_with_roles(data_dir, names, opts, |_| Role::Owner)
    }

    /// Opens every named namespace with the part this node plays for it (`role_of(name)`): the
    /// namespaces it follows refuse local writes in the engine.
    pub fn open_with_roles(
        data_dir: &Path,
        names: &[String],
        opts: &EngineOptions,
        role_of: impl Fn(&str) -> Role,
    ) -> Result<Database, EngineError> {
        Database::open_each(data_dir, names, |dir, name| {
            Namespace::open_as(dir, name, opts.clone(), role_of(name))
        })
    }

    /// Opens every named namespace with `open(dir, name)` (cluster mode opens group members).
    pub fn open_each(
        data_dir: &Path,
        names: &[String],
        mut open: impl FnMut(&Path, &str) -> Result<Namespace, EngineError>,
    ) -> Result<Database, EngineError> {
        crate::fsutil::create_dir_all_durable(data_dir)?;
        let mut namespaces = BTreeMap::new();
        for name in names {
            validate_name(name)?;
            if namespaces.contains_key(name) {
                continue;
            }
            let ns = open(&data_dir.join(name), name)?;
            namespaces.insert(name.clone(), ns);
        }
        Ok(Database {
            data_dir: data_dir.to_path_buf(),
            namespaces,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn get(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values()
    }

    /// Syncs and flushes every namespace (graceful shutdown); reports the first failure.
    pub fn close(&self) -> Result<(), EngineError> {
        let mut first_err = None;
        for ns in self.namespaces.values() {
            if let Err(e) = ns.close() {
                tracing::error!(namespace = ns.name(), error = %e, "close failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Names of the namespace directories found under `data_dir` (for `inspect`).
pub fn discover(data_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                if validate_name(name).is_ok() && entry.path().join("tree.db").exists() {
                    names.push(name.to_string());
                }
            }
        }
    }
    names.sort();
    Ok(names)
}
