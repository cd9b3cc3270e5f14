//! The instance's own memcached, used as a pure read-through cache.
//!
//! Keys carry the user's data version (their change sequence), which every
//! write bumps in the same transaction as the data. A reader first learns the
//! current version from PostgreSQL, so an entry written for an older version
//! is simply never asked for again: nothing is invalidated, and no instance
//! can serve a stale read. Entries age out through memcached's LRU.
//!
//! memcached is an optimisation only. Any failure (down, slow, garbage) makes
//! the call a miss; after a failure the cache stays off for a short while so
//! requests don't each pay a connect timeout.
//!
//! A connection whose command did not finish (failed, timed out, or dropped
//! because the HTTP request was cancelled) is never reused: its next reply
//! would answer the previous command, i.e. hand out another key's value,
//! possibly another user's. As a second guard every stored value starts with
//! its own key, checked on read.

use crate::settings::CacheSettings;
use bb8::{ManageConnection, Pool};
use memcache_async::ascii::Protocol;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;

const BACKOFF_AFTER_FAILURE: Duration = Duration::from_secs(1);

pub struct MemcacheManager {
    addr: String,
}

/// A memcached connection. A command that failed or timed out half-way leaves
/// the text protocol out of step, so such a connection is marked broken and
/// the pool drops it instead of handing it out again.
pub struct MemcacheConnection {
    protocol: Protocol<TcpStream>,
    broken: bool,
}

impl ManageConnection for MemcacheManager {
    type Connection = MemcacheConnection;
    type Error = io::Error;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let stream = TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(MemcacheConnection {
            protocol: Protocol::new(stream),
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        conn.protocol.version().await.map(|_| ())
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.broken
    }
}

pub struct Cache {
    addr: Option<String>,
    pool: Option<Pool<MemcacheManager>>,
    ttl_seconds: u32,
    timeout: Duration,
    /// Unix millis before which the cache is skipped after a failure.
    off_until_ms: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub errors: AtomicU64,
}

impl Cache {
    pub fn new(settings: &CacheSettings) -> Self {
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let pool = settings.memcached.as_ref().map(|addr| {
            Pool::builder()
                .max_size(16)
                .min_idle(Some(0))
                .test_on_check_out(false)
                .connection_timeout(timeout)
                .build_unchecked(MemcacheManager { addr: addr.clone() })
        });
        Cache {
            addr: settings.memcached.clone(),
            pool,
            ttl_seconds: settings.ttl_seconds,
            timeout,
            off_until_ms: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    pub fn address(&self) -> Option<&str> {
        self.addr.as_deref()
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let value = match self.checkout().await {
            None => None,
            Some(mut conn) => {
                // Broken until the reply is read in full; a cancelled call leaves it so.
                conn.broken = true;
                let reply = tokio::time::timeout(self.timeout, conn.protocol.get(key)).await;
                if matches!(&reply, Ok(Ok(_)))
                    || matches!(&reply, Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound)
                {
                    conn.broken = false;
                }
                match reply {
                    Ok(Ok(stored)) => match unframe(key, &stored) {
                        Some(value) => Some(value.to_vec()),
                        None => {
                            // Out of step, or an entry in an older format: a miss either
                            // way, and the connection is not trusted again.
                            conn.broken = true;
                            self.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(addr = ?self.addr, key, "memcached reply is not framed for this key; connection dropped");
                            None
                        }
                    },
                    Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => None,
                    Ok(Err(e)) => {
                        self.failed(&mut conn, &e.to_string());
                        None
                    }
                    Err(_) => {
                        self.failed(&mut conn, "timed out");
                        None
                    }
                }
            }
        };
        let counter = if value.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        value
    }

    pub async fn set(&self, key: &str, value: &[u8]) {
        if let Some(mut conn) = self.checkout().await {
            let ttl = self.ttl_seconds;
            let stored = frame(key, value);
            conn.broken = true;
            match tokio::time::timeout(self.timeout, conn.protocol.set(key, &stored[..], ttl)).await
            {
                Ok(Ok(())) => conn.broken = false,
                Ok(Err(e)) => self.failed(&mut conn, &e.to_string()),
                Err(_) => self.failed(&mut conn, "timed out"),
            }
        }
    }

    /// Whether memcached answers `version` right now (for /healthz). Uses a
    /// fresh connection so it reports the server, not the pool's past.
    pub async fn ping(&self) -> Result<String, String> {
        let addr = self
            .addr
            .clone()
            .ok_or_else(|| "not configured".to_string())?;
        let connect = async {
            let stream = TcpStream::connect(&addr).await?;
            Protocol::new(stream).version().await
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(version)) => Ok(version),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        }
    }

    async fn checkout(&self) -> Option<bb8::PooledConnection<'_, MemcacheManager>> {
        let pool = self.pool.as_ref()?;
        if now_ms() < self.off_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        match pool.get().await {
            Ok(conn) => Some(conn),
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.back_off(&e.to_string());
                None
            }
        }
    }

    fn failed(&self, conn: &mut MemcacheConnection, reason: &str) {
        conn.broken = true;
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.back_off(reason);
    }

    fn back_off(&self, reason: &str) {
        tracing::warn!(addr = ?self.addr, reason, "memcached unavailable; serving from PostgreSQL");
        let until = now_ms() + BACKOFF_AFTER_FAILURE.as_millis() as u64;
        self.off_until_ms.store(until, Ordering::Relaxed);
    }
}

/// The stored form of a value: its key, a newline (never part of a memcached
/// key), then the value.
fn frame(key: &str, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(key.len() + 1 + value.len());
    stored.extend_from_slice(key.as_bytes());
    stored.push(b'\n');
    stored.extend_from_slice(value);
    stored
}

/// The value inside `stored`, if `stored` was framed for `key`.
fn unframe<'a>(key: &str, stored: &'a [u8]) -> Option<&'a [u8]> {
    stored
        .strip_prefix(key.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"\n"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_memcached_is_a_miss_not_an_error() {
        // Bind then drop a listener so the port is (very likely) closed.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let cache = Cache::new(&CacheSettings {
            memcached: Some(format!("127.0.0.1:{port}")),
            ..CacheSettings::default()
        });
        assert_eq!(cache.get("k").await, None);
        cache.set("k", b"v").await;
        assert!(cache.ping().await.is_err());
        assert!(cache.errors.load(Ordering::Relaxed) >= 1);
    }

    /// A memcached stand-in that answers `get KEY` with a framed value naming
    /// KEY, and answers `get slow` only after a delay.
    async fn fake_memcached() -> String {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let Some(key) = line.strip_prefix("get ") else {
                            continue;
                        };
                        if key == "slow" {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        let value = frame(key, format!("value of {key}").as_bytes());
                        let mut reply = format!("VALUE {key} 0 {}\r\n", value.len()).into_bytes();
                        reply.extend_from_slice(&value);
                        reply.extend_from_slice(b"\r\nEND\r\n");
                        if write.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_cancelled_get_never_hands_its_reply_to_the_next_key() {
        let cache = Cache::new(&CacheSettings {
            memcached: Some(fake_memcached().await),
            timeout_ms: 5_000,
            ..CacheSettings::default()
        });
        assert_eq!(
            cache.get("warm").await.as_deref(),
            Some(&b"value of warm"[..])
        );
        // The HTTP request behind this lookup goes away mid-read.
        let cancelled = tokio::time::timeout(Duration::from_millis(50), cache.get("slow")).await;
        assert!(cancelled.is_err());
        // The next lookup must get its own value, not the late reply for "slow".
        assert_eq!(
            cache.get("user-b").await.as_deref(),
            Some(&b"value of user-b"[..])
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            cache.get("user-c").await.as_deref(),
            Some(&b"value of user-c"[..])
        );
    }

    #[test]
    fn a_value_framed_for_one_key_is_refused_for_another() {
        let stored = frame("contact:a:1", b"{}");
        assert_eq!(unframe("contact:a:1", &stored), Some(&b"{}"[..]));
        assert_eq!(unframe("contact:b:1", &stored), None);
        assert_eq!(unframe("contact:a:1", b"{}"), None);
    }

    #[tokio::test]
    async fn no_memcached_configured_means_no_cache() {
        let cache = Cache::new(&CacheSettings::default());
        assert_eq!(cache.get("k").await, None);
        assert_eq!(cache.ping().await, Err("not configured".to_string()));
    }
}
