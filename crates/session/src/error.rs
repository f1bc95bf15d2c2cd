//! Errors of the session adapter.

use std::net::SocketAddr;
use thiserror::Error;

/// Starting the session adapter failed.
#[derive(Debug, Error)]
pub enum SessionError {
    /// A configuration value is invalid.
    #[error("invalid session configuration: `{field}` {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A socket could not be bound.
    #[error("cannot bind {transport} on {addr}: {source}")]
    Bind {
        /// `UDP` or `TCP`.
        transport: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
