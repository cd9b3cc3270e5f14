//! The edge's per-request server selection (`PoolRuntime::select_key`) for each
//! algorithm, on pools of 4 and 64 servers built from a config exactly as the
//! edge builds them (no active health checks, no passive health).
//!
//! Servers carry uneven in-flight counts (held leases, 0–4 per server) so
//! least-conn and random-two compare real loads instead of all-zero ties.
//! Ketama hashes a different session key on every call (1,024 keys in turn).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use onebook_edge::admin::metrics::Metrics;
use onebook_edge::balance::state::{Lease, ServerStates};
use onebook_edge::balance::PoolRuntime;
use onebook_edge::config;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const ALGORITHMS: &[(&str, &str)] = &[
    ("round_robin", r#"algorithm = "round_robin""#),
    ("least_conn", r#"algorithm = "least_conn""#),
    ("random_two", r#"algorithm = "random_two""#),
    (
        "ketama",
        "algorithm = \"ketama\"\nhash_key = \"cookie:onebook_session\"",
    ),
];

fn pool(algorithm: &str, servers: usize) -> (Arc<PoolRuntime>, Vec<Lease>) {
    let list: Vec<String> = (0..servers)
        .map(|i| format!("  {{ address = \"127.0.0.1:{}\" }},", 20000 + i))
        .collect();
    let src = format!(
        "[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:8080\"\n\n\
         [[route]]\npool = \"bench\"\n\n\
         [pool.bench]\n{algorithm}\nconnect_retries = 1\nservers = [\n{}\n]\n",
        list.join("\n")
    );
    let cfg = config::parse(&src, Path::new("bench.toml"), Path::new("."))
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    let model = cfg.pool("bench").expect("pool bench");
    let metrics = Metrics::new().expect("metrics registry");
    let runtime =
        PoolRuntime::build(model, &metrics, None, &ServerStates::default()).expect("pool builds");
    let leases = runtime
        .servers
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            (0..(i * 7) % 5)
                .map(|_| s.state.lease())
                .collect::<Vec<_>>()
        })
        .collect();
    (runtime, leases)
}

fn select(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| format!("{:032x}", u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes())
        .collect();
    let mut group = c.benchmark_group("balancer/select");
    for &(name, line) in ALGORITHMS {
        for servers in [4, 64] {
            let (runtime, _leases) = pool(line, servers);
            let mut k = 0usize;
            group.bench_function(BenchmarkId::new(name, servers), |b| {
                b.iter(|| {
                    k = (k + 1) % keys.len();
                    runtime.select_key(black_box(&keys[k]), &[])
                })
            });
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = select
}
criterion_main!(benches);
