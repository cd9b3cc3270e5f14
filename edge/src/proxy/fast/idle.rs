//! Idle upstream connections of the fast path, one pool per thread and server.
//!
//! Per thread because a Pingora service runs each of its threads as its own runtime
//! (without work stealing) and a socket is registered with the reactor of the runtime that
//! opened it: a per-thread pool keeps every connection on its own reactor and needs no
//! lock. Pingora's shared pool instead takes a lock, hashes the peer and spawns an
//! idle-watch task on every release.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

struct Idle {
    stream: TcpStream,
    since: Instant,
}

thread_local! {
    /// Indexed by `ServerState::slot`; newest connection at the back.
    static POOLS: RefCell<Vec<VecDeque<Idle>>> = const { RefCell::new(Vec::new()) };
}

/// The most recently used idle connection to the server in `slot` that is still open and
/// has idled less than `max_idle`. Stale ones met on the way are closed.
pub fn take(slot: usize, max_idle: Duration) -> Option<TcpStream> {
    let now = Instant::now();
    loop {
        let idle = POOLS.with(|p| p.borrow_mut().get_mut(slot)?.pop_back())?;
        if now.saturating_duration_since(idle.since) < max_idle && still_open(&idle.stream) {
            return Some(idle.stream);
        }
    }
}

/// Parks a connection whose last response ended cleanly. At most `cap` per server and
/// thread; the oldest make room, and ones past `max_idle` are closed on the way.
pub fn put(slot: usize, stream: TcpStream, cap: usize, max_idle: Duration) {
    if cap == 0 || max_idle.is_zero() {
        return;
    }
    let now = Instant::now();
    POOLS.with(|p| {
        let mut pools = p.borrow_mut();
        if pools.len() <= slot {
            pools.resize_with(slot + 1, VecDeque::new);
        }
        let Some(pool) = pools.get_mut(slot) else {
            return;
        };
        while pool
            .front()
            .is_some_and(|i| now.saturating_duration_since(i.since) >= max_idle)
        {
            pool.pop_front();
        }
        if pool.len() >= cap {
            pool.pop_front();
        }
        pool.push_back(Idle { stream, since: now });
    });
}

/// An idle connection must have nothing to read: readable means the upstream closed it
/// (or sent bytes nobody asked for). Reading the reactor's readiness costs no syscall;
/// only when it is set (also after a read that filled its buffer exactly) does a
/// non-blocking read decide.
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), server.expect("accept").0)
    }

    #[tokio::test]
    async fn closed_and_expired_connections_are_not_handed_out() {
        let slot = 1_000_000;
        let (open, _open_peer) = pair().await;
        let (closed, closed_peer) = pair().await;
        put(slot, open, 8, Duration::from_secs(60));
        put(slot, closed, 8, Duration::from_secs(60));
        drop(closed_peer);
        // Let the reactor see the FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = take(slot, Duration::from_secs(60)).expect("the open one");
        assert!(take(slot, Duration::from_secs(60)).is_none());
        let mut got = got;
        got.write_all(b"x").await.expect("still writable");

        let (young, _peer) = pair().await;
        put(slot, young, 8, Duration::from_secs(60));
        assert!(take(slot, Duration::ZERO).is_none(), "expired");
    }

    #[tokio::test]
    async fn the_cap_drops_the_oldest() {
        let slot = 1_000_001;
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (c, p) = pair().await;
            peers.push(p);
            put(slot, c, 2, Duration::from_secs(60));
        }
        assert!(take(slot, Duration::from_secs(60)).is_some());
        assert!(take(slot, Duration::from_secs(60)).is_some());
        assert!(take(slot, Duration::from_secs(60)).is_none());
    }
}
