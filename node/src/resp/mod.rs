//! A Redis-protocol (RESP2, and RESP3 after `HELLO 3`) front end for the key-value model, so Redis
//! clients, `redis-cli` and `redis-benchmark` work against a node (`resp.listen`, off by default).
//!
//! `GET`, `SET`, `DEL`, `EXISTS`, `MGET`, `MSET`, `SCAN` (`MATCH`/`COUNT`) act on the namespace the
//! connection selected (`SELECT name`, or `SELECT n` for the n-th of `server.namespaces`; the first
//! by default); `PING`, `ECHO`, `INFO`, `HELLO`, `AUTH` (the HTTP bearer token, when one is set),
//! `CLIENT SETNAME|GETNAME|ID|SETINFO`, `QUIT`, `RESET`; keyspace notifications through `SUBSCRIBE`
//! / `PSUBSCRIBE` ([`pubsub`]). Writes go through the same engine path as HTTP writes (same WAL,
//! same durability, replicated and notified the same way); on a relayer they are refused with
//! Redis's `READONLY` error, reads and notifications work. Anything else gets Redis's error format.
//! Requests are decoded with the `redis-protocol` crate; replies are encoded by [`reply`].

mod commands;
mod glob;
mod pubsub;
mod reply;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::engine::Namespace;
use commands::Conn;
pub use reply::Reply;

/// Largest request buffered (Redis's `proto-max-bulk-len` is 512 MB; our values are smaller).
const MAX_REQUEST: usize = 64 << 20;

/// SCAN cursors, shared by every connection: Redis cursors are valid on any connection (a client
/// may continue a scan after reconnecting), so a cursor number names a continuation key kept here.
/// The oldest are forgotten past [`MAX_CURSORS`]; continuing one of those is `ERR invalid cursor`.
pub struct Cursors {
    inner: parking_lot::Mutex<(u64, std::collections::BTreeMap<u64, Vec<u8>>)>,
}

const MAX_CURSORS: usize = 65_536;

impl Cursors {
    fn new() -> Cursors {
        Cursors {
            inner: parking_lot::Mutex::new((1, std::collections::BTreeMap::new())),
        }
    }

    /// A new cursor number for `key` (never 0, which means "start" and "done").
    fn put(&self, key: Vec<u8>) -> u64 {
        let mut g = self.inner.lock();
        let id = g.0;
        g.0 += 1;
        g.1.insert(id, key);
        while g.1.len() > MAX_CURSORS {
            g.1.pop_first();
        }
        id
    }

    fn get(&self, id: u64) -> Option<Vec<u8>> {
        self.inner.lock().1.get(&id).cloned()
    }
}

/// What every connection shares.
pub struct Ctx {
    cursors: Cursors,
    db: Database,
    /// `server.namespaces` in config order: `SELECT n` picks the n-th.
    order: Vec<String>,
    auth: Option<String>,
    hub: pubsub::Hub,
    ids: AtomicU64,
}

impl Ctx {
    pub fn new(db: Database, order: Vec<String>, auth: Option<String>) -> Ctx {
        Ctx {
            hub: pubsub::Hub::new(db.clone(), order.clone()),
            cursors: Cursors::new(),
            db,
            order,
            auth,
            ids: AtomicU64::new(1),
        }
    }

    fn namespace_at(&self, i: usize) -> Option<Namespace> {
        self.order.get(i).and_then(|n| self.db.get(n)).cloned()
    }

    /// `SELECT`: a namespace by name, or by its index in `server.namespaces`.
    fn select(&self, db: &[u8]) -> Option<Namespace> {
        let s = String::from_utf8_lossy(db);
        if let Some(ns) = self.db.get(&s) {
            return Some(ns.clone());
        }
        s.parse::<usize>().ok().and_then(|i| self.namespace_at(i))
    }
}

/// Serves RESP on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "RESP (Redis protocol) listening");
    }
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "RESP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = sock.set_nodelay(true);
        let (ctx, stop) = (ctx.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(sock, ctx, stop).await {
                tracing::debug!(%peer, error = %e, "RESP connection ended");
            }
        });
    }
}

/// A request's arguments: an array of bulk (or simple) strings.
fn argv(frame: BytesFrame) -> Option<Vec<Vec<u8>>> {
    match frame {
        BytesFrame::Array(items) => items
            .into_iter()
            .map(|f| match f {
                BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Some(b.to_vec()),
                BytesFrame::Integer(i) => Some(i.to_string().into_bytes()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

async fn connection(
    mut sock: TcpStream,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let Some(first) = ctx.namespace_at(0) else {
        return Ok(());
    };
    let id = ctx.ids.fetch_add(1, Ordering::Relaxed);
    let mut c = Conn::new(id, first, ctx.auth.is_none());
    let mut buf = BytesMut::with_capacity(16 << 10);
    let mut out: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut events: Option<broadcast::Receiver<Arc<pubsub::KeyEvent>>> = None;
    loop {
        // Every complete request in the buffer is answered before the replies go out together
        // (pipelining costs one write).
        let mut requests: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut broken: Option<String> = None;
        loop {
            match decode_bytes_mut(&mut buf) {
                Ok(Some((frame, _, _))) => match argv(frame) {
                    Some(args) => requests.push(args),
                    None => {
                        broken = Some("expected an array of bulk strings".into());
                        break;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e.to_string());
                    break;
                }
            }
        }
        let mut requests = requests.into_iter().peekable();
        while let Some(args) = requests.next() {
            // A run of plain SETs in one pipeline commits as one batch (one WAL record, one fsync).
            if commands::plain_set(&c, &args)
                && requests.peek().is_some_and(|n| commands::plain_set(&c, n))
            {
                let mut run = vec![args];
                while let Some(next) = requests.next_if(|n| commands::plain_set(&c, n)) {
                    run.push(next);
                }
                for r in commands::set_batch(&c, run).await {
                    r.encode(&mut out, c.resp3);
                }
                continue;
            }
            if let Some(replies) = pubsub_command(&ctx, &mut c, &args, &mut events) {
                replies.iter().for_each(|r| r.encode(&mut out, c.resp3));
            } else {
                commands::execute(&ctx, &mut c, args)
                    .await
                    .encode(&mut out, c.resp3);
            }
            if c.quit {
                sock.write_all(&out).await?;
                return Ok(());
            }
        }
        if let Some(why) = broken {
            Reply::err(format!("ERR Protocol error: {why}")).encode(&mut out, c.resp3);
            sock.write_all(&out).await?;
            return Ok(());
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
            out.clear();
        }
        if buf.len() > MAX_REQUEST {
            Reply::err("ERR Protocol error: request too large").encode(&mut out, c.resp3);
            sock.write_all(&out).await?;
            return Ok(());
        }
        let subscribed = c.subscribed();
        tokio::select! {
            n = sock.read_buf(&mut buf) => {
                if n? == 0 {
                    return Ok(());
                }
            }
            ev = async { events.as_mut().expect("subscribed").recv().await }, if subscribed && events.is_some() => {
                match ev {
                    Ok(ev) => deliver(&c, &ev, &mut out),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(connection = c.id, missed = n, "RESP subscriber too slow: keyspace notifications dropped");
                    }
                    Err(broadcast::error::RecvError::Closed) => events = None,
                }
            }
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

/// Pushes the messages of `ev` the connection subscribed to.
fn deliver(c: &Conn, ev: &pubsub::KeyEvent, out: &mut Vec<u8>) {
    for (channel, message) in ev.messages() {
        if c.channels.contains(&channel) {
            Reply::Push(vec![
                Reply::bulk("message"),
                Reply::Bulk(channel.clone()),
                Reply::Bulk(message.clone()),
            ])
            .encode(out, c.resp3);
        }
        for p in c.patterns.iter().filter(|p| glob::matches(p, &channel)) {
            Reply::Push(vec![
                Reply::bulk("pmessage"),
                Reply::Bulk(p.clone()),
                Reply::Bulk(channel.clone()),
                Reply::Bulk(message.clone()),
            ])
            .encode(out, c.resp3);
        }
    }
}

/// `(P)SUBSCRIBE` / `(P)UNSUBSCRIBE`: one reply per channel, as Redis answers; `None` for other commands.
fn pubsub_command(
    ctx: &Ctx,
    c: &mut Conn,
    args: &[Vec<u8>],
    events: &mut Option<broadcast::Receiver<Arc<pubsub::KeyEvent>>>,
) -> Option<Vec<Reply>> {
    let (cmd, names) = args.split_first()?;
    let cmd = String::from_utf8_lossy(cmd).to_ascii_lowercase();
    if !matches!(
        cmd.as_str(),
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe"
    ) {
        return None;
    }
    if !c.authed {
        return Some(vec![Reply::err("NOAUTH Authentication required.")]);
    }
    let pattern = cmd.starts_with('p');
    let subscribe = !cmd.contains("unsub");
    if subscribe && names.is_empty() {
        return Some(vec![Reply::err(format!(
            "ERR wrong number of arguments for '{cmd}' command"
        ))]);
    }
    if subscribe && events.is_none() {
        *events = Some(ctx.hub.subscribe());
    }
    let mut replies = Vec::new();
    let targets: Vec<Vec<u8>> = if names.is_empty() {
        let set = if pattern { &c.patterns } else { &c.channels };
        set.iter().cloned().collect()
    } else {
        names.to_vec()
    };
    for name in targets {
        let set = if pattern {
            &mut c.patterns
        } else {
            &mut c.channels
        };
        if subscribe {
            set.insert(name.clone());
        } else {
            set.remove(&name);
        }
        replies.push(Reply::Push(vec![
            Reply::bulk(cmd.clone()),
            Reply::Bulk(name),
            Reply::Int((c.channels.len() + c.patterns.len()) as i64),
        ]));
    }
    if replies.is_empty() {
        // UNSUBSCRIBE with nothing subscribed still answers once.
        replies.push(Reply::Push(vec![
            Reply::bulk(cmd),
            Reply::Null,
            Reply::Int(0),
        ]));
    }
    if !c.subscribed() {
        *events = None;
    }
    Some(replies)
}
