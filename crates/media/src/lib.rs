//! # call-engine-media
//!
//! The media adapter of call-engine, and the only crate that touches RTP. It anchors
//! every leg's audio on an RTP endpoint of its own (a UDP socket on an even port of a
//! configured range), and on command:
//!
//! - **negotiates** SDP: answers an offer (first offered of PCMU/PCMA, RFC 4733
//!   telephone-event if offered) or makes one (PCMU, PCMA, telephone-event/8000 on 101);
//! - **plays** audio to a leg in real time (music on hold synthesised in code, 8 kHz
//!   16-bit mono WAV files, named prompts), one packet per ptime;
//! - **bridges** two legs: relays RTP both ways, rewriting SSRC, sequence numbers and
//!   timestamps so each outgoing stream stays continuous (after music on hold, across
//!   transfers), transcoding PCMU ↔ PCMA per packet when the legs' codecs differ, and
//!   forwarding telephone-events with the other leg's payload type;
//! - **detects** DTMF (RFC 4733, once per event), latches onto the real source of a
//!   leg's packets (symmetric RTP, for phones behind NAT), measures packets, loss,
//!   jitter and an estimated MOS per leg, and reports legs that go silent.
//!
//! Two ways in:
//!
//! - [`MediaAdapter::start`] puts it on the bus: it executes the
//!   [`MediaCommand`](call_engine_events::MediaCommand)s published on
//!   [`topics::MEDIA_COMMANDS`](call_engine_events::topics::MEDIA_COMMANDS) and
//!   publishes [`MediaEvent`](call_engine_events::MediaEvent)s (source `"media"`,
//!   correlation = the call, causation = the command).
//! - [`Media`] is the same thing without the bus: one async method per command, plus an
//!   ordered [`MediaEvents`] stream.
//!
//! ```no_run
//! use call_engine_media::{Media, MediaConfig};
//! use call_engine_events::{AudioSource, IdAllocator, Leg, Sdp};
//! use std::sync::Arc;
//!
//! # async fn demo() -> Result<(), call_engine_media::MediaError> {
//! let ids = Arc::new(IdAllocator::new());
//! let (media, mut events) = Media::new(MediaConfig::new("192.0.2.10".parse().unwrap()), ids.clone())?;
//! let call = ids.call();
//! let offer = Sdp("v=0\r\nc=IN IP4 192.0.2.20\r\nm=audio 40000 RTP/AVP 0 101\r\n\
//!                  a=rtpmap:101 telephone-event/8000\r\n".into());
//! let ep = media.allocate(call, Leg::Customer, Some(&offer)).await?;
//! println!("answer:\n{}", ep.local_sdp.0);
//! media.play(call, Leg::Customer, ids.playback(), &AudioSource::BuiltinMusic, true).await?;
//! while let Some(e) = events.recv().await {
//!     println!("{:?}", e.event);
//! }
//! # Ok(()) }
//! ```
//!
//! See the crate's README for the design and for why it does not build on
//! rvoip-rtp-core.

mod adapter;
pub mod audio;
mod config;
mod endpoint;
mod error;
pub mod g711;
mod media;
mod ports;
pub mod rtp;
pub mod sdp;
mod sink;
mod stats;

pub use adapter::{MediaAdapter, SOURCE};
pub use config::{MediaConfig, MohSource};
pub use endpoint::LegStats;
pub use error::MediaError;
pub use media::{Allocated, Media};
pub use sink::{EmittedEvent, MediaEvents};
pub use stats::mos_estimate;
