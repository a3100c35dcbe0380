//! `config get|set|check --pgdata DIR`: monitor.toml or keeper.toml of
//! DIR, read, changed and checked with the very parse-and-validate that
//! `pgpilot run` applies at start ([`KeeperConfig::parse`],
//! [`MonitorConfig::parse`]).
//!
//! `set` edits the file's TOML, validates the whole result, and only then
//! writes it, crash-safely (the configurations' own `save`): a refused
//! value leaves the file as it was. Keys the monitor registered (a node's
//! name, host, port, ...) or holds itself (candidate priority) are
//! refused with the command to use instead. Secrets are never printed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use pgpilot_keeper::config::KeeperConfig;
use pgpilot_monitor::config::MonitorConfig;
use pgpilot_monitor::files::monitor_config_path;
use toml::{Table, Value};

use crate::cli::ConfigCmd;

/// What a change of a key takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    /// Read when the service starts.
    Restart,
    /// Read when PostgreSQL starts: a stop of both, then `run`.
    PgRestart,
    /// Not changed here; the text says what to do instead.
    Refused(&'static str),
}

struct Key {
    name: &'static str,
    effect: Effect,
    /// Never printed by `get`.
    secret: bool,
}

const fn key(name: &'static str, effect: Effect) -> Key {
    Key {
        name,
        effect,
        secret: false,
    }
}

const REGISTERED: Effect = Effect::Refused(
    "the monitor registered it at `create postgres`: drop the node and create it again to change it",
);

const KEEPER_KEYS: &[Key] = &[
    key(
        "pgdata",
        Effect::Refused("keeper.toml belongs to this data directory; it cannot point elsewhere"),
    ),
    key("monitor", Effect::Restart),
    key("formation", REGISTERED),
    key("name", REGISTERED),
    key("hostname", REGISTERED),
    key("pgport", REGISTERED),
    key("listen_addresses", Effect::PgRestart),
    key("dbname", REGISTERED),
    key("username", REGISTERED),
    key(
        "candidate_priority",
        Effect::Refused(
            "the monitor holds it: use `pgpilot set node candidate-priority --name NAME VALUE`",
        ),
    ),
    key(
        "replication_quorum",
        Effect::Refused(
            "the monitor holds it: use `pgpilot set node replication-quorum --name NAME VALUE`",
        ),
    ),
    key("auth", Effect::Restart),
    key("pg_user", Effect::PgRestart),
    key("poll_interval", Effect::Restart),
    key("maximum_backup_rate", Effect::Restart),
    key("http_listen", Effect::Restart),
    key("postgres_dies_with_keeper", Effect::PgRestart),
    key("pre_promote", Effect::Restart),
    key("on_role_change", Effect::Restart),
    key("hook_timeout", Effect::Restart),
    Key {
        name: "replication_password",
        effect: Effect::Refused(
            "the monitor hands it out at registration; `pgpilot rotate replication-password` replaces it",
        ),
        secret: true,
    },
    key(
        "replication_password_generation",
        Effect::Refused("it numbers the replication password, which the monitor hands out"),
    ),
];

const MONITOR_KEYS: &[Key] = &[
    key("listen", Effect::Restart),
    key("hostname", Effect::Restart),
    key(
        "pgdata",
        Effect::Refused("monitor.toml belongs to this data directory; it cannot point elsewhere"),
    ),
    Key {
        // May hold a password.
        name: "database_url",
        effect: Effect::Restart,
        secret: true,
    },
    key("pg_user", Effect::Restart),
    key("http_listen", Effect::Restart),
    key(
        "ssl",
        Effect::Refused(
            "every keeper holds the monitor's URI with its scheme (https:// or http://) and its CA; \
             TLS is chosen at `create monitor`",
        ),
    ),
    key("timings.probe_interval", Effect::Restart),
    key("timings.probe_timeout", Effect::Restart),
    key("timings.probe_retries", Effect::Restart),
    key("timings.probe_retry_delay", Effect::Restart),
    key("timings.keeper_poll_interval", Effect::Restart),
    key("timings.node_unhealthy_timeout", Effect::Restart),
    key("timings.replication_lost_timeout", Effect::Restart),
    key("timings.lease", Effect::Restart),
    key("timings.clock_margin", Effect::Restart),
    key("timings.replication_stall_timeout", Effect::Restart),
    key("timings.sync_wal_threshold", Effect::Restart),
    key("timings.promote_wal_threshold", Effect::Restart),
    key("timings.promotion_timeout", Effect::Restart),
];

/// Whose configuration a DIR holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Monitor,
    Keeper,
}

impl Kind {
    fn of(pgdata: &Path) -> anyhow::Result<(Kind, PathBuf)> {
        let monitor = monitor_config_path(pgdata);
        if monitor.is_file() {
            return Ok((Kind::Monitor, monitor));
        }
        let keeper = pgpilot_keeper::files::config_path(pgdata);
        if keeper.is_file() {
            return Ok((Kind::Keeper, keeper));
        }
        bail!(
            "{} has no pgpilot monitor or node: neither {} nor {} exists",
            pgdata.display(),
            monitor.display(),
            keeper.display()
        )
    }

    fn keys(self) -> &'static [Key] {
        match self {
            Kind::Monitor => MONITOR_KEYS,
            Kind::Keeper => KEEPER_KEYS,
        }
    }

    fn service(self) -> &'static str {
        match self {
            Kind::Monitor => "monitor",
            Kind::Keeper => "keeper",
        }
    }

    /// Parses and validates as `run` does; the effective `http_listen`.
    fn parse(self, text: &str, path: &Path) -> anyhow::Result<String> {
        Ok(match self {
            Kind::Monitor => MonitorConfig::parse(text, path)?.http_listen()?.to_string(),
            Kind::Keeper => KeeperConfig::parse(text, path)?.http_listen()?.to_string(),
        })
    }

    /// Validates `text` and writes it with the configuration's own `save`.
    fn save(self, text: &str, path: &Path) -> anyhow::Result<()> {
        match self {
            Kind::Monitor => MonitorConfig::parse(text, path)?.save(path),
            Kind::Keeper => KeeperConfig::parse(text, path)?.save(),
        }
    }
}

pub fn config(cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Get { pgdata, key } => {
            println!("{}", get(&std::path::absolute(pgdata)?, &key)?);
        }
        ConfigCmd::Set { pgdata, key, value } => {
            println!("{}", set(&std::path::absolute(pgdata)?, &key, &value)?);
        }
        ConfigCmd::Check { pgdata } => {
            let (kind, path) = Kind::of(&std::path::absolute(pgdata)?)?;
            let text = read(&path)?;
            kind.parse(&text, &path)?;
            println!("{} is valid", path.display());
        }
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

fn find(kind: Kind, name: &str, path: &Path) -> anyhow::Result<&'static Key> {
    kind.keys().iter().find(|k| k.name == name).ok_or_else(|| {
        let names: Vec<&str> = kind.keys().iter().map(|k| k.name).collect();
        anyhow::anyhow!(
            "{} has no key {name:?}; its keys are {}",
            path.display(),
            names.join(", ")
        )
    })
}

/// The value of `name`, as text (strings unquoted).
fn get(pgdata: &Path, name: &str) -> anyhow::Result<String> {
    let (kind, path) = Kind::of(pgdata)?;
    let key = find(kind, name, &path)?;
    if key.secret {
        return Ok("***".into());
    }
    let text = read(&path)?;
    let table: Table = text
        .parse()
        .with_context(|| format!("parse {}", path.display()))?;
    match lookup(&table, name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Ok(v.to_string()),
        // Absent: what applies instead.
        None if name == "http_listen" => kind.parse(&text, &path),
        None => Ok(String::new()),
    }
}

/// `set`: validates the whole file with `name` changed, then writes it.
/// Returns what to tell the operator.
fn set(pgdata: &Path, name: &str, value: &str) -> anyhow::Result<String> {
    let (kind, path) = Kind::of(pgdata)?;
    let key = find(kind, name, &path)?;
    if let Effect::Refused(why) = key.effect {
        bail!("{name} is not changed with `config set`: {why}");
    }
    let text = read(&path)?;
    let mut table: Table = text
        .parse()
        .with_context(|| format!("parse {}", path.display()))?;
    let typed = typed(lookup(&table, name), value);
    insert(&mut table, name, typed)?;
    let new = toml::to_string(&table).context("encode the configuration")?;
    kind.save(&new, &path).with_context(|| {
        format!(
            "refused {name} = {value:?}; {} is unchanged",
            path.display()
        )
    })?;
    let applies = match key.effect {
        Effect::PgRestart => format!(
            "it applies from PostgreSQL's next start: stop the node (`systemctl stop` its unit, or \
             `pgpilot stop --pgdata {dir}`) and run it again",
            dir = pgdata.display()
        ),
        _ => format!(
            "it applies when the {} next starts: restart a running one (`systemctl restart` its \
             unit{})",
            kind.service(),
            if kind == Kind::Keeper {
                format!(
                    ", or `pgpilot stop --keeper-only --pgdata {}` and run it again: PostgreSQL \
                     keeps running",
                    pgdata.display()
                )
            } else {
                String::new()
            }
        ),
    };
    Ok(format!("set {name} in {}; {applies}", path.display()))
}

/// `value` as the type the key holds now: text for a string (or an absent
/// key whose value is no TOML number or boolean), else a TOML literal.
/// A value of the wrong type is refused by the validation after.
fn typed(current: Option<&Value>, value: &str) -> Value {
    if let Some(Value::String(_)) = current {
        return Value::String(value.to_string());
    }
    match format!("v = {value}").parse::<Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(v @ (Value::Integer(_) | Value::Boolean(_) | Value::Float(_))) => v,
            _ => Value::String(value.to_string()),
        },
        Err(_) => Value::String(value.to_string()),
    }
}

fn lookup<'a>(table: &'a Table, name: &str) -> Option<&'a Value> {
    match name.split_once('.') {
        Some((section, rest)) => table.get(section)?.as_table()?.get(rest),
        None => table.get(name),
    }
}

fn insert(table: &mut Table, name: &str, value: Value) -> anyhow::Result<()> {
    match name.split_once('.') {
        Some((section, rest)) => {
            let section = table
                .entry(section)
                .or_insert_with(|| Value::Table(Table::new()));
            let Some(t) = section.as_table_mut() else {
                bail!("{name}: [{section}] is not a table")
            };
            t.insert(rest.to_string(), value);
        }
        None => {
            table.insert(name.to_string(), value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_the_type_of_the_key() {
        let s = Value::String("x".into());
        assert_eq!(typed(Some(&s), "42"), Value::String("42".into()));
        assert_eq!(typed(Some(&Value::Integer(1)), "42"), Value::Integer(42));
        assert_eq!(typed(None, "true"), Value::Boolean(true));
        assert_eq!(
            typed(None, "10.0.0.1:8000"),
            Value::String("10.0.0.1:8000".into())
        );
        // Wrong type: left as text, for the validation to refuse.
        assert_eq!(
            typed(Some(&Value::Integer(1)), "x"),
            Value::String("x".into())
        );
    }

    #[test]
    fn dotted_keys_reach_into_sections() {
        let mut t: Table = "a = 1\n[timings]\nlease = \"6s\"\n".parse().unwrap();
        assert_eq!(
            lookup(&t, "timings.lease"),
            Some(&Value::String("6s".into()))
        );
        insert(&mut t, "timings.lease", Value::String("8s".into())).unwrap();
        insert(&mut t, "other.x", Value::Integer(1)).unwrap();
        assert_eq!(
            lookup(&t, "timings.lease"),
            Some(&Value::String("8s".into()))
        );
        assert_eq!(lookup(&t, "other.x"), Some(&Value::Integer(1)));
        assert!(insert(&mut t, "a.b", Value::Integer(1)).is_err());
    }

    #[test]
    fn every_key_names_a_field() {
        // The key lists must match what the configurations serialize.
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("n");
        let mut c = crate::commands::node::config_from(&test_args(&pgdata)).unwrap();
        c.http_listen = Some("off".parse().unwrap());
        // Optional keys are written only when set.
        c.pre_promote = Some(pgpilot_keeper::hooks::HookCommand::Shell("true".into()));
        c.on_role_change = Some(pgpilot_keeper::hooks::HookCommand::Shell("true".into()));
        c.hook_timeout = std::time::Duration::from_secs(5);
        let t: Table = toml::to_string(&c).unwrap().parse().unwrap();
        let mut fields: Vec<&str> = t.keys().map(String::as_str).collect();
        fields.sort();
        let mut keys: Vec<&str> = KEEPER_KEYS.iter().map(|k| k.name).collect();
        keys.sort();
        assert_eq!(fields, keys);
        let m = MonitorConfig {
            listen: "127.0.0.1:5430".parse().unwrap(),
            hostname: "h".into(),
            pgdata: "/x".into(),
            database_url: Some("postgres://x".into()),
            pg_user: "postgres".into(),
            http_listen: Some("off".parse().unwrap()),
            ssl: true,
            timings: Default::default(),
        };
        let t: Table = toml::to_string(&m).unwrap().parse().unwrap();
        let mut fields: Vec<String> = Vec::new();
        for (k, v) in &t {
            match v.as_table() {
                Some(sub) => fields.extend(sub.keys().map(|s| format!("{k}.{s}"))),
                None => fields.push(k.clone()),
            }
        }
        fields.sort();
        let mut keys: Vec<String> = MONITOR_KEYS.iter().map(|k| k.name.to_string()).collect();
        keys.sort();
        assert_eq!(fields, keys);
    }

    fn test_args(pgdata: &Path) -> crate::cli::CreatePostgresArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::parse_from([
            "pgpilot",
            "create",
            "postgres",
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--monitor",
            "http://127.0.0.1:5430",
        ]);
        match cli.command {
            crate::cli::Command::Create(crate::cli::Create::Postgres(a)) => a,
            _ => unreachable!(),
        }
    }
}
