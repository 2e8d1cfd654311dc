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
    /// Stores the hash of a new token; `scope_integration` only for SCIM tokens, `role` only for
    /// admin tokens.
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
        insert_token(&**client, tenant_id, token, kind, scope_integration, role, label).await
    }

    /// Who holds `token`, if anyone.
    pub async fn token_owner(&self, token: &str) -> Result<Option<TokenOwner>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "select tenant_id, kind, scope_integration, role, id, label from tokens where hash = $1",
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

/// Stores `token`'s hash, with the caller's client or transaction (see [`Store::insert_token`]).
pub async fn insert_token<C: tokio_postgres::GenericClient>(
    client: &C,
    tenant_id: Uuid,
    token: &str,
    kind: &str,
    scope_integration: Option<Uuid>,
    role: Option<&str>,
    label: &str,
) -> Result<()> {
    client
        .execute(
            "insert into tokens (hash, tenant_id, kind, scope_integration, role, label) values ($1, $2, $3, $4, $5, $6)",
            &[&hash(token), &tenant_id, &kind, &scope_integration, &role, &label],
        )
        .await?;
    Ok(())
}
