//! Project automation, in the `cargo xtask` pattern (`.cargo/config.toml` aliases
//! `cargo xtask` to this binary).
//!
//! - `cargo xtask test`: everything CI checks: formatting, clippy (warnings are errors) and
//!   the whole test suite. This is the command README.md and `.ci/run` use.
//! - `cargo xtask bench [bus] [--quick]`: benchmarks that compare call-engine with the
//!   field and print the figures with ratios.

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
    let what: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let flags: Vec<&str> = args
        .iter()
        .filter(|a| a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let all = what.is_empty();
    for w in &what {
        if !["bus"].contains(w) {
            return Err(format!("unknown benchmark `{w}` (known: bus)"));
        }
    }
    if all || what.contains(&"bus") {
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
        cmd.args(&flags);
        run("bench bus", cmd)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  test [cargo test args]   fmt check, clippy -D warnings, docs, all tests, bench smoke run\n  bench [bus] [--quick]    benchmarks against the field (release build)"
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
