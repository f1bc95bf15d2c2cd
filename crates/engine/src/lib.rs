//! # call-engine
//!
//! The call-center engine: configuration, startup, shutdown and the wiring of the
//! adapters ([`call_engine_session`], [`call_engine_media`]), the pure components
//! ([`call_engine_state`], [`call_engine_orchestrator`]) and the store
//! ([`call_engine_store`]) around one event bus. The `call-engine` binary is a thin CLI
//! over [`server::Engine`]; tests start the same engine in-process.

pub mod config;
pub mod control;
pub mod driver;
mod kept;
pub mod report;
pub mod server;

pub use config::{Config, ConfigError};
pub use server::{Engine, StartError};
