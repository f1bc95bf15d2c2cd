//! Text renderings of the control channel's answers, for the command line.

use crate::control::ControlRequest;
use call_engine_orchestrator::{AgentSnapshot, AgentStatsSnapshot, Decision, QueueStats};
use serde::Deserialize;
use std::fmt::Write;

#[derive(Deserialize)]
struct StatsAnswer {
    queues: Vec<QueueStats>,
    agents: Vec<AgentStatsSnapshot>,
    #[serde(default)]
    sip: Option<SipCounters>,
}

/// The SIP adapter's counters, as the engine reports them.
#[derive(Deserialize)]
struct SipCounters {
    received: u64,
    sent: u64,
    malformed: u64,
    overloaded: u64,
    forbidden_sources: u64,
    tcp_limited: u64,
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn secs(ms: Option<f64>) -> String {
    ms.map(|v| format!("{:.1}s", v / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// Renders `result` (the answer to `req`) for people; falls back to pretty JSON.
pub fn render(req: &ControlRequest, result: &serde_json::Value) -> String {
    let text = match req {
        ControlRequest::Stats => serde_json::from_value::<StatsAnswer>(result.clone())
            .ok()
            .map(|s| stats(&s)),
        ControlRequest::Agents
        | ControlRequest::SetStatus { .. }
        | ControlRequest::Login { .. }
        | ControlRequest::Logout { .. } => {
            let list = match result {
                serde_json::Value::Array(_) => {
                    serde_json::from_value::<Vec<AgentSnapshot>>(result.clone()).ok()
                }
                _ => serde_json::from_value::<AgentSnapshot>(result.clone())
                    .ok()
                    .map(|a| vec![a]),
            };
            list.map(|l| agents(&l))
        }
        ControlRequest::Explain { .. } => serde_json::from_value::<Vec<Decision>>(result.clone())
            .ok()
            .map(|ds| ds.iter().map(|d| d.to_string()).collect::<String>()),
    };
    text.unwrap_or_else(|| {
        let mut s = serde_json::to_string_pretty(result).unwrap_or_default();
        s.push('\n');
        s
    })
}

fn stats(s: &StatsAnswer) -> String {
    let mut out = String::new();
    for q in &s.queues {
        let w = &q.window;
        let _ = writeln!(
            out,
            "queue {}: {} waiting (longest {}), agents: {} available, {} on call, {} ringing, {} wrap-up, {} on break, {} delayed, {} logged out",
            q.queue,
            q.waiting,
            secs(q.longest_wait_ms.map(|m| m as f64)),
            q.agents.available,
            q.agents.on_call,
            q.agents.ringing,
            q.agents.wrap_up,
            q.agents.on_break,
            q.agents.delayed,
            q.agents.logged_out,
        );
        for (name, p) in [("last 15 min", w), ("since start", &q.total)] {
            let _ = writeln!(
                out,
                "  {name}: offered {}, refused {}, answered {}, abandoned {} ({}), service level {} within {}s ({} counting abandons, {} without short abandons), ASA {}, AHT {}, talk {}, wrap-up {}, max wait {}",
                p.offered,
                p.refused,
                p.answered,
                p.abandoned,
                pct(p.abandon_rate),
                pct(p.service_level),
                q.service_level_threshold_ms / 1000,
                pct(p.service_level_with_abandons),
                pct(p.service_level_excluding_short_abandons),
                secs(p.asa_ms),
                secs(p.aht_ms),
                secs(p.avg_talk_ms),
                secs(p.avg_wrap_ms),
                secs(p.max_wait_ms.map(|m| m as f64)),
            );
        }
    }
    for a in &s.agents {
        let _ = writeln!(
            out,
            "agent {}: handled {}, talk {}, wrap-up {}, AHT {}",
            a.agent,
            a.handled,
            secs(Some(a.talk_ms_total as f64)),
            secs(Some(a.wrap_ms_total as f64)),
            secs(a.aht_ms),
        );
    }
    if let Some(sip) = &s.sip {
        let _ = writeln!(
            out,
            "sip: received {}, sent {}, malformed {}, refused for overload (503) {}, from outside calls_from (403) {}, TCP connections closed by a limit {}",
            sip.received,
            sip.sent,
            sip.malformed,
            sip.overloaded,
            sip.forbidden_sources,
            sip.tcp_limited,
        );
    }
    out
}

fn agents(list: &[AgentSnapshot]) -> String {
    let mut out = String::new();
    for a in list {
        let status = match &a.status {
            call_engine_events::AgentStatus::LoggedOut => "logged out".to_string(),
            call_engine_events::AgentStatus::Available => "available".to_string(),
            call_engine_events::AgentStatus::AvailableOnDemand => "available on demand".to_string(),
            call_engine_events::AgentStatus::OnBreak { reason } => format!("on break ({reason})"),
        };
        let queues: Vec<String> = a.queues.iter().map(|q| q.to_string()).collect();
        let _ = writeln!(
            out,
            "{}: {status}, {:?}, {} call(s), answered {}, no-answers {}, contact {}, queues [{}]",
            a.id,
            a.stats.activity,
            a.stats.calls,
            a.stats.answered,
            a.stats.no_answers,
            a.contact.as_deref().unwrap_or("none (not registered)"),
            queues.join(", "),
        );
    }
    out
}
