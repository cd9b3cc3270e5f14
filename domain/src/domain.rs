use crate::cache::Cache;
use crate::db::ShardPools;
use crate::error::DomainError;
use crate::settings::{CacheSettings, DatabaseSettings};
use crate::shard::ShardRouter;

/// Everything a request handler needs to reach the data tier: the shard
/// pools, the shard router and this instance's cache. One per process,
/// shared behind an `Arc`.
pub struct Domain {
    pub pools: ShardPools,
    pub router: ShardRouter,
    pub cache: Cache,
}

impl Domain {
    pub fn new(database: &DatabaseSettings, cache: &CacheSettings) -> Result<Self, DomainError> {
        Ok(Domain {
            pools: ShardPools::new(database)?,
            router: ShardRouter::new(database.placement),
            cache: Cache::new(cache),
        })
    }
}
