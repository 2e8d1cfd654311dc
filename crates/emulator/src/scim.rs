//! A SCIM 2.0 service provider (RFC 7643/7644), Users only: the shape of the many SaaS apps
//! unseat deprovisions through SCIM. Served under `/scim/v2/` next to the Graph API, with the
//! same fault rules and request log, and the bearer token set through the control plane.
//!
//! Supported: `GET /Users` with `filter` (`userName`, `externalId` or `emails.value` `eq`),
//! `startIndex` and `count`; `GET`, `PUT`, `PATCH` (add/replace/remove on `active`, `roles`,
//! `userName`, `externalId`, `name`, or a value object) and `DELETE /Users/{id}` (the id
//! percent-decoded from its path segment); `POST /Users` with unique `userName`. Errors are
//! SCIM error bodies. The SCIM switches of [`crate::Settings`] make it behave as some apps do:
//! ignore filters, write attribute names in lower case, leave users active when asked to
//! deactivate them, issue ids with characters a URL must escape, read requests strictly.

use crate::app::decide_faults;
use crate::state::RequestRecord;
use crate::Emulator;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const MAX_COUNT: usize = 200;
const SCIM_JSON: &str = "application/scim+json";

fn error(status: StatusCode, scim_type: Option<&str>, detail: impl Into<String>) -> (StatusCode, Value) {
    let mut body = json!({ "schemas": [ERROR_SCHEMA], "status": status.as_u16().to_string(), "detail": detail.into() });
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    (status, body)
}

fn not_found(id: &str) -> (StatusCode, Value) {
    error(StatusCode::NOT_FOUND, None, format!("Resource {id} not found"))
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
    let decision = decide_faults(&emu, &method, &path);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let (status, reply, retry_after, lowercase) = {
        let mut state = emu.lock();
        let (status, reply, retry_after) = match &decision.fault {
            Some((_, status)) if (300..400).contains(status) => {
                let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::SEE_OTHER);
                (code, None, None)
            }
            Some((rule, status)) => {
                let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let (s, b) = error(code, None, format!("injected fault: HTTP {status}"));
                (s, Some(b), rule.retry_after_s)
            }
            None => {
                let token = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, t)| t.trim().to_string());
                let authorized = state.scim_token.as_ref().is_none_or(|required| token.as_ref() == Some(required));
                let media_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
                let scim_json = media_type.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(SCIM_JSON));
                let (s, b) = if !authorized {
                    let (s, b) = error(StatusCode::UNAUTHORIZED, None, "a valid bearer token is required");
                    (s, Some(b))
                } else if state.settings.scim_strict && !body.is_empty() && !scim_json {
                    let detail = format!("a request body must be sent as {SCIM_JSON}, not {media_type:?}");
                    let (s, b) = error(StatusCode::UNSUPPORTED_MEDIA_TYPE, None, detail);
                    (s, Some(b))
                } else {
                    route(&mut state, &method, &uri, &body)
                };
                (s, b, None)
            }
        };
        state.record(RequestRecord {
            at: arrived.to_rfc3339_opts(SecondsFormat::Millis, true),
            method: method.as_str().to_string(),
            path: path.clone(),
            status: status.as_u16(),
        });
        (status, reply, retry_after, state.settings.scim_lowercase_names)
    };
    if let Some(hold) = decision.hold {
        tokio::time::sleep(hold).await;
    }
    let body = reply.map(|body| if lowercase { lowercase_names(body) } else { body });
    let mut bytes = body.map(|b| serde_json::to_vec(&b).unwrap_or_default()).unwrap_or_default();
    if let Some(padding) = decision.padding {
        bytes.resize(bytes.len() + padding as usize, b' ');
    }
    let mut response = (status, bytes).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(location) = decision.fault.as_ref().and_then(|(rule, _)| rule.location.as_deref()) {
        if let Ok(v) = HeaderValue::from_str(location) {
            h.insert(header::LOCATION, v);
        }
    }
    response
}

/// Every attribute name in lower case, at every depth.
fn lowercase_names(value: Value) -> Value {
    match value {
        Value::Object(fields) => {
            Value::Object(fields.into_iter().map(|(k, v)| (k.to_lowercase(), lowercase_names(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(lowercase_names).collect()),
        other => other,
    }
}

/// A path segment with its `%XX` escapes decoded (`None` when they do not make UTF-8).
fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn route(state: &mut crate::state::State, method: &Method, uri: &Uri, body: &[u8]) -> (StatusCode, Option<Value>) {
    let rest = uri.path().trim_start_matches("/scim/v2").trim_matches('/');
    let Some(decoded) = rest.split('/').map(decode_segment).collect::<Option<Vec<String>>>() else {
        let (s, b) = error(StatusCode::BAD_REQUEST, Some("invalidPath"), format!("bad escape in /{rest}"));
        return (s, Some(b));
    };
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let parsed = || serde_json::from_slice::<Value>(body);
    let (status, body) = match (method.clone(), segments.as_slice()) {
        (Method::GET, ["Users"]) => list(state, uri),
        (Method::POST, ["Users"]) => match parsed() {
            Ok(v) => create(state, v),
            Err(e) => error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), format!("invalid JSON: {e}")),
        },
        (Method::GET, ["Users", id]) => match state.scim_users.get(*id) {
            Some(u) => (StatusCode::OK, u.clone()),
            None => not_found(id),
        },
        (Method::PUT, ["Users", id]) => match parsed() {
            Ok(v) => replace(state, id, v),
            Err(e) => error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), format!("invalid JSON: {e}")),
        },
        (Method::PATCH, ["Users", id]) => match parsed() {
            Ok(v) => patch(state, id, v),
            Err(e) => error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), format!("invalid JSON: {e}")),
        },
        (Method::DELETE, ["Users", id]) => match state.scim_users.remove(*id) {
            Some(_) => return (StatusCode::NO_CONTENT, None),
            None => not_found(id),
        },
        _ => error(StatusCode::NOT_FOUND, None, format!("no endpoint {method} /{rest}")),
    };
    (status, Some(body))
}

/// `attr eq "value"` for the attributes apps are matched on.
/// Strictly, the value is a JSON string (RFC 7644 3.4.2.2); else only `\"` and `\\` are
/// unescaped, as lenient apps do.
fn parse_filter(filter: &str, strict: bool) -> Option<(String, String)> {
    let (attr, rest) = filter.trim().split_once(char::is_whitespace)?;
    let (op, value) = rest.trim().split_once(char::is_whitespace)?;
    if !op.eq_ignore_ascii_case("eq") {
        return None;
    }
    let value = if strict {
        serde_json::from_str::<String>(value.trim()).ok()?
    } else {
        value.trim().strip_prefix('"')?.strip_suffix('"')?.replace("\\\"", "\"").replace("\\\\", "\\")
    };
    Some((attr.to_string(), value))
}

fn matches(user: &Value, attr: &str, value: &str) -> bool {
    match attr {
        a if a.eq_ignore_ascii_case("userName") => {
            user["userName"].as_str().is_some_and(|u| same_ignoring_case(u, value))
        }
        a if a.eq_ignore_ascii_case("externalId") => user["externalId"].as_str() == Some(value),
        a if a.eq_ignore_ascii_case("emails.value") => user["emails"]
            .as_array()
            .is_some_and(|es| es.iter().any(|e| e["value"].as_str().is_some_and(|v| same_ignoring_case(v, value)))),
        _ => false,
    }
}

/// Whether `a` and `b` are equal ignoring case, as RFC 7643 compares `userName` and email
/// addresses (`caseExact: false`): every character lower-cased on its own, the final sigma `ς`
/// taken for `σ`, so "ΟΔΟΣ", "οδος" and "Οδοσ" are one name, as are "Émile" and "ÉMILE".
fn same_ignoring_case(a: &str, b: &str) -> bool {
    let lower = |s: &str| -> Vec<char> {
        s.chars().flat_map(char::to_lowercase).map(|c| if c == 'ς' { 'σ' } else { c }).collect()
    };
    a == b || lower(a) == lower(b)
}

fn list(state: &crate::state::State, uri: &Uri) -> (StatusCode, Value) {
    let strict = state.settings.scim_strict;
    // Strictly, a `+` is a plus sign (RFC 3986): only form encoding makes it a space.
    let query = uri.query().map(|q| if strict { q.replace('+', "%2B") } else { q.to_string() });
    let params: Vec<(String, String)> =
        query.map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let filter = match param("filter") {
        None => None,
        Some(_) if state.settings.scim_ignores_filter => None,
        Some(f) => match parse_filter(&f, strict) {
            Some(parsed) => Some(parsed),
            None => return error(StatusCode::BAD_REQUEST, Some("invalidFilter"), format!("unsupported filter {f:?}")),
        },
    };
    let start = param("startIndex").and_then(|s| s.parse::<usize>().ok()).unwrap_or(1).max(1);
    let count = param("count").and_then(|s| s.parse::<usize>().ok()).unwrap_or(100).min(MAX_COUNT);
    let all: Vec<&Value> =
        state.scim_users.values().filter(|u| filter.as_ref().is_none_or(|(a, v)| matches(u, a, v))).collect();
    let page: Vec<Value> = all.iter().skip(start - 1).take(count).map(|u| (*u).clone()).collect();
    (
        StatusCode::OK,
        json!({ "schemas": [LIST_SCHEMA], "totalResults": all.len(), "startIndex": start,
                "itemsPerPage": page.len(), "Resources": page }),
    )
}

fn user_name_taken(state: &crate::state::State, name: &str, except: Option<&str>) -> bool {
    state.scim_users.iter().any(|(id, u)| {
        Some(id.as_str()) != except && u["userName"].as_str().is_some_and(|n| same_ignoring_case(n, name))
    })
}

fn create(state: &mut crate::state::State, mut user: Value) -> (StatusCode, Value) {
    let Some(name) = user["userName"].as_str().map(str::to_string).filter(|n| !n.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, Some("invalidValue"), "userName is required");
    };
    if user_name_taken(state, &name, None) {
        return error(StatusCode::CONFLICT, Some("uniqueness"), format!("userName {name} is already taken"));
    }
    let id = state.next_scim_id();
    let Some(fields) = user.as_object_mut() else {
        return error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "a User must be a JSON object");
    };
    fields.insert("id".into(), json!(id));
    fields.insert("schemas".into(), json!([USER_SCHEMA]));
    fields.entry("active").or_insert(json!(true));
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    fields.insert(
        "meta".into(),
        json!({ "resourceType": "User", "created": now, "lastModified": now,
                                          "location": format!("/scim/v2/Users/{id}") }),
    );
    state.scim_users.insert(id, user.clone());
    (StatusCode::CREATED, user)
}

fn replace(state: &mut crate::state::State, id: &str, mut user: Value) -> (StatusCode, Value) {
    let Some(old) = state.scim_users.get(id).cloned() else {
        return not_found(id);
    };
    let Some(name) = user["userName"].as_str().map(str::to_string) else {
        return error(StatusCode::BAD_REQUEST, Some("invalidValue"), "userName is required");
    };
    if user_name_taken(state, &name, Some(id)) {
        return error(StatusCode::CONFLICT, Some("uniqueness"), format!("userName {name} is already taken"));
    }
    if let Some(fields) = user.as_object_mut() {
        fields.insert("id".into(), json!(id));
        fields.insert("meta".into(), old["meta"].clone());
    }
    keep_active(state, &old, &mut user);
    state.scim_users.insert(id.to_string(), user.clone());
    (StatusCode::OK, user)
}

fn patch(state: &mut crate::state::State, id: &str, request: Value) -> (StatusCode, Value) {
    let Some(mut user) = state.scim_users.get(id).cloned() else {
        return not_found(id);
    };
    let old = user.clone();
    let Some(ops) = request["Operations"].as_array() else {
        return error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), "Operations is required");
    };
    for op in ops {
        let kind = op["op"].as_str().unwrap_or_default().to_ascii_lowercase();
        let path = op["path"].as_str();
        let Some(fields) = user.as_object_mut() else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, None, "stored user is not an object");
        };
        match (kind.as_str(), path) {
            ("replace" | "add", None) => {
                let Some(values) = op["value"].as_object() else {
                    return error(StatusCode::BAD_REQUEST, Some("invalidValue"), "a value object is required");
                };
                for (k, v) in values {
                    if k == "id" {
                        continue;
                    }
                    fields.insert(k.clone(), v.clone());
                }
            }
            ("replace", Some(p)) => {
                fields.insert(p.to_string(), op["value"].clone());
            }
            ("add", Some(p)) => {
                let merged = match (fields.get(p), &op["value"]) {
                    (Some(Value::Array(old)), Value::Array(new)) => {
                        Value::Array(old.iter().chain(new.iter()).cloned().collect())
                    }
                    (_, v) => v.clone(),
                };
                fields.insert(p.to_string(), merged);
            }
            ("remove", Some(p)) => {
                fields.remove(p);
            }
            _ => return error(StatusCode::BAD_REQUEST, Some("invalidSyntax"), format!("unsupported operation {op}")),
        }
    }
    if let Some(name) = user["userName"].as_str() {
        if user_name_taken(state, name, Some(id)) {
            return error(StatusCode::CONFLICT, Some("uniqueness"), format!("userName {name} is already taken"));
        }
    }
    keep_active(state, &old, &mut user);
    state.scim_users.insert(id.to_string(), user.clone());
    (StatusCode::OK, user)
}

/// With [`crate::Settings::scim_keeps_active`] (or `scim_keeps_roles`), a write leaves
/// `active` (or `roles`) as it was.
fn keep_active(state: &crate::state::State, old: &Value, user: &mut Value) {
    let Some(fields) = user.as_object_mut() else { return };
    if state.settings.scim_keeps_active {
        fields.insert("active".into(), old.get("active").cloned().unwrap_or(json!(true)));
    }
    if state.settings.scim_keeps_roles {
        match old.get("roles") {
            Some(roles) => fields.insert("roles".into(), roles.clone()),
            None => fields.remove("roles"),
        };
    }
}

/// A SCIM user as the control plane seeds and shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScimUser {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "userName")]
    pub user_name: String,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(rename = "externalId", default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

fn yes() -> bool {
    true
}

impl ScimUser {
    pub(crate) fn from_resource(id: &str, user: &Value) -> Self {
        let roles = user["roles"]
            .as_array()
            .map(|rs| rs.iter().filter_map(|r| r["value"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        Self {
            id: id.to_string(),
            user_name: user["userName"].as_str().unwrap_or_default().to_string(),
            active: user["active"].as_bool().unwrap_or(true),
            roles,
            external_id: user["externalId"].as_str().map(str::to_string),
        }
    }

    pub(crate) fn to_resource(&self) -> Value {
        let mut fields = Map::new();
        fields.insert("userName".into(), json!(self.user_name));
        fields.insert("active".into(), json!(self.active));
        fields.insert("emails".into(), json!([{ "value": self.user_name, "primary": true }]));
        if let Some(external_id) = &self.external_id {
            fields.insert("externalId".into(), json!(external_id));
        }
        if !self.roles.is_empty() {
            let roles: Vec<Value> = self.roles.iter().map(|r| json!({ "value": r, "primary": true })).collect();
            fields.insert("roles".into(), Value::Array(roles));
        }
        Value::Object(fields)
    }
}

pub(crate) fn seed(state: &mut crate::state::State, user: &ScimUser) -> Result<ScimUser, crate::EmulatorError> {
    match create(state, user.to_resource()) {
        (StatusCode::CREATED, created) => {
            let id = created["id"].as_str().unwrap_or_default().to_string();
            Ok(ScimUser::from_resource(&id, &created))
        }
        _ => Err(crate::EmulatorError::DuplicateUserName(user.user_name.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_with_quotes() {
        for strict in [false, true] {
            assert_eq!(parse_filter(r#"userName eq "a@x.io""#, strict), Some(("userName".into(), "a@x.io".into())));
            let quoted = Some(("externalId".into(), "say \"hi\"".into()));
            assert_eq!(parse_filter(r#"externalId EQ "say \"hi\"""#, strict), quoted);
            assert_eq!(parse_filter("userName co \"a\"", strict), None);
            assert_eq!(parse_filter("garbage", strict), None);
        }
        assert_eq!(parse_filter(r#"userName eq "a\u0040x.io""#, true), Some(("userName".into(), "a@x.io".into())));
    }

    #[test]
    fn user_names_and_emails_are_matched_ignoring_case_beyond_ascii() {
        let mut state = crate::state::State::default();
        let user = json!({"userName": "ΟΔΟΣ@corp.example", "emails": [{"value": "Émile@Corp.example"}]});
        assert_eq!(create(&mut state, user).0, StatusCode::CREATED);
        for taken in ["οδος@corp.example", "Οδοσ@CORP.example"] {
            let (status, body) = create(&mut state, json!({"userName": taken}));
            assert_eq!((status, body["scimType"].as_str()), (StatusCode::CONFLICT, Some("uniqueness")), "{taken}");
        }
        let found = |filter: &str| {
            let uri: Uri = format!(
                "/Users?filter={}",
                url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
            )
            .parse()
            .unwrap();
            let (status, body) = list(&state, &uri);
            assert_eq!(status, StatusCode::OK);
            body["totalResults"].as_u64()
        };
        assert_eq!(found(r#"userName eq "οδοσ@CORP.EXAMPLE""#), Some(1));
        assert_eq!(found(r#"emails.value eq "ÉMILE@corp.example""#), Some(1));
        // Other letters stay apart.
        assert_eq!(found(r#"userName eq "οδοι@corp.example""#), Some(0));
        assert_eq!(create(&mut state, json!({"userName": "Emile@corp.example"})).0, StatusCode::CREATED);
    }
}
