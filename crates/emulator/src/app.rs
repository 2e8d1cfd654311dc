//! The app API: Meta's business-user endpoints under `/v25.0/` (business users, pending
//! invitations, asset assignments), with Graph error bodies, usage headers, the access-token
//! check, fault injection and the request log.
//!
//! One handler takes every non-control request so that faults, the token check, the headers
//! and the log apply the same way to each of them.

use crate::state::{valid_business_id, valid_email, valid_role, valid_task, FaultRule, RequestRecord, State, ROLES};
use crate::{Emulator, API_VERSION, MAX_LATENCY};
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;

const DEFAULT_LIMIT: usize = 25;
const MAX_LIMIT: usize = 100;
/// Fields a BusinessUser node can return here.
const USER_FIELDS: [&str; 7] = ["id", "name", "email", "role", "first_name", "last_name", "business"];
/// Fields a BusinessRoleRequest (pending invitation) node can return here.
const INVITATION_FIELDS: [&str; 6] = ["id", "email", "role", "status", "created_time", "expiration_time"];
/// The list edges: the only requests an `empty_page` fault applies to.
const LIST_EDGES: [&str; 5] =
    ["business_users", "pending_users", "assigned_users", "assigned_ad_accounts", "assigned_pages"];

/// What one app request answers, before headers are added.
struct Reply {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
    /// The business the request concerned, for `X-Business-Use-Case-Usage`.
    business: Option<String>,
}

impl Reply {
    fn ok(body: Value, business: Option<String>) -> Self {
        Self { status: StatusCode::OK, body, retry_after: None, business }
    }

    fn error(status: StatusCode, code: i64, subcode: Option<i64>, kind: &str, message: impl Into<String>) -> Self {
        let mut err = Map::new();
        err.insert("message".into(), Value::String(message.into()));
        err.insert("type".into(), Value::String(kind.into()));
        err.insert("code".into(), json!(code));
        if let Some(sub) = subcode {
            err.insert("error_subcode".into(), json!(sub));
        }
        if is_transient_code(code) {
            err.insert("is_transient".into(), Value::Bool(true));
        }
        err.insert("fbtrace_id".into(), Value::String(trace_id()));
        Self { status, body: json!({ "error": err }), retry_after: None, business: None }
    }

    fn bad_param(message: impl Into<String>) -> Self {
        Self::error(StatusCode::BAD_REQUEST, 100, None, "OAuthException", message)
    }

    /// Meta's answer for an id that does not exist or cannot be seen.
    fn no_object(method: &Method, id: &str) -> Self {
        let verb = method.as_str().to_ascii_lowercase();
        Self::error(
            StatusCode::BAD_REQUEST,
            100,
            Some(33),
            "GraphMethodException",
            format!(
                "Unsupported {verb} request. Object with ID '{id}' does not exist, cannot be loaded due to missing \
                 permissions, or does not support this operation"
            ),
        )
    }

    fn with_business(mut self, business: Option<String>) -> Self {
        self.business = business;
        self
    }
}

fn is_transient_code(code: i64) -> bool {
    matches!(code, 1 | 2 | 4 | 17 | 32 | 341 | 613) || (80000..=80014).contains(&code)
}

fn trace_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..11).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// The body an injected fault answers with: a Graph error whose code fits the status unless
/// the rule names one.
fn fault_reply(rule: &FaultRule, status: u16) -> Reply {
    let http = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = rule.graph_code.unwrap_or(match status {
        429 => 4,
        401 => 190,
        403 => 200,
        s if s >= 500 => 2,
        _ => 1,
    });
    let (kind, message) = match code {
        2 => ("OAuthException", "(#2) Service temporarily unavailable".to_string()),
        4 => ("OAuthException", "(#4) Application request limit reached".to_string()),
        17 => ("OAuthException", "(#17) User request limit reached".to_string()),
        190 => ("OAuthException", "Error validating access token: Session has expired".to_string()),
        200 => ("OAuthException", "(#200) Requires business_management permission to manage the object".to_string()),
        613 => ("OAuthException", "(#613) Calls to this api have exceeded the rate limit.".to_string()),
        3914 => ("OAuthException", "(#3914) You cannot remove the last admin of this business".to_string()),
        c if (80000..=80014).contains(&c) => {
            ("OAuthException", format!("(#{c}) There have been too many calls. Please wait a bit and try again."))
        }
        1 => ("OAuthException", "An unknown error has occurred.".to_string()),
        100 if rule.graph_subcode == Some(33) => (
            "GraphMethodException",
            "Unsupported request. Object does not exist, cannot be loaded due to missing permissions, or does not \
             support this operation"
                .to_string(),
        ),
        c => ("OAuthException", format!("(#{c}) Injected fault")),
    };
    let mut reply = Reply::error(http, code, rule.graph_subcode, kind, message);
    reply.retry_after = rule.retry_after_s;
    reply
}

/// Request parameters: the query string, plus the form body of a POST (the body wins).
fn params(uri: &Uri, method: &Method, body: &[u8]) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    if let Some(q) = uri.query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    if method == Method::POST {
        for (k, v) in url::form_urlencoded::parse(body) {
            out.insert(k.into_owned(), v.into_owned());
        }
    }
    out
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

pub(crate) async fn handle(
    AxumState(emu): AxumState<Emulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The log shows when the request arrived, before any injected latency.
    let arrived = Utc::now();
    let path = uri.path().to_string();
    let params = params(&uri, &method, &body);
    let (token, token_in_query) = match params.get("access_token").filter(|t| !t.is_empty()) {
        Some(t) => (Some(t.clone()), uri.query().is_some_and(|q| q.contains("access_token="))),
        None => (bearer(&headers).filter(|t| !t.is_empty()), false),
    };

    // Faults first, as a flaky network or an overloaded Meta would: decide under the lock,
    // sleep without it.
    let decision = decide_faults(&emu, &method, &path);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    // A fault's answer names no business; Meta keys the use-case usage by business or object
    // id, so it is keyed by the object the path names (the first segment after the version).
    let fault =
        decision.fault.as_ref().map(|(rule, status)| fault_reply(rule, *status).with_business(object_of(&path)));

    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1").to_string();
    let (reply, status, usage) = {
        let mut state = emu.lock();
        let now = std::time::Instant::now();
        // Every call counts against the hour, the throttled ones too, as Meta counts them.
        let used = state.count_call(now);
        let over_budget = state.settings.hourly_call_budget.is_some_and(|budget| used > budget);
        let reply = match fault {
            Some(reply) => reply,
            None if over_budget => Reply::error(
                StatusCode::BAD_REQUEST,
                4,
                None,
                "OAuthException",
                "(#4) Application request limit reached",
            )
            .with_business(object_of(&path)),
            None => match token.as_deref() {
                None => Reply::error(
                    StatusCode::UNAUTHORIZED,
                    190,
                    None,
                    "OAuthException",
                    "An active access token must be used to query information about the current user.",
                ),
                Some(token) => {
                    let ctx = Call {
                        method: &method,
                        path: &path,
                        params: &params,
                        token,
                        token_in_query,
                        host: &host,
                        empty_page: decision.empty_page,
                    };
                    route(&mut state, &ctx)
                }
            },
        };
        let status = reply.status;
        state.record(RequestRecord {
            at: arrived.to_rfc3339_opts(SecondsFormat::Millis, true),
            method: method.as_str().to_string(),
            path: path.clone(),
            status: status.as_u16(),
        });
        let usage = usage_headers(&state, now, reply.business.as_deref(), decision.regain_minutes);
        (reply, status, usage)
    };
    if let Some(hold) = decision.hold {
        // The request took effect; the answer arrives after the client gave up.
        tokio::time::sleep(hold).await;
    }

    tracing::debug!(method = %method, path = %path, status = status.as_u16(), "emulated app request");
    let mut response = (status, axum::Json(reply.body)).into_response();
    let h = response.headers_mut();
    for (name, value) in usage {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if let Some(secs) = reply.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(location) = decision.fault.as_ref().and_then(|(rule, _)| rule.location.as_deref()) {
        if let Ok(v) = HeaderValue::from_str(location) {
            h.insert(header::LOCATION, v);
        }
    }
    response
}

/// What the fault rules decided for one request.
pub(crate) struct FaultDecision {
    pub latency: Duration,
    /// The rule that answers with an error, and its status.
    pub fault: Option<(FaultRule, u16)>,
    /// Hold the (applied) answer this long.
    pub hold: Option<Duration>,
    pub regain_minutes: Option<u64>,
    /// Answer this list request with an empty page that has a `next`.
    pub empty_page: bool,
    /// Spaces to append to the answer's body.
    pub padding: Option<u64>,
}

/// Runs the fault rules for one request, in order: latencies add up; the first rule with a
/// status or `lose_response` ends the walk.
pub(crate) fn decide_faults(emu: &Emulator, method: &Method, path: &str) -> FaultDecision {
    let mut state = emu.lock();
    let mut rng = rand::rng();
    let mut decision = FaultDecision {
        latency: Duration::ZERO,
        fault: None,
        hold: None,
        regain_minutes: None,
        empty_page: false,
        padding: None,
    };
    let lists = *method == Method::GET && path.rsplit('/').next().is_some_and(|edge| LIST_EDGES.contains(&edge));
    for active in state.faults.iter_mut() {
        let added = active.added_at;
        let rule = &mut active.rule;
        if (rule.empty_page && !lists)
            || !rule.matches(method.as_str(), path, added)
            || !rule.fires(rng.random_range(0.0..1.0))
        {
            continue;
        }
        if let Some(skip) = rule.skip.as_mut().filter(|n| **n > 0) {
            *skip -= 1;
            continue;
        }
        if let Some(times) = rule.times.as_mut() {
            *times -= 1;
        }
        decision.latency += rule.latency(rng.random_range(0.0..=1.0));
        decision.padding = decision.padding.or(rule.padding_bytes);
        if let Some(status) = rule.status {
            decision.regain_minutes = rule.regain_minutes;
            decision.fault = Some((rule.clone(), status));
            break;
        }
        if rule.lose_response {
            decision.hold = Some(Duration::from_millis(rule.hold_ms.unwrap_or(30_000)).min(MAX_LATENCY));
            break;
        }
        if rule.empty_page {
            decision.empty_page = true;
            break;
        }
        if rule.padding_bytes.is_some() {
            break;
        }
    }
    decision.latency = decision.latency.min(MAX_LATENCY);
    decision
}

/// The object a Graph path names (the first segment after the version): what an answer that
/// knows no business keys its use-case usage by, as Meta keys it by business or object id.
fn object_of(path: &str) -> Option<String> {
    path.trim_start_matches('/').split('/').nth(1).map(str::to_string)
}

/// `X-App-Usage` and `X-Business-Use-Case-Usage` as Meta sends them: whole percentages of the
/// hourly budget used ([`State::usage`]), and the minutes until access comes back once it is
/// used up (a throttling fault may set its own).
fn usage_headers(
    state: &State,
    now: std::time::Instant,
    business: Option<&str>,
    regain_minutes: Option<u64>,
) -> [(&'static str, String); 2] {
    let (pct, regain) = state.usage(now);
    let app = json!({ "call_count": pct, "total_time": pct / 2, "total_cputime": pct / 3 });
    let buc = match business {
        Some(b) => json!({ b: [{
            "type": "ads_management",
            "call_count": pct,
            "total_cputime": pct / 3,
            "total_time": pct / 2,
            "estimated_time_to_regain_access": regain_minutes.unwrap_or(regain),
            "ads_api_access_tier": "standard_access"
        }]}),
        None => json!({}),
    };
    [("x-app-usage", app.to_string()), ("x-business-use-case-usage", buc.to_string())]
}

struct Call<'a> {
    method: &'a Method,
    path: &'a str,
    params: &'a HashMap<String, String>,
    token: &'a str,
    token_in_query: bool,
    host: &'a str,
    /// An `empty_page` fault applies to this request.
    empty_page: bool,
}

fn route(state: &mut State, call: &Call<'_>) -> Reply {
    let prefix = format!("/{API_VERSION}/");
    let Some(rest) = call.path.strip_prefix(&prefix) else {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            2500,
            None,
            "OAuthException",
            format!("Unknown path components: {}", call.path),
        );
    };
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match segments.as_slice() {
        [id, "business_users"] => {
            if !valid_business_id(id) {
                return alias_error(id);
            }
            if !state.business_exists(id) {
                return Reply::no_object(call.method, id);
            }
            if let Some(denied) = check_token(state, id, call.token) {
                return denied;
            }
            let reply = match *call.method {
                Method::GET => list_users(state, id, call),
                Method::POST => invite(state, id, call),
                _ => Reply::error(
                    StatusCode::BAD_REQUEST,
                    100,
                    None,
                    "OAuthException",
                    format!(
                        "(#100) Unsupported {} request on edge business_users",
                        call.method.as_str().to_ascii_lowercase()
                    ),
                ),
            };
            reply.with_business(Some(id.to_string()))
        }
        [id, "pending_users"] if state.business_exists(id) => {
            if let Some(denied) = check_token(state, id, call.token) {
                return denied;
            }
            let reply = match *call.method {
                Method::GET => list_invitations(state, id, call),
                _ => Reply::error(
                    StatusCode::BAD_REQUEST,
                    100,
                    None,
                    "OAuthException",
                    format!(
                        "(#100) Unsupported {} request on edge pending_users",
                        call.method.as_str().to_ascii_lowercase()
                    ),
                ),
            };
            reply.with_business(Some(id.to_string()))
        }
        [id] => {
            if !valid_business_id(id) {
                return alias_error(id);
            }
            node(state, id, call)
        }
        [asset, "assigned_users"] if state.assets.contains_key(*asset) => assigned_users(state, asset, call),
        [user, edge @ ("assigned_ad_accounts" | "assigned_pages")] if user_of(state, user).is_some() => {
            assigned_assets(state, user, edge, call)
        }
        // Like a node, an edge of an id that does not exist (or no longer does) is an unknown
        // object; only an edge the node type lacks is a nonexisting field.
        [id, edge, ..] => match node_type(state, id) {
            Some(kind) => {
                Reply::bad_param(format!("(#100) Tried accessing nonexisting field ({edge}) on node type ({kind})"))
            }
            None => Reply::no_object(call.method, id),
        },
        [] => Reply::error(StatusCode::BAD_REQUEST, 2500, None, "OAuthException", "Unknown path components"),
    }
}

/// The Graph node type of an id, None when no such object exists.
fn node_type(state: &State, id: &str) -> Option<&'static str> {
    if state.business_exists(id) {
        Some("Business")
    } else if user_of(state, id).is_some() {
        Some("BusinessUser")
    } else if state.invitation_of(id).is_some() {
        Some("BusinessRoleRequest")
    } else {
        match state.assets.get(id).map(|a| a.kind.as_str()) {
            Some("ad_account") => Some("AdAccount"),
            Some(_) => Some("Page"),
            None => None,
        }
    }
}

fn alias_error(id: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        803,
        None,
        "OAuthException",
        format!("(#803) Some of the aliases you requested do not exist: {id}"),
    )
}

/// A business with a required token answers 190 to any other token.
fn check_token(state: &State, business_id: &str, token: &str) -> Option<Reply> {
    let required = state.businesses.get(business_id)?.token.as_deref()?;
    (required != token).then(|| {
        Reply::error(
            StatusCode::UNAUTHORIZED,
            190,
            None,
            "OAuthException",
            "Invalid OAuth access token - Cannot parse access token",
        )
        .with_business(Some(business_id.to_string()))
    })
}

fn requested_fields(call: &Call<'_>) -> Result<Vec<String>, Reply> {
    fields_of(call, &USER_FIELDS, "BusinessUser", &["id", "name"])
}

/// The `fields` parameter, each one a field of `node_type`; `default` when it is absent.
fn fields_of(call: &Call<'_>, known: &[&str], node_type: &str, default: &[&str]) -> Result<Vec<String>, Reply> {
    let Some(raw) = call.params.get("fields") else {
        return Ok(default.iter().map(|f| f.to_string()).collect());
    };
    let mut fields = Vec::new();
    for f in raw.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !known.contains(&f) {
            return Err(Reply::bad_param(format!(
                "(#100) Tried accessing nonexisting field ({f}) on node type ({node_type})"
            )));
        }
        if !fields.iter().any(|x: &String| x == f) {
            fields.push(f.to_string());
        }
    }
    if fields.is_empty() {
        fields.push("id".into());
    }
    Ok(fields)
}

fn render_user(state: &State, id: u64, fields: &[String]) -> Value {
    let mut out = Map::new();
    let Some(u) = state.users.get(&id) else {
        return Value::Object(out);
    };
    let (first, last) = match u.name.split_once(' ') {
        Some((f, l)) => (f.to_string(), l.to_string()),
        None => (u.name.clone(), String::new()),
    };
    for f in fields {
        let v = match f.as_str() {
            "id" => json!(id.to_string()),
            "name" => json!(u.name),
            "email" => json!(u.email),
            "role" => json!(state.reported_role(&u.role)),
            "first_name" => json!(first),
            "last_name" => json!(last),
            "business" => {
                json!({ "id": u.business_id, "name": format!("Business {}", u.business_id) })
            }
            _ => continue,
        };
        out.insert(f.clone(), v);
    }
    Value::Object(out)
}

/// Cursors are opaque to clients; here they are the hex of a text naming a position: the key
/// of the item the page ended at (for business users, the hex of their id), optionally
/// followed by `|` and a nonce, so that several cursors can name one position (an empty page's
/// `next` does); `|nonce` alone is the position before the first item.
fn encode_key(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect::<String>().to_uppercase()
}

fn decode_key(cursor: &str) -> Option<String> {
    if cursor.len() > 128 {
        return None;
    }
    let bytes: Option<Vec<u8>> = cursor
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => std::str::from_utf8(&[*hi, *lo]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()),
            _ => None,
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

/// A fresh cursor for the position after `key` (None: before the first item).
fn reissued_cursor(key: Option<&str>) -> String {
    encode_key(&format!("{}|{:x}", key.unwrap_or(""), rand::rng().random::<u32>()))
}

/// The key a cursor names: Some(None) for the position before the first item, None for a
/// cursor that is not one of ours.
fn cursor_key(cursor: &str) -> Option<Option<String>> {
    let text = decode_key(cursor)?;
    match text.split_once('|') {
        None if text.is_empty() => None,
        None => Some(Some(text)),
        Some(("", _)) => Some(None),
        Some((key, _)) => Some(Some(key.to_string())),
    }
}

fn user_key(id: &u64) -> String {
    format!("{id:x}")
}

fn parse_user_key(text: &str) -> Option<u64> {
    u64::from_str_radix(text, 16).ok()
}

/// One page of a list edge, Graph style: `limit` (default 25, at most 100), `after` /
/// `before` cursors; `paging.cursors` on every non-empty page, `paging.next` / `previous`
/// (full URLs repeating the request's parameters) while there is more in that direction. A
/// cursor stops working once the item it names is gone (HTTP 400, code 100), as Meta's do;
/// under an `empty_page` fault the page holds nothing but still has a `next`.
struct Paged<K> {
    items: Vec<K>,
    paging: Option<Value>,
}

fn paginate<K: Ord + Clone>(
    call: &Call<'_>,
    all: &[K],
    key: impl Fn(&K) -> String,
    parse: impl Fn(&str) -> Option<K>,
) -> Result<Paged<K>, Reply> {
    let limit = match call.params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n <= 0 => DEFAULT_LIMIT,
            Ok(n) => (n as usize).min(MAX_LIMIT),
            Err(_) => return Err(Reply::bad_param(format!("(#100) Param limit must be a number, got {l:?}"))),
        },
    };
    // Some(None): before the first item.
    let position = |name: &str| -> Result<Option<Option<K>>, Reply> {
        let Some(cursor) = call.params.get(name) else {
            return Ok(None);
        };
        let invalid = || Reply::bad_param(format!("(#100) The {name} cursor is invalid"));
        match cursor_key(cursor) {
            None => Err(invalid()),
            Some(None) => Ok(Some(None)),
            Some(Some(text)) => match parse(&text) {
                Some(k) if all.binary_search(&k).is_ok() => Ok(Some(Some(k))),
                Some(_) => Err(Reply::bad_param(format!(
                    "(#100) The {name} cursor is no longer valid: the object it points at was deleted"
                ))),
                None => Err(invalid()),
            },
        }
    };
    let (after, before) = (position("after")?, position("before")?);
    let from = after.clone().flatten();
    let items: Vec<K> = match (&from, &before) {
        (_, Some(Some(b))) => {
            let earlier: Vec<&K> = all.iter().filter(|k| *k < b).collect();
            earlier[earlier.len().saturating_sub(limit)..].iter().map(|k| (*k).clone()).collect()
        }
        (_, Some(None)) => Vec::new(),
        (Some(a), None) => all.iter().filter(|k| *k > a).take(limit).cloned().collect(),
        (None, None) => all.iter().take(limit).cloned().collect(),
    };
    let link = |name: &str, cursor: String| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        let mut params: Vec<(&String, &String)> = call.params.iter().collect();
        params.sort();
        for (k, v) in params {
            // Meta's links repeat the token only when it came in the query string.
            let skip =
                matches!(k.as_str(), "after" | "before" | "limit") || (k == "access_token" && !call.token_in_query);
            if !skip {
                q.append_pair(k, v);
            }
        }
        q.append_pair("limit", &limit.to_string());
        q.append_pair(name, &cursor);
        json!(format!("http://{}{}?{}", call.host, call.path, q.finish()))
    };
    if call.empty_page && before.is_none() && !items.is_empty() {
        // Nothing on this page, and a `next` that goes on from where the request started.
        let next = link("after", reissued_cursor(from.as_ref().map(&key).as_deref()));
        return Ok(Paged { items: Vec::new(), paging: Some(json!({ "next": next })) });
    }
    let (Some(first), Some(last)) = (items.first(), items.last()) else {
        return Ok(Paged { items, paging: None });
    };
    let (first_cursor, last_cursor) = (encode_key(&key(first)), encode_key(&key(last)));
    let mut paging = json!({ "cursors": { "before": first_cursor.clone(), "after": last_cursor.clone() } });
    if all.iter().any(|k| k > last) {
        paging["next"] = link("after", last_cursor);
    }
    if all.iter().any(|k| k < first) {
        paging["previous"] = link("before", first_cursor);
    }
    Ok(Paged { items, paging: Some(paging) })
}

/// A list edge's body: `data`, `paging` when there is any, and `summary` when asked for
/// (`summary=total_count`).
fn list_body(call: &Call<'_>, data: Vec<Value>, paging: Option<Value>, total: usize) -> Value {
    let mut body = json!({ "data": data });
    if let Some(paging) = paging {
        body["paging"] = paging;
    }
    if call.params.get("summary").is_some_and(|s| s.split(',').any(|p| matches!(p.trim(), "total_count" | "true"))) {
        body["summary"] = json!({ "total_count": total });
    }
    body
}

fn list_users(state: &State, business_id: &str, call: &Call<'_>) -> Reply {
    let fields = match requested_fields(call) {
        Ok(f) => f,
        Err(reply) => return reply,
    };
    let all: Vec<u64> = state.users.iter().filter(|(_, u)| u.business_id == business_id).map(|(id, _)| *id).collect();
    let page = match paginate(call, &all, user_key, parse_user_key) {
        Ok(page) => page,
        Err(reply) => return reply,
    };
    let data: Vec<Value> = page.items.iter().map(|id| render_user(state, *id, &fields)).collect();
    Reply::ok(list_body(call, data, page.paging, all.len()), None)
}

fn role_param(call: &Call<'_>) -> Result<Option<String>, Reply> {
    match call.params.get("role") {
        None => Ok(None),
        Some(r) if valid_role(r) => Ok(Some(r.clone())),
        Some(r) => {
            Err(Reply::bad_param(format!("(#100) Param role must be one of {{{}}} - got \"{r}\"", ROLES.join(", "))))
        }
    }
}

fn invite(state: &mut State, business_id: &str, call: &Call<'_>) -> Reply {
    let Some(email) = call.params.get("email").map(|e| e.trim().to_string()).filter(|e| !e.is_empty()) else {
        return Reply::bad_param("(#100) The parameter email is required");
    };
    if !valid_email(&email) {
        return Reply::bad_param(format!("(#100) Param email must be a valid email address - got \"{email}\""));
    }
    let role = match role_param(call) {
        Ok(r) => r.unwrap_or_else(|| "EMPLOYEE".to_string()),
        Err(reply) => return reply,
    };
    if state.find_by_email(business_id, &email).is_some() {
        return Reply::bad_param(format!("(#100) {email} is already a member of this business"));
    }
    // The id of the business user, or of the pending invitation when invitations stay pending.
    match state.invite(business_id, &email, &role) {
        Ok(id) => Reply::ok(json!({ "id": id }), None),
        Err(error) => Reply::bad_param(format!("(#100) {error}")),
    }
}

/// `GET /{business-id}/pending_users`: the pending invitations (BusinessRoleRequest nodes),
/// optionally only those for `email`.
fn list_invitations(state: &State, business_id: &str, call: &Call<'_>) -> Reply {
    let fields = match fields_of(call, &INVITATION_FIELDS, "BusinessRoleRequest", &["id"]) {
        Ok(f) => f,
        Err(reply) => return reply,
    };
    let email = call.params.get("email").map(|e| e.trim().to_lowercase()).filter(|e| !e.is_empty());
    let all: Vec<u64> = state
        .invitations
        .iter()
        .filter(|(_, i)| i.business_id == business_id)
        .filter(|(_, i)| email.as_ref().is_none_or(|e| i.email.to_lowercase() == *e))
        .map(|(id, _)| *id)
        .collect();
    let page = match paginate(call, &all, user_key, parse_user_key) {
        Ok(page) => page,
        Err(reply) => return reply,
    };
    let data: Vec<Value> = page.items.iter().map(|id| render_invitation(state, *id, &fields)).collect();
    Reply::ok(list_body(call, data, page.paging, all.len()), None)
}

fn render_invitation(state: &State, id: u64, fields: &[String]) -> Value {
    let Some(view) = state.invitations.get(&id).map(|i| i.view(id)) else {
        return json!({});
    };
    let mut out = Map::new();
    for f in fields {
        let v = match f.as_str() {
            "id" => view.id.clone(),
            "email" => view.email.clone(),
            "role" => view.role.clone(),
            "status" => view.status.clone(),
            "created_time" => view.created_time.clone(),
            "expiration_time" => view.expiration_time.clone(),
            _ => continue,
        };
        out.insert(f.clone(), Value::String(v));
    }
    Value::Object(out)
}

/// `/{business-role-request-id}`: read (GET), change the role it offers (POST `role`; `tasks`
/// is taken and ignored), revoke (DELETE).
fn invitation_node(state: &mut State, iid: u64, call: &Call<'_>) -> Reply {
    let Some(business_id) = state.invitations.get(&iid).map(|i| i.business_id.clone()) else {
        return Reply::no_object(call.method, &iid.to_string());
    };
    if let Some(denied) = check_token(state, &business_id, call.token) {
        return denied;
    }
    let reply = match *call.method {
        Method::GET => match fields_of(call, &INVITATION_FIELDS, "BusinessRoleRequest", &["id"]) {
            Ok(fields) => Reply::ok(render_invitation(state, iid, &fields), None),
            Err(reply) => reply,
        },
        Method::POST => match role_param(call) {
            Err(reply) => reply,
            Ok(role) => {
                if let (Some(role), Some(rec)) = (role, state.invitations.get_mut(&iid)) {
                    rec.role = role;
                }
                Reply::ok(json!({ "success": true }), None)
            }
        },
        Method::DELETE => {
            state.invitations.remove(&iid);
            Reply::ok(json!({ "success": true }), None)
        }
        _ => Reply::no_object(call.method, &iid.to_string()),
    };
    reply.with_business(Some(business_id))
}

fn node(state: &mut State, id: &str, call: &Call<'_>) -> Reply {
    // The business node itself: readable, nothing else.
    if state.business_exists(id) && *call.method == Method::GET {
        if let Some(denied) = check_token(state, id, call.token) {
            return denied;
        }
        return Reply::ok(json!({ "id": id, "name": format!("Business {id}") }), Some(id.to_string()));
    }
    if let Some(iid) = state.invitation_of(id) {
        return invitation_node(state, iid, call);
    }
    let user = id.parse::<u64>().ok().and_then(|uid| state.users.get(&uid).map(|u| (uid, u.business_id.clone())));
    let Some((uid, business_id)) = user else {
        return Reply::no_object(call.method, id);
    };
    if let Some(denied) = check_token(state, &business_id, call.token) {
        return denied;
    }
    let business = Some(business_id);
    let reply = match *call.method {
        Method::GET => match requested_fields(call) {
            Ok(fields) => Reply::ok(render_user(state, uid, &fields), None),
            Err(reply) => reply,
        },
        Method::POST => update_user(state, uid, call),
        Method::DELETE => {
            if state.is_last_admin(uid) {
                last_admin()
            } else {
                state.remove_user(uid);
                Reply::ok(json!({ "success": true }), None)
            }
        }
        _ => Reply::no_object(call.method, id),
    };
    reply.with_business(business)
}

fn user_of(state: &State, id: &str) -> Option<u64> {
    id.parse::<u64>().ok().filter(|uid| state.users.contains_key(uid))
}

/// `tasks` as Graph takes it: a JSON array (`["MANAGE","ADVERTISE"]`) or a comma list, each
/// task one Meta takes on this kind of asset.
fn tasks_param(raw: &str, kind: &str) -> Result<Vec<String>, Reply> {
    let items: Vec<String> = match serde_json::from_str::<Vec<String>>(raw) {
        Ok(list) => list,
        Err(_) => raw.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
    };
    if items.is_empty() {
        return Err(Reply::bad_param("(#100) The parameter tasks is required"));
    }
    let mut tasks = Vec::new();
    for (i, t) in items.into_iter().enumerate() {
        let t = t.to_ascii_uppercase();
        if !valid_task(kind, &t) {
            let known: &[&str] =
                if kind == "ad_account" { &crate::state::AD_ACCOUNT_TASKS } else { &crate::state::PAGE_TASKS };
            return Err(Reply::bad_param(format!("(#100) Param tasks[{i}] must be one of {{{}}}", known.join(", "))));
        }
        if !tasks.contains(&t) {
            tasks.push(t);
        }
    }
    Ok(tasks)
}

/// `/{asset-id}/assigned_users`: list (GET), assign or replace tasks (POST user, tasks),
/// unassign (DELETE user).
fn assigned_users(state: &mut State, asset: &str, call: &Call<'_>) -> Reply {
    let Some((business_id, kind)) = state.assets.get(asset).map(|a| (a.business_id.clone(), a.kind.clone())) else {
        return Reply::no_object(call.method, asset);
    };
    if let Some(denied) = check_token(state, &business_id, call.token) {
        return denied;
    }
    let business = Some(business_id.clone());
    let user = match *call.method {
        Method::GET => None,
        _ => match call.params.get("user") {
            None => return Reply::bad_param("(#100) The parameter user is required").with_business(business),
            Some(u) => match user_of(state, u) {
                Some(uid) if state.users.get(&uid).is_some_and(|r| r.business_id == business_id) => Some(uid),
                _ => return Reply::no_object(call.method, u).with_business(business),
            },
        },
    };
    let reply = match (call.method.clone(), user) {
        (Method::GET, _) => {
            let all: Vec<u64> = state.assets.get(asset).map_or_else(Vec::new, |a| a.assigned.keys().copied().collect());
            match paginate(call, &all, user_key, parse_user_key) {
                Err(reply) => reply,
                Ok(page) => {
                    let data: Vec<Value> = page
                        .items
                        .iter()
                        .map(|uid| {
                            let name = state.users.get(uid).map(|u| u.name.clone()).unwrap_or_default();
                            let tasks = state.assets.get(asset).and_then(|a| a.assigned.get(uid)).cloned();
                            json!({ "id": uid.to_string(), "name": name, "tasks": tasks.unwrap_or_default() })
                        })
                        .collect();
                    Reply::ok(list_body(call, data, page.paging, all.len()), None)
                }
            }
        }
        (Method::POST, Some(uid)) => match call.params.get("tasks").map(|t| tasks_param(t, &kind)) {
            None => Reply::bad_param("(#100) The parameter tasks is required"),
            Some(Err(reply)) => reply,
            Some(Ok(tasks)) => match state.assign(asset, &uid.to_string(), tasks) {
                Ok(()) => Reply::ok(json!({ "success": true }), None),
                Err(e) => Reply::bad_param(format!("(#100) {e}")),
            },
        },
        (Method::DELETE, Some(uid)) => {
            if let Some(a) = state.assets.get_mut(asset) {
                a.assigned.remove(&uid);
            }
            Reply::ok(json!({ "success": true }), None)
        }
        _ => Reply::no_object(call.method, asset),
    };
    reply.with_business(business)
}

/// `/{business-user-id}/assigned_ad_accounts` and `/assigned_pages`: the user's assets of
/// that kind with its tasks.
fn assigned_assets(state: &State, user: &str, edge: &str, call: &Call<'_>) -> Reply {
    let Some(uid) = user_of(state, user) else {
        return Reply::no_object(call.method, user);
    };
    let business_id = state.users.get(&uid).map(|u| u.business_id.clone()).unwrap_or_default();
    if let Some(denied) = check_token(state, &business_id, call.token) {
        return denied;
    }
    if *call.method != Method::GET {
        return Reply::no_object(call.method, user);
    }
    let kind = if edge == "assigned_ad_accounts" { "ad_account" } else { "page" };
    let held: Vec<String> = state
        .assets
        .iter()
        .filter(|(_, a)| a.kind == kind && a.assigned.contains_key(&uid))
        .map(|(id, _)| id.clone())
        .collect();
    let page = match paginate(call, &held, String::clone, |t| Some(t.to_string())) {
        Ok(page) => page,
        Err(reply) => return reply.with_business(Some(business_id)),
    };
    let data: Vec<Value> = page
        .items
        .iter()
        .filter_map(|id| {
            let a = state.assets.get(id)?;
            a.assigned.get(&uid).map(|tasks| json!({ "id": id, "name": a.name, "tasks": tasks }))
        })
        .collect();
    Reply::ok(list_body(call, data, page.paging, held.len()), Some(business_id))
}

fn last_admin() -> Reply {
    Reply::error(
        StatusCode::BAD_REQUEST,
        3914,
        None,
        "OAuthException",
        "(#3914) You cannot remove or demote the last admin of this business",
    )
}

fn update_user(state: &mut State, uid: u64, call: &Call<'_>) -> Reply {
    let role = match role_param(call) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    if let Some(role) = role {
        if role != "ADMIN" && state.is_last_admin(uid) {
            return last_admin();
        }
        if let Some(u) = state.users.get_mut(&uid) {
            u.role = role;
        }
    }
    let first = call.params.get("first_name").map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let last = call.params.get("last_name").map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if first.is_some() || last.is_some() {
        if let Some(u) = state.users.get_mut(&uid) {
            let (old_first, old_last) = match u.name.split_once(' ') {
                Some((f, l)) => (f.to_string(), l.to_string()),
                None => (u.name.clone(), String::new()),
            };
            let name = format!("{} {}", first.unwrap_or(old_first), last.unwrap_or(old_last));
            u.name = name.trim().to_string();
        }
    }
    Reply::ok(json!({ "success": true }), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for id in [0u64, 1, 100_000_000_000_001, u64::MAX] {
            let key = cursor_key(&encode_key(&user_key(&id))).flatten();
            assert_eq!(key.as_deref().and_then(parse_user_key), Some(id));
        }
        for garbage in ["zz", "abc", "é", ""] {
            assert_eq!(cursor_key(garbage), None, "{garbage:?}");
        }
        assert_eq!(decode_key(&encode_key("act_200000000000001")).as_deref(), Some("act_200000000000001"));
        // A re-issued cursor names the same place under another text; `|nonce` alone is the start.
        let again = reissued_cursor(Some("act_1"));
        assert_ne!(again, encode_key("act_1"));
        assert_eq!(cursor_key(&again), Some(Some("act_1".to_string())));
        assert_eq!(cursor_key(&reissued_cursor(None)), Some(None));
    }

    #[test]
    fn fault_bodies_follow_the_status() {
        let rule = FaultRule::default();
        assert_eq!(fault_reply(&rule, 429).body["error"]["code"], 4);
        assert_eq!(fault_reply(&rule, 403).body["error"]["code"], 200);
        assert_eq!(fault_reply(&rule, 503).body["error"]["code"], 2);
        let custom = FaultRule { graph_code: Some(613), ..Default::default() };
        assert_eq!(fault_reply(&custom, 400).body["error"]["code"], 613);
    }
}
