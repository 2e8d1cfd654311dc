//! unseat's console: the admin API under `/api/v1` (tenants, tokens, integrations, grants,
//! directory reads, and the Automation Log / Activity reads), described by the OpenAPI document
//! at `/api/v1/openapi.json`.
//!
//! It reads and writes through `unseat-store`. A grant change and the removal of an asset are
//! the admin actions that alter access: each writes its outbox row (a `DirectoryChanged` for the
//! users it may touch) in the same transaction, and the relay and resolver (`unseat-relay`,
//! `unseat-resolver`) take it from there. Every call is authenticated (see `auth.rs`) and checked
//! against the tenant it names (invariant 5).

mod api;

pub use api::redrive::message as redrive_message;
mod auth;
mod error;
mod pages;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, patch, post, put, MethodRouter};
use axum::Router;
use std::sync::Arc;
use unseat_store::Store;
use unseat_telemetry::{Metrics, OutcomeLabels};

/// The OpenAPI 3.1 document of the admin API, served as is.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Largest request body the admin API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the console needs to run.
#[derive(Clone)]
pub struct ConsoleState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// The operator's token (from configuration): may create tenants and act on every tenant.
    /// None disables the operator.
    pub operator_token: Option<String>,
    /// The exchange grant changes are announced on (`Topology::directory_exchange`).
    pub directory_exchange: String,
    /// How a submitted app credential is stored: encrypted under the configured key, or (no
    /// key) refused unless plaintext is explicitly allowed.
    pub credentials: unseat_store::credentials::Sealing,
}

/// The state handlers see: the configuration plus the operator token's hash, computed once.
pub(crate) struct App {
    pub(crate) state: ConsoleState,
    pub(crate) operator_hash: Option<Vec<u8>>,
}

type Route = (Method, &'static str, MethodRouter<Arc<App>>);

fn route(method: Method, path: &'static str, handler: MethodRouter<Arc<App>>) -> Route {
    (method, path, handler)
}

/// Every endpoint: the router and [`routes`] are both built from this table, so the list the
/// OpenAPI test checks is the list served.
fn table() -> Vec<Route> {
    use api::*;
    vec![
        route(Method::GET, "/api/v1/openapi.json", get(openapi)),
        route(Method::POST, "/api/v1/tenants", post(tenants::create_tenant)),
        route(Method::GET, "/api/v1/tenants/{tenant}", get(tenants::get_tenant)),
        route(Method::PUT, "/api/v1/tenants/{tenant}/scim-rate-limit", put(tenants::set_scim_rate_limit)),
        route(Method::DELETE, "/api/v1/tenants/{tenant}/scim-rate-limit", delete(tenants::clear_scim_rate_limit)),
        route(Method::GET, "/api/v1/tenants/{tenant}/tokens", get(tenants::list_tokens)),
        route(Method::DELETE, "/api/v1/tenants/{tenant}/tokens/{token}", delete(tenants::revoke_token)),
        route(Method::POST, "/api/v1/tenants/{tenant}/scim-tokens", post(tenants::create_scim_token)),
        route(Method::POST, "/api/v1/tenants/{tenant}/admin-tokens", post(tenants::create_admin_token)),
        route(Method::POST, "/api/v1/tenants/{tenant}/integrations", post(integrations::create)),
        route(Method::GET, "/api/v1/tenants/{tenant}/integrations", get(integrations::list)),
        route(Method::GET, "/api/v1/tenants/{tenant}/integrations/{integration}", get(integrations::get)),
        route(Method::PATCH, "/api/v1/tenants/{tenant}/integrations/{integration}", patch(integrations::update)),
        route(Method::DELETE, "/api/v1/tenants/{tenant}/integrations/{integration}", delete(integrations::delete)),
        route(Method::GET, "/api/v1/tenants/{tenant}/integrations/{integration}/activity", get(log::activity)),
        route(Method::GET, "/api/v1/tenants/{tenant}/integrations/{integration}/assets", get(assets::list)),
        route(Method::POST, "/api/v1/tenants/{tenant}/integrations/{integration}/assets", post(assets::add)),
        route(
            Method::PATCH,
            "/api/v1/tenants/{tenant}/integrations/{integration}/assets/{asset}",
            patch(assets::update),
        ),
        route(
            Method::DELETE,
            "/api/v1/tenants/{tenant}/integrations/{integration}/assets/{asset}",
            delete(assets::delete),
        ),
        route(Method::POST, "/api/v1/tenants/{tenant}/integrations/{integration}/grants", post(grants::create)),
        route(Method::GET, "/api/v1/tenants/{tenant}/integrations/{integration}/grants", get(grants::list)),
        route(
            Method::PATCH,
            "/api/v1/tenants/{tenant}/integrations/{integration}/grants/{grant}",
            patch(grants::update),
        ),
        route(
            Method::DELETE,
            "/api/v1/tenants/{tenant}/integrations/{integration}/grants/{grant}",
            delete(grants::delete),
        ),
        route(Method::GET, "/api/v1/tenants/{tenant}/teams", get(directory::teams)),
        route(Method::GET, "/api/v1/tenants/{tenant}/users", get(directory::users)),
        route(Method::GET, "/api/v1/tenants/{tenant}/users/{user}/access", get(access::explain)),
        route(Method::POST, "/api/v1/tenants/{tenant}/access/preview", post(access::preview)),
        route(Method::GET, "/api/v1/tenants/{tenant}/jobs", get(log::jobs)),
        route(Method::GET, "/api/v1/tenants/{tenant}/jobs/{job}", get(log::job)),
        route(Method::GET, "/api/v1/tenants/{tenant}/tasks", get(log::tasks)),
        route(Method::GET, "/api/v1/tenants/{tenant}/tasks/{task}", get(log::task)),
        route(Method::POST, "/api/v1/tenants/{tenant}/tasks/{task}/redrive", post(redrive::redrive)),
    ]
}

/// Every (method, path template) the router serves, e.g. `("GET", "/api/v1/tenants/{tenant}")`.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    table().into_iter().map(|(method, path, _)| (method.as_str_static(), path)).collect()
}

trait MethodName {
    fn as_str_static(&self) -> &'static str;
}

impl MethodName for Method {
    fn as_str_static(&self) -> &'static str {
        match *self {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PATCH => "PATCH",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            _ => "OTHER",
        }
    }
}

/// The admin API. Merge it with `unseat_telemetry::ops_router` in the role's HTTP server.
pub fn router(state: ConsoleState) -> Router {
    let operator_hash = state.operator_token.as_deref().filter(|t| !t.is_empty()).map(unseat_store::tokens::hash);
    let app = Arc::new(App { state, operator_hash });
    let mut router = Router::new();
    for (_, path, handler) in table() {
        router = router.route(path, handler);
    }
    router
        .merge(pages::routes())
        // A catch-all under /api/v1 rather than a router fallback: the role's server merges
        // this router with others (SCIM, ops), and only one of them may own the fallback.
        .route("/api/v1/{*rest}", any(|| async { error::ApiError::not_found("no such endpoint") }))
        .method_not_allowed_fallback(|| async {
            error::ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(refuse_nul))
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

/// Refuses a URL whose path or query decodes to the NUL character (it holds `%00`, the only
/// way a URL carries one): PostgreSQL's text cannot hold it, and every handler hands path and
/// query text (asset ids, filters, cursors) to the database.
async fn refuse_nul(request: Request, next: Next) -> Response {
    let uri = request.uri();
    if uri.path().contains("%00") || uri.query().is_some_and(|q| q.contains("%00")) {
        return error::ApiError::bad_request("the URL must not contain the NUL character (%00)").into_response();
    }
    next.run(request).await
}

/// Counts every answer by class in `unseat_console_requests_total`.
async fn count_requests(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let outcome = if status.is_server_error() {
        "server_error"
    } else if status.is_client_error() {
        "client_error"
    } else {
        "ok"
    };
    app.state.metrics.console_requests.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    response
}

async fn openapi() -> impl IntoResponse {
    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}
