//! Random identifiers for sessions, keys and made-up users.

use rand::Rng;

/// Lowercase letters and digits: safe in URLs, paths and every database's default collation.
const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `len` random characters from a 36-letter alphabet (5.17 bits each; 24 give 124 bits).
pub fn random_id(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// A new session id: `s_` and 24 random characters.
pub fn session_id() -> String {
    format!("s_{}", random_id(24))
}
