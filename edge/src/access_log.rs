//! The access log: one line per request, JSON or "combined", to stdout or a file.
//!
//! Requests only move a small record into a bounded channel (`try_send`, never blocking);
//! formatting and writing happen on a dedicated thread. When the writer falls behind and
//! the channel is full the line is dropped and `edge_access_log_dropped_total` counts it:
//! a slow disk must not slow the proxy down.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Uri, Version};
use prometheus::IntCounter;

use crate::config::model::{AccessLog, AccessLogFormat};
use crate::error::{Error, Result};

/// What one request leaves behind. Owned handles only (cheap clones of shared bytes,
/// `Copy` addresses); all text is produced on the writer thread.
pub struct Entry {
    pub time: SystemTime,
    pub client: Option<IpAddr>,
    pub listener: Arc<str>,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    /// 0 when no response status was sent.
    pub status: u16,
    pub bytes_sent: usize,
    pub route: Option<Arc<str>>,
    pub upstream: Option<SocketAddr>,
    pub duration: Duration,
    pub request_id: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub error: Option<String>,
}

// Entries travel by value: boxing would allocate per request, while the channel's slots
// are allocated once up front.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Entry(Entry),
    /// Reopen the file (log rotation), sent on reload.
    Reopen,
    /// Flush and acknowledge, before the process exits.
    Flush(SyncSender<()>),
}

pub struct AccessLogger {
    tx: SyncSender<Msg>,
    dropped: IntCounter,
}

impl AccessLogger {
    /// Opens the destination and starts the writer thread.
    pub fn start(config: &AccessLog, dropped: IntCounter) -> Result<Self> {
        let out = Output::open(config.path.clone())?;
        let (tx, rx) = mpsc::sync_channel(config.buffer);
        let format = config.format;
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out, format))
            .map_err(|e| Error::io("cannot start the access log writer", e))?;
        Ok(AccessLogger { tx, dropped })
    }

    /// Queues a line; never waits.
    pub fn log(&self, entry: Entry) {
        match self.tx.try_send(Msg::Entry(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    pub fn reopen(&self) {
        // A full queue just means the writer is busy; it reopens on the next reload.
        let _ = self.tx.try_send(Msg::Reopen);
    }

    /// Waits (at most `timeout`) until every queued line is written.
    pub fn flush(&self, timeout: Duration) {
        let (ack, done) = mpsc::sync_channel(1);
        let deadline = std::time::Instant::now() + timeout;
        let mut msg = Msg::Flush(ack);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }
}

enum Output {
    Stdout(std::io::Stdout),
    File(PathBuf, BufWriter<File>),
}

impl Output {
    fn open(path: Option<PathBuf>) -> Result<Self> {
        match path {
            None => Ok(Output::Stdout(std::io::stdout())),
            Some(p) => {
                let f = open_append(&p)?;
                Ok(Output::File(p, f))
            }
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(s) => s,
            Output::File(_, f) => f,
        }
    }
}

fn open_append(p: &PathBuf) -> Result<BufWriter<File>> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map(|f| BufWriter::with_capacity(64 * 1024, f))
        .map_err(|e| Error::io(format!("cannot open access log {}", p.display()), e))
}

fn writer(rx: Receiver<Msg>, mut out: Output, format: AccessLogFormat) {
    let mut line = String::with_capacity(512);
    // Blocks for the first message, then drains whatever queued up before flushing once.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Entry(e) => {
                    line.clear();
                    match format {
                        AccessLogFormat::Json => json_line(&mut line, &e),
                        AccessLogFormat::Combined => combined_line(&mut line, &e),
                    }
                    line.push('\n');
                    if let Err(err) = out.writer().write_all(line.as_bytes()) {
                        tracing::error!(error = %err, "access log write failed");
                    }
                }
                Msg::Reopen => {
                    if let Output::File(path, f) = &mut out {
                        let _ = f.flush();
                        match open_append(path) {
                            Ok(new) => *f = new,
                            Err(err) => tracing::error!(error = %err, "access log reopen failed"),
                        }
                    }
                }
                Msg::Flush(ack) => {
                    let _ = out.writer().flush();
                    let _ = ack.try_send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.writer().flush();
    }
}

fn json_line(out: &mut String, e: &Entry) {
    let text = |v: &Option<HeaderValue>| {
        v.as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let value = serde_json::json!({
        "time": rfc3339(e.time),
        "client": e.client.map(|c| c.to_string()),
        "listener": &*e.listener,
        "method": e.method.as_str(),
        "path": e.uri.path_and_query().map_or("/", |p| p.as_str()),
        "protocol": format!("{:?}", e.version),
        "status": e.status,
        "bytes_sent": e.bytes_sent,
        "route": e.route.as_deref(),
        "upstream": e.upstream.map(|u| u.to_string()),
        "duration_ms": (e.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "request_id": text(&e.request_id),
        "referer": text(&e.referer),
        "user_agent": text(&e.user_agent),
        "error": e.error,
    });
    let _ = write!(out, "{value}");
}

/// `client - - [time] "METHOD path PROTO" status bytes "referer" "agent"` (Apache/nginx
/// combined), then `rt=SECONDS upstream=ADDR request_id=ID` for what combined lacks.
fn combined_line(out: &mut String, e: &Entry) {
    let quoted = |v: &Option<HeaderValue>| {
        v.as_ref().map_or_else(
            || "-".to_owned(),
            |v| String::from_utf8_lossy(v.as_bytes()).replace('"', "\\\""),
        )
    };
    let _ = write!(
        out,
        "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" rt={:.3} upstream={} request_id={}",
        e.client.map_or_else(|| "-".to_owned(), |c| c.to_string()),
        clf_time(e.time),
        e.method,
        e.uri.path_and_query().map_or("/", |p| p.as_str()),
        e.version,
        e.status,
        e.bytes_sent,
        quoted(&e.referer),
        quoted(&e.user_agent),
        e.duration.as_secs_f64(),
        e.upstream.map_or_else(|| "-".to_owned(), |u| u.to_string()),
        e.request_id
            .as_ref()
            .map_or_else(|| "-".into(), |v| String::from_utf8_lossy(v.as_bytes())),
    );
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis(),
    )
}

fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(t);
    let m = MONTHS.get(mo as usize - 1).unwrap_or(&"Jan");
    format!("{d:02}/{m}/{y:04}:{h:02}:{mi:02}:{s:02} +0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            client: Some(IpAddr::from([192, 0, 2, 1])),
            listener: "https".into(),
            method: Method::GET,
            uri: Uri::from_static("/contacts?page=2"),
            version: Version::HTTP_11,
            status: 200,
            bytes_sent: 42,
            route: Some("webapp".into()),
            upstream: Some(SocketAddr::from(([127, 0, 0, 1], 8101))),
            duration: Duration::from_millis(2),
            request_id: Some(HeaderValue::from_static("abc")),
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8 \"x\"")),
            error: None,
        }
    }

    #[test]
    fn times_are_utc_calendar_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(clf_time(t), "18/Nov/2026:11:06:40 +0000");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn json_and_combined_lines() {
        let mut s = String::new();
        json_line(&mut s, &entry());
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert_eq!(v["path"], "/contacts?page=2");
        assert_eq!(v["upstream"], "127.0.0.1:8101");
        assert_eq!(v["duration_ms"], 2.0);
        let mut c = String::new();
        combined_line(&mut c, &entry());
        assert_eq!(
            c,
            "192.0.2.1 - - [18/Nov/2026:11:06:40 +0000] \"GET /contacts?page=2 HTTP/1.1\" 200 42 \"-\" \"curl/8 \\\"x\\\"\" rt=0.002 upstream=127.0.0.1:8101 request_id=abc"
        );
    }
}
