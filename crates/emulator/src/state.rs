//! The emulator's in-memory state and the rules Meta enforces on it (unique emails per
//! business, the last admin cannot go, role enum), independent of HTTP.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// The `role` values Meta's business-user endpoints accept.
pub const ROLES: [&str; 15] = [
    "FINANCE_EDITOR",
    "FINANCE_ANALYST",
    "ADS_RIGHTS_REVIEWER",
    "ADMIN",
    "EMPLOYEE",
    "DEVELOPER",
    "PARTNER_CENTER_ADMIN",
    "PARTNER_CENTER_ANALYST",
    "PARTNER_CENTER_OPERATIONS",
    "PARTNER_CENTER_MARKETING",
    "PARTNER_CENTER_EDUCATION",
    "MANAGE",
    "DEFAULT",
    "FINANCE_EDIT",
    "FINANCE_VIEW",
];

/// Requests kept in the log; older ones are dropped so a long benchmark stays bounded.
const MAX_REQUESTS: usize = 100_000;
/// Fault rules kept at once.
const MAX_FAULTS: usize = 1_000;
/// Business-user ids start here, so they look like Meta's 15-digit ids.
const FIRST_USER_ID: u64 = 100_000_000_000_001;

/// A person in a business, as the control plane shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessUser {
    pub id: String,
    pub email: String,
    pub role: String,
    pub name: String,
}

/// A fault to inject into app requests. A rule matches a request when `method` (if set)
/// equals its method and `path_contains` (if set) occurs in its path. A matching rule with a
/// `status` answers with that status and a Graph error body; a rule with only `latency_ms`
/// delays the request and lets it through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FaultRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How many requests the rule applies to; absent = until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The Graph error code of the body; by default derived from the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_code: Option<i64>,
    /// The Graph `error_subcode` of the body, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_subcode: Option<i64>,
}

impl FaultRule {
    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
            && self.times != Some(0)
    }
}

/// One app request, as `GET /_emulator/requests` lists it. The query string is left out:
/// it may carry the access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// RFC 3339 with milliseconds, UTC.
    pub at: String,
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// Why a control-plane call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmulatorError {
    #[error("business id {0:?} must be a non-empty numeric string")]
    BadBusinessId(String),
    #[error("{0:?} is not an email address")]
    BadEmail(String),
    #[error("role {0:?} is not one of {roles}", roles = ROLES.join(", "))]
    BadRole(String),
    #[error("{0} is already a user of this business")]
    DuplicateEmail(String),
    #[error("bad fault rule: {0}")]
    BadFault(String),
}

#[derive(Debug, Default)]
pub(crate) struct Business {
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct UserRec {
    pub business_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    next_user_id: u64,
    pub businesses: BTreeMap<String, Business>,
    /// Every business user of every business, by numeric id (so creation order).
    pub users: BTreeMap<u64, UserRec>,
    pub faults: Vec<FaultRule>,
    pub requests: VecDeque<RequestRecord>,
    /// App calls answered so far; drives the usage headers.
    pub calls: u64,
}

pub(crate) fn valid_business_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn valid_email(email: &str) -> bool {
    let email = email.trim();
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && email.len() <= 254
                && !email.contains(char::is_whitespace)
        }
        None => false,
    }
}

pub(crate) fn valid_role(role: &str) -> bool {
    ROLES.contains(&role)
}

/// "alice.smith@example.com" → "Alice Smith": what Meta shows before the person sets a name.
fn name_from_email(email: &str) -> String {
    let local = email.split('@').next().unwrap_or(email);
    local
        .split(['.', '_', '-', '+'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl State {
    pub fn business_exists(&self, id: &str) -> bool {
        self.businesses.contains_key(id)
    }

    pub fn add_user(
        &mut self,
        business_id: &str,
        email: &str,
        role: &str,
        name: Option<&str>,
    ) -> Result<BusinessUser, EmulatorError> {
        if !valid_business_id(business_id) {
            return Err(EmulatorError::BadBusinessId(business_id.to_string()));
        }
        let email = email.trim();
        if !valid_email(email) {
            return Err(EmulatorError::BadEmail(email.to_string()));
        }
        if !valid_role(role) {
            return Err(EmulatorError::BadRole(role.to_string()));
        }
        if self.find_by_email(business_id, email).is_some() {
            return Err(EmulatorError::DuplicateEmail(email.to_string()));
        }
        self.businesses.entry(business_id.to_string()).or_default();
        if self.next_user_id < FIRST_USER_ID {
            self.next_user_id = FIRST_USER_ID;
        }
        let id = self.next_user_id;
        self.next_user_id += 1;
        let name =
            name.map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).unwrap_or_else(|| name_from_email(email));
        let rec =
            UserRec { business_id: business_id.to_string(), email: email.to_string(), name, role: role.to_string() };
        self.users.insert(id, rec.clone());
        Ok(BusinessUser { id: id.to_string(), email: rec.email, role: rec.role, name: rec.name })
    }

    pub fn find_by_email(&self, business_id: &str, email: &str) -> Option<u64> {
        self.users
            .iter()
            .find(|(_, u)| u.business_id == business_id && u.email.eq_ignore_ascii_case(email))
            .map(|(id, _)| *id)
    }

    pub fn users_of(&self, business_id: &str) -> Vec<BusinessUser> {
        self.users
            .iter()
            .filter(|(_, u)| u.business_id == business_id)
            .map(|(id, u)| BusinessUser {
                id: id.to_string(),
                email: u.email.clone(),
                role: u.role.clone(),
                name: u.name.clone(),
            })
            .collect()
    }

    pub fn require_token(&mut self, business_id: &str, token: &str) -> Result<(), EmulatorError> {
        if !valid_business_id(business_id) {
            return Err(EmulatorError::BadBusinessId(business_id.to_string()));
        }
        self.businesses.entry(business_id.to_string()).or_default().token = Some(token.to_string());
        Ok(())
    }

    pub fn add_fault(&mut self, rule: FaultRule) -> Result<(), EmulatorError> {
        if rule.status.is_none() && rule.latency_ms.is_none() {
            return Err(EmulatorError::BadFault("give a status, a latency_ms, or both".into()));
        }
        if let Some(status) = rule.status {
            if !(400..=599).contains(&status) {
                return Err(EmulatorError::BadFault(format!("status {status} is not an error status (400-599)")));
            }
        }
        if self.faults.len() >= MAX_FAULTS {
            return Err(EmulatorError::BadFault(format!("at most {MAX_FAULTS} rules; clear them first")));
        }
        self.faults.push(rule);
        Ok(())
    }

    pub fn record(&mut self, record: RequestRecord) {
        if self.requests.len() >= MAX_REQUESTS {
            self.requests.pop_front();
        }
        self.requests.push_back(record);
    }

    /// Admins left in the business if `user` lost its admin role.
    pub fn is_last_admin(&self, user_id: u64) -> bool {
        let Some(user) = self.users.get(&user_id) else {
            return false;
        };
        if user.role != "ADMIN" {
            return false;
        }
        !self.users.iter().any(|(id, u)| *id != user_id && u.business_id == user.business_id && u.role == "ADMIN")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_email_local_part() {
        assert_eq!(name_from_email("alice.smith@example.com"), "Alice Smith");
        assert_eq!(name_from_email("bob@example.com"), "Bob");
    }

    #[test]
    fn emails_are_unique_per_business_case_insensitively() {
        let mut s = State::default();
        s.add_user("1", "a@x.io", "ADMIN", None).expect("first");
        assert_eq!(s.add_user("1", "A@X.io", "EMPLOYEE", None), Err(EmulatorError::DuplicateEmail("A@X.io".into())));
        assert!(s.add_user("2", "a@x.io", "EMPLOYEE", None).is_ok());
    }

    #[test]
    fn the_only_admin_is_the_last_admin() {
        let mut s = State::default();
        let a = s.add_user("1", "a@x.io", "ADMIN", None).expect("a");
        let a_id: u64 = a.id.parse().expect("numeric");
        assert!(s.is_last_admin(a_id));
        s.add_user("1", "b@x.io", "ADMIN", None).expect("b");
        assert!(!s.is_last_admin(a_id));
    }

    #[test]
    fn bad_input_is_refused() {
        let mut s = State::default();
        assert!(matches!(s.add_user("abc", "a@x.io", "ADMIN", None), Err(EmulatorError::BadBusinessId(_))));
        assert!(matches!(s.add_user("1", "nope", "ADMIN", None), Err(EmulatorError::BadEmail(_))));
        assert!(matches!(s.add_user("1", "a@x.io", "BOSS", None), Err(EmulatorError::BadRole(_))));
        assert!(s.users.is_empty());
        assert!(s.add_fault(FaultRule::default()).is_err());
        assert!(s.add_fault(FaultRule { status: Some(200), ..Default::default() }).is_err());
    }
}
