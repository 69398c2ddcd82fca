//! Mutual TLS for gRPC: the server demands and verifies client certificates against a CA, the client
//! verifies the server against its CA and presents its own certificate.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::tls::{Pem, ServerCerts, TlsFiles};

use super::ReplicationError;

/// PEM material for the server side. With `client_ca_pem` set, clients without a certificate signed by
/// that CA are rejected during the handshake.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
    /// The files they came from, re-read when they change (`None`: PEM given in memory).
    pub files: Option<TlsFiles>,
}

/// PEM material for the client side: the CA that signed the server, and our identity for mTLS.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Option<Vec<u8>>,
    pub key_pem: Option<Vec<u8>>,
    /// Name to verify in the server certificate (defaults to the host of the upstream address).
    pub domain: Option<String>,
    /// The files they came from, re-read at every connection attempt (`None`: PEM given in memory).
    pub files: Option<ClientFiles>,
}

/// Where the client's CA and (for mutual TLS) certificate and key live.
#[derive(Clone, Debug)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

fn read(path: &Path) -> Result<Vec<u8>, ReplicationError> {
    std::fs::read(path).map_err(|e| ReplicationError::Tls(format!("{}: {e}", path.display())))
}

fn nonempty(p: &str) -> Option<&Path> {
    (!p.is_empty()).then(|| Path::new(p))
}

impl ServerTls {
    /// From config file paths; `None` (plaintext) when no certificate is configured.
    pub fn from_files(
        cert: &str,
        key: &str,
        ca: &str,
    ) -> Result<Option<ServerTls>, ReplicationError> {
        match (nonempty(cert), nonempty(key)) {
            (None, None) => {
                if nonempty(ca).is_some() {
                    return Err(ReplicationError::Tls(
                        "grpc.tls_ca_file is set but grpc.tls_cert_file/tls_key_file are not"
                            .into(),
                    ));
                }
                Ok(None)
            }
            (Some(c), Some(k)) => Ok(Some(ServerTls {
                cert_pem: read(c)?,
                key_pem: read(k)?,
                client_ca_pem: nonempty(ca).map(read).transpose()?,
                files: Some(TlsFiles {
                    cert: c.to_path_buf(),
                    key: k.to_path_buf(),
                    client_ca: nonempty(ca).map(Path::to_path_buf),
                }),
            })),
            _ => Err(ReplicationError::Tls(
                "grpc.tls_cert_file and grpc.tls_key_file must be set together".into(),
            )),
        }
    }

    /// The listener's certificates (HTTP/2 only, as gRPC needs), reloaded from `files` on change.
    pub fn certs(&self) -> Result<ServerCerts, ReplicationError> {
        // HTTP/2 for gRPC; a hub group's AppendEntries link asks for its own protocol.
        let alpn: &[&[u8]] = &[b"h2", crate::raft::link::ALPN];
        let certs = match &self.files {
            Some(f) => ServerCerts::from_files("grpc", f.clone(), alpn),
            None => ServerCerts::from_pem(
                "grpc",
                Pem {
                    cert: self.cert_pem.clone(),
                    key: self.key_pem.clone(),
                    client_ca: self.client_ca_pem.clone(),
                },
                alpn,
            ),
        };
        certs.map_err(|e| ReplicationError::Tls(e.to_string()))
    }
}

impl ClientTls {
    /// From config file paths; `None` when no CA is configured (then the upstream must be `http://`).
    pub fn from_files(
        ca: &str,
        cert: &str,
        key: &str,
    ) -> Result<Option<ClientTls>, ReplicationError> {
        let Some(ca) = nonempty(ca) else {
            if nonempty(cert).is_some() || nonempty(key).is_some() {
                return Err(ReplicationError::Tls(
                    "replication.tls_cert_file/tls_key_file need replication.tls_ca_file".into(),
                ));
            }
            return Ok(None);
        };
        let (cert_pem, key_pem) = match (nonempty(cert), nonempty(key)) {
            (Some(c), Some(k)) => (Some(read(c)?), Some(read(k)?)),
            (None, None) => (None, None),
            _ => {
                return Err(ReplicationError::Tls(
                    "replication.tls_cert_file and tls_key_file must be set together".into(),
                ))
            }
        };
        Ok(Some(ClientTls {
            ca_pem: read(ca)?,
            cert_pem,
            key_pem,
            domain: None,
            files: Some(ClientFiles {
                ca: ca.to_path_buf(),
                identity: nonempty(cert)
                    .zip(nonempty(key))
                    .map(|(c, k)| (c.to_path_buf(), k.to_path_buf())),
            }),
        }))
    }

    /// The material as the files hold it now (a renewed client certificate or CA is used from the
    /// next connection on); the last good copy when they cannot be read.
    pub fn fresh(&self) -> ClientTls {
        let Some(files) = &self.files else {
            return self.clone();
        };
        let reread = || -> Result<ClientTls, ReplicationError> {
            let (cert_pem, key_pem) = match &files.identity {
                Some((c, k)) => (Some(read(c)?), Some(read(k)?)),
                None => (None, None),
            };
            Ok(ClientTls {
                ca_pem: read(&files.ca)?,
                cert_pem,
                key_pem,
                ..self.clone()
            })
        };
        reread().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot re-read replication TLS files; using the last good copy");
            self.clone()
        })
    }

    /// A rustls client config offering only `alpn` (the AppendEntries link's own connections).
    pub fn to_rustls(
        &self,
        alpn: &[u8],
    ) -> Result<tokio_rustls::rustls::ClientConfig, ReplicationError> {
        use tokio_rustls::rustls;
        let bad = |e: String| ReplicationError::Tls(e);
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca_pem.as_slice()).filter_map(Result::ok) {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots);
        let mut cfg = match (&self.cert_pem, &self.key_pem) {
            (Some(c), Some(k)) => {
                let chain = rustls_pemfile::certs(&mut c.as_slice())
                    .filter_map(Result::ok)
                    .collect();
                let key = rustls_pemfile::private_key(&mut k.as_slice())
                    .ok()
                    .flatten()
                    .ok_or_else(|| bad("no private key in the client key file".into()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad(e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![alpn.to_vec()];
        Ok(cfg)
    }

    pub fn to_tonic(&self, default_domain: &str) -> ClientTlsConfig {
        let mut cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name(
                self.domain
                    .clone()
                    .unwrap_or_else(|| default_domain.to_string()),
            );
        if let (Some(c), Some(k)) = (&self.cert_pem, &self.key_pem) {
            cfg = cfg.identity(Identity::from_pem(c, k));
        }
        cfg
    }
}
