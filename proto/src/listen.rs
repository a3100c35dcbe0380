//! Where an HTTP listener binds (`--http-listen HOST:PORT`, or `off`),
//! for the keepers' endpoints and the monitor's `/metrics`. One parser for
//! the flag and the configuration files, so that a typo is refused with
//! the same words at `create` and at start.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How far above the service's own port the HTTP listener goes by
/// default: PostgreSQL's 5432 gives 8432, the monitor's 5430 gives 8430.
/// (Not +1000: 6432 is PgBouncer's well-known port, often on the same
/// machine as PostgreSQL.)
pub const DEFAULT_HTTP_PORT_OFFSET: u16 = 3000;

/// An HTTP listen address, or no listener at all.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HttpListen {
    /// No HTTP listener.
    Off,
    /// Listen on `host` (a name, resolved when binding, or an address)
    /// and `port`.
    At { host: String, port: u16 },
}

impl HttpListen {
    /// The default for a service listening on `port` at `host`: the same
    /// host, [`DEFAULT_HTTP_PORT_OFFSET`] ports up.
    pub fn default_for(host: &str, port: u16) -> Result<HttpListen, ParseHttpListenError> {
        match port.checked_add(DEFAULT_HTTP_PORT_OFFSET) {
            Some(p) => Ok(HttpListen::At {
                host: host.to_string(),
                port: p,
            }),
            None => Err(ParseHttpListenError(format!(
                "there is no default HTTP port for port {port} (it would be {port} + \
                 {DEFAULT_HTTP_PORT_OFFSET}): set one, e.g. --http-listen {host}:8432, or \
                 --http-listen off"
            ))),
        }
    }

    /// `host:port` to bind, or `None` when off.
    pub fn addr(&self) -> Option<(String, u16)> {
        match self {
            HttpListen::Off => None,
            HttpListen::At { host, port } => Some((host.clone(), *port)),
        }
    }
}

impl fmt::Display for HttpListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpListen::Off => f.write_str("off"),
            HttpListen::At { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            HttpListen::At { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Why a string is not an HTTP listen address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ParseHttpListenError(String);

impl FromStr for HttpListen {
    type Err = ParseHttpListenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t == "off" {
            return Ok(HttpListen::Off);
        }
        let bad = |why: &str| {
            ParseHttpListenError(format!(
                "http_listen {s:?} {why}: write HOST:PORT (e.g. 0.0.0.0:8432, node1.example:8432, \
                 [::1]:8432) or off, as http_listen in the configuration file or --http-listen"
            ))
        };
        let (host, port) = t.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
        let host = match host.strip_prefix('[') {
            Some(h) => h
                .strip_suffix(']')
                .ok_or_else(|| bad("has an unclosed '['"))?,
            None if host.contains(':') => {
                return Err(bad("is an IPv6 address without brackets"));
            }
            None => host,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(bad("has no host name or address"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| bad("has a port that is not a number in 1..65535"))?;
        if port == 0 {
            return Err(bad("has port 0, which is not a port"));
        }
        Ok(HttpListen::At {
            host: host.to_string(),
            port,
        })
    }
}

impl Serialize for HttpListen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HttpListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_off() {
        let at = |h: &str, p| HttpListen::At {
            host: h.into(),
            port: p,
        };
        for (text, want) in [
            ("off", HttpListen::Off),
            (" off ", HttpListen::Off),
            ("0.0.0.0:8432", at("0.0.0.0", 8432)),
            ("node1.example:9000", at("node1.example", 9000)),
            ("[::1]:8432", at("::1", 8432)),
            ("localhost:1", at("localhost", 1)),
        ] {
            assert_eq!(text.parse::<HttpListen>().unwrap(), want, "{text:?}");
        }
        assert_eq!(at("::1", 8432).to_string(), "[::1]:8432");
        assert_eq!(at("a", 1).to_string(), "a:1");
        assert_eq!(HttpListen::Off.to_string(), "off");
    }

    #[test]
    fn refuses_what_is_not_an_address_naming_the_fix() {
        for (text, why) in [
            ("", "has no port"),
            ("8432", "has no port"),
            ("host", "has no port"),
            (":8432", "no host"),
            ("a b:1", "no host"),
            ("h:0", "port 0"),
            ("h:65536", "not a number"),
            ("h:x", "not a number"),
            ("h:", "not a number"),
            ("::1:8432", "without brackets"),
            ("[::1:8432", "unclosed"),
            ("Off", "has no port"),
        ] {
            let e = text.parse::<HttpListen>().unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.contains("--http-listen"), "{e}");
        }
    }

    #[test]
    fn the_default_is_three_thousand_ports_up() {
        assert_eq!(
            HttpListen::default_for("n1", 5432).unwrap(),
            HttpListen::At {
                host: "n1".into(),
                port: 8432
            }
        );
        let e = HttpListen::default_for("n1", 63000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no default HTTP port"), "{e}");
    }
}
