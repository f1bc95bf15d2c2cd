//! call-engine-media on the bus: allocates an RTP endpoint toward a phone (or any UDP
//! listener) at HOST:PORT, as if answering its PCMU offer, and plays the built-in music
//! on hold to it for N seconds, printing every media event.
//!
//! `cargo run -p call-engine-examples --example media_moh -- 127.0.0.1:40000 10`
//!
//! Arguments: the far end's RTP address (default 127.0.0.1:40000) and the duration in
//! seconds (default 5). To hear it, capture with `tcpdump -i lo -w moh.pcap udp port
//! 40000` and play the stream in Wireshark (Telephony → RTP → RTP Streams → Play).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine_bus::{EventBus, EventBusConfig, Filter};
use call_engine_events::{
    topics, AudioSource, EngineEvent, IdAllocator, Leg, MediaCommand, MediaEvent, Sdp,
};
use call_engine_media::{MediaAdapter, MediaConfig};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// The local address that routes to `target` (what we bind and advertise).
fn local_ip_toward(target: SocketAddr) -> IpAddr {
    let any: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(target)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(any.ip())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let target: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:40000".into())
        .parse()?;
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);

    let bus = EventBus::<EngineEvent>::new(EventBusConfig::default())?;
    let ids = Arc::new(IdAllocator::new());
    let mut config = MediaConfig::new(local_ip_toward(target));
    config.rtp_ports = 30000..=30099;
    config.quality_interval = Duration::from_secs(2);
    let adapter = MediaAdapter::start(config, bus.clone(), ids.clone())?;

    let mut media_events = bus.subscribe(Filter::topic(topics::MEDIA_EVENTS));
    tokio::spawn(async move {
        while let Ok(e) = media_events.recv().await {
            if let EngineEvent::Media(ev) = &e.payload {
                match ev {
                    MediaEvent::EndpointReady { local_sdp, .. } => {
                        println!("[{}] EndpointReady, our answer:\n{}", e.source, local_sdp.0)
                    }
                    other => println!("[{}] {other:?}", e.source),
                }
            }
        }
    });

    // The far end's offer: PCMU and telephone-event at `target`.
    let fam = if target.is_ipv4() { "IP4" } else { "IP6" };
    let offer = Sdp(format!(
        "v=0\r\no=phone 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n",
        ip = target.ip(),
        port = target.port()
    )
    .into());

    let orchestrator = bus.publisher("example");
    let call = ids.call();
    let send = |cmd: MediaCommand| {
        let p = orchestrator.clone();
        async move {
            p.publish(call.into(), None, EngineEvent::MediaCommand(cmd))
                .await
                .map(drop)
        }
    };
    send(MediaCommand::Allocate {
        call,
        leg: Leg::Customer,
        remote_offer: Some(offer),
    })
    .await?;
    send(MediaCommand::Play {
        call,
        leg: Leg::Customer,
        playback: ids.playback(),
        source: AudioSource::BuiltinMusic,
        looped: true,
    })
    .await?;
    println!("playing music on hold to {target} for {seconds} s");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    send(MediaCommand::Release {
        call,
        leg: Leg::Customer,
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    adapter.shutdown().await;
    Ok(())
}
