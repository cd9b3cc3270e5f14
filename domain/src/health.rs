//! The data-tier part of every component's `/healthz`.

use crate::Domain;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// "ok" when every shard and the cache answer, else "degraded".
    pub status: &'static str,
    pub shards: Vec<ComponentHealth>,
    pub memcached: ComponentHealth,
}

#[derive(Debug, Serialize)]
pub struct ComponentHealth {
    pub name: String,
    pub up: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Domain {
    /// Asks each shard (`SELECT 1` through its pgpool) and memcached, in
    /// parallel, each bounded by its own timeout.
    pub async fn health(&self) -> HealthReport {
        let shard_checks = self.pools.shards().iter().map(|shard| async move {
            let result =
                tokio::time::timeout(std::time::Duration::from_secs(3), self.pools.ping(shard.id))
                    .await;
            let (up, detail) = match result {
                Ok(Ok(())) => (true, None),
                Ok(Err(e)) => (false, Some(e.to_string())),
                Err(_) => (false, Some("timed out".to_string())),
            };
            ComponentHealth {
                name: shard.name.clone(),
                up,
                detail,
            }
        });
        let (shards, cache) =
            futures::join!(futures::future::join_all(shard_checks), self.cache.ping());
        let memcached = ComponentHealth {
            name: self.cache.address().unwrap_or("none").to_string(),
            up: cache.is_ok(),
            detail: Some(cache.unwrap_or_else(|e| e)),
        };
        let healthy = shards.iter().all(|s| s.up) && memcached.up;
        HealthReport {
            status: if healthy { "ok" } else { "degraded" },
            shards,
            memcached,
        }
    }
}
