//! The rules of unseat, with no I/O: role ladders, grants, effective access and the decision
//! (remove, keep, update, grant) that the resolver takes for one (integration, user).
//!
//! The resolver (`unseat-resolver`) loads the current state from the store and calls
//! [`effective_access`] and [`decide`]; connectors only carry out the decision.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An app's roles, highest first. A role is a non-empty string the app understands
/// (`ADMIN`, `EMPLOYEE`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleLadder(Vec<String>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LadderError {
    #[error("a role ladder needs at least one role")]
    Empty,
    #[error("role names must be non-empty and at most 64 characters")]
    BadName,
    #[error("role {0:?} appears twice in the ladder")]
    Duplicate(String),
    #[error("role {0:?} is not on the integration's role ladder")]
    UnknownRole(String),
}

impl RoleLadder {
    /// Accepts roles highest first; rejects empty ladders, blank names and duplicates.
    pub fn parse(roles: Vec<String>) -> Result<Self, LadderError> {
        if roles.is_empty() {
            return Err(LadderError::Empty);
        }
        for (i, r) in roles.iter().enumerate() {
            if r.trim().is_empty() || r.len() > 64 {
                return Err(LadderError::BadName);
            }
            if roles[..i].contains(r) {
                return Err(LadderError::Duplicate(r.clone()));
            }
        }
        Ok(Self(roles))
    }

    pub fn roles(&self) -> &[String] {
        &self.0
    }

    /// Rank of a role: 0 is the highest. None when the role is not on the ladder.
    pub fn rank(&self, role: &str) -> Option<usize> {
        self.0.iter().position(|r| r == role)
    }

    /// Checks that `role` is on the ladder.
    pub fn check(&self, role: &str) -> Result<(), LadderError> {
        self.rank(role).map(|_| ()).ok_or_else(|| LadderError::UnknownRole(role.to_string()))
    }
}

/// Where a grant comes from: a team (an IdP group) or the user individually.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrantSource {
    Team { name: String },
    Individual,
}

impl fmt::Display for GrantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantSource::Team { name } => write!(f, "team {name}"),
            GrantSource::Individual => write!(f, "an individual grant"),
        }
    }
}

/// One grant that reaches a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub source: GrantSource,
    pub role: String,
}

/// What the grants give a user on one integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub role: String,
    /// The grants that give exactly `role` (the ones that keep it).
    pub because: Vec<GrantSource>,
}

/// Effective access: none for an inactive or deleted user; otherwise the highest role on the
/// ladder over every grant that reaches the user. Grants whose role is not on the ladder give
/// nothing (when in doubt, no one keeps access the current grants do not give).
pub fn effective_access(ladder: &RoleLadder, user_active: bool, grants: &[Grant]) -> Option<Access> {
    if !user_active {
        return None;
    }
    let best = grants.iter().filter_map(|g| ladder.rank(&g.role)).min()?;
    let role = ladder.roles()[best].clone();
    let because = grants.iter().filter(|g| g.role == role).map(|g| g.source.clone()).collect();
    Some(Access { role, because })
}

/// What to do for one (integration, user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// No grant reaches the user any more: take them out of the app.
    Remove,
    /// Another grant gives the same role: nothing to change.
    Keep,
    /// The remaining grants give a different role.
    Update,
    /// The grants give access the app does not hold yet (or held before a pending removal).
    Grant,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Remove => "remove",
            Outcome::Keep => "keep",
            Outcome::Update => "update",
            Outcome::Grant => "grant",
        }
    }
}

/// The resolver's decision with its human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub from_role: Option<String>,
    pub to_role: Option<String>,
    pub reason: String,
}

/// Why a user was looked at again; used in reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Inactive,
    Deleted,
}

/// Compares the access the grants give now with the role the app is meant to hold
/// (`held`, the last desired role). Returns None when there is nothing to say: no access
/// before and none now.
pub fn decide(held: Option<&str>, now: Option<&Access>, status: UserStatus) -> Option<Decision> {
    let because = |a: &Access| {
        let names: Vec<String> = a.because.iter().map(|s| s.to_string()).collect();
        format!("{} grants {}", names.join(", "), a.role)
    };
    match (held, now) {
        (None, None) => None,
        (Some(h), None) => Some(Decision {
            outcome: Outcome::Remove,
            from_role: Some(h.to_string()),
            to_role: None,
            reason: match status {
                UserStatus::Inactive => "removed: user deactivated in the IdP".to_string(),
                UserStatus::Deleted => "removed: user deleted in the IdP".to_string(),
                UserStatus::Active => "removed: no team or individual grant reaches the user".to_string(),
            },
        }),
        (Some(h), Some(a)) if h == a.role => Some(Decision {
            outcome: Outcome::Keep,
            from_role: Some(h.to_string()),
            to_role: Some(a.role.clone()),
            reason: format!("kept: {}", because(a)),
        }),
        (Some(h), Some(a)) => Some(Decision {
            outcome: Outcome::Update,
            from_role: Some(h.to_string()),
            to_role: Some(a.role.clone()),
            reason: format!("{h} → {}: {}", a.role, because(a)),
        }),
        (None, Some(a)) => Some(Decision {
            outcome: Outcome::Grant,
            from_role: None,
            to_role: Some(a.role.clone()),
            reason: format!("granted: {}", because(a)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> RoleLadder {
        RoleLadder::parse(vec!["ADMIN".into(), "EMPLOYEE".into()]).unwrap()
    }

    fn team(name: &str, role: &str) -> Grant {
        Grant { source: GrantSource::Team { name: name.into() }, role: role.into() }
    }

    #[test]
    fn ladder_rejects_bad_input() {
        assert_eq!(RoleLadder::parse(vec![]), Err(LadderError::Empty));
        assert_eq!(RoleLadder::parse(vec![" ".into()]), Err(LadderError::BadName));
        assert_eq!(RoleLadder::parse(vec!["A".into(), "A".into()]), Err(LadderError::Duplicate("A".into())));
        assert!(ladder().check("OWNER").is_err());
    }

    #[test]
    fn highest_role_wins_and_names_its_grants() {
        let a = effective_access(
            &ladder(),
            true,
            &[team("Staff", "EMPLOYEE"), team("Admins", "ADMIN"), team("Ops", "ADMIN")],
        )
        .unwrap();
        assert_eq!(a.role, "ADMIN");
        assert_eq!(a.because.len(), 2);
    }

    #[test]
    fn inactive_users_and_unknown_roles_get_nothing() {
        assert_eq!(effective_access(&ladder(), false, &[team("Admins", "ADMIN")]), None);
        assert_eq!(effective_access(&ladder(), true, &[team("X", "OWNER")]), None);
        assert_eq!(effective_access(&ladder(), true, &[]), None);
    }

    #[test]
    fn decisions() {
        let keep = effective_access(&ladder(), true, &[team("Marketing", "ADMIN")]).unwrap();
        let d = decide(Some("ADMIN"), Some(&keep), UserStatus::Active).unwrap();
        assert_eq!(d.outcome, Outcome::Keep);
        assert_eq!(d.reason, "kept: team Marketing grants ADMIN");

        let lower = effective_access(&ladder(), true, &[team("Staff", "EMPLOYEE")]).unwrap();
        let d = decide(Some("ADMIN"), Some(&lower), UserStatus::Active).unwrap();
        assert_eq!(d.outcome, Outcome::Update);
        assert_eq!(d.reason, "ADMIN → EMPLOYEE: team Staff grants EMPLOYEE");

        let d = decide(Some("ADMIN"), None, UserStatus::Inactive).unwrap();
        assert_eq!(d.outcome, Outcome::Remove);
        assert!(d.reason.contains("deactivated"));

        assert_eq!(decide(None, None, UserStatus::Deleted), None);
        let d = decide(None, Some(&lower), UserStatus::Active).unwrap();
        assert_eq!(d.outcome, Outcome::Grant);
    }
}
