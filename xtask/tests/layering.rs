//! The layering rule, checked against `cargo metadata`: the session adapter, the media
//! adapter, the state machines and the orchestrator never depend on one another; among
//! the workspace's crates they may depend only on `call-engine-events` and
//! `call-engine-bus`. The bus is domain-free (depends on no workspace crate) and the
//! events crate depends only on the bus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn workspace_deps() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                // normal dependencies only (kind null); dev/build deps may cross layers in tests
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|n| names.contains(n))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

const LAYERED: [&str; 4] = [
    "call-engine-session",
    "call-engine-media",
    "call-engine-state",
    "call-engine-orchestrator",
];

/// The crates the layered ones may depend on.
const FOUNDATION: [&str; 2] = ["call-engine-events", "call-engine-bus"];

/// The workspace's dependency graph, after checking that every role crate is in it: a
/// renamed or removed crate must fail these tests, not make them pass vacuously.
fn role_crate_deps() -> BTreeMap<String, BTreeSet<String>> {
    let deps = workspace_deps();
    let missing: Vec<&str> = LAYERED
        .iter()
        .chain(FOUNDATION.iter())
        .copied()
        .filter(|name| !deps.contains_key(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "role crates missing from `cargo metadata`: {missing:?} (renamed or removed? update \
         LAYERED/FOUNDATION in xtask/tests/layering.rs); workspace packages: {:?}",
        deps.keys().collect::<Vec<_>>()
    );
    deps
}

#[test]
fn every_role_crate_is_in_the_workspace() {
    // Fails, naming them, if any role crate is missing.
    role_crate_deps();
}

#[test]
fn adapters_state_and_orchestrator_depend_only_on_events_and_bus() {
    let deps = role_crate_deps();
    for name in LAYERED {
        for dep in &deps[name] {
            assert!(
                FOUNDATION.contains(&dep.as_str()),
                "{name} must depend only on call-engine-events and call-engine-bus among workspace crates, but depends on {dep}"
            );
        }
    }
}

#[test]
fn bus_is_domain_free_and_events_sit_on_the_bus() {
    let deps = role_crate_deps();
    assert_eq!(
        deps["call-engine-bus"],
        BTreeSet::new(),
        "the bus depends on no workspace crate"
    );
    assert_eq!(
        deps["call-engine-events"],
        BTreeSet::from(["call-engine-bus".to_string()]),
        "events depend only on the bus"
    );
}
