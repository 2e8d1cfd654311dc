//! Random access scenarios and the reference model they are checked against.
//!
//! A scenario is a small workspace directory (users, teams, memberships), integrations with and
//! without role and asset ladders, grants, and a sequence of IdP and console changes. The
//! [`model`] says, for the final directory, what every user should hold on every integration.
//! It is written the obvious way and shares no code with `unseat-domain`: the end-to-end
//! correctness tests and `unseat bench soak` compare the real system with it.

use std::collections::{BTreeMap, BTreeSet};

/// Asset id → asset role.
pub type Assets = BTreeMap<String, String>;

/// SplitMix64: a small, seedable generator, so a failing case is reproduced from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// What kinds of scenario to generate.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Roles the integrations' ladders are drawn from (the emulator accepts only some).
    pub role_pool: &'static [&'static str],
    /// Allow seat-only integrations (no role ladder).
    pub seat_only: bool,
    /// Give integrations asset ladders and assets, and grants assets.
    pub assets: bool,
    /// Allow grants naming a role off the ladder (an integration reconfigured under them);
    /// only the store-level tests can create those, the console refuses them.
    pub off_ladder: bool,
    pub max_users: usize,
    pub max_teams: usize,
    pub max_integrations: usize,
    pub max_steps: usize,
}

impl Options {
    /// Scenarios the whole pipeline can run (roles the emulator knows, no seat-only app; the
    /// assets are real ad accounts and pages in the emulator).
    pub fn pipeline() -> Self {
        Self {
            role_pool: &["ADMIN", "EMPLOYEE", "DEVELOPER", "FINANCE_ANALYST"],
            seat_only: false,
            assets: true,
            off_ladder: false,
            max_users: 5,
            max_teams: 3,
            max_integrations: 2,
            max_steps: 10,
        }
    }

    /// Scenarios for the resolver against its store: every shape the model covers.
    pub fn store() -> Self {
        Self {
            role_pool: &["OWNER", "ADMIN", "EMPLOYEE", "GUEST"],
            seat_only: true,
            assets: true,
            off_ladder: true,
            max_users: 5,
            max_teams: 3,
            max_integrations: 3,
            max_steps: 12,
        }
    }
}

pub const ASSET_ROLE_POOL: &[&str] = &["MANAGE", "ADVERTISE", "ANALYZE"];
pub const SEAT: &str = "SEAT";

/// One integration of a scenario.
#[derive(Debug, Clone)]
pub struct IntegrationSpec {
    /// Highest first; empty for a seat-only app.
    pub roles: Vec<String>,
    pub asset_roles: Vec<String>,
    pub assets: Vec<String>,
}

impl IntegrationSpec {
    /// The ladder effective access walks: a seat-only app has the one role SEAT.
    pub fn ladder(&self) -> Vec<String> {
        if self.roles.is_empty() {
            vec![SEAT.to_string()]
        } else {
            self.roles.clone()
        }
    }
}

/// Who a grant is for: team or user index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Team(usize),
    User(usize),
}

/// The directory and grants at one moment.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub active: Vec<bool>,
    pub deleted: Vec<bool>,
    pub team_deleted: Vec<bool>,
    /// (team, user)
    pub members: BTreeSet<(usize, usize)>,
    /// (integration, subject) → (role, assets)
    pub grants: BTreeMap<(usize, Subject), (String, Assets)>,
}

/// One IdP or console change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    AddMember {
        team: usize,
        user: usize,
    },
    RemoveMember {
        team: usize,
        user: usize,
    },
    Deactivate {
        user: usize,
    },
    Reactivate {
        user: usize,
    },
    DeleteUser {
        user: usize,
    },
    DeleteTeam {
        team: usize,
    },
    /// Adds the grant, or changes the one the subject has.
    SetGrant {
        integration: usize,
        subject: Subject,
        role: String,
        assets: Assets,
    },
    Revoke {
        integration: usize,
        subject: Subject,
    },
}

impl Step {
    /// True when the change can take access away (it is announced with `may_revoke`).
    pub fn may_revoke(&self) -> bool {
        !matches!(self, Step::AddMember { .. } | Step::Reactivate { .. })
    }
}

impl Directory {
    /// The users a change concerns, in the directory as it is before the change (what ingest
    /// and the console name in their message).
    pub fn concerned(&self, step: &Step) -> Vec<usize> {
        let members_of =
            |team: usize| -> Vec<usize> { self.members.iter().filter(|(t, _)| *t == team).map(|(_, u)| *u).collect() };
        match step {
            Step::AddMember { user, .. }
            | Step::RemoveMember { user, .. }
            | Step::Deactivate { user }
            | Step::Reactivate { user }
            | Step::DeleteUser { user } => vec![*user],
            Step::DeleteTeam { team } => members_of(*team),
            Step::SetGrant { subject, .. } | Step::Revoke { subject, .. } => match subject {
                Subject::Team(t) => members_of(*t),
                Subject::User(u) if !self.deleted[*u] => vec![*u],
                Subject::User(_) => vec![],
            },
        }
    }

    pub fn apply(&mut self, step: &Step) {
        match step {
            Step::AddMember { team, user } => {
                self.members.insert((*team, *user));
            }
            Step::RemoveMember { team, user } => {
                self.members.remove(&(*team, *user));
            }
            Step::Deactivate { user } => self.active[*user] = false,
            Step::Reactivate { user } => self.active[*user] = true,
            Step::DeleteUser { user } => {
                self.deleted[*user] = true;
                self.members.retain(|(_, u)| u != user);
            }
            Step::DeleteTeam { team } => {
                self.team_deleted[*team] = true;
                self.members.retain(|(t, _)| t != team);
            }
            Step::SetGrant { integration, subject, role, assets } => {
                self.grants.insert((*integration, *subject), (role.clone(), assets.clone()));
            }
            Step::Revoke { integration, subject } => {
                self.grants.remove(&(*integration, *subject));
            }
        }
    }
}

/// A generated case: integrations, the starting directory and the changes that follow.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub integrations: Vec<IntegrationSpec>,
    pub users: usize,
    pub teams: usize,
    pub initial: Directory,
    pub steps: Vec<Step>,
}

impl Scenario {
    pub fn final_directory(&self) -> Directory {
        let mut d = self.initial.clone();
        for s in &self.steps {
            d.apply(s);
        }
        d
    }
}

fn subset(rng: &mut Rng, pool: &[&str], min: usize) -> Vec<String> {
    let mut out: Vec<String> = pool.iter().filter(|_| rng.chance(60)).map(|s| s.to_string()).collect();
    while out.len() < min {
        let r = rng.pick(pool).to_string();
        if !out.contains(&r) {
            out.push(r);
        }
    }
    // Keep the pool's order: it is the ladder's order, highest first.
    out.sort_by_key(|r| pool.iter().position(|p| p == r));
    out
}

fn random_grant(rng: &mut Rng, spec: &IntegrationSpec, opts: &Options) -> (String, Assets) {
    let role =
        if opts.off_ladder && rng.chance(8) { "RETIRED_ROLE".to_string() } else { rng.pick(&spec.ladder()).clone() };
    let mut assets = Assets::new();
    if !spec.assets.is_empty() {
        for a in &spec.assets {
            if rng.chance(40) {
                assets.insert(a.clone(), rng.pick(&spec.asset_roles).clone());
            }
        }
        if opts.off_ladder && rng.chance(10) {
            assets.insert(rng.pick(&spec.assets).clone(), "RETIRED_ASSET_ROLE".into());
        }
        if opts.off_ladder && rng.chance(10) {
            assets.insert("retired_asset".into(), rng.pick(&spec.asset_roles).clone());
        }
    }
    (role, assets)
}

/// Generates the case for `seed`.
pub fn generate(seed: u64, opts: &Options) -> Scenario {
    let mut rng = Rng::new(seed);
    let users = 1 + rng.below(opts.max_users);
    let teams = rng.below(opts.max_teams + 1);
    let n_integrations = 1 + rng.below(opts.max_integrations);
    let integrations: Vec<IntegrationSpec> = (0..n_integrations)
        .map(|_| {
            let roles = if opts.seat_only && rng.chance(25) { Vec::new() } else { subset(&mut rng, opts.role_pool, 1) };
            let (asset_roles, assets) = if opts.assets && rng.chance(60) {
                let n = 1 + rng.below(3);
                (subset(&mut rng, ASSET_ROLE_POOL, 1), (0..n).map(|k| format!("asset_{k}")).collect())
            } else {
                (Vec::new(), Vec::new())
            };
            IntegrationSpec { roles, asset_roles, assets }
        })
        .collect();
    let mut d = Directory {
        active: (0..users).map(|_| !rng.chance(10)).collect(),
        deleted: vec![false; users],
        team_deleted: vec![false; teams],
        ..Default::default()
    };
    for t in 0..teams {
        for u in 0..users {
            if rng.chance(45) {
                d.members.insert((t, u));
            }
        }
    }
    for (i, spec) in integrations.iter().enumerate() {
        for t in 0..teams {
            if rng.chance(55) {
                d.grants.insert((i, Subject::Team(t)), random_grant(&mut rng, spec, opts));
            }
        }
        for u in 0..users {
            if rng.chance(20) {
                d.grants.insert((i, Subject::User(u)), random_grant(&mut rng, spec, opts));
            }
        }
    }
    let initial = d.clone();
    let mut steps = Vec::new();
    let n_steps = 1 + rng.below(opts.max_steps);
    let mut attempts = 0;
    while steps.len() < n_steps && attempts < n_steps * 20 {
        attempts += 1;
        let live_users: Vec<usize> = (0..users).filter(|u| !d.deleted[*u]).collect();
        let live_teams: Vec<usize> = (0..teams).filter(|t| !d.team_deleted[*t]).collect();
        let step = match rng.below(9) {
            0 | 1 if !live_users.is_empty() && !live_teams.is_empty() => {
                let (team, user) = (*rng.pick(&live_teams), *rng.pick(&live_users));
                if d.members.contains(&(team, user)) {
                    Step::RemoveMember { team, user }
                } else {
                    Step::AddMember { team, user }
                }
            }
            2 if !live_users.is_empty() => {
                let user = *rng.pick(&live_users);
                if d.active[user] {
                    Step::Deactivate { user }
                } else {
                    Step::Reactivate { user }
                }
            }
            3 if !live_users.is_empty() && rng.chance(40) => Step::DeleteUser { user: *rng.pick(&live_users) },
            4 if !live_teams.is_empty() && rng.chance(50) => Step::DeleteTeam { team: *rng.pick(&live_teams) },
            5..=7 => {
                let integration = rng.below(integrations.len());
                let subject = if !live_teams.is_empty() && rng.chance(70) {
                    Subject::Team(*rng.pick(&live_teams))
                } else if !live_users.is_empty() {
                    Subject::User(*rng.pick(&live_users))
                } else {
                    continue;
                };
                if d.grants.contains_key(&(integration, subject)) && rng.chance(40) {
                    Step::Revoke { integration, subject }
                } else {
                    let (role, assets) = random_grant(&mut rng, &integrations[integration], opts);
                    Step::SetGrant { integration, subject, role, assets }
                }
            }
            _ => continue,
        };
        d.apply(&step);
        steps.push(step);
    }
    Scenario { seed, integrations, users, teams, initial, steps }
}

/// What a user should hold on one integration: a role and asset roles.
pub type Expected = Option<(String, Assets)>;

/// The reference model. For each (user, integration): nothing when the user is deleted or
/// inactive; otherwise walk the ladder from the top and take the first role some grant reaching
/// the user gives (its own, or a live team's it is a member of); per known asset, walk the
/// asset ladder the same way over the grants whose role is on the ladder.
pub fn model(integrations: &[IntegrationSpec], d: &Directory) -> BTreeMap<(usize, usize), Expected> {
    let mut out = BTreeMap::new();
    for u in 0..d.active.len() {
        for (i, spec) in integrations.iter().enumerate() {
            let expected = if d.deleted[u] || !d.active[u] {
                None
            } else {
                let ladder = spec.ladder();
                let reaching: Vec<&(String, Assets)> = d
                    .grants
                    .iter()
                    .filter(|((gi, subject), _)| {
                        *gi == i
                            && match subject {
                                Subject::User(x) => *x == u,
                                Subject::Team(t) => !d.team_deleted[*t] && d.members.contains(&(*t, u)),
                            }
                    })
                    .map(|(_, g)| g)
                    .filter(|(role, _)| ladder.contains(role))
                    .collect();
                ladder.iter().find(|r| reaching.iter().any(|(role, _)| role == *r)).map(|role| {
                    let mut assets = Assets::new();
                    for asset in &spec.assets {
                        if let Some(ar) =
                            spec.asset_roles.iter().find(|ar| reaching.iter().any(|(_, a)| a.get(asset) == Some(*ar)))
                        {
                            assets.insert(asset.clone(), ar.clone());
                        }
                    }
                    (role.clone(), assets)
                })
            };
            out.insert((u, i), expected);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_on_a_known_case() {
        let spec = IntegrationSpec {
            roles: vec!["ADMIN".into(), "EMPLOYEE".into()],
            asset_roles: vec!["MANAGE".into(), "ANALYZE".into()],
            assets: vec!["a".into()],
        };
        let mut d = Directory {
            active: vec![true, true, false],
            deleted: vec![false; 3],
            team_deleted: vec![false, false],
            ..Default::default()
        };
        d.members.extend([(0, 0), (1, 0), (1, 1), (0, 2)]);
        d.grants.insert((0, Subject::Team(0)), ("ADMIN".into(), Assets::new()));
        d.grants.insert((0, Subject::Team(1)), ("EMPLOYEE".into(), [("a".into(), "ANALYZE".into())].into()));
        d.grants.insert((0, Subject::User(1)), ("RETIRED".into(), [("a".into(), "MANAGE".into())].into()));
        let m = model(std::slice::from_ref(&spec), &d);
        assert_eq!(m[&(0, 0)], Some(("ADMIN".into(), [("a".into(), "ANALYZE".into())].into())));
        assert_eq!(m[&(1, 0)], Some(("EMPLOYEE".into(), [("a".into(), "ANALYZE".into())].into())));
        assert_eq!(m[&(2, 0)], None);
        d.apply(&Step::DeleteTeam { team: 1 });
        assert_eq!(model(&[spec], &d)[&(1, 0)], None);
    }

    #[test]
    fn generated_steps_stay_inside_the_directory() {
        for seed in 0..200 {
            let s = generate(seed, &Options::store());
            let mut d = s.initial.clone();
            for step in &s.steps {
                if let Step::AddMember { team, user } = step {
                    assert!(!d.deleted[*user] && !d.team_deleted[*team]);
                }
                d.apply(step);
            }
        }
    }
}
