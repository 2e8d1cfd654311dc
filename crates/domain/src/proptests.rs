//! Effective access and decisions against a small reference model written the obvious way:
//! walk the ladder from the top and stop at the first role (asset role) some valid grant gives.

use crate::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const ROLE_POOL: &[&str] = &["OWNER", "ADMIN", "EMPLOYEE", "GUEST", "SEAT"];
const ASSET_ROLE_POOL: &[&str] = &["MANAGE", "ADVERTISE", "ANALYZE", "VIEW"];
const ASSET_POOL: &[&str] = &["act_1", "act_2", "page_1", "cat_1"];

/// The answer: (role, assets) or nothing.
fn model(m: &AccessModel, active: bool, grants: &[Grant]) -> Option<(String, BTreeMap<String, String>)> {
    if !active {
        return None;
    }
    let gives_role = |g: &Grant| m.roles.roles().contains(&g.role);
    let role = m.roles.roles().iter().find(|r| grants.iter().any(|g| gives_role(g) && &g.role == *r))?.clone();
    let mut assets = BTreeMap::new();
    for asset in &m.assets {
        for asset_role in m.asset_roles.roles() {
            if grants.iter().any(|g| gives_role(g) && g.assets.get(asset) == Some(asset_role)) {
                assets.insert(asset.clone(), asset_role.clone());
                break;
            }
        }
    }
    Some((role, assets))
}

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(pool).prop_map(str::to_string)
}

fn access_model() -> impl Strategy<Value = AccessModel> {
    (
        proptest::sample::subsequence(&ROLE_POOL[..4], 0..=4),
        proptest::sample::subsequence(ASSET_ROLE_POOL, 0..=4),
        proptest::sample::subsequence(ASSET_POOL, 0..=4),
    )
        .prop_map(|(roles, asset_roles, assets)| AccessModel {
            roles: RoleLadder::for_integration(roles.into_iter().map(str::to_string).collect()).unwrap(),
            asset_roles: AssetLadder::parse(asset_roles.into_iter().map(str::to_string).collect()).unwrap(),
            assets: assets.into_iter().map(str::to_string).collect(),
        })
}

fn source() -> impl Strategy<Value = GrantSource> {
    prop_oneof![
        Just(GrantSource::Individual),
        pick(&["Admins", "Staff", "Ads", "Sales"]).prop_map(|name| GrantSource::Team { name }),
    ]
}

fn grant() -> impl Strategy<Value = Grant> {
    (source(), pick(ROLE_POOL), proptest::collection::btree_map(pick(ASSET_POOL), pick(ASSET_ROLE_POOL), 0..3))
        .prop_map(|(source, role, assets)| Grant { source, role, assets })
}

fn held() -> impl Strategy<Value = Option<Held>> {
    proptest::option::of(
        (pick(ROLE_POOL), proptest::collection::btree_map(pick(ASSET_POOL), pick(ASSET_ROLE_POOL), 0..3))
            .prop_map(|(role, assets)| Held { role, assets }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn effective_access_matches_the_model(m in access_model(), active: bool, grants in proptest::collection::vec(grant(), 0..8)) {
        let got = m.effective(active, &grants);
        let want = model(&m, active, &grants);
        prop_assert_eq!(got.as_ref().map(|a| (a.role.clone(), a.assets.clone())), want);
        if let Some(a) = got {
            // The named grants are exactly the valid ones giving that role (and asset role).
            let expected: BTreeSet<GrantSource> =
                grants.iter().filter(|g| g.role == a.role).map(|g| g.source.clone()).collect();
            prop_assert_eq!(a.because.iter().cloned().collect::<BTreeSet<_>>(), expected);
            for (asset, asset_role) in &a.assets {
                let expected: BTreeSet<GrantSource> = grants
                    .iter()
                    .filter(|g| m.roles.rank(&g.role).is_some() && g.assets.get(asset) == Some(asset_role))
                    .map(|g| g.source.clone())
                    .collect();
                prop_assert_eq!(a.asset_because[asset].iter().cloned().collect::<BTreeSet<_>>(), expected);
            }
        }
    }

    #[test]
    fn order_and_duplicates_do_not_matter(m in access_model(), grants in proptest::collection::vec(grant(), 0..8), seed: u64) {
        let mut shuffled = grants.clone();
        shuffled.extend(grants.iter().take(3).cloned());
        let n = shuffled.len();
        if n > 1 {
            for i in 0..n {
                shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n);
            }
        }
        prop_assert_eq!(m.effective(true, &grants), m.effective(true, &shuffled));
    }

    /// Taking a grant away never raises access: no one gains from losing a grant.
    #[test]
    fn fewer_grants_never_give_more(m in access_model(), grants in proptest::collection::vec(grant(), 1..8), drop in 0usize..8) {
        let all = m.effective(true, &grants);
        let mut fewer = grants.clone();
        fewer.remove(drop % grants.len());
        if let Some(f) = m.effective(true, &fewer) {
            let a = all.expect("more grants give at least as much");
            prop_assert!(m.roles.rank(&a.role) <= m.roles.rank(&f.role));
            for (asset, role) in &f.assets {
                let higher = a.assets.get(asset).and_then(|r| m.asset_roles.rank(r));
                prop_assert!(higher.is_some() && higher <= m.asset_roles.rank(role));
            }
        }
    }

    #[test]
    fn decisions_follow_held_and_effective_state(
        m in access_model(),
        active: bool,
        grants in proptest::collection::vec(grant(), 0..6),
        held in held(),
        before in proptest::collection::vec(grant(), 0..4),
    ) {
        let now = m.effective(active, &grants);
        let status = if active { UserStatus::Active } else { UserStatus::Inactive };
        let lost = lost_grants(&before, &grants, &BTreeSet::new());
        let d = decide(held.as_ref(), now.as_ref(), status, &lost, &Default::default());
        let want = now.as_ref().map(Access::held);
        match (&held, &want) {
            (None, None) => prop_assert!(d.is_none()),
            (Some(_), None) => prop_assert_eq!(d.map(|d| d.outcome), Some(Outcome::Remove)),
            (None, Some(_)) => prop_assert_eq!(d.as_ref().map(|d| d.outcome), Some(Outcome::Grant)),
            (Some(h), Some(w)) if h == w => prop_assert_eq!(d.as_ref().map(|d| d.outcome), Some(Outcome::Keep)),
            (Some(_), Some(_)) => prop_assert_eq!(d.as_ref().map(|d| d.outcome), Some(Outcome::Update)),
        }
        if let (Some(d), Some(a)) = (decide(held.as_ref(), now.as_ref(), status, &lost, &Default::default()), &now) {
            prop_assert_eq!(d.to.as_ref(), Some(&a.held()));
            // The reason names every grant behind the role it keeps or gives: as giving it, or
            // as changed to give it now.
            for s in &a.because {
                let changed = Lost::Changed { source: s.clone(), role: Some(a.role.clone()) }.to_string();
                prop_assert!(
                    d.reason.contains(&s.to_string()) || d.reason.contains(&changed),
                    "{} lacks {}",
                    d.reason,
                    s
                );
            }
        }
    }
}
