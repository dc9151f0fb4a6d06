//! The `shoal` agent: the node core that composes the sans-IO parts, the
//! tokio shell that runs it (QUIC with mutual TLS, sled, HTTP, signals), and
//! the command-line interface.
//!
//! Only this crate touches tokio, quinn, sled and HTTP; the cores it drives
//! (`shoal-membership`, and later `shoal-consensus`, `shoal-placement`)
//! do no IO.

pub mod cli;
pub mod client;
pub mod config;
pub mod core;
pub mod demo;
pub mod host;
pub mod http;
pub mod metrics;
pub mod shell;
pub mod store;
pub mod tls;
pub mod transport;
