//! The Onebook SyncML server: phones and desktop clients sync their
//! contacts over SyncML 1.1/1.2 (XML and WBXML) on `POST /sync`.
//!
//! `POST /sync` runs one message of a session ([`session::Engine`]); the
//! session state lives in PostgreSQL, so consecutive messages may land on
//! different instances behind the edge. Replies are always HTTP 200 with a
//! SyncML body in the request's encoding, authentication failures included
//! (SyncML 401/407 + Chal): phones treat any other HTTP status as a transport
//! failure and would never see the challenge. Only undecodable requests get
//! an HTTP error (400, 415; 413 from the body limit), as there is no SyncHdr
//! to answer.

pub mod auth;
pub mod codec;
pub mod config;
pub mod devinf;
pub mod merge;
pub mod message;
pub mod session;
pub mod store;
mod sync;
pub mod tree;
pub mod wbxml;
pub mod xml;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use codec::CodecError;
use onebook_domain::Domain;
use onebook_service::{
    plumbing_routes, read_bounded_body, track_metrics, BodyError, HttpMetrics, Plumbing,
};
use session::{Engine, SessionError};
use std::sync::Arc;

pub fn router(
    domain: Arc<Domain>,
    metrics: HttpMetrics,
    instance: &str,
    max_body_bytes: usize,
) -> Router {
    let engine = Arc::new(Engine {
        domain: domain.clone(),
        max_body_bytes,
    });
    let plumbing = Plumbing {
        domain,
        metrics: metrics.clone(),
        instance: instance.to_string(),
    };
    Router::new()
        .route("/sync", post(sync).with_state(engine))
        .merge(plumbing_routes(plumbing))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(metrics, track_metrics))
}

/// The `sessionid` of our RespURI, if the client used it.
fn session_param(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("sessionid="))
        .filter(|v| !v.is_empty())
}

async fn sync(
    State(engine): State<Arc<Engine>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_bounded_body(&headers, body, engine.max_body_bytes).await {
        Ok(body) => body,
        Err(BodyError::TooLarge { .. }) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a SyncML message may have at most {} bytes\n",
                    engine.max_body_bytes
                ),
            )
                .into_response()
        }
        Err(BodyError::Read(e)) => {
            tracing::info!(error = %e, "reading a SyncML request failed");
            return (StatusCode::BAD_REQUEST, "incomplete request body\n").into_response();
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match engine
        .handle(content_type, session_param(query.as_deref()), &body)
        .await
    {
        Ok(reply) => (
            [(header::CONTENT_TYPE, reply.encoding.content_type())],
            reply.body,
        )
            .into_response(),
        Err(SessionError::Codec(CodecError::UnsupportedContentType(ct))) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected application/vnd.syncml+xml or +wbxml, got {ct:?}\n"),
        )
            .into_response(),
        Err(SessionError::Codec(e)) => {
            tracing::info!(error = %e, "undecodable SyncML message");
            (StatusCode::BAD_REQUEST, format!("malformed SyncML: {e}\n")).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "SyncML session failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the sync service is temporarily unavailable\n",
            )
                .into_response()
        }
    }
}
