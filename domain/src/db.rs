//! Connection pools per shard and the retry discipline pgpool-II demands.
//!
//! pgpool in native replication mode runs every write on both nodes of a
//! shard, main node first. Two things follow (docs/datatier.md): writes run in
//! READ COMMITTED, because each node takes a REPEATABLE READ snapshot at a
//! different moment and the nodes then disagree (pgpool detaches one); and
//! every failover or failback makes pgpool restart its children, which drops
//! every client connection, so a statement can fail with a closed connection
//! and must be retried on a fresh one. Deadlocks (40P01) and serialization
//! failures (40001) are retried too.
//! Writes are made idempotent by their callers (client-generated UUIDs and
//! `ON CONFLICT`), so a retry after an unknown outcome is safe.

use crate::error::DomainError;
use crate::settings::DatabaseSettings;
use crate::shard::ShardId;
use bb8::{Pool, PooledConnection, RunError};
use bb8_postgres::PostgresConnectionManager;
use futures::future::BoxFuture;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, IsolationLevel, NoTls, Transaction};

type Manager = PostgresConnectionManager<NoTls>;

/// How many times one operation is attempted before its error is returned.
/// Failover takes about 0.35 s from a node's death to a writable shard.
const MAX_ATTEMPTS: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(40);
const MAX_BACKOFF: Duration = Duration::from_millis(640);

pub struct Shard {
    pub id: ShardId,
    pub name: String,
    pub weight: u32,
    pool: Pool<Manager>,
}

pub struct ShardPools {
    shards: Vec<Shard>,
}

impl ShardPools {
    /// Builds the pools without connecting: a shard that is down at start-up
    /// must not keep the process from serving users on the other shards.
    pub fn new(settings: &DatabaseSettings) -> Result<Self, DomainError> {
        let mut shards = Vec::with_capacity(settings.shards.len());
        for (index, shard) in settings.shards.iter().enumerate() {
            let mut config: tokio_postgres::Config =
                shard
                    .url
                    .parse()
                    .map_err(|e: tokio_postgres::Error| DomainError::Unavailable {
                        shard: shard.name.clone(),
                        reason: format!("bad URL: {e}"),
                    })?;
            config.connect_timeout(Duration::from_millis(settings.connect_timeout_ms));
            config.application_name("onebook");
            let pool = Pool::builder()
                .max_size(settings.pool_size)
                .min_idle(Some(0))
                // A broken connection shows up as an error that the retry loop
                // handles; testing each checkout would cost a round trip to
                // pgpool on every request.
                .test_on_check_out(false)
                .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
                .idle_timeout(Some(Duration::from_secs(120)))
                .build_unchecked(PostgresConnectionManager::new(config, NoTls));
            shards.push(Shard {
                id: ShardId(index),
                name: shard.name.clone(),
                weight: shard.weight,
                pool,
            });
        }
        Ok(ShardPools { shards })
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    pub fn shard(&self, id: ShardId) -> Result<&Shard, DomainError> {
        self.shards
            .get(id.0)
            .ok_or_else(|| DomainError::Corrupt(format!("shard index {} is not configured", id.0)))
    }

    /// The shard that holds the user directory (the first one configured).
    pub fn directory_shard(&self) -> ShardId {
        ShardId(0)
    }

    /// Runs `op` in a READ COMMITTED transaction on `shard`, retrying the
    /// whole transaction on deadlocks, serialization failures and lost
    /// connections.
    ///
    /// Not REPEATABLE READ: pgpool sends each statement to the main node,
    /// waits, then to the other node, and reads inside a transaction go to
    /// one node only, so the two nodes take their snapshots at different
    /// moments. Seen in our runs: an insert failed its foreign key check on
    /// one node and passed on the other, and an `UPDATE ... WHERE version = $n`
    /// matched on one node only; pgpool then detached a node. Under READ
    /// COMMITTED every statement sees what is committed when it runs, and the
    /// row locks, taken on the main node first, order conflicting writers the
    /// same way on both nodes.
    pub async fn write<T, F>(&self, shard: ShardId, mut op: F) -> Result<T, DomainError>
    where
        T: Send,
        F: for<'t> FnMut(&'t Transaction<'t>) -> BoxFuture<'t, Result<T, DomainError>> + Send,
    {
        let shard = self.shard(shard)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let mut conn = shard.connection().await?;
                let tx = conn
                    .build_transaction()
                    .isolation_level(IsolationLevel::ReadCommitted)
                    .start()
                    .await
                    .map_err(|e| shard.db_error(e))?;
                let value = op(&tx).await?;
                tx.commit().await.map_err(|e| shard.db_error(e))?;
                Ok(value)
            }
            .await;
            match result {
                Err(e) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                    tracing::debug!(shard = %shard.name, attempt, error = %e, "retrying write");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Runs a read-only `op` outside a transaction, retrying on lost connections.
    pub async fn read<T, F>(&self, shard: ShardId, mut op: F) -> Result<T, DomainError>
    where
        T: Send,
        F: for<'c> FnMut(&'c Client) -> BoxFuture<'c, Result<T, DomainError>> + Send,
    {
        let shard = self.shard(shard)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let conn = shard.connection().await?;
                op(&conn).await
            }
            .await;
            match result {
                Err(e) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                    tracing::debug!(shard = %shard.name, attempt, error = %e, "retrying read");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Runs one simple-protocol statement, bypassing the retry loop; for health
    /// checks and pgpool's own commands (`SHOW POOL_NODES` is not available
    /// through the extended protocol).
    pub async fn ping(&self, shard: ShardId) -> Result<(), DomainError> {
        let shard = self.shard(shard)?;
        let conn = shard.connection().await?;
        conn.simple_query("SELECT 1")
            .await
            .map_err(|e| shard.db_error(e))?;
        Ok(())
    }
}

impl Shard {
    async fn connection(&self) -> Result<PooledConnection<'_, Manager>, DomainError> {
        self.pool.get().await.map_err(|e| match e {
            RunError::User(source) => DomainError::Database {
                shard: self.name.clone(),
                source,
            },
            RunError::TimedOut => DomainError::Unavailable {
                shard: self.name.clone(),
                reason: "timed out waiting for a connection".to_string(),
            },
        })
    }

    /// Wraps a driver error with the shard's name, for callers inside `op`.
    pub fn db_error(&self, source: tokio_postgres::Error) -> DomainError {
        DomainError::Database {
            shard: self.name.clone(),
            source,
        }
    }
}

/// Wraps a driver error for code running inside [`ShardPools::write`] or
/// [`ShardPools::read`], where the shard is implied by the retry loop.
pub fn db(source: tokio_postgres::Error) -> DomainError {
    DomainError::Database {
        shard: String::new(),
        source,
    }
}

fn backoff(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(8);
    (FIRST_BACKOFF * factor).min(MAX_BACKOFF)
}

/// Whether an error may go away on a retry with a fresh connection.
pub fn is_transient(error: &DomainError) -> bool {
    match error {
        DomainError::Unavailable { .. } => true,
        DomainError::Database { source, .. } => is_transient_pg(source),
        _ => false,
    }
}

fn is_transient_pg(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.as_db_error() {
        // No server error at all: an I/O failure or a connection reset.
        None => true,
        Some(db) => {
            let code = db.code();
            code == &SqlState::T_R_SERIALIZATION_FAILURE
                || code == &SqlState::T_R_DEADLOCK_DETECTED
                || code == &SqlState::ADMIN_SHUTDOWN
                || code == &SqlState::CRASH_SHUTDOWN
                || code == &SqlState::CANNOT_CONNECT_NOW
                || code.code().starts_with("08")
                // pgpool reports a failover in progress ("failed to create a
                // backend connection") as a FATAL error and drops the session.
                || db.severity() == "FATAL"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(40));
        assert_eq!(backoff(2), Duration::from_millis(80));
        assert_eq!(backoff(5), Duration::from_millis(640));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn logic_errors_are_not_retried() {
        assert!(!is_transient(&DomainError::NotFound));
        assert!(!is_transient(&DomainError::Conflict("x".into())));
        assert!(is_transient(&DomainError::Unavailable {
            shard: "s1".into(),
            reason: "down".into()
        }));
    }
}
