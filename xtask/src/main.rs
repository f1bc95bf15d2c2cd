//! Project automation, in the `cargo xtask` pattern (`.cargo/config.toml` aliases
//! `cargo xtask` to this binary).
//!
//! - `cargo xtask test`: everything CI checks: formatting, clippy (warnings are errors),
//!   docs, the whole test suite, every example run to completion, the loom model tests of
//!   the bus's ring and pool, the bus's unit and behaviour tests under valgrind's
//!   memcheck, and a benchmark smoke run. This is the command README.md and `.ci/run`
//!   use.
//! - `cargo xtask bench [bus|sip|routing|acd] [--quick]`: benchmarks that compare call-engine with the
//!   field and print the figures with ratios. `bench bus`: the event bus against
//!   rvoip-infra-common, tokio and crossbeam. `bench sip`: the highest call rate the whole
//!   call-center flow sustains without a failed call, and its setup latency, measured
//!   with SIPp (see `bench_sip.rs`; `cargo xtask bench sip --help`).

mod bench_sip;

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(step: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("xtask: {step}: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

/// Extra arguments of the examples that would otherwise run until interrupted.
const EXAMPLE_ARGS: &[(&str, &[&str])] = &[
    // For 1 second, on an ephemeral port.
    ("session_registrar", &["1", "0"]),
];

/// Longest an example may run.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The examples declared in `examples/Cargo.toml` (the `name` of each `[[example]]`
/// section), in order.
fn example_names() -> Result<Vec<String>, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("examples: cannot read {}: {e}", path.display()))?;
    parse_example_names(&text).map_err(|e| format!("examples: {e} in {}", path.display()))
}

/// The `name` of each `[[example]]` section of a manifest's text.
fn parse_example_names(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut in_example = false;
    for line in text.lines() {
        // Comments are not part of the value.
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_example = line == "[[example]]";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if in_example && key.trim() == "name" {
            let value = value.trim();
            let name = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .ok_or_else(|| format!("unquoted example name `{value}`"))?;
            names.push(name.to_string());
        }
    }
    if names.is_empty() {
        return Err("no [[example]]".into());
    }
    Ok(names)
}

/// Builds every example (untimed), then runs each within [`EXAMPLE_TIMEOUT`]; fails on
/// the first that exits with an error or does not finish, printing what it wrote.
fn run_examples() -> Result<(), String> {
    let mut build = cargo();
    build.args([
        "build",
        "--locked",
        "-p",
        "call-engine-examples",
        "--examples",
    ]);
    run("examples build", build)?;
    let out_dir = std::env::temp_dir().join(format!("call-engine-xtask-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("examples: {e}"))?;
    for name in example_names()? {
        let extra = EXAMPLE_ARGS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&[][..], |(_, a)| *a);
        let step = format!("example {name}");
        // Output goes to a file (a pipe nobody reads while waiting could fill up).
        let out_path = out_dir.join(format!("{name}.out"));
        let out = std::fs::File::create(&out_path).map_err(|e| format!("{step}: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("{step}: {e}"))?;
        let mut cmd = cargo();
        cmd.args([
            "run",
            "--locked",
            "-q",
            "-p",
            "call-engine-examples",
            "--example",
            &name,
            "--",
        ])
        .args(extra)
        .stdout(out)
        .stderr(err);
        eprintln!("xtask: {step}: {cmd:?}");
        let result = wait_with_timeout(&mut cmd, EXAMPLE_TIMEOUT);
        if let Err(e) = result {
            let printed = std::fs::read_to_string(&out_path).unwrap_or_default();
            return Err(format!("{step}: {e}\n--- its output ---\n{printed}"));
        }
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok(())
}

/// Runs `cmd`, killing it if it outlives `limit`; Ok only for a successful exit.
fn wait_with_timeout(cmd: &mut Command, limit: Duration) -> Result<(), String> {
    let mut child = cmd.spawn().map_err(|e| format!("could not start: {e}"))?;
    let deadline = Instant::now() + limit;
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break Ok(()),
            Ok(Some(status)) => break Err(format!("failed ({status})")),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Ok(None) => break Err(format!("did not finish within {} s", limit.as_secs())),
            Err(e) => break Err(format!("cannot wait for it: {e}")),
        }
    };
    if outcome.is_err() {
        // Still running (or in an unknown state): never leave it behind.
        let _ = child.kill();
        let _ = child.wait();
    }
    outcome
}

/// The loom model tests of the bus's ring and envelope pool (`crates/bus/src/ring_loom.rs`,
/// `pool_loom.rs`): the bus built with loom's atomics (`--cfg bus_loom`, warnings denied),
/// in release (loom explores thousands of interleavings), in a target directory of its
/// own so that the flag does not invalidate the main build. `CARGO_ENCODED_RUSTFLAGS`
/// would override `RUSTFLAGS` (and, without the cfg, the filter would match no test and
/// pass): it is removed.
fn loom_tests() -> Command {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    flags.push_str(" --cfg bus_loom -D warnings");
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--locked",
        "--release",
        "-p",
        "call-engine-bus",
        "--lib",
        "--",
        "loom_",
    ])
    .env("RUSTFLAGS", flags.trim())
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env("CARGO_TARGET_DIR", target.join("loom"));
    cmd
}

/// How long the memcheck step may take (about 4 minutes here, plus a debug build of the
/// bus alone: selecting one package can change which features its dependencies are
/// built with).
const MEMCHECK_TIMEOUT: Duration = Duration::from_secs(900);

/// The bus's unit tests (its lock-free ring and envelope pool on real threads) and its
/// behaviour tests (the whole bus: publishers, receivers, fan-out, pool, shedding, close)
/// under valgrind's memcheck: an invalid read or write, a double free or a use of
/// uninitialised memory in the unsafe code fails the run (leaks are not counted).
/// `--fair-sched`: valgrind runs one thread at a time, and its default lock can starve a
/// publisher between its claim and its commit for seconds; one test at a time, as
/// valgrind would run them anyway.
fn memcheck() -> Command {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--locked",
        "-p",
        "call-engine-bus",
        "--lib",
        "--test",
        "bus_behaviour",
        "--config",
        "target.'cfg(all())'.runner=['valgrind','--error-exitcode=9','--fair-sched=yes','-q']",
        "--",
        "--test-threads",
        "1",
    ]);
    cmd
}

fn test(args: &[String]) -> Result<(), String> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("format check", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]);
    run("clippy", clippy)?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--locked"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run("docs", doc)?;

    let mut tests = cargo();
    tests.args(["test", "--workspace", "--locked"]);
    tests.args(args);
    run("tests", tests)?;

    // Every crate's example must run to completion (built by the tests above), then the
    // bus's loom model tests and memcheck run. All skipped for a filtered run (`cargo
    // xtask test <filter>`).
    if args.is_empty() {
        run_examples()?;
        run("loom model tests", loom_tests())?;
        let step = "memcheck of the bus's unit and behaviour tests";
        let mut cmd = memcheck();
        eprintln!("xtask: {step}: {cmd:?}");
        wait_with_timeout(&mut cmd, MEMCHECK_TIMEOUT).map_err(|e| format!("{step}: {e}"))?;
    }

    // The benchmark harness must keep working: a short smoke run in release, which fails
    // if our bus loses an event; then the throughput publishers' batch calls.
    let smoke = |extra: &[&str]| {
        let mut cmd = cargo();
        cmd.args([
            "run",
            "--release",
            "--locked",
            "-p",
            "call-engine-benches",
            "--bin",
            "bus-compare",
            "--",
            "--smoke",
        ])
        .args(extra);
        cmd
    };
    run("benchmark smoke run", smoke(&[]))?;
    run(
        "benchmark smoke run, batch publish",
        smoke(&["--scenario", "i", "--batch", "16"]),
    )
}

fn bench(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("bus") => bench_bus(&args[1..]),
        Some("sip") => bench_sip::run(&args[1..], cargo),
        Some("routing") => bench_routing(),
        Some("acd") => bench_acd(&args[1..]),
        Some(w) if !w.starts_with('-') => Err(format!(
            "unknown benchmark `{w}` (known: bus, sip, routing, acd)"
        )),
        // All of them; only the flags they share (--quick) make sense here.
        _ => {
            if let Some(f) = args.iter().find(|a| a.as_str() != "--quick") {
                return Err(format!(
                    "`{f}`: name the benchmark (`bench bus {f}` or `bench sip {f}`)"
                ));
            }
            bench_bus(args)?;
            bench_routing()?;
            bench_acd(args)?;
            bench_sip::run(args, cargo)
        }
    }
}

/// Routing decision time with 10,000 agents across 100 queues (criterion plus a p99
/// measurement loop), in the orchestrator crate.
fn bench_routing() -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args([
        "bench",
        "-p",
        "call-engine-orchestrator",
        "--bench",
        "routing",
    ]);
    run("bench routing", cmd)
}

/// Time from an agent becoming available to the INVITE leaving for them, with the whole
/// engine in-process over loopback SIP (target p99 ≤ 5 ms).
fn bench_acd(flags: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args([
        "bench",
        "--locked",
        "-p",
        "call-engine",
        "--bench",
        "agent_available",
        "--",
    ]);
    cmd.args(flags);
    run("bench acd", cmd)
}

fn bench_bus(flags: &[String]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "call-engine-benches",
        "--bin",
        "bus-compare",
        "--",
    ]);
    cmd.args(flags);
    run("bench bus", cmd)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  test [cargo test args]     fmt check, clippy -D warnings, docs, all tests, examples, bench smoke run\n  bench [bus|sip|routing|acd] [--quick]  benchmarks against the field (release build; bench sip --help)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example source file is declared (so `cargo xtask test` runs it), and the
    /// extra arguments name declared examples.
    #[test]
    fn every_example_file_is_declared_and_run() {
        let names = example_names().expect("examples/Cargo.toml lists examples");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("examples dir")
            .filter_map(|e| {
                let p = e.ok()?.path();
                let stem = p.file_stem()?.to_str()?.to_string();
                (p.extension()? == "rs" && stem != "lib").then_some(stem)
            })
            .collect();
        files.sort();
        let mut declared = names.clone();
        declared.sort();
        assert_eq!(declared, files);
        for (name, _) in EXAMPLE_ARGS {
            assert!(names.iter().any(|n| n == name), "{name} is not an example");
        }
        assert!(names.iter().any(|n| n == "engine_embedded"));
    }

    #[test]
    fn example_names_are_parsed_from_their_sections_only() {
        let text = r#"
[package]
name = "call-engine-examples"

[[example]]
name = "a"   # a comment
path = "a.rs"

[[example]]
path = "b.rs"
name='b'

[dependencies]
name_like = "x"
"#;
        assert_eq!(parse_example_names(text), Ok(vec!["a".into(), "b".into()]));
        assert!(parse_example_names("[[example]]\nname = c\n").is_err());
        assert!(parse_example_names("[package]\nname = \"p\"\n").is_err());
    }

    #[test]
    fn a_command_that_fails_or_overruns_is_reported_and_killed() {
        assert_eq!(
            wait_with_timeout(&mut Command::new("true"), Duration::from_secs(5)),
            Ok(())
        );
        let failed = wait_with_timeout(&mut Command::new("false"), Duration::from_secs(5));
        assert!(failed.is_err_and(|e| e.contains("failed")));
        let started = Instant::now();
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let overran = wait_with_timeout(&mut sleep, Duration::from_millis(300));
        assert!(overran.is_err_and(|e| e.contains("did not finish")));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "killed, not waited for"
        );
    }
}
