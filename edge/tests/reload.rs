//! Reloading: the `edge reload` command, and reloads under a steady request load.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;

async fn edge_cmd(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_edge(&args)
    })
    .await
    .expect("edge command")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_reload_command_reports_applied_and_refused_configs() {
    let w = upstream("web").await;
    let mut setup = Setup::new("reload-cmd");
    let admin = format!("127.0.0.1:{}", setup.ports.admin);
    setup.config = setup
        .config
        .replace("[admin]\n", "[admin]\ntoken = \"s3cret\"\n");
    setup.route("pool = \"web\"").pool("web", &[w]);
    let edge = setup.start();
    let cfg = setup.config.clone();
    let config = edge.config.to_str().expect("utf-8").to_owned();
    let args = |extra: &[&str]| -> Vec<String> {
        ["reload"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };

    // A valid change is applied: exit 0 and the new generation.
    std::fs::write(
        &edge.config,
        cfg.replace("[[route]]\n", "[[route]]\nname = \"renamed\"\n"),
    )
    .expect("write");
    let out = edge_cmd(args(&["--admin", &admin, "--token", "s3cret"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("reloaded: configuration generation 2"),
        "{stdout}"
    );
    let status = admin_status(&edge, Some("s3cret")).await;
    assert_eq!(status["routes"][0]["name"], "renamed");

    // An invalid file is refused: non-zero exit, the error names file, line and key,
    // and the edge keeps serving the previous configuration.
    let bad = cfg.replace("connect_timeout = \"500ms\"", "connect_timeout = \"500\"");
    std::fs::write(&edge.config, &bad).expect("write");
    let line = bad
        .lines()
        .position(|l| l.starts_with("connect_timeout"))
        .expect("line")
        + 1;
    let out = edge_cmd(args(&["--admin", &admin, "--token", "s3cret"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "reload refused: {config}:{line}: pool.web.connect_timeout"
        )),
        "{stderr}"
    );
    let echo = get_echo(&edge.client(), &edge.https_url("/")).await;
    assert_eq!(server_of(&echo.body), "web");
    assert_eq!(admin_status(&edge, Some("s3cret")).await["generation"], 2);

    // Wrong token: refused by the admin API.
    std::fs::write(&edge.config, &cfg).expect("write");
    let out = edge_cmd(args(&["--admin", &admin, "--token", "wrong"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));

    // `-c FILE` finds the admin address and token in the file.
    let out = edge_cmd(args(&["-c", &config])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("generation 3"));

    // Nothing listening: a clear error, non-zero exit.
    let out = edge_cmd(args(&["--admin", &format!("127.0.0.1:{}", free_port())])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the edge admin API"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_steady_load_lose_no_request_and_keep_health_state() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut setup = Setup::new("reload-steady");
    let base = setup.config.clone();
    let pool_with = |weight_a: u32| {
        format!(
            "\n[pool.web]\nservers = [{{ address = \"{a}\", weight = {weight_a} }}, {{ address = \"{b}\" }}, {{ address = \"{dead}\" }}]\nconnect_timeout = \"500ms\"\nhealth_check = {{ interval = \"200ms\" }}\n"
        )
    };
    // Two valid configurations: weights differ, and the second adds a route.
    let config_a = format!(
        "{base}\n[[route]]\nname = \"all\"\npool = \"web\"\n{}",
        pool_with(1)
    );
    let config_b = format!(
        "{base}\n[[route]]\nname = \"all\"\npool = \"web\"\n\n[[route]]\nname = \"extra\"\npath_prefix = \"/extra\"\npool = \"web\"\nresponse_headers.add = {{ \"X-Route\" = \"extra\" }}\n{}",
        pool_with(3)
    );
    setup.config = config_a.clone();
    let edge = setup.start();
    let client = edge.client();
    wait_for("the dead server marked down", || async {
        status_server(&admin_status(&edge, None).await, "web", dead)["healthy"] == false
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut loops = Vec::new();
    for i in 0..4 {
        // Two loops over HTTP/2 (TLS), two over HTTP/1.1 keep-alive.
        let url = if i % 2 == 0 {
            edge.https_url("/extra/x")
        } else {
            edge.http_url("/extra/x")
        };
        let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed
                        .lock()
                        .expect("lock")
                        .push(format!("{url}: {}", r.status())),
                    Err(e) => failed.lock().expect("lock").push(format!("{url}: {e:?}")),
                }
            }
        }));
    }

    const RELOADS: u64 = 30;
    for n in 0..RELOADS {
        let next = if n % 2 == 0 { &config_b } else { &config_a };
        let (code, body) = edge.reload_with(next).await;
        assert_eq!(code, 200, "{body}");
        let status = admin_status(&edge, None).await;
        assert_eq!(status["generation"], n + 2);
        assert_eq!(
            status["routes"].as_array().map(Vec::len),
            Some(if n % 2 == 0 { 2 } else { 1 })
        );
        assert_eq!(
            status_server(&status, "web", a)["weight"],
            if n % 2 == 0 { 3 } else { 1 }
        );
        // Unchanged servers keep their health: the dead one is still out.
        assert_eq!(
            status_server(&status, "web", dead)["healthy"],
            false,
            "reload {n} reset health: {status}"
        );
        // Let some requests run on this generation.
        let seen = ok.load(Ordering::Relaxed);
        wait_for("requests between reloads", || {
            let ok = ok.clone();
            async move { ok.load(Ordering::Relaxed) >= seen + 8 }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.expect("loop");
    }
    let failed = failed.lock().expect("lock").clone();
    let total = ok.load(Ordering::Relaxed);
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        total + failed.len()
    );
    assert!(total >= 8 * RELOADS as usize, "only {total} requests");

    // The dead server never took a request: its health never reset to "up".
    let metrics = edge.metrics().await;
    let connect_errors = metric_value(
        &metrics,
        &format!("edge_upstream_errors_total{{kind=\"connect\",pool=\"web\",server=\"{dead}\"}}"),
    );
    assert_eq!(connect_errors, 0.0, "{metrics}");
    // The last config (A) has no `extra` route: its header rule is gone too.
    let echo = get_echo(&client, &edge.https_url("/extra/x")).await;
    assert!(echo.headers.get("x-route").is_none());
    let (code, body) = edge.reload_with(&config_b).await;
    assert_eq!(code, 200, "{body}");
    let echo = get_echo(&client, &edge.https_url("/extra/x")).await;
    assert_eq!(
        echo.headers.get("x-route").and_then(|v| v.to_str().ok()),
        Some("extra")
    );
}
