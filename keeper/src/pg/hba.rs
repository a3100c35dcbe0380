//! pg_hba.conf: the keeper owns a block of lines at the top (first match
//! wins in pg_hba.conf) and keeps every other line as the operator wrote it.

use std::net::IpAddr;

use super::conf::REPLICATION_USER;
use crate::config::Auth;

const BEGIN: &str = "# BEGIN pgpilot: managed by the keeper, rewritten on every change";
const END: &str = "# END pgpilot";
/// The user the monitor's health probe names in its startup packet. No such
/// role needs to exist: the server answers with a SCRAM challenge, the probe
/// hangs up, and PostgreSQL logs nothing, where a refused connection would
/// log a FATAL line every second.
pub const PROBE_USER: &str = "pgpilot_monitor";

/// An address as pg_hba.conf wants it: an IP with a host mask, or a host
/// name that did not resolve (PostgreSQL then matches it by reverse DNS).
pub fn hba_address(host: &str, resolved: &[IpAddr]) -> Vec<String> {
    if resolved.is_empty() {
        return vec![host.to_string()];
    }
    let mut out: Vec<String> = resolved
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => format!("{v4}/32"),
            IpAddr::V6(v6) => format!("{v6}/128"),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a pg_hba.conf address is a loopback one (`--auth trust`
/// applies only there).
fn is_loopback(addr: &str) -> bool {
    let ip = addr.split('/').next().unwrap_or(addr);
    ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) || addr == "localhost"
}

/// The managed lines: replication and pg_rewind (database postgres) for
/// the other nodes, the health probe for the monitor. Every one is
/// `hostssl` and limited to the group's own addresses; SCRAM, except
/// `trust` for loopback addresses with `--auth trust` and for every
/// address with `--auth trust-remote`. After them, our two roles are
/// refused from anywhere else and without SSL (`reject`), before any
/// operator line or initdb's loopback lines could admit them: a
/// plain-text attempt gets "pg_hba.conf rejects connection ... no
/// encryption".
pub fn managed_lines(others: &[String], monitor: &[String], auth: Auth) -> Vec<String> {
    let mut lines = Vec::new();
    for addr in others {
        let method = auth.hba_method_for(is_loopback(addr));
        lines.push(format!(
            "hostssl replication {REPLICATION_USER} {addr} {method}"
        ));
        lines.push(format!(
            "hostssl postgres {REPLICATION_USER} {addr} {method}"
        ));
    }
    for addr in monitor {
        // Never trust: the probe hangs up at the SCRAM prompt.
        lines.push(format!(
            "hostssl postgres {PROBE_USER} {addr} scram-sha-256"
        ));
    }
    lines.sort();
    lines.dedup();
    lines.extend(REJECT.iter().map(|l| l.to_string()));
    lines
}

/// Closes the block: our roles, from any other address or without SSL.
const REJECT: [&str; 3] = [
    "host replication pgpilot_replicator all reject",
    "host all pgpilot_replicator all reject",
    "host all pgpilot_monitor all reject",
];

/// `existing` with the managed block replaced by `lines` (placed first).
pub fn render(existing: &str, lines: &[String]) -> String {
    let mut kept = Vec::new();
    let mut inside = false;
    for l in existing.lines() {
        match l.trim() {
            BEGIN => inside = true,
            END => inside = false,
            _ if !inside => kept.push(l),
            _ => {}
        }
    }
    let mut out = format!("{BEGIN}\n");
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    for l in kept {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_replaced_operator_lines_kept() {
        let ips = hba_address("b", &["10.0.0.2".parse().unwrap()]);
        assert_eq!(ips, vec!["10.0.0.2/32"]);
        let lines = managed_lines(&ips, &["10.0.0.9/32".into()], Auth::Scram);
        assert!(lines.iter().all(|l| !l.contains("trust")), "{lines:?}");
        let first = render(
            "local all all trust\nhost all all 0.0.0.0/0 reject\n",
            &lines,
        );
        assert!(first.starts_with(BEGIN));
        assert!(
            first.contains("\nhostssl replication pgpilot_replicator 10.0.0.2/32 scram-sha-256\n")
        );
        assert!(first.contains("\nhostssl postgres pgpilot_replicator 10.0.0.2/32 scram-sha-256\n"));
        assert!(first.contains("\nhostssl postgres pgpilot_monitor 10.0.0.9/32 scram-sha-256\n"));
        // The rejects come after every accepting line (first match wins).
        let reject = first.find(" reject\n").unwrap();
        assert!(first.rfind("hostssl").unwrap() < reject, "{first}");
        assert!(first.contains("host all pgpilot_monitor all reject\n"));
        assert!(first.ends_with("local all all trust\nhost all all 0.0.0.0/0 reject\n"));
        let again = render(&first, &lines);
        assert_eq!(first, again, "rendering is stable");
        let none = render(&first, &[]);
        assert!(!none.contains("reject\n# END"));
        assert!(!none.contains("pgpilot_replicator"));
        assert_eq!(hba_address("db.example", &[]), vec!["db.example"]);
    }

    #[test]
    fn trust_is_for_loopback_unless_trust_remote_is_named() {
        let others = ["127.0.0.1/32".to_string(), "10.0.0.2/32".to_string()];
        let mon = ["10.0.0.9/32".to_string()];
        let trust = managed_lines(&others, &mon, Auth::Trust);
        assert!(trust.contains(&"hostssl replication pgpilot_replicator 127.0.0.1/32 trust".into()));
        assert!(trust
            .contains(&"hostssl replication pgpilot_replicator 10.0.0.2/32 scram-sha-256".into()));
        let remote = managed_lines(&others, &mon, Auth::TrustRemote);
        assert!(remote.contains(&"hostssl postgres pgpilot_replicator 10.0.0.2/32 trust".into()));
        for lines in [&trust, &remote] {
            assert!(lines
                .contains(&"hostssl postgres pgpilot_monitor 10.0.0.9/32 scram-sha-256".into()));
            assert!(!lines
                .iter()
                .any(|l| l.starts_with("host ") && !l.ends_with(" reject")));
        }
    }
}
