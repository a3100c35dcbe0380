//! The SCRAM-SHA-256 verifier of a password, as PostgreSQL stores it
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, RFC 5802
//! and PostgreSQL's `scram_build_secret`). The keeper sets a rotated
//! replication password as this verifier, as psql's `\password` does: the
//! password itself never reaches the server, so no server log line
//! (log_statement, a failed statement's STATEMENT line) can show it.
//!
//! The passwords are the monitor's hex strings, for which SASLprep (which
//! PostgreSQL applies first) changes nothing.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// PostgreSQL's default (scram_iterations).
const ITERATIONS: u32 = 4096;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one block: SCRAM's `Hi`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()].concat());
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// The verifier of `password` with `salt`.
pub fn verifier_with_salt(password: &str, salt: &[u8], iterations: u32) -> String {
    let salted = hi(password.as_bytes(), salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// The verifier of `password` with a fresh random salt (16 bytes, as
/// PostgreSQL draws).
pub fn verifier(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    verifier_with_salt(password, &salt, ITERATIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 7677 example's password and salt; the expected keys were
    /// computed independently (Python's hashlib.pbkdf2_hmac and hmac).
    /// That PostgreSQL accepts the verifier is shown by the rotation test
    /// (tests/keeper/rotate.rs logs in with the password).
    #[test]
    fn matches_an_independent_computation() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = verifier_with_salt("pencil", &salt, 4096);
        assert_eq!(
            v,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        assert!(verifier("x").starts_with("SCRAM-SHA-256$4096:"));
        assert_ne!(verifier("x"), verifier("x"), "a fresh salt each time");
    }
}
