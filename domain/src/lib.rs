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
pub mod contact_edits;
pub mod contact_queries;
pub mod contacts;
pub mod credentials;
pub mod db;
pub mod devices;
pub mod duplicates;
pub mod error;
pub mod events;
pub mod health;
pub mod links;
pub mod migrations;
pub mod settings;
pub mod shard;
pub mod syncml_state;
pub mod telemetry;
pub mod transfer;
pub mod vcard;

mod domain;

pub use domain::Domain;
pub use error::DomainError;
