//! The boundary between the shared connector runtime and one app's API.
//!
//! An adapter only speaks its app's API: find an account by email, remove it, set its role,
//! add it. [`converge`] turns those into "make the app hold the desired role (or nothing)",
//! idempotently (invariant 3), so every adapter gets the same semantics and the runtime does
//! retries, classification and logging once.

use crate::error::AppError;
use std::future::Future;
use unseat_store::apply::Integration;

/// An account as the app holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAccount {
    /// The app's id for the account (a Graph business-user id, a SCIM id, ...).
    pub id: String,
    pub email: String,
    /// The role it holds, when the app reports one.
    pub role: Option<String>,
}

/// What a removal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// The app said the account did not exist (any more).
    AlreadyGone,
}

/// One app's API. Implementations hold their HTTP client; the integration (base URL,
/// settings, credential) comes with every call, so one adapter serves every tenant.
pub trait AppAdapter: Send + Sync + 'static {
    /// The app kind this adapter speaks to: the routing key of its queue and the `app` label
    /// of its metrics.
    fn app_kind(&self) -> &str;

    /// The account the app holds for `email` (compared case-insensitively), if any.
    fn find(
        &self,
        integration: &Integration,
        email: &str,
    ) -> impl Future<Output = Result<Option<AppAccount>, AppError>> + Send;

    /// Removes the account. An account that is already gone is [`Removal::AlreadyGone`], not
    /// an error.
    fn remove(
        &self,
        integration: &Integration,
        account: &AppAccount,
    ) -> impl Future<Output = Result<Removal, AppError>> + Send;

    /// Gives the account `role` in place of the one it holds.
    fn set_role(
        &self,
        integration: &Integration,
        account: &AppAccount,
        role: &str,
    ) -> impl Future<Output = Result<(), AppError>> + Send;

    /// Adds (invites) `email` with `role`.
    fn add(
        &self,
        integration: &Integration,
        email: &str,
        role: &str,
    ) -> impl Future<Output = Result<AppAccount, AppError>> + Send;
}

/// What converging changed in the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Converged {
    Removed,
    AlreadyRemoved,
    RoleChanged { from: Option<String>, to: String },
    AlreadyHeld { role: String },
    Added { role: String },
}

impl Converged {
    /// The task event kind that records this outcome.
    pub fn event_kind(&self) -> &'static str {
        match self {
            Converged::AlreadyRemoved => "already_removed",
            _ => "succeeded",
        }
    }

    /// One line for the log.
    pub fn describe(&self, app: &str) -> String {
        match self {
            Converged::Removed => format!("removed from {app}"),
            Converged::AlreadyRemoved => format!("already removed from {app}"),
            Converged::RoleChanged { from: Some(from), to } => format!("role changed from {from} to {to} in {app}"),
            Converged::RoleChanged { from: None, to } => format!("role set to {to} in {app}"),
            Converged::AlreadyHeld { role } => {
                format!("already holds {role} in {app}; nothing to change")
            }
            Converged::Added { role } => format!("added to {app} as {role}"),
        }
    }
}

/// Makes the app hold `desired_role` for `email` (None = not in the app at all).
pub async fn converge<A: AppAdapter>(
    adapter: &A,
    integration: &Integration,
    email: &str,
    desired_role: Option<&str>,
) -> Result<Converged, AppError> {
    let found = adapter.find(integration, email).await?;
    match (desired_role, found) {
        (None, None) => Ok(Converged::AlreadyRemoved),
        (None, Some(account)) => match adapter.remove(integration, &account).await? {
            Removal::Removed => Ok(Converged::Removed),
            Removal::AlreadyGone => Ok(Converged::AlreadyRemoved),
        },
        (Some(role), Some(account)) if account.role.as_deref() == Some(role) => {
            Ok(Converged::AlreadyHeld { role: role.to_string() })
        }
        (Some(role), Some(account)) => {
            adapter.set_role(integration, &account, role).await?;
            Ok(Converged::RoleChanged { from: account.role, to: role.to_string() })
        }
        (Some(role), None) => {
            adapter.add(integration, email, role).await?;
            Ok(Converged::Added { role: role.to_string() })
        }
    }
}
