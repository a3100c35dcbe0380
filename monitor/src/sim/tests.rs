//! `cargo test` runs a fixed set of seeds; `PGPILOT_SIM_SEEDS=N` runs N
//! (from `PGPILOT_SIM_FIRST_SEED`, default 0); `PGPILOT_SIM_SEED=S` replays
//! one with its whole trace.

use super::{replay_command, Params, World};
use crate::fsm::switches::{switch_off, Rule};

/// Seeds run by `cargo test`: enough to cover every fault kind many times
/// over, within a few seconds in a debug build.
const DEFAULT_SEEDS: u64 = 200;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs one seed; on failure, the message names the seed, the replay
/// command and the trace that led there.
fn run_seed(seed: u64) -> Result<(), String> {
    let mut w = World::new(seed, Params::for_seed(seed));
    w.run().map_err(|v| {
        format!(
            "seed {seed}: {v}\nreplay: {}\ntrace (last events):\n{}",
            replay_command(seed),
            w.trace()
        )
    })
}

#[test]
fn seeds_hold_every_invariant() {
    let first = env_u64("PGPILOT_SIM_FIRST_SEED").unwrap_or(0);
    let count = env_u64("PGPILOT_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    for seed in first..first + count {
        if let Err(e) = run_seed(seed) {
            panic!("{e}");
        }
    }
}

#[test]
fn replay_one_seed() {
    let Some(seed) = env_u64("PGPILOT_SIM_SEED") else {
        return;
    };
    let mut w = World::new(seed, Params::for_seed(seed));
    w.trace_limit = usize::MAX;
    let result = w.run();
    // A replay is read by a person: the whole trace, on stderr.
    eprintln!("{}", w.trace());
    if let Err(e) = result {
        panic!("seed {seed}: {e}");
    }
}

/// Runs seeds with a safety rule off until one breaks an invariant.
fn first_violation(rule: Rule, seeds: u64) -> Option<(u64, String)> {
    let _off = switch_off(rule);
    (0..seeds).find_map(|seed| run_seed(seed).err().map(|e| (seed, e)))
}

#[test]
fn without_the_lease_gate_the_simulator_finds_a_violation() {
    let (seed, e) = first_violation(Rule::LeaseGate, 500)
        .expect("with the lease gate off, some seed must break an invariant");
    assert!(
        e.contains("accept writes at the same time") || e.contains("acknowledged commit"),
        "seed {seed}: {e}"
    );
}

#[test]
fn without_the_sync_catch_up_wait_acknowledged_writes_are_lost() {
    let found = (0..5000).find_map(|seed| {
        // Busier schedules find the window sooner.
        let params = Params {
            nodes: 2,
            fault_rate: 0.08,
            ..Params::for_seed(seed)
        };
        let mut w = World::new(seed, params);
        w.skip_sync_wait = true;
        w.run().err().map(|e| (seed, e))
    });
    let (seed, e) = found.expect("skipping the wait must lose an acknowledged write in some seed");
    assert!(e.contains("acknowledged commit"), "seed {seed}: {e}");
}
