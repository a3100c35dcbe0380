//! Credentials of the control plane: what a caller presents to the monitor
//! (`authorization: Bearer TOKEN`) and how the monitor checks it.
//!
//! Four kinds, each told apart by its prefix so a refusal can say what was
//! presented without showing it:
//! - a formation **join token** (`PGJ1.SECRET[.CA_SHA256]`): registers new
//!   nodes. The optional third part is the SHA-256 of the monitor's CA
//!   certificate, so a new node can verify the monitor with nothing else
//!   (kubeadm's discovery hash); it is not secret and is never sent.
//! - a **node credential** (`PGN1.NODE_ID.SECRET`): made by Register for
//!   that node alone; reports, watches and drops for that node only.
//! - the **operator** credential (`PGO1.SECRET`): every command.
//! - the **read** credential (`PGR1.SECRET`): `show` commands and Watch.
//!
//! The monitor keeps only SHA-256 digests of secrets it did not write to
//! its own files, and compares digests in constant time.

use std::fmt;

use sha2::{Digest, Sha256};

/// The metadata key a credential travels in.
pub const AUTHORIZATION: &str = "authorization";

/// Random bytes in every secret: 256 bits, beyond guessing.
const SECRET_BYTES: usize = 32;

/// What a caller presented, parsed.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Join { secret: String },
    Node { node_id: i64, secret: String },
    Operator { secret: String },
    Reader { secret: String },
}

/// Why a token could not be read; the message never contains the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("the credential is not a pgpilot token (expected PGJ1., PGN1., PGO1. or PGR1.)")]
    Unknown,
    #[error("the {kind} is malformed: {what}")]
    Malformed {
        kind: &'static str,
        what: &'static str,
    },
}

impl fmt::Debug for Credential {
    // Never the secret: a Debug print lands in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl Credential {
    /// A new random secret, hex encoded.
    pub fn new_secret() -> String {
        use rand::RngCore;
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        hex(&bytes)
    }

    /// Parses a token as sent on the wire or stored in a file (surrounding
    /// whitespace ignored; a join token's CA part is accepted and dropped).
    pub fn parse(token: &str) -> Result<Credential, CredentialError> {
        let token = token.trim();
        let mut parts = token.split('.');
        let prefix = parts.next().unwrap_or_default();
        let kind = kind_name(prefix).ok_or(CredentialError::Unknown)?;
        let malformed = |what| CredentialError::Malformed { kind, what };
        let secret = |s: Option<&str>| -> Result<String, CredentialError> {
            match s {
                Some(s) if is_secret(s) => Ok(s.to_string()),
                _ => Err(malformed("its secret is not 64 hexadecimal digits")),
            }
        };
        let credential = match prefix {
            "PGJ1" => {
                let secret = secret(parts.next())?;
                if let Some(fp) = parts.next() {
                    if !is_secret(fp) {
                        return Err(malformed("its CA fingerprint is not 64 hexadecimal digits"));
                    }
                }
                Credential::Join { secret }
            }
            "PGN1" => {
                let node_id = parts
                    .next()
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|id| *id > 0)
                    .ok_or_else(|| malformed("its node id is not a positive number"))?;
                Credential::Node {
                    node_id,
                    secret: secret(parts.next())?,
                }
            }
            "PGO1" => Credential::Operator {
                secret: secret(parts.next())?,
            },
            _ => Credential::Reader {
                secret: secret(parts.next())?,
            },
        };
        if parts.next().is_some() {
            return Err(malformed("it has too many parts"));
        }
        Ok(credential)
    }

    /// The token to send or store (a join token without its CA part; see
    /// [`JoinToken`] for the form given to users).
    pub fn token(&self) -> String {
        match self {
            Credential::Join { secret } => format!("PGJ1.{secret}"),
            Credential::Node { node_id, secret } => format!("PGN1.{node_id}.{secret}"),
            Credential::Operator { secret } => format!("PGO1.{secret}"),
            Credential::Reader { secret } => format!("PGR1.{secret}"),
        }
    }

    /// The secret part, for hashing.
    pub fn secret(&self) -> &str {
        match self {
            Credential::Join { secret }
            | Credential::Node { secret, .. }
            | Credential::Operator { secret }
            | Credential::Reader { secret } => secret,
        }
    }

    /// Safe to log: the kind, and the node id of a node credential.
    pub fn describe(&self) -> String {
        match self {
            Credential::Join { .. } => "a join token".into(),
            Credential::Node { node_id, .. } => format!("the credential of node {node_id}"),
            Credential::Operator { .. } => "the operator credential".into(),
            Credential::Reader { .. } => "the read credential".into(),
        }
    }

    /// The SHA-256 digest of the secret, as stored by the monitor.
    pub fn digest(&self) -> String {
        digest(self.secret())
    }

    /// Whether this credential's secret has `stored` as its digest, in
    /// constant time.
    pub fn matches(&self, stored: &str) -> bool {
        constant_time_eq(self.digest().as_bytes(), stored.as_bytes())
    }
}

/// A join token as given to users: the credential plus, with TLS on, the
/// SHA-256 of the monitor's CA certificate (DER), hex.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub secret: String,
    pub ca_sha256: Option<String>,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken(ca_sha256: {:?})", self.ca_sha256)
    }
}

impl JoinToken {
    pub fn parse(token: &str) -> Result<JoinToken, CredentialError> {
        match Credential::parse(token)? {
            Credential::Join { secret } => {
                let ca_sha256 = token.trim().split('.').nth(2).map(str::to_ascii_lowercase);
                Ok(JoinToken { secret, ca_sha256 })
            }
            _ => Err(CredentialError::Malformed {
                kind: "join token",
                what: "it is another kind of credential (a join token starts with PGJ1.)",
            }),
        }
    }

    pub fn credential(&self) -> Credential {
        Credential::Join {
            secret: self.secret.clone(),
        }
    }

    /// The form users copy: `PGJ1.SECRET[.CA_SHA256]`.
    pub fn to_text(&self) -> String {
        match &self.ca_sha256 {
            Some(fp) => format!("PGJ1.{}.{fp}", self.secret),
            None => format!("PGJ1.{}", self.secret),
        }
    }
}

fn kind_name(prefix: &str) -> Option<&'static str> {
    Some(match prefix {
        "PGJ1" => "join token",
        "PGN1" => "node credential",
        "PGO1" => "operator credential",
        "PGR1" => "read credential",
        _ => return None,
    })
}

fn is_secret(s: &str) -> bool {
    s.len() == 2 * SECRET_BYTES && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The digest the monitor stores for a secret.
pub fn digest(secret: &str) -> String {
    sha256_hex(secret.to_ascii_lowercase().as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Equal length and content, without an early exit on the first
/// difference: how long a refusal takes tells nothing about the secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hide_their_secret() {
        let s = Credential::new_secret();
        assert_eq!(s.len(), 64);
        for c in [
            Credential::Join { secret: s.clone() },
            Credential::Node {
                node_id: 7,
                secret: s.clone(),
            },
            Credential::Operator { secret: s.clone() },
            Credential::Reader { secret: s.clone() },
        ] {
            assert_eq!(Credential::parse(&c.token()).unwrap(), c);
            assert!(!format!("{c:?}").contains(&s));
            assert!(c.matches(&c.digest()));
        }
        let other = Credential::Operator {
            secret: Credential::new_secret(),
        };
        assert!(!other.matches(&Credential::Operator { secret: s }.digest()));
    }

    #[test]
    fn join_tokens_carry_the_ca_fingerprint() {
        let secret = Credential::new_secret();
        let fp = sha256_hex(b"ca");
        let t = JoinToken {
            secret: secret.clone(),
            ca_sha256: Some(fp.clone()),
        };
        let parsed = JoinToken::parse(&t.to_text()).unwrap();
        assert_eq!(parsed, t);
        assert_eq!(
            Credential::parse(&t.to_text()).unwrap(),
            Credential::Join { secret }
        );
        assert!(!format!("{t:?}").contains(&t.secret));
    }

    #[test]
    fn malformed_tokens_are_named_without_the_token() {
        let bad = ["", "hello", "PGO1", "PGO1.abc", "PGN1.x.00", "PGN1.0.00"];
        for b in bad {
            let e = Credential::parse(b).expect_err(b).to_string();
            assert!(!e.is_empty(), "{b:?} needs a message");
        }
        let s = Credential::new_secret();
        let e = Credential::parse(&format!("PGO1.{s}.extra")).unwrap_err();
        assert!(!e.to_string().contains(&s), "{e}");
        assert!(matches!(
            JoinToken::parse(&format!("PGO1.{s}")),
            Err(CredentialError::Malformed { .. })
        ));
    }
}
