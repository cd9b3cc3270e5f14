//! Settings of the data tier, shared by every component's config file.
//!
//! Each binary embeds these sections in its own TOML file; [`load_toml`]
//! reports syntax and type errors with the file, the line and the key.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// toml's message already carries the line, column and the offending key.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

/// Reads and deserializes one TOML file; unknown keys are errors because a
/// typo in an ops config must not be silently ignored.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, SettingsError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        file: file.clone(),
        source,
    })?;
    parse_toml(&file, &text)
}

pub fn parse_toml<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, SettingsError> {
    toml::from_str(text).map_err(|e| SettingsError::Parse {
        file: file.to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// `[database]`: the shards, each a pgpool-II endpoint in front of two nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub shards: Vec<ShardSettings>,
    /// Connections per shard and process. pgpool's `num_init_children` caps
    /// the clients of a shard (32 in the dev stack): instances × pool_size
    /// must stay under it, or connects queue silently inside pgpool.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How new users are placed on shards.
    #[serde(default)]
    pub placement: Placement,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSettings {
    pub name: String,
    pub url: String,
    /// Share of new users under `placement = "weighted"`; 0 closes the shard
    /// to new users while it keeps serving its existing ones.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// The shard with the fewest users among those with weight > 0.
    #[default]
    LeastLoaded,
    /// Spread by weight, deterministically from the new user's id.
    Weighted,
}

/// `[cache]`: this instance's own memcached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// `host:port`; absent means no cache (every read goes to PostgreSQL).
    pub memcached: Option<String>,
    /// Upper bound on how long an entry lives. Correctness never depends on
    /// it (keys carry the data version); it only bounds memory churn.
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u32,
    #[serde(default = "default_cache_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            memcached: None,
            ttl_seconds: default_ttl(),
            timeout_ms: default_cache_timeout_ms(),
        }
    }
}

/// `[events]`: RabbitMQ, where contact changes are published for the bots.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSettings {
    pub amqp_url: String,
    #[serde(default = "default_exchange")]
    pub exchange: String,
}

fn default_pool_size() -> u32 {
    6
}
fn default_connect_timeout_ms() -> u64 {
    3000
}
fn default_weight() -> u32 {
    1
}
fn default_ttl() -> u32 {
    24 * 3600
}
fn default_cache_timeout_ms() -> u64 {
    200
}
pub fn default_exchange() -> String {
    "onebook.changes".to_string()
}

impl DatabaseSettings {
    /// Cross-field checks serde cannot express. `file` only labels errors.
    pub fn validate(&self, file: &str) -> Result<(), SettingsError> {
        let invalid = |key: &str, reason: &str| SettingsError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            reason: reason.to_string(),
        };
        if self.shards.is_empty() {
            return Err(invalid("database.shards", "at least one shard is required"));
        }
        if self.pool_size == 0 {
            return Err(invalid("database.pool_size", "must be at least 1"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, shard) in self.shards.iter().enumerate() {
            if !names.insert(shard.name.as_str()) {
                return Err(invalid(
                    &format!("database.shards[{i}].name"),
                    &format!("duplicate shard name {:?}", shard.name),
                ));
            }
            if shard.url.parse::<tokio_postgres::Config>().is_err() {
                return Err(invalid(
                    &format!("database.shards[{i}].url"),
                    "not a valid postgres:// URL",
                ));
            }
        }
        if self.shards.iter().all(|s| s.weight == 0) {
            return Err(invalid(
                "database.shards.weight",
                "every shard has weight 0: new users could not be placed",
            ));
        }
        Ok(())
    }
}

impl CacheSettings {
    pub fn validate(&self, file: &str) -> Result<(), SettingsError> {
        if let Some(addr) = &self.memcached {
            if !addr.contains(':') {
                return Err(SettingsError::Invalid {
                    file: file.to_string(),
                    key: "cache.memcached".to_string(),
                    reason: format!("{addr:?} is not host:port"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct File {
        database: DatabaseSettings,
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let text = "[database]\nshards = []\npool_sise = 3\n";
        let err = parse_toml::<File>("x.toml", text).unwrap_err().to_string();
        assert!(err.contains("x.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("pool_sise"), "{err}");
    }

    #[test]
    fn duplicate_shard_names_are_rejected() {
        let text = r#"
[database]
shards = [{ name = "a", url = "postgres://u@127.0.0.1:1/db" },
          { name = "a", url = "postgres://u@127.0.0.1:2/db" }]
"#;
        let file: File = parse_toml("x.toml", text).unwrap();
        let err = file.database.validate("x.toml").unwrap_err().to_string();
        assert!(err.contains("database.shards[1].name"), "{err}");
    }

    #[test]
    fn all_zero_weights_are_rejected() {
        let text = r#"
[database]
shards = [{ name = "a", url = "postgres://u@127.0.0.1:1/db", weight = 0 }]
"#;
        let file: File = parse_toml("x.toml", text).unwrap();
        assert!(file.database.validate("x.toml").is_err());
    }
}
