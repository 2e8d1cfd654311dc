//! The boundary between the shared connector runtime and one app's API.
//!
//! An adapter only speaks its app's API: find an account (by a remembered id, else by email),
//! remove it, set its role, set its assets, add it. [`converge`] turns those into "make the
//! app hold the desired role and assets (or nothing)", idempotently (invariant 3), so every
//! adapter gets the same semantics and the runtime does rate limits, retries, classification
//! and logging once.

use crate::error::AppError;
use crate::http::AppHttp;
use std::collections::BTreeMap;
use std::future::Future;
use unseat_domain::text::fold;
use unseat_store::apply::Integration;

/// Asset id → asset role.
pub type Assets = BTreeMap<String, String>;

/// An account as the app holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAccount {
    /// The app's id for the account (a Graph business-user id, a SCIM id, ...).
    pub id: String,
    pub email: String,
    /// The role it holds, when the app reports one.
    pub role: Option<String>,
    /// The assets it holds, when the adapter read them (None: not read, or no assets).
    pub assets: Option<Assets>,
    /// False for an account the app keeps but has deactivated (SCIM `active: false`).
    pub active: bool,
}

impl AppAccount {
    /// An account known only by its id (remembered from an earlier task).
    pub fn known(id: &str, email: &str) -> Self {
        Self { id: id.to_string(), email: email.to_string(), role: None, assets: None, active: true }
    }
}

/// What a removal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// The app said the account did not exist (any more).
    AlreadyGone,
}

/// One app's API. Implementations hold the shared [`AppHttp`]; the integration (base URL,
/// settings, credential) comes with every call, so one adapter serves every tenant.
pub trait AppAdapter: Send + Sync + 'static {
    /// The app kind this adapter speaks to: the routing key of its queue and the `app` label
    /// of its metrics.
    fn app_kind(&self) -> &str;

    /// The HTTP client, with the rate limits the runtime consults before starting a task.
    fn http(&self) -> &AppHttp;

    /// The account the app holds for `email` (compared by [`same_email`]), if any. A
    /// `known_id` is tried first; when the app says it does not exist (or it belongs to
    /// someone else), the adapter looks the email up instead.
    fn find(
        &self,
        integration: &Integration,
        email: &str,
        known_id: Option<&str>,
    ) -> impl Future<Output = Result<Option<AppAccount>, AppError>> + Send;

    /// Removes the account (taking it off every asset first, where the app has assets). An
    /// account that is already gone is [`Removal::AlreadyGone`], not an error.
    fn remove(
        &self,
        integration: &Integration,
        account: &AppAccount,
    ) -> impl Future<Output = Result<Removal, AppError>> + Send;

    /// Gives the account `role` in place of the one it holds (and reactivates it).
    fn set_role(
        &self,
        integration: &Integration,
        account: &AppAccount,
        role: &str,
    ) -> impl Future<Output = Result<(), AppError>> + Send;

    /// Makes the account hold exactly `desired` (asset id → asset role).
    fn set_assets(
        &self,
        integration: &Integration,
        account: &AppAccount,
        desired: &Assets,
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

/// The result of [`converge`]: what changed, whether the assets were rewritten, and the
/// app's id for the account afterwards (None once it is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub converged: Converged,
    /// Some(n): the account's assets were set to the n desired ones.
    pub assets_set: Option<usize>,
    pub account_id: Option<String>,
}

impl Outcome {
    /// The task event kind that records this outcome.
    pub fn event_kind(&self) -> &'static str {
        match self.converged {
            Converged::AlreadyRemoved => "already_removed",
            _ => "succeeded",
        }
    }

    /// One line for the log.
    pub fn describe(&self, app: &str) -> String {
        let base = match &self.converged {
            Converged::Removed => format!("removed from {app}"),
            Converged::AlreadyRemoved => format!("already removed from {app}"),
            Converged::RoleChanged { from: Some(from), to } => format!("role changed from {from} to {to} in {app}"),
            Converged::RoleChanged { from: None, to } => format!("role set to {to} in {app}"),
            Converged::AlreadyHeld { role } if self.assets_set.is_some() => format!("keeps {role} in {app}"),
            Converged::AlreadyHeld { role } => format!("already holds {role} in {app}; nothing to change"),
            Converged::Added { role } => format!("added to {app} as {role}"),
        };
        match self.assets_set {
            Some(0) => format!("{base}; taken off every asset"),
            Some(1) => format!("{base}; assets set to the 1 granted"),
            Some(n) => format!("{base}; assets set to the {n} granted"),
            None => base,
        }
    }
}

/// Makes the app hold `desired_role` and `desired_assets` for `email` (role None = not in the
/// app at all). `known_id` is the account id remembered from an earlier task.
pub async fn converge<A: AppAdapter>(
    adapter: &A,
    integration: &Integration,
    email: &str,
    known_id: Option<&str>,
    desired_role: Option<&str>,
    desired_assets: &Assets,
) -> Result<Outcome, AppError> {
    let Some(role) = desired_role else {
        return remove(adapter, integration, email, known_id).await;
    };
    let found = adapter.find(integration, email, known_id).await?;
    let (converged, account) = match found {
        Some(account) if account.active && account.role.as_deref() == Some(role) => {
            (Converged::AlreadyHeld { role: role.to_string() }, account)
        }
        Some(account) => {
            adapter.set_role(integration, &account, role).await?;
            (Converged::RoleChanged { from: account.role.clone(), to: role.to_string() }, account)
        }
        None => {
            let account = adapter.add(integration, email, role).await?;
            (Converged::Added { role: role.to_string() }, account)
        }
    };
    let assets_differ = match &account.assets {
        Some(held) => held != desired_assets,
        None => !desired_assets.is_empty(),
    };
    let assets_set = if assets_differ {
        adapter.set_assets(integration, &account, desired_assets).await?;
        Some(desired_assets.len())
    } else {
        None
    };
    Ok(Outcome { converged, assets_set, account_id: Some(account.id) })
}

/// Removal: straight at the remembered id when there is one (one request in the common case);
/// when the app says that id is gone, the email is looked up once more, so an account the
/// app re-created under a new id is not missed.
async fn remove<A: AppAdapter>(
    adapter: &A,
    integration: &Integration,
    email: &str,
    known_id: Option<&str>,
) -> Result<Outcome, AppError> {
    let done = |converged| Outcome { converged, assets_set: None, account_id: None };
    if let Some(id) = known_id.filter(|id| !id.is_empty()) {
        if adapter.remove(integration, &AppAccount::known(id, email)).await? == Removal::Removed {
            return Ok(done(Converged::Removed));
        }
    }
    match adapter.find(integration, email, None).await? {
        None => Ok(done(Converged::AlreadyRemoved)),
        Some(account) if !account.active => Ok(done(Converged::AlreadyRemoved)),
        Some(account) => match adapter.remove(integration, &account).await? {
            Removal::Removed => Ok(done(Converged::Removed)),
            Removal::AlreadyGone => Ok(done(Converged::AlreadyRemoved)),
        },
    }
}

/// Whether two addresses name the same account: equal, surrounding space aside, ignoring the
/// case of every letter (`Émile@Corp.example` is `émile@corp.example`), as the directory
/// compares them (`unseat_domain::text::fold`).
pub fn same_email(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    a.eq_ignore_ascii_case(b) || fold(a) == fold(b)
}
