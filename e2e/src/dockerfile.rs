//! A small Dockerfile parser: stages, instructions (continuations joined, comments dropped), and
//! the runtime facts of the final stage (user, env, ports, volumes, entrypoint, labels).

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub op: String,
    pub args: String,
}

#[derive(Clone, Debug, Default)]
pub struct Stage {
    pub from: String,
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

#[derive(Clone, Debug, Default)]
pub struct Dockerfile {
    /// ARGs before the first FROM.
    pub global_args: BTreeMap<String, String>,
    pub stages: Vec<Stage>,
}

/// Facts of the final (runtime) stage, as a container runtime sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeFacts {
    pub base: String,
    pub user: String,
    pub workdir: String,
    pub env: BTreeMap<String, String>,
    pub expose: Vec<u16>,
    pub volumes: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// (source, destination) of every COPY; `--from=` sources are prefixed `stage:`.
    pub copies: Vec<(String, String)>,
}

fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for raw in text.lines() {
        let t = raw.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if !cur.is_empty() && t.starts_with('#') {
            continue; // comment inside a continuation
        }
        if let Some(s) = t.strip_suffix('\\') {
            cur.push_str(s.trim_end());
            cur.push(' ');
        } else {
            cur.push_str(t);
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

pub fn parse(text: &str) -> Dockerfile {
    let mut df = Dockerfile::default();
    for line in logical_lines(text) {
        let (op, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let op = op.to_ascii_uppercase();
        let args = args.trim().to_string();
        if op == "FROM" {
            let parts: Vec<&str> = args.split_whitespace().collect();
            let from = parts
                .iter()
                .find(|p| !p.starts_with("--"))
                .copied()
                .unwrap_or_default();
            let name = parts
                .iter()
                .position(|p| p.eq_ignore_ascii_case("as"))
                .and_then(|i| parts.get(i + 1))
                .map(|s| s.to_string());
            df.stages.push(Stage {
                from: from.to_string(),
                name,
                instructions: vec![],
            });
        } else if let Some(stage) = df.stages.last_mut() {
            stage.instructions.push(Instruction { op, args });
        } else if op == "ARG" {
            let (k, v) = args.split_once('=').unwrap_or((&args, ""));
            df.global_args.insert(k.to_string(), v.to_string());
        }
    }
    df
}

/// JSON exec form `["a", "b"]`, or shell form wrapped as `/bin/sh -c`.
fn exec_form(args: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(args) {
        Ok(v) => v,
        Err(_) => vec!["/bin/sh".into(), "-c".into(), args.to_string()],
    }
}

/// `k=v k2="v 2"` or the legacy `k v` form.
fn key_values(args: &str) -> Vec<(String, String)> {
    if !args.contains('=') {
        let (k, v) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        return vec![(k.to_string(), v.trim().to_string())];
    }
    let mut out = Vec::new();
    let mut chars = args.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        chars.next(); // '='
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n)
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_string(), val));
    }
    out
}

impl Dockerfile {
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name))
    }

    pub fn runtime(&self) -> &Stage {
        self.stages.last().expect("Dockerfile has a FROM")
    }

    /// `text` with `${ARG}` references to global ARGs replaced by their defaults, recursively (a
    /// base image given as `${BUILDER_IMAGE}` resolves to what a plain `docker build` uses).
    pub fn resolve(&self, text: &str) -> String {
        let mut out = text.to_string();
        for _ in 0..8 {
            let before = out.clone();
            for (k, v) in &self.global_args {
                out = out.replace(&format!("${{{k}}}"), v);
            }
            if out == before {
                break;
            }
        }
        out
    }

    /// Every RUN of every stage, flags (`--mount=...`) stripped, split on `&&` into commands.
    pub fn run_commands(&self, stage: &Stage) -> Vec<String> {
        stage
            .instructions
            .iter()
            .filter(|i| i.op == "RUN")
            .flat_map(|i| {
                let mut s = i.args.as_str();
                while s.starts_with("--") {
                    s = s
                        .split_once(char::is_whitespace)
                        .map(|x| x.1)
                        .unwrap_or("")
                        .trim_start();
                }
                s.split("&&")
                    .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
                    .collect::<Vec<_>>()
            })
            .filter(|c| !c.is_empty())
            .collect()
    }

    pub fn runtime_facts(&self) -> RuntimeFacts {
        let st = self.runtime();
        let mut f = RuntimeFacts {
            base: self.resolve(&st.from),
            ..Default::default()
        };
        for i in &st.instructions {
            match i.op.as_str() {
                "USER" => f.user = i.args.clone(),
                "WORKDIR" => f.workdir = i.args.clone(),
                "ENV" => f.env.extend(key_values(&i.args)),
                "LABEL" => f.labels.extend(key_values(&i.args)),
                "EXPOSE" => f.expose.extend(i.args.split_whitespace().map(|p| {
                    p.split('/')
                        .next()
                        .unwrap()
                        .parse::<u16>()
                        .expect("EXPOSE port")
                })),
                "VOLUME" => match serde_json::from_str::<Vec<String>>(&i.args) {
                    Ok(v) => f.volumes.extend(v),
                    Err(_) => f
                        .volumes
                        .extend(i.args.split_whitespace().map(String::from)),
                },
                "ENTRYPOINT" => f.entrypoint = exec_form(&i.args),
                "CMD" => f.cmd = exec_form(&i.args),
                "COPY" => {
                    let parts: Vec<&str> = i.args.split_whitespace().collect();
                    let from = parts
                        .iter()
                        .find_map(|p| p.strip_prefix("--from="))
                        .map(|s| format!("{s}:"));
                    let files: Vec<&str> = parts
                        .iter()
                        .filter(|p| !p.starts_with("--"))
                        .copied()
                        .collect();
                    if let Some((dst, srcs)) = files.split_last() {
                        for s in srcs {
                            f.copies.push((
                                format!("{}{s}", from.clone().unwrap_or_default()),
                                dst.to_string(),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        f
    }
}
