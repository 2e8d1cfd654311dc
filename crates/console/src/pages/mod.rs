//! The console's web pages under `/console`: sign-in, the tenant's Automation Log, a job's
//! tasks, an integration's Activity, a task's detail with re-drive, and the server-sent events
//! that keep open pages current. Server-rendered HTML that works without JavaScript; the one
//! script adds live updates and local times.
//!
//! Sign-in takes an admin token (the same tokens the admin API takes) and opens a session of
//! [`SESSION_SECONDS`] kept in the store (`console_sessions`): the HttpOnly, SameSite=Strict
//! cookie scoped to `/console` holds the session's random value, never the token, and the
//! session ends at its expiry, at sign-out, and when its token is revoked. Every page turns the
//! session into the [`Caller`] its token would be in the admin API, so the pages can never show
//! more than the API would: another tenant's page is a 403. Every form that changes something
//! carries a CSRF token derived from the session (sign-in: a random value also set as a
//! cookie), and the server refuses a POST whose `Origin` is another site.
//!
//! Handlers return `Result<Response, Response>`: the error side is a finished page (a 403 that
//! explains itself, the sign-in redirect), which is larger than clippy likes but is what is sent.
#![allow(clippy::result_large_err)]

mod html;
mod live;
mod log;
mod task;

use crate::auth::{Caller, Need};
use crate::error::{ApiError, Refusal};
use crate::App;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use html::{attr, esc, page, problem, Shell};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// The session cookie: the session's random value (not the admin token), readable by the
/// server only.
const SESSION_COOKIE: &str = "unseat_console";
/// The sign-in form's CSRF cookie (there is no session yet to derive one from).
const SIGN_IN_CSRF_COOKIE: &str = "unseat_console_csrf";
/// How long a sign-in lasts.
const SESSION_SECONDS: u32 = 8 * 3600;

const CSS: &str = include_str!("../../assets/console.css");
const JS: &str = include_str!("../../assets/console.js");

/// The page routes, merged into the console's router (no fallback of their own).
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/assets/console.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route("/console/assets/console.js", get(|| async { asset("text/javascript; charset=utf-8", JS) }))
        .route("/console/sign-in", get(sign_in_form).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/tenants/{tenant}/log", get(log::automation_log))
        .route("/console/tenants/{tenant}/jobs/{job}", get(log::job))
        .route("/console/tenants/{tenant}/integrations/{integration}/activity", get(log::activity))
        .route("/console/tenants/{tenant}/tasks/{task}", get(task::detail))
        .route("/console/tenants/{tenant}/tasks/{task}/redrive", post(task::redrive))
        .route("/console/tenants/{tenant}/live", get(live::events))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(CONTENT_TYPE, content_type), (axum::http::header::CACHE_CONTROL, "no-cache")], body).into_response()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 1024)
}

/// `; Secure` when the request reached us over HTTPS (directly behind a proxy that says so).
fn secure_flag(headers: &HeaderMap) -> &'static str {
    let https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "https");
    if https {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookie(name: &str, value: &str, max_age: u32, headers: &HeaderMap) -> HeaderValue {
    let v =
        format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{}", secure_flag(headers));
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("unseat_console=; Path=/console; Max-Age=0"))
}

/// The CSRF token of a session: a hash of its cookie's value, so a page can embed it and a
/// cross-site form (which can read neither the cookie nor the page) cannot produce it.
fn csrf_for(session: &str) -> String {
    unseat_store::tokens::hash(&format!("unseat-console-csrf:{session}")).iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison, so a CSRF guess learns nothing from timing.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when the request's `Origin` (if the browser sent one) is this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

/// A signed-in admin (or the operator) looking at the pages.
pub(crate) struct Session {
    pub caller: Caller,
    pub csrf: String,
    /// The cookie's value, for a long-lived answer (the live stream) to look again whether
    /// the session is still open.
    pub key: String,
}

/// The caller a session's cookie stands for: None when it names no open session (expired,
/// signed out, its token revoked, or the operator token changed since).
pub(crate) async fn session_caller(app: &App, key: &str) -> Result<Option<Caller>, ApiError> {
    use unseat_store::tokens::SessionOwner;
    Ok(match app.state.store.session_owner(key).await? {
        Some(SessionOwner::Operator { operator_hash }) => {
            (app.operator_hash.as_deref() == Some(operator_hash.as_slice())).then_some(Caller::Operator)
        }
        Some(SessionOwner::Admin(owner)) => Caller::of_token(owner),
        None => None,
    })
}

impl Session {
    /// Checks the session against the tenant in the path, as the API does: another tenant's
    /// admin gets a 403 page, an unknown tenant a 404.
    pub async fn tenant(&self, app: &App, raw: &str, need: Need) -> Result<Uuid, Response> {
        crate::api::authorize(app, &self.caller, raw, need).await.map_err(|e| refusal(&e))
    }
}

/// Turns an API refusal into a page that says what happened and what to do.
pub(crate) fn refusal(e: &ApiError) -> Response {
    match e.status {
        StatusCode::FORBIDDEN if e.refusal == Some(Refusal::OtherTenant) => problem(
            StatusCode::FORBIDDEN,
            "Not your tenant",
            &e.message,
            r#"You are signed in with an admin token of another tenant. <a href="/console/sign-in">Sign in</a> with an admin token of this tenant."#,
        ),
        StatusCode::FORBIDDEN => problem(
            StatusCode::FORBIDDEN,
            "Not allowed for your role",
            &e.message,
            r#"Your admin token's role may read this tenant but not do this. Ask an owner or admin of this tenant, or <a href="/console/sign-in">sign in</a> with an admin token of a role that may."#,
        ),
        StatusCode::NOT_FOUND => problem(
            StatusCode::NOT_FOUND,
            "Not found",
            &e.message,
            r#"Check the link, or go back to the <a href="/console">Automation Log</a>."#,
        ),
        StatusCode::BAD_REQUEST => problem(
            StatusCode::BAD_REQUEST,
            "That did not work",
            &e.message,
            "Fix the value and try again; clearing the filters always works.",
        ),
        status => problem(status, "Something went wrong", &e.message, "Try again in a moment."),
    }
}

/// The parameters of a page's path, read as the admin API reads its own ([`crate::api::Path`]),
/// with a path the page cannot read (a segment that is not UTF-8, say) answered by the page
/// that explains a mistake rather than axum's plain text.
pub(crate) struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match crate::api::Path::<T>::from_request_parts(parts, state).await {
            Ok(crate::api::Path(value)) => Ok(Path(value)),
            Err(e) => Err(refusal(&e)),
        }
    }
}

fn to_sign_in(parts: &Parts) -> Response {
    let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/console");
    let location = format!("/console/sign-in{}", html::query(&[("next", next)]));
    (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
}

impl FromRequestParts<Arc<App>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let Some(key) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_sign_in(parts));
        };
        match session_caller(app, &key).await {
            Ok(Some(caller)) => Ok(Session { caller, csrf: csrf_for(&key), key }),
            Ok(None) => Err(to_sign_in(parts)),
            Err(e) => Err(refusal(&e)),
        }
    }
}

/// `/console`: the signed-in admin's Automation Log, or the sign-in page.
async fn home(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(key) = cookie(&headers, SESSION_COOKIE) else {
        return redirect("/console/sign-in");
    };
    match session_caller(&app, &key).await {
        Ok(Some(Caller::Admin { tenant_id, .. })) => redirect(&format!("/console/tenants/{tenant_id}/log")),
        _ => redirect("/console/sign-in"),
    }
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_string())]).into_response()
}

/// Only local paths under `/console` may be a sign-in's destination (no open redirect).
fn safe_next(next: Option<&String>) -> Option<String> {
    next.filter(|n| n.starts_with("/console/") && !n.starts_with("//") && !n.contains('\\') && !n.contains("://"))
        .cloned()
}

fn sign_in_page(csrf: &str, next: Option<&str>, error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| format!(r#"<p class="problem" role="alert">{}</p>"#, esc(e)));
    let next = next.map_or_else(String::new, |n| format!(r#"<input type="hidden" name="next" value="{}">"#, attr(n)));
    let body = format!(
        r#"{error}
<form method="post" action="/console/sign-in" class="sign-in">
<input type="hidden" name="csrf" value="{csrf}">{next}
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="off" required spellcheck="false" placeholder="adm_…">
<button type="submit">Sign in</button>
</form>
<p class="hint">Use an admin token of your tenant (it starts with <code>adm_</code>): the one returned when the tenant was
created, or one minted with <code>POST /api/v1/tenants/{{tenant}}/admin-tokens</code>. Signing in opens a session of
8 hours, which ends when you sign out or the token is revoked; its cookie, which scripts cannot read, holds the
session, not the token.</p>"#,
        csrf = attr(csrf)
    );
    Shell { title: "Sign in", nav: Vec::new(), live: None, csrf: None }.render(&body)
}

async fn sign_in_form(headers: HeaderMap, Query(params): Query<HashMap<String, String>>) -> Response {
    let csrf = Uuid::new_v4().simple().to_string();
    let next = safe_next(params.get("next"));
    let mut response = page(StatusCode::OK, sign_in_page(&csrf, next.as_deref(), None));
    response.headers_mut().append(SET_COOKIE, set_cookie(SIGN_IN_CSRF_COOKIE, &csrf, 3600, &headers));
    response
}

#[derive(Deserialize)]
pub(crate) struct SignIn {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

async fn sign_in(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "the form was not readable",
            r#"<a href="/console/sign-in">Try again</a>."#,
        );
    };
    let expected = cookie(&headers, SIGN_IN_CSRF_COOKIE).unwrap_or_default();
    if !same_origin(&headers) || expected.is_empty() || !same(&expected, &form.csrf) {
        return problem(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "the sign-in form expired or came from another site",
            r#"<a href="/console/sign-in">Open the sign-in page</a> and try again."#,
        );
    }
    let next = safe_next(form.next.as_ref());
    let retry = |message: &str| {
        let csrf = Uuid::new_v4().simple().to_string();
        let mut response = page(StatusCode::UNAUTHORIZED, sign_in_page(&csrf, next.as_deref(), Some(message)));
        response.headers_mut().append(SET_COOKIE, set_cookie(SIGN_IN_CSRF_COOKIE, &csrf, 3600, &headers));
        response
    };
    let token = form.token.trim();
    if token.is_empty() || token.len() > 1024 || !token.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    {
        return retry("That is not an admin token.");
    }
    let lifetime = std::time::Duration::from_secs(u64::from(SESSION_SECONDS));
    let hashed = unseat_store::tokens::hash(token);
    let (destination, session) = if app.operator_hash.as_deref() == Some(hashed.as_slice()) {
        let Some(n) = next.clone() else {
            return retry(
                "The operator token has no tenant of its own: open a tenant's page link first, then sign in.",
            );
        };
        (n, app.state.store.start_session(None, Some(&hashed), lifetime).await)
    } else {
        match app.state.store.token_owner(token).await {
            Ok(Some(unseat_store::tokens::TokenOwner::Admin { tenant_id, token_id, .. })) => (
                next.clone().unwrap_or_else(|| format!("/console/tenants/{tenant_id}/log")),
                app.state.store.start_session(Some(token_id), None, lifetime).await,
            ),
            Ok(_) => return retry("That token is not a valid admin token."),
            Err(e) => return refusal(&ApiError::from(e)),
        }
    };
    let session = match session {
        Ok(session) => session,
        Err(e) => return refusal(&ApiError::from(e)),
    };
    tracing::info!("console sign-in");
    let mut response = redirect(&destination);
    response.headers_mut().append(SET_COOKIE, set_cookie(SESSION_COOKIE, &session, SESSION_SECONDS, &headers));
    response.headers_mut().append(SET_COOKIE, set_cookie(SIGN_IN_CSRF_COOKIE, "", 0, &headers));
    response
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let key = cookie(&headers, SESSION_COOKIE).unwrap_or_default();
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if key.is_empty() || !same_origin(&headers) || !same(&csrf, &csrf_for(&key)) {
        return problem(
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            "the form came from another page or site",
            r#"<a href="/console">Back to the console</a>."#,
        );
    }
    // Ended in the store too: a copy of the cookie opens nothing afterwards.
    if let Err(e) = app.state.store.end_session(&key).await {
        return refusal(&ApiError::from(e));
    }
    let mut response = redirect("/console/sign-in");
    response.headers_mut().append(SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0, &headers));
    response
}

/// Checks a signed-in form post: same origin and the session's CSRF token.
pub(crate) fn check_form(session: &Session, headers: &HeaderMap, csrf: &str) -> Result<(), Response> {
    if same_origin(headers) && same(csrf, &session.csrf) {
        Ok(())
    } else {
        Err(problem(
            StatusCode::FORBIDDEN,
            "Refused",
            "the form came from another page or site",
            "Go back, reload the page and try again.",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_stay_in_the_console() {
        let ok = |s: &str| safe_next(Some(&s.to_string()));
        assert_eq!(ok("/console/tenants/x/log?status=failed").as_deref(), Some("/console/tenants/x/log?status=failed"));
        for bad in
            ["https://evil.example/", "//evil.example", "/api/v1/tenants", "/console\\evil", "/console/x?u=https://e"]
        {
            assert_eq!(ok(bad), None, "{bad}");
        }
    }

    #[test]
    fn origin_and_cookies() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&h));
        h.insert(COOKIE, HeaderValue::from_static("a=1; unseat_console=adm_x; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("adm_x"));
        assert_eq!(cookie(&h, "missing"), None);
        assert!(same(&csrf_for("t"), &csrf_for("t")));
        assert!(!same(&csrf_for("t"), &csrf_for("u")));
    }
}
