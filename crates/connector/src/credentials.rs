//! App credentials at rest. An integration's stored credential is one of:
//!
//! - `enc:v1:<hex>`: AES-256-GCM ciphertext (12-byte nonce first) under the key in
//!   `UNSEAT_CREDENTIAL_KEY` (64 hex digits). `unseat admin encrypt-credential` makes one, so
//!   the plain secret never reaches the database or the admin API;
//! - `env:UNSEAT_APP_CREDENTIAL_<NAME>`: read from the connector's environment (only
//!   variables with that prefix, so a tenant admin cannot name any other variable);
//! - `file:<name>`: read from the file `<name>` in `UNSEAT_CREDENTIAL_DIR` (a plain name, no
//!   path: nothing outside that directory can be named);
//! - anything else: the secret itself (kept for existing integrations).
//!
//! Resolved only in the connector, just before use; errors never include the secret.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The environment variable holding the encryption key.
pub const KEY_VAR: &str = "UNSEAT_CREDENTIAL_KEY";
/// The prefix every `env:` reference must carry.
pub const ENV_PREFIX: &str = "UNSEAT_APP_CREDENTIAL_";
/// The directory `file:` references are read from.
pub const DIR_VAR: &str = "UNSEAT_CREDENTIAL_DIR";
const ENCRYPTED: &str = "enc:v1:";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("{KEY_VAR} is not set (64 hex digits), so encrypted credentials cannot be read")]
    NoKey,
    #[error("{KEY_VAR} must be 64 hex digits (a 256-bit key)")]
    BadKey,
    #[error("the encrypted credential is damaged or was made with another key")]
    Undecryptable,
    #[error("credential reference env:{0} must name a variable starting with {ENV_PREFIX}")]
    ForbiddenVariable(String),
    #[error("the environment variable {0} named by the credential is not set")]
    MissingVariable(String),
    #[error("credential reference file:{0} must be a plain file name, read from {DIR_VAR}")]
    ForbiddenFile(String),
    #[error("cannot read the credential file {0} from {DIR_VAR}")]
    UnreadableFile(String),
}

fn key_from(hex_key: &str) -> Result<LessSafeKey, CredentialError> {
    let bytes = hex::decode(hex_key.trim()).map_err(|_| CredentialError::BadKey)?;
    let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| CredentialError::BadKey)?;
    Ok(LessSafeKey::new(unbound))
}

/// Encrypts `plain` under `hex_key` into the `enc:v1:` form.
pub fn encrypt(plain: &str, hex_key: &str) -> Result<String, CredentialError> {
    let key = key_from(hex_key)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| CredentialError::BadKey)?;
    let mut sealed = plain.as_bytes().to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut sealed)
        .map_err(|_| CredentialError::BadKey)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(format!("{ENCRYPTED}{}", hex::encode(out)))
}

fn decrypt(encoded: &str, hex_key: &str) -> Result<String, CredentialError> {
    let key = key_from(hex_key)?;
    let mut bytes = hex::decode(encoded).map_err(|_| CredentialError::Undecryptable)?;
    if bytes.len() < NONCE_LEN {
        return Err(CredentialError::Undecryptable);
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[..NONCE_LEN]);
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut bytes[NONCE_LEN..])
        .map_err(|_| CredentialError::Undecryptable)?;
    String::from_utf8(plain.to_vec()).map_err(|_| CredentialError::Undecryptable)
}

/// The secret a stored credential stands for, reading the environment and files as needed.
pub fn resolve(stored: &str) -> Result<String, CredentialError> {
    resolve_with(stored, |name| std::env::var(name).ok())
}

/// [`resolve`] with the environment given as a function (for tests).
pub fn resolve_with(stored: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, CredentialError> {
    if let Some(encoded) = stored.strip_prefix(ENCRYPTED) {
        let key = env(KEY_VAR).ok_or(CredentialError::NoKey)?;
        return decrypt(encoded, &key);
    }
    if let Some(name) = stored.strip_prefix("env:") {
        if !name.starts_with(ENV_PREFIX) || name.len() == ENV_PREFIX.len() {
            return Err(CredentialError::ForbiddenVariable(name.to_string()));
        }
        return env(name).ok_or_else(|| CredentialError::MissingVariable(name.to_string()));
    }
    if let Some(name) = stored.strip_prefix("file:") {
        let plain_name = !name.is_empty()
            && name != "."
            && name != ".."
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        let dir = env(DIR_VAR).filter(|d| !d.is_empty());
        let (true, Some(dir)) = (plain_name, dir) else {
            return Err(CredentialError::ForbiddenFile(name.to_string()));
        };
        let path = std::path::Path::new(&dir).join(name);
        let text = std::fs::read_to_string(path).map_err(|_| CredentialError::UnreadableFile(name.to_string()))?;
        return Ok(text.trim_end_matches(['\r', '\n']).to_string());
    }
    Ok(stored.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn env_with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn encrypted_credentials_round_trip_and_hide_the_secret() {
        let stored = encrypt("s3cret-token", KEY).expect("encrypt");
        assert!(stored.starts_with("enc:v1:") && !stored.contains("s3cret"));
        assert_ne!(stored, encrypt("s3cret-token", KEY).expect("encrypt"), "a fresh nonce each time");
        assert_eq!(resolve_with(&stored, env_with(&[(KEY_VAR, KEY)])), Ok("s3cret-token".into()));
        assert_eq!(resolve_with(&stored, env_with(&[])), Err(CredentialError::NoKey));
        let other = "ff".repeat(32);
        let other: &'static str = Box::leak(other.into_boxed_str());
        let wrong: &'static [(&str, &str)] = Box::leak(vec![(KEY_VAR, other)].into_boxed_slice());
        assert_eq!(resolve_with(&stored, env_with(wrong)), Err(CredentialError::Undecryptable));
        assert_eq!(resolve_with("enc:v1:zz", env_with(&[(KEY_VAR, KEY)])), Err(CredentialError::Undecryptable));
        assert_eq!(encrypt("x", "short"), Err(CredentialError::BadKey));
    }

    #[test]
    fn references_are_confined() {
        let env = env_with(&[("UNSEAT_APP_CREDENTIAL_META", "tok"), ("HOME", "/root")]);
        assert_eq!(resolve_with("env:UNSEAT_APP_CREDENTIAL_META", &env), Ok("tok".into()));
        assert!(matches!(resolve_with("env:HOME", &env), Err(CredentialError::ForbiddenVariable(_))));
        assert!(matches!(resolve_with("env:UNSEAT_APP_CREDENTIAL_X", &env), Err(CredentialError::MissingVariable(_))));
        assert!(matches!(resolve_with("file:../etc/passwd", &env), Err(CredentialError::ForbiddenFile(_))));
        assert!(matches!(resolve_with("file:token", &env), Err(CredentialError::ForbiddenFile(_))), "no directory set");
        assert_eq!(resolve_with("plain-token", &env), Ok("plain-token".into()));
    }

    #[test]
    fn files_are_read_from_the_credential_directory() {
        let dir = std::env::temp_dir().join(format!("unseat-cred-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("meta.token"), "from-file\n").expect("write");
        let dir_s: &'static str = Box::leak(dir.to_string_lossy().into_owned().into_boxed_str());
        let pairs: &'static [(&str, &str)] = Box::leak(vec![(DIR_VAR, dir_s)].into_boxed_slice());
        assert_eq!(resolve_with("file:meta.token", env_with(pairs)), Ok("from-file".into()));
        assert!(matches!(resolve_with("file:missing", env_with(pairs)), Err(CredentialError::UnreadableFile(_))));
        let _ = std::fs::remove_dir_all(dir);
    }
}
