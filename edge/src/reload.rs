//! `edge reload`: a minimal HTTP/1.1 client for the admin API's `POST /reload`, so an
//! operator (or a deploy script) gets the verdict on the new file and an exit code,
//! instead of sending SIGHUP and reading logs.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

/// The reload reads files and parses certificates; give it well over what that takes.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Admin answers are small JSON documents.
const MAX_REPLY: u64 = 1 << 20;

/// Where the admin API of the edge running `path` listens, read from the file without
/// validating the rest (the point of a reload may be to learn what is wrong with it).
#[derive(Debug, Default)]
pub struct AdminTarget {
    pub listen: Option<String>,
    pub token: Option<String>,
}

pub fn admin_of(path: &Path) -> anyhow::Result<AdminTarget> {
    let src =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: toml::Table =
        toml::from_str(&src).with_context(|| format!("{}: not valid TOML", path.display()))?;
    let admin = doc.get("admin").and_then(|a| a.as_table());
    let field = |k: &str| {
        admin
            .and_then(|a| a.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    Ok(AdminTarget {
        listen: field("listen"),
        token: field("token"),
    })
}

pub struct Reply {
    pub status: u16,
    pub body: String,
}

pub fn post_reload(addr: &str, token: Option<&str>) -> anyhow::Result<Reply> {
    let target = addr
        .to_socket_addrs()
        .with_context(|| format!("bad admin address `{addr}` (want IP:PORT)"))?
        .next()
        .with_context(|| format!("admin address `{addr}` resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)
        .with_context(|| format!("cannot reach the edge admin API at {target}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /reload HTTP/1.1\r\nhost: {target}\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("sending to {target}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_REPLY)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer from {target}"))?;
    parse_reply(&raw).with_context(|| format!("unexpected answer from {target}"))
}

fn parse_reply(raw: &[u8]) -> anyhow::Result<Reply> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP response");
    };
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    Ok(Reply {
        status,
        body: body.to_owned(),
    })
}

/// Prints the outcome (stdout when applied, stderr otherwise) and picks the exit code.
pub fn report(reply: &Reply) -> ExitCode {
    let json: Option<serde_json::Value> = serde_json::from_str(&reply.body).ok();
    let field = |k: &str| json.as_ref().and_then(|j| j.get(k)).cloned();
    match reply.status {
        200 => {
            let generation = field("generation").unwrap_or_default();
            println!("reloaded: configuration generation {generation}");
            for w in field("warnings")
                .and_then(|w| w.as_array().cloned())
                .unwrap_or_default()
            {
                println!("warning: {}", w.as_str().unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        422 => {
            let error = field("error")
                .and_then(|e| e.as_str().map(str::to_owned))
                .unwrap_or_else(|| reply.body.trim().to_owned());
            eprintln!("edge: reload refused: {error}");
            eprintln!("edge: the running configuration was kept");
            ExitCode::FAILURE
        }
        401 => {
            eprintln!("edge: reload unauthorized: pass --token (or -c FILE with admin.token)");
            ExitCode::FAILURE
        }
        status => {
            eprintln!("edge: reload failed: HTTP {status}: {}", reply.body.trim());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_reply;

    #[test]
    fn reply_status_and_body() {
        let r = parse_reply(b"HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: 2\r\n\r\n{}")
            .expect("reply");
        assert_eq!((r.status, r.body.as_str()), (422, "{}"));
        assert!(parse_reply(b"garbage").is_err());
    }
}
