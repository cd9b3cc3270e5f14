//! Accounts and sessions. Passwords are argon2id hashes; session tokens are
//! random and only their SHA-256 is stored, so a database dump does not
//! hand out live sessions.

use crate::db::db;
use crate::error::DomainError;
use crate::shard::ShardId;
use crate::Domain;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
/// default memory cost) at once on tokio's blocking pool. Each thread hashes
/// into one block buffer of its own, allocated once and reused: a fresh
/// 19 MiB buffer per hash was kept by glibc in the thread arenas after it
/// was freed (a webapp grew to 225-350 MiB RSS after 200 logins).
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

thread_local! {
    /// The argon2 working memory of this hashing thread, kept between hashes.
    static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The raw argon2 output of `password` under `argon2`'s parameters, computed
/// in this thread's reused block buffer (grown if a stored hash asks for
/// more memory than any before it).
fn raw_hash(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), DomainError> {
    BLOCKS.with(|blocks| {
        let mut blocks = blocks
            .try_borrow_mut()
            .map_err(|e| DomainError::Hashing(e.to_string()))?;
        let needed = params.block_count();
        if blocks.len() < needed {
            blocks.resize(needed, Block::default());
        }
        argon2
            .hash_password_into_with_memory(password, salt, out, &mut blocks[..needed])
            .map_err(|e| DomainError::Hashing(e.to_string()))
    })
}

/// argon2id with the crate's default parameters (m=19456 KiB, t=2, p=1), as
/// a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
fn hash_on_this_thread(password: &[u8]) -> Result<String, DomainError> {
    let hashing = |e: argon2::password_hash::Error| DomainError::Hashing(e.to_string());
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(hashing)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    raw_hash(&argon2, &params, password, salt_raw, &mut out)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(hashing)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(hashing)?),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a PHC string with the parameters stored in it.
fn verify_on_this_thread(password: &[u8], hash: &str) -> Result<bool, DomainError> {
    let corrupt = |e: argon2::password_hash::Error| DomainError::Corrupt(e.to_string());
    let parsed = PasswordHash::new(hash).map_err(corrupt)?;
    let expected = parsed
        .hash
        .ok_or_else(|| DomainError::Corrupt("password hash without output".into()))?;
    let salt = parsed
        .salt
        .ok_or_else(|| DomainError::Corrupt("password hash without salt".into()))?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(corrupt)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| DomainError::Corrupt(e.to_string()))?
        .unwrap_or_default();
    // Includes the output length of the stored hash.
    let params = Params::try_from(&parsed).map_err(corrupt)?;
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(corrupt)?;
    let mut out = vec![0u8; expected.len()];
    raw_hash(&argon2, &params, password, salt_raw, &mut out)?;
    // Output's equality is constant-time.
    Ok(Output::new(&out).map_err(corrupt)? == expected)
}

pub async fn hash_password(password: &str) -> Result<String, DomainError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(DomainError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    let password = password.to_string();
    on_hashing_thread(move || hash_on_this_thread(password.as_bytes())).await?
}

pub async fn verify_password(password: &str, hash: &str) -> Result<bool, DomainError> {
    let password = password.to_string();
    let hash = hash.to_string();
    on_hashing_thread(move || verify_on_this_thread(password.as_bytes(), &hash)).await?
}

pub(crate) fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What proves a request's identity, by the stored hash of its secret.
#[derive(Clone)]
pub(crate) enum Credential {
    /// A live (unexpired) row in `sessions`.
    Session(String),
    /// A row in `api_tokens`.
    ApiToken(String),
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
        self.viewer_for_credential(user_part, Credential::Session(token_hash(token)))
            .await
    }

    /// The user named by the `user_part` of a token (a simple-format UUID),
    /// if `credential` is live on that user's shard: the shared tail of
    /// session and API-token authentication. Any mismatch is
    /// `Unauthenticated`, never a hint about which part was wrong.
    pub(crate) async fn viewer_for_credential(
        &self,
        user_part: &str,
        credential: Credential,
    ) -> Result<Viewer, DomainError> {
        let user_id = Uuid::try_parse(user_part).map_err(|_| DomainError::Unauthenticated)?;
        let shard = match self.router.shard_of(&self.pools, user_id).await {
            Err(DomainError::NotFound) => return Err(DomainError::Unauthenticated),
            other => other?,
        };
        let now = Utc::now();
        let row = self
            .pools
            .read(shard, move |client| {
                let credential = credential.clone();
                Box::pin(async move {
                    match &credential {
                        Credential::Session(hash) => client
                            .query_opt(
                                "SELECT u.id, u.email, u.change_seq FROM sessions s JOIN users u ON u.id = s.user_id \
                                 WHERE s.token_hash = $1 AND s.expires_at > $2",
                                &[hash, &now],
                            )
                            .await,
                        Credential::ApiToken(hash) => client
                            .query_opt(
                                "SELECT u.id, u.email, u.change_seq FROM api_tokens t JOIN users u ON u.id = t.user_id \
                                 WHERE t.token_hash = $1",
                                &[hash],
                            )
                            .await,
                    }
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

    /// Hashes stored before the buffer reuse (made by argon2's own
    /// `PasswordHasher`) still verify, and ours verify with argon2's own
    /// verifier: same algorithm, parameters and PHC format.
    #[test]
    fn hashes_agree_with_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(verify_on_this_thread(b"correct horse", &theirs).unwrap());
        assert!(!verify_on_this_thread(b"wrong horse!", &theirs).unwrap());

        let ours = hash_on_this_thread(b"correct horse").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong horse!", &parsed)
            .is_err());
        assert!(verify_on_this_thread(b"x", "not a phc string").is_err());
    }

    /// One block buffer per thread, allocated by the first hash and reused
    /// by every later hash and verification on that thread.
    #[test]
    fn the_block_buffer_is_allocated_once_per_thread() {
        let buffer = || BLOCKS.with(|b| (b.borrow().as_ptr() as usize, b.borrow().len()));
        let first = hash_on_this_thread(b"first password").unwrap();
        let after_first = buffer();
        assert_eq!(after_first.1, Params::default().block_count());
        assert!(verify_on_this_thread(b"first password", &first).unwrap());
        hash_on_this_thread(b"second password").unwrap();
        assert_eq!(buffer(), after_first);
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
