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

/// The managed lines: replication and pg_rewind (database postgres) for
/// the other nodes, the health probe for the monitor.
pub fn managed_lines(others: &[String], monitor: &[String], auth: Auth) -> Vec<String> {
    let method = auth.hba_method();
    let mut lines = Vec::new();
    for addr in others {
        lines.push(format!(
            "host replication {REPLICATION_USER} {addr} {method}"
        ));
        lines.push(format!("host postgres {REPLICATION_USER} {addr} {method}"));
    }
    for addr in monitor {
        lines.push(format!("host postgres {PROBE_USER} {addr} scram-sha-256"));
    }
    lines.sort();
    lines.dedup();
    lines
}

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
        let first = render(
            "local all all trust\nhost all all 0.0.0.0/0 reject\n",
            &lines,
        );
        assert!(first.starts_with(BEGIN));
        assert!(first.contains("host replication pgpilot_replicator 10.0.0.2/32 scram-sha-256\n"));
        assert!(first.contains("host postgres pgpilot_monitor 10.0.0.9/32 scram-sha-256\n"));
        assert!(first.ends_with("local all all trust\nhost all all 0.0.0.0/0 reject\n"));
        let again = render(&first, &lines);
        assert_eq!(first, again, "rendering is stable");
        let none = render(&first, &[]);
        assert!(!none.contains("pgpilot_replicator"));
        assert_eq!(hba_address("db.example", &[]), vec!["db.example"]);
    }
}
