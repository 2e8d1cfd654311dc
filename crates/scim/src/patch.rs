//! SCIM PATCH (RFC 7644 §3.5.2) with the variations Okta and Entra ID send: capitalised `op`
//! names, string booleans, path-less values with dotted or URN-qualified keys, and the three
//! ways of removing a group member.
//!
//! A User patch is applied to the stored JSON (then re-checked with [`User::parse`]); a Group
//! patch becomes a [`MemberChange`] so the service can change member rows one by one.

use crate::error::ScimError;
use crate::filter::{get_ci, AttrPath, CompareOp, Filter, MAX_FILTER_LEN};
use crate::group::{display_name, external_id, member_ids};
use crate::schema::{is_core_schema, is_extension_urn, PATCH_OP_SCHEMA};
use crate::user::{canonical, User, USER_ATTRIBUTES};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// Most operations one PATCH may carry.
pub const MAX_OPERATIONS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Replace,
    Remove,
}

/// A PATCH target: `attr`, `attr.sub`, `urn:…:attr`, or `attr[filter]` with an optional `.sub`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub urn: Option<String>,
    pub name: String,
    pub filter: Option<Filter>,
    pub sub: Option<String>,
}

impl PatchPath {
    pub fn parse(s: &str) -> Result<Self, ScimError> {
        let s = s.trim();
        if s.is_empty() || s.len() > MAX_FILTER_LEN {
            return Err(ScimError::invalid_path("empty or overlong path"));
        }
        let Some(open) = s.find('[') else {
            let a = AttrPath::parse(s)?;
            return Ok(Self { urn: a.urn, name: a.name, filter: None, sub: a.sub });
        };
        let close = s
            .rfind(']')
            .filter(|c| *c > open)
            .ok_or_else(|| ScimError::invalid_path(format!("unbalanced brackets in path {s:?}")))?;
        let attr = AttrPath::parse(&s[..open])?;
        if attr.sub.is_some() {
            return Err(ScimError::invalid_path(format!(
                "a value filter must follow a multi-valued attribute in {s:?}"
            )));
        }
        let filter = Filter::parse(&s[open + 1..close])?;
        let after = &s[close + 1..];
        let sub = match after.strip_prefix('.') {
            None if after.is_empty() => None,
            Some(sub) if AttrPath::parse(sub).is_ok_and(|p| p.sub.is_none() && p.urn.is_none()) => {
                Some(sub.to_string())
            }
            _ => return Err(ScimError::invalid_path(format!("unexpected {after:?} after the value filter"))),
        };
        Ok(Self { urn: attr.urn, name: attr.name, filter: Some(filter), sub })
    }

    fn is(&self, name: &str) -> bool {
        self.urn.is_none() && self.name.eq_ignore_ascii_case(name)
    }
}

/// One operation of a PATCH request.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: OpKind,
    /// The path as sent, for messages.
    pub raw_path: Option<String>,
    /// `None` both without a path and when the path names a whole schema extension.
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

/// A parsed `PatchOp` message.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRequest {
    pub operations: Vec<PatchOperation>,
}

impl PatchRequest {
    pub fn parse(body: &Value) -> Result<Self, ScimError> {
        if !body.is_object() {
            return Err(ScimError::invalid_syntax("a PATCH body must be a JSON object"));
        }
        let has_schema = matches!(get_ci(body, "schemas"), Some(Value::Array(s))
            if s.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP_SCHEMA))));
        if !has_schema {
            return Err(ScimError::invalid_syntax(format!("schemas must contain {PATCH_OP_SCHEMA}")));
        }
        let ops = match get_ci(body, "Operations") {
            Some(Value::Array(ops)) if !ops.is_empty() && ops.len() <= MAX_OPERATIONS => ops,
            Some(Value::Array(ops)) if ops.is_empty() => {
                return Err(ScimError::invalid_value("Operations must not be empty"))
            }
            Some(Value::Array(_)) => {
                return Err(ScimError::invalid_value(format!("at most {MAX_OPERATIONS} operations per PATCH")))
            }
            _ => return Err(ScimError::invalid_syntax("Operations must be an array of operations")),
        };
        let mut operations = Vec::with_capacity(ops.len());
        for o in ops {
            if !o.is_object() {
                return Err(ScimError::invalid_syntax("each operation must be a JSON object"));
            }
            let op = match get_ci(o, "op").and_then(Value::as_str) {
                Some(s) if s.eq_ignore_ascii_case("add") => OpKind::Add,
                Some(s) if s.eq_ignore_ascii_case("replace") => OpKind::Replace,
                Some(s) if s.eq_ignore_ascii_case("remove") => OpKind::Remove,
                Some(s) => return Err(ScimError::invalid_syntax(format!("unknown op {s:?} (add, replace or remove)"))),
                None => return Err(ScimError::invalid_syntax("each operation needs an op")),
            };
            let raw_path = match get_ci(o, "path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if p.trim().is_empty() => None,
                Some(Value::String(p)) => Some(p.trim().to_string()),
                Some(other) => return Err(ScimError::invalid_path(format!("path must be a string, got {other}"))),
            };
            let path = match &raw_path {
                Some(p) if is_extension_urn(p) || is_core_schema(p) => None,
                Some(p) => Some(PatchPath::parse(p)?),
                None => None,
            };
            let value = get_ci(o, "value").cloned();
            if raw_path.is_none() && op == OpKind::Remove {
                return Err(ScimError::no_target("remove needs a path"));
            }
            if op != OpKind::Remove && value.is_none() {
                return Err(ScimError::invalid_value(format!("{op:?} needs a value")));
            }
            operations.push(PatchOperation { op, raw_path, path, value });
        }
        Ok(Self { operations })
    }
}

/// `Some(active)` when the request does nothing but set `active` (the IdPs' deactivation and
/// reactivation, in any of their shapes): the service can then apply it without reading and
/// re-checking the whole user.
pub fn only_active(req: &PatchRequest) -> Option<bool> {
    let [op] = req.operations.as_slice() else { return None };
    if op.op == OpKind::Remove {
        return None;
    }
    let value = match (&op.path, &op.raw_path, &op.value) {
        (Some(p), _, Some(v)) if p.is("active") && p.filter.is_none() && p.sub.is_none() => v,
        (None, None, Some(Value::Object(m))) if m.len() == 1 => {
            let (k, v) = m.iter().next()?;
            if !k.eq_ignore_ascii_case("active") {
                return None;
            }
            v
        }
        _ => return None,
    };
    crate::user::parse_bool("active", value).ok()
}

/// Applies `req` to a User's stored JSON and returns the re-checked result. `id` is the
/// user's id: a path-less value may repeat it (Okta does), but not change it.
pub fn apply_user_patch(resource: &Value, req: &PatchRequest, id: &str) -> Result<User, ScimError> {
    let mut res = resource.as_object().cloned().unwrap_or_default();
    for op in &req.operations {
        match (&op.path, &op.raw_path) {
            (Some(path), _) => apply_path(&mut res, op.op, path, op.value.as_ref(), id)?,
            // A whole schema as the path: an extension object, or the core attributes.
            (None, Some(schema)) => apply_schema(&mut res, op.op, schema, op.value.as_ref(), id)?,
            (None, None) => {
                let Some(Value::Object(v)) = &op.value else {
                    return Err(ScimError::invalid_value("an operation without a path needs an object value"));
                };
                for (k, v) in v {
                    if is_extension_urn(k) || is_core_schema(k) {
                        apply_schema(&mut res, op.op, k, Some(v), id)?;
                    } else {
                        let path = PatchPath::parse(k)?;
                        apply_path(&mut res, op.op, &path, Some(v), id)?;
                    }
                }
            }
        }
    }
    let before = resource.as_object();
    for (name, value) in res.iter_mut() {
        if let Value::Array(items) = value {
            let before = before.and_then(|b| find_key(b, name).and_then(|k| b.get(&k)));
            one_primary(items, before.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default());
        }
    }
    User::parse(&Value::Object(res))
}

/// RFC 7644 §3.5.2: a PATCH that makes a value of a multi-valued attribute `primary` makes
/// every other value of it not primary. `items` is the attribute after the PATCH, `before` the
/// values it had; when the PATCH made several primary, the last one stays so. Values that were
/// primary together before the PATCH, and not made so by it, are left as they were.
fn one_primary(items: &mut [Value], before: &[Value]) {
    let primary = |v: &Value| get_ci(v, "primary").is_some_and(|p| crate::user::parse_bool("primary", p) == Ok(true));
    let made_primary = items.iter().rposition(|i| primary(i) && !before.iter().any(|b| b == i && primary(b)));
    let Some(keep) = made_primary else { return };
    for (n, item) in items.iter_mut().enumerate() {
        if n != keep && primary(item) {
            if let Value::Object(fields) = item {
                let key = find_key(fields, "primary").unwrap_or_else(|| "primary".into());
                fields.insert(key, Value::Bool(false));
            }
        }
    }
}

/// An operation on a whole schema, `schema` an extension's URN (its object, stored under the
/// URN) or a core schema's (its attributes, at the top): `value` holds attributes of it, each
/// applied as if named by its own path; remove drops the whole extension.
fn apply_schema(
    res: &mut Map<String, Value>,
    kind: OpKind,
    schema: &str,
    value: Option<&Value>,
    id: &str,
) -> Result<(), ScimError> {
    let urn = (!is_core_schema(schema)).then(|| canonical(schema, &[]));
    if kind == OpKind::Remove {
        let Some(urn) = urn else {
            return Err(ScimError::invalid_path("the core schema's attributes are removed one by one"));
        };
        remove_ci(res, &urn);
        return Ok(());
    }
    let Some(Value::Object(attributes)) = value else {
        return Err(ScimError::invalid_value(format!("the value for {schema} must be an object of its attributes")));
    };
    for (name, v) in attributes {
        let path = PatchPath { urn: urn.clone(), name: name.clone(), filter: None, sub: None };
        apply_path(res, kind, &path, Some(v), id)?;
    }
    Ok(())
}

fn find_key(map: &Map<String, Value>, key: &str) -> Option<String> {
    if map.contains_key(key) {
        return Some(key.to_string());
    }
    map.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()
}

fn remove_ci(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    find_key(map, key).and_then(|k| map.remove(&k))
}

/// Merges `value`'s members into `target` (RFC 7644: replacing a complex attribute replaces
/// the sub-attributes given and keeps the others).
fn merge(target: &mut Map<String, Value>, value: &Map<String, Value>) {
    for (k, v) in value {
        let key = find_key(target, k).unwrap_or_else(|| k.clone());
        if v.is_null() {
            target.remove(&key);
        } else {
            target.insert(key, v.clone());
        }
    }
}

fn same_item(a: &Value, b: &Value) -> bool {
    match (get_ci(a, "value"), get_ci(b, "value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn apply_path(
    res: &mut Map<String, Value>,
    kind: OpKind,
    path: &PatchPath,
    value: Option<&Value>,
    id: &str,
) -> Result<(), ScimError> {
    if path.is("id") {
        return match value {
            Some(Value::String(v)) if v == id && kind != OpKind::Remove => Ok(()),
            _ => Err(ScimError::mutability("id cannot be changed")),
        };
    }
    if path.is("meta") {
        return Err(ScimError::mutability("meta is set by the service provider"));
    }
    if path.is("groups") {
        return Err(ScimError::mutability("groups is read-only; change membership through /Groups"));
    }
    if path.is("schemas") || path.is("password") {
        // schemas is recomputed from the attributes present; passwords are never kept.
        return Ok(());
    }
    // Entra's SingleAppRoleAssignment adds the user's one role, JSON-encoded: it replaces the
    // role the user had (appending it would leave the old one, perhaps higher, in force).
    let decoded = (path.is("roles") && path.filter.is_none() && path.sub.is_none())
        .then(|| value.and_then(crate::user::decode_app_roles))
        .flatten();
    let (kind, value) = match &decoded {
        Some(v) if kind == OpKind::Add => (OpKind::Replace, Some(v)),
        Some(v) => (kind, Some(v)),
        None => (kind, value),
    };
    let container: &mut Map<String, Value> = match &path.urn {
        None => res,
        Some(urn) => {
            let key = find_key(res, urn).unwrap_or_else(|| canonical(urn, USER_ATTRIBUTES));
            if kind == OpKind::Remove && !res.contains_key(&key) {
                return Ok(());
            }
            let entry = res.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            match entry.as_object_mut() {
                Some(m) => m,
                None => return Err(ScimError::internal("extension is not an object")),
            }
        }
    };
    let key = find_key(container, &path.name).unwrap_or_else(|| canonical(&path.name, USER_ATTRIBUTES));

    match (&path.filter, &path.sub) {
        (None, None) => match kind {
            OpKind::Remove => {
                match (value, container.get_mut(&key)) {
                    // Remove the listed items of a multi-valued attribute.
                    (Some(Value::Array(items)), Some(Value::Array(existing))) => {
                        existing.retain(|e| !items.iter().any(|i| same_item(e, i)));
                        if existing.is_empty() {
                            container.remove(&key);
                        }
                    }
                    _ => {
                        container.remove(&key);
                    }
                }
                Ok(())
            }
            OpKind::Add | OpKind::Replace => {
                let value = value.ok_or_else(|| ScimError::invalid_value("a value is required"))?;
                match (kind, container.get_mut(&key), value) {
                    (_, _, Value::Null) => {
                        container.remove(&key);
                    }
                    (OpKind::Add, Some(Value::Array(existing)), v) => {
                        let new: Vec<Value> = match v {
                            Value::Array(a) => a.clone(),
                            other => vec![other.clone()],
                        };
                        for item in new {
                            if !existing.iter().any(|e| same_item(e, &item)) {
                                existing.push(item);
                            }
                        }
                    }
                    (_, Some(Value::Object(existing)), Value::Object(v)) => merge(existing, v),
                    (_, _, v) => {
                        container.insert(key, v.clone());
                    }
                }
                Ok(())
            }
        },
        (None, Some(sub)) => {
            match (kind, container.get_mut(&key)) {
                (OpKind::Remove, Some(Value::Object(obj))) => {
                    remove_ci(obj, sub);
                }
                (OpKind::Remove, Some(Value::Array(items))) => {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        remove_ci(item, sub);
                    }
                }
                (OpKind::Remove, _) => {}
                (_, Some(Value::Array(_))) => {
                    return Err(ScimError::invalid_path(format!(
                        "{} is multi-valued: select the values with a filter, as in {}[type eq \"work\"].{sub}",
                        path.name, path.name
                    )))
                }
                (_, existing) => {
                    let value = value.ok_or_else(|| ScimError::invalid_value("a value is required"))?;
                    if !matches!(existing, Some(Value::Object(_))) {
                        container.insert(key.clone(), Value::Object(Map::new()));
                    }
                    if let Some(Value::Object(obj)) = container.get_mut(&key) {
                        let sk = find_key(obj, sub).unwrap_or_else(|| sub.clone());
                        if value.is_null() {
                            obj.remove(&sk);
                        } else {
                            obj.insert(sk, value.clone());
                        }
                    }
                }
            }
            Ok(())
        }
        (Some(filter), sub) => {
            let items = match container.get_mut(&key) {
                Some(Value::Array(items)) => Some(items),
                None => None,
                Some(_) => return Err(ScimError::invalid_path(format!("{} is not multi-valued", path.name))),
            };
            if kind == OpKind::Remove {
                if let Some(items) = items {
                    match sub {
                        None => items.retain(|i| !filter.matches(i)),
                        Some(sub) => {
                            for item in items.iter_mut().filter(|i| filter.matches(i)) {
                                if let Some(obj) = item.as_object_mut() {
                                    remove_ci(obj, sub);
                                }
                            }
                        }
                    }
                    if items.is_empty() {
                        container.remove(&key);
                    }
                }
                return Ok(());
            }
            let value = value.ok_or_else(|| ScimError::invalid_value("a value is required"))?;
            let mut matched = false;
            if let Some(items) = items {
                for item in items.iter_mut().filter(|i| filter.matches(i)) {
                    matched = true;
                    set_in_item(item, sub.as_deref(), value)?;
                }
            }
            if !matched {
                // Entra sends `emails[type eq "work"].value` for users without a work email:
                // the selector then describes the value to add.
                let Filter::Compare { path: fp, op: CompareOp::Eq, value: fv } = filter else {
                    return Err(ScimError::no_target(format!("no value of {} matches the filter", path.name)));
                };
                if fp.urn.is_some() || fp.sub.is_some() {
                    return Err(ScimError::no_target(format!("no value of {} matches the filter", path.name)));
                }
                let mut item = Value::Object(Map::from_iter([(fp.name.clone(), fv.clone())]));
                set_in_item(&mut item, sub.as_deref(), value)?;
                match container.get_mut(&key) {
                    Some(Value::Array(items)) => items.push(item),
                    _ => {
                        container.insert(key, Value::Array(vec![item]));
                    }
                }
            }
            Ok(())
        }
    }
}

fn set_in_item(item: &mut Value, sub: Option<&str>, value: &Value) -> Result<(), ScimError> {
    let Some(obj) = item.as_object_mut() else {
        return Err(ScimError::invalid_value("the selected value is not a complex value"));
    };
    match (sub, value) {
        (Some(sub), v) => {
            let k = find_key(obj, sub).unwrap_or_else(|| sub.to_string());
            obj.insert(k, v.clone());
        }
        (None, Value::Object(v)) => merge(obj, v),
        (None, _) => {
            return Err(ScimError::invalid_value(
                "the value for a filtered path without a sub-attribute must be an object",
            ))
        }
    }
    Ok(())
}

/// What a Group PATCH asks for, as deltas: the service applies them row by row.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemberChange {
    /// Member ids to add (when `replace_all` is `None`).
    pub add: Vec<String>,
    /// Member ids to remove (when `replace_all` is `None`).
    pub remove: Vec<String>,
    /// The complete new member list, when an operation replaced (or removed) all members.
    /// Later operations of the same request are folded into it.
    pub replace_all: Option<Vec<String>>,
    pub display_name: Option<String>,
    /// `Some(None)` removes the externalId.
    pub external_id: Option<Option<String>>,
}

impl MemberChange {
    // Set arithmetic over order-keeping lists, in time linear in the ids: an IdP may send
    // 100,000 of them in one operation.
    fn add_ids(&mut self, ids: Vec<String>) {
        match &mut self.replace_all {
            Some(all) => append_new(all, ids),
            None => {
                let incoming: HashSet<&String> = ids.iter().collect();
                self.remove.retain(|r| !incoming.contains(r));
                append_new(&mut self.add, ids);
            }
        }
    }

    fn remove_ids(&mut self, ids: Vec<String>) {
        match &mut self.replace_all {
            Some(all) => {
                let gone: HashSet<&String> = ids.iter().collect();
                all.retain(|a| !gone.contains(a));
            }
            None => {
                let gone: HashSet<&String> = ids.iter().collect();
                self.add.retain(|a| !gone.contains(a));
                append_new(&mut self.remove, ids);
            }
        }
    }

    fn set_all(&mut self, ids: Vec<String>) {
        self.add.clear();
        self.remove.clear();
        self.replace_all = Some(ids);
    }

    /// True when the request changes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.remove.is_empty()
            && self.replace_all.is_none()
            && self.display_name.is_none()
            && self.external_id.is_none()
    }
}

/// Appends the ids not yet in `list`, in order, once each.
fn append_new(list: &mut Vec<String>, ids: Vec<String>) {
    let mut seen: HashSet<String> = list.iter().cloned().collect();
    for id in ids {
        if seen.insert(id.clone()) {
            list.push(id);
        }
    }
}

/// The member ids a `members[...]` filter selects: `value eq "id"`, possibly joined with `or`.
fn filter_member_ids(f: &Filter, out: &mut Vec<String>) -> Result<(), ScimError> {
    match f {
        Filter::Compare { path, op: CompareOp::Eq, value: Value::String(v) } if path.is("value") => {
            out.push(v.clone());
            Ok(())
        }
        Filter::Or(a, b) => {
            filter_member_ids(a, out)?;
            filter_member_ids(b, out)
        }
        _ => Err(ScimError::invalid_filter("a members filter must be value eq \"<id>\" (joined with or)")),
    }
}

/// Turns a Group PATCH into a [`MemberChange`]. `group_id` is the group's id: a path-less
/// value may repeat it (Okta does), but not change it.
pub fn group_patch(req: &PatchRequest, group_id: &str) -> Result<MemberChange, ScimError> {
    let mut change = MemberChange::default();
    for op in &req.operations {
        match &op.path {
            None => {
                if op.raw_path.is_some() {
                    return Err(ScimError::invalid_path("a Group's path names an attribute, not a whole schema"));
                }
                let Some(Value::Object(v)) = &op.value else {
                    return Err(ScimError::invalid_value("an operation without a path needs an object value"));
                };
                for (k, v) in v {
                    let path = PatchPath::parse(k)?;
                    group_attr(&mut change, op.op, &path, Some(v), group_id)?;
                }
            }
            Some(path) => group_attr(&mut change, op.op, path, op.value.as_ref(), group_id)?,
        }
    }
    Ok(change)
}

fn group_attr(
    change: &mut MemberChange,
    kind: OpKind,
    path: &PatchPath,
    value: Option<&Value>,
    group_id: &str,
) -> Result<(), ScimError> {
    if path.is("members") {
        if path.sub.is_some() {
            return Err(ScimError::invalid_path("members can only be changed as a whole value"));
        }
        if let Some(filter) = &path.filter {
            if kind != OpKind::Remove {
                return Err(ScimError::invalid_path("a members filter is only supported with remove"));
            }
            let mut ids = Vec::new();
            filter_member_ids(filter, &mut ids)?;
            change.remove_ids(ids);
            return Ok(());
        }
        match (kind, value) {
            (OpKind::Add, Some(v)) => change.add_ids(member_ids(v)?),
            (OpKind::Add, None) => return Err(ScimError::invalid_value("add members needs a value")),
            (OpKind::Replace, v) => change.set_all(member_ids(v.unwrap_or(&Value::Null))?),
            // Entra names the members to remove in the value.
            (OpKind::Remove, Some(v)) if !v.is_null() => change.remove_ids(member_ids(v)?),
            (OpKind::Remove, _) => change.set_all(Vec::new()),
        }
        return Ok(());
    }
    if path.filter.is_some() || path.sub.is_some() {
        return Err(ScimError::invalid_path(format!("{} has no sub-attributes", path.name)));
    }
    if path.is("displayName") {
        if kind == OpKind::Remove {
            return Err(ScimError::invalid_value("displayName is required"));
        }
        change.display_name = Some(display_name(value)?);
    } else if path.is("externalId") {
        change.external_id = Some(if kind == OpKind::Remove { None } else { external_id(value)? });
    } else if path.is("id") {
        match value {
            Some(Value::String(v)) if v == group_id && kind != OpKind::Remove => {}
            _ => return Err(ScimError::mutability("id cannot be changed")),
        }
    } else if path.is("meta") {
        return Err(ScimError::mutability("meta is set by the service provider"));
    } else if path.is("schemas") {
    } else {
        return Err(ScimError::invalid_path(format!("Groups have no attribute {:?}", path.name)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(ops: Value) -> PatchRequest {
        PatchRequest::parse(&json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops})).unwrap()
    }

    fn base_user() -> Value {
        User::parse(&json!({
            "userName": "alice@example.com", "active": true, "displayName": "Alice",
            "name": {"givenName": "Alice", "familyName": "A"},
            "emails": [{"value": "alice@example.com", "type": "work", "primary": true}]
        }))
        .unwrap()
        .resource
    }

    fn patch_user(ops: Value) -> Result<User, ScimError> {
        apply_user_patch(&base_user(), &req(ops), "u1")
    }

    #[test]
    fn request_shape_is_checked() {
        for (body, ty) in [
            (json!({"Operations": [{"op": "add", "value": {}}]}), "invalidSyntax"),
            (json!({"schemas": ["urn:x"], "Operations": []}), "invalidSyntax"),
            (json!({"schemas": [PATCH_OP_SCHEMA]}), "invalidSyntax"),
            (json!({"schemas": [PATCH_OP_SCHEMA], "Operations": []}), "invalidValue"),
            (json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "move", "path": "a"}]}), "invalidSyntax"),
            (json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"path": "a"}]}), "invalidSyntax"),
            (json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "remove"}]}), "noTarget"),
            (
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "replace", "path": "active"}]}),
                "invalidValue",
            ),
            (
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "replace", "path": "a[b", "value": 1}]}),
                "invalidPath",
            ),
            (
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "replace", "path": "emails[type zz \"w\"]", "value": 1}]}),
                "invalidFilter",
            ),
            (
                json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "replace", "path": 5, "value": 1}]}),
                "invalidPath",
            ),
            (json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ["x"]}), "invalidSyntax"),
            (json!([]), "invalidSyntax"),
        ] {
            assert_eq!(PatchRequest::parse(&body).unwrap_err().scim_type, Some(ty), "{body}");
        }
        // lower-case "operations" and capitalised ops are accepted
        let r = PatchRequest::parse(&json!({"schemas": [PATCH_OP_SCHEMA], "operations": [{"op": "Replace", "path": "active", "value": "False"}]})).unwrap();
        assert_eq!(r.operations[0].op, OpKind::Replace);
    }

    #[test]
    fn active_with_and_without_path_bool_and_string() {
        for ops in [
            json!([{"op": "replace", "path": "active", "value": false}]),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
            json!([{"op": "replace", "path": "ACTIVE", "value": "false"}]),
            json!([{"op": "replace", "value": {"active": false}}]),
            json!([{"op": "Replace", "value": {"active": "False"}}]),
            json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:active", "value": false}]),
        ] {
            let u = patch_user(ops.clone()).unwrap();
            assert!(!u.active, "{ops}");
            assert_eq!(u.resource["active"], false);
        }
        assert!(patch_user(json!([{"op": "replace", "path": "active", "value": "nope"}])).is_err());
    }

    #[test]
    fn only_active_recognises_every_deactivation_shape_and_nothing_else() {
        for (ops, want) in [
            (json!([{"op": "replace", "path": "active", "value": false}]), Some(false)),
            (json!([{"op": "Replace", "path": "active", "value": "False"}]), Some(false)),
            (json!([{"op": "replace", "value": {"active": true}}]), Some(true)),
            (json!([{"op": "Replace", "value": {"Active": "False"}}]), Some(false)),
            (
                json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:active", "value": false}]),
                Some(false),
            ),
            (json!([{"op": "replace", "value": {"active": false, "displayName": "x"}}]), None),
            (json!([{"op": "replace", "path": "active", "value": "maybe"}]), None),
            (json!([{"op": "replace", "path": "displayName", "value": "x"}]), None),
            (json!([{"op": "remove", "path": "active"}]), None),
            (
                json!([{"op": "replace", "path": "active", "value": false}, {"op": "replace", "path": "active", "value": true}]),
                None,
            ),
        ] {
            assert_eq!(only_active(&req(ops.clone())), want, "{ops}");
        }
    }

    #[test]
    fn entra_email_and_name_paths() {
        let u = patch_user(json!([
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "new@microsoft.com"},
            {"op": "Replace", "path": "name.familyName", "value": "Updated"}
        ]))
        .unwrap();
        assert_eq!(u.primary_email(), Some("new@microsoft.com"));
        assert_eq!(u.emails.len(), 1);
        assert_eq!(u.resource["name"]["familyName"], "Updated");
        assert_eq!(u.resource["name"]["givenName"], "Alice");
    }

    #[test]
    fn entra_replaces_the_primary_role_whether_primary_is_written_true_or_true_quoted() {
        let user = User::parse(&json!({
            "userName": "r@x.io",
            "roles": [{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}]
        }))
        .unwrap()
        .resource;
        let u = apply_user_patch(
            &user,
            &req(json!([{"op": "Replace", "path": "roles[primary eq \"True\"].value", "value": "Viewer"}])),
            "u1",
        )
        .unwrap();
        assert_eq!(
            u.resource["roles"],
            json!([{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Viewer"}])
        );
    }

    #[test]
    fn entras_json_encoded_single_app_role_replaces_the_role_and_its_removal_takes_it_away() {
        // POST: the plain form, primary as a string.
        let user = User::parse(&json!({
            "userName": "r@x.io",
            "roles": [{"primary": "True", "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}]
        }))
        .unwrap()
        .resource;
        assert_eq!(
            user["roles"],
            json!([{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}])
        );
        // PATCH: the app role assignment JSON-encoded in value; the user now has that role only.
        let encoded =
            r#"{"id":"06b07648-ecfe-589f-9d2f-6325724a46ee","value":"Employee","displayName":"Employee role"}"#;
        let u =
            apply_user_patch(&user, &req(json!([{"op": "Add", "path": "roles", "value": [{"value": encoded}]}])), "u1")
                .unwrap();
        assert_eq!(u.resource["roles"], json!([{"value": "Employee", "display": "Employee role"}]));
        // The same role removed in the same form: none left.
        let u = apply_user_patch(
            &u.resource,
            &req(json!([{"op": "Remove", "path": "roles", "value": [{"value": encoded}]}])),
            "u1",
        )
        .unwrap();
        assert_eq!(u.resource.get("roles"), None);
        // An encoded value naming only a displayName, or nothing usable, or not JSON at all.
        let only_display = r#"{"id":"x","displayName":"Analyst"}"#;
        let u = apply_user_patch(
            &user,
            &req(json!([{"op": "add", "path": "roles", "value": {"value": only_display}}])),
            "u1",
        )
        .unwrap();
        assert_eq!(u.resource["roles"], json!([{"value": "Analyst", "display": "Analyst"}]));
        for odd in [r#"{"id":"x"}"#, "{not json", r#"{"value": 7}"#] {
            let u =
                apply_user_patch(&user, &req(json!([{"op": "add", "path": "roles", "value": [{"value": odd}]}])), "u1")
                    .unwrap();
            assert_eq!(u.resource["roles"][1]["value"], json!(odd), "kept as sent: {odd}");
        }
    }

    #[test]
    fn primary_of_every_multi_valued_attribute_is_stored_as_a_boolean() {
        let u = User::parse(&json!({
            "userName": "p@x.io",
            "roles": [{"value": "A", "primary": "False"}],
            "entitlements": [{"value": "E", "Primary": "TRUE"}],
            "phoneNumbers": [{"value": "+1", "primary": true}, {"value": "+2"}]
        }))
        .unwrap();
        assert_eq!(u.resource["roles"][0]["primary"], json!(false));
        assert_eq!(u.resource["entitlements"][0], json!({"value": "E", "primary": true}));
        assert_eq!(u.resource["phoneNumbers"][1], json!({"value": "+2"}));
        let err = User::parse(&json!({"userName": "p@x.io", "roles": [{"value": "A", "primary": "yes"}]})).unwrap_err();
        assert_eq!(err.scim_type, Some("invalidValue"));
        assert!(err.detail.contains("roles.primary"), "{}", err.detail);
    }

    #[test]
    fn a_value_made_primary_leaves_the_others_not_primary() {
        // Added with primary: the address the user had as primary is primary no more.
        let u = patch_user(json!([{"op": "add", "path": "emails",
                                   "value": [{"value": "new@x.org", "type": "home", "primary": true}]}]))
        .unwrap();
        assert_eq!(u.primary_email(), Some("new@x.org"));
        let primaries: Vec<&Value> = u.resource["emails"].as_array().unwrap().iter().map(|e| &e["primary"]).collect();
        assert_eq!(primaries, [&json!(false), &json!(true)]);

        // Made primary through a filter, with "True" as a string: the same.
        let u = patch_user(json!([
            {"op": "add", "path": "emails[type eq \"other\"]", "value": {"value": "o@x.org"}},
            {"op": "replace", "path": "emails[type eq \"other\"].primary", "value": "True"}
        ]))
        .unwrap();
        assert_eq!(u.primary_email(), Some("o@x.org"));
        assert_eq!(u.emails.iter().filter(|e| e.primary).count(), 1);

        // Two made primary in one request: the last stays so.
        let u = patch_user(json!([{"op": "add", "path": "phoneNumbers", "value": [
            {"value": "1", "primary": true}, {"value": "2", "primary": true}]}]))
        .unwrap();
        assert_eq!(
            u.resource["phoneNumbers"],
            json!([{"value": "1", "primary": false}, {"value": "2", "primary": true}])
        );

        // A change that makes nothing primary leaves primaries alone.
        let u = patch_user(json!([{"op": "add", "path": "emails", "value": [{"value": "h@x.org", "type": "home"}]}]))
            .unwrap();
        assert_eq!(u.primary_email(), Some("alice@example.com"));
        assert_eq!(u.resource["emails"][0]["primary"], json!(true));
    }

    #[test]
    fn a_custom_extension_is_one_object_under_its_urn_however_a_patch_names_it() {
        const CUSTOM: &str = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User";
        let user = User::parse(&json!({"userName": "c@x.io", CUSTOM: {"employeeNumber": "1", "costCenter": "A"}}))
            .unwrap()
            .resource;
        assert_eq!(user["schemas"], json!([crate::schema::USER_SCHEMA, CUSTOM]));
        let patched = |ops: Value| apply_user_patch(&user, &req(ops), "u1").map(|u| u.resource);

        // As a key of a path-less value, and as the path: the attributes given change.
        for ops in [
            json!([{"op": "replace", "value": {CUSTOM: {"employeeNumber": "2"}}}]),
            json!([{"op": "Replace", "path": CUSTOM, "value": {"employeeNumber": "2"}}]),
            json!([{"op": "replace", "path": format!("{CUSTOM}:employeeNumber"), "value": "2"}]),
            json!([{"op": "replace", "value": {format!("{CUSTOM}:employeeNumber"): "2"}}]),
        ] {
            let r = patched(ops.clone()).unwrap();
            assert_eq!(r[CUSTOM], json!({"employeeNumber": "2", "costCenter": "A"}), "{ops}");
            let keys: Vec<&String> = r.as_object().unwrap().keys().filter(|k| k.starts_with("urn:")).collect();
            assert_eq!(keys, [CUSTOM], "nothing stored under another key: {ops}");
        }
        // Removed whole, and no longer named in schemas.
        let r = patched(json!([{"op": "remove", "path": CUSTOM}])).unwrap();
        assert_eq!((r.get(CUSTOM), &r["schemas"]), (None, &json!([crate::schema::USER_SCHEMA])));
        // The core schema's URN names the attributes at the top.
        let core = crate::schema::USER_SCHEMA;
        let r = patched(json!([{"op": "add", "value": {core: {"title": "T2"}}}])).unwrap();
        assert_eq!(r["title"], "T2");
        let r = patched(json!([{"op": "replace", "path": core, "value": {"displayName": "C"}}])).unwrap();
        assert_eq!(r["displayName"], "C");
        let e = patched(json!([{"op": "remove", "path": core}])).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidPath"));
        let e = patched(json!([{"op": "replace", "path": CUSTOM, "value": "x"}])).unwrap_err();
        assert_eq!(e.scim_type, Some("invalidValue"));
    }

    #[test]
    fn what_a_patch_leaves_empty_is_unassigned() {
        let u = patch_user(json!([
            {"op": "remove", "path": "name.givenName"},
            {"op": "remove", "path": "name.familyName"},
            {"op": "replace", "path": "emails", "value": []}
        ]))
        .unwrap();
        assert_eq!((u.resource.get("name"), u.resource.get("emails")), (None, None), "{}", u.resource);
        assert!(u.emails.is_empty());
    }

    #[test]
    fn email_filter_without_match_adds_the_value() {
        let u =
            patch_user(json!([{"op": "add", "path": "emails[type eq \"home\"].value", "value": "h@x.org"}])).unwrap();
        assert_eq!(u.emails.len(), 2);
        assert_eq!(u.emails[1].kind.as_deref(), Some("home"));
        let e = patch_user(
            json!([{"op": "replace", "path": "emails[type eq \"home\" or type eq \"x\"].value", "value": "h"}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("noTarget"));
    }

    #[test]
    fn pathless_dotted_and_urn_keys() {
        let u = patch_user(json!([{"op": "replace", "value": {
            "displayName": "Bjfe", "name.givenName": "Kkom", "Name.FamilyName": "Unua",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "Aklq"}}]))
        .unwrap();
        assert_eq!(u.display_name.as_deref(), Some("Bjfe"));
        assert_eq!(u.resource["name"], json!({"givenName": "Kkom", "familyName": "Unua"}));
        assert_eq!(u.enterprise.unwrap()["employeeNumber"], "Aklq");
    }

    #[test]
    fn entra_sets_the_manager_by_id() {
        let u = patch_user(json!([
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "m1"}
        ]))
        .unwrap();
        assert_eq!(u.enterprise.unwrap()["manager"], json!({"value": "m1"}));
    }

    #[test]
    fn enterprise_paths() {
        let u = patch_user(json!([
            {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": {"value": "m1"}},
            {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "value": {"department": "Sales"}},
            {"op": "replace", "value": {"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"costCenter": "9"}}}
        ]))
        .unwrap();
        let ext = u.enterprise.unwrap();
        assert_eq!(ext, json!({"manager": {"value": "m1"}, "department": "Sales", "costCenter": "9"}));
        let u = apply_user_patch(
            &u.resource,
            &req(json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}])),
            "u1",
        )
        .unwrap();
        assert!(u.enterprise.unwrap().get("department").is_none());
    }

    #[test]
    fn user_name_external_id_and_removals() {
        let u = patch_user(json!([
            {"op": "replace", "path": "userName", "value": "bob@example.com"},
            {"op": "add", "path": "externalId", "value": "e-1"},
            {"op": "remove", "path": "displayName"},
            {"op": "remove", "path": "emails[type eq \"work\"]"}
        ]))
        .unwrap();
        assert_eq!(u.user_name, "bob@example.com");
        assert_eq!(u.external_id.as_deref(), Some("e-1"));
        assert_eq!(u.display_name, None);
        assert!(u.emails.is_empty());
        assert!(u.resource.get("emails").is_none());
        // userName cannot be removed or emptied
        assert_eq!(patch_user(json!([{"op": "remove", "path": "userName"}])).unwrap_err().status, 400);
        assert_eq!(patch_user(json!([{"op": "replace", "path": "userName", "value": ""}])).unwrap_err().status, 400);
    }

    #[test]
    fn add_to_multi_valued_appends_without_duplicates() {
        let u = patch_user(json!([{"op": "add", "path": "emails", "value": [
            {"value": "alice@example.com", "type": "work"}, {"value": "second@example.com", "type": "other"}]}]))
        .unwrap();
        assert_eq!(u.emails.len(), 2);
    }

    #[test]
    fn id_and_meta_are_immutable() {
        for ops in [
            json!([{"op": "replace", "path": "id", "value": "other"}]),
            json!([{"op": "remove", "path": "id"}]),
            json!([{"op": "replace", "path": "meta", "value": {}}]),
            json!([{"op": "replace", "value": {"id": "other"}}]),
            json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
        ] {
            assert_eq!(patch_user(ops.clone()).unwrap_err().scim_type, Some("mutability"), "{ops}");
        }
        // Okta repeats the id in a path-less replace; that is not a change.
        assert!(patch_user(json!([{"op": "replace", "value": {"id": "u1", "displayName": "X"}}])).is_ok());
    }

    #[test]
    fn replace_complex_merges_sub_attributes() {
        let u = patch_user(json!([{"op": "replace", "path": "name", "value": {"givenName": "Al"}}])).unwrap();
        assert_eq!(u.resource["name"], json!({"givenName": "Al", "familyName": "A"}));
    }

    fn group(ops: Value) -> Result<MemberChange, ScimError> {
        group_patch(&req(ops), "g1")
    }

    #[test]
    fn member_forms() {
        assert_eq!(
            group(json!([{"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b", "display": "B"}]}]))
                .unwrap()
                .add,
            vec!["a", "b"]
        );
        assert_eq!(group(json!([{"op": "remove", "path": "members[value eq \"a\"]"}])).unwrap().remove, vec!["a"]);
        assert_eq!(
            group(json!([{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "a"}]}]))
                .unwrap()
                .remove,
            vec!["a"]
        );
        assert_eq!(group(json!([{"op": "add", "value": {"members": [{"value": "c"}]}}])).unwrap().add, vec!["c"]);
        assert_eq!(
            group(json!([{"op": "replace", "path": "members", "value": [{"value": "d"}]}])).unwrap().replace_all,
            Some(vec!["d".to_string()])
        );
        assert_eq!(group(json!([{"op": "remove", "path": "members"}])).unwrap().replace_all, Some(vec![]));
        assert_eq!(
            group(json!([{"op": "remove", "path": "members[value eq \"a\" or value eq \"b\"]"}])).unwrap().remove,
            vec!["a", "b"]
        );
    }

    #[test]
    fn operations_fold_in_order() {
        let c = group(json!([
            {"op": "add", "path": "members", "value": [{"value": "a"}]},
            {"op": "remove", "path": "members[value eq \"a\"]"},
            {"op": "remove", "path": "members[value eq \"missing\"]"},
            {"op": "add", "path": "members", "value": [{"value": "b"}]}
        ]))
        .unwrap();
        assert_eq!(c.add, vec!["b"]);
        assert_eq!(c.remove, vec!["a", "missing"]);
        let c = group(json!([
            {"op": "replace", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
            {"op": "remove", "path": "members[value eq \"a\"]"},
            {"op": "add", "path": "members", "value": [{"value": "c"}]}
        ]))
        .unwrap();
        assert_eq!(c.replace_all, Some(vec!["b".to_string(), "c".to_string()]));
        assert!(c.add.is_empty() && c.remove.is_empty());
    }

    #[test]
    fn display_name_and_external_id() {
        let c = group(json!([{"op": "Replace", "path": "displayName", "value": "New"}])).unwrap();
        assert_eq!(c.display_name.as_deref(), Some("New"));
        let c = group(json!([{"op": "replace", "value": {"id": "g1", "displayName": "Renamed", "externalId": "x"}}]))
            .unwrap();
        assert_eq!(c.display_name.as_deref(), Some("Renamed"));
        assert_eq!(c.external_id, Some(Some("x".into())));
        assert!(c.add.is_empty() && c.replace_all.is_none());
        assert_eq!(group(json!([{"op": "remove", "path": "externalId"}])).unwrap().external_id, Some(None));
    }

    #[test]
    fn group_rejections() {
        for (ops, ty) in [
            (json!([{"op": "replace", "value": {"id": "other"}}]), "mutability"),
            (json!([{"op": "remove", "path": "displayName"}]), "invalidValue"),
            (json!([{"op": "replace", "path": "displayName", "value": ""}]), "invalidValue"),
            (json!([{"op": "add", "path": "members", "value": [{"display": "x"}]}]), "invalidValue"),
            (json!([{"op": "add", "path": "members", "value": "a"}]), "invalidValue"),
            (json!([{"op": "remove", "path": "members[display eq \"a\"]"}]), "invalidFilter"),
            (json!([{"op": "replace", "path": "members[value eq \"a\"]", "value": []}]), "invalidPath"),
            (json!([{"op": "replace", "path": "owner", "value": "x"}]), "invalidPath"),
            (json!([{"op": "replace", "value": "x"}]), "invalidValue"),
        ] {
            assert_eq!(group(ops.clone()).unwrap_err().scim_type, Some(ty), "{ops}");
        }
    }

    #[test]
    fn paths_parse() {
        let p = PatchPath::parse("emails[type eq \"work\"].value").unwrap();
        assert_eq!(p.name, "emails");
        assert_eq!(p.sub.as_deref(), Some("value"));
        assert!(p.filter.is_some());
        for bad in ["", "a[", "a]", "a[b eq \"c\"]x", "a.b[c pr]", "a[]", "1a", "a..b", "urn:x:", "a[b eq \"c\"].1"] {
            assert!(PatchPath::parse(bad).is_err(), "{bad:?}");
        }
    }
}
