//! A minimal upstream for load-testing the edge: `cargo run --release -p onebook-edge
//! --example bench_upstream -- 127.0.0.1:8101 127.0.0.1:8102` answers `ok` on every path.
//!
//! Hand-rolled HTTP/1.1 on one current-thread runtime rather than axum: the upstream
//! shares the load CPU with wrk, and with axum that CPU saturated first (~69k req/s), so
//! every proxy measured the load side instead of itself. Pipelined requests are answered
//! in one write; request bodies (by `Content-Length`) are read and ignored.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n";
const MAX_HEAD: usize = 64 * 1024;

fn main() -> std::io::Result<()> {
    let addrs: Vec<SocketAddr> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if addrs.is_empty() {
        eprintln!("usage: bench_upstream ADDR [ADDR...]");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut listeners = Vec::new();
        for addr in addrs {
            listeners.push(TcpListener::bind(addr).await?);
        }
        let accepting: Vec<_> = listeners
            .into_iter()
            .map(|l| tokio::spawn(accept(l)))
            .collect();
        for task in accepting {
            let _ = task.await;
        }
        Ok(())
    })
}

async fn accept(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream));
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

async fn serve(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(RESPONSE.len() * 8);
    // Body bytes of the current request still to skip.
    let mut skip = 0usize;
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut start = 0;
        loop {
            if skip > 0 {
                let n = skip.min(buf.len() - start);
                skip -= n;
                start += n;
                if skip > 0 {
                    break;
                }
            }
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut slots);
            match req.parse(&buf[start..]) {
                Ok(httparse::Status::Complete(head)) => {
                    skip = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    start += head;
                    out.extend_from_slice(RESPONSE);
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        buf.drain(..start);
        if buf.len() > MAX_HEAD {
            return;
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}
