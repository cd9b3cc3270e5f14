//! The Onebook SyncML server: phones and desktop clients sync their
//! contacts over SyncML 1.1/1.2 (XML and WBXML) on `POST /sync`.
//!
//! This first cut carries the process, config, health and metrics; the
//! protocol engine arrives with the SyncML issue. Until then `/sync`
//! answers 501 so a client gets a clear error, never a fake success.

pub mod codec;
pub mod config;
pub mod devinf;
pub mod message;
pub mod tree;
pub mod wbxml;
pub mod xml;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use onebook_domain::Domain;
use onebook_service::{plumbing_routes, track_metrics, HttpMetrics, Plumbing};
use std::sync::Arc;

pub fn router(
    domain: Arc<Domain>,
    metrics: HttpMetrics,
    instance: &str,
    max_body_bytes: usize,
) -> Router {
    let plumbing = Plumbing {
        domain,
        metrics: metrics.clone(),
        instance: instance.to_string(),
    };
    Router::new()
        .route("/sync", post(sync))
        .merge(plumbing_routes(plumbing))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(metrics, track_metrics))
}

async fn sync() -> impl IntoResponse {
    (
        StatusCode::NOT_IMPLEMENTED,
        "SyncML sessions are not implemented yet\n",
    )
}
