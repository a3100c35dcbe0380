//! PostgreSQL write-ahead log positions.

use std::fmt;
use std::str::FromStr;

/// A WAL position, printed and parsed in PostgreSQL's `X/X` form
/// (high and low 32 bits in uppercase hex, e.g. `0/3000148`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Bytes of WAL between `self` and an earlier position; 0 if `other` is ahead.
    pub fn distance_from(self, other: Lsn) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// Why a string is not an LSN.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid LSN {0:?}: expected two hex numbers separated by '/', e.g. 0/3000148")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.trim().split_once('/').ok_or_else(err)?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 {
                return Err(err());
            }
            u32::from_str_radix(p, 16).map_err(|_| err())
        };
        Ok(Lsn((u64::from(part(hi)?) << 32) | u64::from(part(lo)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_postgres_form() {
        for s in [
            "0/0",
            "0/3000148",
            "1/0",
            "FFFFFFFF/FFFFFFFF",
            "16/B374D848",
        ] {
            assert_eq!(s.parse::<Lsn>().unwrap().to_string(), s);
        }
        assert_eq!("0/3000148".parse::<Lsn>().unwrap(), Lsn(0x3000148));
        assert_eq!("1/A".parse::<Lsn>().unwrap(), Lsn((1 << 32) | 10));
        assert_eq!(
            "16/b374d848".parse::<Lsn>().unwrap().to_string(),
            "16/B374D848"
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "0",
            "/1",
            "1/",
            "0/x",
            "1/2/3",
            "123456789/0",
            "-1/0",
            "0/ 1",
        ] {
            assert!(s.parse::<Lsn>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn distance_saturates() {
        assert_eq!(Lsn(100).distance_from(Lsn(40)), 60);
        assert_eq!(Lsn(40).distance_from(Lsn(100)), 0);
    }
}
