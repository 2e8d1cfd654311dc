//! The SCIM 2.0 service provider the IdP (Okta, Entra ID) talks to, under `/scim/v2`.
//!
//! Each request that changes the directory runs in one Postgres transaction that applies the
//! change (`unseat-store`'s directory) and, when the change can alter someone's access, writes
//! one `DirectoryChanged` outbox row for the resolver; the IdP gets its 2xx only after that
//! commit. SCIM semantics (parsing, PATCH, filters) live in `unseat-scim`; the relay
//! (`unseat-relay`) publishes the outbox.

mod activations;
mod coalesce;
mod error;
mod groups;
mod limit;
mod lookup;
mod removals;
mod response;
mod users;

pub use error::ApiError;
pub use limit::{RateLimiter, TokenCache};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use error::scim_error_response;
use response::scim_response;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use unseat_bus::messages::{DirectoryChanged, Trigger, MESSAGE_VERSION};
use unseat_scim::{schema, AttrList, Filter, Page, ScimError};
use unseat_store::directory::{self as dir, Dir};
use unseat_store::tokens::{ScimScope, TokenOwner};
use unseat_store::Store;
use unseat_telemetry::{Metrics, ScimLabels};
use uuid::Uuid;

/// How the SCIM service bounds its clients.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest request body accepted (bytes); larger ones get 413.
    pub body_limit: usize,
    /// Requests per second one tenant may make on average (0: no limit), counted over every
    /// ingest process on the same database; above it the IdP gets 429 with `Retry-After`.
    pub rate_limit: u32,
    /// Requests a tenant may make at once above the average rate.
    pub rate_burst: u32,
    /// How long an authenticated token is trusted without reading the store again (zero: read
    /// it on every request). Saves one query per request. A revoked token is forgotten at once
    /// (the store announces revocations); a token deleted some other way, or revoked while the
    /// announcement cannot be heard, keeps working at most this long.
    pub token_cache: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { body_limit: 1024 * 1024, rate_limit: 5000, rate_burst: 10_000, token_cache: Duration::from_secs(5) }
    }
}

/// What the SCIM service needs (see [`Shared`]). axum clones the state for every middleware
/// and handler a request passes through, so it is one reference to what they share: a single
/// counter to bump, not one per field and a copy of the exchange's name.
#[derive(Clone)]
pub struct IngestState(Arc<Shared>);

impl std::ops::Deref for IngestState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The store, the metrics registry, the exchange directory changes are announced on, the
/// service's limits, the tenants' rate buckets (shared through the store) and the token cache.
pub struct Shared {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub directory_exchange: String,
    pub body_limit: usize,
    limiter: Arc<RateLimiter>,
    tokens: Arc<TokenCache>,
    activations: activations::Activations,
    removals: removals::Removals,
}

impl IngestState {
    pub fn new(store: Store, metrics: Arc<Metrics>, directory_exchange: String, config: IngestConfig) -> Self {
        // The group-commit writers send parameter arrays: on connections of their own that
        // plan such a statement once (see `Store::generic_plans`), one per write in flight at most.
        let writers = store.generic_plans(activations::WRITES + removals::WRITES).unwrap_or_else(|error| {
            tracing::warn!(%error, "group-commit writers share the main pool");
            store.clone()
        });
        // The table of the letters a text search matches for each letter (one pass over every
        // character), built now rather than in the first request that searches.
        std::thread::spawn(|| unseat_domain::text::unfolded('a'));
        let limiter =
            Arc::new(RateLimiter::shared(config.rate_limit, config.rate_burst, store.clone(), metrics.clone()));
        let tokens = Arc::new(TokenCache::new(config.token_cache));
        if !config.token_cache.is_zero() {
            limit::forget_revoked_tokens(store.clone(), Arc::downgrade(&tokens));
        }
        Self(Arc::new(Shared {
            activations: activations::Activations::new(writers.clone(), directory_exchange.clone(), &metrics),
            removals: removals::Removals::new(writers, directory_exchange.clone(), &metrics),
            store,
            metrics,
            directory_exchange,
            body_limit: config.body_limit,
            limiter,
            tokens,
        }))
    }
}

/// The SCIM routes under `/scim/v2`, every one behind bearer-token authentication and
/// counted in `unseat_scim_requests_total`.
pub fn router(state: IngestState) -> Router {
    let scim = Router::new()
        .route("/Users", get(users::list).post(users::create))
        .route("/Users/.search", post(users::list))
        .route("/Users/{id}", get(users::get_one).put(users::replace).patch(users::patch).delete(users::delete))
        .route("/Groups", get(groups::list).post(groups::create))
        .route("/Groups/.search", post(groups::list))
        .route("/Groups/{id}", get(groups::get_one).put(groups::replace).patch(groups::patch).delete(groups::delete))
        .route("/.search", post(search_all))
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{name}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema_by_id))
        // Features /ServiceProviderConfig says are not supported (RFC 7644 §3.7, §3.11: 501).
        .route("/Me", any(|| async { scim_error_response(&ScimError::not_implemented("/Me is not supported")) }))
        .route(
            "/Bulk",
            any(|| async { scim_error_response(&ScimError::not_implemented("bulk operations are not supported")) }),
        )
        .fallback(|| async { scim_error_response(&ScimError::not_found("no such SCIM endpoint")) })
        .method_not_allowed_fallback(|| async {
            scim_error_response(&ScimError::method_not_allowed("method not allowed here"))
        })
        .layer(DefaultBodyLimit::max(state.body_limit));
    // Authentication sits outside the nest so that it sees the full request path.
    Router::new()
        .nest("/scim/v2", scim)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

/// Who is calling and about what, set by authentication for the handlers.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub tenant_id: Uuid,
    /// The directory the token reaches: the workspace, or one integration's.
    pub dir: Dir,
    pub method: String,
    pub path: String,
    pub user_agent: String,
    pub received_at: DateTime<Utc>,
    /// The SCIM base URL as the client reached it, for `meta.location`.
    pub base: String,
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c)))
        .unwrap_or("localhost");
    let scheme = match headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()) {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/scim/v2")
}

async fn authenticate(State(state): State<IngestState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string())
        .filter(|t| !t.is_empty() && t.len() <= 512);
    let Some(token) = token else {
        return scim_error_response(&ScimError::unauthorized("a valid bearer token is required"));
    };
    let hash = unseat_store::tokens::hash(&token);
    let owner = match state.tokens.get(&hash) {
        Some(owner) => Some(owner),
        None => match scim_owner(&state, &token).await {
            Ok(Some(owner)) => {
                state.tokens.put(hash, owner.clone());
                Some(owner)
            }
            Ok(None) => None,
            Err(e) => return e.into_response(),
        },
    };
    let dir = match owner {
        Some(TokenOwner::Scim { tenant_id, scope: ScimScope::Workspace }) => Dir::workspace(tenant_id),
        Some(TokenOwner::Scim { tenant_id, scope: ScimScope::Integration(i) }) => Dir::integration(tenant_id, i),
        _ => return scim_error_response(&ScimError::unauthorized("a valid bearer token is required")),
    };
    let tenant_id = dir.tenant_id;
    if let Err(wait) = state.limiter.check(tenant_id).await {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        tracing::debug!(tenant = %tenant_id, retry_after = secs, "tenant over its SCIM request rate");
        let mut resp = scim_error_response(&ScimError::too_many_requests(format!(
            "too many requests for this tenant; retry after {secs} s"
        )));
        if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let headers = req.headers();
    let ctx = Ctx {
        tenant_id,
        dir,
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(256)
            .collect(),
        received_at: Utc::now(),
        base: base_url(headers),
    };
    req.extensions_mut().insert(ctx);
    next.run(req).await
}

/// The SCIM holder of `token`: None for unknown tokens, admin tokens, and tokens of an
/// integration that no longer exists (its endpoint is gone with it).
async fn scim_owner(state: &IngestState, token: &str) -> Result<Option<TokenOwner>, ApiError> {
    let owner = state.store.token_owner(token).await?;
    match owner {
        Some(TokenOwner::Scim { tenant_id, scope: ScimScope::Integration(i) }) => {
            let mut client = state.store.client().await?;
            let tx = client.transaction().await?;
            let exists = unseat_store::directory::integration_exists(&tx, tenant_id, i).await?;
            tx.commit().await?;
            Ok(exists.then_some(TokenOwner::Scim { tenant_id, scope: ScimScope::Integration(i) }))
        }
        Some(owner @ TokenOwner::Scim { .. }) => Ok(Some(owner)),
        _ => Ok(None),
    }
}

async fn count_requests(State(state): State<IngestState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE") => m.to_string(),
        _ => "other".to_string(),
    };
    let path = req.uri().path();
    let resource = match path.strip_prefix("/scim/v2/") {
        Some(p) if p == "Users" || p.starts_with("Users/") => "Users",
        Some(p) if p == "Groups" || p.starts_with("Groups/") => "Groups",
        _ => "other",
    };
    let resp = next.run(req).await;
    let status = match resp.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        // Refused by the tenant's rate limit: the IdP slows down, which operators watch apart
        // from the requests it got wrong.
        429 => "429",
        400..=499 => "4xx",
        // What unseat does not implement (/Bulk, /Me), answered as RFC 7644 says: the
        // server is fine, so it is no 5xx to alert on.
        501 => "501",
        _ => "5xx",
    };
    let labels = ScimLabels { method, resource: resource.to_string(), status: status.to_string() };
    state.metrics.scim_requests.get_or_create(&labels).inc();
    state.metrics.scim_request_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    resp
}

/// Reads a JSON request body: a body over the limit is 413, a body that is not JSON (or sent
/// as something other than JSON) is 400 invalidSyntax.
pub(crate) fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value, ScimError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ScimError::payload_too_large("the request body is larger than this service accepts")
        } else {
            ScimError::invalid_syntax(format!("could not read the request body: {}", r.body_text()))
        }
    })?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        if !json_media_type(ct.to_str().unwrap_or("")) {
            return Err(ScimError::unsupported_media_type(
                "send application/scim+json or application/json, in UTF-8 (RFC 7644 §3.1, §8.1)",
            ));
        }
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))?;
    unseat_scim::check_storable(&value)?;
    Ok(value)
}

/// Whether a request's `Content-Type` is SCIM's or plain JSON (any case, any parameters),
/// with no charset but UTF-8's.
fn json_media_type(ct: &str) -> bool {
    let mut parts = ct.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    let json =
        essence.eq_ignore_ascii_case("application/scim+json") || essence.eq_ignore_ascii_case("application/json");
    json && parts.all(|p| match p.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let charset = value.trim().trim_matches('"');
            charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    })
}

/// Query parameters by lower-cased name (SCIM clients vary in case).
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub fn from_query(q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Self, ScimError> {
        let Query(pairs) = q.map_err(|e| ScimError::invalid_value(format!("bad query string: {}", e.body_text())))?;
        Ok(Self(pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()))
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn int(&self, name: &str) -> Result<Option<i64>, ScimError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => {
                v.trim().parse().map(Some).map_err(|_| ScimError::invalid_value(format!("{name} must be an integer")))
            }
        }
    }
}

/// Which attributes a response carries (`attributes` / `excludedAttributes`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Shape {
    attributes: AttrList,
    excluded: AttrList,
}

impl Shape {
    pub fn from_params(p: &Params) -> Self {
        Self {
            attributes: p.get("attributes").map(AttrList::parse).unwrap_or_default(),
            excluded: p.get("excludedattributes").map(AttrList::parse).unwrap_or_default(),
        }
    }
    /// True when the response should carry top-level attribute `attr` (so it is worth loading).
    pub fn wants(&self, attr: &str) -> bool {
        !self.excluded.mentions(attr) && (self.attributes.is_empty() || self.attributes.mentions(attr))
    }
    /// True when the client named no `attributes` or `excludedAttributes`.
    pub fn is_default(&self) -> bool {
        self.attributes.is_empty() && self.excluded.is_empty()
    }
    pub fn apply(&self, v: Value) -> Value {
        if self.is_default() {
            v
        } else {
            unseat_scim::project(&v, &self.attributes, &self.excluded)
        }
    }
}

/// A list or search request: from the query string (`GET /Users`) or a SearchRequest body
/// (`POST /Users/.search`).
pub(crate) struct ListQuery {
    pub filter: Option<Filter>,
    pub page: Page,
    pub shape: Shape,
}

/// Read from the query string of a GET, from the body of a POST.
impl<S: Send + Sync> axum::extract::FromRequest<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if req.method() == axum::http::Method::POST {
            let headers = req.headers().clone();
            let body = Bytes::from_request(req, state).await;
            Ok(Self::from_search(&json_body(&headers, body)?)?)
        } else {
            Ok(Self::from_params(&Params::from_query(Query::try_from_uri(req.uri()))?)?)
        }
    }
}

impl ListQuery {
    pub fn from_params(p: &Params) -> Result<Self, ScimError> {
        Ok(Self {
            filter: p.get("filter").filter(|f| !f.trim().is_empty()).map(Filter::parse).transpose()?,
            page: Page::new(p.int("startindex")?, p.int("count")?),
            shape: Shape::from_params(p),
        })
    }

    pub fn from_search(body: &Value) -> Result<Self, ScimError> {
        use unseat_scim::filter::get_ci;
        if !body.is_object() {
            return Err(ScimError::invalid_syntax("a SearchRequest must be a JSON object"));
        }
        let filter = match get_ci(body, "filter") {
            None | Some(Value::Null) => None,
            Some(Value::String(f)) if f.trim().is_empty() => None,
            Some(Value::String(f)) => Some(Filter::parse(f)?),
            Some(_) => return Err(ScimError::invalid_filter("filter must be a string")),
        };
        let int = |name: &str| -> Result<Option<i64>, ScimError> {
            match get_ci(body, name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    v.as_i64().map(Some).ok_or_else(|| ScimError::invalid_value(format!("{name} must be an integer")))
                }
            }
        };
        let list = |name: &str| -> Result<AttrList, ScimError> {
            match get_ci(body, name) {
                None | Some(Value::Null) => Ok(AttrList::default()),
                Some(Value::String(s)) => Ok(AttrList::parse(s)),
                Some(Value::Array(items)) => Ok(AttrList::from_items(items.iter().filter_map(Value::as_str))),
                Some(_) => Err(ScimError::invalid_value(format!("{name} must be a list of attribute names"))),
            }
        };
        Ok(Self {
            filter,
            page: Page::new(int("startIndex")?, int("count")?),
            shape: Shape { attributes: list("attributes")?, excluded: list("excludedAttributes")? },
        })
    }
}

/// Writes the outbox row announcing a directory change, in the caller's transaction.
pub(crate) async fn announce(
    tx: &unseat_store::Transaction<'_>,
    state: &IngestState,
    ctx: &Ctx,
    summary: String,
    users: Vec<Uuid>,
    may_revoke: bool,
) -> Result<(), ApiError> {
    let (message_id, payload) = directory_message(ctx, summary.clone(), users, may_revoke)?;
    unseat_store::outbox::enqueue(
        tx,
        ctx.tenant_id,
        message_id,
        &state.directory_exchange,
        unseat_bus::DIRECTORY_ROUTING_KEY,
        &payload,
    )
    .await?;
    tracing::info!(tenant = %ctx.tenant_id, %message_id, summary = %summary, "directory change recorded");
    Ok(())
}

/// The message announcing a directory change, with its id.
/// "1 member", "3 members": a count of group members in a summary.
pub(crate) fn members(n: usize) -> String {
    if n == 1 {
        "1 member".to_string()
    } else {
        format!("{n} members")
    }
}

pub(crate) fn directory_message(
    ctx: &Ctx,
    summary: String,
    users: Vec<Uuid>,
    may_revoke: bool,
) -> Result<(Uuid, Value), ApiError> {
    let message_id = unseat_bus::messages::new_message_id();
    let msg = DirectoryChanged {
        v: MESSAGE_VERSION,
        message_id,
        tenant_id: ctx.tenant_id,
        scope: ctx.dir.scope(),
        trigger: Trigger {
            method: ctx.method.clone(),
            path: ctx.path.clone(),
            user_agent: ctx.user_agent.clone(),
            received_at: ctx.received_at,
            summary,
            may_revoke,
        },
        users,
    };
    let payload = serde_json::to_value(&msg).map_err(|e| ScimError::internal(format!("encoding the change: {e}")))?;
    Ok((message_id, payload))
}

/// `POST /.search`: Users and Groups together (RFC 7644 §3.4.3), users first. Without a filter,
/// the page is read from both tables by offset, whatever the directory's size; with one, both
/// are filtered.
async fn search_all(
    State(state): State<IngestState>,
    Extension(ctx): Extension<Ctx>,
    q: ListQuery,
) -> Result<Response, ApiError> {
    let mut client = state.store.client().await?;
    let tx = client.transaction().await?;
    let (offset, count) = (q.page.offset(), q.page.count);
    let (total, page_users, page_groups) = match &q.filter {
        None => {
            let (users_total, users) = dir::list_users(&tx, ctx.dir, offset as i64, count as i64).await?;
            let group_offset = (offset as i64).saturating_sub(users_total).max(0);
            let rest = count.saturating_sub(users.len()) as i64;
            let (groups_total, groups) = dir::list_groups(&tx, ctx.dir, group_offset, rest).await?;
            ((users_total + groups_total) as usize, users, groups)
        }
        Some(f) => {
            let users = users::matching(&tx, &ctx, &state.metrics, f).await?;
            let groups = groups::matching(&tx, &ctx, &state.metrics, f).await?;
            let total = users.len() + groups.len();
            let group_offset = offset.saturating_sub(users.len());
            let page_users: Vec<_> = users.into_iter().skip(offset).take(count).collect();
            let page_groups = groups.into_iter().skip(group_offset).take(count - page_users.len()).collect();
            (total, page_users, page_groups)
        }
    };
    let mut resources: Vec<Value> = page_users.iter().map(|u| response::render_user(&ctx.base, u)).collect();
    resources.extend(groups::render_all(&tx, &ctx, &page_groups, q.shape.wants("members")).await?);
    tx.commit().await?;
    let resources = resources.into_iter().map(|r| q.shape.apply(r)).collect();
    Ok(scim_response(StatusCode::OK, &unseat_scim::list_response(total, q.page, resources)))
}

async fn service_provider_config(Extension(ctx): Extension<Ctx>) -> Response {
    scim_response(StatusCode::OK, &schema::service_provider_config(&ctx.base))
}

async fn resource_types(Extension(ctx): Extension<Ctx>) -> Response {
    let all = schema::resource_types(&ctx.base);
    let page = unseat_scim::Page::new(None, None);
    scim_response(StatusCode::OK, &unseat_scim::list_response(all.len(), page, all))
}

async fn resource_type(
    Extension(ctx): Extension<Ctx>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match schema::resource_types(&ctx.base).into_iter().find(|r| r["id"].as_str() == Some(name.as_str())) {
        Some(r) => scim_response(StatusCode::OK, &r),
        None => scim_error_response(&ScimError::not_found(format!("no resource type {name:?}"))),
    }
}

async fn schemas(Extension(ctx): Extension<Ctx>) -> Response {
    let all = schema::schemas(&ctx.base);
    let page = unseat_scim::Page::new(None, None);
    scim_response(StatusCode::OK, &unseat_scim::list_response(all.len(), page, all))
}

async fn schema_by_id(
    Extension(ctx): Extension<Ctx>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match schema::schemas(&ctx.base).into_iter().find(|r| r["id"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&id)))
    {
        Some(r) => scim_response(StatusCode::OK, &r),
        None => scim_error_response(&ScimError::not_found(format!("no schema {id:?}"))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_count_of_members_agrees_with_its_number() {
        assert_eq!(super::members(1), "1 member");
        assert_eq!(super::members(0), "0 members");
        assert_eq!(super::members(2), "2 members");
    }
}
