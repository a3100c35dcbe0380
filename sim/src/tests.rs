//! `cargo test` runs a fixed set of seeds; `PGPILOT_SIM_SEEDS=N` runs N
//! (from `PGPILOT_SIM_FIRST_SEED`, default 0); `PGPILOT_SIM_SEED=S` replays
//! one with its whole trace. `PGPILOT_SIM_NODES` fixes the group size;
//! `PGPILOT_SIM_WAITS=1` prints what each run that ended waiting waited for;
//! `PGPILOT_SIM_BUSY=1` uses the busier schedule of the mutation tests.

use pgpilot_monitor::core::Core;
use pgpilot_monitor::fsm::FsmConfig;

use super::mutations::{core_with, Mutation};
use super::{replay_command, Params, World};

/// Seeds run by `cargo test`: enough to cover every fault kind many times
/// over, within seconds in a debug build.
const DEFAULT_SEEDS: u64 = 500;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The run's shape for a seed, with the group size from the environment
/// when it is set (the model itself reads no environment).
fn params(seed: u64) -> Params {
    let mut p = Params::for_seed(seed);
    if let Some(n) = env_u64("PGPILOT_SIM_NODES") {
        p.nodes = n as usize;
        p.quorum.resize(p.nodes, true);
        p.priorities.resize(p.nodes, 50);
    }
    // The busier schedule of some mutation tests, to replay their seeds.
    if std::env::var("PGPILOT_SIM_BUSY").is_ok() {
        p.fault_rate = busy(seed).fault_rate;
    }
    p
}

/// Runs one seed; on failure, the message names the seed, the replay
/// command and the trace that led there.
fn run_world(seed: u64, w: World) -> Result<u32, String> {
    run_world_waits(seed, w).map(|(n, _, _, _)| n)
}

/// Needless failovers, the wait a run ended in (where allowed), and its
/// fast_forwards (told, finished).
type RunOutcome = (u32, Option<String>, (u32, u32), u32);

/// [`run_world`], also returning what the group was left waiting for
/// where that is allowed, and its fast_forwards (told, finished).
fn run_world_waits(seed: u64, mut w: World) -> Result<RunOutcome, String> {
    match w.run() {
        Ok(()) => Ok((
            w.needless_failovers,
            w.ended_waiting.take(),
            w.fast_forwards,
            w.monitor.conflicts,
        )),
        Err(v) => Err(format!(
            "seed {seed}: {v}\nreplay: {}\ntrace (last events):\n{}",
            replay_command(seed),
            w.trace()
        )),
    }
}

#[test]
fn seeds_hold_every_invariant() {
    let first = env_u64("PGPILOT_SIM_FIRST_SEED").unwrap_or(0);
    let count = env_u64("PGPILOT_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let started = std::time::Instant::now();
    let mut needless = 0;
    let mut needless_seeds = Vec::new();
    // Runs that ended waiting, by what the monitor said (a machine lost
    // for good, a standby that may never be promoted).
    let mut waits: std::collections::BTreeMap<String, u32> = Default::default();
    let mut ff = (0, 0);
    // Leadership conflicts found, and in which seeds: none should be (no
    // fault makes a rogue PostgreSQL), so any is a false alarm to read.
    let mut conflict_seeds = Vec::new();
    for seed in first..first + count {
        match run_world_waits(seed, World::new(seed, params(seed))) {
            Ok((n, wait, f, c)) => {
                ff = (ff.0 + f.0, ff.1 + f.1);
                if c > 0 {
                    conflict_seeds.push((seed, c));
                }
                if n > 0 {
                    needless += n;
                    needless_seeds.push(seed);
                }
                if let Some(w) = wait {
                    // The kind of wait: its text without numbers.
                    let kind: String = w.chars().filter(|c| !c.is_ascii_digit()).collect();
                    if std::env::var("PGPILOT_SIM_WAITS").is_ok() {
                        eprintln!("seed {seed} waits: {w}");
                    }
                    *waits.entry(kind).or_default() += 1;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Read by whoever runs a long sweep: the numbers of the run.
    eprintln!(
        "simulation: seeds {first}..{}: 0 violations, {needless} needless failover(s) (seeds {needless_seeds:?}), \
         {} ended waiting with the reason named ({waits:?}), {} fast_forward(s) assigned, {} finished, \
         leadership conflicts (seed, count) {conflict_seeds:?}, {:.1} s",
        first + count,
        waits.values().sum::<u32>(),
        ff.0,
        ff.1,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn replay_one_seed() {
    let Some(seed) = env_u64("PGPILOT_SIM_SEED") else {
        return;
    };
    let mut w = World::new(seed, params(seed));
    w.trace_limit = usize::MAX;
    let result = w.run();
    // A replay is read by a person: the whole trace, on stderr.
    eprintln!("{}", w.trace());
    if let Err(e) = result {
        panic!("seed {seed}: {e}");
    }
}

/// The first default seed whose run breaks an invariant (or, with
/// `needless`, fails over needlessly more often than the production core
/// does on the same seed) with mutation `m`.
fn first_catch(m: Mutation, needless: bool) -> Option<(u64, String)> {
    first_catch_in(m, needless, DEFAULT_SEEDS, Params::for_seed)
}

fn first_catch_in(
    m: Mutation,
    needless: bool,
    seeds: u64,
    params: fn(u64) -> Params,
) -> Option<(u64, String)> {
    (0..seeds).find_map(|seed| {
        let w = World::with_core(seed, params(seed), core_with(m, FsmConfig::default()));
        match run_world(seed, w) {
            Err(e) => Some((seed, e)),
            Ok(n) if needless && n > 0 => {
                let base = run_world(seed, World::new(seed, params(seed))).unwrap_or(0);
                (n > base).then(|| {
                    (
                        seed,
                        format!("{n} needless failover(s), {base} without the mutation"),
                    )
                })
            }
            Ok(_) => None,
        }
    })
}

/// Busier schedules find narrow windows sooner.
fn busy(seed: u64) -> Params {
    Params {
        fault_rate: 0.08,
        ..Params::for_seed(seed)
    }
}

/// The first defaults (3 s lease, silences and unhealthy timeout, 1 s
/// margin and poll): valid timings under which a failover comes well
/// within a lease, so that the tests below can show the lease gate and the
/// streaming rule carry the weight. With today's defaults a failover's
/// own steps take about as long as the lease has left; the sweep of seeds
/// checks those.
fn first_defaults() -> FsmConfig {
    FsmConfig::whole_seconds()
}

/// A primary whose clock runs slow (0.77 of the monitor's: a 3 s lease
/// lasts 3.9 s in truth) loses its standby, then `after_ms` later the
/// monitor; clients still reach it. The monitor fails over (the standby
/// became a witness first), and the lease gate keeps the new primary
/// read-only until the clock margin has passed too. (Cut off from both
/// at once, the standby's witness comes late enough that the lease is
/// over anyway: its WAL receiver lingers on the silent connection and its
/// keeper counts from the very last contact.)
fn isolated_slow_primary(
    core: Option<Mutation>,
    (cfg, rate): (FsmConfig, f64),
    after_ms: u64,
) -> (Option<String>, String) {
    let p = Params {
        fault_rate: 0.0,
        clock_rates: vec![rate, 1.0],
        nodes: 2,
        quorum: vec![true, true],
        drops: false,
        ..Params::for_seed(1)
    };
    let mut w = match core {
        None => World::with_core(1, p, Core::new(cfg)),
        Some(m) => World::with_core(1, p, core_with(m, cfg)),
    };
    while w.now < 15_000 {
        w.step();
    }
    w.cuts.push(super::Cut {
        a: 1,
        b: 2,
        until: 36_000,
    });
    while w.now < 15_000 + after_ms {
        w.step();
    }
    w.isolate(0, 20_000);
    while w.now < 40_000 && w.violation.is_none() {
        w.step();
    }
    (w.violation.clone(), w.trace())
}

/// Where the isolation falls against the primary's last report decides
/// how much of its lease is left when the monitor could fail over, so
/// both tests try every 50 ms of a report interval and more.
const ISOLATED_AFTER_MS: std::ops::RangeInclusive<u64> = 0..=1000;

#[test]
fn the_clock_margin_covers_a_slow_keeper_clock() {
    // Today's defaults (300 ms on a 1.2 s lease: rates down to 0.8) and
    // the first ones (1 s on 3 s: down to 0.75).
    for timings in [(FsmConfig::default(), 0.81), (first_defaults(), 0.77)] {
        for after in ISOLATED_AFTER_MS.step_by(50) {
            let (v, trace) = isolated_slow_primary(None, timings.clone(), after);
            assert_eq!(v, None, "isolated {after} ms after the cut:\n{trace}");
        }
    }
}

#[test]
fn without_the_lease_gate_two_nodes_accept_writes() {
    // Today's defaults with the old primary's clock at 0.79 of the
    // monitor's: the gate still holds it (its margin and the witness's
    // own delays), and without the gate the standby is promoted while the
    // old primary still writes. (With the first defaults at 0.77 the
    // keeper's immediate retry of a report that got no reply moved its
    // rounds so that the window closed by itself: the test would prove
    // nothing there.)
    let timings = (FsmConfig::default(), 0.79);
    for after in ISOLATED_AFTER_MS.step_by(50) {
        let (v, trace) = isolated_slow_primary(None, timings.clone(), after);
        assert_eq!(
            v, None,
            "with the gate, isolated {after} ms after the cut:\n{trace}"
        );
    }
    let v = ISOLATED_AFTER_MS
        .step_by(50)
        .find_map(|after| {
            isolated_slow_primary(Some(Mutation::LeaseGate), timings.clone(), after).0
        })
        .expect("with the lease gate off, two nodes must accept writes for some isolation");
    assert!(v.contains("accept writes at the same time"), "{v}");
}

#[test]
fn without_the_second_witness_healthy_primaries_are_failed_over() {
    let (seed, e) = first_catch(Mutation::SecondWitness, true)
        .expect("without the second witness, some seed must fail over a healthy primary");
    assert!(e.contains("needless"), "seed {seed}: {e}");
}

#[test]
/// What catches it first is the edge table (a wait_primary has no
/// transition to draining, so the keeper refuses the goal), not a lost
/// write: the mutation is a keeper/monitor disagreement before it can be a
/// data loss. Either counts, and the test says which it saw.
fn failing_over_from_wait_primary_is_refused_by_the_edge_table_or_loses_writes() {
    let (seed, e) = first_catch(Mutation::OnlyFromPrimary, false)
        .expect("failing over from wait_primary must break an invariant in some seed");
    assert!(
        e.contains("no transition leads there") || e.contains("acknowledged commit"),
        "seed {seed}: {e}"
    );
}

#[test]
fn an_election_blind_to_lsns_loses_acknowledged_writes() {
    let (seed, e) = first_catch(Mutation::ElectionByLsn, false)
        .expect("an election that ignores LSNs must lose a write in some seed");
    assert!(e.contains("acknowledged commit"), "seed {seed}: {e}");
}

/// Three quorum nodes, equal clocks, no seeded faults: the scenarios
/// inject their own.
fn quiet_three() -> Params {
    Params {
        nodes: 3,
        fault_rate: 0.0,
        quorum: vec![true; 3],
        drops: false,
        clock_rates: vec![1.0; 3],
        priorities: vec![50; 3],
        lose_one: false,
        ..Params::for_seed(2)
    }
}

/// Three nodes; the primary's machine is lost for good, and so is the
/// election's winner the moment it is chosen. The third node holds all
/// the winner reported (no client writes meanwhile, so both standbys are
/// equal). Returns whether a surviving node takes writes by the end, and
/// what the monitor says the group waits for.
fn election_winner_lost(core: Option<Mutation>) -> (bool, Option<String>, String) {
    let p = quiet_three();
    let mut w = match core {
        None => World::new(2, p),
        Some(m) => World::with_core(2, p, core_with(m, FsmConfig::default())),
    };
    while w.now < 15_000 {
        w.step();
    }
    w.lose(0);
    while w.now < 40_000 {
        w.step();
        let winner = w.monitor.stored.nodes.iter().find(|n| {
            matches!(
                n.assigned,
                pgpilot_proto::NodeState::PreparePromotion
                    | pgpilot_proto::NodeState::StopReplication
            )
        });
        if let Some(id) = winner.map(|n| n.id) {
            w.lose(id as usize - 1);
            break;
        }
    }
    while w.now < 90_000 && w.violation.is_none() {
        w.step();
    }
    assert_eq!(w.violation, None, "{}", w.trace());
    let writable = w
        .nodes
        .iter()
        .any(|n| n.pg.accepts_writes() && n.down_until.is_none());
    (writable, w.monitor.view().waiting_for, w.trace())
}

#[test]
fn an_election_whose_winner_is_lost_goes_on_with_the_next() {
    let (writable, wait, trace) = election_winner_lost(None);
    assert!(writable, "the third node must take over:\n{trace}");
    assert_eq!(wait, None);
}

#[test]
fn without_the_election_timeout_the_group_waits_for_a_dead_winner() {
    let (writable, wait, trace) = election_winner_lost(Some(Mutation::ElectionTimeout));
    assert!(
        !writable,
        "without the timeout nobody may take over:\n{trace}"
    );
    // The wait is still named (promise 3), but nothing moves.
    let wait = wait.unwrap_or_default();
    assert!(wait.contains("failover waits for node 2"), "{wait}");
}

/// Three nodes; the primary freezes for `ms` while clients write, then
/// resumes. Returns the first violation.
fn frozen_primary_resumes(ms: u64, keep_streaming: bool) -> (Option<String>, String) {
    let p = quiet_three();
    let mut w = World::with_core(2, p, Core::new(first_defaults()));
    w.keep_streaming = keep_streaming;
    while w.now < 15_000 {
        w.step();
    }
    w.freeze(0, ms);
    while w.now < 40_000 && w.violation.is_none() {
        w.step();
    }
    (w.violation.clone(), w.trace())
}

#[test]
fn voters_that_keep_streaming_let_the_old_primary_get_writes_acknowledged() {
    let caught = (20..=40).find_map(|tenths| {
        let (v, _) = frozen_primary_resumes(tenths * 100, true);
        v.map(|v| (tenths, v))
    });
    let (tenths, v) = caught.expect("some freeze must end while the voters still stream");
    assert!(
        v.contains("acknowledged commit"),
        "freeze {tenths}00 ms: {v}"
    );
    let (v, trace) = frozen_primary_resumes(tenths * 100, false);
    assert_eq!(
        v, None,
        "the same freeze is safe when voters stop streaming:\n{trace}"
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

/// A planned stop of the primary (the steps of primary -> draining) ships
/// WAL it wrote after the last replication step to its streaming standbys,
/// and its keeper reports the shutdown LSN; a standby's clean stop and a
/// killed primary report none.
#[test]
fn a_clean_stop_ships_its_wal_and_reports_the_shutdown_lsn() {
    use pgpilot_keeper::plan::Step;
    let mut w = World::new(2, quiet_three());
    while w.now < 15_000 {
        w.step();
    }
    let p = (0..3)
        .find(|i| w.nodes[*i].pg.accepts_writes())
        .expect("a primary");
    let standbys: Vec<usize> = (0..3)
        .filter(|j| w.nodes[*j].pg.streaming_from == Some(p))
        .collect();
    assert!(!standbys.is_empty(), "{}", w.trace());
    // A commit written since the standbys last received.
    let rec = w.new_record();
    w.nodes[p].pg.data.as_mut().unwrap().append(rec);
    for step in [Step::Checkpoint, Step::Stop] {
        w.run_step(p, &step).unwrap();
    }
    let end = w.nodes[p].pg.lsn();
    for j in &standbys {
        assert_eq!(w.nodes[*j].pg.lsn(), end, "node {} got the last WAL", j + 1);
    }
    w.observe(p);
    let now = w.mono(p, w.now);
    assert_eq!(w.engine(p).request(now).shutdown_lsn, Some(end));
    let s = standbys[0];
    w.run_step(s, &Step::Stop).unwrap();
    w.observe(s);
    assert_eq!(w.engine(s).request(now).shutdown_lsn, None, "a standby");

    let mut w = World::new(2, quiet_three());
    while w.now < 15_000 {
        w.step();
    }
    let p = (0..3)
        .find(|i| w.nodes[*i].pg.accepts_writes())
        .expect("a primary");
    w.nodes[p].pg.kill();
    w.observe(p);
    let now = w.mono(p, w.now);
    assert_eq!(w.engine(p).request(now).shutdown_lsn, None, "a crash");
}
