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
