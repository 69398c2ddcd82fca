//! The commands: what each answers, on the connection's selected namespace.

use std::collections::BTreeSet;

use super::glob;
use super::reply::Reply;
use super::Ctx;
use crate::engine::Namespace;
use crate::models::kv::{self, KvOp};
use crate::models::scan::{self, ScanRequest};

/// State of one client connection.
pub struct Conn {
    pub id: u64,
    pub ns: Namespace,
    pub resp3: bool,
    pub authed: bool,
    pub name: Option<Vec<u8>>,
    pub channels: BTreeSet<Vec<u8>>,
    pub patterns: BTreeSet<Vec<u8>>,
    pub quit: bool,
}

impl Conn {
    pub fn new(id: u64, ns: Namespace, authed: bool) -> Conn {
        Conn {
            id,
            ns,
            resp3: false,
            authed,
            name: None,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            quit: false,
        }
    }

    pub fn subscribed(&self) -> bool {
        !self.channels.is_empty() || !self.patterns.is_empty()
    }
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

fn wrong_args(cmd: &str) -> Reply {
    Reply::err(format!(
        "ERR wrong number of arguments for '{}' command",
        cmd.to_ascii_lowercase()
    ))
}

fn unknown(cmd: &[u8], args: &[Vec<u8>]) -> Reply {
    let shown: Vec<String> = args
        .iter()
        .take(3)
        .map(|a| format!("'{}'", String::from_utf8_lossy(a)))
        .collect();
    Reply::err(format!(
        "ERR unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(cmd),
        shown.join(" ")
    ))
}

fn readonly() -> Reply {
    Reply::err("READONLY You can't write against a read only replica.")
}

fn model_err(e: crate::models::ModelError) -> Reply {
    match e {
        crate::models::ModelError::Engine(crate::engine::EngineError::Follower { .. }) => {
            readonly()
        }
        other => Reply::err(format!("ERR {other}")),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::models::ModelError> + Send + 'static,
) -> Result<T, Reply> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(model_err),
        Err(e) => Err(Reply::err(format!("ERR storage task failed: {e}"))),
    }
}

/// Runs one command. Pub/Sub commands are handled by the connection (they need its receiver).
pub async fn execute(ctx: &Ctx, c: &mut Conn, argv: Vec<Vec<u8>>) -> Reply {
    let Some((cmd, args)) = argv.split_first() else {
        return Reply::err("ERR empty command");
    };
    let name = upper(cmd);
    if !c.authed && !matches!(name.as_str(), "AUTH" | "HELLO" | "QUIT" | "RESET") {
        return Reply::err("NOAUTH Authentication required.");
    }
    if c.subscribed() && !c.resp3 && !matches!(name.as_str(), "PING" | "QUIT" | "RESET") {
        return Reply::err(format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            name.to_ascii_lowercase()
        ));
    }
    match name.as_str() {
        "PING" => match args {
            [] if c.subscribed() && !c.resp3 => {
                Reply::Array(vec![Reply::bulk("pong"), Reply::bulk("")])
            }
            [] => Reply::Simple("PONG".into()),
            [m] => Reply::Bulk(m.clone()),
            _ => wrong_args(&name),
        },
        "ECHO" => match args {
            [m] => Reply::Bulk(m.clone()),
            _ => wrong_args(&name),
        },
        "QUIT" => {
            c.quit = true;
            Reply::ok()
        }
        "RESET" => {
            c.channels.clear();
            c.patterns.clear();
            c.resp3 = false;
            c.name = None;
            if let Some(ns) = ctx.namespace_at(0) {
                c.ns = ns;
            }
            c.authed = ctx.auth.is_none();
            Reply::Simple("RESET".into())
        }
        "AUTH" => {
            let pass = match args {
                [p] | [_, p] => p,
                _ => return wrong_args(&name),
            };
            auth(ctx, c, pass)
        }
        "HELLO" => hello(ctx, c, args),
        "SELECT" => match args {
            [db] => match ctx.select(db) {
                Some(ns) => {
                    c.ns = ns;
                    Reply::ok()
                }
                None => Reply::err("ERR DB index is out of range"),
            },
            _ => wrong_args(&name),
        },
        "CLIENT" => client(c, args),
        "COMMAND" => Reply::Array(Vec::new()),
        "CONFIG" => config(args),
        "INFO" => info(ctx, c),
        "DBSIZE" => {
            Reply::err("ERR DBSIZE is not supported (a count would scan the namespace); use SCAN")
        }
        "GET" => match args {
            [k] => match kv::get(&c.ns, k) {
                Ok(Some(v)) => Reply::Bulk(v),
                Ok(None) => Reply::Null,
                Err(e) => model_err(e),
            },
            _ => wrong_args(&name),
        },
        "MGET" if !args.is_empty() => {
            let mut out = Vec::with_capacity(args.len());
            for k in args {
                out.push(match kv::get(&c.ns, k) {
                    Ok(Some(v)) => Reply::Bulk(v),
                    Ok(None) => Reply::Null,
                    Err(e) => return model_err(e),
                });
            }
            Reply::Array(out)
        }
        "EXISTS" if !args.is_empty() => {
            let mut n = 0;
            for k in args {
                match kv::get(&c.ns, k) {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => {}
                    Err(e) => return model_err(e),
                }
            }
            Reply::Int(n)
        }
        "SET" => set(c, args).await,
        "MSET" if !args.is_empty() && args.len() % 2 == 0 => {
            if !c.ns.role().owns() {
                return readonly();
            }
            let ops: Vec<KvOp> = args
                .chunks(2)
                .map(|p| KvOp::Put {
                    key: p[0].clone(),
                    value: p[1].clone(),
                })
                .collect();
            match kv::batch_async(&c.ns, &ops).await {
                Ok(_) => Reply::ok(),
                Err(e) => model_err(e),
            }
        }
        "DEL" | "UNLINK" if !args.is_empty() => {
            if !c.ns.role().owns() {
                return readonly();
            }
            let ns = c.ns.clone();
            let keys = args.to_vec();
            let res = blocking(move || {
                // Redis counts the keys that existed; one batch removes them all atomically.
                let mut present = Vec::new();
                for k in keys {
                    if kv::get(&ns, &k)?.is_some() {
                        present.push(KvOp::Delete { key: k });
                    }
                }
                let n = present.len() as i64;
                if n > 0 {
                    kv::batch(&ns, &present)?;
                }
                Ok(n)
            })
            .await;
            match res {
                Ok(n) => Reply::Int(n),
                Err(r) => r,
            }
        }
        "SCAN" => scan_cmd(ctx, c, args),
        "MGET" | "EXISTS" | "MSET" | "DEL" | "UNLINK" => wrong_args(&name),
        _ => unknown(cmd, args),
    }
}

fn auth(ctx: &Ctx, c: &mut Conn, pass: &[u8]) -> Reply {
    match &ctx.auth {
        None => Reply::err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
        Some(t) if t.as_bytes() == pass => {
            c.authed = true;
            Reply::ok()
        }
        Some(_) => Reply::err("WRONGPASS invalid username-password pair or user is disabled."),
    }
}

fn hello(ctx: &Ctx, c: &mut Conn, args: &[Vec<u8>]) -> Reply {
    let mut rest = args;
    if let Some((ver, tail)) = rest.split_first() {
        match ver.as_slice() {
            b"2" => c.resp3 = false,
            b"3" => c.resp3 = true,
            _ => return Reply::err("NOPROTO unsupported protocol version"),
        }
        rest = tail;
    }
    while let Some((opt, tail)) = rest.split_first() {
        match (upper(opt).as_str(), tail) {
            ("AUTH", [_, pass, more @ ..]) => {
                if let Reply::Error(e) = auth(ctx, c, pass) {
                    return Reply::Error(e);
                }
                rest = more;
            }
            ("SETNAME", [n, more @ ..]) => {
                c.name = Some(n.clone());
                rest = more;
            }
            _ => return Reply::err("ERR Syntax error in HELLO option"),
        }
    }
    if !c.authed {
        return Reply::err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    let s = |v: &str| Reply::bulk(v.as_bytes().to_vec());
    Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s("7.2.0")),
        (s("proto"), Reply::Int(if c.resp3 { 3 } else { 2 })),
        (s("id"), Reply::Int(c.id as i64)),
        (s("mode"), s("standalone")),
        (
            s("role"),
            s(if c.ns.role().owns() {
                "master"
            } else {
                "replica"
            }),
        ),
        (s("modules"), Reply::Array(Vec::new())),
    ])
}

fn client(c: &mut Conn, args: &[Vec<u8>]) -> Reply {
    let Some((sub, rest)) = args.split_first() else {
        return wrong_args("client");
    };
    match (upper(sub).as_str(), rest) {
        ("SETNAME", [n]) => {
            c.name = Some(n.clone());
            Reply::ok()
        }
        ("GETNAME", []) => c.name.clone().map_or(Reply::Null, Reply::Bulk),
        ("ID", []) => Reply::Int(c.id as i64),
        ("SETINFO", [_, _]) => Reply::ok(),
        _ => Reply::err(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

fn config(args: &[Vec<u8>]) -> Reply {
    match args.split_first().map(|(s, r)| (upper(s), r)) {
        // Nothing of Redis's configuration exists here: an empty answer, as for an unknown name.
        Some((s, [_, ..])) if s == "GET" => Reply::Map(Vec::new()),
        // Keyspace notifications are always on; accept clients that switch them on.
        Some((s, [k, _])) if s == "SET" && upper(k) == "NOTIFY-KEYSPACE-EVENTS" => Reply::ok(),
        _ => Reply::err(
            "ERR CONFIG is not supported here except GET (empty) and SET notify-keyspace-events",
        ),
    }
}

fn info(ctx: &Ctx, c: &Conn) -> Reply {
    let mut s = format!(
        "# Server\r\nredis_version:7.2.0\r\nunisondb_version:{}\r\nredis_mode:standalone\r\n\r\n# Replication\r\nrole:{}\r\n\r\n# Keyspace\r\n",
        env!("CARGO_PKG_VERSION"),
        if c.ns.role().owns() { "master" } else { "slave" }
    );
    for (i, name) in ctx.order.iter().enumerate() {
        if let Some(ns) = ctx.db.get(name) {
            s.push_str(&format!(
                "db{i}:namespace={name},lsn={}\r\n",
                ns.latest_lsn()
            ));
        }
    }
    Reply::Bulk(s.into_bytes())
}

async fn set(c: &Conn, args: &[Vec<u8>]) -> Reply {
    let (k, v, opts) = match args {
        [k, v, opts @ ..] => (k, v, opts),
        _ => return wrong_args("set"),
    };
    if let Some(o) = opts.first() {
        let o = upper(o);
        return match o.as_str() {
            "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" => {
                Reply::err("ERR TTLs are not supported: UnisonDB keys do not expire")
            }
            "NX" | "XX" | "GET" => Reply::err(format!("ERR SET {o} is not supported")),
            _ => Reply::err("ERR syntax error"),
        };
    }
    if !c.ns.role().owns() {
        return readonly();
    }
    match kv::put_async(&c.ns, k, v.clone()).await {
        Ok(_) => Reply::ok(),
        Err(e) => model_err(e),
    }
}

fn scan_cmd(ctx: &Ctx, c: &mut Conn, args: &[Vec<u8>]) -> Reply {
    let Some((cursor, opts)) = args.split_first() else {
        return wrong_args("scan");
    };
    let Ok(cursor) = String::from_utf8_lossy(cursor).parse::<u64>() else {
        return Reply::err("ERR invalid cursor");
    };
    let (mut pattern, mut count) = (None::<Vec<u8>>, 10usize);
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        match (upper(o).as_str(), it.next()) {
            ("MATCH", Some(p)) => pattern = Some(p.clone()),
            ("COUNT", Some(n)) => match String::from_utf8_lossy(n).parse::<usize>() {
                Ok(n) if n > 0 => count = n.min(1000),
                _ => return Reply::err("ERR value is not an integer or out of range"),
            },
            ("TYPE", Some(t)) if t.eq_ignore_ascii_case(b"string") => {}
            ("TYPE", Some(_)) => {
                return Reply::Array(vec![Reply::bulk("0"), Reply::Array(Vec::new())])
            }
            _ => return Reply::err("ERR syntax error"),
        }
    }
    let after = match cursor {
        0 => None,
        id => match ctx.cursors.get(id) {
            Some(k) => Some(k),
            None => return Reply::err("ERR invalid cursor"),
        },
    };
    let prefix = pattern
        .as_deref()
        .map(glob::literal_prefix)
        .filter(|p| !p.is_empty());
    let req = ScanRequest {
        prefix,
        start: None,
        end: None,
        after,
        limit: count,
        reverse: false,
    };
    let page = match c.ns.snapshot() {
        Ok(snap) => match scan::scan_kv(&snap, &req) {
            Ok(p) => p,
            Err(e) => return model_err(e),
        },
        Err(e) => return Reply::err(format!("ERR {e}")),
    };
    let keys: Vec<Reply> = page
        .items
        .into_iter()
        .filter(|(k, _)| pattern.as_deref().is_none_or(|p| glob::matches(p, k)))
        .map(|(k, _)| Reply::Bulk(k))
        .collect();
    let next = page.next.map_or(0, |k| ctx.cursors.put(k));
    Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(keys)])
}

/// `SET key value` without options, on a connection that may write now: such commands can be
/// committed together when a client pipelines them.
pub fn plain_set(c: &Conn, argv: &[Vec<u8>]) -> bool {
    argv.len() == 3
        && argv[0].eq_ignore_ascii_case(b"SET")
        // A key the batch would refuse is run on its own, so only that SET fails.
        && crate::models::check_key(&argv[1]).is_ok()
        && c.authed
        && !c.subscribed()
        && c.ns.role().owns()
}

/// Commits a run of plain SETs as one atomic batch; one reply per SET (all OK or all the error).
pub async fn set_batch(c: &Conn, run: Vec<Vec<Vec<u8>>>) -> Vec<Reply> {
    let n = run.len();
    let ops: Vec<KvOp> = run
        .into_iter()
        .map(|mut a| KvOp::Put {
            value: a.pop().unwrap_or_default(),
            key: a.pop().unwrap_or_default(),
        })
        .collect();
    let reply = match kv::batch_async(&c.ns, &ops).await {
        Ok(_) => Reply::ok(),
        Err(e) => model_err(e),
    };
    vec![reply; n]
}
