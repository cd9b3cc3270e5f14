//! Schema migrations, applied to every shard through its pgpool.
//!
//! Every shard carries the same schema (the directory table is only used on
//! the first). Each statement is sent on its own: pgpool cannot parse
//! multi-statement strings reliably. Nothing here may use a volatile default
//! (`gen_random_uuid()`, `now()`, `random()`, identity or serial columns):
//! each pgpool node would evaluate it separately and the nodes would drift.

use crate::db::{db, ShardPools};
use crate::error::DomainError;
use chrono::Utc;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub statements: &'static [&'static str],
}

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "users, directory, contacts, change log, outbox",
    statements: &[
        "CREATE TABLE user_directory (
            email text PRIMARY KEY,
            user_id uuid NOT NULL UNIQUE,
            shard integer NOT NULL CHECK (shard >= 0),
            created_at timestamptz NOT NULL
        )",
        "CREATE TABLE users (
            id uuid PRIMARY KEY,
            email text NOT NULL UNIQUE,
            display_name text NOT NULL,
            password_hash text NOT NULL,
            change_seq bigint NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        )",
        "CREATE TABLE sessions (
            token_hash text PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL
        )",
        "CREATE INDEX sessions_user ON sessions (user_id)",
        "CREATE TABLE contacts (
            id uuid PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            display_name text NOT NULL,
            sort_key text NOT NULL,
            search_text text NOT NULL,
            card jsonb NOT NULL,
            version bigint NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            deleted_at timestamptz
        )",
        "CREATE INDEX contacts_user_sort ON contacts (user_id, sort_key, id) WHERE deleted_at IS NULL",
        "CREATE TABLE change_log (
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            seq bigint NOT NULL,
            contact_id uuid NOT NULL,
            op text NOT NULL CHECK (op IN ('create', 'update', 'delete')),
            at timestamptz NOT NULL,
            PRIMARY KEY (user_id, seq)
        )",
        "CREATE TABLE outbox (
            id uuid PRIMARY KEY,
            user_id uuid NOT NULL,
            seq bigint NOT NULL,
            routing_key text NOT NULL,
            payload jsonb NOT NULL,
            created_at timestamptz NOT NULL,
            published_at timestamptz
        )",
        "CREATE INDEX outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL",
    ],
}];

/// Applies the missing migrations to every shard; returns how many
/// (shard, migration) pairs were applied.
pub async fn migrate(pools: &ShardPools) -> Result<usize, DomainError> {
    let mut applied = 0;
    for shard in pools.shards() {
        let shard_id = shard.id;
        pools
            .write(shard_id, |tx| {
                Box::pin(async move {
                    tx.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (
                            version integer PRIMARY KEY,
                            name text NOT NULL,
                            applied_at timestamptz NOT NULL
                        )",
                        &[],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await?;
        for migration in MIGRATIONS {
            let done = pools
                .write(shard_id, move |tx| {
                    Box::pin(async move {
                        let exists = tx
                            .query_opt(
                                "SELECT 1 FROM schema_migrations WHERE version = $1",
                                &[&migration.version],
                            )
                            .await
                            .map_err(db)?
                            .is_some();
                        if exists {
                            return Ok(false);
                        }
                        for statement in migration.statements {
                            tx.execute(*statement, &[]).await.map_err(db)?;
                        }
                        tx.execute(
                            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                            &[&migration.version, &migration.name, &Utc::now()],
                        )
                        .await
                        .map_err(db)?;
                        Ok(true)
                    })
                })
                .await?;
            if done {
                tracing::info!(shard = %shard.name, version = migration.version, name = migration.name, "migration applied");
                applied += 1;
            }
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The replication rules of docs/datatier.md, checked on the schema text.
    #[test]
    fn no_volatile_defaults() {
        for migration in MIGRATIONS {
            for statement in migration.statements {
                let lower = statement.to_lowercase();
                for banned in [
                    "gen_random_uuid",
                    "now()",
                    "random()",
                    "serial",
                    "identity",
                    "clock_timestamp",
                    "current_timestamp",
                ] {
                    assert!(
                        !lower.contains(banned),
                        "migration {} uses {banned}: {statement}",
                        migration.version
                    );
                }
            }
        }
    }

    #[test]
    fn versions_increase() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(versions, sorted);
    }
}
