//! Errors of the direct API.

use crate::audio::AudioError;
use crate::sdp::SdpError;
use call_engine_events::{BridgeId, CallId, Leg};
use std::net::IpAddr;
use thiserror::Error;

/// Why a media operation failed. Its `Display` is the `reason` of the failure events.
#[derive(Debug, Error)]
pub enum MediaError {
    /// The configuration is invalid.
    #[error("invalid media configuration: {field}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Every even port of the range is in use (or cannot be bound).
    #[error("no free RTP port in {first}..={last} on {address}")]
    NoFreePort {
        /// The bind address.
        address: IpAddr,
        /// First even port of the range.
        first: u16,
        /// Last even port of the range.
        last: u16,
    },
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The far end's SDP is unusable.
    #[error("SDP: {0}")]
    Sdp(#[from] SdpError),
    /// An audio source cannot be played.
    #[error("audio: {0}")]
    Audio(#[from] AudioError),
    /// No endpoint is allocated for this leg.
    #[error("no endpoint for {call} leg {leg:?}")]
    UnknownEndpoint {
        /// The call.
        call: CallId,
        /// The leg.
        leg: Leg,
    },
    /// A bridge cannot be made as asked.
    #[error("bridge {bridge}: {reason}")]
    Bridge {
        /// The bridge.
        bridge: BridgeId,
        /// Why.
        reason: &'static str,
    },
    /// The media adapter is shutting down.
    #[error("media adapter stopped")]
    Stopped,
}
