//! The S3-compatible client: one bucket and key prefix, over the `object_store` crate (retries
//! with exponential backoff, multipart upload for large objects, path-style addressing, TLS with
//! an optional CA bundle).

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use tokio::io::AsyncWriteExt;
use unisondb_config::ObjectStoreConfig;

use super::ObjStoreError;

/// Objects at or above this size go up as a multipart upload, in parts of this size.
const PART_BYTES: usize = 8 << 20;

/// One bucket (and key prefix) of an S3-compatible store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.location(""))
    }
}

/// An object found by a listing: its key relative to the store's prefix, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

impl Store {
    /// Builds the client for `cfg`; credentials from its file, else the environment.
    pub fn from_config(cfg: &ObjectStoreConfig) -> Result<Store, ObjStoreError> {
        if cfg.bucket.trim().is_empty() {
            return Err(ObjStoreError::Config("the bucket is empty".into()));
        }
        let mut client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        if !cfg.ca_file.trim().is_empty() {
            let pem = std::fs::read(cfg.ca_file.trim())
                .map_err(|e| ObjStoreError::Config(format!("ca_file {}: {e}", cfg.ca_file)))?;
            for cert in object_store::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ObjStoreError::Config(format!("ca_file {}: {e}", cfg.ca_file)))?
            {
                client = client.with_root_certificate(cert);
            }
        }
        let endpoint = cfg.endpoint.trim().trim_end_matches('/');
        if endpoint.starts_with("http://") {
            client = client.with_allow_http(true);
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 6,
            retry_timeout: Duration::from_secs(60),
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(cfg.bucket.trim())
            .with_region(if cfg.region.is_empty() {
                "us-east-1"
            } else {
                cfg.region.as_str()
            })
            .with_virtual_hosted_style_request(!cfg.path_style)
            .with_client_options(client)
            .with_retry(retry);
        if !endpoint.is_empty() {
            b = b.with_endpoint(endpoint);
        }
        if let Some(c) = super::credentials::load(&cfg.credentials_file)? {
            b = b
                .with_access_key_id(c.access_key_id)
                .with_secret_access_key(c.secret_access_key);
            if let Some(t) = c.session_token {
                b = b.with_token(t);
            }
        }
        let inner = b
            .build()
            .map_err(|e| ObjStoreError::Config(e.to_string()))?;
        Ok(Store {
            inner: Arc::new(inner),
            bucket: cfg.bucket.trim().to_string(),
            prefix: cfg.prefix.trim().trim_matches('/').to_string(),
        })
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// `s3://bucket/prefix/key`: how errors and answers name an object.
    pub fn location(&self, key: &str) -> String {
        let mut s = format!("s3://{}/", self.bucket);
        if !self.prefix.is_empty() {
            s.push_str(&self.prefix);
            s.push('/');
        }
        s.push_str(key);
        s
    }

    fn err(&self, key: &str) -> impl FnOnce(object_store::Error) -> ObjStoreError + '_ {
        let object = self.location(key);
        move |source| match source {
            object_store::Error::NotFound { .. } => ObjStoreError::NotFound { object },
            source => ObjStoreError::Store { object, source },
        }
    }

    /// Uploads `data` as one object (single PUT, atomic: readers see all of it or none).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), ObjStoreError> {
        self.inner
            .put(&self.path(key), data.into())
            .await
            .map(|_| ())
            .map_err(self.err(key))
    }

    /// Uploads a local file; large ones as a multipart upload (completed atomically at the end,
    /// aborted on error).
    pub async fn put_file(&self, key: &str, file: &FsPath) -> Result<u64, ObjStoreError> {
        use tokio::io::AsyncReadExt;
        let io = |e: std::io::Error| ObjStoreError::Io {
            path: file.display().to_string(),
            source: e,
        };
        let mut f = tokio::fs::File::open(file).await.map_err(io)?;
        let mut w = object_store::buffered::BufWriter::with_capacity(
            Arc::clone(&self.inner),
            self.path(key),
            PART_BYTES,
        );
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let res: Result<(), std::io::Error> = async {
            loop {
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                w.write_all(&buf[..n]).await?;
            }
            w.shutdown().await
        }
        .await;
        if let Err(e) = res {
            let _ = w.abort().await;
            return Err(ObjStoreError::Upload {
                object: self.location(key),
                reason: e.to_string(),
            });
        }
        Ok(total)
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, ObjStoreError> {
        let r = self
            .inner
            .get(&self.path(key))
            .await
            .map_err(self.err(key))?;
        r.bytes().await.map_err(self.err(key))
    }

    /// Lists the objects under `dir` (a key prefix ending in `/`), sorted by key.
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>, ObjStoreError> {
        let base = self.path(dir.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<object_store::ObjectMeta> = self
            .inner
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(self.err(dir))?;
        let mut out: Vec<Listed> = metas
            .into_iter()
            .map(|m| Listed {
                key: m
                    .location
                    .as_ref()
                    .strip_prefix(&strip)
                    .unwrap_or(m.location.as_ref())
                    .to_string(),
                size: m.size,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes an object (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), ObjStoreError> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key)(e)),
        }
    }
}

impl Store {
    /// Streams an object's bytes (for large objects downloaded to a file).
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<impl futures::Stream<Item = Result<Bytes, ObjStoreError>> + '_, ObjStoreError> {
        let r = self
            .inner
            .get(&self.path(key))
            .await
            .map_err(self.err(key))?;
        let object = self.location(key);
        Ok(r.into_stream().map_err(move |source| ObjStoreError::Store {
            object: object.clone(),
            source,
        }))
    }
}
