//! The monitor's configuration file and its timings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use pgpilot_proto::HttpListen;
use serde::{Deserialize, Serialize};

use crate::fsm::FsmConfig;

/// Timings and thresholds (DESIGN.md section 8). Defaults are the design's
/// starting point; [`Timings::validate`] rejects combinations that break
/// the lease argument or make detection impossible.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timings {
    /// Start of each probe round of every node.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// One connection attempt gives up after this long (a black-holed host
    /// would otherwise stall the round for the TCP timeout).
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Extra attempts before a round marks a node bad: one lost packet must
    /// not look like a dead node.
    pub probe_retries: u32,
    #[serde(with = "humantime_serde")]
    pub probe_retry_delay: Duration,
    /// Keepers poll at this interval; the monitor checks the lease against it.
    #[serde(with = "humantime_serde")]
    pub keeper_poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub node_unhealthy_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub replication_lost_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub clock_margin: Duration,
    #[serde(with = "humantime_serde")]
    pub replication_stall_timeout: Duration,
    /// Bytes of WAL a standby may lag and still become secondary.
    pub sync_wal_threshold: u64,
    /// Bytes of WAL a secondary may lag and still be promoted.
    pub promote_wal_threshold: u64,
    /// An election's winner whose promotion has not finished this long
    /// after it was chosen gives way to an equally advanced standby.
    #[serde(with = "humantime_serde")]
    pub promotion_timeout: Duration,
}

impl Default for Timings {
    /// The state machine's defaults (see `FsmConfig::default` for the
    /// reasoning), and the probes'.
    fn default() -> Self {
        let fsm = FsmConfig::default();
        Timings {
            // A round every 500 ms: a frozen node (its port accepts the
            // connection, nothing answers) is marked bad within about a
            // second, no later than its lease gate opens.
            probe_interval: Duration::from_millis(500),
            // A healthy PostgreSQL answers the SSL request in milliseconds,
            // even on a loaded machine; 300 ms twice is a freeze. A probe
            // that fails wrongly fails nothing over by itself: the keeper
            // must be silent and a standby must have lost its stream too.
            probe_timeout: Duration::from_millis(300),
            probe_retries: 1,
            probe_retry_delay: Duration::from_millis(100),
            keeper_poll_interval: fsm.poll_interval,
            node_unhealthy_timeout: fsm.node_unhealthy_timeout,
            replication_lost_timeout: fsm.replication_lost_timeout,
            lease: fsm.lease,
            clock_margin: fsm.clock_margin,
            replication_stall_timeout: fsm.replication_stall_timeout,
            sync_wal_threshold: fsm.sync_wal_threshold,
            promote_wal_threshold: fsm.promote_wal_threshold,
            promotion_timeout: fsm.promotion_timeout,
        }
    }
}

impl Timings {
    /// How long a keeper waits for a reply (see
    /// [`crate::fsm::report_timeout_for`]).
    pub fn report_timeout(&self) -> Duration {
        crate::fsm::report_timeout_for(self.lease, self.keeper_poll_interval)
    }

    pub fn fsm_config(&self) -> FsmConfig {
        FsmConfig {
            node_unhealthy_timeout: self.node_unhealthy_timeout,
            replication_lost_timeout: self.replication_lost_timeout,
            lease: self.lease,
            clock_margin: self.clock_margin,
            replication_stall_timeout: self.replication_stall_timeout,
            sync_wal_threshold: self.sync_wal_threshold,
            promote_wal_threshold: self.promote_wal_threshold,
            poll_interval: self.keeper_poll_interval,
            report_timeout: self.report_timeout(),
            promotion_timeout: self.promotion_timeout,
        }
    }

    /// Rejects timings that cannot work together, naming the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("keeper_poll_interval", self.keeper_poll_interval),
            ("node_unhealthy_timeout", self.node_unhealthy_timeout),
            ("replication_lost_timeout", self.replication_lost_timeout),
            ("lease", self.lease),
            ("replication_stall_timeout", self.replication_stall_timeout),
            ("promotion_timeout", self.promotion_timeout),
            // The margin covers the keepers' clocks running slower than the
            // monitor's between two reports; without it the lease gate
            // could open while the old primary still believes in its lease.
            ("clock_margin", self.clock_margin),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                bail!("timings.{name} must be greater than zero");
            }
        }
        if self.probe_timeout > self.probe_interval {
            bail!(
                "timings.probe_timeout ({}) must not exceed timings.probe_interval ({}): rounds would overlap",
                humantime::format_duration(self.probe_timeout),
                humantime::format_duration(self.probe_interval)
            );
        }
        // A keeper renews its lease once per poll; a lease no longer than
        // the poll interval would expire between two healthy polls and make
        // a healthy primary fence itself.
        if self.lease <= self.keeper_poll_interval {
            bail!(
                "timings.lease ({}) must be longer than timings.keeper_poll_interval ({})",
                humantime::format_duration(self.lease),
                humantime::format_duration(self.keeper_poll_interval)
            );
        }
        // A primary's keeper keeps serving past its lease while every
        // standby streams from it, observing them at most 5/6 of a lease
        // apart: a standby can only be a failover witness after a silence
        // of at least a lease, or that exemption would not be safe.
        if self.replication_lost_timeout < self.lease {
            bail!(
                "timings.replication_lost_timeout ({}) must be at least timings.lease ({})",
                humantime::format_duration(self.replication_lost_timeout),
                humantime::format_duration(self.lease)
            );
        }
        // Through a monitor outage a keeper looks at its standbys once a
        // poll plus a report timeout; the exemption ends after a gap of
        // 5/6 of a lease, so leave room for a slow status read too.
        if self.keeper_poll_interval + self.report_timeout() > self.lease * 2 / 3 {
            bail!(
                "timings.keeper_poll_interval ({}) plus the report timeout ({}) must be at most two \
                 thirds of timings.lease ({}): raise the lease or shorten the poll interval",
                humantime::format_duration(self.keeper_poll_interval),
                humantime::format_duration(self.report_timeout()),
                humantime::format_duration(self.lease)
            );
        }
        // While the monitor does not answer, a primary whose standbys all
        // stream keeps serving on its fencing exemption, lease * lease /
        // (lease + clock_margin) from the oldest standby reply; on an idle
        // primary that reply is up to wal_sender_timeout / 2 old when the
        // keeper looks, and the keeper looks again a look-ahead before the
        // exemption lapses. An exemption shorter than both would run out
        // between two looks: a monitor outage would stop an idle primary.
        {
            use pgpilot_proto::replication_timeouts::{
                EXEMPTION_LOOK_AHEAD_MS, WAL_SENDER_TIMEOUT_MS,
            };
            let lease = self.lease.as_millis() as u64;
            let margin = self.clock_margin.as_millis() as u64;
            let exemption = lease * lease / (lease + margin).max(1);
            let needed = WAL_SENDER_TIMEOUT_MS / 2 + EXEMPTION_LOOK_AHEAD_MS;
            if exemption <= needed {
                bail!(
                    "timings.lease ({}) with timings.clock_margin ({}) gives a fencing exemption of \
                     {exemption}ms, not longer than the {needed}ms a keeper needs to renew it through \
                     a monitor outage (half of wal_sender_timeout, {WAL_SENDER_TIMEOUT_MS}ms, plus \
                     {EXEMPTION_LOOK_AHEAD_MS}ms to look again): raise the lease or lower the clock margin",
                    humantime::format_duration(self.lease),
                    humantime::format_duration(self.clock_margin)
                );
            }
        }
        // A node must miss at least two polls and one probe round before it
        // is called silent, or one slow poll would trigger a failover.
        if self.node_unhealthy_timeout < self.keeper_poll_interval * 2
            || self.node_unhealthy_timeout <= self.probe_interval
        {
            bail!(
                "timings.node_unhealthy_timeout ({}) must be at least twice keeper_poll_interval and longer than probe_interval",
                humantime::format_duration(self.node_unhealthy_timeout)
            );
        }
        // An idle primary's standby hears from it only when it pings, after
        // half of wal_receiver_timeout; the witness must wait for longer
        // than that (with room for a loaded machine), or every idle
        // moment would make the standby a witness.
        let ping =
            Duration::from_millis(pgpilot_proto::replication_timeouts::WAL_RECEIVER_TIMEOUT_MS / 2);
        if self.replication_lost_timeout < ping + ping / 2 {
            bail!(
                "timings.replication_lost_timeout ({}) must be at least {}: a standby pings an idle \
                 primary only after {} of silence",
                humantime::format_duration(self.replication_lost_timeout),
                humantime::format_duration(ping + ping / 2),
                humantime::format_duration(ping)
            );
        }
        if self.replication_stall_timeout <= self.node_unhealthy_timeout {
            bail!(
                "timings.replication_stall_timeout ({}) must be longer than node_unhealthy_timeout ({}): \
                 a dead primary must be failed over before the stall rule turns synchronous replication off",
                humantime::format_duration(self.replication_stall_timeout),
                humantime::format_duration(self.node_unhealthy_timeout)
            );
        }
        Ok(())
    }
}

/// `pgpilot-monitor.toml`, written by `create monitor`, read by `run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Address the gRPC API listens on.
    pub listen: SocketAddr,
    /// Host name keepers and operators use to reach this monitor.
    pub hostname: String,
    /// The monitor's private PostgreSQL data directory.
    pub pgdata: PathBuf,
    /// An existing database to use instead of a private PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// OS user that runs the private PostgreSQL when pgpilot runs as root.
    #[serde(default = "default_pg_user")]
    pub pg_user: String,
    /// Where Prometheus `/metrics` listens: "HOST:PORT" or "off". Absent
    /// (a monitor.toml from before metrics): the default, see
    /// [`MonitorConfig::http_listen`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<HttpListen>,
    /// TLS on the gRPC API (`DIR.pgpilot/tls/`). Off only when asked for
    /// (`create monitor --no-ssl`); `show uri` then says so.
    #[serde(default = "default_ssl")]
    pub ssl: bool,
    #[serde(default)]
    pub timings: Timings,
}

fn default_ssl() -> bool {
    true
}

pub fn default_pg_user() -> String {
    "postgres".to_string()
}

impl MonitorConfig {
    /// Where `/metrics` listens: `http_listen`, or by default the gRPC
    /// listen address at its port + 3000 (5430 gives 8430).
    pub fn http_listen(&self) -> anyhow::Result<HttpListen> {
        match &self.http_listen {
            Some(l) => Ok(l.clone()),
            None => Ok(HttpListen::default_for(
                &self.listen.ip().to_string(),
                self.listen.port(),
            )?),
        }
    }

    /// The URI keepers use: `https://hostname:port` (`http://` with
    /// `ssl = false`).
    pub fn monitor_uri(&self) -> String {
        let host = if self.hostname.contains(':') && !self.hostname.starts_with('[') {
            format!("[{}]", self.hostname)
        } else {
            self.hostname.clone()
        };
        let scheme = if self.ssl { "https" } else { "http" };
        format!("{scheme}://{host}:{}", self.listen.port())
    }

    /// Writes monitor.toml crash-safely (mode 0600: `database_url` may
    /// hold a password).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string(self).context("encode the monitor configuration")?;
        crate::files::write_durably(path, text.as_bytes(), 0o600)
    }

    pub fn load(path: &Path) -> anyhow::Result<MonitorConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the monitor configuration {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses and validates the text of monitor.toml (at `path`, for the
    /// messages): what [`MonitorConfig::load`] does once it read the file,
    /// so that `pgpilot config set|check` refuse exactly what `run` does.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<MonitorConfig> {
        let config: MonitorConfig = toml::from_str(text)
            .with_context(|| format!("parse the monitor configuration {}", path.display()))?;
        config
            .timings
            .validate()
            .and_then(|()| config.http_listen().map(|_| ()))
            .with_context(|| format!("check the monitor configuration {}", path.display()))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Timings::default().validate().unwrap();
    }

    #[test]
    fn rejects_lease_not_longer_than_poll() {
        let t = Timings {
            lease: Duration::from_millis(400),
            ..Timings::default()
        };
        let e = t.validate().unwrap_err().to_string();
        assert!(
            e.contains("must be longer than timings.keeper_poll_interval"),
            "{e}"
        );
    }

    #[test]
    fn rejects_a_replication_lost_timeout_an_idle_primary_reaches() {
        // Every other rule holds: a short lease with a short poll and a
        // tiny clock margin (the exemption rule needs the lease above
        // 850 ms).
        let t = Timings {
            lease: Duration::from_millis(880),
            clock_margin: Duration::from_millis(10),
            keeper_poll_interval: Duration::from_millis(200),
            replication_lost_timeout: Duration::from_millis(880),
            ..Timings::default()
        };
        let e = t.validate().unwrap_err().to_string();
        assert!(
            e.contains("replication_lost_timeout (880ms) must be at least 900ms"),
            "{e}"
        );
        let t = Timings {
            replication_lost_timeout: Duration::from_millis(900),
            ..t
        };
        t.validate().unwrap();
    }

    #[test]
    fn rejects_an_exemption_a_keeper_cannot_renew_through_a_monitor_outage() {
        // 800 ms with the default 300 ms margin: 581 ms of exemption, less
        // than an idle primary's standby reply may already be old plus the
        // look-ahead.
        let t = Timings {
            lease: Duration::from_millis(800),
            keeper_poll_interval: Duration::from_millis(200),
            replication_lost_timeout: Duration::from_millis(900),
            ..Timings::default()
        };
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("fencing exemption of 581ms"), "{e}");
        assert!(
            e.contains("raise the lease or lower the clock margin"),
            "{e}"
        );
        Timings::default().validate().unwrap();
    }

    #[test]
    fn rejects_stall_shorter_than_unhealthy() {
        let t = Timings {
            replication_stall_timeout: Duration::from_millis(900),
            ..Timings::default()
        };
        assert!(t.validate().unwrap_err().to_string().contains("stall"));
    }

    #[test]
    fn toml_round_trip_and_unknown_fields() {
        let c = MonitorConfig {
            listen: "127.0.0.1:5430".parse().unwrap(),
            hostname: "localhost".into(),
            pgdata: "/x".into(),
            database_url: None,
            pg_user: "postgres".into(),
            http_listen: None,
            ssl: true,
            timings: Timings::default(),
        };
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<MonitorConfig>(&text).unwrap(), c);
        let bad = format!("{text}\nbogus = 1\n");
        assert!(toml::from_str::<MonitorConfig>(&bad).is_err());
        assert_eq!(c.monitor_uri(), "https://localhost:5430");
        let plain = MonitorConfig {
            ssl: false,
            ..c.clone()
        };
        assert_eq!(plain.monitor_uri(), "http://localhost:5430");
        // A monitor.toml from before TLS existed has no `ssl`: TLS on.
        let old = text.replace("ssl = true\n", "");
        assert!(toml::from_str::<MonitorConfig>(&old).unwrap().ssl);
        // No http_listen (a file from before /metrics): the default.
        assert!(!text.contains("http_listen"), "{text}");
        assert_eq!(c.http_listen().unwrap().to_string(), "127.0.0.1:8430");
        let c = MonitorConfig {
            http_listen: Some("off".parse().unwrap()),
            ..c
        };
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("http_listen = \"off\""), "{text}");
        assert_eq!(toml::from_str::<MonitorConfig>(&text).unwrap(), c);
        let bad = text.replace("\"off\"", "\"nowhere\"");
        let e = toml::from_str::<MonitorConfig>(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("http_listen \"nowhere\" has no port"), "{e}");
    }
}
