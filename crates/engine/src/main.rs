//! `call-engine`: the call-center engine binary.
//!
//! - `call-engine serve [--config FILE]`: run the engine (without `--config`: the embedded
//!   demo configuration on loopback).
//! - `call-engine check-config FILE`: validate a configuration file and exit.
//! - `call-engine stats|agents|explain|status|login|logout [--config FILE]`: ask the
//!   running engine (over its control socket) for live statistics, agents, a call's
//!   routing decisions, or change an agent's status and queues.

use call_engine::config;
use call_engine::control::{self, ControlRequest};
use call_engine::report;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of the system allocator: the engine allocates and frees many small
/// buffers per SIP message and per event, spread over the runtime's worker threads, and
/// glibc's malloc spent about 11% of the engine's CPU on it at 300 calls/s (`perf`; the
/// README's SIP figures compare the two).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "call-engine",
    version,
    about = "An open-source call-center engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine.
    Serve {
        /// Configuration file (TOML). Without it, the embedded demo configuration is used.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit (0 when valid).
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Live statistics per queue and agent (from the running engine).
    Stats {
        #[command(flatten)]
        target: Target,
    },
    /// Agents: status, activity, contact, queues (from the running engine).
    Agents {
        #[command(flatten)]
        target: Target,
    },
    /// The routing decisions made for a call: candidates, scores, why each was skipped.
    Explain {
        /// The call id (as logged, and in call records).
        call: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Set an agent's status: available, available-on-demand, logged-out, break,
    /// break:<reason>.
    Status {
        /// The agent.
        agent: String,
        /// The status.
        status: String,
        #[command(flatten)]
        target: Target,
    },
    /// Log an agent into a queue.
    Login {
        /// The agent.
        agent: String,
        /// The queue.
        queue: String,
        /// Tier level (1 = first).
        #[arg(long)]
        level: Option<u8>,
        /// Position (top-down order).
        #[arg(long)]
        position: Option<u32>,
        /// Penalty.
        #[arg(long)]
        penalty: Option<u32>,
        #[command(flatten)]
        target: Target,
    },
    /// Log an agent out of a queue.
    Logout {
        /// The agent.
        agent: String,
        /// The queue.
        queue: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Which engine to ask.
#[derive(clap::Args)]
struct Target {
    /// The engine's configuration file (its `[control] socket` is used). Without it,
    /// the demo configuration's socket.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the raw JSON answer.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match config::Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: valid ({} queue(s), {} agent(s))",
                    file.display(),
                    c.queues.len(),
                    c.agents.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(2)
            }
        },
        Command::Serve { config } => serve(config),
        Command::Stats { target } => ask(target, ControlRequest::Stats),
        Command::Agents { target } => ask(target, ControlRequest::Agents),
        Command::Explain { call, target } => ask(target, ControlRequest::Explain { call }),
        Command::Status {
            agent,
            status,
            target,
        } => ask(target, ControlRequest::SetStatus { agent, status }),
        Command::Login {
            agent,
            queue,
            level,
            position,
            penalty,
            target,
        } => ask(
            target,
            ControlRequest::Login {
                agent,
                queue,
                level,
                position,
                penalty,
            },
        ),
        Command::Logout {
            agent,
            queue,
            target,
        } => ask(target, ControlRequest::Logout { agent, queue }),
    }
}

/// Sends one request to the running engine and prints the answer.
fn ask(target: Target, req: ControlRequest) -> ExitCode {
    let cfg = match &target.config {
        Some(p) => match config::Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => config::Config::demo(),
    };
    let Some(socket) = cfg.control_socket.clone() else {
        eprintln!("the configuration has no [control] socket: the engine cannot be asked");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answer = rt.block_on(control::request(&socket, &req));
    match answer {
        Err(e) => {
            eprintln!("call-engine: {e}");
            ExitCode::FAILURE
        }
        Ok(r) if !r.ok => {
            eprintln!("call-engine: {}", r.error.unwrap_or_default());
            ExitCode::FAILURE
        }
        Ok(r) => {
            let result = r.result.unwrap_or(serde_json::Value::Null);
            if target.json {
                println!("{result}");
            } else {
                print!("{}", report::render(&req, &result));
            }
            ExitCode::SUCCESS
        }
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let (cfg, demo) = match &path {
        Some(p) => match config::Config::load(p) {
            Ok(c) => (c, false),
            Err(e) => {
                eprintln!("{}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => (config::Config::demo(), true),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let mut stop = match StopSignals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("call-engine: cannot listen for stop signals: {e}");
                return ExitCode::FAILURE;
            }
        };
        // A start that hangs (a busy database, say) can still be interrupted.
        let started = tokio::select! {
            r = call_engine::Engine::start(cfg.clone()) => r,
            signal = stop.next() => {
                eprintln!("call-engine: {signal} while starting: stopped");
                return ExitCode::FAILURE;
            }
        };
        let engine = match started {
            Ok(e) => e,
            Err(e) => {
                eprintln!("call-engine: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        print_banner(&cfg, demo, &engine);
        let signal = stop.next().await;
        println!("\n{signal}: shutting down...");
        // Live calls get their BYE and records; a second signal does not wait for it.
        tokio::select! {
            () = engine.shutdown() => ExitCode::SUCCESS,
            again = stop.next() => {
                eprintln!("{again} again: exiting without waiting for the shutdown");
                ExitCode::FAILURE
            }
        }
    })
}

/// The signals that stop the engine: Ctrl-C (SIGINT) and, on Unix, SIGTERM (what
/// `kill`, systemd and container runtimes send to stop a service). Installed before the
/// engine starts, so that a signal during start-up is not fatal but handled once the
/// engine runs.
struct StopSignals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// The next stop signal's name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            "Ctrl-C"
        }
    }
}

fn print_banner(cfg: &config::Config, demo: bool, engine: &call_engine::Engine) {
    let addr = engine
        .sip_udp()
        .or(engine.sip_tcp())
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!(
        "call-engine is running{}",
        if demo {
            " (embedded demo configuration)"
        } else {
            ""
        }
    );
    println!(
        "  SIP: udp {:?}, tcp {:?}; domain {}",
        engine.sip_udp(),
        engine.sip_tcp(),
        cfg.sip.domain
    );
    println!("  store: {}", cfg.store_url);
    for q in &cfg.queues {
        println!(
            "  queue `{}` ({}): call sip:{}@{} (via {addr})",
            q.name, q.routing.strategy, q.name, cfg.sip.domain
        );
    }
    println!("\nRegister a softphone as an agent, e.g. with baresip:");
    for a in cfg.agents.iter().take(2) {
        println!(
            "  <sip:{id}@{dom}>;auth_pass={pw};outbound=\"sip:{addr}\";regint=600",
            id = a.id,
            dom = cfg.sip.domain,
            pw = a.password
        );
    }
    if demo {
        println!(
            "\nThe demo configuration (copy it to a file and pass --config FILE to change it):\n"
        );
        println!("{}", config::DEMO);
    }
    println!("Ctrl-C stops the engine.");
}
