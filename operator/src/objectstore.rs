//! Object stores in a node's pods, pure: the `archive` and `replication.object_store` config
//! sections, the Secrets mounted for their credentials, and the recovery init containers
//! (`unisondb restore --from-object-store`, docs/BACKUP.md). What a hub or relayer spec asks for is
//! reduced to one [`StoreExtras`] by [`hub`] and [`relayer`], which also validate it.

use unisondb_config::{ArchiveConfig, ObjectStoreConfig};

use crate::crd::{ObjectStoreSpec, RecoverySpec, UnisonHubSpec, UnisonRelayerSpec};
use crate::nodeconfig::DATA_DIR;
use crate::validate::Invalid;

/// Where the archive's (hub) or followed store's (relayer) credentials Secret is mounted.
pub const STORE_DIR: &str = "/etc/unisondb/object-store";
/// Where that store's CA Secret is mounted.
pub const STORE_CA_DIR: &str = "/etc/unisondb/object-store-ca";
/// Where the recovery store's credentials Secret is mounted (init containers only).
pub const RECOVERY_DIR: &str = "/etc/unisondb/recovery-store";
/// Where a recovery store's CA Secret is mounted (init containers only).
pub const RECOVERY_CA_DIR: &str = "/etc/unisondb/recovery-store-ca";

/// A Secret mounted read-only into the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretMount {
    /// Volume name.
    pub volume: String,
    pub secret: String,
    pub path: String,
}

/// One recovery init container: the namespace and its full command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreStep {
    pub namespace: String,
    pub args: Vec<String>,
}

/// Everything object storage adds to a node: config sections, Secret mounts (the node
/// container's and the init containers'), and restore steps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreExtras {
    /// `archive` (hubs with `spec.backup`).
    pub archive: Option<ArchiveConfig>,
    /// `replication.object_store` (relayers with `upstream.objectStore`).
    pub object_store: Option<ObjectStoreConfig>,
    /// Mounted into the node container.
    pub mounts: Vec<SecretMount>,
    /// Mounted into the restore init containers.
    pub restore_mounts: Vec<SecretMount>,
    /// One init container per owned namespace (`spec.bootstrap.recovery`).
    pub restore: Vec<RestoreStep>,
}

fn invalid(reason: &'static str, message: String) -> Invalid {
    Invalid { reason, message }
}

/// Checks a store spec; `field` names it in messages.
pub fn check_store(field: &str, s: &ObjectStoreSpec) -> Result<(), Invalid> {
    if s.bucket.trim().is_empty() {
        return Err(invalid(
            "InvalidObjectStore",
            format!("{field}.bucket must be set"),
        ));
    }
    let bucket_ok = s.bucket.len() >= 3
        && s.bucket.len() <= 63
        && s.bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_ok {
        return Err(invalid(
            "InvalidObjectStore",
            format!(
                "{field}.bucket: {:?} is not a bucket name (3-63 lowercase letters, digits, '-' or '.')",
                s.bucket
            ),
        ));
    }
    if let Some(e) = &s.endpoint {
        let rest = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"));
        let host = rest.map(|r| r.split('/').next().unwrap_or_default());
        if !host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace)) {
            return Err(invalid(
                "InvalidObjectStore",
                format!("{field}.endpoint: {e:?} must be an http:// or https:// URL"),
            ));
        }
    }
    if s.prefix.starts_with('/') || s.prefix.ends_with('/') {
        return Err(invalid(
            "InvalidObjectStore",
            format!(
                "{field}.prefix: {:?} must not start or end with '/'",
                s.prefix
            ),
        ));
    }
    if s.region.trim().is_empty() {
        return Err(invalid(
            "InvalidObjectStore",
            format!("{field}.region must not be empty"),
        ));
    }
    let refs = [
        (
            "credentialsSecret",
            Some((&s.credentials_secret.name, &s.credentials_secret.key)),
        ),
        ("caSecret", s.ca_secret.as_ref().map(|c| (&c.name, &c.key))),
    ];
    for (what, r) in refs {
        if let Some((name, key)) = r.filter(|(n, k)| n.trim().is_empty() || k.trim().is_empty()) {
            return Err(invalid(
                "InvalidObjectStore",
                format!(
                    "{field}.{what}: name and key must be set (got name {name:?}, key {key:?})"
                ),
            ));
        }
    }
    Ok(())
}

fn file_in(dir: &str, key: &str) -> String {
    format!("{dir}/{key}")
}

/// The store as the node config spells it (credentials and CA at their mount paths).
pub fn store_config(s: &ObjectStoreSpec) -> ObjectStoreConfig {
    ObjectStoreConfig {
        endpoint: s.endpoint.clone().unwrap_or_default(),
        bucket: s.bucket.clone(),
        prefix: s.prefix.clone(),
        region: s.region.clone(),
        path_style: s.path_style,
        credentials_file: file_in(STORE_DIR, &s.credentials_secret.key),
        ca_file: s
            .ca_secret
            .as_ref()
            .map(|c| file_in(STORE_CA_DIR, &c.key))
            .unwrap_or_default(),
        ..ObjectStoreConfig::default()
    }
}

fn store_mounts(s: &ObjectStoreSpec) -> Vec<SecretMount> {
    let mut m = vec![SecretMount {
        volume: "object-store".into(),
        secret: s.credentials_secret.name.clone(),
        path: STORE_DIR.into(),
    }];
    if let Some(ca) = &s.ca_secret {
        m.push(SecretMount {
            volume: "object-store-ca".into(),
            secret: ca.name.clone(),
            path: STORE_CA_DIR.into(),
        });
    }
    m
}

/// `s3://bucket[/prefix]`.
pub fn url(s: &ObjectStoreSpec) -> String {
    if s.prefix.is_empty() {
        format!("s3://{}", s.bucket)
    } else {
        format!("s3://{}/{}", s.bucket, s.prefix)
    }
}

/// The command line restoring `namespace` from `r` into the node's data directory.
pub fn restore_args(r: &RecoverySpec, namespace: &str) -> Vec<String> {
    let s = &r.object_store;
    let mut a: Vec<String> = vec![
        "restore".into(),
        "-d".into(),
        DATA_DIR.into(),
        "-n".into(),
        namespace.into(),
        "--from-object-store".into(),
        url(s),
    ];
    if let Some(e) = &s.endpoint {
        a.extend(["--endpoint".into(), e.clone()]);
    }
    a.extend(["--region".into(), s.region.clone()]);
    if s.path_style {
        a.push("--path-style".into());
    }
    a.extend([
        "--credentials-file".into(),
        file_in(RECOVERY_DIR, &s.credentials_secret.key),
    ]);
    if let Some(ca) = &s.ca_secret {
        a.extend(["--ca-file".into(), file_in(RECOVERY_CA_DIR, &ca.key)]);
    }
    if let Some(id) = &r.backup_id {
        a.extend(["--backup-id".into(), id.clone()]);
    }
    if let Some(lsn) = r.target_lsn {
        a.extend(["--to-lsn".into(), lsn.to_string()]);
    }
    if let Some(t) = &r.target_time {
        a.extend(["--to-time".into(), t.clone()]);
    }
    a.extend(["--if-empty".into(), "--force".into()]);
    a
}

fn check_recovery(r: &RecoverySpec) -> Result<(), Invalid> {
    check_store("bootstrap.recovery.objectStore", &r.object_store)?;
    if r.target_lsn.is_some() && r.target_time.is_some() {
        return Err(invalid(
            "InvalidRecovery",
            "bootstrap.recovery: set at most one of targetLsn or targetTime".into(),
        ));
    }
    if let Some(t) = &r.target_time {
        if t.parse::<jiff::Timestamp>().is_err() {
            return Err(invalid(
                "InvalidRecovery",
                format!("bootstrap.recovery.targetTime: {t:?} is not an RFC 3339 time"),
            ));
        }
    }
    Ok(())
}

/// What a hub spec adds (`spec.backup`, `spec.bootstrap.recovery`), or why it is refused.
pub fn hub(spec: &UnisonHubSpec) -> Result<StoreExtras, Invalid> {
    let mut x = StoreExtras::default();
    if let Some(b) = &spec.backup {
        check_store("backup.objectStore", &b.object_store)?;
        // Archiving paused still names the bucket: base backups (UnisonBackup) go there.
        {
            let s = store_config(&b.object_store);
            let mut a = ArchiveConfig {
                enabled: b.wal_archiving.enabled,
                endpoint: s.endpoint,
                bucket: s.bucket,
                prefix: s.prefix,
                region: s.region,
                path_style: s.path_style,
                credentials_file: s.credentials_file,
                ca_file: s.ca_file,
                ..ArchiveConfig::default()
            };
            if let Some(d) = b.wal_archiving.max_delay_seconds {
                a.max_delay_seconds = d;
            }
            if let Some(n) = b.retention.base_backups {
                a.retain_base_backups = n;
            }
            x.archive = Some(a);
            x.mounts = store_mounts(&b.object_store);
        }
    }
    if let Some(r) = spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref()) {
        check_recovery(r)?;
        x.restore_mounts = vec![SecretMount {
            volume: "recovery-store".into(),
            secret: r.object_store.credentials_secret.name.clone(),
            path: RECOVERY_DIR.into(),
        }];
        if let Some(ca) = &r.object_store.ca_secret {
            x.restore_mounts.push(SecretMount {
                volume: "recovery-store-ca".into(),
                secret: ca.name.clone(),
                path: RECOVERY_CA_DIR.into(),
            });
        }
        x.restore = spec
            .namespaces
            .iter()
            .map(|ns| RestoreStep {
                namespace: ns.clone(),
                args: restore_args(r, ns),
            })
            .collect();
    }
    Ok(x)
}

/// What a relayer spec adds (`upstream.objectStore`), or why it is refused.
pub fn relayer(spec: &UnisonRelayerSpec) -> Result<StoreExtras, Invalid> {
    let mut x = StoreExtras::default();
    if let Some(o) = &spec.upstream.object_store {
        check_store("upstream.objectStore", &o.store)?;
        let mut c = store_config(&o.store);
        if let Some(ms) = o.poll_interval_ms {
            c.poll_interval_ms = ms;
        }
        x.object_store = Some(c);
        x.mounts = store_mounts(&o.store);
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(yaml: &str) -> ObjectStoreSpec {
        serde_yaml_ng::from_str(yaml).expect("store parses")
    }

    #[test]
    fn store_rules_name_the_field() {
        let ok = "{bucket: backups, endpoint: 'http://minio:9000', credentialsSecret: {name: s3}}";
        assert_eq!(check_store("x", &store(ok)), Ok(()));
        for (bad, want) in [
            (
                "{bucket: '', credentialsSecret: {name: s3}}",
                "x.bucket must be set",
            ),
            (
                "{bucket: Backups_1, credentialsSecret: {name: s3}}",
                "x.bucket",
            ),
            (
                "{bucket: b12, endpoint: 'minio:9000', credentialsSecret: {name: s3}}",
                "x.endpoint",
            ),
            (
                "{bucket: b12, endpoint: 'http://', credentialsSecret: {name: s3}}",
                "x.endpoint",
            ),
            (
                "{bucket: b12, prefix: /a, credentialsSecret: {name: s3}}",
                "x.prefix",
            ),
            (
                "{bucket: b12, credentialsSecret: {name: ''}}",
                "x.credentialsSecret",
            ),
        ] {
            let e = check_store("x", &store(bad)).expect_err(bad);
            assert_eq!(e.reason, "InvalidObjectStore");
            assert!(e.message.contains(want), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn url_has_the_prefix_when_set() {
        assert_eq!(
            url(&store("{bucket: b12, credentialsSecret: {name: s}}")),
            "s3://b12"
        );
        assert_eq!(
            url(&store(
                "{bucket: b12, prefix: a/b, credentialsSecret: {name: s}}"
            )),
            "s3://b12/a/b"
        );
    }
}
