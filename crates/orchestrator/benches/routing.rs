//! Routing decision time with 10,000 agents across 100 queues, with skills and tiers.
//!
//! Each agent is a member of 3 queues (level 1, 2 and 3), so each queue has ~300
//! members; every agent has 3 of 10 skills; every queue requires 1–2 skills, has tier,
//! penalty and skill widening rules, and the queues cycle through all strategies. Half
//! of the agents are on a call. One decision = `handle_into(CallQueued)`: evaluating
//! every member of the queue (recording the explanation), picking, ringing; the answer
//! and hang-up that restore the state are not timed.
//!
//! Besides criterion's figures it prints percentiles from its own loop, and counts
//! allocations on the decision path with a counting global allocator.
//!
//! `cargo bench -p call-engine-orchestrator --bench routing` (`-- --quick` for a short
//! run).

use call_engine_events::{AgentId, CallId, QueueId};
use call_engine_orchestrator::{
    AgentProfile, ExplainConfig, Input, Membership, Millis, Orchestrator, OrchestratorConfig,
    Output, QueueConfig, Strategy,
};
use criterion::Criterion;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts allocations and live bytes.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const AGENTS: usize = 10_000;
const QUEUES: usize = 100;
const SKILLS: [&str; 10] = [
    "english", "spanish", "french", "german", "billing", "sales", "tech", "returns", "vip",
    "claims",
];

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn queue_name(i: usize) -> QueueId {
    QueueId::new(format!("q{i:03}"))
}

fn build(explain: ExplainConfig) -> Orchestrator {
    let mut r = Lcg(1);
    let queues = (0..QUEUES)
        .map(|i| {
            let mut c = QueueConfig::new(queue_name(i), Strategy::ALL[i % Strategy::ALL.len()])
                .with_tier_steps(20_000, 3)
                .with_max_penalty(2)
                .with_penalty_rule(30_000, 5)
                .with_skill_relax(45_000, 1)
                .with_required_skill(SKILLS[i % SKILLS.len()], 1 + (i % 2) as u8);
            if i % 3 == 0 {
                c = c.with_required_skill(SKILLS[(i + 3) % SKILLS.len()], 1);
            }
            c
        })
        .collect();
    let agents = (0..AGENTS)
        .map(|i| {
            let mut p = AgentProfile::new(AgentId::new(format!("agent{i:05}")))
                .with_membership(
                    Membership::new(queue_name(i % QUEUES))
                        .with_level(1)
                        .with_position(i as u32)
                        .with_penalty((i % 4) as u32),
                )
                .with_membership(
                    Membership::new(queue_name((i * 7 + 13) % QUEUES))
                        .with_level(2)
                        .with_position(i as u32),
                )
                .with_membership(
                    Membership::new(queue_name((i * 31 + 57) % QUEUES))
                        .with_level(3)
                        .with_position(i as u32),
                );
            // Three skills: the primary queue's (so each queue has qualified agents),
            // two random ones.
            p = p.with_skill(
                SKILLS[(i % QUEUES) % SKILLS.len()],
                2 + (r.next() % 4) as u8,
            );
            for _ in 0..2 {
                let s = SKILLS[(r.next() % SKILLS.len() as u64) as usize];
                p = p.with_skill(s, 1 + (r.next() % 5) as u8);
            }
            p
        })
        .collect();
    let mut o = Orchestrator::with_config(
        OrchestratorConfig::new(queues, agents)
            .with_seed(7)
            .with_explain(explain),
    );
    for i in 0..AGENTS {
        o.handle(
            Input::AgentOnline {
                agent: AgentId::new(format!("agent{i:05}")),
                contact: format!("sip:agent{i:05}@10.0.{}.{}:5060", i / 250, i % 250).into(),
            },
            0,
        );
    }
    o
}

/// The routing benchmark state: half of the agents on long calls, a reused output
/// buffer, a clock.
struct Bench {
    o: Orchestrator,
    out: Vec<Output>,
    now: Millis,
    next_call: u64,
}

impl Bench {
    fn new(explain: ExplainConfig) -> Self {
        let mut b = Bench {
            o: build(explain),
            out: Vec::with_capacity(64),
            now: 1_000,
            next_call: 1_000_000,
        };
        // Half of the agents take a call that lasts the whole run.
        let mut busy = 0;
        let mut call = 1;
        while busy < AGENTS / 2 && call < 40_000 {
            let q = queue_name(call as usize % QUEUES);
            b.out.clear();
            b.o.handle_into(
                Input::CallQueued {
                    call: CallId(call),
                    queue: q,
                },
                b.now,
                &mut b.out,
            );
            let rung: Vec<AgentId> = b
                .out
                .iter()
                .filter_map(|x| match x {
                    Output::Ring { agent, .. } => Some(agent.clone()),
                    _ => None,
                })
                .collect();
            match rung.first() {
                Some(agent) => {
                    b.o.handle(
                        Input::OfferAnswered {
                            call: CallId(call),
                            agent: agent.clone(),
                        },
                        b.now,
                    );
                    busy += 1;
                }
                None => {
                    b.o.handle(Input::CallEnded { call: CallId(call) }, b.now);
                }
            }
            call += 1;
        }
        b
    }

    /// One decision, timed; then the answer and hang-up (or abandon) that restore the
    /// state, untimed. Returns the decision time and whether anyone was rung.
    fn cycle(&mut self, i: u64) -> (Duration, bool) {
        let call = CallId(self.next_call);
        self.next_call += 1;
        self.now += 1;
        let queue = queue_name((i as usize * 37) % QUEUES);
        self.out.clear();
        let input = Input::CallQueued { call, queue };
        let t = Instant::now();
        self.o.handle_into(input, self.now, &mut self.out);
        let d = t.elapsed();
        let agents: Vec<AgentId> = self
            .out
            .iter()
            .filter_map(|x| match x {
                Output::Ring { agent, .. } => Some(agent.clone()),
                _ => None,
            })
            .collect();
        let rang = !agents.is_empty();
        if let Some(agent) = agents.into_iter().next() {
            self.o
                .handle(Input::OfferAnswered { call, agent }, self.now);
        }
        self.o.handle(Input::CallEnded { call }, self.now);
        black_box(&self.out);
        (d, rang)
    }
}

fn percentiles(label: &str, explain: ExplainConfig, n: u64) {
    let mut b = Bench::new(explain);
    // Warm up: fill the explanation slots and scratch buffers.
    for i in 0..20_000 {
        b.cycle(i);
    }
    // (strategy index, ns), allocated before the heap is measured.
    let mut samples: Vec<(usize, u64)> = Vec::with_capacity(n as usize);
    let mut rang = 0u64;
    let mut allocs_in_decisions = 0u64;
    let live_before = LIVE.load(Ordering::Relaxed);
    for i in 0..n {
        let (d, r) = b.cycle(i);
        let strategy = ((i as usize * 37) % QUEUES) % Strategy::ALL.len();
        samples.push((strategy, d.as_nanos() as u64));
        rang += u64::from(r);
    }
    let live_after = LIVE.load(Ordering::Relaxed);
    // Allocations of the decision alone (the untimed answer and hang-up excluded).
    for i in 0..10_000u64 {
        let call = CallId(b.next_call);
        b.next_call += 1;
        b.now += 1;
        b.out.clear();
        let input = Input::CallQueued {
            call,
            queue: queue_name((i as usize * 37) % QUEUES),
        };
        let a0 = ALLOCS.load(Ordering::Relaxed);
        b.o.handle_into(input, b.now, &mut b.out);
        allocs_in_decisions += ALLOCS.load(Ordering::Relaxed) - a0;
        let agent = b.out.iter().find_map(|x| match x {
            Output::Ring { agent, .. } => Some(agent.clone()),
            _ => None,
        });
        if let Some(agent) = agent {
            b.o.handle(Input::OfferAnswered { call, agent }, b.now);
        }
        b.o.handle(Input::CallEnded { call }, b.now);
    }
    let mut by_strategy: Vec<Vec<u64>> = vec![Vec::new(); Strategy::ALL.len()];
    for (k, ns) in &samples {
        if let Some(v) = by_strategy.get_mut(*k) {
            v.push(*ns);
        }
    }
    let mut samples: Vec<u64> = samples.into_iter().map(|(_, ns)| ns).collect();
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
    println!(
        "{label}: {n} decisions ({:.0}% rang): p50 {:.2} µs, p90 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs; \
         {:.2} allocations per decision; live heap {:+} bytes over the run",
        rang as f64 * 100.0 / n as f64,
        p(0.50),
        p(0.90),
        p(0.99),
        p(0.999),
        p(1.0),
        allocs_in_decisions as f64 / 10_000.0,
        live_after - live_before,
    );
    let mut line = String::from("  p50/p99 by strategy:");
    for (k, v) in by_strategy.iter_mut().enumerate() {
        v.sort_unstable();
        if v.is_empty() {
            continue;
        }
        let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
        line.push_str(&format!(
            " {} {:.1}/{:.1};",
            Strategy::ALL[k],
            at(0.5),
            at(0.99)
        ));
    }
    println!("{line}");
}

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("routing-10k-agents-100-queues");
    for (label, explain) in [
        ("decision", ExplainConfig::default()),
        ("decision-no-explain", ExplainConfig::disabled()),
    ] {
        let mut b = Bench::new(explain);
        let mut i = 0u64;
        g.bench_function(label, |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += b.cycle(i).0;
                    i += 1;
                }
                total
            })
        });
    }
    g.finish();
}

fn benches() {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    routing(&mut c);
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 20_000 } else { 200_000 };
    percentiles("with explanations", ExplainConfig::default(), n);
    percentiles("without explanations", ExplainConfig::disabled(), n);
    if !quick {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
