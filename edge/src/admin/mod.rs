//! The admin API, a separate Pingora service bound to loopback by default:
//! `GET /healthz`, `GET /metrics`, `GET /status`, `POST /reload`, and per-server
//! `POST /pools/{pool}/servers/{addr}/drain|enable`, `PUT /pools/{pool}/servers/{addr}/weight`.
//! With `admin.token` set, everything but `/healthz` needs `Authorization: Bearer TOKEN`.

pub mod metrics;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::balance::PoolRuntime;
use crate::state::EdgeState;

pub struct AdminApp {
    pub state: Arc<EdgeState>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        if path != "/healthz" && !self.authorized(session) {
            let mut resp = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
        if let Some(rest) = path.strip_prefix("/pools/") {
            return self.server_action(session, &method, rest).await;
        }
        match (method, path.as_str()) {
            (Method::GET | Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (Method::GET | Method::HEAD, "/metrics") => match self.metrics() {
                Ok(body) => reply(StatusCode::OK, "text/plain; version=0.0.4", body),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            },
            (Method::GET | Method::HEAD, "/status") => self.status(),
            (Method::POST, "/reload") => self.reload().await,
            (_, "/healthz" | "/metrics" | "/status" | "/reload") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

impl AdminApp {
    fn authorized(&self, session: &ServerSession) -> bool {
        let config = self.state.config.load();
        let Some(token) = &config.admin.token else {
            return true;
        };
        session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|given| constant_time_eq(given.trim_ascii(), token.as_bytes()))
    }

    /// `POST {pool}/servers/{addr}/drain|enable`, `PUT {pool}/servers/{addr}/weight`.
    /// Drain and enable outlive reloads; a weight lasts until the next reload.
    async fn server_action(
        &self,
        session: &mut ServerSession,
        method: &Method,
        rest: &str,
    ) -> Response<Vec<u8>> {
        let parts: Vec<&str> = rest.split('/').collect();
        let [pool_name, "servers", addr, action] = parts.as_slice() else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        let table = self.state.table.load_full();
        let Some(pool) = table.pools.iter().find(|p| p.name() == *pool_name) else {
            return text(StatusCode::NOT_FOUND, &format!("no pool `{pool_name}`\n"));
        };
        let index = addr
            .parse()
            .ok()
            .and_then(|a: std::net::SocketAddr| pool.server_index(a));
        let Some(index) = index else {
            return text(
                StatusCode::NOT_FOUND,
                &format!("pool `{pool_name}` has no server `{addr}`\n"),
            );
        };
        let Some(server) = pool.servers.get(index) else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        match (method, *action) {
            (&Method::POST, "drain" | "enable") => {
                let drained = *action == "drain";
                server.state.set_drained(drained);
                tracing::info!(pool = %pool_name, server = %server.label, drained, "server drain state changed");
            }
            (&Method::PUT, "weight") => {
                let body = match read_small_body(session).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let Some(weight) = parse_weight(&body) else {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "body must be a weight 1-{MAX_WEIGHT}, as `3` or {{\"weight\": 3}}\n"
                        ),
                    );
                };
                pool.set_weight(index, weight);
                tracing::info!(pool = %pool_name, server = %server.label, weight, "server weight changed");
            }
            (_, "drain" | "enable" | "weight") => {
                return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => return text(StatusCode::NOT_FOUND, "not found\n"),
        }
        json_reply(StatusCode::OK, &server_json(pool, index))
    }

    fn metrics(&self) -> crate::Result<Vec<u8>> {
        let table = self.state.table.load();
        self.state.metrics.refresh_upstreams(&table.pools);
        self.state.metrics.render()
    }

    fn status(&self) -> Response<Vec<u8>> {
        let table = self.state.table.load();
        let config = self.state.config.load();
        let pools: Vec<_> = table
            .pools
            .iter()
            .map(|p| {
                let servers: Vec<_> = (0..p.servers.len()).map(|i| server_json(p, i)).collect();
                json!({ "name": p.name(), "algorithm": p.algorithm_name(), "protocol": p.protocol_name(), "servers": servers })
            })
            .collect();
        let routes: Vec<_> = table
            .routes
            .iter()
            .map(|r| {
                json!({
                    "name": r.route.name,
                    "host": r.route.host.as_ref().map(|h| h.to_string()),
                    "path_prefix": r.route.path_prefix,
                    "pool": r.route.pool,
                    "redirect_https": r.route.redirect_https,
                })
            })
            .collect();
        let listeners: Vec<_> = config
            .listeners
            .iter()
            .map(|l| json!({ "name": l.name, "address": l.address.to_string(), "tls": l.tls.is_some(), "h2": l.h2 }))
            .collect();
        let body = json!({
            "config": config.path.display().to_string(),
            "generation": table.generation,
            "uptime_seconds": self.state.started.elapsed().as_secs(),
            "listeners": listeners,
            "routes": routes,
            "pools": pools,
        });
        json_reply(StatusCode::OK, &body)
    }

    async fn reload(&self) -> Response<Vec<u8>> {
        let state = self.state.clone();
        // Reading files and parsing certificates is blocking work.
        match tokio::task::spawn_blocking(move || state.reload()).await {
            Ok(Ok(o)) => json_reply(
                StatusCode::OK,
                &json!({ "generation": o.generation, "warnings": o.warnings }),
            ),
            Ok(Err(e)) => json_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({ "error": e.to_string(), "generation": self.state.table.load().generation }),
            ),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reload task failed: {e}\n"),
            ),
        }
    }
}

/// Same bound as the config file's `weight`.
const MAX_WEIGHT: usize = 1000;
/// A weight body is a few bytes; anything longer is a mistake.
const MAX_ADMIN_BODY: usize = 256;

fn server_json(pool: &PoolRuntime, i: usize) -> serde_json::Value {
    let Some(s) = pool.servers.get(i) else {
        return serde_json::Value::Null;
    };
    json!({
        "address": s.label,
        "weight": pool.weight(i),
        "configured_weight": pool.config.servers.get(i).map_or(1, |u| u.weight),
        "backup": s.backup,
        "in_flight": s.state.in_flight(),
        "drained": s.state.is_drained(),
        "healthy": pool.is_ready(i),
        "ejected": pool.is_ejected(i),
    })
}

async fn read_small_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_ADMIN_BODY {
                    return Err(text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"));
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read body: {e}\n"),
                ))
            }
        }
    }
}

/// `3` or `{"weight": 3}`.
fn parse_weight(body: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let w = match text.parse::<usize>() {
        Ok(w) => w,
        Err(_) => {
            let v: serde_json::Value = serde_json::from_str(text).ok()?;
            usize::try_from(v.get("weight")?.as_u64()?).ok()?
        }
    };
    (1..=MAX_WEIGHT).contains(&w).then_some(w)
}

/// Token comparison whose time does not depend on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_reply(status: StatusCode, body: &serde_json::Value) -> Response<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    bytes.push(b'\n');
    reply(status, "application/json", bytes)
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_and_tokens() {
        assert_eq!(parse_weight(b" 3\n"), Some(3));
        assert_eq!(parse_weight(br#"{"weight": 7}"#), Some(7));
        assert_eq!(parse_weight(b"0"), None);
        assert_eq!(parse_weight(b"1001"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
