//! The shard router: which shard a user lives on, and where new users go.
//!
//! The directory (email and user id → shard) lives on the first shard. Its
//! entries never change once written (moving a user between shards is an
//! offline operation), so each process keeps them in memory after the first
//! lookup.

use crate::db::{db, ShardPools};
use crate::error::DomainError;
use crate::settings::Placement;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::RwLock;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardId(pub usize);

/// One user's entry in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub user_id: Uuid,
    pub email: String,
    pub shard: ShardId,
}

pub struct ShardRouter {
    placement: Placement,
    by_user: RwLock<HashMap<Uuid, ShardId>>,
}

impl ShardRouter {
    pub fn new(placement: Placement) -> Self {
        ShardRouter {
            placement,
            by_user: RwLock::new(HashMap::new()),
        }
    }

    /// The shard of an existing user.
    pub async fn shard_of(
        &self,
        pools: &ShardPools,
        user_id: Uuid,
    ) -> Result<ShardId, DomainError> {
        if let Some(shard) = self.cached(user_id) {
            return Ok(shard);
        }
        let index: Option<i32> = pools
            .read(pools.directory_shard(), move |client| {
                Box::pin(async move {
                    let row = client
                        .query_opt(
                            "SELECT shard FROM user_directory WHERE user_id = $1",
                            &[&user_id],
                        )
                        .await
                        .map_err(db)?;
                    Ok(row.map(|r| r.get::<_, i32>(0)))
                })
            })
            .await?;
        let shard = shard_from_index(pools, index.ok_or(DomainError::NotFound)?)?;
        self.remember(user_id, shard);
        Ok(shard)
    }

    /// The directory entry for an email, if that account exists.
    pub async fn find_by_email(
        &self,
        pools: &ShardPools,
        email: &str,
    ) -> Result<Option<Placed>, DomainError> {
        let email = email.to_string();
        let row = pools
            .read(pools.directory_shard(), move |client| {
                let email = email.clone();
                Box::pin(async move {
                    client
                        .query_opt(
                            "SELECT user_id, email, shard FROM user_directory WHERE email = $1",
                            &[&email],
                        )
                        .await
                        .map_err(db)
                })
            })
            .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let placed = Placed {
                    user_id: row.get(0),
                    email: row.get(1),
                    shard: shard_from_index(pools, row.get::<_, i32>(2))?,
                };
                self.remember(placed.user_id, placed.shard);
                Ok(Some(placed))
            }
        }
    }

    /// Places a new user and records it in the directory. Idempotent: if
    /// the email is already placed (a retry, or a sign-up race), the existing
    /// entry is returned with `created = false`.
    pub async fn place(
        &self,
        pools: &ShardPools,
        email: &str,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(Placed, bool), DomainError> {
        let shard = self.choose_shard(pools, user_id).await?;
        let email_owned = email.to_string();
        let index = i32::try_from(shard.0)
            .map_err(|_| DomainError::Corrupt("shard index overflow".to_string()))?;
        let inserted = pools
            .write(pools.directory_shard(), move |tx| {
                let email = email_owned.clone();
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO user_directory (email, user_id, shard, created_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO NOTHING",
                        &[&email, &user_id, &index, &now],
                    )
                    .await
                    .map_err(db)
                })
            })
            .await?;
        let placed = self
            .find_by_email(pools, email)
            .await?
            .ok_or_else(|| DomainError::Corrupt(format!("directory entry for {email} vanished")))?;
        // A retried insert whose first attempt committed reports 0 rows, yet
        // the entry is ours: the user id tells.
        let created = inserted == 1 || placed.user_id == user_id;
        Ok((placed, created))
    }

    async fn choose_shard(
        &self,
        pools: &ShardPools,
        user_id: Uuid,
    ) -> Result<ShardId, DomainError> {
        let open: Vec<_> = pools.shards().iter().filter(|s| s.weight > 0).collect();
        match self.placement {
            Placement::Weighted => {
                let total: u64 = open.iter().map(|s| u64::from(s.weight)).sum();
                if total == 0 {
                    return Err(DomainError::Corrupt(
                        "no shard accepts new users".to_string(),
                    ));
                }
                // The id is random, so its low bits spread users by weight.
                let mut point = (user_id.as_u128() as u64) % total;
                for shard in &open {
                    let weight = u64::from(shard.weight);
                    if point < weight {
                        return Ok(shard.id);
                    }
                    point -= weight;
                }
                Err(DomainError::Corrupt(
                    "weighted placement fell through".to_string(),
                ))
            }
            Placement::LeastLoaded => {
                let counts: HashMap<i32, i64> = pools
                    .read(pools.directory_shard(), |client| {
                        Box::pin(async move {
                            let rows = client
                                .query(
                                    "SELECT shard, count(*) FROM user_directory GROUP BY shard",
                                    &[],
                                )
                                .await
                                .map_err(db)?;
                            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
                        })
                    })
                    .await?;
                open.iter()
                    .min_by_key(|s| {
                        let index = i32::try_from(s.id.0).unwrap_or(i32::MAX);
                        (counts.get(&index).copied().unwrap_or(0), s.id.0)
                    })
                    .map(|s| s.id)
                    .ok_or_else(|| DomainError::Corrupt("no shard accepts new users".to_string()))
            }
        }
    }

    fn cached(&self, user_id: Uuid) -> Option<ShardId> {
        self.by_user
            .read()
            .ok()
            .and_then(|map| map.get(&user_id).copied())
    }

    fn remember(&self, user_id: Uuid, shard: ShardId) {
        if let Ok(mut map) = self.by_user.write() {
            map.insert(user_id, shard);
        }
    }
}

fn shard_from_index(pools: &ShardPools, index: i32) -> Result<ShardId, DomainError> {
    let id = usize::try_from(index)
        .map(ShardId)
        .map_err(|_| DomainError::Corrupt(format!("negative shard index {index}")))?;
    pools.shard(id).map(|s| s.id)
}
