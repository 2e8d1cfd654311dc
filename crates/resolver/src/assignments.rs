//! The integration directory (IdLCM) flow: a change that came through an integration's own
//! SCIM endpoint (`DirectoryChanged.scope` = the integration's id). The users of that
//! directory are the integration's grants:
//!
//! - an active user is assigned directly, with the highest role on the integration's ladder
//!   named by a `roles` or `entitlements` value (primary first, names compared ignoring case),
//!   else the integration's `default_role`, else the lowest role of the ladder;
//! - each pushed group the user is in is a grant too: of the role its displayName names when
//!   that is on the ladder, else of the user's direct role;
//! - a deactivated (Okta `active:false`, Entra `"False"`) or deleted user has nothing.
//!
//! [`plan`] turns that into the same [`Plan`] the workspace flow builds, so the decisions,
//! desired states, tasks and connector tasks are written by the same code (the resolver's
//! batch writes), and the job carries the integration's scope for its Activity.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use unseat_domain::{
    decide, lost_grants, rung_key, AssetMap, Decision, Grant, GrantSource, Held, RoleLadder, UserStatus,
};
use unseat_store::access;
use unseat_store::directory::{self, Assignment, Dir};
use unseat_store::{StoreError, Transaction};
use uuid::Uuid;

use crate::{access_model, Plan, Planned};

/// Decides for `users` of the directory `scope` names. A scope that is not an integration id
/// of the tenant (a deleted integration) decides nothing.
pub async fn plan(tx: &Transaction<'_>, tenant: Uuid, scope: &str, users: &[Uuid]) -> Result<Plan, StoreError> {
    let Ok(integration_id) = Uuid::parse_str(scope) else {
        tracing::error!(%scope, "directory change with an unknown scope; ignoring it");
        return Ok(Plan::default());
    };
    if users.is_empty() {
        return Ok(Plan::default());
    }
    let Some(integration) = access::integrations(tx, tenant, &[integration_id]).await?.into_iter().next() else {
        tracing::info!(integration = %integration_id, "change for an integration deleted since; nothing to decide");
        return Ok(Plan::default());
    };
    let model = match access_model(&integration) {
        Ok(m) => m,
        Err(error) => {
            tracing::error!(integration = %integration_id, %error, "integration has an invalid ladder; skipping it");
            return Ok(Plan::default());
        }
    };
    let default = directory::default_role(tx, tenant, integration_id).await?;
    let assigned = directory::assignments(tx, Dir::integration(tenant, integration_id), users).await?;
    let mut rows: HashMap<Uuid, access::AccessRow> = access::access_rows_many(tx, tenant, users)
        .await?
        .into_iter()
        .filter(|r| r.integration_id == integration_id)
        .map(|r| (r.user_id, r))
        .collect();
    let mut items = Vec::new();
    for &user_id in users {
        let a = assigned.get(&user_id);
        let status = match a {
            None => UserStatus::Deleted,
            Some(a) if !a.active => UserStatus::Inactive,
            Some(_) => UserStatus::Active,
        };
        let grants = a.map(|a| assignment_grants(&model.roles, a, default.as_deref())).unwrap_or_default();
        let row = rows.remove(&user_id);
        if row.is_none() && grants.is_empty() {
            continue;
        }
        let now = model.effective(status == UserStatus::Active, &grants);
        let held = row.as_ref().and_then(|r| {
            r.desired_role.as_ref().map(|role| Held { role: role.clone(), assets: r.desired_assets.clone() })
        });
        let lost = match (&row, &held, a) {
            (Some(r), Some(_), Some(a)) if status == UserStatus::Active => {
                let groups: BTreeSet<String> = a.groups.iter().cloned().collect();
                let before: Vec<Grant> = r
                    .desired_sources
                    .iter()
                    .map(|g| Grant { source: g.source.clone().in_integration_directory(), ..g.clone() })
                    .collect();
                lost_grants(&before, &grants, &groups)
            }
            _ => Vec::new(),
        };
        let off = a.filter(|_| status == UserStatus::Active).map(|a| off_ladder(&model.roles, a)).unwrap_or_default();
        let decision = decide(held.as_ref(), now.as_ref(), status, &lost, &integration.asset_names).map(|d| {
            let reason = match removal_reason(status) {
                Some(reason) => reason,
                None if !off.is_empty() && d.to.is_some() => {
                    format!("{}; not on this integration's role ladder: {}", d.reason, off.join(", "))
                }
                None => d.reason,
            };
            Decision { reason, ..d }
        });
        let email = a.map(|a| a.email.clone()).or_else(|| row.as_ref().map(|r| r.email.clone()));
        items.push(Planned { user_id, integration_id, email, status, grants, now, row, decision });
    }
    Ok(Plan { integrations: BTreeMap::from([(integration_id, integration)]), items })
}

/// Why a user of an integration's directory is removed, when it is for their status: there an
/// IdP sends `active: false` or DELETE when it unassigns someone from the app as well as when
/// it deactivates or deletes them, and cannot be told apart.
fn removal_reason(status: UserStatus) -> Option<String> {
    match status {
        UserStatus::Active => None,
        UserStatus::Inactive => Some("removed: unassigned from the app or deactivated in the IdP".into()),
        UserStatus::Deleted => Some("removed: unassigned from the app or deleted in the IdP".into()),
    }
}

/// The roles the IdP named for `a` when none of them is on the ladder, so that the user holds
/// the default (or lowest) role instead: a role misspelt in the IdP's mapping would otherwise
/// lower everyone without a word. Empty for a seat-only integration, where roles mean nothing.
pub fn off_ladder(ladder: &RoleLadder, a: &Assignment) -> Vec<String> {
    let rungs: Vec<String> = ladder.roles().iter().map(|r| rung_key(r)).collect();
    let seat_only = ladder.roles().iter().all(|r| r == unseat_domain::SEAT);
    if seat_only || a.roles.iter().any(|r| rungs.contains(&rung_key(r))) {
        return Vec::new();
    }
    a.roles.clone()
}

/// The grants an assignment gives on a ladder (see the module docs). Pure.
pub fn assignment_grants(ladder: &RoleLadder, a: &Assignment, default_role: Option<&str>) -> Vec<Grant> {
    if !a.active {
        return Vec::new();
    }
    let rungs: Vec<(String, &String)> = ladder.roles().iter().map(|r| (rung_key(r), r)).collect();
    let on_ladder = |name: &str| {
        let name = rung_key(name);
        rungs.iter().find(|(folded, _)| *folded == name).map(|(_, r)| (*r).clone())
    };
    let named = a.roles.iter().filter_map(|r| on_ladder(r)).min_by_key(|r| ladder.rank(r));
    let Some(direct) = named.or_else(|| default_role.and_then(on_ladder)).or_else(|| ladder.roles().last().cloned())
    else {
        return Vec::new();
    };
    let mut grants = vec![Grant { source: GrantSource::Assignment, role: direct.clone(), assets: AssetMap::new() }];
    for g in &a.groups {
        let role = on_ladder(g).unwrap_or_else(|| direct.clone());
        grants.push(Grant { source: GrantSource::PushedGroup { name: g.clone() }, role, assets: AssetMap::new() });
    }
    grants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> RoleLadder {
        RoleLadder::parse(vec!["ADMIN".into(), "EMPLOYEE".into(), "ANALYST".into()]).unwrap()
    }

    fn assignment(roles: &[&str], groups: &[&str]) -> Assignment {
        Assignment {
            active: true,
            email: "a@x.io".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn roles(grants: &[Grant]) -> Vec<(String, String)> {
        grants.iter().map(|g| (g.source.to_string(), g.role.clone())).collect()
    }

    #[test]
    fn roles_none_of_which_is_on_the_ladder_are_named() {
        let l = ladder();
        assert_eq!(off_ladder(&l, &assignment(&["Administrator", "Owner"], &[])), vec!["Administrator", "Owner"]);
        assert!(off_ladder(&l, &assignment(&["Administrator", "admin"], &[])).is_empty(), "one is on it");
        assert!(off_ladder(&l, &assignment(&[], &["Sales"])).is_empty(), "no role named");
        let seat = RoleLadder::parse(vec![unseat_domain::SEAT.into()]).unwrap();
        assert!(off_ladder(&seat, &assignment(&["Administrator"], &[])).is_empty(), "seat-only");
    }

    #[test]
    fn role_comes_from_roles_then_default_then_the_lowest_rung() {
        let l = ladder();
        let g = assignment_grants(&l, &assignment(&["viewer", "employee", "Admin"], &[]), Some("ANALYST"));
        assert_eq!(roles(&g), vec![("the IdP's assignment".into(), "ADMIN".into())], "highest named role");
        let g = assignment_grants(&l, &assignment(&["viewer"], &[]), Some("EMPLOYEE"));
        assert_eq!(g[0].role, "EMPLOYEE", "default role when no named role is on the ladder");
        let g = assignment_grants(&l, &assignment(&[], &[]), None);
        assert_eq!(g[0].role, "ANALYST", "lowest rung without a default");
        let g = assignment_grants(&l, &assignment(&[], &[]), Some("NOT-ON-LADDER"));
        assert_eq!(g[0].role, "ANALYST");
    }

    #[test]
    fn pushed_groups_grant_their_role_or_the_direct_one() {
        let g = assignment_grants(&ladder(), &assignment(&[], &["admin", "Marketing"]), Some("EMPLOYEE"));
        assert_eq!(
            roles(&g),
            vec![
                ("the IdP's assignment".into(), "EMPLOYEE".into()),
                ("pushed group admin".into(), "ADMIN".into()),
                ("pushed group Marketing".into(), "EMPLOYEE".into()),
            ]
        );
    }

    #[test]
    fn role_names_match_whatever_the_case_of_any_letter() {
        let l = RoleLadder::parse(vec!["Éditeur".into(), "Lecteur".into()]).unwrap();
        let g = assignment_grants(&l, &assignment(&["éDITEUR"], &[]), Some("LECTEUR"));
        assert_eq!(roles(&g), vec![("the IdP's assignment".into(), "Éditeur".into())]);
        let g = assignment_grants(&l, &assignment(&[], &["éditeur"]), Some("LECTEUR"));
        assert_eq!(
            roles(&g),
            vec![("the IdP's assignment".into(), "Lecteur".into()), ("pushed group éditeur".into(), "Éditeur".into())]
        );
        let g = assignment_grants(&l, &assignment(&[], &[]), Some("lecteur"));
        assert_eq!(g[0].role, "Lecteur");
        // A rung stored with surrounding spaces is named as the IdP's trimmed name is.
        let l = RoleLadder::parse(vec![" Éditeur ".into(), "Lecteur".into()]).unwrap();
        let g = assignment_grants(&l, &assignment(&["éditeur"], &[]), Some("Lecteur"));
        assert_eq!(g[0].role, " Éditeur ");
    }

    #[test]
    fn inactive_users_have_no_grants() {
        let mut a = assignment(&["ADMIN"], &["ADMIN"]);
        a.active = false;
        assert!(assignment_grants(&ladder(), &a, Some("EMPLOYEE")).is_empty());
    }
}
