use uuid::Uuid;

use crate::accounts::Viewer;
use crate::cache::Cache;
use crate::db::{db, ShardPools};
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

    /// Deletes the viewer's row `id` of `table` (a table with `id` and
    /// `user_id` columns); the number of rows removed (0: none of theirs).
    pub(crate) async fn delete_own_row(
        &self,
        viewer: &Viewer,
        table: &'static str,
        id: Uuid,
    ) -> Result<u64, DomainError> {
        let user_id = viewer.id;
        self.pools
            .write(viewer.shard, move |tx| {
                Box::pin(async move {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE id = $1 AND user_id = $2"),
                        &[&id, &user_id],
                    )
                    .await
                    .map_err(db)
                })
            })
            .await
    }
}
