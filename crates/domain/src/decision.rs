//! The decision for one (integration, user): compare what the app is meant to hold with what the
//! grants give now, and say why in words that name the grants ("kept: team Marketing grants
//! ADMIN"; "ADMIN → EMPLOYEE: left team Admins; team Staff grants EMPLOYEE").

use crate::{Access, AssetMap, Grant, GrantSource};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What the app holds (or is meant to hold) for a user: a role and asset roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub role: String,
    #[serde(default)]
    pub assets: AssetMap,
}

/// What to do for one (integration, user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// No grant reaches the user any more: take them out of the app.
    Remove,
    /// The grants give exactly what the app holds: nothing to change.
    Keep,
    /// The remaining grants give a different role or different assets.
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
    /// What the app was meant to hold before; None when nothing.
    pub from: Option<Held>,
    /// What the app must hold now; None means remove.
    pub to: Option<Held>,
    pub reason: String,
}

impl Decision {
    pub fn from_role(&self) -> Option<&str> {
        self.from.as_ref().map(|h| h.role.as_str())
    }

    pub fn to_role(&self) -> Option<&str> {
        self.to.as_ref().map(|h| h.role.as_str())
    }
}

/// Why a user was looked at again; used in reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Inactive,
    Deleted,
}

/// A grant that gave the user something before and gives less (or nothing) now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The user is no longer in a team whose grant reached them.
    LeftTeam(String),
    /// The user is no longer in a group the IdP pushed to an integration's own directory (or
    /// the group was renamed).
    LeftGroup(String),
    /// The grant itself is gone (revoked, or the team is no longer shared).
    Revoked(GrantSource),
    /// The grant still reaches the user but gives something else now: another role (Some), or
    /// the same role with other assets (None).
    Changed { source: GrantSource, role: Option<String> },
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::LeftTeam(name) => write!(f, "left team {name}"),
            Lost::LeftGroup(name) => write!(f, "left pushed group {name}"),
            Lost::Revoked(GrantSource::Assignment) => write!(f, "the IdP's assignment withdrawn"),
            Lost::Changed { source: GrantSource::Assignment, role: Some(role) } => {
                write!(f, "the IdP's assignment now gives {role}")
            }
            Lost::Revoked(GrantSource::Individual) => write!(f, "individual grant revoked"),
            Lost::Revoked(source) => write!(f, "{source} no longer shares the integration"),
            Lost::Changed { source: GrantSource::Individual, role: Some(role) } => {
                write!(f, "individual grant now gives {role}")
            }
            Lost::Changed { source: GrantSource::Individual, role: None } => {
                write!(f, "individual grant's assets changed")
            }
            Lost::Changed { source, role: Some(role) } => write!(f, "{source} now grants {role}"),
            Lost::Changed { source, role: None } => write!(f, "{source}'s assets changed"),
        }
    }
}

/// The grants that reached the user before (`before`, as recorded with the last decision) and
/// do not give the same now. `teams_now` are the names of the teams the user is in now, to tell
/// "left team X" from "team X's grant was revoked".
pub fn lost_grants(before: &[Grant], now: &[Grant], teams_now: &BTreeSet<String>) -> Vec<Lost> {
    let mut seen = BTreeSet::new();
    let mut lost = Vec::new();
    for b in before {
        if !seen.insert(&b.source) {
            continue;
        }
        match now.iter().find(|n| n.source == b.source) {
            None => lost.push(match &b.source {
                GrantSource::Team { name } if !teams_now.contains(name) => Lost::LeftTeam(name.clone()),
                GrantSource::PushedGroup { name } if !teams_now.contains(name) => Lost::LeftGroup(name.clone()),
                source => Lost::Revoked(source.clone()),
            }),
            Some(n) if n.role != b.role => {
                lost.push(Lost::Changed { source: b.source.clone(), role: Some(n.role.clone()) })
            }
            Some(n) if n.assets != b.assets => lost.push(Lost::Changed { source: b.source.clone(), role: None }),
            Some(_) => {}
        }
    }
    lost
}

/// How many assets a reason names before it summarises the rest.
const REASON_ASSETS: usize = 5;

/// "team Staff grants EMPLOYEE"; "team Admins and team Staff grant ANALYZE on act_1".
fn granted_by(sources: &[GrantSource], what: &str) -> String {
    let names: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    match names.as_slice() {
        [] => what.to_string(),
        [one] => format!("{one} grants {what}"),
        [rest @ .., last] => format!("{} and {last} grant {what}", rest.join(", ")),
    }
}

/// Asset id → the name an admin gave it, for reasons.
pub type AssetNames = BTreeMap<String, String>;

/// "Brand ads (act_1)", or the id alone for an asset with no name.
fn asset_label(names: &AssetNames, asset: &str) -> String {
    match names.get(asset).map(|n| n.trim()).filter(|n| !n.is_empty() && *n != asset) {
        Some(name) => format!("{name} ({asset})"),
        None => asset.to_string(),
    }
}

/// "team Staff grants EMPLOYEE, team Ads grants MANAGE on Brand ads (act_1)".
fn because(a: &Access, asset_names: &AssetNames) -> String {
    because_besides(a, asset_names, &[])
}

/// [`because`], without the grants of `said` among those that give the role: what was lost
/// already says they give it now ("individual grant now gives EMPLOYEE").
fn because_besides(a: &Access, asset_names: &AssetNames, said: &[&GrantSource]) -> String {
    let role_sources: Vec<GrantSource> = a.because.iter().filter(|s| !said.contains(s)).cloned().collect();
    let mut parts = Vec::new();
    if !role_sources.is_empty() {
        parts.push(granted_by(&role_sources, &role_words(&a.role)));
    }
    for (i, (asset, asset_role)) in a.assets.iter().enumerate() {
        if i == REASON_ASSETS {
            parts.push(format!("and {} more assets", a.assets.len() - REASON_ASSETS));
            break;
        }
        let sources = a.asset_because.get(asset).map(Vec::as_slice).unwrap_or_default();
        parts.push(granted_by(sources, &format!("{asset_role} on {}", asset_label(asset_names, asset))));
    }
    parts.join(", ")
}

fn role_words(role: &str) -> String {
    if role == crate::SEAT {
        "a seat".to_string()
    } else {
        role.to_string()
    }
}

/// "ADMIN → EMPLOYEE, act_1 MANAGE → ANALYZE, page_9 removed, act_2 added as ANALYZE" (each
/// asset by its name too where it has one).
fn changes(from: &Held, to: &Held, names: &AssetNames) -> String {
    let mut parts = Vec::new();
    if from.role != to.role {
        parts.push(format!("{} → {}", from.role, to.role));
    }
    let assets: BTreeSet<&String> = from.assets.keys().chain(to.assets.keys()).collect();
    let mut listed = 0;
    let mut more = 0;
    for asset in assets {
        let part = match (from.assets.get(asset), to.assets.get(asset)) {
            (Some(f), Some(t)) if f != t => format!("{} {f} → {t}", asset_label(names, asset)),
            (Some(_), None) => format!("{} removed", asset_label(names, asset)),
            (None, Some(t)) => format!("{} added as {t}", asset_label(names, asset)),
            _ => continue,
        };
        if listed < REASON_ASSETS {
            parts.push(part);
            listed += 1;
        } else {
            more += 1;
        }
    }
    if more > 0 {
        parts.push(format!("{more} more asset changes"));
    }
    parts.join(", ")
}

/// Compares the access the grants give now with what the app is meant to hold (`held`, the
/// last desired state). `lost` (from [`lost_grants`]) names what was taken away, for the
/// reason, and `names` the assets' names. Returns None when there is nothing to say: no
/// access before and none now.
pub fn decide(
    held: Option<&Held>,
    now: Option<&Access>,
    status: UserStatus,
    lost: &[Lost],
    names: &AssetNames,
) -> Option<Decision> {
    let lost_words = lost.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ");
    match (held, now) {
        (None, None) => None,
        (Some(h), None) => Some(Decision {
            outcome: Outcome::Remove,
            from: Some(h.clone()),
            to: None,
            reason: match status {
                UserStatus::Inactive => "removed: user deactivated in the IdP".to_string(),
                UserStatus::Deleted => "removed: user deleted in the IdP".to_string(),
                UserStatus::Active if lost.is_empty() => {
                    "removed: no team or individual grant reaches the user".to_string()
                }
                UserStatus::Active => format!("removed: {lost_words}; no team or individual grant reaches the user"),
            },
        }),
        (Some(h), Some(a)) if h.role == a.role && h.assets == a.assets => Some(Decision {
            outcome: Outcome::Keep,
            from: Some(h.clone()),
            to: Some(a.held()),
            reason: format!("kept: {}", because(a, names)),
        }),
        (Some(h), Some(a)) => {
            let to = a.held();
            // A grant that now gives the role is named once, as changed.
            let said: Vec<&GrantSource> = lost
                .iter()
                .filter_map(|l| match l {
                    Lost::Changed { source, role: Some(role) } if *role == a.role => Some(source),
                    _ => None,
                })
                .collect();
            let rest = because_besides(a, names, &said);
            let why = match (lost_words.is_empty(), rest.is_empty()) {
                (true, _) => rest,
                (false, true) => lost_words,
                (false, false) => format!("{lost_words}; {rest}"),
            };
            Some(Decision {
                outcome: Outcome::Update,
                reason: format!("{}: {why}", changes(h, &to, names)),
                from: Some(h.clone()),
                to: Some(to),
            })
        }
        (None, Some(a)) => Some(Decision {
            outcome: Outcome::Grant,
            from: None,
            to: Some(a.held()),
            reason: format!("granted: {}", because(a, names)),
        }),
    }
}

/// Whether two app addresses are one: equal ignoring case and surrounding spaces.
pub fn same_address(a: &str, b: &str) -> bool {
    crate::text::fold(a.trim()) == crate::text::fold(b.trim())
}

/// A user whose access is unchanged but whose address is not (`from` → `to`): the app must be
/// converged at the new address (an invitation to the old one withdrawn, one sent to the new
/// one), so what [`decide`] kept becomes an update that says why. Other decisions stay as
/// they are.
pub fn address_changed(decision: Decision, now: Option<&Access>, names: &AssetNames, from: &str, to: &str) -> Decision {
    match now {
        Some(a) if decision.outcome == Outcome::Keep => Decision {
            outcome: Outcome::Update,
            reason: format!("address changed from {from} to {to}: {}", because(a, names)),
            ..decision
        },
        _ => decision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{effective_access, AccessModel, AssetLadder, RoleLadder};

    fn ladder() -> RoleLadder {
        RoleLadder::parse(vec!["ADMIN".into(), "EMPLOYEE".into()]).unwrap()
    }

    fn team(name: &str, role: &str) -> Grant {
        Grant { source: GrantSource::Team { name: name.into() }, role: role.into(), assets: AssetMap::new() }
    }

    fn held(role: &str) -> Held {
        Held { role: role.into(), assets: AssetMap::new() }
    }

    #[test]
    fn an_address_change_of_kept_access_is_an_update_that_says_so() {
        let a = effective_access(&ladder(), true, &[team("Staff", "EMPLOYEE")]).unwrap();
        let kept = decide(Some(&held("EMPLOYEE")), Some(&a), UserStatus::Active, &[], &AssetNames::new()).unwrap();
        assert_eq!(kept.outcome, Outcome::Keep);
        let moved = address_changed(kept, Some(&a), &AssetNames::new(), "ann@old.example", "ann@new.example");
        assert_eq!(moved.outcome, Outcome::Update);
        assert_eq!(moved.reason, "address changed from ann@old.example to ann@new.example: team Staff grants EMPLOYEE");
        assert_eq!((moved.from_role(), moved.to_role()), (Some("EMPLOYEE"), Some("EMPLOYEE")));
        assert!(
            same_address(" Ann@Old.example", "ann@old.example") && !same_address("ann@old.example", "ann@new.example")
        );
    }

    #[test]
    fn a_changed_grant_is_named_once() {
        let mine = |role: &str| Grant { source: GrantSource::Individual, role: role.into(), assets: AssetMap::new() };
        let no_teams = BTreeSet::new();
        let now = effective_access(&ladder(), true, &[mine("EMPLOYEE")]).unwrap();
        let lost = lost_grants(&[mine("ADMIN")], &[mine("EMPLOYEE")], &no_teams);
        let d = decide(Some(&held("ADMIN")), Some(&now), UserStatus::Active, &lost, &AssetNames::new()).unwrap();
        assert_eq!(d.reason, "ADMIN → EMPLOYEE: individual grant now gives EMPLOYEE");
        // Another grant giving the same role is still named.
        let now = effective_access(&ladder(), true, &[mine("EMPLOYEE"), team("Staff", "EMPLOYEE")]).unwrap();
        let lost = lost_grants(
            &[mine("ADMIN"), team("Staff", "EMPLOYEE")],
            &[mine("EMPLOYEE"), team("Staff", "EMPLOYEE")],
            &no_teams,
        );
        let d = decide(Some(&held("ADMIN")), Some(&now), UserStatus::Active, &lost, &AssetNames::new()).unwrap();
        assert_eq!(d.reason, "ADMIN → EMPLOYEE: individual grant now gives EMPLOYEE; team Staff grants EMPLOYEE");
    }

    #[test]
    fn decisions_and_their_reasons() {
        let keep = effective_access(&ladder(), true, &[team("Marketing", "ADMIN")]).unwrap();
        let d = decide(Some(&held("ADMIN")), Some(&keep), UserStatus::Active, &[], &AssetNames::new()).unwrap();
        assert_eq!(d.outcome, Outcome::Keep);
        assert_eq!(d.reason, "kept: team Marketing grants ADMIN");

        let lower = effective_access(&ladder(), true, &[team("Staff", "EMPLOYEE")]).unwrap();
        let lost = lost_grants(
            &[team("Admins", "ADMIN"), team("Staff", "EMPLOYEE")],
            &[team("Staff", "EMPLOYEE")],
            &["Staff".to_string()].into_iter().collect(),
        );
        assert_eq!(lost, vec![Lost::LeftTeam("Admins".into())]);
        let d = decide(Some(&held("ADMIN")), Some(&lower), UserStatus::Active, &lost, &AssetNames::new()).unwrap();
        assert_eq!(d.outcome, Outcome::Update);
        assert_eq!(d.reason, "ADMIN → EMPLOYEE: left team Admins; team Staff grants EMPLOYEE");

        let d = decide(Some(&held("ADMIN")), None, UserStatus::Inactive, &[], &AssetNames::new()).unwrap();
        assert_eq!(d.outcome, Outcome::Remove);
        assert!(d.reason.contains("deactivated"));

        assert_eq!(decide(None, None, UserStatus::Deleted, &[], &AssetNames::new()), None);
        let d = decide(None, Some(&lower), UserStatus::Active, &[], &AssetNames::new()).unwrap();
        assert_eq!(d.outcome, Outcome::Grant);
        assert_eq!(d.to_role(), Some("EMPLOYEE"));
    }

    #[test]
    fn a_revoked_grant_is_named_apart_from_leaving_a_team() {
        let teams: BTreeSet<String> = ["Admins".to_string()].into_iter().collect();
        let lost = lost_grants(&[team("Admins", "ADMIN")], &[], &teams);
        let d = decide(Some(&held("ADMIN")), None, UserStatus::Active, &lost, &AssetNames::new()).unwrap();
        assert_eq!(
            d.reason,
            "removed: team Admins no longer shares the integration; no team or individual grant reaches the user"
        );
        let lost = lost_grants(&[team("Admins", "ADMIN")], &[team("Admins", "EMPLOYEE")], &teams);
        assert_eq!(lost[0].to_string(), "team Admins now grants EMPLOYEE");
    }

    #[test]
    fn losing_one_asset_is_an_update_that_names_it() {
        let model = AccessModel {
            roles: ladder(),
            asset_roles: AssetLadder::parse(vec!["MANAGE".into(), "ANALYZE".into()]).unwrap(),
            assets: ["act_1".to_string(), "page_9".to_string()].into_iter().collect(),
        };
        let mut g = team("Staff", "EMPLOYEE");
        g.assets.insert("act_1".into(), "ANALYZE".into());
        let now = model.effective(true, &[g]).unwrap();
        let before = Held {
            role: "EMPLOYEE".into(),
            assets: [("act_1".to_string(), "MANAGE".to_string()), ("page_9".to_string(), "ANALYZE".to_string())]
                .into_iter()
                .collect(),
        };
        let d = decide(Some(&before), Some(&now), UserStatus::Active, &[], &AssetNames::new()).unwrap();
        assert_eq!(d.outcome, Outcome::Update);
        assert_eq!(
            d.reason,
            "act_1 MANAGE → ANALYZE, page_9 removed: team Staff grants EMPLOYEE, team Staff grants ANALYZE on act_1"
        );
        // With the names admins gave the assets, the reason says them (an unnamed one keeps its id).
        let names: AssetNames =
            [("act_1".to_string(), "Brand ads".to_string()), ("page_9".to_string(), " ".to_string())]
                .into_iter()
                .collect();
        let d = decide(Some(&before), Some(&now), UserStatus::Active, &[], &names).unwrap();
        assert_eq!(
            d.reason,
            "Brand ads (act_1) MANAGE → ANALYZE, page_9 removed: team Staff grants EMPLOYEE, \
             team Staff grants ANALYZE on Brand ads (act_1)"
        );
    }
}
