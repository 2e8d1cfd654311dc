//! The emulator's in-memory state and the rules Meta enforces on it (unique emails per
//! business, the last admin cannot go, role enum), independent of HTTP.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

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

/// The roles Meta's `role` field reports: every other role reads back as EMPLOYEE when the
/// hub reports base roles only ([`Settings::base_roles_only`]).
pub const BASE_ROLES: [&str; 2] = ["ADMIN", "EMPLOYEE"];

/// The base role Meta reports for a business user holding `role`.
pub fn base_role(role: &str) -> &'static str {
    if role == "ADMIN" {
        "ADMIN"
    } else {
        "EMPLOYEE"
    }
}

/// The tasks Meta takes on an ad account (`POST /act_{id}/assigned_users`).
pub const AD_ACCOUNT_TASKS: [&str; 5] = ["MANAGE", "ADVERTISE", "ANALYZE", "DRAFT", "AA_ANALYZE"];

/// The tasks Meta takes on a page: the documented set and the newer one a live v23 error
/// listed (FULL_CONTROL, CONTENT, MESSAGES, COMMUNITY_ACTIVITY); both are accepted, and so is
/// the open-ended `PROFILE_PLUS_*` family.
pub const PAGE_TASKS: [&str; 15] = [
    "MANAGE",
    "CREATE_CONTENT",
    "MODERATE",
    "MESSAGING",
    "ADVERTISE",
    "ANALYZE",
    "MODERATE_COMMUNITY",
    "MANAGE_JOBS",
    "MANAGE_LEADS",
    "PAGES_MESSAGING",
    "CASHIER_ROLE",
    "FULL_CONTROL",
    "CONTENT",
    "MESSAGES",
    "COMMUNITY_ACTIVITY",
];

/// Whether Meta takes `task` on an asset of `kind` (`ad_account` or `page`).
pub fn valid_task(kind: &str, task: &str) -> bool {
    match kind {
        "ad_account" => AD_ACCOUNT_TASKS.contains(&task),
        "page" => PAGE_TASKS.contains(&task) || task.strip_prefix("PROFILE_PLUS_").is_some_and(|t| !t.is_empty()),
        _ => false,
    }
}

/// Requests kept in the log; older ones are dropped so a long benchmark stays bounded.
const MAX_REQUESTS: usize = 100_000;
/// Calls of the last hour kept to report usage; beyond, the oldest are forgotten.
pub(crate) const MAX_RECENT_CALLS: usize = 1_000_000;
/// The hourly budget usage is reported against when none is set.
pub(crate) const REPORTED_BUDGET: u64 = 100_000;
const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
/// The most padding a fault adds to an answer.
const MAX_PADDING: u64 = 64 << 20;
/// Fault rules kept at once.
const MAX_FAULTS: usize = 1_000;
/// Business-user ids start here, so they look like Meta's 15-digit ids.
const FIRST_USER_ID: u64 = 100_000_000_000_001;
/// Invitation (BusinessRoleRequest) ids start here: never a business user's or an asset's id.
const FIRST_INVITATION_ID: u64 = 300_000_000_000_001;
/// How long an invitation is shown as valid (Meta's `expiration_time`).
const INVITATION_DAYS: i64 = 30;

/// How the hub behaves where Meta's behaviour is not what the demo and most tests want. Set as
/// a whole (`POST /_emulator/settings`: what is left out is off); a misspelt key is refused
/// rather than silently leaving its behaviour off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `POST /{business}/business_users` leaves a pending invitation (a BusinessRoleRequest,
    /// listed by `pending_users`) that becomes a business user only once accepted through
    /// the control plane, as with Meta. Off (the default): the invited person is a business
    /// user at once.
    #[serde(default)]
    pub invitations_pending: bool,
    /// The `role` field of business users reports only the base roles, ADMIN and EMPLOYEE,
    /// as Meta's does (a DEVELOPER reads back as EMPLOYEE). Off (the default): it reports the
    /// role held. The control plane always shows the role held.
    #[serde(default)]
    pub base_roles_only: bool,
    /// Calls the hub allows in a rolling hour, counted as Meta counts them (throttled calls
    /// too): the usage headers report the share used, and once it is used up every call is
    /// throttled as Meta throttles (HTTP 400, code 4, no `Retry-After`, the minutes until
    /// access comes back in `X-Business-Use-Case-Usage`). Absent (the default): usage is
    /// reported against 100,000 calls an hour and never enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly_call_budget: Option<u64>,
    /// The SCIM app answers `GET /Users` with every user, whatever the `filter` asks for (as
    /// apps that do not implement filtering do).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scim_ignores_filter: bool,
    /// The SCIM app writes attribute names in lower case (`resources`, `totalresults`,
    /// `username`, `active`, ...): RFC 7643 makes them case-insensitive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scim_lowercase_names: bool,
    /// The SCIM app takes a PATCH or PUT of `active: false` without deactivating anyone: the
    /// user stays active, and the answer shows it so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scim_keeps_active: bool,
    /// The SCIM app takes a PATCH or PUT of `roles` without changing anyone's role: the user
    /// keeps the roles they had, and the answer shows them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scim_keeps_roles: bool,
    /// New SCIM users' ids start with this (`auth0|`, `user@`): ids that a URL must carry
    /// percent-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim_id_prefix: Option<String>,
    /// The SCIM app reads requests strictly: a `+` in the query string is a plus sign, not a
    /// space (RFC 3986; only HTML forms make it a space), a filter value is a JSON string
    /// (RFC 7644 3.4.2.2), and a request body not sent as `application/scim+json` is refused
    /// with 415.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scim_strict: bool,
}

/// An invitation someone has not accepted yet (Meta's BusinessRoleRequest), as the control
/// plane shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: String,
    pub email: String,
    pub role: String,
    pub status: String,
    pub created_time: String,
    pub expiration_time: String,
}

#[derive(Debug, Clone)]
pub(crate) struct InvitationRec {
    pub business_id: String,
    pub email: String,
    pub role: String,
    pub created: chrono::DateTime<chrono::Utc>,
}

impl InvitationRec {
    pub fn view(&self, id: u64) -> Invitation {
        let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%z").to_string();
        Invitation {
            id: id.to_string(),
            email: self.email.clone(),
            role: self.role.clone(),
            status: "PENDING".into(),
            created_time: time(self.created),
            expiration_time: time(self.created + chrono::Duration::days(INVITATION_DAYS)),
        }
    }
}

/// A person in a business, as the control plane shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessUser {
    pub id: String,
    pub email: String,
    pub role: String,
    pub name: String,
}

/// A fault to inject into app requests (Graph and SCIM alike). A rule matches a request when
/// `method` (if set) equals its method, `path_contains` (if set) occurs in its path, the
/// request falls in the rule's window (`starts_after_ms` .. `+ for_ms` from when the rule was
/// added: an outage window), and a draw under `probability` (default 1) succeeds: an error
/// rate. A matching rule delays the request by `latency_ms` (or a uniform draw between
/// `latency_ms` and `latency_max_ms`); with a `status` it then answers with that status and an
/// error body (Graph or SCIM); with `lose_response` it lets the request take effect and holds
/// the answer for `hold_ms` (default 30 s), so the client times out: "applied, but the
/// response was lost". With a 3xx `status` and a `location`, it answers with that redirect
/// instead (a base URL that points at the wrong place). With `padding_bytes` it answers as
/// usual (or with its status) and pads the body with that many spaces: an oversized answer
/// (SCIM answers only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
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
    /// The first `skip` matching requests pass untouched (a fault on the second page, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<u32>,
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
    /// Share of matching requests the rule applies to (0..=1); absent = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Upper end of a uniform latency draw starting at `latency_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_max_ms: Option<u64>,
    /// The rule starts this long after it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_after_ms: Option<u64>,
    /// The rule lasts this long once started; absent = until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_ms: Option<u64>,
    /// Apply the request, then hold its answer for `hold_ms` (the client times out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lose_response: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u64>,
    /// Minutes put into `estimated_time_to_regain_access` of `X-Business-Use-Case-Usage` on
    /// this fault's answers (Meta's throttling hint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regain_minutes: Option<u64>,
    /// Answer a matching GET of a list edge with an empty page that still has a `next` (no
    /// `cursors`), as Meta may: following `next` goes on from where the request started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_page: bool,
    /// The `Location` of a redirect (a 3xx `status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Spaces appended to the JSON body of the answer (SCIM answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding_bytes: Option<u64>,
}

/// A fault rule with the time it was added (its window counts from then).
#[derive(Debug, Clone)]
pub(crate) struct ActiveFault {
    pub rule: FaultRule,
    pub added_at: Instant,
}

impl FaultRule {
    pub(crate) fn matches(&self, method: &str, path: &str, added: Instant) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
            && self.times != Some(0)
            && self.in_window(added, Instant::now())
    }

    fn in_window(&self, added: Instant, now: Instant) -> bool {
        let start = added + Duration::from_millis(self.starts_after_ms.unwrap_or(0));
        let end = self.for_ms.map(|ms| start + Duration::from_millis(ms));
        now >= start && end.is_none_or(|end| now < end)
    }

    /// Draws whether this matching request is hit (the error rate).
    pub(crate) fn fires(&self, draw: f64) -> bool {
        self.probability.is_none_or(|p| draw < p)
    }

    /// The latency of one request under this rule.
    pub(crate) fn latency(&self, draw: f64) -> Duration {
        let low = self.latency_ms.unwrap_or(0);
        let high = self.latency_max_ms.unwrap_or(low).max(low);
        Duration::from_millis(low + ((high - low) as f64 * draw) as u64)
    }
}

/// One app request, as `GET /_emulator/requests` lists it. The query string is left out:
/// it may carry the access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When the request arrived (before injected latency), RFC 3339 with milliseconds, UTC.
    /// The log is in answer order, so arrival times may be slightly out of order.
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
    #[error("asset kind {0:?} is not ad_account or page")]
    BadAssetKind(String),
    #[error("no such asset or business user: {0}")]
    NoSuchObject(String),
    #[error("task {task:?} is not one Meta takes on a {kind}")]
    BadTask { kind: String, task: String },
    #[error("{0} already has a pending invitation to this business")]
    AlreadyInvited(String),
    #[error("no such pending invitation: {0}")]
    NoSuchInvitation(String),
    #[error("SCIM userName {0:?} is already taken")]
    DuplicateUserName(String),
}

/// An asset (ad account or page) of a business, with the tasks each business user holds on
/// it, as the control plane shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub id: String,
    pub kind: String,
    pub name: String,
    /// Business user id → tasks.
    pub assigned: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone)]
pub(crate) struct AssetRec {
    pub business_id: String,
    pub kind: String,
    pub name: String,
    pub assigned: BTreeMap<u64, Vec<String>>,
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
    /// (business id, lowercased email) → user id: lookups stay cheap with 100 000 users.
    by_email: HashMap<(String, String), u64>,
    pub faults: Vec<ActiveFault>,
    pub requests: VecDeque<RequestRecord>,
    /// Assets by id (`act_…` for ad accounts, digits for pages).
    pub assets: BTreeMap<String, AssetRec>,
    next_asset: u64,
    /// The SCIM app's users by id, as full SCIM resources.
    pub scim_users: BTreeMap<String, serde_json::Value>,
    pub scim_token: Option<String>,
    next_scim: u64,
    /// When the calls of the last hour arrived, oldest first (at most [`MAX_RECENT_CALLS`]):
    /// what the usage headers report.
    pub recent_calls: VecDeque<std::time::Instant>,
    /// Pending invitations by id.
    pub invitations: BTreeMap<u64, InvitationRec>,
    next_invitation_id: u64,
    pub settings: Settings,
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
        let email = self.check_newcomer(business_id, email, role)?;
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
        self.by_email.insert((business_id.to_string(), email.to_lowercase()), id);
        self.users.insert(id, rec.clone());
        Ok(BusinessUser { id: id.to_string(), email: rec.email, role: rec.role, name: rec.name })
    }

    /// Checks what adding someone to a business takes (a valid business id, address and role,
    /// and no business user of that address yet); returns the address trimmed.
    fn check_newcomer<'e>(&self, business_id: &str, email: &'e str, role: &str) -> Result<&'e str, EmulatorError> {
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
        Ok(email)
    }

    /// Invites `email` with `role`: a pending invitation, or (unless invitations stay pending)
    /// a business user at once. Returns the id Meta answers with: the invitation's or the
    /// business user's.
    pub fn invite(&mut self, business_id: &str, email: &str, role: &str) -> Result<String, EmulatorError> {
        if !self.settings.invitations_pending {
            return self.add_user(business_id, email, role, None).map(|u| u.id);
        }
        self.add_invitation(business_id, email, role).map(|i| i.id)
    }

    /// Adds a pending invitation (what the control plane's seed endpoint does).
    pub fn add_invitation(&mut self, business_id: &str, email: &str, role: &str) -> Result<Invitation, EmulatorError> {
        let email = self.check_newcomer(business_id, email, role)?;
        if self.invitation_for(business_id, email).is_some() {
            return Err(EmulatorError::AlreadyInvited(email.to_string()));
        }
        self.businesses.entry(business_id.to_string()).or_default();
        if self.next_invitation_id < FIRST_INVITATION_ID {
            self.next_invitation_id = FIRST_INVITATION_ID;
        }
        let id = self.next_invitation_id;
        self.next_invitation_id += 1;
        let rec = InvitationRec {
            business_id: business_id.to_string(),
            email: email.to_string(),
            role: role.to_string(),
            created: chrono::Utc::now(),
        };
        let view = rec.view(id);
        self.invitations.insert(id, rec);
        Ok(view)
    }

    fn invitation_for(&self, business_id: &str, email: &str) -> Option<u64> {
        let email = email.trim().to_lowercase();
        self.invitations
            .iter()
            .find(|(_, i)| i.business_id == business_id && i.email.to_lowercase() == email)
            .map(|(id, _)| *id)
    }

    /// The invitation with this id, if it is pending.
    pub fn invitation_of(&self, id: &str) -> Option<u64> {
        id.parse::<u64>().ok().filter(|i| self.invitations.contains_key(i))
    }

    pub fn invitations_of(&self, business_id: &str) -> Vec<Invitation> {
        self.invitations.iter().filter(|(_, i)| i.business_id == business_id).map(|(id, i)| i.view(*id)).collect()
    }

    /// The invited person accepts: the invitation goes and they become a business user with
    /// its role.
    pub fn accept(&mut self, id: &str) -> Result<BusinessUser, EmulatorError> {
        let Some(iid) = self.invitation_of(id) else {
            return Err(EmulatorError::NoSuchInvitation(id.to_string()));
        };
        let Some(rec) = self.invitations.remove(&iid) else {
            return Err(EmulatorError::NoSuchInvitation(id.to_string()));
        };
        self.add_user(&rec.business_id, &rec.email, &rec.role, None)
    }

    /// The `role` field as the Graph API reports it for a business user holding `role`.
    pub fn reported_role<'a>(&self, role: &'a str) -> &'a str {
        if self.settings.base_roles_only {
            base_role(role)
        } else {
            role
        }
    }

    pub fn find_by_email(&self, business_id: &str, email: &str) -> Option<u64> {
        self.by_email.get(&(business_id.to_string(), email.trim().to_lowercase())).copied()
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
        if rule.status.is_none()
            && rule.latency_ms.is_none()
            && !rule.lose_response
            && !rule.empty_page
            && rule.padding_bytes.is_none()
        {
            return Err(EmulatorError::BadFault(
                "give a status, a latency_ms, lose_response, empty_page or padding_bytes".into(),
            ));
        }
        if rule.padding_bytes.is_some_and(|n| n > MAX_PADDING) {
            return Err(EmulatorError::BadFault(format!("padding_bytes is at most {MAX_PADDING}")));
        }
        if rule.empty_page && (rule.status.is_some() || rule.lose_response) {
            return Err(EmulatorError::BadFault(
                "an empty page is an answer: no status or lose_response with it".into(),
            ));
        }
        if rule.probability.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
            return Err(EmulatorError::BadFault("probability must be between 0 and 1".into()));
        }
        if rule.status.is_some() && rule.lose_response {
            return Err(EmulatorError::BadFault("a rule either answers an error or loses the answer".into()));
        }
        if let Some(status) = rule.status {
            let redirect = rule.location.is_some() && (300..=399).contains(&status);
            if !redirect && !(400..=599).contains(&status) {
                return Err(EmulatorError::BadFault(format!(
                    "status {status} is not an error status (400-599), nor a redirect (300-399) with a location"
                )));
            }
        }
        if self.faults.len() >= MAX_FAULTS {
            return Err(EmulatorError::BadFault(format!("at most {MAX_FAULTS} rules; clear them first")));
        }
        self.faults.push(ActiveFault { rule, added_at: Instant::now() });
        Ok(())
    }

    /// Counts a call arriving `now` against the rolling hour; returns the calls of the hour,
    /// this one included.
    pub fn count_call(&mut self, now: std::time::Instant) -> u64 {
        while self.recent_calls.front().is_some_and(|t| now.duration_since(*t) >= HOUR) {
            self.recent_calls.pop_front();
        }
        if self.recent_calls.len() >= MAX_RECENT_CALLS {
            self.recent_calls.pop_front();
        }
        self.recent_calls.push_back(now);
        self.recent_calls.len() as u64
    }

    /// The share of the hourly budget used, in whole percent (at most 100), and the minutes
    /// until a call is allowed again when it is used up.
    pub fn usage(&self, now: std::time::Instant) -> (u64, u64) {
        let budget = self.settings.hourly_call_budget.unwrap_or(REPORTED_BUDGET).max(1);
        let used = self.recent_calls.len() as u64;
        let pct = (used.saturating_mul(100) / budget).min(100);
        let regain = match (self.settings.hourly_call_budget, self.recent_calls.front()) {
            (Some(b), Some(oldest)) if used > b => {
                let left = HOUR.saturating_sub(now.duration_since(*oldest));
                left.as_secs().div_ceil(60).max(1)
            }
            _ => 0,
        };
        (pct, regain)
    }

    pub fn record(&mut self, record: RequestRecord) {
        if self.requests.len() >= MAX_REQUESTS {
            self.requests.pop_front();
        }
        self.requests.push_back(record);
    }

    pub fn add_asset(&mut self, business_id: &str, kind: &str, name: &str) -> Result<Asset, EmulatorError> {
        if !valid_business_id(business_id) {
            return Err(EmulatorError::BadBusinessId(business_id.to_string()));
        }
        self.businesses.entry(business_id.to_string()).or_default();
        self.next_asset += 1;
        let n = 200_000_000_000_000 + self.next_asset;
        let id = match kind {
            "ad_account" => format!("act_{n}"),
            "page" => n.to_string(),
            other => return Err(EmulatorError::BadAssetKind(other.to_string())),
        };
        let name = if name.trim().is_empty() { format!("{kind} {n}") } else { name.trim().to_string() };
        let rec =
            AssetRec { business_id: business_id.to_string(), kind: kind.to_string(), name, assigned: BTreeMap::new() };
        self.assets.insert(id.clone(), rec);
        Ok(self.asset_view(&id).unwrap_or_else(|| unreachable_asset(&id)))
    }

    pub fn asset_view(&self, id: &str) -> Option<Asset> {
        self.assets.get(id).map(|a| Asset {
            id: id.to_string(),
            kind: a.kind.clone(),
            name: a.name.clone(),
            assigned: a.assigned.iter().map(|(u, t)| (u.to_string(), t.clone())).collect(),
        })
    }

    pub fn assets_of(&self, business_id: &str) -> Vec<Asset> {
        self.assets
            .iter()
            .filter(|(_, a)| a.business_id == business_id)
            .filter_map(|(id, _)| self.asset_view(id))
            .collect()
    }

    /// Sets the user's tasks on the asset (replacing what it held), each one Meta takes on
    /// that kind of asset.
    pub fn assign(&mut self, asset: &str, user: &str, tasks: Vec<String>) -> Result<(), EmulatorError> {
        let uid = user.parse::<u64>().ok().filter(|u| self.users.contains_key(u));
        let (Some(uid), Some(rec)) = (uid, self.assets.get_mut(asset)) else {
            return Err(EmulatorError::NoSuchObject(format!("{asset} / {user}")));
        };
        if let Some(task) = tasks.iter().find(|t| !valid_task(&rec.kind, t)) {
            return Err(EmulatorError::BadTask { kind: rec.kind.clone(), task: task.clone() });
        }
        rec.assigned.insert(uid, tasks);
        Ok(())
    }

    /// Deletes a business user and its asset assignments, as Meta does.
    pub fn remove_user(&mut self, uid: u64) {
        if let Some(user) = self.users.remove(&uid) {
            self.by_email.remove(&(user.business_id, user.email.to_lowercase()));
        }
        for asset in self.assets.values_mut() {
            asset.assigned.remove(&uid);
        }
    }

    pub fn next_scim_id(&mut self) -> String {
        self.next_scim += 1;
        let prefix = self.settings.scim_id_prefix.as_deref().unwrap_or_default();
        format!("{prefix}{:08x}-5c1a-4e00-8000-{:012x}", self.next_scim, self.next_scim)
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

/// An empty view for an id just inserted (never reached; keeps the code free of panics).
fn unreachable_asset(id: &str) -> Asset {
    Asset { id: id.to_string(), kind: String::new(), name: String::new(), assigned: BTreeMap::new() }
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
