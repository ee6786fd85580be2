//! Cryptography in one place: argon2id password hashes, opaque tokens with SHA-256 digests, and
//! AES-256-GCM sealing of secrets at rest and of streams (backups).

use aead_stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce, aead::Aead};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use rand::RngExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::settings::EncryptionKey;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the ciphertext is malformed or was sealed under another key")]
    Open,
    #[error("sealed under key {0}, which is not in the keyring (ZOARK_ENCRYPTION_OLD_KEYS)")]
    UnknownKey(u8),
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

/// HMAC-SHA256 keyed for `purpose` with a key derived from `key` (one key per use, so a
/// signature made for one purpose is worthless for another).
fn mac(key: &[u8; 32], purpose: &str) -> hmac::Hmac<Sha256> {
    use hmac::{KeyInit as _, Mac as _};
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let keyed = |k: &[u8]| {
        hmac::Hmac::<Sha256>::new_from_slice(k)
            .unwrap_or_else(|_| hmac::Hmac::<Sha256>::new(&Default::default()))
    };
    let mut derive = keyed(key);
    derive.update(purpose.as_bytes());
    keyed(&derive.finalize().into_bytes())
}

/// HMAC-SHA256 of `message` for `purpose`.
pub fn sign(key: &EncryptionKey, purpose: &str, message: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    let mut mac = mac(key.bytes(), purpose);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Whether `signature` is [`sign`]'s for `message` and `purpose` under a key of the ring (links
/// signed before a rotation keep working), compared in constant time.
pub fn verify(key: &EncryptionKey, purpose: &str, message: &[u8], signature: &[u8]) -> bool {
    use hmac::Mac as _;
    key.all().any(|k| {
        let mut mac = mac(k, purpose);
        mac.update(message);
        mac.verify_slice(signature).is_ok()
    })
}

/// What every value [`seal`] writes starts with, then the id of the key that sealed it.
const SEALED_MAGIC: &[u8; 3] = b"zk\x01";

/// Seals `plaintext` with AES-256-GCM under the keyring's current key; the output is
/// `"zk\x01" || key id || nonce || ciphertext`, so that after a rotation the old key that
/// sealed it is known ([`open`]).
///
/// # Errors
/// Only on an internal AEAD failure.
pub fn seal(key: &EncryptionKey, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key.bytes()));
    let mut nonce_bytes = [0u8; 12];
    rand::rng().fill(&mut nonce_bytes[..]);
    let nonce = Nonce::from(nonce_bytes);
    let mut out = SEALED_MAGIC.to_vec();
    out.push(key.id());
    out.extend_from_slice(&nonce_bytes);
    out.extend(
        cipher
            .encrypt(&nonce, plaintext)
            .map_err(|_| CryptoError::Seal)?,
    );
    Ok(out)
}

/// What values [`seal_bound`] writes start with, then the key's id.
const BOUND_MAGIC: &[u8; 3] = b"zk\x02";

/// Where a stored secret lives. [`seal_bound`] binds it into the value (AES-GCM associated
/// data), so that a value copied into another row, column or organization does not open.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    pub table: &'static str,
    pub column: &'static str,
    pub organization_id: uuid::Uuid,
    pub row_id: uuid::Uuid,
}

impl Binding {
    pub fn new(
        (table, column): (&'static str, &'static str),
        organization_id: uuid::Uuid,
        row_id: uuid::Uuid,
    ) -> Self {
        Self {
            table,
            column,
            organization_id,
            row_id,
        }
    }

    fn associated_data(&self) -> String {
        format!(
            "zoark:{}.{}:{}:{}",
            self.table, self.column, self.organization_id, self.row_id
        )
    }
}

/// [`seal`], bound to where the value is stored: `"zk\x02" || key id || nonce || ciphertext`.
///
/// # Errors
/// Only on an internal AEAD failure.
pub fn seal_bound(
    key: &EncryptionKey,
    plaintext: &[u8],
    binding: &Binding,
) -> Result<Vec<u8>, CryptoError> {
    use aes_gcm::aead::Payload;
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key.bytes()));
    let mut nonce_bytes = [0u8; 12];
    rand::rng().fill(&mut nonce_bytes[..]);
    let aad = binding.associated_data();
    let mut out = BOUND_MAGIC.to_vec();
    out.push(key.id());
    out.extend_from_slice(&nonce_bytes);
    out.extend(
        cipher
            .encrypt(
                &Nonce::from(nonce_bytes),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Seal)?,
    );
    Ok(out)
}

/// Opens what [`seal_bound`] sealed for exactly this `binding`; a value sealed before values
/// were bound ([`seal`], or older) still opens, until `zoark-api rotate-keys` re-seals it bound.
///
/// # Errors
/// When the value was sealed for another place, tampered with, or its key is not in the ring.
pub fn open_bound(
    key: &EncryptionKey,
    sealed: &[u8],
    binding: &Binding,
) -> Result<Vec<u8>, CryptoError> {
    use aes_gcm::aead::Payload;
    let Some(rest) = sealed.strip_prefix(BOUND_MAGIC) else {
        return open(key, sealed);
    };
    let (&id, rest) = rest.split_first().ok_or(CryptoError::Open)?;
    let key = key.by_id(id).ok_or(CryptoError::UnknownKey(id))?;
    if rest.len() < 12 {
        return Err(CryptoError::Open);
    }
    let (nonce, ciphertext) = rest.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Open)?;
    let aad = binding.associated_data();
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key))
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| CryptoError::Open)
}

/// Whether `sealed` was sealed with [`seal_bound`].
pub fn is_bound(sealed: &[u8]) -> bool {
    sealed.starts_with(BOUND_MAGIC)
}

/// The id of the key that sealed `sealed`; `None` for values sealed before keys had ids.
pub fn sealed_with(sealed: &[u8]) -> Option<u8> {
    sealed
        .strip_prefix(SEALED_MAGIC)
        .or_else(|| sealed.strip_prefix(BOUND_MAGIC))
        .filter(|rest| rest.len() > 13)
        .and_then(|rest| rest.first().copied())
}

fn open_with(key: &[u8; 32], nonce_and_ciphertext: &[u8]) -> Option<Vec<u8>> {
    if nonce_and_ciphertext.len() < 12 {
        return None;
    }
    let (nonce, ciphertext) = nonce_and_ciphertext.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key))
        .decrypt(&Nonce::from(nonce), ciphertext)
        .ok()
}

/// Opens what [`seal`] produced, with the key of the ring that sealed it; a value sealed
/// before keys had ids (`nonce || ciphertext`) is tried with every key of the ring.
///
/// # Errors
/// When the data was tampered with or truncated, or its key is not in the ring.
pub fn open(key: &EncryptionKey, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if let Some(id) = sealed_with(sealed) {
        let rest = sealed.get(SEALED_MAGIC.len() + 1..).unwrap_or_default();
        if let Some(plain) = key.by_id(id).and_then(|k| open_with(k, rest)) {
            return Ok(plain);
        }
        if key.by_id(id).is_none() && key.all().all(|k| open_with(k, sealed).is_none()) {
            return Err(CryptoError::UnknownKey(id));
        }
    }
    // Sealed before key ids (a legacy nonce may start like the header, rarely: tried too).
    key.all()
        .find_map(|k| open_with(k, sealed))
        .ok_or(CryptoError::Open)
}

/// [`seal`], as base64 text (for JSON payloads).
///
/// # Errors
/// Only on an internal AEAD failure.
pub fn seal_text(key: &EncryptionKey, plaintext: &[u8]) -> Result<String, CryptoError> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::STANDARD.encode(seal(key, plaintext)?))
}

/// Opens what [`seal_text`] produced.
///
/// # Errors
/// When it is not base64, was tampered with, or was sealed under another key.
pub fn open_text(key: &EncryptionKey, sealed: &str) -> Result<Vec<u8>, CryptoError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| CryptoError::Open)?;
    open(key, &bytes)
}

/// The header of a stream sealed by [`seal_stream`]: a format tag, then the 7-byte STREAM nonce.
const STREAM_MAGIC: &[u8; 8] = b"ZKSEAL1\n";
/// Plaintext bytes per sealed chunk; each chunk carries a 16-byte tag.
const STREAM_CHUNK: usize = 64 * 1024;
const STREAM_TAG: usize = 16;

/// An error of [`seal_stream`] or [`open_stream`].
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the sealed stream is malformed, truncated, or was sealed under another key")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// Reads until `buf` holds `limit` bytes or the reader ends.
async fn read_up_to<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(limit);
    (&mut *reader)
        .take(limit as u64)
        .read_to_end(&mut buf)
        .await?;
    Ok(buf)
}

/// Reads `reader` in chunks of `size` bytes, passes each to `step` with whether it is the last
/// (the last may be short, or empty when there was nothing at all), and writes what `step`
/// returns. Returns the bytes read and written.
async fn map_chunks<R, W>(
    mut reader: R,
    writer: &mut W,
    size: usize,
    mut step: impl FnMut(&[u8], bool) -> Result<Vec<u8>, StreamError>,
) -> Result<(u64, u64), StreamError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut read, mut written) = (0u64, 0u64);
    let mut current = read_up_to(&mut reader, size).await?;
    loop {
        let next = if current.len() == size {
            read_up_to(&mut reader, size).await?
        } else {
            Vec::new()
        };
        let last = next.is_empty();
        let out = step(&current, last)?;
        writer.write_all(&out).await?;
        read += current.len() as u64;
        written += out.len() as u64;
        if last {
            return Ok((read, written));
        }
        current = next;
    }
}

/// Seals everything `reader` yields into `writer` with AES-256-GCM in the STREAM construction
/// (64 KiB chunks, each authenticated with its position and whether it is the last), so
/// arbitrarily large data is sealed in constant memory and truncation or reordering is detected.
/// Returns the number of plaintext bytes.
///
/// # Errors
/// I/O errors of either side.
pub async fn seal_stream<R, W>(
    key: &EncryptionKey,
    reader: R,
    writer: &mut W,
) -> Result<u64, StreamError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut nonce = [0u8; 7];
    rand::rng().fill(&mut nonce[..]);
    let mut sealer = Some(EncryptorBE32::<Aes256Gcm>::new(
        &Key::<Aes256Gcm>::from(*key.bytes()),
        &nonce.into(),
    ));
    writer.write_all(STREAM_MAGIC).await?;
    writer.write_all(&nonce).await?;
    let (plaintext, _) = map_chunks(reader, writer, STREAM_CHUNK, |chunk, last| {
        let sealed = if last {
            sealer.take().map(|s| s.encrypt_last(chunk))
        } else {
            sealer.as_mut().map(|s| s.encrypt_next(chunk))
        };
        sealed.and_then(Result::ok).ok_or(StreamError::Seal)
    })
    .await?;
    Ok(plaintext)
}

/// Opens what [`seal_stream`] produced, writing the plaintext to `writer`. Returns the number of
/// plaintext bytes.
///
/// # Errors
/// [`StreamError::Open`] when the data was tampered with, truncated, or sealed under another key
/// (what was written before the bad chunk must then be thrown away); I/O errors.
pub async fn open_stream<R, W>(
    key: &EncryptionKey,
    mut reader: R,
    writer: &mut W,
) -> Result<u64, StreamError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let header = read_up_to(&mut reader, STREAM_MAGIC.len() + 7).await?;
    let (magic, nonce) = header.split_at(header.len().min(STREAM_MAGIC.len()));
    let nonce: [u8; 7] = nonce.try_into().map_err(|_| StreamError::Open)?;
    if magic != STREAM_MAGIC {
        return Err(StreamError::Open);
    }
    let mut opener = Some(DecryptorBE32::<Aes256Gcm>::new(
        &Key::<Aes256Gcm>::from(*key.bytes()),
        &nonce.into(),
    ));
    let (_, plaintext) = map_chunks(reader, writer, STREAM_CHUNK + STREAM_TAG, |chunk, last| {
        let opened = if last {
            opener.take().map(|o| o.decrypt_last(chunk))
        } else {
            opener.as_mut().map(|o| o.decrypt_next(chunk))
        };
        opened.and_then(Result::ok).ok_or(StreamError::Open)
    })
    .await?;
    Ok(plaintext)
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

    async fn sealed(key_byte: u8, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let n = seal_stream(&key(key_byte), plain, &mut out).await.unwrap();
        assert_eq!(n, plain.len() as u64);
        out
    }

    async fn opened(key_byte: u8, sealed: &[u8]) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        open_stream(&key(key_byte), sealed, &mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn sealed_streams_round_trip_at_every_chunk_boundary() {
        for len in [
            0,
            1,
            STREAM_CHUNK - 1,
            STREAM_CHUNK,
            STREAM_CHUNK + 1,
            3 * STREAM_CHUNK,
            3 * STREAM_CHUNK + 17,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = sealed(3, &plain).await;
            let chunks = len.div_ceil(STREAM_CHUNK).max(1);
            assert_eq!(sealed.len(), 15 + len + chunks * STREAM_TAG, "len {len}");
            assert_eq!(opened(3, &sealed).await.unwrap(), plain, "len {len}");
        }
    }

    #[tokio::test]
    async fn sealed_streams_detect_a_wrong_key_tampering_and_truncation() {
        let plain: Vec<u8> = (0..2 * STREAM_CHUNK + 5).map(|i| (i % 7) as u8).collect();
        let sealed = sealed(4, &plain).await;
        assert!(matches!(opened(5, &sealed).await, Err(StreamError::Open)));
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(opened(4, &tampered).await.is_err());
        // Cut at a chunk boundary: every remaining chunk is intact but none is marked last.
        let boundary = 15 + 2 * (STREAM_CHUNK + STREAM_TAG);
        assert!(opened(4, &sealed[..boundary]).await.is_err());
        assert!(opened(4, &sealed[..sealed.len() - 1]).await.is_err());
        assert!(opened(4, b"ZKSEAL1").await.is_err());
        assert!(opened(4, b"plain pg_dump output").await.is_err());
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
