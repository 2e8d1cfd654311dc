//! The SCIM User as unseat keeps it: the few fields access decisions need, parsed and checked,
//! plus the whole representation (canonical attribute names, no secrets) to store and return.

use crate::error::ScimError;
use crate::filter::get_ci;
use crate::schema::{is_extension_urn, ENTERPRISE_USER_SCHEMA, USER_SCHEMA};
use serde_json::{json, Map, Value};

/// Longest userName, externalId or displayName accepted, in bytes of UTF-8: names are
/// indexed, and an index entry must fit PostgreSQL's limit (about 2,700 bytes) whatever the
/// characters are.
pub const MAX_NAME_LEN: usize = 1024;

/// Core User attributes, spelled as RFC 7643 does: incoming names are matched
/// case-insensitively and stored with this spelling.
pub const USER_ATTRIBUTES: &[&str] = &[
    "schemas",
    "userName",
    "name",
    "displayName",
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "active",
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509Certificates",
    "externalId",
];

/// Attributes a client may send but that are never stored: server-assigned (`id`, `meta`),
/// read-only (`groups`, computed from group membership) or secret (`password`).
pub const DROPPED_ATTRIBUTES: &[&str] = &["id", "meta", "groups", "password"];

/// One email address of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub value: String,
    pub kind: Option<String>,
    pub primary: bool,
}

/// A parsed User. Fields other than `resource` are what unseat indexes and decides on.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub display_name: Option<String>,
    pub name: Option<Value>,
    pub emails: Vec<Email>,
    /// The enterprise extension, kept as the IdP sent it.
    pub enterprise: Option<Value>,
    /// The representation to store: canonical names, `active` a boolean, nulls and
    /// dropped attributes removed, `schemas` naming what is present.
    pub resource: Value,
}

/// Reads "true"/"false" in any case, the way Entra ID sends booleans.
pub fn parse_bool_str(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A boolean attribute: JSON boolean or a "True"/"False" string.
pub fn parse_bool(attr: &str, v: &Value) -> Result<bool, ScimError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => {
            parse_bool_str(s).ok_or_else(|| ScimError::invalid_value(format!("{attr} must be a boolean, got {s:?}")))
        }
        other => Err(ScimError::invalid_value(format!("{attr} must be a boolean, got {other}"))),
    }
}

fn optional_string(attr: &str, v: Option<&Value>) -> Result<Option<String>, ScimError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_NAME_LEN => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(ScimError::invalid_value(format!("{attr} is longer than {MAX_NAME_LEN} bytes"))),
        Some(other) => Err(ScimError::invalid_value(format!("{attr} must be a string, got {other}"))),
    }
}

/// The canonical spelling of `key` among `known`, or `key` itself.
pub(crate) fn canonical(key: &str, known: &[&'static str]) -> String {
    if key.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) {
        return ENTERPRISE_USER_SCHEMA.to_string();
    }
    known.iter().find(|k| k.eq_ignore_ascii_case(key)).map(|k| k.to_string()).unwrap_or_else(|| key.to_string())
}

/// Drops nulls (RFC 7643 §2.5: null means unassigned) recursively inside objects.
pub(crate) fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().filter(|v| !v.is_null()).map(strip_nulls).collect()),
        other => other,
    }
}

/// Entra sends the enterprise extension's `manager` as the manager's id alone (`"manager":
/// "…"`, also as a PATCH value); RFC 7643 §4.3 and this service's `/Schemas` make it complex.
/// An id becomes `{"value": id}`; an empty one means no manager.
fn normalise_manager(ext: &mut Map<String, Value>) {
    let Some(key) = ext.keys().find(|k| k.eq_ignore_ascii_case("manager")).cloned() else { return };
    match ext.remove(&key) {
        Some(Value::String(id)) if id.trim().is_empty() => {}
        Some(Value::String(id)) => {
            ext.insert("manager".into(), json!({ "value": id }));
        }
        Some(other) => {
            ext.insert("manager".into(), other);
        }
        None => {}
    }
}

/// Multi-valued complex attributes whose values may carry `primary` (RFC 7643 §2.4), other
/// than `emails`, which is read on its own.
const WITH_PRIMARY: &[&str] =
    &["phoneNumbers", "ims", "photos", "addresses", "entitlements", "roles", "x509Certificates"];

/// Stores `primary` as a boolean however the IdP wrote it (Entra writes `"True"`), so filters,
/// answers and the one-primary rule read one form. Another value is refused.
fn normalise_primary(attr: &str, items: &mut [Value]) -> Result<(), ScimError> {
    for obj in items.iter_mut().filter_map(Value::as_object_mut) {
        let Some(key) = obj.keys().find(|k| k.eq_ignore_ascii_case("primary")).cloned() else { continue };
        let Some(value) = obj.remove(&key) else { continue };
        if !value.is_null() {
            obj.insert("primary".into(), Value::Bool(parse_bool(&format!("{attr}.primary"), &value)?));
        }
    }
    Ok(())
}

/// Entra's SingleAppRoleAssignment mapping sends a PATCH's role as the app role assignment
/// JSON-encoded in `value` (`"{\"id\":\"…\",\"value\":\"Admin\",\"displayName\":\"Admin\"}"`),
/// where a POST has the plain value. Returns the role as a plain value (`value` the app role's
/// value, else its displayName; `display` its displayName), or `None` when `item` is not encoded.
fn decode_app_role(item: &Value) -> Option<Value> {
    let encoded = get_ci(item, "value")?.as_str()?.trim();
    if !encoded.starts_with('{') {
        return None;
    }
    let inner: Value = serde_json::from_str(encoded).ok()?;
    let text = |k: &str| get_ci(&inner, k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let value = text("value").or_else(|| text("displayName"))?;
    let mut out = item.as_object().cloned().unwrap_or_default();
    out.retain(|k, _| !k.eq_ignore_ascii_case("value") && !k.eq_ignore_ascii_case("display"));
    out.insert("value".into(), Value::String(value.to_string()));
    if let Some(display) = text("displayName") {
        out.insert("display".into(), Value::String(display.to_string()));
    }
    Some(Value::Object(out))
}

/// `roles` values (an array, or one value) with Entra's JSON-encoded app role assignments made
/// plain; `None` when none was encoded.
pub(crate) fn decode_app_roles(value: &Value) -> Option<Value> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    if !items.iter().any(|i| decode_app_role(i).is_some()) {
        return None;
    }
    Some(Value::Array(items.into_iter().map(|i| decode_app_role(i).unwrap_or_else(|| i.clone())).collect()))
}

impl User {
    /// Parses a User from a POST/PUT body or from a stored/patched representation.
    pub fn parse(body: &Value) -> Result<Self, ScimError> {
        let Some(input) = body.as_object() else {
            return Err(ScimError::invalid_syntax("a User must be a JSON object"));
        };
        let mut res = Map::new();
        for (k, v) in input {
            // RFC 7643 §2.5: null and an empty array are unassigned, and so is a complex value
            // left with nothing in it (`name` once its parts are removed): none is kept.
            let empty = match v {
                Value::Null => true,
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            };
            if DROPPED_ATTRIBUTES.iter().any(|d| d.eq_ignore_ascii_case(k)) || empty {
                continue;
            }
            res.insert(canonical(k, USER_ATTRIBUTES), strip_nulls(v.clone()));
        }

        let user_name = match res.get("userName") {
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_NAME_LEN => s.clone(),
            Some(Value::String(s)) if !s.trim().is_empty() => {
                return Err(ScimError::invalid_value(format!("userName is longer than {MAX_NAME_LEN} bytes")))
            }
            Some(Value::String(_)) | None => {
                return Err(ScimError::invalid_value("userName is required and must not be empty"))
            }
            Some(other) => return Err(ScimError::invalid_value(format!("userName must be a string, got {other}"))),
        };
        let external_id = optional_string("externalId", res.get("externalId"))?;
        let display_name = optional_string("displayName", res.get("displayName"))?;
        // Absent means active (the IdP deprovisions explicitly); the representation keeps
        // what was sent, normalised to a boolean.
        let active = match res.get("active") {
            None => true,
            Some(v) => {
                let b = parse_bool("active", v)?;
                res.insert("active".into(), Value::Bool(b));
                b
            }
        };

        let name = match res.get("name") {
            None => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => return Err(ScimError::invalid_value(format!("name must be an object, got {other}"))),
        };

        let mut emails = Vec::new();
        match res.get_mut("emails") {
            None => {}
            Some(Value::Array(items)) => {
                for item in items.iter_mut() {
                    let value = match get_ci(item, "value") {
                        Some(Value::String(s)) => s.clone(),
                        _ => return Err(ScimError::invalid_value("every email needs a string value")),
                    };
                    let kind = optional_string("emails.type", get_ci(item, "type"))?;
                    let primary = match get_ci(item, "primary") {
                        None | Some(Value::Null) => false,
                        Some(v) => parse_bool("emails.primary", v)?,
                    };
                    if let Some(obj) = item.as_object_mut() {
                        let fixed: Map<String, Value> = std::mem::take(obj)
                            .into_iter()
                            .map(|(k, v)| (canonical(&k, &["value", "type", "primary", "display"]), v))
                            .collect();
                        *obj = fixed;
                        if obj.contains_key("primary") {
                            obj.insert("primary".into(), Value::Bool(primary));
                        }
                    }
                    emails.push(Email { value, kind, primary });
                }
            }
            Some(other) => return Err(ScimError::invalid_value(format!("emails must be an array, got {other}"))),
        }

        if let Some(roles) = res.get("roles").and_then(decode_app_roles) {
            res.insert("roles".into(), roles);
        }
        for attr in WITH_PRIMARY {
            if let Some(Value::Array(items)) = res.get_mut(*attr) {
                normalise_primary(attr, items)?;
            }
        }

        let enterprise = match res.get_mut(ENTERPRISE_USER_SCHEMA) {
            None => None,
            Some(Value::Object(ext)) => {
                normalise_manager(ext);
                Some(Value::Object(ext.clone()))
            }
            Some(_) => return Err(ScimError::invalid_value("the enterprise extension must be an object")),
        };

        let mut schemas = vec![Value::String(USER_SCHEMA.into())];
        if enterprise.is_some() {
            schemas.push(Value::String(ENTERPRISE_USER_SCHEMA.into()));
        }
        // Other extensions (an IdP's custom one) are kept as sent, and named too.
        for (key, value) in &res {
            if value.is_object() && !key.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) && is_extension_urn(key) {
                schemas.push(Value::String(key.clone()));
            }
        }
        res.insert("schemas".into(), Value::Array(schemas));

        Ok(Self {
            user_name,
            external_id,
            active,
            display_name,
            name,
            emails,
            enterprise,
            resource: Value::Object(res),
        })
    }

    /// The address apps know this person by: the primary email, else the first work email,
    /// else the first email, else the userName when it looks like an address.
    pub fn primary_email(&self) -> Option<&str> {
        self.emails
            .iter()
            .find(|e| e.primary)
            .or_else(|| self.emails.iter().find(|e| e.kind.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("work"))))
            .or_else(|| self.emails.first())
            .map(|e| e.value.as_str())
            .or_else(|| looks_like_email(&self.user_name).then_some(self.user_name.as_str()))
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_an_okta_create() {
        let u = User::parse(&json!({
            "schemas": [USER_SCHEMA], "userName": "test.user@okta.local",
            "name": {"givenName": "Test", "familyName": "User"},
            "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
            "displayName": "Test User", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7",
            "groups": [], "password": "1mz050nq", "active": true
        }))
        .unwrap();
        assert_eq!(u.user_name, "test.user@okta.local");
        assert_eq!(u.external_id.as_deref(), Some("00ujl29u0le5T6Aj10h7"));
        assert!(u.active);
        assert_eq!(u.primary_email(), Some("test.user@okta.local"));
        assert!(u.resource.get("password").is_none(), "secrets are never kept");
        assert!(u.resource.get("groups").is_none());
        assert_eq!(u.resource["locale"], "en-US");
    }

    #[test]
    fn active_defaults_true_and_accepts_strings() {
        assert!(User::parse(&json!({"userName": "a"})).unwrap().active);
        assert!(!User::parse(&json!({"userName": "a", "active": "False"})).unwrap().active);
        assert!(User::parse(&json!({"userName": "a", "active": "TRUE"})).unwrap().active);
        let u = User::parse(&json!({"userName": "a", "Active": "false"})).unwrap();
        assert!(!u.active);
        assert_eq!(u.resource["active"], false);
        for bad in [json!("yes"), json!(1), json!([true])] {
            let e = User::parse(&json!({"userName": "a", "active": bad})).unwrap_err();
            assert_eq!(e.scim_type, Some("invalidValue"));
        }
    }

    #[test]
    fn user_name_required_non_empty_string() {
        for body in [
            json!({}),
            json!({"userName": ""}),
            json!({"userName": "  "}),
            json!({"userName": 5}),
            json!({"userName": null}),
        ] {
            assert_eq!(User::parse(&body).unwrap_err().scim_type, Some("invalidValue"), "{body}");
        }
        assert_eq!(User::parse(&json!([1])).unwrap_err().scim_type, Some("invalidSyntax"));
        assert!(User::parse(&json!({"userName": "x".repeat(MAX_NAME_LEN + 1)})).is_err());
        // Four-byte characters count as four: the name must fit an index entry.
        assert!(User::parse(&json!({"userName": "😀".repeat(MAX_NAME_LEN / 4 + 1)})).is_err());
        assert!(User::parse(&json!({"userName": "😀".repeat(MAX_NAME_LEN / 4)})).is_ok());
    }

    #[test]
    fn attribute_names_are_case_insensitive() {
        let u = User::parse(
            &json!({"USERNAME": "bob", "ExternalID": "e", "Emails": [{"Value": "b@x.io", "TYPE": "work"}]}),
        )
        .unwrap();
        assert_eq!(u.user_name, "bob");
        assert_eq!(u.external_id.as_deref(), Some("e"));
        assert_eq!(u.primary_email(), Some("b@x.io"));
        assert_eq!(u.resource["emails"][0]["value"], "b@x.io");
    }

    #[test]
    fn a_manager_sent_as_an_id_is_stored_as_the_complex_attribute() {
        let ext = |manager: Value| {
            let u =
                User::parse(&json!({"userName": "u", ENTERPRISE_USER_SCHEMA: {"Manager": manager, "department": "D"}}))
                    .unwrap();
            u.resource[ENTERPRISE_USER_SCHEMA].clone()
        };
        assert_eq!(ext(json!("m1")), json!({"manager": {"value": "m1"}, "department": "D"}));
        assert_eq!(ext(json!({"value": "m1"})), json!({"manager": {"value": "m1"}, "department": "D"}));
        assert_eq!(ext(json!("")), json!({"department": "D"}), "an empty id is no manager");
    }

    #[test]
    fn primary_email_order() {
        let p = |emails: Value, name: &str| {
            User::parse(&json!({"userName": name, "emails": emails})).unwrap().primary_email().map(str::to_string)
        };
        assert_eq!(
            p(
                json!([{"value": "h@x", "type": "home"}, {"value": "w@x", "type": "work"}, {"value": "p@x", "primary": "True"}]),
                "u"
            ),
            Some("p@x".into())
        );
        assert_eq!(
            p(json!([{"value": "h@x", "type": "home"}, {"value": "w@x", "type": "Work"}]), "u"),
            Some("w@x".into())
        );
        assert_eq!(p(json!([{"value": "h@x", "type": "home"}]), "u"), Some("h@x".into()));
        assert_eq!(p(json!([]), "u@example.com"), Some("u@example.com".into()));
        assert_eq!(p(json!([]), "Test_User_1"), None);
        assert_eq!(p(json!([]), "a@b@c"), None);
    }

    #[test]
    fn enterprise_extension_kept_opaque() {
        let u = User::parse(&json!({"userName": "a",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "7", "manager": {"value": "m"}}}))
        .unwrap();
        assert_eq!(u.enterprise.unwrap()["manager"]["value"], "m");
        assert_eq!(u.resource["schemas"][1], ENTERPRISE_USER_SCHEMA);
    }

    #[test]
    fn bad_emails_rejected() {
        for emails in [
            json!("a@b"),
            json!([{"type": "work"}]),
            json!([{"value": 3}]),
            json!([{"value": "a", "primary": "maybe"}]),
        ] {
            assert!(User::parse(&json!({"userName": "a", "emails": emails})).is_err());
        }
    }
}
