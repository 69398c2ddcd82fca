//! The AppendEntries link: one connection per (group, follower), beside gRPC on the same port
//! (plain TCP, or TLS when gRPC uses it).
//!
//! Why: AppendEntries is the hot path of every quorum write (two per write per follower). A tonic
//! unary call costs each side an HTTP/2 stream, HPACK-coded headers and several task hops (buffer
//! worker, connection task, a task per stream on the server); here one task writes a frame and
//! reads the answer on its own socket. openraft calls one follower's client one request at a
//! time, so a link needs no multiplexing: one request, then its answer.
//!
//! Wire (big-endian lengths):
//! - connect: the client sends [`MAGIC`] and a hello frame; the server answers [`MAGIC`] and its
//!   own hello frame (`Hello`, bincode). Each side learns the other's HTTP address from it (the
//!   directory followers proxy writes with).
//! - request frame: `u32 len`, then `u8 kind`, `u16 namespace length`, the namespace, and the
//!   payload (bincode of openraft's request, as over gRPC).
//! - answer frame: `u32 len`, then `u8 status` ([`OK`]: bincode of `Result<response,
//!   RaftError>`; otherwise a UTF-8 reason).
//!
//! The gRPC listener sorts accepted connections by their first eight bytes ([`incoming`]): an
//! HTTP/2 client opens with its preface, a link with [`MAGIC`]. With gRPC TLS on, a link is a TLS
//! connection that negotiates the ALPN protocol [`ALPN`] (gRPC negotiates `h2`), checked by the
//! same certificates as gRPC; the TLS listener hands those to [`serve_diverted`]. A peer that
//! refuses the handshake (an older version, during a rolling upgrade) is called over gRPC for a
//! while ([`Link`]).

use std::io;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::service::RaftService;
use crate::replication::tls::ClientTls;

/// A link's byte stream: plain TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// The first bytes of a link connection, in both directions.
pub const MAGIC: &[u8; 8] = b"UDBRAFT1";
/// The ALPN protocol of a link over TLS.
pub const ALPN: &[u8] = b"unisondb-raft-link/1";
/// The largest frame either side accepts (as the gRPC service's message limit).
const MAX_FRAME: usize = 256 << 20;
/// Request kind: an AppendEntries for the named namespace's group.
pub const APPEND: u8 = 1;
/// Answer status: the payload is the group's answer.
const OK: u8 = 0;
/// Answer status: no group for the namespace runs here (yet), or it stopped.
const UNAVAILABLE: u8 = 1;
/// Answer status: the request does not decode.
const INVALID: u8 = 2;
/// How long a peer that refused a link is called over gRPC before the link is tried again.
const GRPC_AFTER_REFUSAL: Duration = Duration::from_secs(60);
/// How long an accepted connection may stay silent before it is handed to gRPC undecided.
const SORT_PATIENCE: Duration = Duration::from_secs(10);
/// A served link without a request for this long is closed: its leader sends at least a heartbeat
/// per `heartbeat_ms`, so it is gone (or cut off, its end of the connection long dropped).
const IDLE: Duration = Duration::from_secs(60);

/// Who is on the other end of a link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    pub node: u64,
    /// Its HTTP address (empty when unknown).
    pub http: String,
}

/// Why a link call produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer could not be reached, did not answer in time, or has no such group now.
    #[error("{0}")]
    Unreachable(String),
    /// The peer closed the handshake: it does not speak the link (call it over gRPC).
    #[error("{0}")]
    Refused(String),
    /// The peer answered that the request is invalid, or its answer does not decode.
    #[error("{0}")]
    Invalid(String),
}

/// One follower's link, owned by the leader's client for it (openraft calls it sequentially).
#[derive(Default)]
pub struct Link {
    conn: Option<BufReader<Box<dyn Io>>>,
    /// Set when the peer refused a link: until then, calls go over gRPC.
    grpc_until: Option<Instant>,
}

impl Link {
    /// Whether the next call should use the link (not during a refusal's gRPC period).
    pub fn usable(&mut self) -> bool {
        match self.grpc_until {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                self.grpc_until = None;
                true
            }
            None => true,
        }
    }

    /// Sends `req` for `namespace` to `addr` and waits at most `timeout` for the answer,
    /// connecting first if needed (over TLS with `tls`). `learn` receives the peer's hello on a
    /// new connection. Any failure drops the connection (an answer may still be in flight on it).
    #[allow(clippy::too_many_arguments)]
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        addr: &str,
        tls: Option<&ClientTls>,
        hello: &Hello,
        learn: impl FnOnce(Hello),
        namespace: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, LinkError> {
        let frame = request_frame(APPEND, namespace, req)?;
        let attempt = async {
            // A connection kept from an earlier call may have died with its peer's process (a
            // restart): such a failure before any answer is retried once on a new connection.
            // AppendEntries is idempotent, so a request the peer did handle may come again.
            let mut learn = Some(learn);
            let mut retry = self.conn.is_some();
            loop {
                if self.conn.is_none() {
                    let (conn, theirs) = connect(addr, tls, hello).await?;
                    if let Some(learn) = learn.take() {
                        learn(theirs);
                    }
                    self.conn = Some(conn);
                }
                let Some(conn) = self.conn.as_mut() else {
                    return Err(LinkError::Unreachable(format!("{addr}: no connection")));
                };
                let sent = match conn.get_mut().write_all(&frame).await {
                    Ok(()) => read_frame(conn).await,
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(answer) => return decode_answer(addr, &answer),
                    Err(_) if retry => {
                        retry = false;
                        self.conn = None;
                    }
                    Err(e) => return Err(LinkError::Unreachable(format!("{addr}: link: {e}"))),
                }
            }
        };
        let outcome = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(LinkError::Unreachable(format!(
                "{addr}: no answer within {timeout:?}"
            ))),
        };
        match &outcome {
            Ok(_) => {}
            Err(LinkError::Refused(why)) => {
                tracing::info!(peer = %addr, %why, "the peer does not speak the AppendEntries link: calling it over gRPC");
                self.grpc_until = Some(Instant::now() + GRPC_AFTER_REFUSAL);
                self.conn = None;
            }
            // The answer to a request that timed out could still arrive on this connection.
            Err(_) => self.conn = None,
        }
        outcome
    }
}

/// A request frame: length, kind, namespace and `req` in bincode, written in one buffer.
fn request_frame<Req: Serialize>(
    kind: u8,
    namespace: &str,
    req: &Req,
) -> Result<Vec<u8>, LinkError> {
    let ns = namespace.as_bytes();
    let ns_len = u16::try_from(ns.len())
        .map_err(|_| LinkError::Invalid(format!("namespace of {} bytes", ns.len())))?;
    let mut buf = Vec::with_capacity(4 + 3 + ns.len() + 256);
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    buf.extend_from_slice(&ns_len.to_be_bytes());
    buf.extend_from_slice(ns);
    bincode::serialize_into(&mut buf, req)
        .map_err(|e| LinkError::Invalid(format!("request does not encode: {e}")))?;
    seal(buf)
}

/// Writes the length of the frame `buf` (whose first four bytes are reserved for it).
fn seal(mut buf: Vec<u8>) -> Result<Vec<u8>, LinkError> {
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(LinkError::Invalid(format!(
            "a frame of {len} bytes exceeds {MAX_FRAME}"
        )));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// A frame of status + `body`.
fn answer_frame(status: u8, body: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(5 + body.len());
    buf.extend_from_slice(&((1 + body.len()) as u32).to_be_bytes());
    buf.push(status);
    buf.extend_from_slice(body);
    buf
}

fn decode_answer<Resp: DeserializeOwned>(addr: &str, answer: &[u8]) -> Result<Resp, LinkError> {
    let Some((&status, body)) = answer.split_first() else {
        return Err(LinkError::Invalid(format!("{addr}: an empty answer")));
    };
    match status {
        OK => bincode::deserialize(body)
            .map_err(|e| LinkError::Invalid(format!("{addr}: undecodable answer: {e}"))),
        UNAVAILABLE => Err(LinkError::Unreachable(format!(
            "{addr}: {}",
            String::from_utf8_lossy(body)
        ))),
        _ => Err(LinkError::Invalid(format!(
            "{addr}: {}",
            String::from_utf8_lossy(body)
        ))),
    }
}

/// Reads one length-prefixed frame.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let len = r.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    // Grows with what arrives: a peer announcing a large frame does not get it allocated at once.
    let mut buf = Vec::with_capacity(len.min(64 << 10));
    r.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

fn hello_frame(hello: &Hello) -> Result<Vec<u8>, LinkError> {
    let mut buf = vec![0; 4];
    bincode::serialize_into(&mut buf, hello)
        .map_err(|e| LinkError::Invalid(format!("hello does not encode: {e}")))?;
    let framed = seal(buf)?;
    let mut out = Vec::with_capacity(MAGIC.len() + framed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&framed);
    Ok(out)
}

/// Opens a link to `addr` (over TLS with `tls`) and exchanges hellos.
async fn connect(
    addr: &str,
    tls: Option<&ClientTls>,
    hello: &Hello,
) -> Result<(BufReader<Box<dyn Io>>, Hello), LinkError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| LinkError::Unreachable(format!("{addr}: cannot connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    let io: Box<dyn Io> = match tls {
        None => Box::new(stream),
        Some(tls) => Box::new(handshake(addr, tls, stream).await?),
    };
    let mut conn = BufReader::new(io);
    conn.get_mut()
        .write_all(&hello_frame(hello)?)
        .await
        .map_err(|e| LinkError::Unreachable(format!("{addr}: link: {e}")))?;
    let refused = |e: io::Error| LinkError::Refused(format!("{addr}: handshake: {e}"));
    let mut magic = [0; 8];
    conn.read_exact(&mut magic).await.map_err(refused)?;
    if &magic != MAGIC {
        return Err(LinkError::Refused(format!(
            "{addr}: answered the handshake with {magic:02x?}"
        )));
    }
    let frame = read_frame(&mut conn).await.map_err(refused)?;
    let theirs: Hello = bincode::deserialize(&frame)
        .map_err(|e| LinkError::Refused(format!("{addr}: undecodable hello: {e}")))?;
    Ok((conn, theirs))
}

/// The TLS handshake of a link, offering only [`ALPN`]: a member whose gRPC port does not know it
/// (an older version) fails the handshake or picks no protocol, which refuses the link.
async fn handshake(
    addr: &str,
    tls: &ClientTls,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, LinkError> {
    use tokio_rustls::rustls::pki_types::ServerName;
    let tls = tls.fresh();
    let cfg = tls
        .to_rustls(ALPN)
        .map_err(|e| LinkError::Invalid(format!("{addr}: TLS: {e}")))?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(tls.domain.clone().unwrap_or_else(|| host.to_string()))
        .map_err(|e| LinkError::Invalid(format!("{addr}: TLS server name: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, stream)
        .await
        .map_err(|e| LinkError::Refused(format!("{addr}: TLS handshake: {e}")))?;
    if stream.get_ref().1.alpn_protocol() != Some(ALPN) {
        return Err(LinkError::Refused(format!(
            "{addr}: the TLS handshake agreed on no link protocol"
        )));
    }
    Ok(stream)
}

/// Serves the links the TLS listener diverts (connections that negotiated [`ALPN`]).
pub fn serve_diverted(
    service: RaftService,
    shutdown: CancellationToken,
) -> tokio::sync::mpsc::Sender<tokio_rustls::server::TlsStream<TcpStream>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<tokio_rustls::server::TlsStream<TcpStream>>(64);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = rx.recv() => match s {
                    Some(s) => s,
                    None => return,
                },
            };
            let peer = stream
                .get_ref()
                .0
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tokio::spawn(serve(stream, peer, service.clone(), shutdown.clone()));
        }
    });
    tx
}

/// What an accepted connection turned out to be.
#[derive(Debug, PartialEq)]
enum Sorted {
    Link,
    Grpc,
    Closed,
}

/// Looks at the first bytes without consuming them.
async fn sort(stream: &TcpStream) -> Sorted {
    let deadline = tokio::time::Instant::now() + SORT_PATIENCE;
    let mut buf = [0u8; 8];
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        let n = match peeked {
            Err(_) => return Sorted::Grpc,
            Ok(Err(_)) | Ok(Ok(0)) => return Sorted::Closed,
            Ok(Ok(n)) => n,
        };
        if buf[..n] != MAGIC[..n] {
            return Sorted::Grpc;
        }
        if n == MAGIC.len() {
            return Sorted::Link;
        }
        // A partial magic (never seen in practice: it is written at once): let the rest arrive.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Accepts on `listener`, serves links itself and yields every other connection (gRPC) to tonic.
pub fn incoming(
    listener: TcpListener,
    service: RaftService,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<TcpStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "gRPC listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without it, Nagle holds small frames until the peer's delayed ack (up to 40 ms).
            let _ = stream.set_nodelay(true);
            let (tx, service, shutdown) = (tx.clone(), service.clone(), shutdown.clone());
            tokio::spawn(async move {
                match sort(&stream).await {
                    Sorted::Link => {
                        let peer = stream
                            .peer_addr()
                            .map(|a| a.to_string())
                            .unwrap_or_default();
                        serve(stream, peer, service, shutdown).await
                    }
                    Sorted::Grpc => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Sorted::Closed => {}
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Serves one link: the handshake, then requests one at a time until the peer closes.
async fn serve<S: Io>(stream: S, peer: String, service: RaftService, shutdown: CancellationToken) {
    let mut conn = BufReader::new(stream);
    let served = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        r = serve_requests(&mut conn, &service) => r,
    };
    if let Err(e) = served {
        if e.kind() != io::ErrorKind::UnexpectedEof {
            tracing::debug!(%peer, error = %e, "AppendEntries link closed");
        }
    }
}

async fn serve_requests<S: Io>(conn: &mut BufReader<S>, service: &RaftService) -> io::Result<()> {
    let mut magic = [0; 8];
    conn.read_exact(&mut magic).await?;
    if &magic != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a link"));
    }
    let theirs: Hello = bincode::deserialize(&read_frame(conn).await?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    service.met(theirs.node, &theirs.http);
    let ours = hello_frame(&service.hello())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    conn.get_mut().write_all(&ours).await?;
    loop {
        let request = tokio::time::timeout(IDLE, read_frame(conn))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "no request within the idle limit")
            })??;
        let answer = answer(service, &request).await;
        conn.get_mut().write_all(&answer).await?;
    }
}

/// The answer frame to one request frame.
async fn answer(service: &RaftService, request: &[u8]) -> Vec<u8> {
    let Some((kind, ns, payload)) = parse_request(request) else {
        return answer_frame(INVALID, b"a malformed link request");
    };
    if kind != APPEND {
        return answer_frame(
            INVALID,
            format!("unknown link request kind {kind}").as_bytes(),
        );
    }
    match service.append_payload(ns, payload).await {
        Ok(body) => answer_frame(OK, &body),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            answer_frame(INVALID, status.message().as_bytes())
        }
        Err(status) => answer_frame(UNAVAILABLE, status.message().as_bytes()),
    }
}

/// Kind, namespace and payload of a request frame's body.
fn parse_request(body: &[u8]) -> Option<(u8, &str, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    let ns_len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let ns = std::str::from_utf8(rest.get(2..2 + ns_len)?).ok()?;
    Some((kind, ns, rest.get(2 + ns_len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_frame_parses_back() {
        let frame = request_frame(APPEND, "orders", &(7u64, "x".to_string())).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let (kind, ns, payload) = parse_request(&frame[4..]).unwrap();
        assert_eq!((kind, ns), (APPEND, "orders"));
        let back: (u64, String) = bincode::deserialize(payload).unwrap();
        assert_eq!(back, (7, "x".to_string()));
    }

    #[test]
    fn malformed_requests_do_not_parse() {
        assert_eq!(parse_request(&[]), None);
        assert_eq!(parse_request(&[APPEND, 0]), None);
        // Namespace length beyond the frame.
        assert_eq!(parse_request(&[APPEND, 0, 9, b'a']), None);
        // Not UTF-8.
        assert_eq!(parse_request(&[APPEND, 0, 1, 0xff]), None);
    }

    #[test]
    fn answers_decode_by_status() {
        let ok = answer_frame(OK, &bincode::serialize(&42u32).unwrap());
        assert_eq!(decode_answer::<u32>("p", &ok[4..]).unwrap(), 42);
        let gone = answer_frame(UNAVAILABLE, b"no group");
        assert!(matches!(
            decode_answer::<u32>("p", &gone[4..]),
            Err(LinkError::Unreachable(m)) if m.contains("no group")
        ));
        let bad = answer_frame(INVALID, b"bad");
        assert!(matches!(
            decode_answer::<u32>("p", &bad[4..]),
            Err(LinkError::Invalid(_))
        ));
        assert!(matches!(
            decode_answer::<u32>("p", &[]),
            Err(LinkError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_allocation() {
        let mut data: &[u8] = &((MAX_FRAME as u32) + 1).to_be_bytes();
        let e = read_frame(&mut data).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    /// A listener, and a client that connected to it and wrote `first`.
    async fn accepted_after(first: &[u8]) -> Sorted {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let first = first.to_vec();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(&first).await.unwrap();
            if first.is_empty() {
                drop(c);
            } else {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let (s, _) = l.accept().await.unwrap();
        let sorted = sort(&s).await;
        client.await.unwrap();
        sorted
    }

    #[tokio::test]
    async fn connections_are_sorted_by_their_first_bytes() {
        assert_eq!(accepted_after(MAGIC).await, Sorted::Link);
        assert_eq!(
            accepted_after(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await,
            Sorted::Grpc
        );
        assert_eq!(accepted_after(b"").await, Sorted::Closed);
        // A partial magic followed by something else is not a link.
        assert_eq!(accepted_after(b"UDBRAFT9").await, Sorted::Grpc);
    }

    #[tokio::test]
    async fn a_peer_that_closes_the_handshake_refuses_the_link() {
        // What an older member's gRPC server does with the magic: reads it and closes.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0; 8];
            let _ = s.read_exact(&mut b).await;
        });
        let mut link = Link::default();
        let r = send(&mut link, &addr, 1, Duration::from_secs(5)).await;
        assert!(matches!(r, Err(LinkError::Refused(_))), "{r:?}");
        assert!(!link.usable(), "a refused link is not tried again at once");
    }

    /// One call of `link` to `addr` carrying `n` (a `u32`), as member 1.
    async fn send(
        link: &mut Link,
        addr: &str,
        n: u32,
        timeout: Duration,
    ) -> Result<u32, LinkError> {
        let hello = Hello {
            node: 1,
            http: String::new(),
        };
        link.call(addr, None, &hello, |_| {}, "ns", &n, timeout)
            .await
    }

    /// A server that answers the handshake and then `answers_per_conn` requests per connection,
    /// each with the number it carried plus one.
    async fn answering(answers_per_conn: usize) -> (String, tokio::task::JoinHandle<usize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let mut conns = 0;
            while let Ok((s, _)) = l.accept().await {
                conns += 1;
                let mut conn = BufReader::new(s);
                let mut magic = [0; 8];
                conn.read_exact(&mut magic).await.unwrap();
                read_frame(&mut conn).await.unwrap();
                let ours = hello_frame(&Hello {
                    node: 2,
                    http: "h:2".into(),
                })
                .unwrap();
                conn.get_mut().write_all(&ours).await.unwrap();
                for _ in 0..answers_per_conn {
                    let Ok(req) = read_frame(&mut conn).await else {
                        break;
                    };
                    let (_, _, payload) = parse_request(&req).unwrap();
                    let n: u32 = bincode::deserialize(payload).unwrap();
                    let body = bincode::serialize(&(n + 1)).unwrap();
                    conn.get_mut()
                        .write_all(&answer_frame(OK, &body))
                        .await
                        .unwrap();
                }
                if conns == 2 {
                    return conns;
                }
                // Then the connection dies, as with a peer process that restarted.
            }
            conns
        });
        (addr, server)
    }

    #[tokio::test]
    async fn a_dead_kept_connection_is_replaced_within_the_call() {
        let (addr, server) = answering(1).await;
        let mut link = Link::default();
        let hello = Hello {
            node: 1,
            http: String::new(),
        };
        let mut met = Vec::new();
        let a: u32 = link
            .call(
                &addr,
                None,
                &hello,
                |h| met.push(h.node),
                "ns",
                &1u32,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(a, 2);
        assert_eq!(met, vec![2], "the peer's hello is learnt");
        // The server closed that connection after one answer: the kept connection is dead, and
        // the call goes through on a new one instead of failing.
        let b = send(&mut link, &addr, 5, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(b, 6);
        assert_eq!(server.await.unwrap(), 2, "one reconnection");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_the_connection_is_dropped() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let _server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let mut link = Link::default();
        let r = send(&mut link, &addr, 1, Duration::from_millis(200)).await;
        assert!(matches!(r, Err(LinkError::Unreachable(_))), "{r:?}");
        assert!(link.conn.is_none());
        assert!(link.usable(), "a timeout is not a refusal");
    }
}
