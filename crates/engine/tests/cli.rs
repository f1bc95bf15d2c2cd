//! The `call-engine` binary: `check-config` and `serve` reject bad configuration at
//! start, naming the offending key and its line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("call-engine-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = r#"[sip]
udp = "127.0.0.1:5999"
domain = "example.test"

[media]
address = "127.0.0.1"
rtp_ports = "20000-20100"

[store]
url = "sqlite://data/cli-test.db"

[[queue]]
name = "support"
strategy = "round-robin"

[[agent]]
id = "alice"
password = "alice-secret"
queues = ["support"]
"#;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_call-engine"))
}

#[test]
fn check_config_accepts_a_valid_file() {
    let p = write("good.toml", GOOD);
    let out = bin().arg("check-config").arg(&p).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("valid (1 queue(s), 1 agent(s))"),
        "{stdout}"
    );
}

#[test]
fn check_config_names_the_key_and_line_of_a_bad_value() {
    let p = write(
        "bad-strategy.toml",
        &GOOD.replace("round-robin", "fastest-agent"),
    );
    let out = bin().arg("check-config").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 14"), "{stderr}");
    assert!(stderr.contains("queue[0].strategy"), "{stderr}");
    assert!(stderr.contains("fastest-agent"), "{stderr}");
}

#[test]
fn serve_refuses_to_start_with_a_bad_config() {
    let p = write(
        "bad-queue-ref.toml",
        &GOOD.replace("queues = [\"support\"]", "queues = [\"sales\"]"),
    );
    let out = bin().arg("serve").arg("--config").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 19") && stderr.contains("agent[0].queues[0]"),
        "{stderr}"
    );
}

#[test]
fn unknown_keys_and_syntax_errors_name_the_line() {
    let p = write("typo.toml", &GOOD.replace("domain = ", "domian = "));
    let out = bin().arg("check-config").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("domian"),
        "{stderr}"
    );
    let p = write("missing.toml", "");
    let out = bin()
        .arg("check-config")
        .arg(p.with_file_name("does-not-exist.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

/// A free UDP port on loopback (bound and released; good enough for one test).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running engine's files: its directory, its config and its SIP port.
struct Live {
    dir: std::path::PathBuf,
    config: std::path::PathBuf,
    port: u16,
}

impl Live {
    /// Writes [`GOOD`] for a live engine named `name` (its own directory, store, free SIP
    /// port and `rtp` ports), plus `extra`.
    fn new(name: &str, rtp: &str, extra: &str) -> Live {
        let port = free_udp_port();
        let dir = std::env::temp_dir().join(format!(
            "call-engine-cli-{name}-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = GOOD
            .replace("127.0.0.1:5999", &format!("127.0.0.1:{port}"))
            .replace("20000-20100", rtp)
            .replace("sqlite://data/cli-test.db", &Live::url_in(&dir))
            + extra;
        let config = dir.join("engine.toml");
        std::fs::write(&config, cfg).unwrap();
        Live { dir, config, port }
    }

    fn url_in(dir: &std::path::Path) -> String {
        format!("sqlite://{}", dir.join("engine.db").display())
    }

    /// The store's URL.
    fn url(&self) -> String {
        Live::url_in(&self.dir)
    }

    /// `call-engine serve` on this config, its output to `stdout`.
    fn serve(&self, stdout: std::process::Stdio) -> std::process::Child {
        bin()
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(stdout)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }
}

#[test]
fn the_command_line_asks_the_running_engine() {
    let live = Live::new(
        "live",
        "36000-36100",
        "\n[control]\nsocket = \"engine.sock\"\n",
    );
    let p = &live.config;

    // Nobody listening yet: a clear error, not a hang.
    let out = bin().args(["stats", "--config"]).arg(p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the engine"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut engine = live.serve(std::process::Stdio::null());
    let ask = |args: &[&str]| {
        let mut out = None;
        for _ in 0..100 {
            let o = bin().args(args).arg("--config").arg(p).output().unwrap();
            if o.status.success() || !String::from_utf8_lossy(&o.stderr).contains("cannot reach") {
                out = Some(o);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        out.expect("the engine answers")
    };
    let stats = ask(&["stats"]);
    let text = String::from_utf8_lossy(&stats.stdout).to_string();
    let agents = ask(&["agents"]);
    let agents_text = String::from_utf8_lossy(&agents.stdout).to_string();
    let brk = ask(&["status", "alice", "break:lunch"]);
    let brk_text = String::from_utf8_lossy(&brk.stdout).to_string();
    let bad = ask(&["status", "alice", "asleep"]);
    let json = ask(&["stats", "--json"]);
    let _ = engine.kill();
    let _ = engine.wait();

    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    assert!(text.contains("queue support: 0 waiting"), "{text}");
    assert!(text.contains("offered 0"), "{text}");
    assert!(agents_text.contains("alice: available"), "{agents_text}");
    assert!(agents_text.contains("not registered"), "{agents_text}");
    assert!(brk.status.success());
    assert!(brk_text.contains("on break (lunch)"), "{brk_text}");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("`asleep` is not a status"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["queues"][0]["queue"], "support");
}

/// `kill` (SIGTERM, how systemd and container runtimes stop a service) ends the engine as
/// Ctrl-C does: the waiting caller gets a BYE, the call its record, and the process exits
/// cleanly.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_the_engine_down_gracefully() {
    use call_engine_events::Side;
    use call_engine_store::{CdrQuery, Store};
    use std::io::BufRead;
    use std::time::Duration;

    let live = Live::new("term", "36200-36300", "");
    let mut engine = live.serve(std::process::Stdio::piped());
    let stdout = engine.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let wait_line = |what: &str| loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.contains(what) => break l,
            Ok(_) => {}
            Err(e) => panic!("no line with `{what}` from the engine: {e}"),
        }
    };
    // The banner comes once the engine listens.
    wait_line("call-engine is running");

    let server = format!("127.0.0.1:{}", live.port).parse().unwrap();
    let mut caller = call_engine_testkit::Phone::new("4006", "example.test", server).await;
    let _d = caller.call("support", 0).await.expect("queued");
    let pid = engine.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());

    assert!(
        caller
            .recv_where(Duration::from_secs(10), |m| m.method() == Some("BYE"))
            .await
            .is_some(),
        "the caller is told the call is over"
    );
    wait_line("SIGTERM: shutting down");
    let mut status = None;
    for _ in 0..300 {
        if let Some(s) = engine.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(status) = status else {
        let _ = engine.kill();
        panic!("the engine did not exit within 30 s of SIGTERM");
    };
    assert!(status.success(), "a clean exit: {status:?}");

    let store = Store::open(&live.url()).await.unwrap();
    let cdrs = store.list_cdrs(&CdrQuery::default()).await.unwrap();
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    assert_eq!(cdrs[0].hung_up_by, Side::Engine, "{:?}", cdrs[0]);
    store.close().await;
    let _ = std::fs::remove_dir_all(&live.dir);
}
