//! Who is calling, and what they may do. Every endpoint but the OpenAPI document extracts a
//! [`Caller`] first, so a request without a valid admin token is refused before its path or
//! body is even looked at.

use crate::error::ApiError;
use crate::App;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::sync::Arc;
use unseat_store::tokens::{hash, TokenOwner};
use uuid::Uuid;

/// A tenant admin's role, most powerful first (the order matters: see [`AdminRole::outranks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdminRole {
    Owner,
    SuperAdmin,
    Admin,
    /// Owns one integration: shares it (its grants) and reads the tenant like a viewer.
    IntegrationOwner,
    Viewer,
}

impl AdminRole {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Self::Owner),
            "super_admin" => Some(Self::SuperAdmin),
            "admin" => Some(Self::Admin),
            "integration_owner" => Some(Self::IntegrationOwner),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::SuperAdmin => "super_admin",
            Self::Admin => "admin",
            Self::IntegrationOwner => "integration_owner",
            Self::Viewer => "viewer",
        }
    }

    /// True when `self` is strictly more powerful than `other`.
    pub fn outranks(self, other: AdminRole) -> bool {
        self < other
    }
}

/// What an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reading anything of the tenant: every admin role.
    Read,
    /// Changing integrations, grants and SCIM tokens: owner, super_admin, admin.
    Write,
    /// Changing one integration's grants (sharing it): whoever may write, and that
    /// integration's owner.
    Share(Uuid),
    /// Minting admin tokens: owner, super_admin.
    ManageAdmins,
}

/// The authenticated caller: the operator (from configuration) or one tenant's admin.
#[derive(Debug, Clone)]
pub enum Caller {
    Operator,
    /// `integration` is the one integration an integration owner owns.
    Admin {
        tenant_id: Uuid,
        role: AdminRole,
        integration: Option<Uuid>,
        /// The token's id and label, to say who made a change (never the token).
        token_id: Uuid,
        label: String,
    },
}

impl Caller {
    /// Checks that the caller may do `need` on `tenant_id`. A tenant admin naming another
    /// tenant gets 403 whether that tenant exists or not.
    pub fn require(&self, tenant_id: Uuid, need: Need) -> Result<(), ApiError> {
        let Caller::Admin { tenant_id: own, role, integration, .. } = self else {
            return Ok(());
        };
        if *own != tenant_id {
            return Err(ApiError::other_tenant());
        }
        let allowed = match need {
            Need::Read => true,
            Need::Write => *role <= AdminRole::Admin,
            Need::Share(i) => {
                *role <= AdminRole::Admin || (*role == AdminRole::IntegrationOwner && *integration == Some(i))
            }
            Need::ManageAdmins => *role <= AdminRole::SuperAdmin,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("the {} role may not do this", role.as_str())))
        }
    }

    /// Who is acting, for the Automation Log and the process log: "the operator", or the
    /// admin token by role, label and id (`owner token "Ops laptop" (…)`), never the token.
    pub fn actor(&self) -> String {
        match self {
            Caller::Operator => "the operator".to_string(),
            Caller::Admin { role, token_id, label, .. } if label.trim().is_empty() => {
                format!("{} token {token_id}", role.as_str())
            }
            Caller::Admin { role, token_id, label, .. } => {
                format!("{} token {label:?} ({token_id})", role.as_str())
            }
        }
    }

    /// The caller an admin token's owner is (None for a SCIM token, or a role this build does
    /// not know): for a bearer token and a console session alike.
    pub fn of_token(owner: TokenOwner) -> Option<Caller> {
        match owner {
            TokenOwner::Admin { tenant_id, role, integration, token_id, label } => {
                AdminRole::parse(&role).map(|role| Caller::Admin { tenant_id, role, integration, token_id, label })
            }
            TokenOwner::Scim { .. } => None,
        }
    }

    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Admin { .. } => Err(ApiError::forbidden("only the operator may do this")),
        }
    }
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            // The scheme's name is case-insensitive (RFC 7235 §2.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty() && t.len() <= 1024)
            .ok_or_else(ApiError::unauthorized)?;
        if app.operator_hash.as_deref() == Some(hash(token).as_slice()) {
            return Ok(Caller::Operator);
        }
        app.state.store.token_owner(token).await?.and_then(Caller::of_token).ok_or_else(ApiError::unauthorized)
    }
}
