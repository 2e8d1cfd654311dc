//! Building SCIM responses: the media type, `meta`, ETags and `Location`.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde_json::{json, Value};
use unseat_scim::{CompareOp, Filter, ScimError};
use unseat_store::directory::{GroupRecord, Member, Stamp, StampRange, UserRecord};
use uuid::Uuid;

pub const SCIM_MEDIA_TYPE: &str = "application/scim+json";

pub fn scim_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_MEDIA_TYPE))], body.to_string()).into_response()
}

/// The weak ETag of a resource version, as in `meta.version`.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// A resource answer with its `ETag` (and `Location` for a 201).
pub fn resource_response(status: StatusCode, body: &Value, version: i64, location: Option<&str>) -> Response {
    let mut resp = scim_response(status, body);
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// A 204 with the resource's new `ETag`.
pub fn no_content(version: i64) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Checks `If-Match` against the current version: absent, `*` or a listed match passes;
/// anything else is 412 so that a client never overwrites a change it did not see.
pub fn check_if_match(headers: &HeaderMap, version: i64) -> Result<(), ScimError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let v = v.to_str().map_err(|_| ScimError::precondition_failed("If-Match is not readable"))?;
    if names_version(v, version) {
        Ok(())
    } else {
        Err(ScimError::precondition_failed(format!("the resource is at version {}, not {v}", etag(version))))
    }
}

/// For a GET: when `If-None-Match` names the current version (or is `*`), the answer is
/// `304 Not Modified` with the `ETag` and no body, so a client that holds the resource does
/// not read it again (RFC 7644 §3.14; tags compared weakly, RFC 7232 §3.2). An unreadable
/// header is ignored: the resource is sent.
pub fn not_modified(headers: &HeaderMap, version: i64) -> Option<Response> {
    let v = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    names_version(v, version).then(|| {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag(version)) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        resp
    })
}

/// True when an `If-Match`/`If-None-Match` value is `*` or lists `version`'s tag, weak or not.
fn names_version(value: &str, version: i64) -> bool {
    let want = version.to_string();
    value.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag.trim_matches('"') == want
    })
}

/// A filter term on `meta.created` or `meta.lastModified` (`meta.lastModified gt "…"`) as the
/// range of the stored timestamp it selects. [`meta`] renders a timestamp truncated to the millisecond, so both ends are
/// whole milliseconds and a timestamp lies in the range exactly when its rendering satisfies
/// the term.
pub(crate) fn stamp_range(term: &Filter) -> Option<StampRange> {
    let (stamp, (op, t)) = [(Stamp::Created, "created"), (Stamp::Modified, "lastModified")]
        .into_iter()
        .find_map(|(stamp, sub)| term.instant_comparison("meta", sub).map(|c| (stamp, c)))?;
    let t = t.with_timezone(&Utc);
    if t.nanosecond() >= 1_000_000_000 {
        return None; // a leap second (`23:59:60`), which no stored timestamp renders as: scanned
    }
    let floor = t.checked_sub_signed(TimeDelta::nanoseconds(i64::from(t.nanosecond() % 1_000_000)))?;
    let next = floor.checked_add_signed(TimeDelta::milliseconds(1))?;
    let ceil = if floor == t { floor } else { next };
    let (from, until) = match op {
        CompareOp::Gt => (Some(next), None),
        CompareOp::Ge => (Some(ceil), None),
        CompareOp::Lt => (None, Some(ceil)),
        CompareOp::Le => (None, Some(next)),
        CompareOp::Eq => (Some(ceil), Some(next)),
        CompareOp::Ne | CompareOp::Co | CompareOp::Sw | CompareOp::Ew => return None,
    };
    Some(StampRange { stamp, from, until })
}

fn meta(kind: &str, location: &str, created: DateTime<Utc>, modified: DateTime<Utc>, version: i64) -> Value {
    json!({
        "resourceType": kind,
        "created": created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "lastModified": modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "location": location,
        "version": etag(version),
    })
}

pub fn user_location(base: &str, id: Uuid) -> String {
    format!("{base}/Users/{id}")
}

pub fn group_location(base: &str, id: Uuid) -> String {
    format!("{base}/Groups/{id}")
}

/// A stored user as the IdP sees it.
pub fn render_user(base: &str, u: &UserRecord) -> Value {
    let mut v = u.resource.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("id".into(), Value::String(u.id.to_string()));
        obj.insert("meta".into(), meta("User", &user_location(base, u.id), u.created_at, u.updated_at, u.version));
    }
    v
}

/// A stored group as the IdP sees it; `members` only when they were loaded. Members carry
/// no `display`: clients compare the members they sent with the ones returned.
pub fn render_group(base: &str, g: &GroupRecord, members: Option<&[Member]>) -> Value {
    let mut v = g.resource.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("id".into(), Value::String(g.id.to_string()));
        obj.insert("displayName".into(), Value::String(g.display_name.clone()));
        if let Some(members) = members {
            let list: Vec<Value> = members
                .iter()
                .map(|m| {
                    json!({
                        "value": m.user_id.to_string(),
                        "$ref": user_location(base, m.user_id),
                        "type": "User",
                    })
                })
                .collect();
            obj.insert("members".into(), Value::Array(list));
        }
        obj.insert("meta".into(), meta("Group", &group_location(base, g.id), g.created_at, g.updated_at, g.version));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_range_holds_the_timestamps_whose_rendering_satisfies_the_term() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let rendered = |t: DateTime<Utc>| meta("User", "", t, t, 1)["lastModified"].as_str().unwrap().to_string();
        let base = at("2026-11-25T10:30:00.123Z");
        // Stored timestamps around the probes, to the microsecond.
        let stored: Vec<DateTime<Utc>> =
            (-2500..=2500).step_by(250).map(|us| base + TimeDelta::microseconds(us)).collect();
        for probe in ["2026-11-25T10:30:00.123Z", "2026-11-25T11:30:00.1235+01:00", "2026-11-25T10:30:00.1219999Z"] {
            for op in ["eq", "gt", "ge", "lt", "le"] {
                let term = Filter::parse(&format!(r#"meta.lastModified {op} "{probe}""#)).unwrap();
                let range = stamp_range(&term).unwrap();
                assert_eq!(range.stamp, Stamp::Modified);
                for &t in &stored {
                    let in_range = range.from.is_none_or(|f| t >= f) && range.until.is_none_or(|u| t < u);
                    let selected = term.matches(&json!({"meta": {"lastModified": rendered(t)}}));
                    assert_eq!(in_range, selected, "{op} {probe} at {t:?}");
                }
            }
        }
        let created = Filter::parse(r#"meta.created ge "2026-01-01T00:00:00Z""#).unwrap();
        assert_eq!(
            stamp_range(&created),
            Some(StampRange { stamp: Stamp::Created, from: Some(at("2026-01-01T00:00:00Z")), until: None })
        );
        for none in [
            r#"meta.lastModified ne "2026-01-01T00:00:00Z""#,
            r#"meta.version eq "2026-01-01T00:00:00Z""#,
            r#"meta.lastModified gt "2016-12-31T23:59:60.5Z""#,
        ] {
            assert_eq!(stamp_range(&Filter::parse(none).unwrap()), None, "{none}");
        }
    }
}
