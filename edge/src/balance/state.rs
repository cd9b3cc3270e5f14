//! Per-server runtime state that outlives a routing table: in-flight requests and the
//! operator's drain flag. Kept in a registry keyed by pool and address so a reload neither
//! forgets a drain nor loses count of requests still running on the old table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::config::model::Pool;

pub struct ServerState {
    in_flight: AtomicUsize,
    drained: AtomicBool,
    /// Process-unique number: indexes the per-thread pools of idle upstream connections
    /// (`proxy::fast::idle`), which therefore survive reloads like this state does.
    slot: usize,
}

impl Default for ServerState {
    fn default() -> Self {
        static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
        ServerState {
            in_flight: AtomicUsize::new(0),
            drained: AtomicBool::new(false),
            slot: NEXT_SLOT.fetch_add(1, Relaxed),
        }
    }
}

impl ServerState {
    pub fn slot(&self) -> usize {
        self.slot
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    pub fn is_drained(&self) -> bool {
        self.drained.load(Relaxed)
    }

    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Relaxed);
    }

    /// Counts one request on this server until the lease is dropped.
    pub fn lease(self: &Arc<Self>) -> Lease {
        self.in_flight.fetch_add(1, Relaxed);
        Lease(self.clone())
    }
}

/// One request's claim on a server; least-conn, random-two, `/status` and drain all read
/// the count it maintains.
pub struct Lease(Arc<ServerState>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[derive(Default)]
pub struct ServerStates {
    map: Mutex<HashMap<(String, SocketAddr), Arc<ServerState>>>,
}

impl ServerStates {
    pub fn get(&self, pool: &str, address: SocketAddr) -> Arc<ServerState> {
        match self.map.lock() {
            Ok(mut map) => map.entry((pool.to_owned(), address)).or_default().clone(),
            // Only table builds take this lock; a poisoned one just means fresh state.
            Err(_) => Arc::default(),
        }
    }

    /// Forgets servers no pool of the active configuration lists.
    pub fn retain(&self, pools: &[Pool]) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|(pool, addr), _| {
                pools
                    .iter()
                    .any(|p| &p.name == pool && p.servers.iter().any(|s| s.address == *addr))
            });
        }
    }
}
