//! `cargo xtask bench sip`: the highest call rate the whole call-center flow sustains
//! with zero failed calls, measured with SIPp on this machine, and the call setup latency.
//!
//! One run: build the engine in release; write a configuration (loopback, one queue,
//! N agents, SQLite in a temporary directory); start `call-engine serve` as a child
//! process; register every agent with SIPp (`tests/sipp/agent_register.xml`, CSV
//! injection), all with the same Contact: one SIPp UAS (`agent_uas.xml`) answers for
//! all of them. Then, for each rate step, a SIPp customer UAC (`customer_uac.xml`) places
//! `rate × secs` calls: each is answered by the engine (music on hold), queued, an agent
//! is rung and answers, the legs are bridged, the customer hangs up after `hold` ms, the
//! BYE reaches the agent, and a call record is written. A call counts as successful only
//! when both SIPp instances say so (exit code 0: every scenario step happened, including
//! the agent leg) and the store holds an Answered record for it.
//!
//! Latency comes from the µs timestamps the scenarios log (`-trace_logs`; SIPp's own
//! response times are whole milliseconds): customer INVITE → 200 (the engine answers at
//! once), customer INVITE → the agent's phone rung, customer INVITE → agent answered
//! (the engine's ACK reached the agent: the call is bridged). CPU is read from /proc.
//!
//! Steps stop at the first one with any failed call; the result is the highest offered
//! rate with zero failures. Every child process is killed at the end and on error.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DOMAIN: &str = "bench.local";
const QUEUE: &str = "support";
/// rvoip-sip 0.4.0 alone (no call center behind it) on this machine: the reference
/// figure from issue 3.
const RVOIP_ALONE_CPS: u32 = 600;

struct Options {
    rates: Vec<u32>,
    secs: u32,
    hold_ms: u32,
    agents: u32,
    keep: bool,
    trace_msg: bool,
    /// A prebuilt engine binary to run instead of building one (A/B runs of two builds).
    engine: Option<PathBuf>,
}

const USAGE: &str = "usage: cargo xtask bench sip [--quick] [--rates 20,50,100] [--secs N] \
[--hold MS] [--agents N] [--trace-msg] [--keep] [--engine PATH]

  --quick       short run: 20, 50, 100 calls/s, 3 s each
  --rates LIST  offered call rates (calls/s), in order
                (default 20,50,100,200,300,400,500,600,800,1000,1200,1500)
  --secs N      seconds of calls per step (default 10; --quick: 3)
  --hold MS     talk time of each call before the customer hangs up (default 200)
  --agents N    registered agents (default 500; keep it above rate x hold)
  --trace-msg   SIPp -trace_msg (every SIP message to a file; slows SIPp down)
  --keep        keep the working directory (config, database, SIPp logs)
  --engine PATH run this engine binary instead of building one (to compare two
                builds: copy each one's target/release/call-engine aside and
                alternate runs)

Environment: RUST_LOG for the engine (default warn).";

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        rates: vec![20, 50, 100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500],
        secs: 10,
        hold_ms: 200,
        agents: 500,
        keep: false,
        trace_msg: false,
        engine: None,
    };
    let mut quick = false;
    let mut secs = None;
    let mut rates = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        let number = |name: &str, v: String| -> Result<u32, String> {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}: `{v}` is not a positive number"))
        };
        match key {
            "--quick" => quick = true,
            "--keep" => o.keep = true,
            "--trace-msg" => o.trace_msg = true,
            "--engine" => o.engine = Some(PathBuf::from(value("--engine")?)),
            "--secs" => secs = Some(number("--secs", value("--secs")?)?),
            "--hold" => o.hold_ms = number("--hold", value("--hold")?)?,
            "--agents" => o.agents = number("--agents", value("--agents")?)?,
            "--rates" => {
                let v = value("--rates")?;
                rates = Some(
                    v.split(',')
                        .map(|r| number("--rates", r.trim().to_string()))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            other => return Err(format!("unknown option `{other}`\n\n{USAGE}")),
        }
    }
    if quick {
        o.rates = vec![20, 50, 100];
        o.secs = 3;
    }
    if let Some(r) = rates {
        o.rates = r;
    }
    if let Some(s) = secs {
        o.secs = s;
    }
    Ok(o)
}

// --- child processes -------------------------------------------------------------------

/// A child process, killed (and reaped) when dropped: nothing outlives the benchmark.
struct Proc {
    name: String,
    child: Option<Child>,
    /// CPU seconds last read from /proc (a zombie still shows its totals, so the last
    /// read before reaping is the whole run).
    cpu_secs: Option<f64>,
    ticks: f64,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({cmd:?}): {e}"))?;
        Ok(Proc {
            name: name.into(),
            child: Some(child),
            cpu_secs: None,
            ticks: clock_ticks(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn try_exit_code(&mut self) -> Option<Option<i32>> {
        let c = self.child.as_mut()?;
        if let Some(t) = process_cpu_secs(c.id(), self.ticks) {
            self.cpu_secs = Some(t);
        }
        match c.try_wait() {
            Ok(Some(s)) => {
                self.child = None;
                Some(s.code())
            }
            _ => None,
        }
    }

    /// Waits up to `limit` for the exit code (None: killed by a signal, or by us when
    /// `limit` passed).
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(code) = self.try_exit_code() {
                return code;
            }
            self.child.as_ref()?;
            if Instant::now() >= deadline {
                eprintln!("xtask: {} did not finish in {limit:?}: killed", self.name);
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGINT (the engine shuts down cleanly), then SIGKILL after `grace`.
    fn interrupt(&mut self, grace: Duration) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            self.wait(grace);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn sipp_exit_meaning(code: Option<i32>) -> &'static str {
    match code {
        Some(0) => "all calls successful",
        Some(1) => "at least one call failed",
        Some(97) => "stopped by an internal command",
        Some(99) => "no call processed",
        Some(255) => "fatal error",
        Some(254) => "fatal error binding a socket",
        Some(_) => "unexpected exit code",
        None => "killed (did not finish)",
    }
}

// --- small helpers ---------------------------------------------------------------------

fn free_udp_port() -> Result<u16, String> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free UDP port: {e}"))
}

/// An even port with the next three free as well (SIPp's media port and neighbours).
fn free_media_port() -> Result<u16, String> {
    for _ in 0..200 {
        let p = free_udp_port()? & !1;
        if !(1024..=65530).contains(&p) {
            continue;
        }
        let held: Vec<_> = (p..=p + 3)
            .map_while(|q| UdpSocket::bind(("127.0.0.1", q)).ok())
            .collect();
        if held.len() == 4 {
            return Ok(p);
        }
    }
    Err("no four consecutive free UDP ports".into())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo target directory (honours CARGO_TARGET_DIR and .cargo/config).
fn target_dir(cargo: &mut Command) -> Result<PathBuf, String> {
    let out = cargo
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let key = "\"target_directory\":\"";
    let start = text
        .find(key)
        .map(|i| i + key.len())
        .ok_or("cargo metadata: no target_directory")?;
    let end = text[start..]
        .find('"')
        .map(|i| start + i)
        .ok_or("cargo metadata: bad target_directory")?;
    Ok(PathBuf::from(text[start..end].replace("\\\\", "\\")))
}

fn head(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.lines().take(lines).collect::<Vec<_>>().join("\n")
}

fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// utime + stime of a process, in seconds.
fn process_cpu_secs(pid: u32, ticks_per_sec: f64) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec)
}

/// (busy, total) jiffies of the whole machine.
fn machine_cpu() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

// --- SIPp output -----------------------------------------------------------------------

/// The last line of a SIPp `-trace_stat` CSV, by column name.
fn sipp_stats(path: &Path) -> HashMap<String, String> {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let (Some(header), Some(last)) = (lines.first(), lines.get(1..).and_then(<[_]>::last)) else {
        return HashMap::new();
    };
    header
        .split(';')
        .zip(last.split(';'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn stat_u64(stats: &HashMap<String, String>, key: &str) -> u64 {
    stats.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `<kind> <caller user> <unix s> <µs> <event>` lines from the scenarios' `<log>`
/// actions: (user, event) → µs since the epoch.
fn timestamps(path: &Path, kind: &str) -> HashMap<(String, String), f64> {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let mut m = HashMap::new();
    for line in s.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 5 || f[0] != kind {
            continue;
        }
        if let (Ok(sec), Ok(us)) = (f[2].parse::<f64>(), f[3].parse::<f64>()) {
            m.insert((f[1].to_string(), f[4].to_string()), sec * 1e6 + us);
        }
    }
    m
}

#[derive(Default, Clone)]
struct Dist {
    n: usize,
    mean: f64,
    p50: f64,
    p99: f64,
}

fn dist(mut v: Vec<f64>) -> Dist {
    if v.is_empty() {
        return Dist::default();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| v[(((v.len() - 1) as f64) * p).round() as usize];
    Dist {
        n: v.len(),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

// --- the store -------------------------------------------------------------------------

/// Call records by disposition.
#[derive(Default, Clone, Copy)]
struct Cdrs {
    answered: u64,
    abandoned: u64,
    no_agent: u64,
    failed: u64,
    all: u64,
}

impl Cdrs {
    fn describe(&self) -> String {
        let mut s = format!("records: {} answered", self.answered);
        for (n, what) in [
            (
                self.abandoned,
                "abandoned (the customer hung up before an agent was connected)",
            ),
            (self.no_agent, "no agent"),
            (self.failed, "failed"),
        ] {
            if n > 0 {
                s.push_str(&format!(", {n} {what}"));
            }
        }
        s
    }
}

/// The call records that ended at or after `since_ms`, by disposition.
fn count_cdrs(db_url: &str, since_ms: Option<u64>) -> Result<Cdrs, String> {
    use call_engine_events::Disposition;
    use call_engine_store::{CdrQuery, Store, StoreError, UnixMillis};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store = Store::open(db_url)
            .await
            .map_err(|e| format!("store {db_url}: {e}"))?;
        let all = CdrQuery {
            since: since_ms.map(UnixMillis),
            ..CdrQuery::default()
        };
        let count = |d: Disposition| {
            let q = CdrQuery {
                disposition: Some(d),
                ..all.clone()
            };
            let store = &store;
            async move { store.count_cdrs(&q).await }
        };
        let r = async {
            Ok::<_, StoreError>(Cdrs {
                answered: count(Disposition::Answered).await?,
                abandoned: count(Disposition::Abandoned).await?,
                no_agent: count(Disposition::NoAgent).await?,
                failed: count(Disposition::Failed).await?,
                all: store.count_cdrs(&all).await?,
            })
        }
        .await;
        store.close().await;
        r.map_err(|e| format!("store {db_url}: {e}"))
    })
}

// --- the benchmark ---------------------------------------------------------------------

struct Step {
    rate: u32,
    planned: u64,
    attempted: u64,
    ok: u64,
    failed: u64,
    uas_ok: bool,
    retrans: u64,
    achieved_cps: f64,
    answer: Dist,
    rung: Dist,
    connected: Dist,
    engine_cpu_pct: Option<f64>,
    sipp_cpu_pct: (Option<f64>, Option<f64>),
    machine_cpu_pct: Option<f64>,
    cdrs: Cdrs,
    note: String,
}

impl Step {
    fn clean(&self) -> bool {
        self.failed == 0
            && self.uas_ok
            && self.ok == self.planned
            && self.cdrs.answered == self.ok
            && self.cdrs.all == self.ok
    }
}

struct Bench {
    o: Options,
    dir: PathBuf,
    sipp_dir: PathBuf,
    sip_port: u16,
    uas_port: u16,
    uas_media: u16,
    db_url: String,
    engine: Proc,
    ticks: f64,
}

pub fn run(args: &[String], cargo: impl Fn() -> Command) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let o = parse_options(args)?;
    if Command::new("sipp").arg("-v").output().is_err() {
        return Err(
            "`sipp` (SIPp) is not on PATH: install it with `apt-get install -y sip-tester`".into(),
        );
    }
    let bin = match o.engine.clone() {
        // Absolute: the engine is started from the run's working directory.
        Some(bin) => {
            std::fs::canonicalize(&bin).map_err(|e| format!("--engine {}: {e}", bin.display()))?
        }
        None => {
            let mut build = cargo();
            build.args(["build", "--release", "-p", "call-engine"]);
            crate::run("build the engine (release)", build)?;
            target_dir(&mut cargo())?
                .join("release")
                .join("call-engine")
        }
    };
    if !bin.is_file() {
        return Err(format!("{} was not built", bin.display()));
    }

    let dir = std::env::temp_dir().join(format!("call-engine-bench-sip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_in(o, &bin, &dir);
    match &result {
        Ok(keep) if !keep => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => eprintln!("xtask: bench sip: files kept in {}", dir.display()),
    }
    result.map(|_| ())
}

/// Runs the benchmark in `dir`; Ok(keep the directory?).
fn run_in(o: Options, bin: &Path, dir: &Path) -> Result<bool, String> {
    let sip_port = free_udp_port()?;
    let db = dir.join("bench.db");
    let db_url = format!("sqlite://{}", db.display());
    // The reconciler's probes (an OPTIONS to every registered contact and every live
    // dialog, every 30 s by default) would reach the SIPp agents' scenario, which is no
    // phone: each out-of-dialog OPTIONS counts as one of its `-m` calls, so the last
    // 500 calls of a step found no agent. The probes stay out of the run (at 30 s they
    // are about 17 OPTIONS/s for 500 agents, no load).
    let mut cfg = format!(
        "[sip]\nudp = \"127.0.0.1:{sip_port}\"\ndomain = \"{DOMAIN}\"\n\n\
         [media]\naddress = \"127.0.0.1\"\nrtp_ports = \"40000-49999\"\n\n\
         [store]\nurl = \"{db_url}\"\n\n\
         [reconciler]\ninterval_secs = 3600\n\n\
         [[queue]]\nname = \"{QUEUE}\"\nstrategy = \"longest-idle-agent\"\nmoh = \"builtin\"\nring_timeout_secs = 15\n"
    );
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 1..=o.agents {
        let id = format!("agent{i:04}");
        let pw = format!("pw-{id}");
        cfg.push_str(&format!(
            "\n[[agent]]\nid = \"{id}\"\npassword = \"{pw}\"\nqueues = [\"{QUEUE}\"]\n"
        ));
        csv.push_str(&format!(
            "{id};[authentication username={id} password={pw}]\n"
        ));
    }
    let cfg_path = dir.join("bench.toml");
    std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("agents.csv"), csv).map_err(|e| e.to_string())?;

    let log_level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--config")
        .arg(&cfg_path)
        .env("RUST_LOG", &log_level)
        .current_dir(dir);
    let engine_log = dir.join("engine.log");
    let mut engine = Proc::spawn("call-engine", cmd, &engine_log)?;
    let ready = Instant::now() + Duration::from_secs(20);
    loop {
        if std::fs::read_to_string(&engine_log)
            .unwrap_or_default()
            .contains("call-engine is running")
        {
            break;
        }
        if engine.try_exit_code().is_some() || Instant::now() > ready {
            return Err(format!(
                "the engine did not start:\n{}",
                tail(&engine_log, 30)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut b = Bench {
        sipp_dir: workspace_root().join("tests").join("sipp"),
        dir: dir.to_path_buf(),
        sip_port,
        uas_port: free_udp_port()?,
        uas_media: free_media_port()?,
        db_url,
        engine,
        ticks: clock_ticks(),
        o,
    };
    println!(
        "\nSIP benchmark: the whole call-center flow driven by SIPp ({}), call-engine release build, RUST_LOG={log_level}",
        sipp_version()
    );
    println!(
        "{} agents on one SIPp UAS, queue `{QUEUE}` (longest-idle-agent), hold {} ms, {} s of calls per step, {} CPUs, SQLite {}",
        b.o.agents,
        b.o.hold_ms,
        b.o.secs,
        cpus(),
        db.display()
    );

    b.register()?;
    let mut steps: Vec<Step> = Vec::new();
    let rates = b.o.rates.clone();
    for rate in rates {
        let s = b.step(rate)?;
        let clean = s.clean();
        print_progress(&s);
        steps.push(s);
        if !clean {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let total = count_cdrs(&b.db_url, None)?;
    b.engine.interrupt(Duration::from_secs(10));
    report(&b.o, &steps, total);
    Ok(b.o.keep)
}

fn sipp_version() -> String {
    Command::new("sipp")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.contains("SIPp v"))
                .map(|l| l.trim().trim_end_matches('.').to_string())
        })
        .unwrap_or_else(|| "SIPp".into())
}

impl Bench {
    fn sipp(&self, scenario: &str, label: &str, port: u16, remote: bool) -> Command {
        let mut c = Command::new("sipp");
        let f = |ext: &str| self.dir.join(format!("{label}.{ext}"));
        c.current_dir(&self.dir)
            .arg("-sf")
            .arg(self.sipp_dir.join(scenario))
            .args(["-i", "127.0.0.1", "-nostdin"])
            .args(["-p", &port.to_string()])
            .args(["-key", "domain", DOMAIN])
            // Answer an in-dialog OPTIONS (the engine's reconciler probes live dialogs;
            // the bench keeps it out of the run, see `run_in`) with 200, as a phone
            // does, should one land: otherwise SIPp aborts the call on an "unexpected
            // message".
            .arg("-aa")
            .arg("-trace_err")
            .arg("-error_file")
            .arg(f("errors.log"))
            .arg("-trace_stat")
            .arg("-stf")
            .arg(f("stat.csv"))
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(f("logs.log"));
        if self.o.trace_msg {
            c.arg("-trace_msg")
                .arg("-message_file")
                .arg(f("messages.log"));
        }
        if remote {
            c.arg(format!("127.0.0.1:{}", self.sip_port));
        }
        c
    }

    fn register(&mut self) -> Result<(), String> {
        let mut c = self.sipp("agent_register.xml", "register", free_udp_port()?, true);
        c.arg("-inf")
            .arg(self.dir.join("agents.csv"))
            .args(["-auth_uri", DOMAIN])
            .args(["-key", "contact_host", "127.0.0.1"])
            .args(["-key", "contact_port", &self.uas_port.to_string()])
            .args(["-key", "expires", "3600"])
            .args(["-mp", &free_media_port()?.to_string()])
            .args(["-r", "500", "-m", &self.o.agents.to_string()])
            .args(["-timeout", "60s", "-timeout_error"]);
        let started = Instant::now();
        let mut p = Proc::spawn("sipp register", c, &self.dir.join("register.out"))?;
        let code = p.wait(Duration::from_secs(90));
        if code != Some(0) {
            return Err(format!(
                "registering {} agents failed: SIPp {code:?} ({})\n{}\n{}",
                self.o.agents,
                sipp_exit_meaning(code),
                tail(&self.dir.join("register.errors.log"), 30),
                tail(&self.dir.join("register.out"), 30)
            ));
        }
        println!(
            "registered {} agents (REGISTER, 401, REGISTER with digest, 200) in {:.2} s",
            self.o.agents,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn step(&mut self, rate: u32) -> Result<Step, String> {
        let calls = u64::from(rate) * u64::from(self.o.secs);
        let label_c = format!("customer_{rate}cps");
        let label_a = format!("agents_{rate}cps");
        let secs = calls / u64::from(rate);

        let mut uas_cmd = self.sipp("agent_uas.xml", &label_a, self.uas_port, false);
        uas_cmd.args(["-mp", &self.uas_media.to_string()]).args([
            "-m",
            &calls.to_string(),
            "-l",
            "100000",
        ]);
        let uas_started = Instant::now();
        let mut uas = Proc::spawn(
            "sipp agents (UAS)",
            uas_cmd,
            &self.dir.join(format!("{label_a}.out")),
        )?;
        std::thread::sleep(Duration::from_millis(300));
        if let Some(code) = uas.try_exit_code() {
            return Err(format!(
                "SIPp UAS exited at once ({code:?}):\n{}",
                tail(&self.dir.join(format!("{label_a}.out")), 30)
            ));
        }

        let mut cust_cmd = self.sipp("customer_uac.xml", &label_c, free_udp_port()?, true);
        cust_cmd
            .args(["-s", QUEUE])
            .args(["-mp", &free_media_port()?.to_string()])
            .args(["-d", &self.o.hold_ms.to_string()])
            .args(["-r", &rate.to_string(), "-m", &calls.to_string()])
            .args(["-l", "100000"])
            .args(["-timeout", &format!("{}s", secs + 40), "-timeout_error"]);

        let since_ms = unix_ms();
        let cpu0 = process_cpu_secs(self.engine.pid(), self.ticks);
        let m0 = machine_cpu();
        let t0 = Instant::now();
        let mut cust = Proc::spawn(
            "sipp customers (UAC)",
            cust_cmd,
            &self.dir.join(format!("{label_c}.out")),
        )?;
        let cust_code = cust.wait(Duration::from_secs(secs + 60));
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu1 = process_cpu_secs(self.engine.pid(), self.ticks);
        let m1 = machine_cpu();
        // The agents' phone finishes once the last BYE reached it.
        let uas_code = uas.wait(Duration::from_secs(10));
        let uas_elapsed = uas_started.elapsed().as_secs_f64();

        let stats = sipp_stats(&self.dir.join(format!("{label_c}.stat.csv")));
        let attempted = stat_u64(&stats, "TotalCallCreated");
        let ok = stat_u64(&stats, "SuccessfulCall(C)");
        // Every planned call that did not succeed failed (also those never placed).
        let failed = calls.saturating_sub(ok);
        let retrans = stat_u64(&stats, "Retransmissions(C)")
            + stat_u64(
                &sipp_stats(&self.dir.join(format!("{label_a}.stat.csv"))),
                "Retransmissions(C)",
            );

        let cust_ts = timestamps(&self.dir.join(format!("{label_c}.logs.log")), "customer");
        let agent_ts = timestamps(&self.dir.join(format!("{label_a}.logs.log")), "agent-leg");
        let mut invites: Vec<f64> = Vec::new();
        let (mut answer, mut rung, mut connected) = (Vec::new(), Vec::new(), Vec::new());
        for ((user, ev), t) in &cust_ts {
            if ev != "invite" {
                continue;
            }
            invites.push(*t);
            let get = |m: &HashMap<(String, String), f64>, e: &str| {
                m.get(&(user.clone(), e.to_string()))
                    .map(|x| (x - t) / 1000.0)
            };
            answer.extend(get(&cust_ts, "answered"));
            rung.extend(get(&agent_ts, "invite"));
            connected.extend(get(&agent_ts, "ack"));
        }
        invites.sort_by(|a, b| a.total_cmp(b));
        let achieved_cps = match (invites.first(), invites.last()) {
            (Some(a), Some(z)) if z > a => (invites.len() - 1) as f64 / ((z - a) / 1e6),
            _ => 0.0,
        };

        // Call records are written asynchronously: give the recorder a moment. The
        // dispositions are counted one query after another while records still arrive,
        // so wait on their sum (each count can only have grown since it was taken: a
        // sum that reaches `ok` proves every one of them final), not on `all` (taken
        // last, it can be complete while `answered`, taken first, was not yet).
        let mut cdrs = Cdrs::default();
        for _ in 0..50 {
            cdrs = count_cdrs(&self.db_url, Some(since_ms))?;
            if cdrs.answered + cdrs.abandoned + cdrs.no_agent + cdrs.failed >= ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let mut note = String::new();
        if cust_code != Some(0) {
            note.push_str(&format!(
                "customers: SIPp {cust_code:?} ({}); ",
                sipp_exit_meaning(cust_code)
            ));
        }
        if uas_code != Some(0) {
            note.push_str(&format!(
                "agents: SIPp {uas_code:?} ({}); ",
                sipp_exit_meaning(uas_code)
            ));
        }
        let step = Step {
            rate,
            planned: calls,
            attempted,
            ok,
            failed,
            uas_ok: uas_code == Some(0),
            retrans,
            achieved_cps,
            answer: dist(answer),
            rung: dist(rung),
            connected: dist(connected),
            engine_cpu_pct: match (cpu0, cpu1) {
                (Some(a), Some(b)) if elapsed > 0.0 => Some((b - a) / elapsed * 100.0),
                _ => None,
            },
            sipp_cpu_pct: (
                cust.cpu_secs.map(|c| c / elapsed * 100.0),
                uas.cpu_secs.map(|c| c / uas_elapsed * 100.0),
            ),
            machine_cpu_pct: match (m0, m1) {
                (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                    Some((b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
                }
                _ => None,
            },
            cdrs,
            note,
        };
        let mut step = step;
        if !step.clean() {
            if step.cdrs.answered != step.ok || step.cdrs.all != step.ok {
                step.note.push_str(&step.cdrs.describe());
                step.note.push_str("; ");
            }
            for label in [&label_c, &label_a] {
                let errors = head(&self.dir.join(format!("{label}.errors.log")), 40);
                if !errors.trim().is_empty() {
                    eprintln!("--- {label}: SIPp errors (first) ---\n{errors}");
                }
            }
        }
        Ok(step)
    }
}

fn print_progress(s: &Step) {
    eprintln!(
        "xtask: bench sip: {} calls/s: {} calls, {} ok, {} failed, connect p50 {:.2} ms{}",
        s.rate,
        s.attempted,
        s.ok,
        s.failed,
        s.connected.p50,
        if s.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.note.trim_end_matches("; "))
        }
    );
}

fn opt_pct(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}%")).unwrap_or_else(|| "-".into())
}

fn lat(d: &Dist) -> String {
    if d.n == 0 {
        "-".into()
    } else {
        format!("{:.2} / {:.2} / {:.2}", d.mean, d.p50, d.p99)
    }
}

fn report(o: &Options, steps: &[Step], total: Cdrs) {
    println!("\nLatency in ms, mean / p50 / p99, measured from the customer's INVITE:");
    println!(
        "  answered = the engine's 200 reached the customer (it answers at once, music on hold)"
    );
    println!("  rung     = the engine's INVITE reached the agent's phone");
    println!("  connected= the agent's 200 was ACKed by the engine: the legs are bridged");
    println!(
        "CPU: 100% = one core; the engine process, the two SIPp processes (customers / agents;\n\
         each is single-threaded, so near 100% SIPp is the limit), and the whole machine\n\
         (everything running on it, not only this benchmark)\n"
    );
    println!(
        "| offered cps | achieved cps | calls | ok | failed | retrans | answered (ms) | rung (ms) | connected (ms) | engine CPU | SIPp CPU | machine CPU | CDRs answered/all |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---|");
    for s in steps {
        println!(
            "| {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {}/{}{} |",
            s.rate,
            s.achieved_cps,
            s.attempted,
            s.ok,
            s.failed,
            s.retrans,
            lat(&s.answer),
            lat(&s.rung),
            lat(&s.connected),
            opt_pct(s.engine_cpu_pct),
            opt_pct(s.sipp_cpu_pct.0),
            opt_pct(s.sipp_cpu_pct.1),
            opt_pct(s.machine_cpu_pct.map(|m| m * cpus() as f64)),
            s.cdrs.answered,
            s.cdrs.all,
            if s.clean() { "" } else { " ✗" }
        );
    }
    for s in steps.iter().filter(|s| !s.note.is_empty()) {
        println!("  {} calls/s: {}", s.rate, s.note.trim_end_matches("; "));
    }
    let ok_total: u64 = steps.iter().map(|s| s.ok).sum();
    println!(
        "\nCall records in the store: {} ({}); calls SIPp counted successful: {ok_total}",
        total.all,
        total.describe()
    );
    let clean: Vec<&Step> = steps.iter().filter(|s| s.clean()).collect();
    let clean_ok: u64 = clean.iter().map(|s| s.ok).sum();
    let clean_answered: u64 = clean.iter().map(|s| s.cdrs.answered).sum();
    let clean_all: u64 = clean.iter().map(|s| s.cdrs.all).sum();
    println!(
        "Steps without failures: {clean_ok} calls, {clean_answered} Answered records of {clean_all}{}",
        if clean_answered == clean_ok && clean_all == clean_ok {
            ": every call has exactly one Answered record"
        } else {
            ": MISMATCH"
        }
    );
    let best = steps.iter().take_while(|s| s.clean()).last();
    let tested_all = steps.len() == o.rates.len() && steps.iter().all(Step::clean);
    let x = match best {
        Some(s) if tested_all => format!(
            "≥ {} CPS (every step passed; the highest offered, {:.0} achieved)",
            s.rate, s.achieved_cps
        ),
        Some(s) => format!(
            "{} CPS ({:.0} achieved) with zero failed calls",
            s.rate, s.achieved_cps
        ),
        None => "no step without failures".into(),
    };
    println!(
        "\nrvoip-sip alone answers ~{RVOIP_ALONE_CPS} CPS here (issue 3 reference); full call-center flow: {x}"
    );
}
