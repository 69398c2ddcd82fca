//! Replies and their encoding in RESP2 or RESP3 (the protocol a connection chose with `HELLO`).

/// One reply; encoded per the connection's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    /// Redis's error format: the first word is the error code (`ERR`, `WRONGTYPE`, `READONLY`, ...).
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Reply>),
    /// A map in RESP3; a flat array of alternating keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// Out-of-band data (Pub/Sub messages): `>` in RESP3, an array in RESP2.
    Push(Vec<Reply>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    pub fn err(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    pub fn bulk(b: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(b.into())
    }

    /// Appends the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>, resp3: bool) {
        match self {
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(e) => line(out, b'-', e.replace(['\r', '\n'], " ").as_bytes()),
            Reply::Int(i) => line(out, b':', i.to_string().as_bytes()),
            Reply::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                items.iter().for_each(|i| i.encode(out, resp3));
            }
            Reply::Map(pairs) => {
                if resp3 {
                    line(out, b'%', pairs.len().to_string().as_bytes());
                } else {
                    line(out, b'*', (pairs.len() * 2).to_string().as_bytes());
                }
                for (k, v) in pairs {
                    k.encode(out, resp3);
                    v.encode(out, resp3);
                }
            }
            Reply::Push(items) => {
                line(
                    out,
                    if resp3 { b'>' } else { b'*' },
                    items.len().to_string().as_bytes(),
                );
                items.iter().for_each(|i| i.encode(out, resp3));
            }
        }
    }
}

fn line(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(kind);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::Reply::*;
    use super::*;

    fn enc(r: &Reply, resp3: bool) -> String {
        let mut v = Vec::new();
        r.encode(&mut v, resp3);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn resp2_and_resp3_encodings() {
        assert_eq!(enc(&Reply::ok(), false), "+OK\r\n");
        assert_eq!(
            enc(&Error("ERR bad\r\nthing".into()), false),
            "-ERR bad  thing\r\n"
        );
        assert_eq!(enc(&Int(-3), false), ":-3\r\n");
        assert_eq!(enc(&Reply::bulk("ab"), false), "$2\r\nab\r\n");
        assert_eq!(
            (enc(&Null, false), enc(&Null, true)),
            ("$-1\r\n".into(), "_\r\n".into())
        );
        let m = Map(vec![(Reply::bulk("k"), Int(1))]);
        assert_eq!(enc(&m, false), "*2\r\n$1\r\nk\r\n:1\r\n");
        assert_eq!(enc(&m, true), "%1\r\n$1\r\nk\r\n:1\r\n");
        let p = Push(vec![Reply::bulk("message")]);
        assert_eq!(
            (enc(&p, false), enc(&p, true)),
            (
                "*1\r\n$7\r\nmessage\r\n".into(),
                ">1\r\n$7\r\nmessage\r\n".into()
            )
        );
    }
}
