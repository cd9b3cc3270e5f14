//! Onebook's shared domain and storage layer.
//!
//! The web app, the SyncML server and the sync bots all go through this crate,
//! as the 2008 design's "same models" did: one contact model, one shard router,
//! one cache discipline and one schema. Everything here is written for
//! pgpool-II replication (see `docs/datatier.md`): ids and timestamps are made
//! in Rust and bound as parameters, writes are idempotent and retried on
//! serialization failures and dropped connections.

pub mod accounts;
pub mod cache;
pub mod contacts;
pub mod db;
pub mod error;
pub mod health;
pub mod migrations;
pub mod settings;
pub mod shard;
pub mod telemetry;

mod domain;

pub use domain::Domain;
pub use error::DomainError;
