//! Opens N HTTP/1.1 keep-alive connections to ADDR, completes one `GET /` on each (so every
//! connection is past accept and the proxy holds its per-connection state), then holds them
//! idle for HOLD seconds and exits. Used by `benches/run` for the idle-connection memory test.
//!
//! usage: idle-conns ADDR N HOLD_SECS [READY_FILE]
//! READY_FILE is written (with N) once all N connections are open and answered.
//! Exits 1 if any connection fails, or if opening them takes longer than 120 s.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: idle-conns ADDR N HOLD_SECS [READY_FILE]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR is IP:PORT");
    let n: usize = args[2].parse().expect("N is a count");
    let hold = Duration::from_secs(args[3].parse().expect("HOLD_SECS is a number"));
    let ready = args.get(4);

    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        if Instant::now() > deadline {
            eprintln!("idle-conns: gave up after 120 s with {i} of {n} open");
            std::process::exit(1);
        }
        match open_one(&addr) {
            Ok(s) => conns.push(s),
            Err(e) => {
                eprintln!("idle-conns: connection {i} of {n} to {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
    eprintln!(
        "idle-conns: {n} connections open to {addr} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = ready {
        std::fs::write(path, format!("{n}\n")).expect("write READY_FILE");
    }
    std::thread::sleep(hold);
    drop(conns);
}

fn open_one(addr: &SocketAddr) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: idle-conns\r\n\r\n")?;
    read_response(&mut s)?;
    Ok(s)
}

/// Reads one response with a Content-Length body; anything else than a 200 is an error.
fn read_response(s: &mut TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 2048];
    loop {
        let k = s.read(&mut tmp)?;
        if k == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a full response",
            ));
        }
        buf.extend_from_slice(&tmp[..k]);
        let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if buf.len() > 64 * 1024 {
                return Err(io::Error::other("response head over 64 KiB"));
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            let line = head.lines().next().unwrap_or("").to_string();
            return Err(io::Error::other(format!("status line {line:?}")));
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::other("no content-length in response"))?;
        if buf.len() >= h + 4 + len {
            return Ok(());
        }
    }
}
