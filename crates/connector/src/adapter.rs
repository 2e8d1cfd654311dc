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
use unseat_domain::SEAT;
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

/// An invitation the app holds for someone who has not joined yet (Meta's
/// BusinessRoleRequest). It is not an account: its id names the invitation, never an account,
/// and it holds no assets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    /// The role it offers, when the app reports one.
    pub role: Option<String>,
}

/// What a removal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The account is gone from the app.
    Removed,
    /// The app keeps the account, deactivated (SCIM `active: false`).
    Deactivated,
    /// The app deleted the account (SCIM `DELETE`).
    Deleted,
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
    /// `known_id` is tried first: an app's ids are stable, so an account the app still has
    /// under it is the person's, whatever email it shows now (the IdP may have changed the
    /// person's email since); only when the app says it does not exist is the email looked
    /// up. Never None while the app still holds an account under `known_id`: that would add a
    /// second one and leave the first in place.
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

    /// The open invitations for `email` (compared by [`same_email`]). Apps where an added
    /// person is an account at once have none.
    fn invitations(
        &self,
        _integration: &Integration,
        _email: &str,
    ) -> impl Future<Output = Result<Vec<Invitation>, AppError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Withdraws an invitation, so that it can no longer be accepted; one already gone is
    /// [`Removal::AlreadyGone`].
    fn revoke_invitation(
        &self,
        _integration: &Integration,
        _invitation: &Invitation,
    ) -> impl Future<Output = Result<Removal, AppError>> + Send {
        async { Ok(Removal::AlreadyGone) }
    }

    /// Makes an open invitation offer `role` instead.
    fn set_invitation_role(
        &self,
        _integration: &Integration,
        _invitation: &Invitation,
        _role: &str,
    ) -> impl Future<Output = Result<(), AppError>> + Send {
        async { Err(AppError::Protocol("this app has no invitations".into())) }
    }

    /// Whether an account (or invitation) the app reports with role `reported` holds
    /// `desired`. Exact by default; an app that reports roles more coarsely than it takes them
    /// says otherwise, so that a role it holds is not written again on every task.
    ///
    /// `last_applied` is the role unseat last made the app hold for this person, None when
    /// that is not known (see [`converge`]). An app that reports one role for several may need
    /// it to tell whether the one it reports is the one desired; most ignore it.
    fn role_held(
        &self,
        _integration: &Integration,
        reported: &str,
        desired: &str,
        _last_applied: Option<&str>,
    ) -> bool {
        reported == desired
    }

    /// Whether an asset role as the adapter read it (`reported`) is the `desired` one.
    fn asset_role_held(&self, reported: &str, desired: &str) -> bool {
        reported == desired
    }

    /// Makes the account (found by its remembered id, at another address) known by `email`,
    /// the person's address in the IdP now; true when the app took it. Apps whose accounts
    /// belong to the person (a Meta business user's address is their own) leave it: false.
    fn set_address(
        &self,
        _integration: &Integration,
        _account: &AppAccount,
        _email: &str,
    ) -> impl Future<Output = Result<bool, AppError>> + Send {
        async { Ok(false) }
    }
}

/// What converging changed in the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Converged {
    /// Taken out of the app (the business hub deletes the business user).
    Removed,
    /// The app keeps the account, deactivated.
    Deactivated,
    /// The app deleted the account.
    Deleted,
    AlreadyRemoved,
    /// An inactive account made active again, with `role`.
    Reactivated {
        role: String,
    },
    RoleChanged {
        from: Option<String>,
        to: String,
    },
    AlreadyHeld {
        role: String,
    },
    Added {
        role: String,
    },
    /// Invited with `role`; until the person accepts, the app holds an invitation, not an
    /// account, so the `assets_waiting` granted assets cannot be set yet.
    Invited {
        role: String,
        assets_waiting: usize,
    },
    /// An invitation sent earlier is still open; `changed` when it offered another role
    /// (`from`, when the app reported it) and was made to offer `role`.
    StillInvited {
        role: String,
        changed: bool,
        from: Option<String>,
        assets_waiting: usize,
    },
    /// Not an account (any more), but `count` open invitations were withdrawn, so none can be
    /// accepted later.
    InvitationRevoked {
        count: usize,
    },
}

impl Converged {
    /// The app holds an invitation, not an account: no assets can be set on it yet.
    pub fn is_invitation(&self) -> bool {
        matches!(self, Converged::Invited { .. } | Converged::StillInvited { .. })
    }
}

/// The result of [`converge`]: what changed, whether the assets were rewritten, and the
/// app's id for the account afterwards (None once it is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub converged: Converged,
    /// Some(n): the account's assets were set to the n desired ones.
    pub assets_set: Option<usize>,
    pub account_id: Option<String>,
    /// The address the account was known by before it was changed to the person's new one.
    pub address_from: Option<String>,
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
        // A seat (a seat-only integration's grant) is no role: the log never names it.
        let seat = |role: &str| role == SEAT;
        // Something else changed for an account that held its role already.
        let kept = self.assets_set.is_some() || self.address_from.is_some();
        let base = match &self.converged {
            Converged::Removed => format!("removed from {app}"),
            Converged::Deactivated => format!("deactivated in {app}"),
            Converged::Deleted => format!("deleted from {app}"),
            Converged::AlreadyRemoved => format!("already removed from {app}"),
            Converged::Reactivated { role } if seat(role) => format!("reactivated in {app}"),
            Converged::Reactivated { role } => format!("reactivated in {app} as {role}"),
            Converged::RoleChanged { to, .. } if seat(to) => format!("given a seat in {app}"),
            // The app reported the desired role, but it may stand for another one as well.
            Converged::RoleChanged { from: Some(from), to } if from == to => {
                format!("role set to {to} in {app}, which reports {to} for other roles too")
            }
            Converged::RoleChanged { from: Some(from), to } if !seat(from) => {
                format!("role changed from {from} to {to} in {app}")
            }
            Converged::RoleChanged { to, .. } => format!("role set to {to} in {app}"),
            Converged::AlreadyHeld { role } if seat(role) && kept => format!("keeps a seat in {app}"),
            Converged::AlreadyHeld { role } if seat(role) => format!("already has a seat in {app}; nothing to change"),
            Converged::AlreadyHeld { role } if kept => format!("keeps {role} in {app}"),
            Converged::AlreadyHeld { role } => format!("already holds {role} in {app}; nothing to change"),
            Converged::Added { role } if seat(role) => format!("added to {app}"),
            Converged::Added { role } => format!("added to {app} as {role}"),
            Converged::Invited { role, assets_waiting } if seat(role) => {
                format!("invited to {app}; the invitation is pending{}", waiting(*assets_waiting))
            }
            Converged::Invited { role, assets_waiting } => {
                format!("invited to {app} as {role}; the invitation is pending{}", waiting(*assets_waiting))
            }
            Converged::StillInvited { role, changed: true, from: Some(from), assets_waiting } if from == role => {
                format!(
                    "pending invitation to {app} set to {role}, which it reports for other roles too{}",
                    waiting(*assets_waiting)
                )
            }
            Converged::StillInvited { role, changed: true, from: Some(from), assets_waiting } => {
                format!("pending invitation to {app} changed from {from} to {role}{}", waiting(*assets_waiting))
            }
            Converged::StillInvited { role, changed: true, from: None, assets_waiting } => {
                format!("pending invitation to {app} set to {role}{}", waiting(*assets_waiting))
            }
            Converged::StillInvited { role, changed: false, assets_waiting, .. } => {
                format!("already invited to {app} as {role}; the invitation is pending{}", waiting(*assets_waiting))
            }
            Converged::InvitationRevoked { count: 1 } => format!("pending invitation to {app} revoked"),
            Converged::InvitationRevoked { count } => format!("{count} pending invitations to {app} revoked"),
        };
        let base = match &self.address_from {
            Some(old) => format!("{base}; its address changed from {old} in {app}"),
            None => base,
        };
        match self.assets_set {
            Some(0) => format!("{base}; taken off every asset"),
            Some(1) => format!("{base}; assets set to the 1 granted"),
            Some(n) => format!("{base}; assets set to the {n} granted"),
            None => base,
        }
    }
}

/// What the log says of granted assets an invitation cannot hold yet.
fn waiting(assets: usize) -> String {
    match assets {
        0 => String::new(),
        1 => "; the 1 granted asset is set at a task after it is accepted".into(),
        n => format!("; the {n} granted assets are set at a task after it is accepted"),
    }
}

/// Makes the app hold `desired_role` and `desired_assets` for `email` (role None = not in the
/// app at all). `known_id` is the account id remembered from an earlier task; `last_applied`
/// the role an earlier task made the app hold, None when it is not known (nothing applied
/// yet, the person removed, or a later attempt may have changed it without recording it).
/// Where the app's report cannot tell the desired role from another one, an unknown last role
/// means the role is written (idempotently), never taken as held.
///
/// Someone with an open invitation counts as present: the invitation is not sent again, only
/// its role is brought in line. An invitation is not an account, so its id is never
/// remembered as the account's and assets wait until the person has accepted.
pub async fn converge<A: AppAdapter>(
    adapter: &A,
    integration: &Integration,
    email: &str,
    known_id: Option<&str>,
    desired_role: Option<&str>,
    desired_assets: &Assets,
    last_applied: Option<&str>,
) -> Result<Outcome, AppError> {
    let Some(role) = desired_role else {
        return remove(adapter, integration, email, known_id).await;
    };
    let found = adapter.find(integration, email, known_id).await?;
    let pending = |converged| Outcome { converged, assets_set: None, account_id: None, address_from: None };
    let (converged, account) = match found {
        Some(account)
            if account.active
                && account.role.as_deref().is_some_and(|r| adapter.role_held(integration, r, role, last_applied)) =>
        {
            (Converged::AlreadyHeld { role: role.to_string() }, account)
        }
        Some(account) if !account.active => {
            adapter.set_role(integration, &account, role).await?;
            (Converged::Reactivated { role: role.to_string() }, account)
        }
        Some(account) => {
            adapter.set_role(integration, &account, role).await?;
            (Converged::RoleChanged { from: account.role.clone(), to: role.to_string() }, account)
        }
        None => {
            if let Some(invitation) = adapter.invitations(integration, email).await?.into_iter().next() {
                let changed = !invitation
                    .role
                    .as_deref()
                    .is_some_and(|offered| adapter.role_held(integration, offered, role, last_applied));
                if changed {
                    adapter.set_invitation_role(integration, &invitation, role).await?;
                }
                let (from, role, assets_waiting) = (invitation.role, role.to_string(), desired_assets.len());
                return Ok(pending(Converged::StillInvited { role, changed, from, assets_waiting }));
            }
            let account = adapter.add(integration, email, role).await?;
            if !adapter.invitations(integration, email).await?.is_empty() {
                let assets_waiting = desired_assets.len();
                return Ok(pending(Converged::Invited { role: role.to_string(), assets_waiting }));
            }
            (Converged::Added { role: role.to_string() }, account)
        }
    };
    let assets_differ = match &account.assets {
        Some(held) => {
            held.len() != desired_assets.len()
                || desired_assets
                    .iter()
                    .any(|(asset, want)| !held.get(asset).is_some_and(|have| adapter.asset_role_held(have, want)))
        }
        None => !desired_assets.is_empty(),
    };
    let assets_set = if assets_differ {
        adapter.set_assets(integration, &account, desired_assets).await?;
        Some(desired_assets.len())
    } else {
        None
    };
    // Found by its remembered id at the person's former address: the app learns the new one
    // (where it can), so that it shows it and finds the account by it.
    let moved = !account.email.trim().is_empty() && !same_email(&account.email, email);
    let address_from = if moved && adapter.set_address(integration, &account, email).await? {
        Some(account.email.trim().to_string())
    } else {
        None
    };
    Ok(Outcome { converged, assets_set, account_id: Some(account.id), address_from })
}

/// Removal: straight at the remembered id when there is one (one request in the common case);
/// when the app says that id is gone, the email is looked up once more, so an account the
/// app re-created under a new id is not missed. An account found inactive is the adapter's to
/// judge (deactivating it again changes nothing; deleting it does). Someone who is not (or no
/// longer) an account may still hold an open invitation, which they could accept later: it is
/// withdrawn.
async fn remove<A: AppAdapter>(
    adapter: &A,
    integration: &Integration,
    email: &str,
    known_id: Option<&str>,
) -> Result<Outcome, AppError> {
    let done = |converged| Outcome { converged, assets_set: None, account_id: None, address_from: None };
    let removed = |removal| match removal {
        Removal::Removed => Some(Converged::Removed),
        Removal::Deactivated => Some(Converged::Deactivated),
        Removal::Deleted => Some(Converged::Deleted),
        Removal::AlreadyGone => None,
    };
    if let Some(id) = known_id.filter(|id| !id.is_empty()) {
        if let Some(converged) = removed(adapter.remove(integration, &AppAccount::known(id, email)).await?) {
            return Ok(done(converged));
        }
    }
    if let Some(account) = adapter.find(integration, email, None).await? {
        if let Some(converged) = removed(adapter.remove(integration, &account).await?) {
            return Ok(done(converged));
        }
    }
    let count = withdraw_invitations(adapter, integration, email).await?;
    Ok(done(if count > 0 { Converged::InvitationRevoked { count } } else { Converged::AlreadyRemoved }))
}

/// Withdraws the open invitations to `email`; how many were withdrawn. Also used for the
/// address the app was converged at before the IdP changed a person's email: an invitation
/// sent there is not found under the new one, and could still be accepted.
pub async fn withdraw_invitations<A: AppAdapter>(
    adapter: &A,
    integration: &Integration,
    email: &str,
) -> Result<usize, AppError> {
    let mut count = 0;
    for invitation in adapter.invitations(integration, email).await? {
        if adapter.revoke_invitation(integration, &invitation).await? == Removal::Removed {
            count += 1;
        }
    }
    Ok(count)
}

/// Whether two addresses name the same account: equal, surrounding space aside, ignoring the
/// case of every letter (`Émile@Corp.example` is `émile@corp.example`), as the directory
/// compares them (`unseat_domain::text::fold`).
pub fn same_email(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    a.eq_ignore_ascii_case(b) || fold(a) == fold(b)
}
