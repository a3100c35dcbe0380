//! What the benchmarks (tests/keeper/lease_bound.rs, switchover_bench.rs,
//! tests/faults/bench.rs) share: their settings from the environment and
//! the figures of their reports.

use std::time::Duration;

/// `name` from the environment as a number, `default` when unset. A value
/// that is no number stops the benchmark before it measures anything.
pub fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Milliseconds with one decimal, "-" for none.
pub fn opt_ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}", ms(d)))
}

/// (min, median, max) of `v`, if any.
pub fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], median, v[n - 1]))
}

/// The core count and the PostgreSQL version: where the figures come from.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pg = pgpilot_pgproc::PgBin::discover()
        .ok()
        .and_then(|b| {
            std::process::Command::new(b.path("postgres"))
                .arg("--version")
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores; {pg}")
}
