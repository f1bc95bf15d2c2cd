//! Project automation, in the `cargo xtask` pattern (`.cargo/config.toml` aliases
//! `cargo xtask` to this binary).
//!
//! - `cargo xtask test`: everything CI checks: formatting, clippy (warnings are errors) and
//!   the whole test suite. This is the command README.md and `.ci/run` use.
//! - `cargo xtask bench [bus|sip|routing|acd] [--quick]`: benchmarks that compare call-engine with the
//!   field and print the figures with ratios. `bench bus`: the event bus against
//!   rvoip-infra-common, tokio and crossbeam. `bench sip`: the highest call rate the whole
//!   call-center flow sustains without a failed call, and its setup latency, measured
//!   with SIPp (see `bench_sip.rs`; `cargo xtask bench sip --help`).

mod bench_sip;

use std::process::{Command, ExitCode};

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

    // The benchmark harness must keep working: a short smoke run in release.
    let mut bench = cargo();
    bench.args([
        "run",
        "--release",
        "--locked",
        "-p",
        "call-engine-benches",
        "--bin",
        "bus-compare",
        "--",
        "--smoke",
    ]);
    run("benchmark smoke run", bench)
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
                "usage: cargo xtask <command>\n\n  test [cargo test args]     fmt check, clippy -D warnings, docs, all tests, bench smoke run\n  bench [bus|sip] [--quick]  benchmarks against the field (release build; bench sip --help)"
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
