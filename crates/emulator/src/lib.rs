//! An emulator of the Meta Business Manager Graph API (the "business hub" unseat's
//! business-hub connector speaks to), with fault injection.
//!
//! It exists so that tests, the demo and the benchmarks exercise the real connector over real
//! HTTP without a Meta account: `unseat emulate` serves [`router`], and tests start it on a
//! loopback port with [`serve_local`]. Two surfaces:
//!
//! - the **app API** under `/v25.0/` (business users: list with cursor pagination, invite,
//!   read, change role, remove), answering with Meta's shapes, error codes and usage headers;
//! - a **control plane** under `/_emulator/` (JSON, no auth) to seed users, require a token,
//!   inject faults (status codes, throttling with `Retry-After`, latency), read the real state
//!   and the log of app requests, and reset everything.
//!
//! State is in memory behind a std mutex that is never held across an `.await`.

mod app;
mod control;
mod state;

use axum::Router;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use state::{BusinessUser, EmulatorError, FaultRule, RequestRecord, ROLES};

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

    /// Forgets businesses, users, tokens, faults and the request log.
    pub fn reset(&self) {
        *self.lock() = state::State::default();
    }
}

/// The emulator's HTTP surface: the app API under `/v25.0/` and the control plane under
/// `/_emulator/`.
pub fn router(emu: Emulator) -> Router {
    Router::new().nest("/_emulator", control::router()).fallback(app::handle).with_state(emu)
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
