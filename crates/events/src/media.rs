//! RTP endpoints, bridges, playback and stream quality. Only the media adapter produces
//! these events and executes these commands.

use crate::common::{Codec, Leg, Sdp};
use crate::ids::{BridgeId, CallId, EndpointId, PlaybackId};
use call_engine_bus::Priority;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// What to play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AudioSource {
    /// The built-in music on hold.
    BuiltinMusic,
    /// An 8 kHz WAV file.
    File {
        /// Path of the file.
        path: SmolStr,
    },
    /// A named prompt from the prompt set (e.g. `"you-are-caller"`, `"digit-3"`).
    Prompt {
        /// Prompt name.
        name: SmolStr,
    },
}

/// Per-stream quality report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StreamQuality {
    /// Packets received.
    pub packets_received: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets lost (from sequence gaps).
    pub packets_lost: u64,
    /// Interarrival jitter, milliseconds (RFC 3550).
    pub jitter_ms: f32,
    /// Estimated mean opinion score, 1.0–4.5 (E-model).
    pub mos: f32,
}

/// What happened to media.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MediaEvent {
    /// An endpoint was allocated; its local SDP is ready to send.
    EndpointReady {
        /// The call.
        call: CallId,
        /// Which leg.
        leg: Leg,
        /// The endpoint.
        endpoint: EndpointId,
        /// Our SDP (offer or answer).
        local_sdp: Sdp,
        /// Codec chosen, when answering an offer.
        codec: Option<Codec>,
    },
    /// An endpoint could not be allocated or negotiated (no ports, no common codec).
    EndpointFailed {
        /// The call.
        call: CallId,
        /// Which leg.
        leg: Leg,
        /// Why.
        reason: SmolStr,
    },
    /// Two legs are bridged; audio flows (transcoded if their codecs differ).
    Bridged {
        /// The call.
        call: CallId,
        /// The bridge.
        bridge: BridgeId,
        /// Whether the bridge transcodes.
        transcoding: bool,
    },
    /// A bridge was torn down.
    Unbridged {
        /// The call.
        call: CallId,
        /// The bridge.
        bridge: BridgeId,
    },
    /// A playback started.
    PlaybackStarted {
        /// The call.
        call: CallId,
        /// The playback.
        playback: PlaybackId,
    },
    /// A playback reached its end (not for looping music).
    PlaybackFinished {
        /// The call.
        call: CallId,
        /// The playback.
        playback: PlaybackId,
    },
    /// An RFC 4733 telephone-event digit was detected.
    DtmfDetected {
        /// The call.
        call: CallId,
        /// On which leg.
        leg: Leg,
        /// The digit.
        digit: char,
    },
    /// No RTP arrived on a leg for the configured time.
    MediaTimeout {
        /// The call.
        call: CallId,
        /// Which leg.
        leg: Leg,
    },
    /// Endpoint released, ports freed: the end of a leg's media (teardown, Critical like
    /// the [`MediaCommand::Release`] it answers).
    Released {
        /// The call.
        call: CallId,
        /// Which leg.
        leg: Leg,
    },
    /// Periodic quality report of one stream.
    Quality {
        /// The call.
        call: CallId,
        /// Which leg.
        leg: Leg,
        /// The numbers.
        quality: StreamQuality,
    },
}

impl MediaEvent {
    /// The bus priority of this event.
    pub fn priority(&self) -> Priority {
        use MediaEvent::*;
        match self {
            EndpointReady { .. }
            | EndpointFailed { .. }
            | MediaTimeout { .. }
            | Released { .. } => Priority::Critical,
            Bridged { .. } | Unbridged { .. } | DtmfDetected { .. } => Priority::High,
            PlaybackStarted { .. } | PlaybackFinished { .. } => Priority::Normal,
            Quality { .. } => Priority::Low,
        }
    }
}

/// What the media adapter is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MediaCommand {
    /// Allocate an RTP endpoint for a leg; answer `remote_offer` if given, else make an
    /// offer.
    Allocate {
        /// The call.
        call: CallId,
        /// Which leg.
        leg: Leg,
        /// The far end's offer, when we answer.
        remote_offer: Option<Sdp>,
    },
    /// The far end's SDP answer for an endpoint we offered.
    SetRemote {
        /// The call.
        call: CallId,
        /// Which leg.
        leg: Leg,
        /// Far end's SDP.
        sdp: Sdp,
    },
    /// Relay audio between two legs (stops playback on both).
    Bridge {
        /// The call.
        call: CallId,
        /// The bridge id to use.
        bridge: BridgeId,
        /// One leg.
        a: Leg,
        /// The other leg.
        b: Leg,
    },
    /// Stop relaying.
    Unbridge {
        /// The call.
        call: CallId,
        /// The bridge.
        bridge: BridgeId,
    },
    /// Play audio to a leg.
    Play {
        /// The call.
        call: CallId,
        /// Which leg.
        leg: Leg,
        /// The playback id to use.
        playback: PlaybackId,
        /// What.
        source: AudioSource,
        /// Loop until stopped.
        looped: bool,
    },
    /// Stop a playback.
    StopPlayback {
        /// The call.
        call: CallId,
        /// The playback.
        playback: PlaybackId,
    },
    /// Free a leg's endpoint.
    Release {
        /// The call.
        call: CallId,
        /// Which leg.
        leg: Leg,
    },
}

impl MediaCommand {
    /// The bus priority of this command.
    pub fn priority(&self) -> Priority {
        use MediaCommand::*;
        match self {
            Allocate { .. } | Release { .. } => Priority::Critical,
            SetRemote { .. } | Bridge { .. } | Unbridge { .. } => Priority::High,
            Play { .. } | StopPlayback { .. } => Priority::Normal,
        }
    }
}
