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
},
Migration {
    version: 2,
    name: "trigram index for contact search",
    statements: &[
        "CREATE EXTENSION IF NOT EXISTS pg_trgm",
        "CREATE INDEX contacts_search_trgm ON contacts USING gin (search_text gin_trgm_ops) WHERE deleted_at IS NULL",
    ],
},
Migration {
    version: 3,
    name: "login throttling and personal API tokens",
    statements: &[
        // On the directory shard: failed logins by email, for throttling.
        "CREATE TABLE login_failures (
            id uuid PRIMARY KEY,
            email text NOT NULL,
            at timestamptz NOT NULL
        )",
        "CREATE INDEX login_failures_email_at ON login_failures (email, at)",
        "CREATE TABLE api_tokens (
            id uuid PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            name text NOT NULL,
            token_hash text NOT NULL UNIQUE,
            created_at timestamptz NOT NULL
        )",
        "CREATE INDEX api_tokens_user ON api_tokens (user_id)",
    ],
},
Migration {
    version: 4,
    name: "SyncML sessions, device nonces, sync secrets, devices, anchors and maps",
    statements: &[
        // Directory shard: a session must be continuable by any sync-server
        // instance, and it is looked up before the user is known.
        "CREATE TABLE syncml_sessions (
            id text PRIMARY KEY,
            dev_id text NOT NULL,
            client_session_id text NOT NULL,
            state jsonb NOT NULL,
            last_request_sha256 text,
            last_response bytea,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL
        )",
        "CREATE INDEX syncml_sessions_device ON syncml_sessions (dev_id, client_session_id, updated_at)",
        "CREATE INDEX syncml_sessions_expiry ON syncml_sessions (expires_at)",
        // Directory shard: the md5 nonce a device must use next, issued
        // before the device's user is authenticated.
        "CREATE TABLE syncml_nonces (
            dev_id text PRIMARY KEY,
            nonce text NOT NULL,
            updated_at timestamptz NOT NULL
        )",
        // User shard from here on.
        "CREATE TABLE syncml_secrets (
            user_id uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
            user_name text NOT NULL,
            secret text NOT NULL,
            password_fingerprint text NOT NULL,
            updated_at timestamptz NOT NULL
        )",
        "CREATE TABLE syncml_devices (
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            dev_id text NOT NULL,
            devinf bytea,
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (user_id, dev_id)
        )",
        "CREATE TABLE syncml_anchors (
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            dev_id text NOT NULL,
            datastore text NOT NULL,
            client_next text NOT NULL,
            server_next text NOT NULL,
            last_seq bigint NOT NULL,
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (user_id, dev_id, datastore)
        )",
        "CREATE TABLE syncml_maps (
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            dev_id text NOT NULL,
            datastore text NOT NULL,
            luid text NOT NULL,
            contact_id uuid NOT NULL,
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (user_id, dev_id, datastore, luid)
        )",
        "CREATE INDEX syncml_maps_contact ON syncml_maps (user_id, dev_id, datastore, contact_id)",
    ],
},
Migration {
    version: 5,
    name: "duplicate merges, kept for undo",
    statements: &[
        "CREATE TABLE merges (
            id uuid PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            kept_id uuid NOT NULL,
            kept_card jsonb NOT NULL,
            kept_version bigint NOT NULL,
            merged_ids uuid[] NOT NULL,
            created_at timestamptz NOT NULL,
            undone_at timestamptz
        )",
        "CREATE INDEX merges_user ON merges (user_id, created_at)",
    ],
},
Migration {
    version: 6,
    name: "linked accounts for the sync bots",
    statements: &[
        // User shard. The secret (OAuth refresh token, API token) is sealed
        // in Rust (ChaCha20-Poly1305, nonce first); key_id names the key.
        "CREATE TABLE linked_accounts (
            id uuid PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            service text NOT NULL CHECK (service IN ('google', 'highrise')),
            account text NOT NULL,
            secret_sealed bytea NOT NULL,
            key_id text NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            last_sync_status text CHECK (last_sync_status IN ('ok', 'needs_reauth', 'error')),
            last_sync_at timestamptz,
            last_sync_error text,
            UNIQUE (user_id, service, account)
        )",
        "CREATE INDEX linked_accounts_user ON linked_accounts (user_id, created_at)",
    ],
},
Migration {
    version: 7,
    name: "short SyncML GUIDs for devices with a small MaxGUIDSize",
    statements: &[
        // User shard. `n` is allocated per device datastore by the writer
        // (max + 1, read in the same transaction); the GUID is its base 36.
        "CREATE TABLE syncml_guids (
            user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            dev_id text NOT NULL,
            datastore text NOT NULL,
            guid text NOT NULL,
            n bigint NOT NULL,
            contact_id uuid NOT NULL,
            created_at timestamptz NOT NULL,
            PRIMARY KEY (user_id, dev_id, datastore, guid),
            UNIQUE (user_id, dev_id, datastore, contact_id)
        )",
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
