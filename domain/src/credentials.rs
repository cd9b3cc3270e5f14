//! Credentials beyond the session: login throttling, password changes and
//! personal API tokens for scripts.
//!
//! Throttling state lives in PostgreSQL (the directory shard), not in one
//! instance's memory: behind the edge, consecutive attempts land on
//! different instances.

use crate::accounts::{hash_password, normalize_email, verify_password, Credential, Viewer};
use crate::db::db;
use crate::error::DomainError;
use crate::Domain;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Failed logins allowed per email within [`THROTTLE_WINDOW_MINUTES`].
pub const MAX_FAILURES: i64 = 10;
pub const THROTTLE_WINDOW_MINUTES: i64 = 15;
pub const TOKEN_PREFIX: &str = "obk_";

#[derive(Debug, Clone, Serialize)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Domain {
    /// `Err(Throttled)`-like check before a password is even looked at.
    /// Returns the number of seconds to wait when the email is throttled.
    pub async fn login_throttled(&self, email: &str) -> Result<Option<i64>, DomainError> {
        let email = match normalize_email(email) {
            Ok(email) => email,
            Err(_) => return Ok(None),
        };
        let since = Utc::now() - Duration::minutes(THROTTLE_WINDOW_MINUTES);
        let (count, oldest): (i64, Option<DateTime<Utc>>) = self
            .pools
            .read(self.pools.directory_shard(), move |client| {
                let email = email.clone();
                Box::pin(async move {
                    let row = client
                        .query_one(
                            "SELECT count(*), min(at) FROM login_failures WHERE email = $1 AND at > $2",
                            &[&email, &since],
                        )
                        .await
                        .map_err(db)?;
                    Ok((row.get(0), row.get(1)))
                })
            })
            .await?;
        if count < MAX_FAILURES {
            return Ok(None);
        }
        let free_at = oldest.unwrap_or_else(Utc::now) + Duration::minutes(THROTTLE_WINDOW_MINUTES);
        Ok(Some((free_at - Utc::now()).num_seconds().max(1)))
    }

    pub async fn record_login_failure(&self, email: &str) -> Result<(), DomainError> {
        let Ok(email) = normalize_email(email) else {
            return Ok(());
        };
        let (id, now) = (Uuid::new_v4(), Utc::now());
        self.pools
            .write(self.pools.directory_shard(), move |tx| {
                let email = email.clone();
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO login_failures (id, email, at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                        &[&id, &email, &now],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }

    /// Changes the password after checking the current one, and ends every
    /// other session of the user.
    pub async fn change_password(
        &self,
        viewer: &Viewer,
        current: &str,
        new: &str,
        keep_session_token: Option<&str>,
    ) -> Result<(), DomainError> {
        let user_id = viewer.id;
        let stored: String = self
            .pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    Ok(client
                        .query_one("SELECT password_hash FROM users WHERE id = $1", &[&user_id])
                        .await
                        .map_err(db)?
                        .get(0))
                })
            })
            .await?;
        if !verify_password(current, &stored).await? {
            return Err(DomainError::invalid(
                "current_password",
                "is not the current password",
            ));
        }
        let hash = hash_password(new).await.map_err(|e| match e {
            DomainError::Invalid { reason, .. } => DomainError::invalid("new_password", reason),
            other => other,
        })?;
        let keep = keep_session_token
            .map(crate::accounts::token_hash)
            .unwrap_or_default();
        let now = Utc::now();
        self.pools
            .write(viewer.shard, move |tx| {
                let (hash, keep) = (hash.clone(), keep.clone());
                Box::pin(async move {
                    tx.execute(
                        "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3",
                        &[&hash, &now, &user_id],
                    )
                    .await
                    .map_err(db)?;
                    tx.execute(
                        "DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2",
                        &[&user_id, &keep],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }

    /// Creates a personal API token; the secret is returned once, only its
    /// hash is stored.
    pub async fn create_api_token(
        &self,
        viewer: &Viewer,
        name: &str,
    ) -> Result<(ApiToken, String), DomainError> {
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(DomainError::invalid("name", "must be 1 to 100 characters"));
        }
        let secret = format!(
            "{TOKEN_PREFIX}{}_{}{}",
            viewer.id.simple(),
            Uuid::new_v4().simple(),
            Uuid::new_v4().simple()
        );
        let token = ApiToken {
            id: Uuid::new_v4(),
            name,
            created_at: Utc::now(),
        };
        let (id, user_id, hash, stored_name, created) = (
            token.id,
            viewer.id,
            sha256_hex(&secret),
            token.name.clone(),
            token.created_at,
        );
        self.pools
            .write(viewer.shard, move |tx| {
                let (hash, stored_name) = (hash.clone(), stored_name.clone());
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                        &[&id, &user_id, &stored_name, &hash, &created],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await?;
        Ok((token, secret))
    }

    pub async fn list_api_tokens(&self, viewer: &Viewer) -> Result<Vec<ApiToken>, DomainError> {
        let user_id = viewer.id;
        self.pools
            .read(viewer.shard, move |client| {
                Box::pin(async move {
                    let rows = client
                        .query(
                            "SELECT id, name, created_at FROM api_tokens WHERE user_id = $1 ORDER BY created_at",
                            &[&user_id],
                        )
                        .await
                        .map_err(db)?;
                    Ok(rows
                        .iter()
                        .map(|r| ApiToken {
                            id: r.get(0),
                            name: r.get(1),
                            created_at: r.get(2),
                        })
                        .collect())
                })
            })
            .await
    }

    pub async fn revoke_api_token(&self, viewer: &Viewer, id: Uuid) -> Result<(), DomainError> {
        let removed = self.delete_own_row(viewer, "api_tokens", id).await?;
        // A retried revoke whose first attempt committed finds nothing left;
        // both outcomes mean the token no longer works.
        let _ = removed;
        Ok(())
    }

    /// Resolves an API token (`obk_<user>_<secret>`) like a session.
    pub async fn viewer_for_api_token(&self, token: &str) -> Result<Viewer, DomainError> {
        let rest = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(DomainError::Unauthenticated)?;
        let (user_part, _) = rest.split_once('_').ok_or(DomainError::Unauthenticated)?;
        self.viewer_for_credential(user_part, Credential::ApiToken(sha256_hex(token)))
            .await
    }

    /// A CSRF token for forms, derived from the session token: only a page
    /// that could read the session can produce it.
    pub fn csrf_token(session_token: &str) -> String {
        sha256_hex(&format!("onebook-csrf:{session_token}"))
    }
}
