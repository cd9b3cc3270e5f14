//! The admin API, a separate Pingora service bound to loopback by default:
//! `GET /healthz`, `GET /metrics`, `GET /status`, `POST /reload`.

pub mod metrics;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::state::EdgeState;

pub struct AdminApp {
    pub state: Arc<EdgeState>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        match (method, path.as_str()) {
            (Method::GET | Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (Method::GET | Method::HEAD, "/metrics") => match self.state.metrics.render() {
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
    fn status(&self) -> Response<Vec<u8>> {
        let table = self.state.table.load();
        let config = self.state.config.load();
        let pools: Vec<_> = table
            .pools
            .iter()
            .map(|p| {
                let servers: Vec<_> = p
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        json!({
                            "address": s.label,
                            "weight": p.config.servers.get(i).map_or(1, |u| u.weight),
                            "healthy": p.is_ready(i),
                            "ejected": p.is_ejected(i),
                        })
                    })
                    .collect();
                json!({ "name": p.name(), "algorithm": p.algorithm_name(), "servers": servers })
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
