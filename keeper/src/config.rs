//! The keeper's configuration file, `PGDATA.pgpilot/keeper.toml`.
//!
//! Written by `pgpilot create postgres`, read by `pgpilot run`. It holds the
//! replication password, so it is written with mode 0600.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use pgpilot_proto::HttpListen;
use serde::{Deserialize, Serialize};

use crate::engine::DEFAULT_LEASE;
use crate::files::{config_path, write_durably};
use crate::hooks::{HookCommand, DEFAULT_HOOK_TIMEOUT};

/// How the other nodes authenticate to this node's PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Auth {
    /// Password (SCRAM) for replication, rewind and applications over TCP.
    #[serde(rename = "scram-sha-256")]
    Scram,
    /// No password from loopback addresses (127.0.0.0/8, ::1): for demos
    /// on one machine. The other nodes' remote addresses still need SCRAM.
    #[serde(rename = "trust")]
    Trust,
    /// No password from any address of the group, remote ones included:
    /// anybody who can reach the port from a node's address can replicate
    /// the whole database. Only for closed test networks, and only when
    /// asked for by this name.
    #[serde(rename = "trust-remote")]
    TrustRemote,
}

impl Auth {
    /// The method for the managed pg_hba.conf lines of an address. Remote
    /// addresses are never trusted unless [`Auth::TrustRemote`] says so.
    pub fn hba_method_for(self, loopback: bool) -> &'static str {
        match (self, loopback) {
            (Auth::TrustRemote, _) | (Auth::Trust, true) => "trust",
            _ => "scram-sha-256",
        }
    }

    /// The method initdb writes for its own loopback `host` lines.
    pub fn hba_method(self) -> &'static str {
        self.hba_method_for(true)
    }
}

/// Operator-supplied SSL files for the node's PostgreSQL (`[ssl]` in
/// keeper.toml). All absent (the default): the keeper generates a
/// self-signed certificate for the node, and peers are checked with
/// `sslmode=require` (encrypted, not authenticated: the SCRAM exchange
/// still proves both sides know the password). With a CA, every
/// connection to another node uses `sslmode=verify-full` against it, so
/// every node of the group needs a certificate from that CA naming its
/// `hostname` (a DNS name, or an IP address SAN).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslConfig {
    /// The server certificate (PEM), copied into `DIR.pgpilot/ssl/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM), copied into `DIR.pgpilot/ssl/` with mode
    /// 0600 for PostgreSQL's OS user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The CA that signed every node's certificate: peers are verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl SslConfig {
    fn is_default(&self) -> bool {
        self == &SslConfig::default()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) | (None, Some(_)) => bail!(
                "ssl cert_file and key_file go together: give both (--ssl-cert-file and \
                 --ssl-key-file), or neither for a generated self-signed certificate"
            ),
            (None, None) if self.ca_file.is_some() => bail!(
                "ssl ca_file needs this node's own certificate signed by that CA: give \
                 --ssl-cert-file and --ssl-key-file too"
            ),
            _ => {}
        }
        for p in [&self.cert_file, &self.key_file, &self.ca_file]
            .into_iter()
            .flatten()
        {
            if !p.is_absolute() {
                bail!("ssl file {} must be an absolute path", p.display());
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeeperConfig {
    /// Absolute path of the data directory.
    pub pgdata: PathBuf,
    /// The monitor's gRPC URI, http://HOST:PORT.
    pub monitor: String,
    pub formation: String,
    /// Requested node name; empty lets the monitor choose "node_<id>".
    #[serde(default)]
    pub name: String,
    /// Address the monitor and the other nodes reach this node's PostgreSQL at.
    pub hostname: String,
    pub pgport: u16,
    /// PostgreSQL's listen_addresses.
    pub listen_addresses: String,
    pub dbname: String,
    /// The superuser initdb creates; the keeper connects as it over the
    /// private socket. Every node of a formation must use the same one.
    pub username: String,
    pub candidate_priority: i32,
    pub replication_quorum: bool,
    pub auth: Auth,
    /// OS user that runs PostgreSQL when pgpilot runs as root.
    pub pg_user: String,
    /// How often the keeper reports to the monitor when nothing wakes it.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The most pg_basebackup may read per second from the primary when
    /// this node copies it (`--max-rate`), so that a new standby's copy
    /// does not starve the primary's disks and network: kilobytes per
    /// second, or with a suffix `k` or `M` ("100M"), 32k..1024M.
    #[serde(default = "default_backup_rate")]
    pub maximum_backup_rate: String,
    /// Where the HTTP endpoints (`/primary`, `/replica`, ..., `/metrics`)
    /// listen: "HOST:PORT", or "off". Absent (a keeper.toml written
    /// before the endpoints existed): the default, see
    /// [`KeeperConfig::http_listen`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<HttpListen>,
    /// Whether PostgreSQL stops when its keeper dies. `false` (the
    /// default): a keeper that dies (SIGKILL, a panic, the OOM killer) or
    /// exits alone to be upgraded (`pgpilot stop --keeper-only`) leaves
    /// PostgreSQL running, and the next keeper adopts it: no restart, no
    /// failover, no failed write. While no keeper runs beside a primary,
    /// nothing fences it; synchronous replication is what protects the
    /// group then (a primary cut off from its standbys cannot acknowledge
    /// a commit once a standby stopped streaming from it to be promoted).
    /// `true`: PostgreSQL dies with its keeper (immediate shutdown), for
    /// those who prefer fencing to availability: a keeper crash then costs
    /// a failover or a restart. It applies from PostgreSQL's next start.
    #[serde(default)]
    pub postgres_dies_with_keeper: bool,
    /// Password of the replication role, handed out by the monitor at
    /// registration and replaced by a rotation (`pgpilot rotate
    /// replication-password`). Empty until then.
    #[serde(default)]
    pub replication_password: String,
    /// The generation of `replication_password` (the monitor numbers
    /// them; 0: unknown, a keeper.toml from before rotation, which the
    /// monitor then sends the current one to). Written together with the
    /// password, in one durable rename, so the two never disagree.
    #[serde(default)]
    pub replication_password_generation: i64,
    /// Run by the candidate's keeper just before it promotes (see
    /// [`crate::hooks`]): a non-zero exit or a timeout fails that
    /// promotion. A string for `/bin/sh -c`, or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promote: Option<HookCommand>,
    /// Run after every change of role, beside the keeper's loop (see
    /// [`crate::hooks`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_role_change: Option<HookCommand>,
    /// How long a hook may run before it is killed (and, for
    /// `pre_promote`, the promotion fails).
    #[serde(
        default = "default_hook_timeout",
        with = "humantime_serde",
        skip_serializing_if = "is_default_hook_timeout"
    )]
    pub hook_timeout: Duration,
    /// Operator-supplied certificates for PostgreSQL's SSL (see
    /// [`SslConfig`]); absent: a generated self-signed one.
    #[serde(default, skip_serializing_if = "SslConfig::is_default")]
    pub ssl: SslConfig,
}

fn default_hook_timeout() -> Duration {
    DEFAULT_HOOK_TIMEOUT
}

fn is_default_hook_timeout(d: &Duration) -> bool {
    *d == DEFAULT_HOOK_TIMEOUT
}

/// pg_auto_failover's default.
pub const DEFAULT_BACKUP_RATE: &str = "100M";

fn default_backup_rate() -> String {
    DEFAULT_BACKUP_RATE.to_string()
}

/// `maximum_backup_rate` in kilobytes per second: a whole number with an
/// optional suffix `k` (kilobytes, the default unit) or `M` (megabytes),
/// within what pg_basebackup accepts (32 kB/s to 1024 MB/s). Checked here
/// so that a typo is refused at `create postgres`, not hours later when a
/// copy starts.
pub fn parse_backup_rate(text: &str) -> anyhow::Result<u32> {
    let t = text.trim();
    let (digits, factor) = match t.strip_suffix('M') {
        Some(d) => (d, 1024u64),
        None => (t.strip_suffix('k').unwrap_or(t), 1),
    };
    let fix = "write kilobytes per second as a whole number with an optional suffix k or M, \
               between 32k and 1024M, e.g. maximum_backup_rate = \"100M\" in keeper.toml or \
               --maximum-backup-rate 100M";
    let n: u64 = match digits.trim().parse() {
        Ok(n) => n,
        _ => bail!("maximum_backup_rate {text:?} is not a rate: {fix}"),
    };
    let kb = n.saturating_mul(factor);
    if !(32..=1024 * 1024).contains(&kb) {
        bail!("maximum_backup_rate {text:?} is out of range (pg_basebackup --max-rate): {fix}");
    }
    Ok(kb as u32)
}

impl KeeperConfig {
    /// Where the HTTP endpoints listen: `http_listen`, or by default the
    /// node's hostname at PostgreSQL's port + 3000 (5432 gives 8432; see
    /// [`HttpListen::default_for`]).
    pub fn http_listen(&self) -> anyhow::Result<HttpListen> {
        match &self.http_listen {
            Some(l) => Ok(l.clone()),
            None => Ok(HttpListen::default_for(&self.hostname, self.pgport)?),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        parse_backup_rate(&self.maximum_backup_rate)?;
        self.ssl.validate()?;
        if self.hook_timeout.is_zero() {
            bail!("hook_timeout must be above zero");
        }
        for (what, h) in [
            ("pre_promote", &self.pre_promote),
            ("on_role_change", &self.on_role_change),
        ] {
            if matches!(h, Some(HookCommand::Argv(v)) if v.is_empty())
                || matches!(h, Some(HookCommand::Shell(s)) if s.trim().is_empty())
            {
                bail!("{what} is empty: remove it or give a command");
            }
        }
        self.http_listen()?;
        if !self.pgdata.is_absolute() {
            bail!("pgdata {} must be an absolute path", self.pgdata.display());
        }
        if !self.monitor.starts_with("http://") && !self.monitor.starts_with("https://") {
            bail!(
                "monitor {:?} is not a monitor URI: expected http://HOST:PORT as printed by `pgpilot show uri`",
                self.monitor
            );
        }
        if self.hostname.trim().is_empty() {
            bail!("hostname is empty: set an address the monitor and the other nodes can reach");
        }
        if self.pgport == 0 {
            bail!("pgport 0 is not a port: choose one in 1..65535");
        }
        if !(0..=100).contains(&self.candidate_priority) {
            bail!(
                "candidate_priority {} is out of range 0..100",
                self.candidate_priority
            );
        }
        if self.username.is_empty() || self.dbname.is_empty() || self.formation.is_empty() {
            bail!("username, dbname and formation must not be empty");
        }
        // The heartbeat doubles as the lease renewal; see DESIGN.md §7 and
        // the monitor's Timings::validate for the other half of the check.
        let fmt = humantime_serde::re::humantime::format_duration;
        if self.poll_interval < Duration::from_millis(100) {
            bail!(
                "poll_interval {} is below 100ms: the monitor would be flooded with reports",
                fmt(self.poll_interval)
            );
        }
        // The keeper uses this interval only until the monitor's first
        // reply names the contract, but that first stretch must already
        // renew the lease: a primary reporting less often than its lease
        // runs fences itself although nothing is wrong.
        if self.poll_interval >= DEFAULT_LEASE {
            bail!(
                "poll_interval {} is not shorter than the default lease of {}: a healthy primary \
                 would fence itself between two reports; set poll_interval to 400ms (the monitor \
                 names the interval it wants once the keeper reports)",
                fmt(self.poll_interval),
                fmt(DEFAULT_LEASE)
            );
        }
        Ok(())
    }

    /// Loads and validates `PGDATA.pgpilot/keeper.toml`.
    pub fn load(pgdata: &Path) -> anyhow::Result<KeeperConfig> {
        let path = config_path(pgdata);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "read {}: is {} a pgpilot node? create one with `pgpilot create postgres --pgdata {}`",
                path.display(),
                pgdata.display(),
                pgdata.display()
            )
        })?;
        Self::parse(&text, &path)
    }

    /// Parses and validates the text of keeper.toml (at `path`, for the
    /// messages): what [`KeeperConfig::load`] does once it read the file,
    /// so that `pgpilot config set|check` refuse exactly what `run` does.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<KeeperConfig> {
        let config: KeeperConfig = toml::from_str(text).with_context(|| {
            format!(
                "{} is not a valid keeper configuration: fix it or re-create the node",
                path.display()
            )
        })?;
        config
            .validate()
            .with_context(|| format!("invalid setting in {}", path.display()))?;
        Ok(config)
    }

    /// Writes the configuration crash-safely with mode 0600.
    pub fn save(&self) -> anyhow::Result<()> {
        let path = config_path(&self.pgdata);
        let text = toml::to_string_pretty(self).context("serialize the keeper configuration")?;
        let text = format!(
            "# pgpilot keeper configuration. Holds the replication password: keep it 0600.\n{text}"
        );
        write_durably(&path, text.as_bytes(), 0o600)
    }
}

#[cfg(test)]
pub(crate) fn sample(pgdata: &Path) -> KeeperConfig {
    KeeperConfig {
        pgdata: pgdata.to_path_buf(),
        monitor: "http://127.0.0.1:5430".into(),
        formation: "default".into(),
        name: String::new(),
        hostname: "127.0.0.1".into(),
        pgport: 5432,
        listen_addresses: "*".into(),
        dbname: "postgres".into(),
        username: "postgres".into(),
        candidate_priority: 50,
        replication_quorum: true,
        auth: Auth::Scram,
        pg_user: "postgres".into(),
        // The monitor's default (`FsmConfig::default`); used only until
        // the monitor's first reply names the interval it wants.
        poll_interval: Duration::from_millis(400),
        maximum_backup_rate: DEFAULT_BACKUP_RATE.into(),
        http_listen: None,
        postgres_dies_with_keeper: false,
        replication_password: String::new(),
        replication_password_generation: 0,
        pre_promote: None,
        on_role_change: None,
        hook_timeout: crate::hooks::DEFAULT_HOOK_TIMEOUT,
        ssl: SslConfig::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_rates() {
        let ok = [
            ("100M", 102_400),
            ("32", 32),
            ("32k", 32),
            ("8192k", 8192),
            (" 2M ", 2048),
            ("1024M", 1_048_576),
        ];
        for (text, kb) in ok {
            assert_eq!(parse_backup_rate(text).unwrap(), kb, "{text:?}");
        }
        for text in ["", "M", "fast", "1.5M", "-1M", "10G", "2 MB", "100m", "k"] {
            let err = parse_backup_rate(text).unwrap_err().to_string();
            assert!(err.contains("is not a rate"), "{text:?}: {err}");
            assert!(err.contains("--maximum-backup-rate 100M"), "{err}");
        }
        for text in ["31", "0", "1025M", "99999999999999999999k"] {
            let err = parse_backup_rate(text).unwrap_err().to_string();
            assert!(
                err.contains("out of range") || err.contains("is not a rate"),
                "{text:?}: {err}"
            );
        }
        assert!(parse_backup_rate("1025M")
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }

    #[test]
    fn an_old_keeper_toml_gets_the_default_backup_rate_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("node");
        std::fs::create_dir_all(crate::files::state_dir(&pgdata)).unwrap();
        sample(&pgdata).save().unwrap();
        let text = std::fs::read_to_string(config_path(&pgdata)).unwrap();
        assert!(text.contains("maximum_backup_rate = \"100M\""), "{text}");
        let old: String = text
            .lines()
            .filter(|l| !l.starts_with("maximum_backup_rate"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(config_path(&pgdata), &old).unwrap();
        let c = KeeperConfig::load(&pgdata).unwrap();
        assert_eq!(c.maximum_backup_rate, "100M");
        std::fs::write(
            config_path(&pgdata),
            text.replace("\"100M\"", "\"100 MB/s\""),
        )
        .unwrap();
        let err = format!("{:#}", KeeperConfig::load(&pgdata).unwrap_err());
        assert!(err.contains("invalid setting in"), "{err}");
        assert!(
            err.contains("maximum_backup_rate \"100 MB/s\" is not a rate"),
            "{err}"
        );
    }

    #[test]
    fn http_listen_defaults_when_absent_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("node");
        std::fs::create_dir_all(crate::files::state_dir(&pgdata)).unwrap();
        // A keeper.toml from before the endpoints: no key, the default.
        sample(&pgdata).save().unwrap();
        let text = std::fs::read_to_string(config_path(&pgdata)).unwrap();
        assert!(!text.contains("http_listen"), "{text}");
        let c = KeeperConfig::load(&pgdata).unwrap();
        assert_eq!(c.http_listen, None);
        assert_eq!(
            c.http_listen().unwrap(),
            HttpListen::At {
                host: "127.0.0.1".into(),
                port: 8432
            }
        );
        // Explicit values round-trip, "off" included.
        for value in ["10.0.0.1:9000", "off", "[::1]:8000"] {
            let mut c = sample(&pgdata);
            c.http_listen = Some(value.parse().unwrap());
            c.save().unwrap();
            let text = std::fs::read_to_string(config_path(&pgdata)).unwrap();
            assert!(
                text.contains(&format!("http_listen = \"{value}\"")),
                "{text}"
            );
            assert_eq!(KeeperConfig::load(&pgdata).unwrap(), c);
        }
        // A bad value is refused at load, naming the key and the fix.
        let text = std::fs::read_to_string(config_path(&pgdata)).unwrap();
        let text = text.replace("\"[::1]:8000\"", "\"8000\"");
        std::fs::write(config_path(&pgdata), text).unwrap();
        let err = format!("{:#}", KeeperConfig::load(&pgdata).unwrap_err());
        assert!(err.contains("not a valid keeper configuration"), "{err}");
        assert!(err.contains("http_listen \"8000\" has no port"), "{err}");
        assert!(err.contains("HOST:PORT"), "{err}");
        // No default beyond the last port: set one.
        let mut c = sample(&pgdata);
        c.pgport = 64000;
        let err = format!("{:#}", c.validate().unwrap_err());
        assert!(err.contains("no default HTTP port"), "{err}");
        c.http_listen = Some(HttpListen::Off);
        c.validate().unwrap();
    }

    #[test]
    fn postgres_outlives_its_keeper_unless_configured_and_a_bad_value_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("node");
        std::fs::create_dir_all(crate::files::state_dir(&pgdata)).unwrap();
        let mut c = sample(&pgdata);
        c.postgres_dies_with_keeper = true;
        c.save().unwrap();
        let text = std::fs::read_to_string(config_path(&pgdata)).unwrap();
        assert!(text.contains("postgres_dies_with_keeper = true"), "{text}");
        assert!(
            KeeperConfig::load(&pgdata)
                .unwrap()
                .postgres_dies_with_keeper
        );
        // A keeper.toml written before the setting existed: the default.
        let old: String = text
            .lines()
            .filter(|l| !l.starts_with("postgres_dies_with_keeper"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(config_path(&pgdata), &old).unwrap();
        assert!(
            !KeeperConfig::load(&pgdata)
                .unwrap()
                .postgres_dies_with_keeper
        );
        std::fs::write(
            config_path(&pgdata),
            text.replace(
                "postgres_dies_with_keeper = true",
                "postgres_dies_with_keeper = \"yes\"",
            ),
        )
        .unwrap();
        let err = format!("{:#}", KeeperConfig::load(&pgdata).unwrap_err());
        assert!(err.contains("not a valid keeper configuration"), "{err}");
        assert!(err.contains("postgres_dies_with_keeper"), "{err}");
        assert!(err.contains("boolean"), "{err}");
    }

    #[test]
    fn round_trips_with_mode_0600_and_rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("node");
        std::fs::create_dir_all(crate::files::state_dir(&pgdata)).unwrap();
        let mut c = sample(&pgdata);
        c.replication_password = "secret".into();
        c.save().unwrap();
        assert_eq!(KeeperConfig::load(&pgdata).unwrap(), c);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(config_path(&pgdata))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let text = std::fs::read_to_string(config_path(&pgdata)).unwrap();
        std::fs::write(
            config_path(&pgdata),
            text.replace("poll_interval = \"400ms\"", "poll_interval = \"1h\""),
        )
        .unwrap();
        let err = format!("{:#}", KeeperConfig::load(&pgdata).unwrap_err());
        assert!(err.contains("poll_interval"), "{err}");
        // Within the old 100ms..10s range, but no shorter than the lease.
        std::fs::write(
            config_path(&pgdata),
            text.replace("poll_interval = \"400ms\"", "poll_interval = \"5s\""),
        )
        .unwrap();
        let err = format!("{:#}", KeeperConfig::load(&pgdata).unwrap_err());
        assert!(err.contains("would fence itself"), "{err}");
        assert!(err.contains("set poll_interval to 400ms"), "{err}");

        std::fs::write(config_path(&pgdata), "pgport = \"x\"").unwrap();
        let err = format!("{:#}", KeeperConfig::load(&pgdata).unwrap_err());
        assert!(err.contains("not a valid keeper configuration"), "{err}");
    }
}
