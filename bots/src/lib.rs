//! The sync bots: workers that move contact changes between Onebook and
//! online services (Google, Highrise) through RabbitMQ.
//!
//! The process runs two loops: the outbox relay (every shard's committed
//! change events → the RabbitMQ topic exchange, with publisher confirms) and
//! a consumer of a durable queue bound to that exchange, with manual acks.
//! Both reconnect with back-off when the broker goes away. The per-service
//! sync logic (Google, Highrise) arrives with the bots issue.

pub mod config;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use config::BotsConfig;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use onebook_domain::events::{declare_exchange, RelayStatus};
use onebook_domain::Domain;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

pub const QUEUE: &str = "bots.contact-changes";

#[derive(Debug, Error)]
pub enum BotsError {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
}

#[derive(Default)]
pub struct BotsStatus {
    pub amqp_connected: AtomicBool,
    pub events_seen: AtomicU64,
}

pub struct Bots {
    pub config: BotsConfig,
    pub domain: Arc<Domain>,
    pub status: Arc<BotsStatus>,
}

impl Bots {
    /// Consumes change events forever, reconnecting after broker outages.
    pub async fn run_consumer(&self) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.consume_once().await {
                Ok(()) => delay = Duration::from_millis(200),
                Err(e) => tracing::warn!(error = %e, "AMQP connection lost; reconnecting"),
            }
            self.status.amqp_connected.store(false, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn consume_once(&self) -> Result<(), BotsError> {
        let events = &self.config.events;
        let connection =
            Connection::connect(&events.amqp_url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        declare_exchange(&channel, &events.exchange).await?;
        channel
            .queue_declare(
                QUEUE.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                QUEUE.into(),
                events.exchange.as_str().into(),
                "contact.*".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut consumer = channel
            .basic_consume(
                QUEUE.into(),
                self.config.server.instance.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.status.amqp_connected.store(true, Ordering::Relaxed);
        tracing::info!(queue = QUEUE, "consuming change events");
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery?;
            self.status.events_seen.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(routing_key = %delivery.routing_key, bytes = delivery.data.len(), "change event");
            delivery.ack(BasicAckOptions::default()).await?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct HealthState {
    domain: Arc<Domain>,
    status: Arc<BotsStatus>,
    relay: Arc<RelayStatus>,
}

/// `/healthz` of the bots: the broker connections and the shards.
pub fn health_router(
    domain: Arc<Domain>,
    status: Arc<BotsStatus>,
    relay: Arc<RelayStatus>,
) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(HealthState {
            domain,
            status,
            relay,
        })
}

async fn healthz(State(state): State<HealthState>) -> impl IntoResponse {
    let report = state.domain.health().await;
    let amqp = state.status.amqp_connected.load(Ordering::Relaxed);
    let relay = state.relay.connected.load(Ordering::Relaxed);
    let shards_up = report.shards.iter().all(|s| s.up);
    let healthy = amqp && relay && shards_up;
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "amqp": { "up": amqp },
        "relay": {
            "up": relay,
            "published": state.relay.published.load(Ordering::Relaxed),
            "failures": state.relay.failures.load(Ordering::Relaxed),
        },
        "events_seen": state.status.events_seen.load(Ordering::Relaxed),
        "shards": report.shards,
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
