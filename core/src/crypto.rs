//! Cryptography in one place: argon2id password hashes, opaque tokens with SHA-256 digests, and
//! AES-256-GCM sealing of secrets at rest.

use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce, aead::Aead};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::settings::EncryptionKey;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the ciphertext is malformed or was sealed under another key")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// Hashes a password with argon2id (PHC string). CPU-heavy: call it on the blocking pool.
///
/// # Errors
/// Only if argon2 rejects its own parameters.
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| CryptoError::Hash(e.to_string()))
}

/// Verifies a password against a PHC string; a malformed hash is simply "no match".
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A random URL-safe token of `bytes` bytes of entropy.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of a token, as stored in the database instead of the token itself.
pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Seals `plaintext` with AES-256-GCM; the output is `nonce || ciphertext`.
///
/// # Errors
/// Only on an internal AEAD failure.
pub fn seal(key: &EncryptionKey, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key.bytes()));
    let mut nonce_bytes = [0u8; 12];
    rand::rng().fill(&mut nonce_bytes[..]);
    let nonce = Nonce::from(nonce_bytes);
    let mut out = nonce_bytes.to_vec();
    out.extend(
        cipher
            .encrypt(&nonce, plaintext)
            .map_err(|_| CryptoError::Seal)?,
    );
    Ok(out)
}

/// Opens what [`seal`] produced.
///
/// # Errors
/// When the data was tampered with, truncated, or sealed under another key.
pub fn open(key: &EncryptionKey, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < 12 {
        return Err(CryptoError::Open);
    }
    let (nonce, ciphertext) = sealed.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Open)?;
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key.bytes()));
    cipher
        .decrypt(&Nonce::from(nonce), ciphertext)
        .map_err(|_| CryptoError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([byte; 32])
    }

    #[test]
    fn sealed_secrets_open_only_under_their_key_and_unmodified() {
        let sealed = seal(&key(1), b"smtp-password").unwrap();
        assert!(!sealed.windows(13).any(|w| w == b"smtp-password"));
        assert_eq!(open(&key(1), &sealed).unwrap(), b"smtp-password");
        assert!(open(&key(2), &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open(&key(1), &tampered).is_err());
        assert!(open(&key(1), &sealed[..5]).is_err());
        assert_ne!(
            seal(&key(1), b"x").unwrap(),
            seal(&key(1), b"x").unwrap(),
            "nonces must differ"
        );
    }

    #[test]
    fn passwords_verify_against_their_argon2id_hash_only() {
        let hash = hash_password("correct horse battery staple").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery staple", &hash));
        assert!(!verify_password("Correct horse battery staple", &hash));
        assert!(!verify_password("anything", "not-a-phc-string"));
    }

    #[test]
    fn tokens_are_random_and_digests_are_stable() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token(32));
        assert_eq!(token_digest(&a), token_digest(&a));
        assert_eq!(token_digest(&a).len(), 32);
    }
}
