use thiserror::Error;

/// Errors of the domain layer. Callers map them to HTTP or SyncML statuses;
/// nothing below this layer decides what the client sees.
#[derive(Debug, Error)]
pub enum DomainError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid input: {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("authentication failed")]
    Unauthenticated,
    #[error("shard {shard} unavailable: {reason}")]
    Unavailable { shard: String, reason: String },
    #[error("database error on shard {shard}: {}", describe(source))]
    Database {
        shard: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DomainError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// tokio-postgres displays every server error as just "db error"; the
/// server's message and SQLSTATE are what an operator needs in the log.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => error.to_string(),
    }
}
