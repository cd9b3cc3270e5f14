//! Onebook's edge: TLS termination, routing and load balancing in front of the web app
//! and the SyncML servers, on Pingora with rustls.
//!
//! Layout: `config` (TOML → validated model), `tls` (certificates, SNI resolver, dev CA),
//! `balance` (pools and server selection), `proxy` (the request path), `admin`
//! (health, metrics, status, reload, server drain/weight), `access_log` (off-path request
//! log writer), `state` (what is shared and swapped on reload), `server` (Pingora wiring).

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod config;
pub mod error;
pub mod logging;
pub mod proxy;
pub mod server;
pub mod state;
pub mod tls;

pub use error::{ConfigError, Error, Result};
