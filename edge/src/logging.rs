//! Log setup for the `edge` binary: `RUST_LOG` (default `info`) plus a filter for the
//! lines every public TLS endpoint produces all day and that say nothing about the edge.
//!
//! Pingora logs each failed downstream TLS handshake (scanners, clients that reject the
//! certificate, plain HTTP sent to the TLS port, a closed laptop lid) at ERROR, and
//! rustls logs each fatal alert it sends at WARN. Those are counted in
//! `edge_tls_handshake_failures_total` and dropped from the log unless the default level
//! in `RUST_LOG` is `debug` or `trace` (`RUST_LOG=debug`; a per-target directive such as
//! `edge::access=debug` does not count). Real errors (accept failures, upstream errors, reload failures) are
//! untouched.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

static TLS_HANDSHAKE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Failed or timed-out downstream TLS handshakes since the process started.
pub fn tls_handshake_failures() -> u64 {
    TLS_HANDSHAKE_FAILURES.load(Relaxed)
}

/// Installs the global subscriber (stderr) and routes the `log` records of Pingora and
/// rustls into it.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let keep_noise = std::env::var(EnvFilter::DEFAULT_ENV).is_ok_and(|s| keeps_noise(&s));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(Noise { keep_noise })
        .with(fmt)
        .try_init();
}

/// Whether the default level of a `RUST_LOG` spec is debug or trace: the operator is
/// then looking for details, so nothing is dropped.
fn keeps_noise(spec: &str) -> bool {
    spec.split(',').map(str::trim).any(|d| {
        !d.contains('=')
            && d.parse::<LevelFilter>()
                .is_ok_and(|l| l >= LevelFilter::DEBUG)
    })
}

/// Vetoes (and counts) the client-caused lines described in the module docs.
struct Noise {
    keep_noise: bool,
}

impl<S: Subscriber> Layer<S> for Noise {
    /// Noise only vetoes, it never wants more than the fmt layer's filter. Without a hint
    /// the global level (and the `log` crate's max level, which `try_init` copies) stays
    /// at TRACE, and every one of Pingora's `debug!`/`trace!` calls on the request path
    /// is turned into a tracing event only to be filtered out.
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::OFF)
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return true;
        }
        let mut v = LogFields::default();
        event.record(&mut v);
        let target = v.target.as_deref().unwrap_or(event.metadata().target());
        match classify(target, level, &v.message) {
            Kind::Keep => true,
            Kind::HandshakeFailure => {
                TLS_HANDSHAKE_FAILURES.fetch_add(1, Relaxed);
                self.keep_noise
            }
            Kind::ClientNoise => self.keep_noise,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Keep,
    HandshakeFailure,
    ClientNoise,
}

fn classify(target: &str, level: Level, message: &str) -> Kind {
    if target.starts_with("pingora_core::services::listening")
        && (message.starts_with("Downstream handshake error")
            || message.starts_with("Downstream handshake timeout"))
    {
        return Kind::HandshakeFailure;
    }
    // A client that opens h2 and then sends garbage or hangs up.
    if target.starts_with("pingora_core::apps") && message.starts_with("H2 handshake error") {
        return Kind::ClientNoise;
    }
    // The client's connection broke before its request header was complete (no request,
    // so no access log line either; HTTP/1 headers are read by the edge's guard first,
    // so this is mostly HTTP/2 streams reset by the client).
    if target.starts_with("pingora_proxy")
        && message.starts_with("Fail to proxy:")
        && message.contains("downstream session type")
    {
        return Kind::ClientNoise;
    }
    // "Sending fatal alert BadCertificate" and friends: the handshake failure above
    // already accounts for it.
    if target.starts_with("rustls") && level == Level::WARN {
        return Kind::ClientNoise;
    }
    Kind::Keep
}

/// The message of an event and, for records bridged from `log`, their real target.
#[derive(Default)]
struct LogFields {
    message: String,
    target: Option<String>,
}

impl Visit for LogFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "log.target" => self.target = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_debug_default_level_keeps_noise() {
        assert!(keeps_noise("debug"));
        assert!(keeps_noise("warn,pingora=info,trace"));
        assert!(!keeps_noise("info,edge::access=debug"));
        assert!(!keeps_noise("info"));
    }

    #[test]
    fn client_noise_is_recognised_and_real_errors_kept() {
        let listening = "pingora_core::services::listening";
        assert_eq!(
            classify(
                listening,
                Level::ERROR,
                "Downstream handshake error from 1.2.3.4:5: TLSHandshakeFailure"
            ),
            Kind::HandshakeFailure
        );
        assert_eq!(
            classify(
                listening,
                Level::ERROR,
                "Accept() failed Too many open files"
            ),
            Kind::Keep
        );
        assert_eq!(
            classify("rustls::common_state", Level::WARN, "Sending fatal alert"),
            Kind::ClientNoise
        );
        assert_eq!(
            classify("rustls::common_state", Level::ERROR, "x"),
            Kind::Keep
        );
        assert_eq!(
            classify(
                "pingora_proxy",
                Level::ERROR,
                "Fail to proxy: Upstream ConnectRefused"
            ),
            Kind::Keep
        );
    }
}
