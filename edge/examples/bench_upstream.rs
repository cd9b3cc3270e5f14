//! A minimal upstream for load-testing the edge: `cargo run --release -p onebook-edge
//! --example bench_upstream -- 127.0.0.1:8101 127.0.0.1:8102` answers `ok` on every path.

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addrs: Vec<SocketAddr> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if addrs.is_empty() {
        eprintln!("usage: bench_upstream ADDR [ADDR...]");
        std::process::exit(2);
    }
    let mut tasks = Vec::new();
    for addr in addrs {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let app = axum::Router::new().fallback(|| async { "ok\n" });
        tasks.push(tokio::spawn(
            async move { axum::serve(listener, app).await },
        ));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
