//! Emulators of the app APIs unseat's connectors speak to, with fault injection: the Meta
//! Business Manager Graph API (the "business hub") and a SCIM 2.0 app.
//!
//! It exists so that tests, the demo and the benchmarks exercise the real connector over real
//! HTTP without a Meta account: `unseat emulate` serves [`router`], and tests start it on a
//! loopback port with [`serve_local`]. Two surfaces:
//!
//! - the **Graph API** under `/v25.0/` (business users: list with cursor pagination, invite,
//!   read, change role, remove; pending invitations: `pending_users`, change their role,
//!   revoke; assets: ad accounts and pages with `assigned_users`, each kind taking Meta's task
//!   names, and the users' `assigned_ad_accounts` / `assigned_pages`), answering with Meta's
//!   shapes, error codes (an unknown id, on a node or any of its edges, is code 100 subcode
//!   33) and usage headers; every list edge pages as Graph does (`limit`, default 25 and at
//!   most 100; `after` / `before` cursors that stop working once their item is deleted;
//!   `paging.next` / `previous` while there is more; `summary=total_count`);
//! - a **SCIM 2.0 app** under `/scim/v2/` (Users);
//! - a **control plane** under `/_emulator/` (JSON, no auth) to seed users, assets and SCIM
//!   users, require tokens, inject faults (error rates per status, throttling with
//!   `Retry-After`, latency distributions, outage windows, applied-but-lost answers, empty
//!   pages that still have a `next`), switch on Meta's behaviours the demo does without
//!   ([`Settings`]: invitations that stay pending until accepted, `role` reporting base roles
//!   only; for the SCIM app, real apps' ways: filters ignored, attribute names in lower case,
//!   deactivations that do not take, ids a URL must escape, strict parsing), accept
//!   invitations, read the real state and the log of app requests, and reset everything.
//!
//! State is in memory behind a std mutex that is never held across an `.await`.

mod app;
mod control;
mod scim;
mod state;

use axum::Router;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use scim::ScimUser;
pub use state::{
    base_role, valid_task, Asset, BusinessUser, EmulatorError, FaultRule, Invitation, RequestRecord, Settings,
    AD_ACCOUNT_TASKS, BASE_ROLES, PAGE_TASKS, ROLES,
};

/// The Graph API version prefix the emulator serves (`/v25.0/...`).
pub const API_VERSION: &str = "v25.0";

/// The emulated business hub. Cloning is cheap and every clone shares the same state, so a
/// test can keep one clone to seed and inspect while [`router`] serves another.
#[derive(Clone, Default)]
pub struct Emulator {
    inner: Arc<Mutex<state::State>>,
}

impl Emulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the state. A panic elsewhere cannot poison the emulator for good: the state is
    /// plain data and every mutation keeps it consistent before returning.
    fn lock(&self) -> MutexGuard<'_, state::State> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a business user directly (what the control plane's seed endpoint does).
    pub fn seed_user(
        &self,
        business_id: &str,
        email: &str,
        role: &str,
        name: Option<&str>,
    ) -> Result<BusinessUser, EmulatorError> {
        self.lock().add_user(business_id, email, role, name)
    }

    /// Adds a pending invitation directly (someone invited earlier who has not accepted).
    pub fn seed_invitation(&self, business_id: &str, email: &str, role: &str) -> Result<Invitation, EmulatorError> {
        self.lock().add_invitation(business_id, email, role)
    }

    /// The pending invitations of a business, oldest first.
    pub fn invitations(&self, business_id: &str) -> Vec<Invitation> {
        self.lock().invitations_of(business_id)
    }

    /// The invited person accepts: they become a business user with the invitation's role.
    pub fn accept_invitation(&self, invitation_id: &str) -> Result<BusinessUser, EmulatorError> {
        self.lock().accept(invitation_id)
    }

    pub fn settings(&self) -> Settings {
        self.lock().settings.clone()
    }

    pub fn set_settings(&self, settings: Settings) {
        self.lock().settings = settings;
    }

    /// The business users the hub really holds, in creation order.
    pub fn users(&self, business_id: &str) -> Vec<BusinessUser> {
        self.lock().users_of(business_id)
    }

    /// Makes the app API accept only `token` for this business.
    pub fn require_token(&self, business_id: &str, token: &str) -> Result<(), EmulatorError> {
        self.lock().require_token(business_id, token)
    }

    /// Appends a fault rule; rules are checked in order for every app request.
    pub fn add_fault(&self, rule: FaultRule) -> Result<(), EmulatorError> {
        self.lock().add_fault(rule)
    }

    /// Adds an asset (`ad_account` or `page`) to a business.
    pub fn seed_asset(&self, business_id: &str, kind: &str, name: &str) -> Result<Asset, EmulatorError> {
        self.lock().add_asset(business_id, kind, name)
    }

    /// Gives business user `user_id` these tasks on `asset`.
    pub fn assign_asset(&self, asset: &str, user_id: &str, tasks: &[&str]) -> Result<(), EmulatorError> {
        self.lock().assign(asset, user_id, tasks.iter().map(|t| t.to_string()).collect())
    }

    /// The assets of a business with who holds which tasks.
    pub fn assets(&self, business_id: &str) -> Vec<Asset> {
        self.lock().assets_of(business_id)
    }

    /// Adds a user to the SCIM app.
    pub fn seed_scim_user(&self, user_name: &str, role: Option<&str>) -> Result<ScimUser, EmulatorError> {
        let user = ScimUser {
            id: String::new(),
            user_name: user_name.to_string(),
            active: true,
            roles: role.map(|r| vec![r.to_string()]).unwrap_or_default(),
            external_id: None,
        };
        scim::seed(&mut self.lock(), &user)
    }

    /// Adds a user to the SCIM app as given (inactive, with an externalId, ...); its `id` is
    /// the app's to choose and ignored.
    pub fn seed_scim_account(&self, user: &ScimUser) -> Result<ScimUser, EmulatorError> {
        scim::seed(&mut self.lock(), user)
    }

    /// The SCIM app's users.
    pub fn scim_users(&self) -> Vec<ScimUser> {
        self.lock().scim_users.iter().map(|(id, u)| ScimUser::from_resource(id, u)).collect()
    }

    /// Makes the SCIM app accept only this bearer token.
    pub fn require_scim_token(&self, token: &str) {
        self.lock().scim_token = Some(token.to_string());
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every app request seen since the last clear, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Forgets businesses, users, invitations, settings, tokens, faults and the request log.
    pub fn reset(&self) {
        *self.lock() = state::State::default();
    }
}

/// The emulator's HTTP surface: the app API under `/v25.0/` and the control plane under
/// `/_emulator/`.
pub fn router(emu: Emulator) -> Router {
    Router::new()
        .nest("/_emulator", control::router())
        .route("/scim/v2/{*rest}", axum::routing::any(scim::handle))
        .fallback(app::handle)
        .with_state(emu)
}

/// Serves the emulator on an ephemeral loopback port in a background task and returns its
/// base URL (`http://127.0.0.1:PORT`). For tests, the demo and benchmarks; the server lives
/// as long as the tokio runtime.
pub async fn serve_local(emu: Emulator) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let app = router(emu);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(error = %error, "emulator server stopped");
        }
    });
    Ok(format!("http://{addr}"))
}

/// Longest injected latency, so that a typo in a fault rule cannot hang a test for hours.
const MAX_LATENCY: Duration = Duration::from_secs(60);
