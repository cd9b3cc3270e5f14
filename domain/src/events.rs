//! Change events: relayed from each shard's `outbox` table to RabbitMQ.
//!
//! A change and its event are written in one transaction (see
//! `contacts.rs`), so an event exists if and only if its change committed.
//! The relay publishes unpublished rows with publisher confirms and marks
//! them published only after the broker has acknowledged them, so a broker
//! outage delays events and loses none. Delivery is at least once: a crash
//! between the ack and the mark republishes a batch, and consumers dedupe on
//! the AMQP `message_id` (the outbox row's id).

use crate::db::db;
use crate::settings::EventsSettings;
use crate::shard::ShardId;
use crate::{Domain, DomainError};
use chrono::Utc;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use uuid::Uuid;

const BATCH: i64 = 200;
const BUSY_POLL: Duration = Duration::from_millis(50);
const IDLE_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum RelayError {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused (nacked) event {0}")]
    Nacked(Uuid),
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// What the relay has done, for health checks and metrics.
#[derive(Debug, Default)]
pub struct RelayStatus {
    pub connected: AtomicBool,
    pub published: AtomicU64,
    pub failures: AtomicU64,
}

struct OutboxRow {
    id: Uuid,
    routing_key: String,
    payload: Vec<u8>,
}

pub struct OutboxRelay {
    domain: Arc<Domain>,
    settings: EventsSettings,
    pub status: Arc<RelayStatus>,
}

impl OutboxRelay {
    pub fn new(domain: Arc<Domain>, settings: EventsSettings) -> Self {
        OutboxRelay {
            domain,
            settings,
            status: Arc::new(RelayStatus::default()),
        }
    }

    /// Relays forever, reconnecting with back-off after broker or database
    /// failures.
    pub async fn run(&self) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.relay_until_error().await {
                Ok(()) => {}
                Err(e) => {
                    self.status.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "outbox relay interrupted; retrying");
                }
            }
            self.status.connected.store(false, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn relay_until_error(&self) -> Result<(), RelayError> {
        let connection =
            Connection::connect(&self.settings.amqp_url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        declare_exchange(&channel, &self.settings.exchange).await?;
        self.status.connected.store(true, Ordering::Relaxed);
        tracing::info!(exchange = %self.settings.exchange, "outbox relay connected");
        loop {
            let mut moved = 0;
            for shard in self.domain.pools.shards() {
                moved += self.relay_batch(&channel, shard.id).await?;
            }
            let pause = if moved > 0 { BUSY_POLL } else { IDLE_POLL };
            tokio::time::sleep(pause).await;
        }
    }

    /// Publishes one batch of a shard's unpublished events; returns how many.
    async fn relay_batch(&self, channel: &Channel, shard: ShardId) -> Result<usize, RelayError> {
        let rows = self
            .domain
            .pools
            .read(shard, |client| {
                Box::pin(async move {
                    let rows = client
                        .query(
                            "SELECT id, routing_key, payload::text FROM outbox \
                             WHERE published_at IS NULL ORDER BY created_at, seq LIMIT $1",
                            &[&BATCH],
                        )
                        .await
                        .map_err(db)?;
                    Ok(rows
                        .iter()
                        .map(|r| OutboxRow {
                            id: r.get(0),
                            routing_key: r.get(1),
                            payload: r.get::<_, String>(2).into_bytes(),
                        })
                        .collect::<Vec<_>>())
                })
            })
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Publish the whole batch, then wait for all confirms: one round
        // trip per batch instead of one per event.
        let mut confirms = Vec::with_capacity(rows.len());
        for row in &rows {
            let properties = BasicProperties::default()
                .with_message_id(row.id.to_string().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2);
            let confirm = channel
                .basic_publish(
                    self.settings.exchange.as_str().into(),
                    row.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &row.payload,
                    properties,
                )
                .await?;
            confirms.push((row.id, confirm));
        }
        let mut acked = Vec::with_capacity(confirms.len());
        for (id, confirm) in confirms {
            if confirm.await?.is_nack() {
                return Err(RelayError::Nacked(id));
            }
            acked.push(id);
        }
        let count = acked.len();
        let now = Utc::now();
        self.domain
            .pools
            .write(shard, move |tx| {
                let acked = acked.clone();
                Box::pin(async move {
                    tx.execute(
                        "UPDATE outbox SET published_at = $1 WHERE id = ANY($2) AND published_at IS NULL",
                        &[&now, &acked],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await?;
        self.status
            .published
            .fetch_add(count as u64, Ordering::Relaxed);
        Ok(count)
    }
}

/// The change exchange: durable topic, routing keys `contact.<op>`.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}
