//! `unisondb kv|row|lob|watch`: a terminal client for the HTTP API (as `redis-cli` or `etcdctl`).
//!
//! Values are text on the command line and on stdout (`--file` reads a value from a file; bytes
//! that are not UTF-8 are written raw); `--json` prints the server's JSON instead. Errors print one
//! line on stderr and exit 1 (a missing key: `not found`); a server that cannot be reached exits 2.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::{Args, Subcommand};
use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

/// Where the node is and which namespace to use.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Base URL of the node's HTTP API.
    #[arg(
        long,
        env = "UNISONDB_URL",
        default_value = "http://localhost:4000",
        global = true
    )]
    pub url: String,
    /// Bearer token (when the node sets http.auth_token); surrounding whitespace is ignored, so a
    /// token read from a file or a Secret with a trailing newline works.
    #[arg(long, env = "UNISONDB_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM CA bundle that signed the node's certificate, for an `https://` URL (this client trusts
    /// no system roots).
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// Namespace.
    #[arg(
        short = 'n',
        long,
        env = "UNISONDB_NAMESPACE",
        default_value = "default",
        global = true
    )]
    pub namespace: String,
    /// Print the server's JSON answers instead of readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum KvCommand {
    /// Print the value of KEY.
    Get { key: String },
    /// Set KEY to VALUE (or to the content of --file).
    Put {
        key: String,
        value: Option<String>,
        /// Read the value from this file ("-" for stdin).
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
    },
    /// Delete KEY.
    Delete { key: String },
    /// List keys (and values) in order, optionally under a prefix.
    Scan {
        /// Only keys starting with this.
        prefix: Option<String>,
        /// First key (inclusive).
        #[arg(long)]
        start: Option<String>,
        /// Last key (exclusive).
        #[arg(long)]
        end: Option<String>,
        /// At most this many keys (pages are fetched as needed).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Descending order.
        #[arg(long)]
        reverse: bool,
        /// Keys only.
        #[arg(long)]
        keys_only: bool,
    },
}

#[derive(Subcommand)]
pub enum RowCommand {
    /// Print the columns of ROW (all, or --columns a,b).
    Get {
        row: String,
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
    },
    /// Merge columns into ROW: `unisondb row put user1 name=ann city=Oslo`.
    Put {
        row: String,
        #[arg(required = true, value_name = "COLUMN=VALUE")]
        columns: Vec<String>,
    },
    /// Delete ROW, or only the named columns.
    Delete {
        row: String,
        #[arg(value_name = "COLUMN")]
        columns: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum LobCommand {
    /// Upload FILE as the large object KEY (streamed).
    Put { key: String, file: PathBuf },
    /// Download KEY into FILE (stdout when absent or "-").
    Get { key: String, file: Option<PathBuf> },
    /// Delete the large object KEY.
    Delete { key: String },
}

/// Filters of `unisondb watch`.
#[derive(Args)]
pub struct WatchArgs {
    /// Only these models (comma-separated: kv,row,lob).
    #[arg(long)]
    pub models: Option<String>,
    /// Only keys starting with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Replay from this LSN first, then follow live (default: only new changes).
    #[arg(long)]
    pub from_lsn: Option<u64>,
    /// Exit after this many changes.
    #[arg(long)]
    pub count: Option<u64>,
}

/// Characters escaped in a key path segment: everything but `A-Za-z0-9-._~` (a `/` in a key
/// becomes `%2F` and stays in the key).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A failed command: message and exit code.
struct Failure(String, u8);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string(), 1)
    }
}

type Res<T> = Result<T, Failure>;

struct Client {
    http: reqwest::Client,
    base: String,
    ns: String,
    token: Option<String>,
}

impl Client {
    fn new(a: &ClientArgs) -> Res<Client> {
        let base = a.url.trim_end_matches('/').to_string();
        let mut builder = reqwest::Client::builder();
        if base.starts_with("https://") {
            let Some(ca) = &a.ca_file else {
                return Err(Failure(
                    "an https:// URL needs --ca-file (the CA that signed the node's certificate)"
                        .into(),
                    2,
                ));
            };
            let pem = std::fs::read(ca)
                .map_err(|e| Failure(format!("cannot read {}: {e}", ca.display()), 2))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Failure(format!("{}: {e}", ca.display()), 2))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| Failure(e.to_string(), 2))?;
        Ok(Client {
            http,
            base,
            ns: a.namespace.clone(),
            token: a
                .token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        })
    }

    fn url(&self, model: &str, key: Option<&str>) -> String {
        let ns = utf8_percent_encode(&self.ns, SEGMENT);
        match key {
            Some(k) => format!(
                "{}/api/v1/{ns}/{model}/{}",
                self.base,
                utf8_percent_encode(k, SEGMENT)
            ),
            None => format!("{}/api/v1/{ns}/{model}", self.base),
        }
    }

    fn req(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Res<reqwest::Response> {
        let resp = rb.send().await.map_err(|e| {
            Failure(
                format!("cannot reach {}: {}", self.base, error_chain(&e)),
                2,
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        if status == reqwest::StatusCode::NOT_FOUND
            && (msg.contains("not found") || msg.is_empty() || msg.contains("found"))
            && !msg.contains("namespace")
        {
            return Err(Failure("not found".into(), 1));
        }
        Err(Failure(format!("{msg} (HTTP {})", status.as_u16()), 1))
    }

    async fn json(&self, rb: reqwest::RequestBuilder) -> Res<Value> {
        let resp = self.send(rb).await?;
        let text = resp.text().await?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&text)?)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn runtime() -> Res<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(e.to_string(), 2))
}

fn finish(r: Res<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

fn b64_decode(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

/// Bytes as text for a terminal: UTF-8 as is, anything else as `0x..` hex.
fn printable(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => format!(
            "0x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn done(v: &Value, json: bool) {
    if json {
        print_json(v);
    } else {
        match v.get("lsn").and_then(Value::as_u64) {
            Some(lsn) => println!("OK (lsn {lsn})"),
            None => println!("OK"),
        }
    }
}

fn read_value(value: Option<String>, file: Option<PathBuf>) -> Res<Vec<u8>> {
    match (value, file) {
        (Some(v), _) => Ok(v.into_bytes()),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            Ok(buf)
        }
        (None, Some(f)) => {
            std::fs::read(&f).map_err(|e| Failure(format!("cannot read {}: {e}", f.display()), 1))
        }
        (None, None) => Err(Failure("give a VALUE or --file FILE".into(), 1)),
    }
}

/// `unisondb kv ...`
pub fn run_kv(a: ClientArgs, cmd: KvCommand) -> ExitCode {
    finish(runtime().and_then(|rt| rt.block_on(kv(a, cmd))))
}

async fn kv(a: ClientArgs, cmd: KvCommand) -> Res<()> {
    let c = Client::new(&a)?;
    match cmd {
        KvCommand::Get { key } => {
            let v = c
                .json(c.req(reqwest::Method::GET, c.url("kv", Some(&key))))
                .await?;
            if v.get("found").and_then(Value::as_bool) == Some(false) {
                return Err(Failure("not found".into(), 1));
            }
            if a.json {
                print_json(&v);
            } else {
                let bytes = b64_decode(&v["value"]);
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes)?;
                if !bytes.ends_with(b"\n") && std::str::from_utf8(&bytes).is_ok() {
                    out.write_all(b"\n")?;
                }
            }
        }
        KvCommand::Put { key, value, file } => {
            let bytes = read_value(value, file)?;
            let body = json!({ "value": B64.encode(bytes) });
            let v = c
                .json(
                    c.req(reqwest::Method::PUT, c.url("kv", Some(&key)))
                        .json(&body),
                )
                .await?;
            done(&v, a.json);
        }
        KvCommand::Delete { key } => {
            let v = c
                .json(c.req(reqwest::Method::DELETE, c.url("kv", Some(&key))))
                .await?;
            done(&v, a.json);
        }
        KvCommand::Scan {
            prefix,
            start,
            end,
            limit,
            reverse,
            keys_only,
        } => {
            let mut after: Option<String> = None;
            let mut items: Vec<Value> = Vec::new();
            while items.len() < limit {
                let mut q: Vec<(&str, String)> =
                    vec![("limit", (limit - items.len()).min(1000).to_string())];
                for (k, v) in [("prefix", &prefix), ("start", &start), ("end", &end)] {
                    if let Some(v) = v {
                        q.push((k, v.clone()));
                    }
                }
                if reverse {
                    q.push(("reverse", "true".into()));
                }
                if let Some(x) = &after {
                    q.push(("after", x.clone()));
                }
                let page = c
                    .json(c.req(reqwest::Method::GET, c.url("kv", None)).query(&q))
                    .await?;
                let got = page["items"].as_array().cloned().unwrap_or_default();
                let empty = got.is_empty();
                items.extend(got);
                match page.get("next").and_then(Value::as_str) {
                    Some(n) if !empty => after = Some(n.to_string()),
                    _ => break,
                }
            }
            items.truncate(limit);
            if a.json {
                print_json(&json!({ "items": items, "count": items.len() }));
            } else {
                for it in &items {
                    let key = it["key"].as_str().unwrap_or_default();
                    if keys_only {
                        println!("{key}");
                    } else {
                        println!("{key}\t{}", printable(&b64_decode(&it["value"])));
                    }
                }
            }
        }
    }
    Ok(())
}

/// `unisondb row ...`
pub fn run_row(a: ClientArgs, cmd: RowCommand) -> ExitCode {
    finish(runtime().and_then(|rt| rt.block_on(row(a, cmd))))
}

async fn row(a: ClientArgs, cmd: RowCommand) -> Res<()> {
    let c = Client::new(&a)?;
    match cmd {
        RowCommand::Get { row, columns } => {
            let mut rb = c.req(reqwest::Method::GET, c.url("row", Some(&row)));
            if !columns.is_empty() {
                rb = rb.query(&[("columns", columns.join(","))]);
            }
            let v = c.json(rb).await?;
            if v.get("found").and_then(Value::as_bool) == Some(false) {
                return Err(Failure("not found".into(), 1));
            }
            if a.json {
                print_json(&v);
            } else if let Some(cols) = v["columns"].as_object() {
                for (name, value) in cols {
                    println!("{name}={}", printable(&b64_decode(value)));
                }
            }
        }
        RowCommand::Put { row, columns } => {
            let mut cols = BTreeMap::new();
            for pair in &columns {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| Failure(format!("{pair:?} is not COLUMN=VALUE"), 1))?;
                cols.insert(k.to_string(), Value::from(B64.encode(v.as_bytes())));
            }
            let v = c
                .json(
                    c.req(reqwest::Method::PUT, c.url("row", Some(&row)))
                        .json(&json!({ "columns": cols })),
                )
                .await?;
            done(&v, a.json);
        }
        RowCommand::Delete { row, columns } => {
            let v = if columns.is_empty() {
                c.json(c.req(reqwest::Method::DELETE, c.url("row", Some(&row))))
                    .await?
            } else {
                let url = format!("{}/columns", c.url("row", Some(&row)));
                c.json(
                    c.req(reqwest::Method::DELETE, url)
                        .json(&json!({ "columns": columns })),
                )
                .await?
            };
            done(&v, a.json);
        }
    }
    Ok(())
}

/// `unisondb lob ...`
pub fn run_lob(a: ClientArgs, cmd: LobCommand) -> ExitCode {
    finish(runtime().and_then(|rt| rt.block_on(lob(a, cmd))))
}

async fn lob(a: ClientArgs, cmd: LobCommand) -> Res<()> {
    let c = Client::new(&a)?;
    match cmd {
        LobCommand::Put { key, file } => {
            let f = tokio::fs::File::open(&file)
                .await
                .map_err(|e| Failure(format!("cannot read {}: {e}", file.display()), 1))?;
            let len = f.metadata().await?.len();
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f));
            let v = c
                .json(
                    c.req(reqwest::Method::PUT, c.url("lob", Some(&key)))
                        .header(reqwest::header::CONTENT_LENGTH, len)
                        .body(body),
                )
                .await?;
            if a.json {
                print_json(&v);
            } else {
                println!(
                    "OK (lsn {}, {} bytes)",
                    v["lsn"].as_u64().unwrap_or_default(),
                    v["size"].as_u64().unwrap_or(len)
                );
            }
        }
        LobCommand::Get { key, file } => {
            let resp = c
                .send(c.req(reqwest::Method::GET, c.url("lob", Some(&key))))
                .await?;
            let mut stream = resp.bytes_stream();
            let to_file = file.filter(|f| f.as_os_str() != "-");
            let mut out: Box<dyn Write> = match &to_file {
                Some(f) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(f)
                        .map_err(|e| Failure(format!("cannot write {}: {e}", f.display()), 1))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut n = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                n += chunk.len() as u64;
                out.write_all(&chunk)?;
            }
            out.flush()?;
            if let Some(f) = to_file {
                eprintln!("{n} bytes written to {}", f.display());
            }
        }
        LobCommand::Delete { key } => {
            let v = c
                .json(c.req(reqwest::Method::DELETE, c.url("lob", Some(&key))))
                .await?;
            done(&v, a.json);
        }
    }
    Ok(())
}

/// `unisondb watch`
pub fn run_watch(a: ClientArgs, w: WatchArgs) -> ExitCode {
    finish(runtime().and_then(|rt| rt.block_on(watch(a, w))))
}

fn show_event(data: &str, json_out: bool) {
    if json_out {
        println!("{data}");
        return;
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        println!("{data}");
        return;
    };
    let key = v
        .get("key")
        .map(|k| printable(&b64_decode(k)))
        .unwrap_or_default();
    let mut line = format!(
        "{} {} {} {}",
        v["lsn"].as_u64().map_or("-".into(), |l| l.to_string()),
        v["model"].as_str().unwrap_or("?"),
        v["op"].as_str().unwrap_or("?"),
        key
    );
    if let Some(cols) = v.get("columns").and_then(Value::as_array) {
        let names: Vec<&str> = cols.iter().filter_map(Value::as_str).collect();
        if !names.is_empty() {
            line.push_str(&format!(" [{}]", names.join(",")));
        }
    }
    println!("{line}");
}

async fn watch(a: ClientArgs, w: WatchArgs) -> Res<()> {
    let c = Client::new(&a)?;
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(m) = &w.models {
        q.push(("models", m.clone()));
    }
    if let Some(p) = &w.prefix {
        q.push(("prefix", p.clone()));
    }
    if let Some(l) = w.from_lsn {
        q.push(("from_lsn", l.to_string()));
    }
    let resp = c
        .send(
            c.req(reqwest::Method::GET, c.url("watch", None))
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .query(&q),
        )
        .await?;
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let (mut event, mut data) = (String::new(), String::new());
    let mut seen = 0u64;
    if w.count == Some(0) {
        return Ok(());
    }
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                // End of one event.
                match event.as_str() {
                    "error" => return Err(Failure(format!("watch ended: {data}"), 1)),
                    "" | "change" if !data.is_empty() => {
                        show_event(&data, a.json);
                        std::io::stdout().flush()?;
                        seen += 1;
                        if w.count.is_some_and(|n| seen >= n) {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
                event.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }
    Ok(())
}

/// `unisondb backup`: a complete, consistent backup taken by the node while it serves
/// (`POST /api/v1/{ns}/backups`), into its backup directory or `dir` below it, or with
/// `object_store` into its archive store.
pub fn run_backup(
    a: ClientArgs,
    dir: Option<String>,
    object_store: bool,
    result_file: Option<PathBuf>,
) -> ExitCode {
    let r = runtime().and_then(|rt| {
        rt.block_on(async {
            let c = Client::new(&a)?;
            let body = match &dir {
                _ if object_store => serde_json::json!({ "target": "objectStore" }),
                Some(d) => serde_json::json!({ "dir": d }),
                None => serde_json::json!({}),
            };
            let v = c
                .json(c.req(reqwest::Method::POST, c.url("backups", None)).json(&body))
                .await?;
            if let Some(f) = &result_file {
                std::fs::write(f, backup_summary(&v).to_string())
                    .map_err(|e| Failure(format!("cannot write {}: {e}", f.display()), 1))?;
            }
            if a.json {
                print_json(&v);
            } else {
                let m = &v["manifest"];
                println!(
                    "backup {} of {}: snapshot at LSN {} ({} entries), WAL {}..{} ({} records)\n  {}",
                    v["id"].as_str().unwrap_or("?"),
                    m["namespace"].as_str().unwrap_or("?"),
                    m["snapshot"]["lsn"],
                    m["snapshot"]["entries"],
                    m["wal"]["firstLsn"],
                    m["wal"]["lastLsn"],
                    m["wal"]["records"],
                    v["path"].as_str().or(v["location"].as_str()).unwrap_or("?"),
                );
            }
            Ok(())
        })
    });
    // A failure goes to the result file too: a Kubernetes Job reports it as its termination message.
    if let (Err(Failure(msg, _)), Some(f)) = (&r, &result_file) {
        if let Err(e) = std::fs::write(f, format!("error: {msg}")) {
            eprintln!("cannot write {}: {e}", f.display());
        }
    }
    finish(r)
}

/// The node's answer without the manifest's epoch history (which grows with every restart), so it
/// stays far below the 4 KiB a Kubernetes termination message may hold.
fn backup_summary(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(m) = out.get_mut("manifest").and_then(Value::as_object_mut) {
        m.remove("epochHistory");
    }
    out
}

/// `unisondb cluster ...`: a hub group's membership over the HTTP API.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// List the members of a namespace's group (leader, term, voters, learners).
    Members,
    /// Add member ID to every group (learner, then voter once caught up); idempotent.
    Add {
        id: u64,
        /// `host:port` of the new member's gRPC listener.
        #[arg(long)]
        grpc_addr: String,
        /// `host:port` of its HTTP API (default: the gRPC host with the node's HTTP port).
        #[arg(long)]
        http_addr: Option<String>,
        /// Give up (HTTP 504, exit 1) after this many milliseconds.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Remove member ID from every group (voter or learner); idempotent.
    Remove {
        id: u64,
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Hand the leadership of the groups this node leads to another voter (before a restart).
    StepDown {
        /// The voter to hand off to (default: the most caught-up one).
        #[arg(long)]
        to: Option<u64>,
        #[arg(long, default_value_t = 5_000)]
        timeout_ms: u64,
    },
}

/// `unisondb cluster members|add|remove|step-down`. Without an explicit `--namespace`, add, remove
/// and step-down act on every group and `members` shows the node's first group.
pub fn run_cluster(
    a: ClientArgs,
    cmd: ClusterCommand,
    namespace_given: bool,
    result_file: Option<PathBuf>,
) -> ExitCode {
    let r = runtime().and_then(|rt| {
        rt.block_on(async {
            let c = Client::new(&a)?;
            let ns = utf8_percent_encode(&a.namespace, SEGMENT).to_string();
            let scoped = |q: String| {
                if namespace_given {
                    format!("{q}&namespace={ns}")
                } else {
                    q
                }
            };
            let base = format!("{}/api/v1/cluster", c.base);
            let v = match &cmd {
                ClusterCommand::Members => {
                    let url = match namespace_given {
                        true => format!("{base}/members?namespace={ns}"),
                        false => format!("{base}/members"),
                    };
                    c.json(c.req(reqwest::Method::GET, url)).await?
                }
                ClusterCommand::Add {
                    id,
                    grpc_addr,
                    http_addr,
                    timeout_ms,
                } => {
                    let url = format!(
                        "{base}/members?{}",
                        scoped(format!("timeout_ms={timeout_ms}"))
                    );
                    let body = json!({"id": id, "grpc_addr": grpc_addr, "http_addr": http_addr});
                    c.json(c.req(reqwest::Method::POST, url).json(&body))
                        .await?
                }
                ClusterCommand::Remove { id, timeout_ms } => {
                    let url = format!(
                        "{base}/members/{id}?{}",
                        scoped(format!("timeout_ms={timeout_ms}"))
                    );
                    c.json(c.req(reqwest::Method::DELETE, url)).await?
                }
                ClusterCommand::StepDown { to, timeout_ms } => {
                    let mut q = format!("timeout_ms={timeout_ms}");
                    if let Some(t) = to {
                        q.push_str(&format!("&to={t}"));
                    }
                    let url = format!("{base}/step-down?{}", scoped(q));
                    c.json(c.req(reqwest::Method::POST, url)).await?
                }
            };
            if let Some(f) = &result_file {
                std::fs::write(f, v.to_string())
                    .map_err(|e| Failure(format!("cannot write {}: {e}", f.display()), 1))?;
            }
            if a.json {
                print_json(&v);
            } else {
                print_cluster(&cmd, &v);
            }
            Ok(())
        })
    });
    if let (Err(Failure(msg, _)), Some(f)) = (&r, &result_file) {
        if let Err(e) = std::fs::write(f, format!("error: {msg}")) {
            eprintln!("cannot write {}: {e}", f.display());
        }
    }
    finish(r)
}

fn print_cluster(cmd: &ClusterCommand, v: &Value) {
    match cmd {
        ClusterCommand::Members => {
            println!(
                "namespace {}: term {}, leader {}",
                v["namespace"].as_str().unwrap_or("?"),
                v["term"],
                v["leader"]
            );
            for m in v["members"].as_array().into_iter().flatten() {
                let role = if v["leader"] == m["id"] {
                    "leader"
                } else if m["voter"] == true {
                    "voter"
                } else {
                    "learner"
                };
                let matched = match m["match_index"].as_u64() {
                    Some(i) => format!(" match {i}"),
                    None => String::new(),
                };
                println!(
                    "  {} {role} grpc={} http={}{matched}",
                    m["id"],
                    m["grpc_addr"].as_str().unwrap_or("?"),
                    m["http_addr"].as_str().unwrap_or("?")
                );
            }
        }
        ClusterCommand::StepDown { .. } => {
            for (ns, l) in v["new_leaders"].as_object().into_iter().flatten() {
                match l.as_u64() {
                    Some(l) => println!("{ns}: leadership handed to node {l}"),
                    None => println!("{ns}: this node did not lead"),
                }
            }
        }
        ClusterCommand::Add { id, .. } | ClusterCommand::Remove { id, .. } => {
            for (ns, o) in v["namespaces"].as_object().into_iter().flatten() {
                println!(
                    "{ns}: node {id} {}",
                    o.as_str().unwrap_or("?").replace('_', " ")
                );
            }
        }
    }
}
