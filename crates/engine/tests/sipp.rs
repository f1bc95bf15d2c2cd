//! SIPp interoperability tests: the whole engine in-process (SIP over UDP on loopback, a
//! real SQLite file), driven by SIPp, a SIP implementation that shares nothing with ours.
//! The scenarios are in `tests/sipp/` at the repository root (see its README.md).
//!
//! SIPp must be on PATH (`apt-get install -y sip-tester`); without it these tests fail,
//! unless `CALL_ENGINE_SKIP_SIPP=1` is set, in which case they say loudly that they were
//! skipped. Every SIPp process is killed when its test ends, passing or not. On failure
//! the test prints SIPp's exit code, its last statistics screen, its errors and the tail
//! of its message trace (`-trace_msg`), and keeps its working directory.
//! Timeouts are safety nets only; nothing asserts on speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine::config::{AgentSection, Config, MediaConfig, QueueSection, SipConfig};
use call_engine::Engine;
use call_engine_bus::Filter;
use call_engine_events::{topics, AgentId, Disposition, EngineEvent, Leg, MediaEvent, Side};
use call_engine_orchestrator::Strategy;
use call_engine_store::{Cdr, CdrQuery};
use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DOMAIN: &str = "test.local";

/// How long one SIPp run may take before it is killed (SIPp's own `-timeout` is shorter).
const SIPP_DEADLINE: Duration = Duration::from_secs(45);

// --- SIPp on PATH? ---------------------------------------------------------------------

/// True when SIPp is available; false (after a loud message) when it is missing and
/// `CALL_ENGINE_SKIP_SIPP=1`; panics with the install command otherwise.
fn sipp_available(test: &str) -> bool {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("sipp").is_file()))
        .unwrap_or(false);
    if on_path {
        return true;
    }
    if std::env::var("CALL_ENGINE_SKIP_SIPP").as_deref() == Ok("1") {
        // Straight to the process's stderr: the test harness captures `eprintln!`, and
        // a skip must be seen.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!(
                "\n\
                 ************************************************************************\n\
                 *** SKIPPED {test}: `sipp` is not on PATH and CALL_ENGINE_SKIP_SIPP=1.\n\
                 *** The SIPp interoperability test did NOT run.\n\
                 *** Install SIPp with `apt-get install -y sip-tester` to run it.\n\
                 ************************************************************************\n"
            )
            .as_bytes(),
        );
        return false;
    }
    panic!(
        "`sipp` (SIPp) is not on PATH, so the SIPp interoperability test {test} cannot run.\n\
         Install it with `apt-get install -y sip-tester` (Debian/Ubuntu package of SIPp),\n\
         or set CALL_ENGINE_SKIP_SIPP=1 to skip these tests explicitly."
    );
}

fn scenario(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/sipp")
        .join(name);
    p.canonicalize()
        .unwrap_or_else(|e| panic!("scenario {}: {e}", p.display()))
}

// --- ports -----------------------------------------------------------------------------

/// A UDP port free on 127.0.0.1 right now (SIPp cannot bind port 0 and report it).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// A free even port `p` with `p..=p+3` free too: SIPp's media port (`-mp`) and, with
/// `-rtp_echo`, the `+2` port it also echoes on, with their RTCP neighbours.
fn free_media_port() -> u16 {
    for _ in 0..200 {
        let p = free_udp_port() & !1;
        if !(1024..=65530).contains(&p) {
            continue;
        }
        let held: Vec<_> = (p..=p + 3)
            .map_while(|q| UdpSocket::bind(("127.0.0.1", q)).ok())
            .collect();
        if held.len() == 4 {
            return p;
        }
    }
    panic!("no four consecutive free UDP ports");
}

/// Distinct RTP port ranges per engine (tests run in parallel; e2e.rs uses 31000+).
fn rtp_range() -> std::ops::RangeInclusive<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    let start = 36000 + i * 200;
    start..=start + 199
}

// --- the engine under test -------------------------------------------------------------

/// An engine on its own runtime (its worker threads run it while the test thread waits
/// on SIPp), with a working directory for the SQLite file, CSV files and SIPp's logs.
struct Harness {
    name: String,
    rt: tokio::runtime::Runtime,
    engine: Option<Engine>,
    dir: PathBuf,
}

impl Harness {
    fn start(name: &str, strategy: Strategy, agents: &[&str]) -> Harness {
        let dir = std::env::temp_dir().join(format!(
            "call-engine-sipp-{}-{name}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = Config::demo();
        config.sip = SipConfig {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            tcp: None,
            domain: DOMAIN.into(),
            ..config.sip
        };
        config.media = MediaConfig {
            address: "127.0.0.1".parse().unwrap(),
            rtp_ports: rtp_range(),
        };
        config.store_url = format!("sqlite://{}", dir.join("engine.db").display());
        config.control_socket = None;
        config.queues = vec![QueueSection::new("support", strategy)];
        config.agents = agents
            .iter()
            .map(|a| AgentSection::new(a, &format!("{a}-secret"), &["support"]))
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let engine = rt.block_on(Engine::start(config)).expect("engine starts");
        Harness {
            name: name.into(),
            rt,
            engine: Some(engine),
            dir,
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("running")
    }

    fn sip(&self) -> SocketAddr {
        self.engine().sip_udp().expect("SIP over UDP")
    }

    /// A CSV injection file for agent_register*.xml: `id;[authentication ...]`.
    fn agents_csv(&self, file: &str, agents: &[(&str, &str)]) -> PathBuf {
        let mut s = String::from("SEQUENTIAL\n");
        for (id, password) in agents {
            s.push_str(&format!(
                "{id};[authentication username={id} password={password}]\n"
            ));
        }
        let p = self.dir.join(file);
        std::fs::write(&p, s).unwrap();
        p
    }

    /// Waits (up to 10 s) until the store holds at least `n` call records, then lists
    /// them (the recorder writes asynchronously).
    fn cdrs(&self, n: u64) -> Vec<Cdr> {
        let store = self.engine().store();
        self.rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(10);
            while store.count_cdrs(&CdrQuery::default()).await.unwrap() < n
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            store.list_cdrs(&CdrQuery::default()).await.unwrap()
        })
    }

    /// Starts a SIPp process for `scenario` with the arguments every run gets (loopback,
    /// its own SIP and media ports, a global timeout that fails the run, message and
    /// error traces, statistics), plus `args`, sending to `remote` (UAC) or listening
    /// on `port` (UAS).
    fn sipp(
        &self,
        label: &str,
        scenario_file: &str,
        port: u16,
        remote: Option<SocketAddr>,
        args: &[&str],
    ) -> Sipp {
        let log = |ext: &str| self.dir.join(format!("{label}.{ext}"));
        let mut cmd = Command::new("sipp");
        cmd.current_dir(&self.dir)
            .arg("-sf")
            .arg(scenario(scenario_file))
            .args([
                "-i",
                "127.0.0.1",
                "-nostdin",
                "-timeout",
                "30s",
                "-timeout_error",
            ])
            .args(["-p", &port.to_string()])
            .args(["-mp", &free_media_port().to_string()])
            .args(["-key", "domain", DOMAIN])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(log("messages.log"))
            .arg("-trace_err")
            .arg("-error_file")
            .arg(log("errors.log"))
            .arg("-trace_stat")
            .arg("-stf")
            .arg(log("stat.csv"))
            .args(args);
        if let Some(r) = remote {
            cmd.arg(r.to_string());
        }
        let stdout = std::fs::File::create(log("stdout.txt")).unwrap();
        let stderr = stdout.try_clone().unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sipp ({cmd:?}): {e}"));
        Sipp {
            label: format!("{}/{label}", self.name),
            child,
            status: None,
            dir: self.dir.clone(),
            file: label.into(),
        }
    }

    /// Registers `agents` (id, password) as reachable at 127.0.0.1:`contact_port` with
    /// agent_register.xml (or `scenario_file`), one SIPp call per agent.
    fn register(&self, scenario_file: &str, agents: &[(&str, &str)], contact_port: u16) -> Sipp {
        let csv = self.agents_csv(&format!("{scenario_file}.csv"), agents);
        let csv = csv.to_string_lossy().into_owned();
        let contact_port = contact_port.to_string();
        let m = agents.len().to_string();
        self.sipp(
            scenario_file.trim_end_matches(".xml"),
            scenario_file,
            free_udp_port(),
            Some(self.sip()),
            &[
                "-inf",
                &csv,
                // SIPp hashes remote_ip:port as the digest uri unless told; the engine
                // (rightly) wants the Request-URI, sip:<domain>.
                "-auth_uri",
                DOMAIN,
                "-key",
                "contact_host",
                "127.0.0.1",
                "-key",
                "contact_port",
                &contact_port,
                "-key",
                "expires",
                "600",
                "-r",
                "20",
                "-m",
                &m,
            ],
        )
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            self.rt.block_on(engine.shutdown());
        }
        if std::thread::panicking() {
            eprintln!(
                "{}: engine database and SIPp logs kept in {}",
                self.name,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `secs` seconds of 8 kHz mono G.711 µ-law audio as a WAV file (format tag 7), for
/// SIPp's `rtp_stream`: a 400 Hz tone.
fn pcmu_wav(secs: u32) -> Vec<u8> {
    let n = 8000 * secs;
    let data: Vec<u8> = (0..n)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            linear_to_ulaw((8000.0 * (2.0 * std::f64::consts::PI * 400.0 * t).sin()) as i16)
        })
        .collect();
    let mut w = Vec::with_capacity(58 + data.len());
    let u16le = |w: &mut Vec<u8>, v: u16| w.extend_from_slice(&v.to_le_bytes());
    let u32le = |w: &mut Vec<u8>, v: u32| w.extend_from_slice(&v.to_le_bytes());
    w.extend_from_slice(b"RIFF");
    u32le(&mut w, 4 + (8 + 18) + (8 + 4) + 8 + n);
    w.extend_from_slice(b"WAVEfmt ");
    u32le(&mut w, 18);
    u16le(&mut w, 7); // WAVE_FORMAT_MULAW
    u16le(&mut w, 1); // mono
    u32le(&mut w, 8000); // samples/s
    u32le(&mut w, 8000); // bytes/s
    u16le(&mut w, 1); // block align
    u16le(&mut w, 8); // bits/sample
    u16le(&mut w, 0); // no extension
    w.extend_from_slice(b"fact");
    u32le(&mut w, 4);
    u32le(&mut w, n);
    w.extend_from_slice(b"data");
    u32le(&mut w, n);
    w.extend_from_slice(&data);
    w
}

/// ITU-T G.711 µ-law encoding of one 16-bit sample.
fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let s = i32::from(sample);
    let sign: u8 = if s < 0 { 0x80 } else { 0 };
    let m = (s.abs().min(CLIP)) + BIAS;
    let exp = (0..8).rev().find(|e| m & (0x80 << e) != 0).unwrap_or(0);
    let mant = ((m >> (exp + 3)) & 0x0f) as u8;
    !(sign | ((exp as u8) << 4) | mant)
}

// --- SIPp processes --------------------------------------------------------------------

/// A running SIPp. Killed (and reaped) on drop, so a failing test leaves none behind.
struct Sipp {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
    dir: PathBuf,
    file: String,
}

impl Sipp {
    /// Waits for SIPp to exit (killing it after `SIPP_DEADLINE`) and asserts that it
    /// exited 0: every call of the scenario succeeded.
    fn expect_success(mut self) {
        let deadline = Instant::now() + SIPP_DEADLINE;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for sipp") {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.status = status;
        if status.map(|s| s.code()) == Some(Some(0)) {
            return;
        }
        let what = match status.and_then(|s| s.code()) {
            None if status.is_none() => format!("did not finish within {SIPP_DEADLINE:?}"),
            None => "was killed by a signal".to_string(),
            Some(1) => "exited 1: at least one call failed".to_string(),
            Some(97) => "exited 97: stopped by an internal command".to_string(),
            Some(99) => "exited 99: no call was processed".to_string(),
            Some(255) => "exited 255 (-1): fatal error".to_string(),
            Some(254) => "exited 254 (-2): fatal error binding a socket".to_string(),
            Some(c) => format!("exited {c}"),
        };
        panic!("SIPp {} {what}\n{}", self.label, self.report());
    }

    /// SIPp's last statistics screen, its errors and the tail of its message trace.
    fn report(&self) -> String {
        let read = |ext: &str| {
            std::fs::read_to_string(self.dir.join(format!("{}.{ext}", self.file)))
                .unwrap_or_default()
        };
        let tail = |s: String, lines: usize| {
            let v: Vec<&str> = s.lines().collect();
            v[v.len().saturating_sub(lines)..].join("\n")
        };
        format!(
            "--- stdout (tail) ---\n{}\n--- errors ---\n{}\n--- messages (tail) ---\n{}\n--- files in {} ---",
            tail(read("stdout.txt"), 60),
            tail(read("errors.log"), 40),
            tail(read("messages.log"), 120),
            self.dir.display()
        )
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --- the tests -------------------------------------------------------------------------

/// Two agents register through SIPp (digest, 401 then 200), one SIPp UAS answers for
/// both, a SIPp customer places ten calls at 5 per second: every call is answered,
/// queued, rung to an agent, bridged and hung up, and each leaves an Answered record.
#[test]
fn sipp_agents_register_and_answer_ten_customer_calls() {
    if !sipp_available("sipp_agents_register_and_answer_ten_customer_calls") {
        return;
    }
    let h = Harness::start("calls", Strategy::RoundRobin, &["alice", "bob"]);
    let uas_port = free_udp_port();
    h.register(
        "agent_register.xml",
        &[("alice", "alice-secret"), ("bob", "bob-secret")],
        uas_port,
    )
    .expect_success();

    let uas = h.sipp(
        "agent_uas",
        "agent_uas.xml",
        uas_port,
        None,
        &["-rtp_echo", "-m", "10"],
    );
    h.sipp(
        "customer_uac",
        "customer_uac.xml",
        free_udp_port(),
        Some(h.sip()),
        &["-s", "support", "-d", "500", "-r", "5", "-m", "10"],
    )
    .expect_success();
    uas.expect_success();

    let cdrs = h.cdrs(10);
    assert_eq!(cdrs.len(), 10, "one record per call: {cdrs:#?}");
    let mut agents = BTreeSet::new();
    for r in &cdrs {
        assert_eq!(r.disposition, Disposition::Answered, "{r:#?}");
        assert_eq!(r.hung_up_by, Side::Customer, "{r:#?}");
        assert!(r.caller_user.starts_with("cust"), "caller id kept: {r:#?}");
        assert!(r.agent_answered_at.is_some(), "{r:#?}");
        assert!(r.talk_secs > 0.2, "talked {} s: {r:#?}", r.talk_secs);
        agents.insert(r.agent.clone().expect("an agent took the call"));
    }
    assert_eq!(
        agents,
        BTreeSet::from([AgentId::new("alice"), AgentId::new("bob")]),
        "round robin uses both agents"
    );
}

/// The agent hangs up (SIPp UAS sends BYE): the engine ends the customer's leg with a
/// BYE the SIPp customer answers, and the records say the agent hung up.
#[test]
fn sipp_agent_hangs_up_and_the_customer_gets_a_bye() {
    if !sipp_available("sipp_agent_hangs_up_and_the_customer_gets_a_bye") {
        return;
    }
    let h = Harness::start("agentbye", Strategy::LongestIdleAgent, &["alice"]);
    let uas_port = free_udp_port();
    h.register("agent_register.xml", &[("alice", "alice-secret")], uas_port)
        .expect_success();
    let uas = h.sipp(
        "agent_uas_hangs_up",
        "agent_uas_hangs_up.xml",
        uas_port,
        None,
        &["-d", "300", "-m", "3"],
    );
    h.sipp(
        "customer_agent_hangs_up",
        "customer_agent_hangs_up.xml",
        free_udp_port(),
        Some(h.sip()),
        &["-s", "support", "-r", "5", "-m", "3"],
    )
    .expect_success();
    uas.expect_success();

    let cdrs = h.cdrs(3);
    assert_eq!(cdrs.len(), 3, "{cdrs:#?}");
    for r in &cdrs {
        assert_eq!(r.disposition, Disposition::Answered, "{r:#?}");
        assert_eq!(r.hung_up_by, Side::Agent, "{r:#?}");
        assert_eq!(r.agent, Some(AgentId::new("alice")), "{r:#?}");
    }
}

/// A SIPp customer calling a queue that does not exist gets 404 (and its ACK ends the
/// transaction: no retransmitted 404 reaches SIPp afterwards).
#[test]
fn sipp_unknown_queue_gets_404() {
    if !sipp_available("sipp_unknown_queue_gets_404") {
        return;
    }
    let h = Harness::start("404", Strategy::LongestIdleAgent, &["alice"]);
    h.sipp(
        "customer_404",
        "customer_404.xml",
        free_udp_port(),
        Some(h.sip()),
        &["-s", "nosuchqueue", "-r", "10", "-m", "2"],
    )
    .expect_success();
}

/// A SIPp agent with a wrong password, and a user the engine does not know, get 403
/// after the digest challenge; the right password still registers afterwards.
#[test]
fn sipp_wrong_password_gets_403() {
    if !sipp_available("sipp_wrong_password_gets_403") {
        return;
    }
    let h = Harness::start("403", Strategy::LongestIdleAgent, &["alice"]);
    let contact = free_udp_port();
    h.register(
        "agent_register_403.xml",
        &[("alice", "not-alices-password"), ("mallory", "whatever")],
        contact,
    )
    .expect_success();
    h.register("agent_register.xml", &[("alice", "alice-secret")], contact)
        .expect_success();
}

/// Audio through the bridge: the SIPp customer streams a µ-law WAV with `rtp_stream`,
/// the engine relays it to the agent leg, the SIPp agent phone echoes it (`-rtp_echo`)
/// and the engine relays the echo back. The media adapter's final quality reports show
/// RTP received on both legs.
#[test]
fn sipp_rtp_flows_through_the_bridge() {
    if !sipp_available("sipp_rtp_flows_through_the_bridge") {
        return;
    }
    let h = Harness::start("rtp", Strategy::LongestIdleAgent, &["alice"]);
    // Collect quality reports (the media adapter sends a last one when a leg ends).
    let quality = Arc::new(Mutex::new(Vec::new()));
    let mut media = h
        .engine()
        .bus()
        .subscribe(Filter::topic(topics::MEDIA_EVENTS));
    let q = quality.clone();
    h.rt.spawn(async move {
        while let Ok(ev) = media.recv().await {
            if let EngineEvent::Media(MediaEvent::Quality { leg, quality, .. }) = &ev.payload {
                q.lock().unwrap().push((*leg, *quality));
            }
        }
    });
    std::fs::write(h.dir.join("pcmu.wav"), pcmu_wav(1)).unwrap();

    let uas_port = free_udp_port();
    h.register("agent_register.xml", &[("alice", "alice-secret")], uas_port)
        .expect_success();
    let uas = h.sipp(
        "agent_uas",
        "agent_uas.xml",
        uas_port,
        None,
        &["-rtp_echo", "-m", "1"],
    );
    h.sipp(
        "customer_uac_rtp",
        "customer_uac_rtp.xml",
        free_udp_port(),
        Some(h.sip()),
        &["-s", "support", "-d", "1500", "-m", "1"],
    )
    .expect_success();
    uas.expect_success();
    let cdrs = h.cdrs(1);
    assert_eq!(cdrs.len(), 1);
    assert_eq!(cdrs[0].disposition, Disposition::Answered, "{cdrs:#?}");

    let deadline = Instant::now() + Duration::from_secs(5);
    let received = |leg: Leg| {
        quality
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| *l == leg)
            .map(|(_, q)| q.packets_received)
            .max()
            .unwrap_or(0)
    };
    while (received(Leg::Customer) == 0 || received(Leg::Agent) == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (from_customer, from_agent) = (received(Leg::Customer), received(Leg::Agent));
    eprintln!("RTP packets received: customer leg {from_customer}, agent leg {from_agent}");
    // ~1.5 s of 20 ms packets is ~75; the bridge starts a little after the ACK.
    assert!(
        from_customer >= 25,
        "RTP from the SIPp customer reached the engine: {from_customer} packets; {:?}",
        quality.lock().unwrap()
    );
    assert!(
        from_agent >= 25,
        "the relayed RTP came back from the SIPp agent's echo: {from_agent} packets; {:?}",
        quality.lock().unwrap()
    );
}
