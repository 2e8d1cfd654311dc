//! SCIM filters (RFC 7644 §3.4.2.2) and attribute paths (§3.5.2): a parser to an AST that the
//! service either turns into an indexed SQL lookup (`userName eq "…"`) or evaluates in memory
//! against a resource's JSON.

use crate::error::ScimError;
use crate::schema;
use serde_json::Value;
use std::cmp::Ordering;
use unseat_domain::text::fold;

/// Longest filter or path accepted: IdPs send short ones, and a bound keeps parsing cheap.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses and brackets accepted.
const MAX_DEPTH: usize = 32;

/// A reference to an attribute: `name`, `name.sub`, or `urn:…:name(.sub)`.
/// `urn` is `None` for the resource's core schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

impl AttrPath {
    /// Parses an attribute path without brackets.
    pub fn parse(s: &str) -> Result<Self, ScimError> {
        let s = s.trim();
        if s.is_empty() || s.len() > MAX_FILTER_LEN {
            return Err(ScimError::invalid_path("empty or overlong attribute path"));
        }
        let (urn, rest) = split_urn(s);
        let (name, sub) = match rest.split_once('.') {
            Some((n, sub)) => (n, Some(sub)),
            None => (rest, None),
        };
        if !valid_name(name) || sub.is_some_and(|s| !valid_name(s)) {
            return Err(ScimError::invalid_path(format!("{s:?} is not a valid attribute path")));
        }
        Ok(Self { urn, name: name.to_string(), sub: sub.map(str::to_string) })
    }

    /// True when this path names core attribute `name` (case-insensitively) with no sub-attribute.
    pub fn is(&self, name: &str) -> bool {
        self.urn.is_none() && self.sub.is_none() && self.name.eq_ignore_ascii_case(name)
    }

    /// True when the last name of this core-schema path is `name` (case-insensitively): `name`
    /// itself, `x.name`, or `name` inside a value path's filter.
    pub fn names_last(&self, name: &str) -> bool {
        self.urn.is_none() && self.sub.as_deref().unwrap_or(&self.name).eq_ignore_ascii_case(name)
    }

    /// True when this path names `name.sub` of the core schema (case-insensitively).
    pub fn is_sub(&self, name: &str, sub: &str) -> bool {
        self.urn.is_none()
            && self.name.eq_ignore_ascii_case(name)
            && self.sub.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(sub))
    }
}

/// Splits `urn:…:attr.sub` into the schema URN and `attr.sub`. Core schema URNs become `None`.
fn split_urn(s: &str) -> (Option<String>, &str) {
    if !s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
        return (None, s);
    }
    match s.rfind(':') {
        Some(i) => {
            let urn = &s[..i];
            if schema::is_core_schema(urn) {
                (None, &s[i + 1..])
            } else {
                (Some(urn.to_string()), &s[i + 1..])
            }
        }
        None => (None, s),
    }
}

fn valid_name(n: &str) -> bool {
    if n == "$ref" {
        return true;
    }
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    fn parse(w: &str) -> Option<Self> {
        Some(match w.to_ascii_lowercase().as_str() {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "co" => Self::Co,
            "sw" => Self::Sw,
            "ew" => Self::Ew,
            "gt" => Self::Gt,
            "ge" => Self::Ge,
            "lt" => Self::Lt,
            "le" => Self::Le,
            _ => return None,
        })
    }

    /// The operator as a filter writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Co => "co",
            Self::Sw => "sw",
            Self::Ew => "ew",
            Self::Gt => "gt",
            Self::Ge => "ge",
            Self::Lt => "lt",
            Self::Le => "le",
        }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attr op value`; `value` is a JSON string, number, boolean or null.
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    /// `attr pr`
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`: some element of multi-valued `attr` matches `filter`.
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

impl Filter {
    pub fn parse(s: &str) -> Result<Self, ScimError> {
        if s.len() > MAX_FILTER_LEN {
            return Err(ScimError::invalid_filter("filter is too long"));
        }
        if s.contains('\0') {
            return Err(ScimError::invalid_filter("a filter must not contain the NUL character"));
        }
        let tokens = tokenize(s)?;
        let mut p = Parser { tokens, pos: 0, depth: 0 };
        let f = p.or()?;
        if p.pos != p.tokens.len() {
            return Err(ScimError::invalid_filter(format!("unexpected {} in filter", p.describe())));
        }
        Ok(f)
    }

    /// `Some((path, value))` when the whole filter is `path eq "value"` with a string value:
    /// the shape the service answers with an indexed lookup.
    pub fn equality(&self) -> Option<(&AttrPath, &str)> {
        match self {
            Filter::Compare { path, op: CompareOp::Eq, value: Value::String(v) } => Some((path, v)),
            _ => None,
        }
    }

    /// The terms of a top-level conjunction, each of which must hold (the filter itself when it
    /// is no `and`).
    pub fn conjuncts(&self) -> Vec<&Filter> {
        match self {
            Filter::And(a, b) => {
                let mut terms = a.conjuncts();
                terms.extend(b.conjuncts());
                terms
            }
            other => vec![other],
        }
    }

    /// `Some(v)` when this term holds only for a resource with an element of multi-valued core
    /// attribute `name` whose `sub` is the string `v`: `name.sub eq "v"` (`name eq "v"` when
    /// `sub` is `value`), or `name[…]` whose bracket requires `sub eq "v"`, as in
    /// `emails[type eq "work"].value eq "v"`. A lookup by that element finds every resource the
    /// term can select.
    pub fn element_equality(&self, name: &str, sub: &str) -> Option<&str> {
        match self {
            Filter::Compare { path, op: CompareOp::Eq, value: Value::String(v) } if names_sub(path, name, sub) => {
                Some(v)
            }
            Filter::ValuePath { path, filter } if path.is(name) => {
                filter.conjuncts().into_iter().find_map(|t| match t {
                    Filter::Compare { path, op: CompareOp::Eq, value: Value::String(v) } if path.is(sub) => {
                        Some(v.as_str())
                    }
                    _ => None,
                })
            }
            _ => None,
        }
    }

    /// A text this term holds only for a resource whose stored representation contains,
    /// ignoring case, as a JSON string (`attr eq "…"`), the start of one (`sw`), the end of one
    /// (`ew`) or anywhere in one (`co`), with that operator; also for such a comparison that a
    /// bracket requires (`phoneNumbers[type eq "work"]`). Only attributes stored as sent
    /// qualify, not the `computed` ones the service adds when it renders (`id`, `meta`, …); not
    /// an empty text; and for `eq` no date-time (date-times compare as instants, whatever their
    /// spelling) and no `"true"` or `"false"` (they equal a stored boolean). A search for the
    /// text then finds every resource the term can select.
    pub fn required_text(&self, computed: &[&str]) -> Option<(&str, CompareOp)> {
        let stored = |p: &AttrPath| p.urn.is_some() || !computed.iter().any(|c| p.name.eq_ignore_ascii_case(c));
        let text = |op: CompareOp, v: &'_ str| {
            let searchable = !v.is_empty();
            let textual = match op {
                // Nor "true"/"false": they equal a stored boolean too.
                CompareOp::Eq => date_time(v).is_none() && crate::user::parse_bool_str(v).is_none(),
                CompareOp::Sw | CompareOp::Ew | CompareOp::Co => true,
                _ => false,
            };
            (searchable && textual).then_some(op)
        };
        match self {
            Filter::Compare { path, op, value: Value::String(v) } if stored(path) => {
                text(*op, v).map(|op| (v.as_str(), op))
            }
            Filter::ValuePath { path, filter } if stored(path) => {
                filter.conjuncts().into_iter().find_map(|t| match t {
                    Filter::Compare { op, value: Value::String(v), .. } => text(*op, v).map(|op| (v.as_str(), op)),
                    _ => None,
                })
            }
            _ => None,
        }
    }

    /// `Some((op, instant))` when this term compares core attribute `name.sub` with a date-time
    /// by `eq`, `gt`, `ge`, `lt` or `le` (`meta.lastModified gt "2026-01-01T00:00:00Z"`): it
    /// holds only for a resource whose `name.sub` is an instant standing so to `instant`.
    pub fn instant_comparison(
        &self,
        name: &str,
        sub: &str,
    ) -> Option<(CompareOp, chrono::DateTime<chrono::FixedOffset>)> {
        match self {
            Filter::Compare { path, op, value: Value::String(v) }
                if path.is_sub(name, sub)
                    && matches!(op, CompareOp::Eq | CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le) =>
            {
                date_time(v).map(|t| (*op, t))
            }
            _ => None,
        }
    }

    /// Which elements of multi-valued core attribute `name` decide the filter, by their `sub`.
    /// [`Elements::Named`] when only elements whose `sub` is one of the listed values can change
    /// the result (`members[value eq "…"]`, `members.value eq "…"`, any combination of them with
    /// `and`, `or` and `not`, and filters that do not mention `name`): a resource carrying just
    /// those of its elements is evaluated exactly as if it carried all. [`Elements::All`]
    /// otherwise (`members pr`, `members[display co "a"]`).
    pub fn elements(&self, name: &str, sub: &str) -> Elements<'_> {
        let mut named = Vec::new();
        if self.collect_elements(name, sub, &mut named) {
            Elements::Named(named)
        } else {
            Elements::All
        }
    }

    fn collect_elements<'a>(&'a self, name: &str, sub: &str, named: &mut Vec<&'a str>) -> bool {
        let refers = |path: &AttrPath| path.urn.is_none() && path.name.eq_ignore_ascii_case(name);
        match self {
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.collect_elements(name, sub, named) && b.collect_elements(name, sub, named)
            }
            Filter::Not(f) => f.collect_elements(name, sub, named),
            Filter::Present(path) => !refers(path),
            // `ne` is evaluated as "no element equals", so it too depends on that element alone.
            Filter::Compare { path, op, value } => match (op, value) {
                _ if !refers(path) => true,
                (CompareOp::Eq | CompareOp::Ne, Value::String(v)) if names_sub(path, name, sub) => {
                    named.push(v);
                    true
                }
                _ => false,
            },
            Filter::ValuePath { path, filter } => {
                if !refers(path) {
                    return true;
                }
                match anchored(filter, sub) {
                    Some(values) => {
                        named.extend(values);
                        true
                    }
                    None => false,
                }
            }
        }
    }

    /// Evaluates the filter against a resource's JSON representation.
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(resource) && b.matches(resource),
            Filter::Or(a, b) => a.matches(resource) || b.matches(resource),
            Filter::Not(f) => !f.matches(resource),
            Filter::Present(path) => candidates(resource, path).iter().any(|v| match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                _ => true,
            }),
            Filter::Compare { path, op, value } => {
                let found = candidates(resource, path);
                let exact = case_exact(path);
                if *op == CompareOp::Ne {
                    return !found.iter().any(|v| compare(v, CompareOp::Eq, value, exact));
                }
                found.iter().any(|v| compare(v, *op, value, exact))
            }
            Filter::ValuePath { path, filter } => match lookup(resource, path) {
                Some(Value::Array(items)) => items.iter().any(|i| filter.matches(i)),
                Some(v @ Value::Object(_)) => filter.matches(v),
                _ => false,
            },
        }
    }
}

/// What [`Filter::elements`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elements<'a> {
    /// Only the elements whose sub-attribute is one of these can change the result.
    Named(Vec<&'a str>),
    /// Any element can.
    All,
}

/// True when `path` is `name.sub`, or `name` alone when `sub` is `value` (a multi-valued
/// attribute compares by its elements' `value`).
fn names_sub(path: &AttrPath, name: &str, sub: &str) -> bool {
    path.is_sub(name, sub) || (sub.eq_ignore_ascii_case("value") && path.is(name))
}

/// The `sub` values an element must have to satisfy a bracket's filter, when it names them:
/// `sub eq "v"`, either side of an `and` that does, both sides of an `or` that do.
fn anchored<'a>(filter: &'a Filter, sub: &str) -> Option<Vec<&'a str>> {
    match filter {
        Filter::Compare { path, op: CompareOp::Eq, value: Value::String(v) } if path.is(sub) => Some(vec![v]),
        Filter::And(a, b) => anchored(a, sub).or_else(|| anchored(b, sub)),
        Filter::Or(a, b) => {
            let mut values = anchored(a, sub)?;
            values.extend(anchored(b, sub)?);
            Some(values)
        }
        _ => None,
    }
}

/// `id` and `externalId` compare case-sensitively (RFC 7643 caseExact); everything else not.
fn case_exact(path: &AttrPath) -> bool {
    path.is("id") || path.is("externalId")
}

/// Finds `key` in a JSON object ignoring ASCII case (SCIM attribute names are case-insensitive).
pub fn get_ci<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    let map = obj.as_object()?;
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// The attribute `path` names (without its sub-attribute), extension URNs resolved.
fn lookup<'a>(resource: &'a Value, path: &AttrPath) -> Option<&'a Value> {
    let base = match &path.urn {
        Some(urn) => get_ci(resource, urn)?,
        None => resource,
    };
    get_ci(base, &path.name)
}

/// The scalar values `path` reaches: for a multi-valued attribute, one per element (its `sub`
/// or, for a path without one, its `value`).
fn candidates<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let Some(v) = lookup(resource, path) else {
        return Vec::new();
    };
    let pick = |item: &'a Value| -> Option<&'a Value> {
        match (&path.sub, item) {
            (Some(sub), _) => get_ci(item, sub),
            (None, Value::Object(_)) => get_ci(item, "value"),
            (None, other) => Some(other),
        }
    };
    match v {
        Value::Array(items) => items.iter().filter_map(pick).collect(),
        other => pick(other).into_iter().collect(),
    }
}

/// An RFC 3339 date-time (SCIM's `dateTime`, RFC 7643 §2.3.5), as an instant.
fn date_time(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s.trim()).ok()
}

/// Orders two instants for a comparison operator.
fn ordered(ord: Ordering, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn compare(have: &Value, op: CompareOp, want: &Value, exact: bool) -> bool {
    match (have, want) {
        (Value::String(h), Value::String(w)) => {
            // Date-times compare as instants, whatever their offsets and fractional digits
            // (`meta.lastModified gt "2026-01-01T00:00:00Z"`); substring operators stay textual.
            if !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew) {
                if let (Some(h), Some(w)) = (date_time(h), date_time(w)) {
                    return ordered(h.cmp(&w), op);
                }
            }
            let (h, w) = if exact { (h.clone(), w.clone()) } else { (fold(h), fold(w)) };
            match op {
                CompareOp::Eq => h == w,
                CompareOp::Ne => h != w,
                CompareOp::Co => h.contains(&w),
                CompareOp::Sw => h.starts_with(&w),
                CompareOp::Ew => h.ends_with(&w),
                CompareOp::Gt => h > w,
                CompareOp::Ge => h >= w,
                CompareOp::Lt => h < w,
                CompareOp::Le => h <= w,
            }
        }
        (Value::Number(h), Value::Number(w)) => {
            let (Some(h), Some(w)) = (h.as_f64(), w.as_f64()) else {
                return false;
            };
            let ord = h.partial_cmp(&w);
            match op {
                CompareOp::Eq => ord == Some(Ordering::Equal),
                CompareOp::Ne => ord != Some(Ordering::Equal),
                CompareOp::Gt => ord == Some(Ordering::Greater),
                CompareOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
                CompareOp::Lt => ord == Some(Ordering::Less),
                CompareOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                _ => false,
            }
        }
        (Value::Bool(h), Value::Bool(w)) => match op {
            CompareOp::Eq => h == w,
            CompareOp::Ne => h != w,
            _ => false,
        },
        // An IdP may have stored a boolean as "True"/"False", or name one so in a filter
        // (Entra's `roles[primary eq "True"]`); either way it compares as a boolean.
        (Value::String(h), Value::Bool(w)) => match (crate::user::parse_bool_str(h), op) {
            (Some(h), CompareOp::Eq) => h == *w,
            (Some(h), CompareOp::Ne) => h != *w,
            _ => false,
        },
        (Value::Bool(h), Value::String(w)) => match (crate::user::parse_bool_str(w), op) {
            (Some(w), CompareOp::Eq) => *h == w,
            (Some(w), CompareOp::Ne) => *h != w,
            _ => false,
        },
        (Value::Null, Value::Null) => op == CompareOp::Eq,
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Str(String),
    Word(String),
}

fn tokenize(s: &str) -> Result<Vec<Token>, ScimError> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                out.push(Token::LParen);
                i += 1
            }
            b')' => {
                out.push(Token::RParen);
                i += 1
            }
            b'[' => {
                out.push(Token::LBracket);
                i += 1
            }
            b']' => {
                out.push(Token::RBracket);
                i += 1
            }
            b'"' => {
                let start = i;
                i += 1;
                let mut closed = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                if !closed || i > bytes.len() {
                    return Err(ScimError::invalid_filter("unterminated string in filter"));
                }
                let lit: String = serde_json::from_str(&s[start..i])
                    .map_err(|_| ScimError::invalid_filter("invalid string literal in filter"))?;
                if lit.contains('\0') {
                    return Err(ScimError::invalid_filter("a filter must not contain the NUL character"));
                }
                out.push(Token::Str(lit));
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b'[' | b']' | b'"')
                {
                    i += 1;
                }
                out.push(Token::Word(s[start..i].to_string()));
            }
        }
    }
    if out.is_empty() {
        return Err(ScimError::invalid_filter("empty filter"));
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }
    fn describe(&self) -> String {
        match self.peek() {
            None => "end of filter".into(),
            Some(Token::Word(w)) => format!("{w:?}"),
            Some(Token::Str(s)) => format!("string {s:?}"),
            Some(t) => format!("{t:?}"),
        }
    }
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: Token) -> Result<(), ScimError> {
        if self.peek() == Some(&t) {
            self.pos += 1;
            Ok(())
        } else {
            Err(ScimError::invalid_filter(format!("expected {t:?}, found {}", self.describe())))
        }
    }
    fn enter(&mut self) -> Result<(), ScimError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ScimError::invalid_filter("filter is nested too deeply"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, ScimError> {
        if self.keyword("not") {
            self.enter()?;
            self.expect(Token::LParen)?;
            let f = self.or()?;
            self.expect(Token::RParen)?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(f)));
        }
        if self.peek() == Some(&Token::LParen) {
            self.enter()?;
            self.pos += 1;
            let f = self.or()?;
            self.expect(Token::RParen)?;
            self.depth -= 1;
            return Ok(f);
        }
        let path = match self.peek() {
            Some(Token::Word(w)) => {
                let p = AttrPath::parse(w).map_err(|e| ScimError::invalid_filter(e.detail))?;
                self.pos += 1;
                p
            }
            _ => return Err(ScimError::invalid_filter(format!("expected an attribute, found {}", self.describe()))),
        };
        if self.peek() == Some(&Token::LBracket) {
            self.enter()?;
            self.pos += 1;
            let inner = self.or()?;
            self.expect(Token::RBracket)?;
            self.depth -= 1;
            // `emails[type eq "work"].value eq "…"` (Entra's lookup by work email): an element
            // that matches the bracket and whose sub-attribute compares.
            let sub = match self.peek() {
                Some(Token::Word(w)) if w.starts_with('.') => Some(w[1..].to_string()),
                _ => None,
            };
            let filter = match sub {
                None => inner,
                Some(sub) => {
                    if !valid_name(&sub) {
                        return Err(ScimError::invalid_filter(format!("{sub:?} is not a sub-attribute name")));
                    }
                    self.pos += 1;
                    let term = self.comparison(AttrPath { urn: None, name: sub, sub: None })?;
                    Filter::And(Box::new(inner), Box::new(term))
                }
            };
            return Ok(Filter::ValuePath { path, filter: Box::new(filter) });
        }
        self.comparison(path)
    }

    /// What follows an attribute path: `pr`, or an operator and a value.
    fn comparison(&mut self, path: AttrPath) -> Result<Filter, ScimError> {
        let op = match self.peek() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("pr") => {
                self.pos += 1;
                return Ok(Filter::Present(path));
            }
            Some(Token::Word(w)) => {
                CompareOp::parse(w).ok_or_else(|| ScimError::invalid_filter(format!("unknown operator {w:?}")))?
            }
            _ => return Err(ScimError::invalid_filter(format!("expected an operator, found {}", self.describe()))),
        };
        self.pos += 1;
        let value = match self.peek() {
            Some(Token::Str(s)) => Value::String(s.clone()),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Value::Null,
            Some(Token::Word(w)) => match serde_json::from_str::<serde_json::Number>(w) {
                Ok(n) => Value::Number(n),
                Err(_) => return Err(ScimError::invalid_filter(format!("{w:?} is not a value (quote strings)"))),
            },
            _ => return Err(ScimError::invalid_filter(format!("expected a value, found {}", self.describe()))),
        };
        self.pos += 1;
        // RFC 7644 §3.4.2.2: gt, ge, lt and le on a boolean fail with invalidFilter; co, sw and
        // ew compare strings. A boolean is a literal `true`/`false` or a boolean attribute.
        let boolean = value.is_boolean() || BOOLEAN_ATTRIBUTES.iter().any(|a| path.names_last(a));
        if boolean && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Err(ScimError::invalid_filter(format!(
                "{} does not apply to a boolean (only eq and ne do)",
                op.as_str()
            )));
        }
        let date = DATE_TIME_ATTRIBUTES.iter().any(|(name, sub)| path.is_sub(name, sub));
        let textual = matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew);
        if date && !textual && value.as_str().is_none_or(|v| date_time(v).is_none()) {
            return Err(ScimError::invalid_filter(format!(
                "{}.{} compares with a date-time such as \"2026-01-01T00:00:00Z\", not {value}",
                path.name,
                path.sub.as_deref().unwrap_or_default()
            )));
        }
        Ok(Filter::Compare { path, op, value })
    }
}

/// The `dateTime` attributes of the schemas served: what `eq`, `ne`, `gt`, `ge`, `lt` and `le`
/// compare them with must be a date-time.
const DATE_TIME_ATTRIBUTES: [(&str, &str); 2] = [("meta", "created"), ("meta", "lastModified")];

/// The boolean attributes of the schemas served (`/Schemas`): a User's `active` and the
/// `primary` of every multi-valued attribute.
const BOOLEAN_ATTRIBUTES: [&str; 2] = ["active", "primary"];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "userName": "Alice@Example.com",
            "externalId": "Ext-1",
            "displayName": "Alice A",
            "active": true,
            "emails": [{"value": "alice@example.com", "type": "work", "primary": true},
                       {"value": "a@home.org", "type": "home"}],
            "name": {"givenName": "Alice"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "42"}
        })
    }

    #[test]
    fn user_name_eq_is_an_equality_lookup_case_insensitive() {
        let f = Filter::parse("UserName EQ \"alice@example.com\"").unwrap();
        let (path, v) = f.equality().unwrap();
        assert!(path.is("userName"));
        assert_eq!(v, "alice@example.com");
        assert!(f.matches(&user()));
    }

    #[test]
    fn dates_compare_as_instants_not_as_text() {
        let u = json!({"meta": {"lastModified": "2026-11-25T10:30:00.123456Z"}});
        for (f, want) in [
            // Same instant in another offset: textually greater, equal in time.
            ("meta.lastModified eq \"2026-11-25T11:30:00.123456+01:00\"", true),
            ("meta.lastModified gt \"2026-11-25T11:00:00+01:00\"", true),
            ("meta.lastModified gt \"2026-11-25T10:30:00Z\"", true),
            ("meta.lastModified ge \"2026-11-25T10:30:00.123456Z\"", true),
            ("meta.lastModified lt \"2026-11-25T10:30:00.2Z\"", true),
            ("meta.lastModified lt \"2026-11-25T05:00:00-06:00\"", true),
            ("meta.lastModified le \"2026-11-25T10:29:59Z\"", false),
            ("meta.lastModified gt \"2026-11-26T00:00:00Z\"", false),
            ("meta.lastModified ne \"2026-11-25T10:30:00.123456Z\"", false),
            // Substring operators stay textual.
            ("meta.lastModified sw \"2026-11-25\"", true),
        ] {
            assert_eq!(Filter::parse(f).unwrap().matches(&u), want, "{f}");
        }
    }

    #[test]
    fn operators_evaluate() {
        let u = user();
        for (f, want) in [
            ("userName sw \"alice\"", true),
            ("userName ew \"example.com\"", true),
            ("userName co \"@EXAMPLE\"", true),
            ("userName ne \"alice@example.com\"", false),
            ("externalId eq \"ext-1\"", false),
            ("externalId eq \"Ext-1\"", true),
            ("emails.value eq \"a@home.org\"", true),
            ("emails[type eq \"work\" and value co \"alice\"]", true),
            ("emails[type eq \"other\"]", false),
            ("title pr", false),
            ("name.givenName pr and active eq true", true),
            ("active eq false or displayName eq \"alice a\"", true),
            ("not (active eq true)", false),
            ("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq \"42\"", true),
            ("urn:ietf:params:scim:schemas:core:2.0:User:userName sw \"ALICE\"", true),
            ("(userName eq \"x\" or userName eq \"y\") and active eq true", false),
        ] {
            assert_eq!(Filter::parse(f).unwrap().matches(&u), want, "{f}");
        }
    }

    #[test]
    fn booleans_compare_with_true_and_false_written_either_way() {
        let u = json!({"active": true, "roles": [{"value": "Admin", "primary": true}, {"value": "Viewer", "primary": "False"}]});
        for (f, want) in [
            ("active eq \"true\"", true),
            ("active eq \"True\"", true),
            ("active eq \"False\"", false),
            ("active ne \"false\"", true),
            ("active eq \"yes\"", false),
            ("roles[primary eq \"True\"].value eq \"Admin\"", true),
            ("roles[primary eq \"True\" and value eq \"Viewer\"]", false),
            ("roles[primary eq false and value eq \"Viewer\"]", true),
        ] {
            assert_eq!(Filter::parse(f).unwrap().matches(&u), want, "{f}");
        }
    }

    #[test]
    fn a_date_time_attribute_compares_with_a_date_time() {
        for f in [
            r#"meta.created gt "garbage""#,
            "meta.lastModified gt 5",
            "meta.lastModified eq true",
            r#"Meta.LastModified LE "2026-13-01T00:00:00Z""#,
        ] {
            let err = Filter::parse(f).unwrap_err();
            assert_eq!((err.status, err.scim_type), (400, Some("invalidFilter")), "{f}");
        }
        for f in [r#"meta.created gt "2026-01-01T00:00:00Z""#, r#"meta.lastModified sw "2026""#, "meta.created pr"] {
            assert!(Filter::parse(f).is_ok(), "{f}");
        }
    }

    #[test]
    fn ordering_and_substrings_do_not_apply_to_booleans() {
        for f in [
            "active gt true",
            "active GE \"true\"",
            "active co \"t\"",
            "emails[primary lt true]",
            "emails.primary sw \"t\"",
            "title gt false",
            "roles[value eq \"x\" and primary le true]",
        ] {
            let err = Filter::parse(f).unwrap_err();
            assert_eq!((err.status, err.scim_type), (400, Some("invalidFilter")), "{f}");
        }
        for f in ["active eq true", "active ne \"False\"", "emails[primary eq true]", "primaryPhone gt \"1\""] {
            assert!(Filter::parse(f).is_ok(), "{f}");
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let f = Filter::parse("a eq \"1\" or b eq \"2\" and c eq \"3\"").unwrap();
        assert!(matches!(f, Filter::Or(_, ref r) if matches!(**r, Filter::And(_, _))));
    }

    #[test]
    fn rejects_bad_filters_with_invalid_filter() {
        let deep = format!("{}a pr{}", "(".repeat(100), ")".repeat(100));
        for f in [
            "",
            "   ",
            "userName",
            "userName eq",
            "userName eq alice",
            "userName xx \"a\"",
            "userName eq \"unterminated",
            "userName eq \"a\" and",
            "(userName eq \"a\"",
            "userName eq \"a\")",
            "emails[type eq \"work\"",
            "1abc eq \"a\"",
            "userName eq \"a\" \"b\"",
            "\"\\u12\"",
            "userName eq \"a\u{0}\"",
            "userName eq \"a\\u0000\"",
            deep.as_str(),
        ] {
            let e = Filter::parse(f).unwrap_err();
            assert_eq!(e.scim_type, Some("invalidFilter"), "{f:?}");
            assert_eq!(e.status, 400);
        }
    }

    #[test]
    fn escaped_quotes_in_values() {
        let f = Filter::parse(r#"displayName eq "say \"hi\"""#).unwrap();
        assert_eq!(f.equality().unwrap().1, "say \"hi\"");
    }

    #[test]
    fn a_sub_attribute_after_a_bracket_compares_the_element_the_bracket_selects() {
        let f = Filter::parse(r#"emails[type eq "work"].value eq "ALICE@example.com""#).unwrap();
        assert!(f.matches(&user()));
        let home = json!({"emails": [{"value": "alice@example.com", "type": "home"},
                                     {"value": "other@example.com", "type": "work"}]});
        assert!(!f.matches(&home), "the work element must be the one with that value");
        assert!(Filter::parse(r#"emails[type eq "work"].value pr"#).unwrap().matches(&user()));
        assert!(!Filter::parse(r#"emails[type eq "other"].value pr"#).unwrap().matches(&user()));
        assert!(Filter::parse(r#"emails[type eq "work"].value sw "alice" and active eq true"#)
            .unwrap()
            .matches(&user()));
        for bad in [
            r#"emails[type eq "work"].9 eq "a""#,
            r#"emails[type eq "work"]. eq "a""#,
            r#"emails[type eq "work"].value"#,
        ] {
            assert_eq!(Filter::parse(bad).unwrap_err().scim_type, Some("invalidFilter"), "{bad}");
        }
    }

    #[test]
    fn element_equality_finds_the_element_a_term_requires() {
        let eq =
            |f: &str, name: &str, sub: &str| Filter::parse(f).unwrap().element_equality(name, sub).map(str::to_string);
        assert_eq!(eq(r#"emails[type eq "work"].value eq "a@x""#, "emails", "value").as_deref(), Some("a@x"));
        assert_eq!(eq(r#"emails.value eq "a@x""#, "emails", "value").as_deref(), Some("a@x"));
        assert_eq!(eq(r#"members eq "u1""#, "members", "value").as_deref(), Some("u1"));
        assert_eq!(eq(r#"members[value eq "u1" and type eq "User"]"#, "members", "value").as_deref(), Some("u1"));
        assert_eq!(eq(r#"members[value eq "u1" or value eq "u2"]"#, "members", "value"), None);
        assert_eq!(eq(r#"emails.value co "a@x""#, "emails", "value"), None);
        assert_eq!(eq(r#"emails[type eq "work"].display eq "a@x""#, "emails", "value"), None);
        let both = Filter::parse(r#"id eq "g1" and members[value eq "u1"]"#).unwrap();
        let terms = both.conjuncts();
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[1].element_equality("members", "value"), Some("u1"));
    }

    #[test]
    fn required_text_is_a_stored_string_a_comparison_needs() {
        let text =
            |f: &str| Filter::parse(f).unwrap().required_text(&["id", "meta"]).map(|(t, op)| (t.to_string(), op));
        let some = |t: &str, op| Some((t.to_string(), op));
        assert_eq!(text(r#"title eq "Lead \"A\"""#), some("Lead \"A\"", CompareOp::Eq));
        assert_eq!(text(r#"title sw "Lead""#), some("Lead", CompareOp::Sw));
        assert_eq!(text(r#"title ew "2026-01-01T00:00:00Z""#), some("2026-01-01T00:00:00Z", CompareOp::Ew));
        assert_eq!(text(r#"title co "ea""#), some("ea", CompareOp::Co));
        assert_eq!(text(r#"title eq "Équipe\n""#), some("Équipe\n", CompareOp::Eq));
        assert_eq!(text(r#"emails[type eq "work"]"#), some("work", CompareOp::Eq));
        assert_eq!(text(r#"phoneNumbers[type eq "work"].value eq "555""#), some("work", CompareOp::Eq));
        assert_eq!(
            text(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "D""#),
            some("D", CompareOp::Eq)
        );
        for none in [
            r#"id eq "x""#,
            r#"meta.created co "x""#,
            r#"meta[created eq "x"]"#,
            r#"title eq "2026-01-01T00:00:00Z""#,
            r#"title eq """#,
            r#"title ne "x""#,
            r#"title gt "x""#,
            "active eq true",
            r#"active eq "True""#,
            r#"title eq "false""#,
            r#"roles[primary eq "true"]"#,
        ] {
            assert_eq!(text(none), None, "{none}");
        }
    }

    #[test]
    fn instant_comparison_is_a_date_time_order_a_term_needs() {
        let at = |f: &str| Filter::parse(f).unwrap().instant_comparison("meta", "lastModified");
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
        assert_eq!(
            at(r#"meta.lastModified gt "2026-01-01T00:00:00Z""#),
            Some((CompareOp::Gt, t("2026-01-01T00:00:00Z")))
        );
        assert_eq!(
            at(r#"META.LASTMODIFIED le "2026-01-01T01:00:00.5+01:00""#),
            Some((CompareOp::Le, t("2026-01-01T00:00:00.5Z")))
        );
        assert_eq!(
            at(r#"urn:ietf:params:scim:schemas:core:2.0:User:meta.lastModified eq "2026-01-01T00:00:00Z""#),
            Some((CompareOp::Eq, t("2026-01-01T00:00:00Z")))
        );
        for none in [
            r#"meta.lastModified ne "2026-01-01T00:00:00Z""#,
            r#"meta.lastModified sw "2026-01-01T00:00:00Z""#,
            r#"meta.created gt "2026-01-01T00:00:00Z""#,
            r#"lastModified gt "2026-01-01T00:00:00Z""#,
            r#"meta[lastModified gt "2026-01-01T00:00:00Z"]"#,
            r#"meta.lastModified gt "2026-01-01T00:00:00Z" or title eq "x""#,
            "meta.lastModified pr",
        ] {
            assert_eq!(at(none), None, "{none}");
        }
    }

    #[test]
    fn elements_names_the_members_that_decide_a_filter() {
        let elements = |f: &str| match Filter::parse(f).unwrap().elements("members", "value") {
            Elements::Named(v) => Some(v.into_iter().map(str::to_string).collect::<Vec<_>>()),
            Elements::All => None,
        };
        let named = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(elements(r#"displayName eq "Admins""#), named(&[]));
        assert_eq!(elements(r#"id eq "g1" and members[value eq "u1"]"#), named(&["u1"]));
        assert_eq!(elements(r#"not (members.value eq "u1") or members ne "u2""#), named(&["u1", "u2"]));
        assert_eq!(elements(r#"members[value eq "u1" or value eq "u2"]"#), named(&["u1", "u2"]));
        assert_eq!(elements(r#"members[type eq "User" and value eq "u1"]"#), named(&["u1"]));
        for all in [
            "members pr",
            r#"members[display co "a"]"#,
            r#"members[not (value eq "u1")]"#,
            r#"members[value eq "u1" or display eq "b"]"#,
            r#"members.display eq "u1""#,
            r#"members.value co "u1""#,
        ] {
            assert_eq!(elements(all), None, "{all}");
        }
    }

    #[test]
    fn no_panic_on_arbitrary_bytes() {
        for s in ["\"", "\\", "[]", "a[", "]", "a eq \"\\", "é eq \"x\"", "a eq 1e999999", "urn:", "urn:x:"] {
            let _ = Filter::parse(s);
        }
    }

    /// The filter's own list of boolean attributes is the boolean attributes `/Schemas`
    /// describes: one added to a schema and not here would take `gt` or `co` silently.
    #[test]
    fn boolean_attributes_are_those_of_the_schemas() {
        fn booleans(attributes: &Value, out: &mut std::collections::BTreeSet<String>) {
            for a in attributes.as_array().into_iter().flatten() {
                if a["type"] == "boolean" {
                    out.insert(a["name"].as_str().unwrap_or_default().to_string());
                }
                booleans(&a["subAttributes"], out);
            }
        }
        let mut described = std::collections::BTreeSet::new();
        for schema in crate::schema::schemas("b") {
            booleans(&schema["attributes"], &mut described);
        }
        let listed: std::collections::BTreeSet<String> = BOOLEAN_ATTRIBUTES.iter().map(|a| a.to_string()).collect();
        assert_eq!(described, listed);
    }
}
