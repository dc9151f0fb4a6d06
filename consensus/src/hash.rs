//! Cryptographic hashing (SHA-256 via `ring`) and hex helpers.
//!
//! SHA-256 serves three purposes: the catalog's hash chain over applied entries,
//! the digest that detects a request id reused for a different command, and the
//! stored form of access-token secrets.

use crate::catalog::Digest;

/// SHA-256 over the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> Digest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(part);
    }
    let digest = context.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Digest(out)
}

/// The stored form of a token secret: SHA-256 of its UTF-8 bytes.
///
/// The proposer hashes the secret before building a token command, so the secret
/// never enters the replicated log; [`crate::Catalog::authenticate`] hashes a
/// presented secret the same way.
pub fn hash_token_secret(secret: &str) -> Digest {
    sha256(&[secret.as_bytes()])
}

/// Decodes lowercase hex; `None` for odd length or any other character.
pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            sha256(&[b"ab", b"c"]).to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("FF"), None);
    }
}
