//! Bearer tokens. A token is 32 random bytes, shown once; the store keeps only its SHA-256.

use crate::{Result, Store};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What a SCIM token lets its holder touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScimScope {
    Workspace,
    Integration(Uuid),
}

/// The owner of a presented bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOwner {
    Scim {
        tenant_id: Uuid,
        scope: ScimScope,
    },
    /// A console admin; `integration` is the one integration an `integration_owner` owns.
    Admin {
        tenant_id: Uuid,
        role: String,
        integration: Option<Uuid>,
        /// The token's id and label (never the token), to say who did what.
        token_id: Uuid,
        label: String,
    },
}

/// A fresh random token with a readable prefix (`scim_…`, `adm_…`).
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl Store {
    /// Stores the hash of a new token that lasts until revoked; `scope_integration` only for
    /// SCIM tokens, `role` only for admin tokens.
    pub async fn insert_token(
        &self,
        tenant_id: Uuid,
        token: &str,
        kind: &str,
        scope_integration: Option<Uuid>,
        role: Option<&str>,
        label: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        let new = NewToken { kind, scope_integration, role, label, expires_at: None };
        insert_token(&**client, tenant_id, token, &new).await
    }

    /// Who holds `token`, if anyone (an expired token is no one's).
    pub async fn token_owner(&self, token: &str) -> Result<Option<TokenOwner>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "select tenant_id, kind, scope_integration, role, id, label from tokens
                  where hash = $1 and (expires_at is null or expires_at > now())",
                &[&hash(token)],
            )
            .await?;
        Ok(row.map(|r| {
            let tenant_id: Uuid = r.get(0);
            let kind: String = r.get(1);
            if kind == "scim" {
                let scope = match r.get::<_, Option<Uuid>>(2) {
                    Some(i) => ScimScope::Integration(i),
                    None => ScimScope::Workspace,
                };
                TokenOwner::Scim { tenant_id, scope }
            } else {
                let role = r.get::<_, Option<String>>(3).unwrap_or_else(|| "viewer".into());
                TokenOwner::Admin { tenant_id, role, integration: r.get(2), token_id: r.get(4), label: r.get(5) }
            }
        }))
    }
}

/// Who a console session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOwner {
    /// Signed in with the operator token whose hash this is (it may have changed since).
    Operator { operator_hash: Vec<u8> },
    /// Signed in with an admin token (a [`TokenOwner::Admin`]), still valid.
    Admin(TokenOwner),
}

impl Store {
    /// Opens a console session for the admin token `token_id`, or for the operator token whose
    /// hash is `operator_hash`, lasting `lifetime`; returns the session value for the cookie
    /// (only its hash is stored). Sessions past their expiry are deleted on the way.
    pub async fn start_session(
        &self,
        token_id: Option<Uuid>,
        operator_hash: Option<&[u8]>,
        lifetime: std::time::Duration,
    ) -> Result<String> {
        let session = generate("ses");
        let client = self.client().await?;
        client.execute("delete from console_sessions where expires_at < now()", &[]).await?;
        client
            .execute(
                "insert into console_sessions (hash, token_id, operator_hash, expires_at)
                 values ($1, $2, $3, now() + $4::float8 * interval '1 second')",
                &[&hash(&session), &token_id, &operator_hash, &lifetime.as_secs_f64()],
            )
            .await?;
        Ok(session)
    }

    /// Who holds the console session `session`, if it is open: not expired, not ended, and its
    /// admin token neither revoked nor expired.
    pub async fn session_owner(&self, session: &str) -> Result<Option<SessionOwner>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "select s.operator_hash, t.tenant_id, t.scope_integration, t.role, t.id, t.label
                   from console_sessions s
                   left join tokens t on t.id = s.token_id and t.kind = 'admin'
                                     and (t.expires_at is null or t.expires_at > now())
                  where s.hash = $1 and s.expires_at > now()",
                &[&hash(session)],
            )
            .await?;
        Ok(row.and_then(|r| match r.get::<_, Option<Vec<u8>>>(0) {
            Some(operator_hash) => Some(SessionOwner::Operator { operator_hash }),
            None => r.get::<_, Option<Uuid>>(1).map(|tenant_id| {
                SessionOwner::Admin(TokenOwner::Admin {
                    tenant_id,
                    role: r.get::<_, Option<String>>(3).unwrap_or_else(|| "viewer".into()),
                    integration: r.get(2),
                    token_id: r.get(4),
                    label: r.get(5),
                })
            }),
        }))
    }

    /// Ends the console session `session` (sign-out); nothing when it is not open.
    pub async fn end_session(&self, session: &str) -> Result<()> {
        let client = self.client().await?;
        client.execute("delete from console_sessions where hash = $1", &[&hash(session)]).await?;
        Ok(())
    }
}

/// What a new token is: `scim` or `admin`, its scope (a SCIM token's integration, or the one
/// an integration owner owns), an admin token's role, its label and when it ends (None: when
/// revoked).
#[derive(Debug, Clone, Copy)]
pub struct NewToken<'a> {
    pub kind: &'a str,
    pub scope_integration: Option<Uuid>,
    pub role: Option<&'a str>,
    pub label: &'a str,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Stores `token`'s hash, with the caller's client or transaction (see [`Store::insert_token`]).
pub async fn insert_token<C: tokio_postgres::GenericClient>(
    client: &C,
    tenant_id: Uuid,
    token: &str,
    new: &NewToken<'_>,
) -> Result<()> {
    client
        .execute(
            "insert into tokens (hash, tenant_id, kind, scope_integration, role, label, expires_at)
             values ($1, $2, $3, $4, $5, $6, $7)",
            &[&hash(token), &tenant_id, &new.kind, &new.scope_integration, &new.role, &new.label, &new.expires_at],
        )
        .await?;
    Ok(())
}
