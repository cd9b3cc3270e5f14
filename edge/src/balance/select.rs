//! Server selection tables. A pool is split into tiers (primaries, then backups); each
//! tier carries what its algorithm needs, built off the request path: a weighted
//! round-robin schedule (also the weighted sampling table of random-two) and, for ketama,
//! a consistent-hash ring. Tables are immutable; a runtime weight change builds new ones.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use pingora_ketama::{Bucket, Continuum};

/// Upper bound on candidates a selection inspects before falling back to a linear scan.
pub const MAX_SELECT_ITERATIONS: usize = 256;
/// Above this many schedule steps × servers, the smooth interleaving costs too much to
/// build; weights are then expanded in blocks (same proportions, burstier order).
const SMOOTH_BUILD_LIMIT: usize = 1_000_000;

pub struct Tables {
    pub tiers: Vec<Tier>,
}

pub struct Tier {
    /// Server indices (into the pool) in this tier, with their weights.
    members: Vec<(usize, usize)>,
    /// Each member repeated `weight` times (after dividing by the common divisor).
    schedule: Vec<u16>,
    next: AtomicUsize,
    ring: Option<(Continuum, Vec<(SocketAddr, usize)>)>,
}

impl Tables {
    /// `servers` is `(index, address, weight, backup)` for every pool member.
    pub fn build(servers: &[(usize, SocketAddr, usize, bool)], ketama: bool) -> Tables {
        let tiers = [false, true]
            .into_iter()
            .filter_map(|backup| {
                let members: Vec<_> = servers
                    .iter()
                    .filter(|s| s.3 == backup)
                    .map(|s| (s.0, s.1, s.2))
                    .collect();
                (!members.is_empty()).then(|| Tier::build(&members, ketama))
            })
            .collect();
        Tables { tiers }
    }
}

impl Tier {
    fn build(members: &[(usize, SocketAddr, usize)], ketama: bool) -> Tier {
        let ring = ketama.then(|| {
            let buckets: Vec<_> = members
                .iter()
                .map(|(_, a, w)| Bucket::new(*a, u32::try_from(*w).unwrap_or(u32::MAX)))
                .collect();
            let addrs = members.iter().map(|(i, a, _)| (*a, *i)).collect();
            (Continuum::new(&buckets), addrs)
        });
        let weighted: Vec<(usize, usize)> = members.iter().map(|(i, _, w)| (*i, *w)).collect();
        Tier {
            schedule: schedule(&weighted),
            members: weighted,
            next: AtomicUsize::new(0),
            ring,
        }
    }

    /// Weighted round robin over usable members.
    pub fn round_robin(&self, usable: &impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.schedule.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed);
        (0..n.min(MAX_SELECT_ITERATIONS))
            .map(|k| usize::from(self.schedule[(start + k) % n]))
            .find(|i| usable(*i))
            .or_else(|| self.scan(start, usable))
    }

    /// Fewest in-flight requests per unit of weight; ties rotate so an idle pool still
    /// spreads requests.
    pub fn least_conn(
        &self,
        usable: &impl Fn(usize) -> bool,
        load: &impl Fn(usize) -> usize,
    ) -> Option<usize> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Relaxed);
        let mut best: Option<(usize, usize)> = None;
        for k in 0..n {
            let (i, w) = self.members[(start + k) % n];
            if !usable(i) {
                continue;
            }
            let better = best.is_none_or(|(bi, bw)| lighter((load(i), w), (load(bi), bw)));
            if better {
                best = Some((i, w));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Power of two choices: two weighted random candidates, the lighter one wins.
    pub fn random_two(
        &self,
        usable: &impl Fn(usize) -> bool,
        load: &impl Fn(usize) -> usize,
    ) -> Option<usize> {
        let n = self.schedule.len();
        if n == 0 {
            return None;
        }
        let pick = || usize::from(self.schedule[random() as usize % n]);
        let (a, b) = (pick(), pick());
        let weight = |i: usize| self.members.iter().find(|m| m.0 == i).map_or(1, |m| m.1);
        match (usable(a), usable(b)) {
            (true, true) if lighter((load(b), weight(b)), (load(a), weight(a))) => Some(b),
            (true, _) => Some(a),
            (false, true) => Some(b),
            (false, false) => self.least_conn(usable, load),
        }
    }

    /// The first usable server on the ring from `key`'s point.
    pub fn ketama(&self, key: &[u8], usable: &impl Fn(usize) -> bool) -> Option<usize> {
        let Some((ring, addrs)) = &self.ring else {
            return self.round_robin(usable);
        };
        ring.node_iter(key)
            .take(MAX_SELECT_ITERATIONS)
            .filter_map(|addr| addrs.iter().find(|(a, _)| a == addr).map(|(_, i)| *i))
            .find(|i| usable(*i))
            .or_else(|| self.scan(0, usable))
    }

    fn scan(&self, start: usize, usable: &impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.members.len();
        (0..n)
            .map(|k| self.members[(start + k) % n].0)
            .find(|i| usable(*i))
    }
}

/// `a` carries less load per unit of weight than `b` (cross-multiplied: no division).
fn lighter((load_a, w_a): (usize, usize), (load_b, w_b): (usize, usize)) -> bool {
    load_a.saturating_mul(w_b) < load_b.saturating_mul(w_a)
}

/// nginx's smooth weighted round robin, unrolled into one period: weights 5,1,1 give
/// a a b a c a a rather than a a a a a b c.
fn schedule(members: &[(usize, usize)]) -> Vec<u16> {
    let g = members.iter().fold(0, |g, m| gcd(g, m.1)).max(1);
    let weights: Vec<usize> = members.iter().map(|m| m.1 / g).collect();
    let total: usize = weights.iter().sum();
    let to_u16 = |i: usize| u16::try_from(i).unwrap_or(u16::MAX);
    if total.saturating_mul(members.len()) > SMOOTH_BUILD_LIMIT {
        return members
            .iter()
            .zip(&weights)
            .flat_map(|(m, w)| std::iter::repeat_n(to_u16(m.0), *w))
            .collect();
    }
    let total_i = i64::try_from(total).unwrap_or(i64::MAX);
    let mut current = vec![0i64; members.len()];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        let mut best = 0;
        for (j, w) in weights.iter().enumerate() {
            current[j] += i64::try_from(*w).unwrap_or(0);
            if current[j] > current[best] {
                best = j;
            }
        }
        current[best] -= total_i;
        out.push(to_u16(members[best].0));
    }
    out
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// xorshift64* per thread, seeded from the std hasher's random keys: random-two only
/// needs cheap, well-spread picks, not cryptographic ones.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0u8) | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, u8::try_from(i).unwrap_or(0)], 8000))
    }

    fn tier(weights: &[usize], ketama: bool) -> Tier {
        let m: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (i, addr(i), *w))
            .collect();
        Tier::build(&m, ketama)
    }

    #[test]
    fn smooth_schedule_interleaves() {
        let s = schedule(&[(0, 5), (1, 1), (2, 1)]);
        assert_eq!(s, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(schedule(&[(0, 2), (1, 2)]), [0, 1]);
    }

    #[test]
    fn random_two_follows_weights_within_tolerance() {
        let t = tier(&[3, 1], false);
        let mut seen = [0usize; 2];
        for _ in 0..20_000 {
            let i = t.random_two(&|_| true, &|_| 0).unwrap_or(9);
            seen[i] += 1;
        }
        // With nothing in flight every pick is a tie, so the first weighted sample wins:
        // 3:1 means 75% ± a few.
        let share = seen[0] as f64 / 20_000.0;
        assert!((0.72..0.78).contains(&share), "{seen:?}");
    }

    #[test]
    fn random_two_and_least_conn_prefer_the_idle_server() {
        let t = tier(&[1, 1], false);
        let load = |i: usize| if i == 0 { 5 } else { 0 };
        for _ in 0..100 {
            assert_eq!(t.least_conn(&|_| true, &load), Some(1));
        }
        let idle = (0..1000)
            .filter(|_| t.random_two(&|_| true, &load) == Some(1))
            .count();
        // Server 0 wins only when both samples land on it (1 in 4).
        assert!(idle > 650, "{idle}");
    }

    #[test]
    fn ketama_moves_about_one_nth_of_keys_when_a_server_is_added() {
        let before = tier(&[1, 1, 1, 1], true);
        let after = tier(&[1, 1, 1, 1, 1], true);
        let keys: Vec<String> = (0..20_000).map(|k| format!("session-{k}")).collect();
        let mut moved = 0;
        let mut share: HashMap<usize, usize> = HashMap::new();
        for k in &keys {
            let a = before.ketama(k.as_bytes(), &|_| true);
            let b = after.ketama(k.as_bytes(), &|_| true);
            if a != b {
                moved += 1;
                assert_eq!(b, Some(4), "a moved key goes to the new server");
            }
            *share.entry(b.unwrap_or(9)).or_default() += 1;
        }
        let frac = moved as f64 / keys.len() as f64;
        assert!((0.12..0.28).contains(&frac), "moved {frac}");
        for (server, n) in share {
            let s = n as f64 / keys.len() as f64;
            assert!((0.12..0.28).contains(&s), "server {server} has {s}");
        }
    }

    #[test]
    fn ketama_weights_shape_the_ring_within_tolerance() {
        let t = tier(&[3, 1], true);
        let heavy = (0..20_000)
            .filter(|k| t.ketama(format!("k{k}").as_bytes(), &|_| true) == Some(0))
            .count();
        let share = heavy as f64 / 20_000.0;
        assert!((0.68..0.82).contains(&share), "{share}");
    }

    #[test]
    fn unusable_servers_are_skipped() {
        let t = tier(&[1, 1, 1], true);
        for k in 0..100 {
            let key = format!("k{k}");
            assert_ne!(t.ketama(key.as_bytes(), &|i| i != 1), Some(1));
            assert_ne!(t.round_robin(&|i| i != 1), Some(1));
        }
        assert_eq!(t.round_robin(&|_| false), None);
        assert_eq!(t.least_conn(&|_| false, &|_| 0), None);
    }
}
