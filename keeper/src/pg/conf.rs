//! The settings file the keeper owns inside PGDATA
//! (`postgresql.pgpilot.conf`, included from postgresql.conf) and
//! standby.signal. Rendering is pure; writing goes through
//! [`super::write_pg_file`].

use crate::plan::{Role, Upstream};
use pgpilot_proto::{node_slot_name, replication_timeouts};

use super::ssl::{ClientMode, Ssl};

/// The replication role every node shares (DESIGN.md §7).
pub const REPLICATION_USER: &str = "pgpilot_replicator";

/// The line that makes postgresql.conf read our file. Last in the file, so
/// our settings win over earlier lines (postgresql.auto.conf still wins:
/// verification with SHOW names such a setting).
pub const INCLUDE_LINE: &str = "include_if_exists 'postgresql.pgpilot.conf'";

/// Quotes a value for postgresql.conf or a libpq connection string.
pub fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `text` with every `password=...` value hidden, for messages and logs
/// (they travel to the monitor's events). PostgreSQL's own log lines go
/// through the same function ([`pgpilot_pgproc::redact_passwords`]).
pub fn redact(text: &str) -> String {
    pgpilot_pgproc::redact_passwords(text)
}

/// primary_conninfo for streaming from `up` as node `node_id`, over SSL
/// as `client` says. It holds the password: it is only ever written to
/// our 0600 settings file, and logged through [`redact`].
pub fn conninfo(up: &Upstream, node_id: i64, password: &str, client: &ClientMode) -> String {
    let mut parts = vec![
        format!("host={}", quote(&up.host)),
        format!("port={}", up.port),
        format!("user={REPLICATION_USER}"),
        format!("application_name={}", node_slot_name(node_id)),
        // A dead primary must not hold the WAL receiver in connect().
        "connect_timeout=2".to_string(),
        "keepalives_idle=2".to_string(),
        "keepalives_interval=1".to_string(),
        "keepalives_count=2".to_string(),
    ];
    parts.extend(client.conninfo_parts());
    if !password.is_empty() {
        parts.push(format!("password={}", quote(password)));
    }
    parts.join(" ")
}

/// The whole settings file for `role`, SSL on with `ssl`'s files.
pub fn render(role: &Role, node_id: i64, password: &str, ssl: &Ssl) -> String {
    let mut s: Vec<(&str, String)> = vec![
        ("wal_level", "replica".into()),
        ("hot_standby", "on".into()),
        // pg_rewind needs hint-bit changes WAL-logged.
        ("wal_log_hints", "on".into()),
        ("max_wal_senders", "16".into()),
        ("max_replication_slots", "16".into()),
        ("hot_standby_feedback", "on".into()),
        // The standby reports every second (the shortest interval there
        // is) and pings its primary after half of wal_receiver_timeout of
        // silence, so its keeper tells "the primary went quiet" from "the
        // primary is idle" within the monitor's replication_lost_timeout;
        // the primary asks for a reply after half of wal_sender_timeout,
        // and lets a silent standby go after all of it (see
        // pgpilot_proto::replication_timeouts for the numbers' reasons).
        ("wal_receiver_status_interval", "'1s'".into()),
        (
            "wal_receiver_timeout",
            format!("'{}ms'", replication_timeouts::WAL_RECEIVER_TIMEOUT_MS),
        ),
        (
            "wal_sender_timeout",
            format!("'{}ms'", replication_timeouts::WAL_SENDER_TIMEOUT_MS),
        ),
        // After a failover, followers retry the new primary every second
        // instead of every five.
        ("wal_retrieve_retry_interval", "'1s'".into()),
        ("recovery_target_timeline", "'latest'".into()),
    ];
    s.extend(ssl.server_settings());
    match role {
        Role::Primary { ssn, read_only } => {
            s.push(("synchronous_standby_names", quote(ssn)));
            s.push((
                "default_transaction_read_only",
                if *read_only { "on" } else { "off" }.into(),
            ));
            s.push(("primary_conninfo", "''".into()));
            s.push(("primary_slot_name", "''".into()));
        }
        Role::Standby { upstream } => {
            s.push(("synchronous_standby_names", "''".into()));
            s.push(("default_transaction_read_only", "on".into()));
            match upstream {
                Some(up) => {
                    s.push((
                        "primary_conninfo",
                        quote(&conninfo(up, node_id, password, &ssl.client)),
                    ));
                    s.push(("primary_slot_name", quote(&node_slot_name(node_id))));
                }
                None => {
                    s.push(("primary_conninfo", "''".into()));
                    s.push(("primary_slot_name", "''".into()));
                }
            }
        }
    }
    let mut out = String::from(
        "# Written by the pgpilot keeper on every transition; edits are overwritten.\n\
         # Put your own settings in postgresql.conf (before the include line).\n",
    );
    for (k, v) in s {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out
}

/// The reloadable settings whose live value must match `role` after a
/// reload, as SHOW prints them.
pub fn expected(
    role: &Role,
    node_id: i64,
    password: &str,
    ssl: &Ssl,
) -> Vec<(&'static str, String)> {
    let mut live = match role {
        Role::Primary { ssn, read_only } => vec![
            ("synchronous_standby_names", ssn.clone()),
            (
                "default_transaction_read_only",
                if *read_only { "on" } else { "off" }.into(),
            ),
        ],
        Role::Standby { upstream } => vec![
            ("default_transaction_read_only", "on".into()),
            (
                "primary_conninfo",
                upstream
                    .as_ref()
                    .map(|u| conninfo(u, node_id, password, &ssl.client))
                    .unwrap_or_default(),
            ),
        ],
    };
    // SSL and SCRAM are reloadable: a node created before they were
    // managed gets them on its first reload, checked like the rest.
    live.push(("ssl", "on".into()));
    live.push(("password_encryption", "scram-sha-256".into()));
    live
}

/// postgresql.conf with our include line last, or `None` if it already is.
pub fn with_include(conf: &str) -> Option<String> {
    let last = conf.lines().rev().find(|l| !l.trim().is_empty());
    if last.map(str::trim) == Some(INCLUDE_LINE) {
        return None;
    }
    let mut out: String = conf
        .lines()
        .filter(|l| l.trim() != INCLUDE_LINE)
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str("\n# pgpilot: the keeper's settings; keep this line last.\n");
    out.push_str(INCLUDE_LINE);
    out.push('\n');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> Upstream {
        Upstream {
            node_id: 1,
            host: "10.0.0.1".into(),
            port: 5432,
        }
    }

    fn ssl() -> Ssl {
        Ssl {
            cert: "/d.pgpilot/ssl/server.crt".into(),
            key: "/d.pgpilot/ssl/server.key".into(),
            client: ClientMode::Require,
        }
    }

    #[test]
    fn primary_and_standby_files() {
        let p = render(
            &Role::Primary {
                ssn: "ANY 1 (pgpilot_node_2)".into(),
                read_only: false,
            },
            1,
            "pw",
            &ssl(),
        );
        assert!(p.contains("synchronous_standby_names = 'ANY 1 (pgpilot_node_2)'\n"));
        assert!(p.contains("default_transaction_read_only = off\n"));
        assert!(p.contains("primary_conninfo = ''\n"));
        let s = render(
            &Role::Standby {
                upstream: Some(up()),
            },
            2,
            "p'w",
            &ssl(),
        );
        assert!(s.contains("primary_slot_name = 'pgpilot_node_2'\n"), "{s}");
        assert!(s.contains("application_name=pgpilot_node_2"));
        assert!(s.contains("password=\\'p\\\\\\'w\\'"), "{s}");
        assert!(s.contains("default_transaction_read_only = on\n"));
        for f in [&p, &s] {
            assert!(f.contains("\nssl = on\n"), "{f}");
            assert!(f.contains("ssl_cert_file = '/d.pgpilot/ssl/server.crt'\n"));
            assert!(f.contains("ssl_key_file = '/d.pgpilot/ssl/server.key'\n"));
            assert!(f.contains("password_encryption = 'scram-sha-256'\n"));
        }
        assert!(s.contains(" sslmode=require "), "{s}");
    }

    #[test]
    fn a_known_ca_means_verify_full_in_primary_conninfo() {
        let client = ClientMode::VerifyFull {
            root_cert: "/d.pgpilot/ssl/root.crt".into(),
        };
        let c = conninfo(&up(), 2, "", &client);
        assert!(
            c.contains(" sslmode=verify-full sslrootcert='/d.pgpilot/ssl/root.crt'"),
            "{c}"
        );
        assert!(!c.contains("password"), "{c}");
        let live = expected(
            &Role::Standby {
                upstream: Some(up()),
            },
            2,
            "",
            &Ssl { client, ..ssl() },
        );
        assert!(live.contains(&("primary_conninfo", c)), "{live:?}");
        assert!(live.contains(&("ssl", "on".into())));
    }

    #[test]
    fn passwords_are_redacted() {
        let c = conninfo(&up(), 2, "s3cr'et", &ClientMode::Require);
        let r = redact(&format!("primary_conninfo is {c:?}"));
        assert!(!r.contains("s3cr"), "{r}");
        assert!(r.contains("password=***"), "{r}");
        assert!(r.contains("host='10.0.0.1'"), "{r}");
        assert_eq!(redact("no secret here"), "no secret here");
    }

    #[test]
    fn include_line_is_added_once_and_kept_last() {
        let c = with_include("max_connections = 100\n").unwrap();
        assert!(c.ends_with(&format!("{INCLUDE_LINE}\n")));
        assert_eq!(with_include(&c), None);
        let moved = with_include(&format!("{c}work_mem = '8MB'\n")).unwrap();
        assert_eq!(moved.matches(INCLUDE_LINE).count(), 1);
        assert!(moved.trim_end().ends_with(INCLUDE_LINE));
    }
}
