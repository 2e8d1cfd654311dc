//! App credentials at rest: how the admin API seals what an admin submits ([`Sealing`]) and
//! how a connector reads it back ([`resolve`]). An integration's stored credential is one of:
//!
//! - `enc:v1:<hex>`: AES-256-GCM ciphertext (12-byte nonce first) under the deployment's
//!   credential key (`UNSEAT_CREDENTIAL_KEY`, 64 hex digits). With a key configured, the admin
//!   API encrypts every plain secret it receives into this form before it is stored;
//!   `unseat admin encrypt-credential` makes one offline;
//! - `env:UNSEAT_APP_CREDENTIAL_<NAME>`: read from the connector's environment (only
//!   variables with that prefix, so a tenant admin cannot name any other variable);
//! - `file:<name>`: read from the file `<name>` in `UNSEAT_CREDENTIAL_DIR` (a plain name, no
//!   path: nothing outside that directory can be named);
//! - anything else: the secret itself. The admin API stores that only when no key is
//!   configured and plaintext was explicitly allowed (development); a connector still reads
//!   such rows.
//!
//! Errors never include the secret. [`CredentialKey`] and [`StoredCredential`] never show
//! their contents in `Debug`.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;

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
    #[error(
        "plain credentials are not accepted: no credential key is configured ({KEY_VAR}), so it could not be \
         stored encrypted. Submit an enc:v1: value (unseat admin encrypt-credential), have the operator give an \
         env:{ENV_PREFIX}<NAME> or file:<name> reference, or configure the key"
    )]
    PlaintextRefused,
}

/// The 256-bit key credentials are sealed under. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialKey(String);

impl CredentialKey {
    /// Parses 64 hex digits.
    pub fn parse(hex_key: &str) -> Result<Self, CredentialError> {
        let hex_key = hex_key.trim();
        key_from(hex_key)?;
        Ok(Self(hex_key.to_ascii_lowercase()))
    }

    /// A fresh random key (for a process whose roles all run together, such as tests).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        // The system RNG does not fail on supported platforms; a zero key would only weaken a
        // throwaway key, never a configured one.
        let _ = SystemRandom::new().fill(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// The key in `UNSEAT_CREDENTIAL_KEY`; None when unset or empty.
    pub fn from_env() -> Result<Option<Self>, CredentialError> {
        match std::env::var(KEY_VAR) {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v).map(Some),
            _ => Ok(None),
        }
    }

    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialKey(<redacted>)")
    }
}

/// A credential in the form it may be stored in (made only by [`Sealing::seal`]).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct StoredCredential(String);

impl StoredCredential {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredCredential(<redacted>)")
    }
}

/// How the admin API turns a submitted credential into what is stored.
#[derive(Debug, Clone, Default)]
pub struct Sealing {
    /// With a key, plain secrets are stored encrypted under it.
    pub key: Option<CredentialKey>,
    /// Without a key: store plain secrets as given (development only) instead of refusing them.
    pub allow_plaintext: bool,
}

impl Sealing {
    /// `env:`/`file:` references are checked and kept as references; an `enc:v1:` value is
    /// kept (and must open under the key when one is configured, else at least look sealed); an
    /// empty one stays empty;
    /// any other value is a plain secret: encrypted under the key, else refused unless
    /// plaintext is allowed.
    pub fn seal(&self, submitted: &str) -> Result<StoredCredential, CredentialError> {
        if submitted.is_empty() {
            return Ok(StoredCredential::default());
        }
        if let Some(encoded) = submitted.strip_prefix(ENCRYPTED) {
            match &self.key {
                Some(key) => {
                    decrypt(encoded, key.hex())?;
                }
                // Without the key it cannot be opened, but its form can be checked: hex of a
                // nonce and a tag at least (what `encrypt` writes), so a damaged paste fails here
                // rather than at every task.
                None if hex::decode(encoded).is_ok_and(|b| b.len() >= NONCE_LEN + AES_256_GCM.tag_len()) => {}
                None => return Err(CredentialError::Undecryptable),
            }
            return Ok(StoredCredential(submitted.to_string()));
        }
        if let Some(name) = submitted.strip_prefix("env:") {
            check_env_name(name)?;
            return Ok(StoredCredential(submitted.to_string()));
        }
        if let Some(name) = submitted.strip_prefix("file:") {
            check_file_name(name)?;
            return Ok(StoredCredential(submitted.to_string()));
        }
        match &self.key {
            Some(key) => encrypt(submitted, key.hex()).map(StoredCredential),
            None if self.allow_plaintext => Ok(StoredCredential(submitted.to_string())),
            None => Err(CredentialError::PlaintextRefused),
        }
    }
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

fn check_env_name(name: &str) -> Result<(), CredentialError> {
    if !name.starts_with(ENV_PREFIX) || name.len() == ENV_PREFIX.len() {
        return Err(CredentialError::ForbiddenVariable(name.to_string()));
    }
    Ok(())
}

fn check_file_name(name: &str) -> Result<(), CredentialError> {
    let plain_name = !name.is_empty()
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !plain_name {
        return Err(CredentialError::ForbiddenFile(name.to_string()));
    }
    Ok(())
}

/// The secret a stored credential stands for, reading the environment and files as needed.
pub fn resolve(stored: &str) -> Result<String, CredentialError> {
    resolve_with(stored, |name| std::env::var(name).ok())
}

/// [`resolve`] with the key given (a connector's configured key) instead of read from the
/// environment; None falls back to `UNSEAT_CREDENTIAL_KEY`.
pub fn resolve_using(stored: &str, key: Option<&CredentialKey>) -> Result<String, CredentialError> {
    resolve_with(stored, |name| match (name, key) {
        (KEY_VAR, Some(key)) => Some(key.hex().to_string()),
        _ => std::env::var(name).ok(),
    })
}

/// [`resolve`] with the environment given as a function (for tests).
pub fn resolve_with(stored: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, CredentialError> {
    if let Some(encoded) = stored.strip_prefix(ENCRYPTED) {
        let key = env(KEY_VAR).ok_or(CredentialError::NoKey)?;
        return decrypt(encoded, &key);
    }
    if let Some(name) = stored.strip_prefix("env:") {
        check_env_name(name)?;
        return env(name).ok_or_else(|| CredentialError::MissingVariable(name.to_string()));
    }
    if let Some(name) = stored.strip_prefix("file:") {
        check_file_name(name)?;
        let Some(dir) = env(DIR_VAR).filter(|d| !d.is_empty()) else {
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

    #[test]
    fn sealing_encrypts_plain_secrets_and_keeps_references() {
        let key = CredentialKey::parse(KEY).expect("key");
        let sealing = Sealing { key: Some(key.clone()), allow_plaintext: false };
        let sealed = sealing.seal("s3cret-token").expect("sealed");
        assert!(sealed.as_str().starts_with("enc:v1:") && !sealed.as_str().contains("s3cret"));
        assert_eq!(resolve_using(sealed.as_str(), Some(&key)), Ok("s3cret-token".into()));
        for reference in ["env:UNSEAT_APP_CREDENTIAL_META", "file:meta.token", ""] {
            assert_eq!(sealing.seal(reference).expect("kept").as_str(), reference);
        }
        // Already sealed under this key: kept; under another key: refused.
        assert_eq!(sealing.seal(sealed.as_str()).expect("kept"), sealed);
        let foreign = encrypt("x", &"ab".repeat(32)).expect("encrypt");
        assert_eq!(sealing.seal(&foreign), Err(CredentialError::Undecryptable));
        assert!(matches!(sealing.seal("env:HOME"), Err(CredentialError::ForbiddenVariable(_))));
        assert!(matches!(sealing.seal("file:../x"), Err(CredentialError::ForbiddenFile(_))));
        assert!(!format!("{key:?} {sealed:?}").contains(KEY));
    }

    #[test]
    fn without_a_key_plain_secrets_are_refused_unless_allowed() {
        let strict = Sealing::default();
        assert_eq!(strict.seal("s3cret"), Err(CredentialError::PlaintextRefused));
        assert!(!CredentialError::PlaintextRefused.to_string().contains("s3cret"));
        assert_eq!(
            strict.seal("env:UNSEAT_APP_CREDENTIAL_A").expect("reference").as_str(),
            "env:UNSEAT_APP_CREDENTIAL_A"
        );
        let dev = Sealing { key: None, allow_plaintext: true };
        assert_eq!(dev.seal("s3cret").expect("allowed").as_str(), "s3cret");
        // A sealed value cannot be opened without the key, but a damaged one is told apart.
        let sealed = encrypt("x", &"ab".repeat(32)).expect("encrypt");
        assert_eq!(strict.seal(&sealed).expect("kept").as_str(), sealed);
        for damaged in ["enc:v1:garbage", "enc:v1:", "enc:v1:00ff"] {
            assert_eq!(strict.seal(damaged), Err(CredentialError::Undecryptable), "{damaged}");
        }
        assert_eq!(CredentialKey::parse("nope"), Err(CredentialError::BadKey));
        assert_ne!(CredentialKey::generate(), CredentialKey::generate());
    }
}
