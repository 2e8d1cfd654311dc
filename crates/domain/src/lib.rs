//! The rules of unseat, with no I/O: role and asset-role ladders, grants, effective access and
//! the decision (remove, keep, update, grant) that the resolver takes for one
//! (integration, user), with a reason an admin can read.
//!
//! The resolver (`unseat-resolver`) loads the current state from the store and calls
//! [`AccessModel::effective`] and [`decide`]; the console's explain and preview endpoints call
//! the same functions, so what an admin is shown is what the resolver does. Connectors only
//! carry out the decision.

mod decision;
#[cfg(test)]
mod proptests;
pub mod text;

pub use decision::{
    address_changed, decide, lost_grants, same_address, AssetNames, Decision, Held, Lost, Outcome, UserStatus,
};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The one role of a seat-only app (an app without roles): a user has a seat or not.
pub const SEAT: &str = "SEAT";

/// Longest role, asset role or asset id accepted.
pub const MAX_NAME_CHARS: usize = 64;

/// Longest asset id accepted (app ids such as `act_1234567890`).
pub const MAX_ASSET_ID_CHARS: usize = 200;

/// Bounds of an integration's `rate_limit_per_second` setting (app calls per second): a call
/// every 100 s at the least, so a task still finishes within its age limit.
pub const MIN_APP_RATE: f64 = 0.01;
pub const MAX_APP_RATE: f64 = 10_000.0;

/// An app's roles, highest first. A role is a non-empty string the app understands
/// (`ADMIN`, `EMPLOYEE`, ...). A seat-only app has the one role [`SEAT`].
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
    #[error(
        "roles {0:?} and {1:?} differ only in case or surrounding spaces, and an IdP's role names are matched \
         ignoring both"
    )]
    CaseDuplicate(String, String),
    #[error("role {0:?} is not on the integration's role ladder")]
    UnknownRole(String),
    #[error("asset role {0:?} is not on the integration's asset-role ladder")]
    UnknownAssetRole(String),
    #[error("asset {0:?} is not one of the integration's assets")]
    UnknownAsset(String),
    #[error("asset ids must be non-empty and at most 200 characters")]
    BadAssetId,
}

fn check_names(names: &[String]) -> Result<(), LadderError> {
    for (i, r) in names.iter().enumerate() {
        if r.trim().is_empty() || r.chars().count() > MAX_NAME_CHARS {
            return Err(LadderError::BadName);
        }
        if names[..i].contains(r) {
            return Err(LadderError::Duplicate(r.clone()));
        }
    }
    Ok(())
}

impl RoleLadder {
    /// Accepts roles highest first; rejects empty ladders, blank names and duplicates.
    pub fn parse(roles: Vec<String>) -> Result<Self, LadderError> {
        if roles.is_empty() {
            return Err(LadderError::Empty);
        }
        check_names(&roles)?;
        Ok(Self(roles))
    }

    /// The ladder of an integration as stored: an empty list is a seat-only app.
    pub fn for_integration(stored: Vec<String>) -> Result<Self, LadderError> {
        if stored.is_empty() {
            Ok(Self::seat_only())
        } else {
            Self::parse(stored)
        }
    }

    /// The ladder of an app without roles: a seat or nothing.
    pub fn seat_only() -> Self {
        Self(vec![SEAT.to_string()])
    }

    pub fn is_seat_only(&self) -> bool {
        self.0.len() == 1 && self.0[0] == SEAT
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

    /// Checks that no two roles are the same name ignoring case and surrounding spaces
    /// ([`rung_key`]): an IdP's role names are matched that way, so of two such rungs only the
    /// first could ever be named. Asked of a ladder an admin submits; a stored ladder that
    /// predates the check still loads ([`RoleLadder::for_integration`]).
    pub fn check_apart_ignoring_case(&self) -> Result<(), LadderError> {
        let keys: Vec<String> = self.0.iter().map(|r| rung_key(r)).collect();
        for (i, key) in keys.iter().enumerate() {
            if let Some(j) = keys[..i].iter().position(|k| k == key) {
                return Err(LadderError::CaseDuplicate(self.0[j].clone(), self.0[i].clone()));
            }
        }
        Ok(())
    }
}

/// What an IdP's role name is matched to a rung by: the name without surrounding spaces,
/// folded ([`text::fold`]).
pub fn rung_key(name: &str) -> String {
    text::fold(name.trim())
}

/// The roles a user can hold on one asset inside an app (MANAGE > ADVERTISE > ANALYZE for a
/// Meta-style hub), highest first. Empty for an app without assets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetLadder(Vec<String>);

impl AssetLadder {
    /// Accepts asset roles highest first (possibly none); rejects blank names and duplicates.
    pub fn parse(roles: Vec<String>) -> Result<Self, LadderError> {
        check_names(&roles)?;
        Ok(Self(roles))
    }

    pub fn roles(&self) -> &[String] {
        &self.0
    }

    pub fn rank(&self, role: &str) -> Option<usize> {
        self.0.iter().position(|r| r == role)
    }
}

/// Asset id → asset role: the assets a grant gives, or the assets a user holds.
pub type AssetMap = BTreeMap<String, String>;

/// Everything about an integration that effective access depends on: its role ladder, its
/// asset-role ladder and the assets it knows. Grants are judged against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessModel {
    pub roles: RoleLadder,
    pub asset_roles: AssetLadder,
    pub assets: BTreeSet<String>,
}

/// Where a grant comes from: in the workspace flow a team (an IdP group) the integration is
/// shared with, or the user individually; in an integration's own directory (IdLCM) the IdP's
/// assignment of the user to the app, or a group the IdP pushed there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrantSource {
    Team { name: String },
    Individual,
    PushedGroup { name: String },
    Assignment,
}

impl GrantSource {
    /// The same source as an integration's own directory names it: its direct grant is the
    /// IdP's assignment, its teams are pushed groups (grants recorded before the directory's
    /// sources had names of their own read as the workspace's).
    pub fn in_integration_directory(self) -> Self {
        match self {
            GrantSource::Individual => GrantSource::Assignment,
            GrantSource::Team { name } => GrantSource::PushedGroup { name },
            other => other,
        }
    }
}

impl fmt::Display for GrantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantSource::Team { name } => write!(f, "team {name}"),
            GrantSource::Individual => write!(f, "an individual grant"),
            GrantSource::PushedGroup { name } => write!(f, "pushed group {name}"),
            GrantSource::Assignment => write!(f, "the IdP's assignment"),
        }
    }
}

/// One grant that reaches a user: a role and the assets it gives, with where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub source: GrantSource,
    pub role: String,
    #[serde(default)]
    pub assets: AssetMap,
}

/// What the grants give a user on one integration, and which grants give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub role: String,
    /// The grants that give exactly `role` (the ones that keep it).
    pub because: Vec<GrantSource>,
    /// Per asset, the highest asset role the grants give.
    pub assets: AssetMap,
    /// Per asset, the grants that give exactly that asset role.
    pub asset_because: BTreeMap<String, Vec<GrantSource>>,
}

impl Access {
    /// The state the app should hold for this access.
    pub fn held(&self) -> Held {
        Held { role: self.role.clone(), assets: self.assets.clone() }
    }
}

impl AccessModel {
    /// A model without assets.
    pub fn roles_only(roles: RoleLadder) -> Self {
        Self { roles, asset_roles: AssetLadder::default(), assets: BTreeSet::new() }
    }

    /// Checks a grant an admin asks for: the role on the ladder, every asset known and every
    /// asset role on the asset ladder. Grants that pass give exactly what they say.
    pub fn check_grant(&self, role: &str, assets: &AssetMap) -> Result<(), LadderError> {
        self.roles.check(role)?;
        for (asset, asset_role) in assets {
            if asset.trim().is_empty() || asset.chars().count() > MAX_ASSET_ID_CHARS {
                return Err(LadderError::BadAssetId);
            }
            if !self.assets.contains(asset) {
                return Err(LadderError::UnknownAsset(asset.clone()));
            }
            if self.asset_roles.rank(asset_role).is_none() {
                return Err(LadderError::UnknownAssetRole(asset_role.clone()));
            }
        }
        Ok(())
    }

    /// Whether a grant gives anything: its role must be on the ladder. A grant naming a role
    /// the ladder lost (the integration was reconfigured) gives nothing, assets included.
    fn valid_role(&self, grant: &Grant) -> Option<usize> {
        self.roles.rank(&grant.role)
    }

    /// Effective access: none for an inactive or deleted user; otherwise the highest role on
    /// the ladder over every grant that reaches the user and, per asset, the highest asset role
    /// over the same grants. Grants whose role is off the ladder give nothing; an asset entry
    /// naming an unknown asset or an asset role off the asset ladder gives nothing (when in
    /// doubt, no one keeps access the current grants do not give).
    pub fn effective(&self, user_active: bool, grants: &[Grant]) -> Option<Access> {
        if !user_active {
            return None;
        }
        let valid: Vec<&Grant> = grants.iter().filter(|g| self.valid_role(g).is_some()).collect();
        let best = valid.iter().filter_map(|g| self.valid_role(g)).min()?;
        let role = self.roles.roles()[best].clone();
        let because = sorted_sources(valid.iter().filter(|g| g.role == role).map(|g| g.source.clone()));
        let mut ranks: BTreeMap<&str, usize> = BTreeMap::new();
        for g in &valid {
            for (asset, asset_role) in &g.assets {
                if !self.assets.contains(asset) {
                    continue;
                }
                if let Some(rank) = self.asset_roles.rank(asset_role) {
                    let e = ranks.entry(asset.as_str()).or_insert(rank);
                    *e = (*e).min(rank);
                }
            }
        }
        let assets: AssetMap =
            ranks.iter().map(|(a, r)| (a.to_string(), self.asset_roles.roles()[*r].clone())).collect();
        let asset_because = assets
            .iter()
            .map(|(asset, asset_role)| {
                let sources =
                    valid.iter().filter(|g| g.assets.get(asset) == Some(asset_role)).map(|g| g.source.clone());
                (asset.clone(), sorted_sources(sources))
            })
            .collect();
        Some(Access { role, because, assets, asset_because })
    }
}

/// Sources in a stable order (teams by name, then the individual grant), without repeats, so
/// reasons do not depend on the order rows came from the database.
fn sorted_sources(sources: impl Iterator<Item = GrantSource>) -> Vec<GrantSource> {
    let set: BTreeSet<GrantSource> = sources.collect();
    set.into_iter().collect()
}

/// Effective access on an integration without assets (kept for callers that know only roles).
pub fn effective_access(ladder: &RoleLadder, user_active: bool, grants: &[Grant]) -> Option<Access> {
    AccessModel::roles_only(ladder.clone()).effective(user_active, grants)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> RoleLadder {
        RoleLadder::parse(vec!["ADMIN".into(), "EMPLOYEE".into()]).unwrap()
    }

    fn hub() -> AccessModel {
        AccessModel {
            roles: ladder(),
            asset_roles: AssetLadder::parse(vec!["MANAGE".into(), "ADVERTISE".into(), "ANALYZE".into()]).unwrap(),
            assets: ["act_1".to_string(), "page_9".to_string()].into_iter().collect(),
        }
    }

    fn team(name: &str, role: &str) -> Grant {
        Grant { source: GrantSource::Team { name: name.into() }, role: role.into(), assets: AssetMap::new() }
    }

    fn with(mut g: Grant, asset: &str, role: &str) -> Grant {
        g.assets.insert(asset.into(), role.into());
        g
    }

    #[test]
    fn ladder_rejects_bad_input() {
        assert_eq!(RoleLadder::parse(vec![]), Err(LadderError::Empty));
        assert_eq!(RoleLadder::parse(vec![" ".into()]), Err(LadderError::BadName));
        assert_eq!(RoleLadder::parse(vec!["A".into(), "A".into()]), Err(LadderError::Duplicate("A".into())));
        let told_apart = |roles: &[&str]| {
            RoleLadder::parse(roles.iter().map(|r| r.to_string()).collect()).unwrap().check_apart_ignoring_case()
        };
        assert_eq!(
            told_apart(&["Admin", "Editor", "ADMIN"]),
            Err(LadderError::CaseDuplicate("Admin".into(), "ADMIN".into()))
        );
        assert_eq!(
            told_apart(&["ΟΔΟΣ", "Viewer", " οδοσ "]),
            Err(LadderError::CaseDuplicate("ΟΔΟΣ".into(), " οδοσ ".into()))
        );
        assert_eq!(told_apart(&["Admin", "Administrator", "straße", "STRASSE"]), Ok(()));
        assert!(ladder().check("OWNER").is_err());
        assert!(RoleLadder::for_integration(vec![]).unwrap().is_seat_only());
        assert_eq!(AssetLadder::parse(vec!["X".into(), "X".into()]), Err(LadderError::Duplicate("X".into())));
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
    fn assets_take_the_highest_asset_role_over_valid_grants() {
        let grants = [
            with(with(team("Staff", "EMPLOYEE"), "act_1", "ANALYZE"), "page_9", "ANALYZE"),
            with(team("Ads", "EMPLOYEE"), "act_1", "MANAGE"),
            // Off-ladder role: the whole grant gives nothing.
            with(team("Old", "OWNER"), "page_9", "MANAGE"),
            // Unknown asset and unknown asset role give nothing.
            with(with(team("Odd", "EMPLOYEE"), "act_404", "MANAGE"), "page_9", "GOD"),
        ];
        let a = hub().effective(true, &grants).unwrap();
        assert_eq!(a.role, "EMPLOYEE");
        assert_eq!(
            a.assets,
            [("act_1".to_string(), "MANAGE".to_string()), ("page_9".to_string(), "ANALYZE".to_string())]
                .into_iter()
                .collect()
        );
        assert_eq!(a.asset_because["act_1"], vec![GrantSource::Team { name: "Ads".into() }]);
        assert_eq!(a.because.len(), 3);
    }

    #[test]
    fn grants_are_checked_against_the_model() {
        let m = hub();
        let ok: AssetMap = [("act_1".to_string(), "ADVERTISE".to_string())].into_iter().collect();
        assert_eq!(m.check_grant("ADMIN", &ok), Ok(()));
        assert!(matches!(m.check_grant("OWNER", &ok), Err(LadderError::UnknownRole(_))));
        let bad_asset: AssetMap = [("act_2".to_string(), "MANAGE".to_string())].into_iter().collect();
        assert!(matches!(m.check_grant("ADMIN", &bad_asset), Err(LadderError::UnknownAsset(_))));
        let bad_role: AssetMap = [("act_1".to_string(), "GOD".to_string())].into_iter().collect();
        assert!(matches!(m.check_grant("ADMIN", &bad_role), Err(LadderError::UnknownAssetRole(_))));
    }

    #[test]
    fn seat_only_apps_give_a_seat_or_nothing() {
        let m = AccessModel::roles_only(RoleLadder::seat_only());
        let a = m.effective(true, &[team("Staff", SEAT)]).unwrap();
        assert_eq!(a.role, SEAT);
        assert_eq!(m.effective(true, &[team("Staff", "ADMIN")]), None);
    }
}
