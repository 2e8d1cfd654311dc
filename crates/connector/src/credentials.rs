//! App credentials at rest: `enc:v1:` ciphertext, `env:`/`file:` references, or (for
//! integrations stored before a key was configured) the secret itself. The code lives in
//! `unseat-store` so that the admin API, which seals what admins submit, and the connector,
//! which resolves it just before use, share one implementation; see
//! [`unseat_store::credentials`].

pub use unseat_store::credentials::*;
