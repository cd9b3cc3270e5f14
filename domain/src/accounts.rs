//! Accounts and sessions. Passwords are argon2id hashes; session tokens are
//! random and only their SHA-256 is stored, so a database dump does not
//! hand out live sessions.

use crate::db::db;
use crate::error::DomainError;
use crate::shard::ShardId;
use crate::Domain;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Duration, Utc};
use rand_core::OsRng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const SESSION_LIFETIME_DAYS: i64 = 30;
pub const MIN_PASSWORD_LEN: usize = 8;

/// An authenticated user, as a request sees it. `change_seq` is the user's
/// data version at the start of the request; cache keys are built from it.
#[derive(Debug, Clone, Serialize)]
pub struct Viewer {
    pub id: Uuid,
    pub email: String,
    #[serde(skip)]
    pub shard: ShardId,
    pub change_seq: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub shard: String,
    pub created_at: DateTime<Utc>,
}

/// Lower-cases and checks an email address (the account's identity).
pub fn normalize_email(email: &str) -> Result<String, DomainError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, host)| {
            !local.is_empty() && host.contains('.') && !host.starts_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(DomainError::invalid("email", "not a valid email address"))
    }
}

/// argon2 runs on this many dedicated threads per process, so a burst of
/// logins queues instead of running dozens of 19 MiB hashes (argon2id's
/// default memory cost) at once on tokio's blocking pool. glibc still keeps
/// freed hash memory in these threads' arenas (a webapp measured 230 MiB
/// RSS after the login-heavy tests); reusing one preallocated block buffer
/// per thread would fix that and is still to do.
const HASHING_THREADS: usize = 2;

type HashJob = Box<dyn FnOnce() + Send>;

fn hashing_queue(
) -> Result<&'static std::sync::Mutex<std::sync::mpsc::Sender<HashJob>>, DomainError> {
    static QUEUE: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<HashJob>>> =
        std::sync::OnceLock::new();
    if let Some(queue) = QUEUE.get() {
        return Ok(queue);
    }
    let (sender, receiver) = std::sync::mpsc::channel::<HashJob>();
    let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
    for n in 0..HASHING_THREADS {
        let receiver = receiver.clone();
        std::thread::Builder::new()
            .name(format!("argon2-{n}"))
            .spawn(move || loop {
                let job = match receiver.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            })
            .map_err(|e| DomainError::Hashing(e.to_string()))?;
    }
    Ok(QUEUE.get_or_init(|| std::sync::Mutex::new(sender)))
}

/// Runs `work` on a hashing thread (argon2 is deliberately slow: it must
/// not block the async workers).
async fn on_hashing_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DomainError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move || {
        let _ = reply.send(work());
    });
    hashing_queue()?
        .lock()
        .map_err(|e| DomainError::Hashing(e.to_string()))?
        .send(job)
        .map_err(|e| DomainError::Hashing(e.to_string()))?;
    answer
        .await
        .map_err(|e| DomainError::Hashing(e.to_string()))
}

pub async fn hash_password(password: &str) -> Result<String, DomainError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(DomainError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    let password = password.to_string();
    on_hashing_thread(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| DomainError::Hashing(e.to_string()))
    })
    .await?
}

pub async fn verify_password(password: &str, hash: &str) -> Result<bool, DomainError> {
    let password = password.to_string();
    let hash = hash.to_string();
    on_hashing_thread(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| DomainError::Corrupt(e.to_string()))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await?
}

pub(crate) fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<user id>.<secret>`: the user id routes the lookup to the right shard.
fn new_session_token(user_id: Uuid) -> String {
    format!(
        "{}.{}{}",
        user_id.simple(),
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

impl Domain {
    /// Creates an account. Idempotent for the same email and password: a
    /// retried sign-up whose first attempt landed returns the account.
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<Account, DomainError> {
        let email = normalize_email(email)?;
        let display_name = display_name.trim().to_string();
        if display_name.chars().count() > 200 {
            return Err(DomainError::invalid(
                "display_name",
                "longer than 200 characters",
            ));
        }
        let password_hash = hash_password(password).await?;
        let now = Utc::now();
        let (placed, created) = self
            .router
            .place(&self.pools, &email, Uuid::new_v4(), now)
            .await?;
        if !created {
            // The email is taken. Only the owner of the password may "retry".
            let existing = self.account_row(placed.shard, placed.user_id).await?;
            return match existing {
                Some((account, hash)) if verify_password(password, &hash).await? => Ok(account),
                _ => Err(DomainError::Conflict(
                    "an account with this email already exists".into(),
                )),
            };
        }
        let user_id = placed.user_id;
        let email_row = email.clone();
        let name_row = display_name.clone();
        self.pools
            .write(placed.shard, move |tx| {
                let (email, name, hash) = (email_row.clone(), name_row.clone(), password_hash.clone());
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO users (id, email, display_name, password_hash, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING",
                        &[&user_id, &email, &name, &hash, &now],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await?;
        Ok(Account {
            id: user_id,
            email,
            display_name,
            shard: self.pools.shard(placed.shard)?.name.clone(),
            created_at: now,
        })
    }

    async fn account_row(
        &self,
        shard: ShardId,
        user_id: Uuid,
    ) -> Result<Option<(Account, String)>, DomainError> {
        let shard_name = self.pools.shard(shard)?.name.clone();
        let row = self
            .pools
            .read(shard, move |client| {
                Box::pin(async move {
                    client
                        .query_opt(
                            "SELECT id, email, display_name, password_hash, created_at FROM users WHERE id = $1",
                            &[&user_id],
                        )
                        .await
                        .map_err(db)
                })
            })
            .await?;
        Ok(row.map(|row| {
            (
                Account {
                    id: row.get(0),
                    email: row.get(1),
                    display_name: row.get(2),
                    shard: shard_name.clone(),
                    created_at: row.get(4),
                },
                row.get(3),
            )
        }))
    }

    /// Checks the password and opens a session; returns the session token.
    pub async fn log_in(
        &self,
        email: &str,
        password: &str,
    ) -> Result<(Account, String), DomainError> {
        let email = normalize_email(email).map_err(|_| DomainError::Unauthenticated)?;
        let placed = self
            .router
            .find_by_email(&self.pools, &email)
            .await?
            .ok_or(DomainError::Unauthenticated)?;
        let (account, hash) = self
            .account_row(placed.shard, placed.user_id)
            .await?
            .ok_or(DomainError::Unauthenticated)?;
        if !verify_password(password, &hash).await? {
            return Err(DomainError::Unauthenticated);
        }
        let token = new_session_token(account.id);
        let hash = token_hash(&token);
        let now = Utc::now();
        let expires = now + Duration::days(SESSION_LIFETIME_DAYS);
        let user_id = account.id;
        self.pools
            .write(placed.shard, move |tx| {
                let hash = hash.clone();
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING",
                        &[&hash, &user_id, &now, &expires],
                    )
                    .await
                    .map_err(db)?;
                    Ok(())
                })
            })
            .await?;
        Ok((account, token))
    }

    /// Resolves a session token to its user and the user's current data
    /// version, in one query on the user's shard.
    pub async fn viewer_for_session(&self, token: &str) -> Result<Viewer, DomainError> {
        let (user_part, _) = token.split_once('.').ok_or(DomainError::Unauthenticated)?;
        let user_id = Uuid::try_parse(user_part).map_err(|_| DomainError::Unauthenticated)?;
        let shard = match self.router.shard_of(&self.pools, user_id).await {
            Err(DomainError::NotFound) => return Err(DomainError::Unauthenticated),
            other => other?,
        };
        let hash = token_hash(token);
        let now = Utc::now();
        let row = self
            .pools
            .read(shard, move |client| {
                let hash = hash.clone();
                Box::pin(async move {
                    client
                        .query_opt(
                            "SELECT u.id, u.email, u.change_seq FROM sessions s JOIN users u ON u.id = s.user_id \
                             WHERE s.token_hash = $1 AND s.expires_at > $2",
                            &[&hash, &now],
                        )
                        .await
                        .map_err(db)
                })
            })
            .await?
            .ok_or(DomainError::Unauthenticated)?;
        Ok(Viewer {
            id: row.get(0),
            email: row.get(1),
            shard,
            change_seq: row.get(2),
        })
    }

    pub async fn log_out(&self, token: &str) -> Result<(), DomainError> {
        let viewer = match self.viewer_for_session(token).await {
            Err(DomainError::Unauthenticated) => return Ok(()),
            other => other?,
        };
        let hash = token_hash(token);
        self.pools
            .write(viewer.shard, move |tx| {
                let hash = hash.clone();
                Box::pin(async move {
                    tx.execute("DELETE FROM sessions WHERE token_hash = $1", &[&hash])
                        .await
                        .map_err(db)?;
                    Ok(())
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email(" Demo@Onebook.Test ").unwrap(),
            "demo@onebook.test"
        );
        for bad in ["", "no-at", "@host.test", "a@nodot", "a b@c.d", "a@.test"] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash).await.unwrap());
        assert!(!verify_password("wrong horse!", &hash).await.unwrap());
        assert!(hash_password("short").await.is_err());
    }

    #[test]
    fn session_tokens_route_and_differ() {
        let id = Uuid::new_v4();
        let a = new_session_token(id);
        let b = new_session_token(id);
        assert_ne!(a, b);
        assert!(a.starts_with(&id.simple().to_string()));
        assert_ne!(token_hash(&a), token_hash(&b));
        assert_eq!(token_hash(&a).len(), 64);
    }
}
