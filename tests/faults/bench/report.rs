//! The failover benchmark's figures: one [`Round`] each, the printed
//! report (min / median / max per scenario) and the CSV of every figure.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{Config, HOLD};
use crate::harness::Outcome;
use crate::support::bench::{machine, ms, opt_ms, stats};

/// What one round measured. A figure the round did not get to (it failed
/// first, or it has no such figure) is `None`.
#[derive(Clone, Debug)]
pub struct Round {
    pub scenario: &'static str,
    pub round: usize,
    /// From the fault to the first commit the new primary acknowledged to
    /// the application writer (through the formation URI, with its
    /// attempt timeout and reconnects).
    pub writer_first: Option<Duration>,
    /// The same to the checker, which commits on the new primary through
    /// its own connection every interval: when pgpilot let it take writes.
    pub checker_first: Option<Duration>,
    /// The longest time without a writer commit, from the fault to the
    /// end of the round.
    pub longest_gap: Option<Duration>,
    /// Acknowledged commits missing on the final primary: the writer's
    /// and the checker's.
    pub missing_writer: usize,
    pub missing_checker: usize,
    /// Commits the old primary acknowledged after the fault: to the
    /// checker (the figure of the report) and to the writer.
    pub late: usize,
    pub late_writer: usize,
    /// Failed writer attempts after the fault (refused, read-only, timed
    /// out), and commits it had acknowledged in the whole round.
    pub failures: usize,
    pub writes: usize,
    /// switchover: the command's wall time.
    pub command: Option<Duration>,
    /// stress: how long the load ran, the promotions and the goal changes
    /// the monitor recorded meanwhile.
    pub duration: Option<Duration>,
    pub failovers: Option<usize>,
    pub goal_changes: Option<usize>,
    /// Why the round failed, if it did.
    pub error: Option<String>,
}

impl Round {
    pub fn new(scenario: &'static str, round: usize) -> Round {
        Round {
            scenario,
            round,
            writer_first: None,
            checker_first: None,
            longest_gap: None,
            missing_writer: 0,
            missing_checker: 0,
            late: 0,
            late_writer: 0,
            failures: 0,
            writes: 0,
            command: None,
            duration: None,
            failovers: None,
            goal_changes: None,
            error: None,
        }
    }

    /// The figures of `out` from `t0` on: `old` (name, port) had the
    /// writes at `t0`, `new` has them at the end (`None`: no failover
    /// meant, no first-write or late figures).
    pub fn measure(
        &mut self,
        out: &Outcome,
        t0: Instant,
        old: (&str, u16),
        new: Option<(&str, u16)>,
    ) {
        if let Some((name, port)) = new {
            self.writer_first = out.first_on(port, t0);
            self.checker_first = out.first_check_on(name, t0);
            self.late = out
                .checks
                .iter()
                .filter(|k| k.node == old.0 && k.acked >= t0)
                .count();
            self.late_writer = out
                .acks
                .iter()
                .filter(|a| a.port == old.1 && a.at >= t0)
                .count();
        }
        self.longest_gap = Some(out.longest_gap(t0));
        self.missing_writer = out.missing.len();
        self.missing_checker = out.lost;
        self.failures = out.failures_since(t0);
        self.writes = out.acks.len();
    }

    pub fn missing(&self) -> usize {
        self.missing_writer + self.missing_checker
    }

    /// One line for the progress log.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "writer {} ms, checker {} ms, gap {} ms, missing {}, late {}, failed attempts {}",
            opt_ms(self.writer_first),
            opt_ms(self.checker_first),
            opt_ms(self.longest_gap),
            self.missing(),
            self.late,
            self.failures
        );
        if let Some(f) = self.failovers {
            let _ = write!(s, ", failovers {f}");
        }
        match &self.error {
            Some(e) => format!("{s}; FAILED: {e}"),
            None => s,
        }
    }
}

/// The printed report.
pub fn text(cfg: &Config, rounds: &[Round]) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "\n=== failover benchmark: monitor and two nodes, each in its own network namespace ==="
    );
    let _ = writeln!(r, "machine: {}", machine());
    let _ = writeln!(
        r,
        "writer: a commit every {} ms through the formation URI, attempt timeout {} ms (connect \
         per host, and commit); checker: a commit on each node every {} ms ({} ms under stress); \
         freeze and partition held {} s",
        cfg.write_every.as_millis(),
        cfg.attempt_timeout.as_millis(),
        cfg.check_every("kill").as_millis(),
        cfg.check_every("stress").as_millis(),
        HOLD.as_secs()
    );
    let _ = writeln!(
        r,
        "times in ms from the fault; writer/checker: first commit acknowledged by the new primary \
         to each; gap: longest time without a writer commit; missing: acknowledged commits not on \
         the final primary; late: checker commits acknowledged by the old primary after the fault"
    );
    let faults: Vec<&Round> = rounds.iter().filter(|x| x.scenario != "stress").collect();
    if !faults.is_empty() {
        table(&mut r, &faults);
    }
    let mut scenarios: Vec<&str> = Vec::new();
    for x in rounds {
        if !scenarios.contains(&x.scenario) {
            scenarios.push(x.scenario);
        }
    }
    for s in scenarios {
        let of: Vec<&Round> = rounds.iter().filter(|x| x.scenario == s).collect();
        let failed = of.iter().filter(|x| x.error.is_some()).count();
        if s == "stress" {
            stress_text(&mut r, of[0]);
            continue;
        }
        let _ = writeln!(r, "\n{s}: {} rounds, {failed} failed", of.len());
        let figure = |f: fn(&Round) -> Option<Duration>| -> Vec<f64> {
            of.iter().filter_map(|x| f(x).map(ms)).collect()
        };
        let mut lines = vec![
            ("first write, app writer", figure(|x| x.writer_first)),
            ("first write, checker", figure(|x| x.checker_first)),
            ("longest write gap", figure(|x| x.longest_gap)),
        ];
        if s == "switchover" {
            lines.push(("command wall time", figure(|x| x.command)));
        }
        for (what, v) in lines {
            let _ = match stats(&v) {
                Some((lo, med, hi)) => writeln!(
                    r,
                    "  {what:<24} min {lo:>8.1}  median {med:>8.1}  max {hi:>8.1} ms ({} of {})",
                    v.len(),
                    of.len()
                ),
                None => writeln!(r, "  {what:<24} no figures"),
            };
        }
        let _ = writeln!(
            r,
            "  missing rows {} (writer {}, checker {}); late acknowledgements {} (checker; writer \
             {}); failed writer attempts {}",
            of.iter().map(|x| x.missing()).sum::<usize>(),
            of.iter().map(|x| x.missing_writer).sum::<usize>(),
            of.iter().map(|x| x.missing_checker).sum::<usize>(),
            of.iter().map(|x| x.late).sum::<usize>(),
            of.iter().map(|x| x.late_writer).sum::<usize>(),
            of.iter().map(|x| x.failures).sum::<usize>()
        );
    }
    let late = |switchover: bool| -> usize {
        let of = faults
            .iter()
            .filter(|x| (x.scenario == "switchover") == switchover);
        of.map(|x| x.late).sum()
    };
    let _ = writeln!(
        r,
        "\ntotal: {} rounds, {} failed; missing rows {}; late acknowledgements {} (kill, freeze, \
         partition; switchover's old primary takes writes until its drain stops it: {})",
        rounds.len(),
        rounds.iter().filter(|x| x.error.is_some()).count(),
        rounds.iter().map(Round::missing).sum::<usize>(),
        late(false),
        late(true)
    );
    for x in rounds {
        if let Some(e) = &x.error {
            let _ = writeln!(r, "FAILED {} {}: {e}", x.scenario, x.round);
        }
    }
    r
}

/// One line per fault round.
fn table(r: &mut String, rounds: &[&Round]) {
    let _ = writeln!(
        r,
        "\n{:<11} {:>3} {:>10} {:>10} {:>10} {:>7} {:>4} {:>8} {:>10}  status",
        "scenario", "#", "writer", "checker", "gap", "missing", "late", "failures", "command"
    );
    for x in rounds {
        let _ = writeln!(
            r,
            "{:<11} {:>3} {:>10} {:>10} {:>10} {:>7} {:>4} {:>8} {:>10}  {}",
            x.scenario,
            x.round,
            opt_ms(x.writer_first),
            opt_ms(x.checker_first),
            opt_ms(x.longest_gap),
            x.missing(),
            x.late,
            x.failures,
            opt_ms(x.command),
            if x.error.is_some() { "FAILED" } else { "ok" }
        );
    }
}

fn stress_text(r: &mut String, x: &Round) {
    let count = |v: Option<usize>| v.map_or("-".into(), |v| v.to_string());
    let _ = writeln!(
        r,
        "\nstress (stress-ng --cpu 2 --io 2 --hdd 1, {} s, no fault): {}\n  failovers {}, goal \
         changes {}, longest write gap {} ms, failed writer attempts {}, missing rows {} of {} \
         writer commits (checker {})",
        x.duration
            .map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64())),
        if x.error.is_some() { "FAILED" } else { "ok" },
        count(x.failovers),
        count(x.goal_changes),
        opt_ms(x.longest_gap),
        x.failures,
        x.missing_writer,
        x.writes,
        x.missing_checker
    );
}

/// Every figure of every round, one line each.
pub fn write_csv(path: &std::path::Path, rounds: &[Round]) -> std::io::Result<()> {
    let mut s = String::from(
        "scenario,round,writer_first_ms,checker_first_ms,longest_gap_ms,missing_writer,\
         missing_checker,late_checker,late_writer,failed_attempts,writes,command_ms,duration_s,\
         failovers,goal_changes,error\n",
    );
    let ms = |d: Option<Duration>| d.map_or(String::new(), |d| format!("{:.3}", ms(d)));
    let n = |v: Option<usize>| v.map_or(String::new(), |v| v.to_string());
    for x in rounds {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            x.scenario,
            x.round,
            ms(x.writer_first),
            ms(x.checker_first),
            ms(x.longest_gap),
            x.missing_writer,
            x.missing_checker,
            x.late,
            x.late_writer,
            x.failures,
            x.writes,
            ms(x.command),
            x.duration
                .map_or(String::new(), |d| format!("{:.1}", d.as_secs_f64())),
            n(x.failovers),
            n(x.goal_changes),
            // One field: quoted, quotes doubled, on one line.
            x.error.as_ref().map_or(String::new(), |e| {
                format!("\"{}\"", e.replace('"', "\"\"").replace('\n', " "))
            })
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_give_min_median_max() {
        assert_eq!(stats(&[]), None);
        assert_eq!(stats(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), Some((1.0, 2.5, 4.0)));
    }
}
