//! The Onebook web app: the JSON API under `/api/v1` and the web UI, both on
//! the shared domain layer.

pub mod api;
pub mod config;
pub mod error;
pub mod ui;

mod auth;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use onebook_domain::Domain;
use onebook_service::{
    plumbing_routes, refuse_oversized_bodies, track_metrics, HttpMetrics, Plumbing,
};
use std::sync::Arc;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub domain: Arc<Domain>,
    /// Whether cookies get the `Secure` attribute (on behind the HTTPS edge).
    pub secure_cookies: bool,
    /// Seals linked-account secrets; `None` when `[links]` sets no key, and
    /// then accounts cannot be linked.
    pub link_key: Option<Arc<onebook_domain::links::LinkKey>>,
}

pub fn router(
    state: AppState,
    metrics: HttpMetrics,
    instance: &str,
    max_body_bytes: usize,
) -> Router {
    let plumbing = Plumbing {
        domain: state.domain.clone(),
        metrics: metrics.clone(),
        instance: instance.to_string(),
    };
    Router::new()
        .nest("/api/v1", api::routes())
        .merge(ui::routes())
        .with_state(state)
        .merge(plumbing_routes(plumbing))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            max_body_bytes,
            refuse_oversized_bodies,
        ))
        .layer(axum::middleware::from_fn_with_state(metrics, track_metrics))
}
