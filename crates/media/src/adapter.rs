//! The bus layer: [`MediaAdapter`] executes the `MediaCommand`s it receives on
//! [`topics::MEDIA_COMMANDS`] and publishes the resulting `MediaEvent`s.

use crate::config::MediaConfig;
use crate::error::MediaError;
use crate::media::Media;
use call_engine_bus::{EventBus, Filter, RecvError};
use call_engine_events::{topics, EngineEvent, IdAllocator};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// The source name of everything the media adapter publishes.
pub const SOURCE: &str = "media";

/// The media adapter on the bus.
///
/// - Subscribes to [`topics::MEDIA_COMMANDS`] (before [`start`](Self::start) returns, so
///   no command published afterwards is missed) and executes the commands one at a time,
///   in arrival order, with [`Media::execute`].
/// - Publishes every [`MediaEvent`](call_engine_events::MediaEvent) as
///   [`EngineEvent::Media`] from source `"media"`, with the call as correlation id and
///   the causing command's event id as causation id, in the order they happened
///   (waiting for room under back-pressure).
#[derive(Debug)]
pub struct MediaAdapter {
    media: Media,
    commands: JoinHandle<()>,
    forwarder: JoinHandle<()>,
}

impl MediaAdapter {
    /// Starts the adapter on `bus`. Must be called inside a tokio runtime.
    pub fn start(
        config: MediaConfig,
        bus: EventBus<EngineEvent>,
        ids: Arc<IdAllocator>,
    ) -> Result<MediaAdapter, MediaError> {
        let (media, mut events) = Media::new(config, ids)?;
        let mut rx = bus.subscribe(Filter::topic(topics::MEDIA_COMMANDS));
        let publisher = bus.publisher(SOURCE);
        let forwarder = tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                let ev = EngineEvent::Media(e.event);
                let corr = ev.correlation();
                if publisher.publish(corr, e.causation, ev).await.is_err() {
                    debug!("bus closed: media events no longer published");
                    break;
                }
            }
        });
        let m = media.clone();
        let commands = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let id = ev.id;
                        let cmd = match &ev.payload {
                            EngineEvent::MediaCommand(c) => c.clone(),
                            _ => continue,
                        };
                        drop(ev);
                        m.execute(cmd, Some(id)).await;
                    }
                    Err(RecvError::Lagged(n)) => {
                        warn!(missed = n, "media adapter missed shed commands");
                    }
                    Err(RecvError::Closed) => break,
                }
            }
            debug!("bus closed: media adapter stops");
            m.shutdown().await;
        });
        Ok(MediaAdapter {
            media,
            commands,
            forwarder,
        })
    }

    /// The direct API of the adapter's media (same endpoints, same event stream).
    pub fn media(&self) -> &Media {
        &self.media
    }

    /// Stops taking commands, releases every endpoint (publishing their `Released`
    /// events), and waits (up to a second) for the last events to be published.
    pub async fn shutdown(self) {
        self.commands.abort();
        let _ = self.commands.await;
        self.media.shutdown().await;
        drop(self.media);
        let mut forwarder = self.forwarder;
        if tokio::time::timeout(Duration::from_secs(1), &mut forwarder)
            .await
            .is_err()
        {
            forwarder.abort();
        }
    }
}
