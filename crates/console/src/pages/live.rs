//! Live updates: a server-sent event stream per open page that says "the log changed" within
//! [`POLL`] of a job appearing or a task moving. The page then re-reads itself (same URL, so the
//! same filters and cursor) and swaps the changed regions in place, which keeps the scroll
//! position.
//!
//! The stream polls a cheap fingerprint of the tenant's recent log activity
//! ([`unseat_store::Store::log_fingerprint`], on the `tasks_updated` index) rather than listening
//! for notifications, so it needs nothing from the writers. Each event's id is that fingerprint:
//! a page passes the one it was rendered with (`since`), and a reconnecting browser sends the
//! last one it saw (`Last-Event-ID`), so a change in between is never missed.
//!
//! A stream ends after [`STREAM_LIFETIME`] and the browser reconnects at once: that bounds how
//! long an open page can hold a connection, and so how long it can delay a graceful shutdown.

use super::{Path, Session};
use crate::auth::Need;
use crate::App;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use unseat_store::Store;
use uuid::Uuid;

/// How often an open page's stream looks for changes.
pub const POLL: Duration = Duration::from_millis(400);
/// How far back the fingerprint looks for task changes (covers rows committed late).
pub const LOOKBACK: Duration = Duration::from_secs(15);
/// How long one stream lives before the browser reconnects.
const STREAM_LIFETIME: Duration = Duration::from_secs(25);
/// How often an open stream checks that its session is still open: the stream of a session
/// signed out, expired or whose token was revoked ends within this (its reconnect is then sent
/// to sign in).
const SESSION_RECHECK: Duration = Duration::from_secs(2);

/// The fingerprint a page is rendered with; empty when the store could not say (the page then
/// refreshes on the stream's first answer, which is harmless).
pub(crate) async fn fingerprint(store: &Store, tenant: Uuid) -> String {
    store.log_fingerprint(tenant, LOOKBACK).await.unwrap_or_default()
}

/// `GET /console/tenants/{tenant}/live`: `change` events while the page is open.
pub(crate) async fn events(
    session: Session,
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let tenant = session.tenant(&app, &tenant, Need::Read).await?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| params.get("since").cloned())
        .filter(|s| !s.is_empty() && s.len() <= 200);
    let stream = changes(Arc::clone(&app), tenant, last_seen, session.key);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))).into_response())
}

struct Poll {
    app: Arc<App>,
    tenant: Uuid,
    last: Option<String>,
    ends: Instant,
    first: bool,
    /// The session's cookie value, rechecked every [`SESSION_RECHECK`].
    session: String,
    recheck: Instant,
}

fn changes(
    app: Arc<App>,
    tenant: Uuid,
    last: Option<String>,
    session: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let now = Instant::now();
    let state =
        Poll { app, tenant, last, ends: now + STREAM_LIFETIME, first: true, session, recheck: now + SESSION_RECHECK };
    stream::unfold(state, |mut s| async move {
        loop {
            if s.first {
                s.first = false;
                // Tell the browser to reconnect quickly when the stream ends.
                return Some((Ok(Event::default().retry(Duration::from_millis(300)).comment("live")), s));
            }
            if Instant::now() >= s.ends {
                return None;
            }
            if Instant::now() >= s.recheck {
                s.recheck = Instant::now() + SESSION_RECHECK;
                // Ended: the stream ends (a failed look keeps it, as a failed probe does).
                if let Ok(None) = super::session_caller(&s.app, &s.session).await {
                    return None;
                }
            }
            match s.app.state.store.log_fingerprint(s.tenant, LOOKBACK).await {
                Ok(now) => {
                    let changed = s.last.as_deref().is_some_and(|last| last != now);
                    let baseline = s.last.is_none();
                    s.last = Some(now.clone());
                    if changed {
                        return Some((Ok(Event::default().event("change").id(now).data("log changed")), s));
                    }
                    if baseline {
                        // Give the browser an id to send back if it reconnects.
                        return Some((Ok(Event::default().event("ready").id(now).data("")), s));
                    }
                }
                Err(error) => tracing::warn!(%error, "live update probe failed; retrying"),
            }
            tokio::time::sleep(POLL).await;
        }
    })
}
