//! A rustls `ServerConfig` rebuilt from its PEM files when they change (see the module doc).

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{register_int_counter_vec_with_registry, IntCounterVec};
use thiserror::Error;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// At most one look at the files per this interval (each new handshake may trigger one).
pub const RECHECK: Duration = Duration::from_secs(1);

static RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec_with_registry!(
        "unisondb_tls_reloads_total",
        "Certificate files that changed under a running listener: result ok (now in use) or error (refused, the previous pair stays)",
        &["listener", "result"],
        crate::metrics::REGISTRY
    )
    .expect("metric registers once")
});

#[derive(Debug, Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCert(String),
    #[error("{0} holds no PEM private key")]
    NoKey(String),
    #[error("invalid TLS certificate/key: {0}")]
    Rustls(#[from] tokio_rustls::rustls::Error),
    #[error("invalid client CA: {0}")]
    ClientCa(String),
}

/// Where a listener's certificate, key and (for mutual TLS) client CA live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The PEM bytes of a listener's certificate chain, key and optional client CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

fn read(p: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(p).map_err(|source| CertError::Read {
        path: p.display().to_string(),
        source,
    })
}

impl TlsFiles {
    pub fn read(&self) -> Result<Pem, CertError> {
        Ok(Pem {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            client_ca: self.client_ca.as_deref().map(read).transpose()?,
        })
    }
}

/// Builds a server config from PEM: the chain and key, client certificates required and verified
/// against `client_ca` when it is set, and the given ALPN protocols.
fn server_config(pem: &Pem, alpn: &[Vec<u8>]) -> Result<ServerConfig, CertError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.cert.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(CertError::NoCert("the certificate file".into()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.key.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| CertError::NoKey("the key file".into()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut cfg = match &pem.client_ca {
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut ca.as_slice()).filter_map(Result::ok) {
                roots
                    .add(c)
                    .map_err(|e| CertError::ClientCa(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(CertError::ClientCa("no PEM certificate in it".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| CertError::ClientCa(e.to_string()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)?
        }
    };
    cfg.alpn_protocols = alpn.to_vec();
    Ok(cfg)
}

struct Loaded {
    pem: Pem,
    acceptor: TlsAcceptor,
    checked: Instant,
    /// Content that failed to load, so a broken pair is reported once rather than per handshake.
    refused: Option<Pem>,
}

/// A listener's TLS material, re-read from its files when they change (see the module doc).
pub struct ServerCerts {
    listener: &'static str,
    alpn: Vec<Vec<u8>>,
    files: Option<TlsFiles>,
    loaded: Mutex<Loaded>,
}

impl ServerCerts {
    /// From files (re-read on change); `listener` names it in logs and metrics (`http`, `grpc`).
    pub fn from_files(
        listener: &'static str,
        files: TlsFiles,
        alpn: &[&[u8]],
    ) -> Result<ServerCerts, CertError> {
        let pem = files.read()?;
        Self::build(listener, pem, Some(files), alpn)
    }

    /// From PEM held in memory (never reloaded).
    pub fn from_pem(
        listener: &'static str,
        pem: Pem,
        alpn: &[&[u8]],
    ) -> Result<ServerCerts, CertError> {
        Self::build(listener, pem, None, alpn)
    }

    fn build(
        listener: &'static str,
        pem: Pem,
        files: Option<TlsFiles>,
        alpn: &[&[u8]],
    ) -> Result<ServerCerts, CertError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&pem, &alpn)?));
        Ok(ServerCerts {
            listener,
            alpn,
            files,
            loaded: Mutex::new(Loaded {
                pem,
                acceptor,
                checked: Instant::now(),
                refused: None,
            }),
        })
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.loaded.lock().pem.client_ca.is_some()
    }

    /// The acceptor for a new handshake, after a look at the files if the last is over [`RECHECK`] old.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut l = self.loaded.lock();
        if l.checked.elapsed() >= RECHECK {
            self.refresh(&mut l);
        }
        l.acceptor.clone()
    }

    /// Looks at the files now; `Ok(true)` when a new pair took effect.
    pub fn reload(&self) -> Result<bool, CertError> {
        let mut l = self.loaded.lock();
        self.try_refresh(&mut l)
    }

    fn refresh(&self, l: &mut Loaded) {
        if let Err(e) = self.try_refresh(l) {
            tracing::error!(listener = self.listener, error = %e,
                "new TLS certificate files refused; the previous certificate stays in use");
        }
    }

    fn try_refresh(&self, l: &mut Loaded) -> Result<bool, CertError> {
        l.checked = Instant::now();
        let Some(files) = &self.files else {
            return Ok(false);
        };
        // Mid-rotation reads (a Secret being swapped) fail or mismatch: try again next time.
        let pem = files.read()?;
        if pem == l.pem || l.refused.as_ref() == Some(&pem) {
            return Ok(false);
        }
        match server_config(&pem, &self.alpn) {
            Ok(cfg) => {
                l.acceptor = TlsAcceptor::from(Arc::new(cfg));
                l.pem = pem;
                l.refused = None;
                RELOADS.with_label_values(&[self.listener, "ok"]).inc();
                tracing::info!(
                    listener = self.listener,
                    "TLS certificate files changed: new handshakes use them"
                );
                Ok(true)
            }
            Err(e) => {
                l.refused = Some(pem);
                RELOADS.with_label_values(&[self.listener, "error"]).inc();
                Err(e)
            }
        }
    }
}
