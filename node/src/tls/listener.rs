//! The TLS accept loop: handshakes run in their own tasks (one slow or hostile client cannot stall
//! accepting others), each with the listener's current certificates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use super::ServerCerts;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP connections and yields those that completed a TLS handshake.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// Where connections that negotiated a given ALPN protocol go instead of the listener's stream.
pub type Diversion = (&'static [u8], mpsc::Sender<TlsStream<TcpStream>>);

impl TlsListener {
    pub fn new(tcp: TcpListener, certs: Arc<ServerCerts>) -> std::io::Result<TlsListener> {
        Self::diverting(tcp, certs, None)
    }

    /// [`TlsListener::new`], sending connections that negotiated `divert`'s protocol to its
    /// channel (the gRPC port's AppendEntries links, `raft/link.rs`).
    pub fn diverting(
        tcp: TcpListener,
        certs: Arc<ServerCerts>,
        divert: Option<Diversion>,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (sock, addr) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let _ = sock.set_nodelay(true);
                let acceptor = certs.acceptor();
                let (tx, divert) = (tx.clone(), divert.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(stream)) => match divert {
                            Some((alpn, to))
                                if stream.get_ref().1.alpn_protocol() == Some(alpn) =>
                            {
                                let _ = to.send(stream).await;
                            }
                            _ => {
                                let _ = tx.send((stream, addr)).await;
                            }
                        },
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }

    /// The handshaken connections as a stream (what `tonic`'s `serve_with_incoming` takes).
    pub fn into_incoming(
        self,
    ) -> impl futures::Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
        futures::stream::unfold(self.rx, |mut rx| async move {
            rx.recv().await.map(|(s, _)| (Ok(s), rx))
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task only ends when we are dropped; never resolve otherwise.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
