//! How a filter's candidates are found: which of its terms can be looked up in the database,
//! how they combine into a plan, and gathering what the plan's lookups find. The whole filter is
//! then evaluated on the candidates in memory.

use crate::response::stamp_range;
use crate::ApiError;
use unseat_scim::{CompareOp, Filter, ScimError};
use unseat_store::directory::{StampRange, Within, MAX_SCAN};
use unseat_telemetry::{FilterLabels, Metrics};
use uuid::Uuid;

/// Most lookups one filter's candidates may take (`userName eq "a" or userName eq "b" or …`),
/// and most of them that search the tenant's rows rather than read an index; a filter needing
/// more is scanned.
const MAX_LOOKUPS: usize = 100;
const MAX_SEARCHES: usize = 4;

/// Rank of a lookup that searches the tenant's rows rather than reading an index (a text in the
/// stored JSON, a `meta` date); indexed lookups rank below it.
const SEARCH: u8 = 2;

/// A way to find the resources a filter term can select.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lookup<'f> {
    /// The name (`userName`, `displayName`) eq, through its index.
    Name(&'f str),
    ExternalId(&'f str),
    /// An `id` eq (not necessarily a UUID).
    Id(&'f str),
    /// An element's `value` eq, through its index: a user's email (Entra's
    /// `emails[type eq "work"].value eq "…"`), a group's member.
    Element(&'f str),
    /// Any other stored attribute compared with a text (an IdP matching users on a custom
    /// attribute): the resources whose stored JSON holds it there, searched in the database.
    Text(&'f str, Within),
    /// A delta read (`meta.lastModified gt "…"`): the resources stamped in its range, searched
    /// in the database.
    Stamped(StampRange),
}

/// What one kind of resource is looked up by.
pub(crate) struct Keys {
    /// Its indexed name attribute: `userName`, `displayName`.
    pub(crate) name: &'static str,
    /// Its multi-valued attribute whose elements' `value` is indexed: `emails`, `members`.
    pub(crate) elements: &'static str,
    /// What its representation carries that its stored JSON may not: added when rendered.
    pub(crate) computed: &'static [&'static str],
}

impl Keys {
    /// Lookups that together find every resource `filter` can select, when there are such: a
    /// term's own, the best ranked of an `and`'s terms (indexes first, then the fewest lookups,
    /// then the first), both sides' of an `or`. `None` when some part has none (`not (…)`, `title gt "x"`) or
    /// they would be too many.
    pub(crate) fn plan<'f>(&self, filter: &'f Filter) -> Option<Vec<Lookup<'f>>> {
        Some(self.ranked(filter)?.into_iter().map(|(_, lookup)| lookup).collect())
    }

    fn ranked<'f>(&self, filter: &'f Filter) -> Option<Vec<(u8, Lookup<'f>)>> {
        let plan = match filter {
            Filter::And(..) => filter
                .conjuncts()
                .into_iter()
                .filter_map(|t| self.ranked(t))
                .min_by_key(|p| (p.iter().map(|(rank, _)| *rank).max(), p.len()))?,
            Filter::Or(a, b) => {
                let mut p = self.ranked(a)?;
                p.extend(self.ranked(b)?);
                p
            }
            term => vec![self.lookup(term)?],
        };
        let searches = plan.iter().filter(|(rank, _)| *rank >= SEARCH).count();
        (plan.len() <= MAX_LOOKUPS && searches <= MAX_SEARCHES).then_some(plan)
    }

    /// How a single term is looked up, ranked.
    fn lookup<'f>(&self, term: &'f Filter) -> Option<(u8, Lookup<'f>)> {
        if let Some((p, v)) = term.equality() {
            if p.is(self.name) {
                return Some((0, Lookup::Name(v)));
            }
            if p.is("externalId") {
                return Some((0, Lookup::ExternalId(v)));
            }
            if p.is("id") {
                return Some((0, Lookup::Id(v)));
            }
        }
        if let Some(v) = term.element_equality(self.elements, "value") {
            return Some((1, Lookup::Element(v)));
        }
        if let Some((text, op)) = term.required_text(self.computed) {
            return Some((SEARCH, Lookup::Text(text, within(op))));
        }
        stamp_range(term).map(|range| (SEARCH, Lookup::Stamped(range)))
    }
}

/// Where a filter's text stands in the JSON string it is compared with, for the database search.
fn within(op: CompareOp) -> Within {
    match op {
        CompareOp::Eq => Within::Whole,
        CompareOp::Sw => Within::Start,
        CompareOp::Ew => Within::End,
        _ => Within::Anywhere,
    }
}

/// How a filter's candidates were read by its lookups.
pub(crate) enum Found<R> {
    /// The filter has no plan: the directory is to be scanned.
    Unplanned,
    /// What its lookups found, each resource once, in creation order.
    Rows(Vec<R>),
    /// More than [`MAX_SCAN`] (not all read): the answer is `tooMany`.
    TooMany,
}

/// Runs a plan's lookups and gathers what they find, each resource once (by `id`), in the order
/// of `order` (creation). A lookup answers `None` when it finds more than [`MAX_SCAN`] (without
/// reading them); the plan's answer is then [`Found::TooMany`], as it is once more than that
/// are found together.
pub(crate) async fn gathered<'f, R, Fut, K: Ord>(
    plan: Vec<Lookup<'f>>,
    mut run: impl FnMut(Lookup<'f>) -> Fut,
    id: impl Fn(&R) -> Uuid,
    order: impl Fn(&R) -> K,
) -> Result<Found<R>, ApiError>
where
    Fut: std::future::Future<Output = unseat_store::Result<Option<Vec<R>>>>,
{
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    for lookup in plan {
        let Some(rows) = run(lookup).await? else { return Ok(Found::TooMany) };
        found.extend(rows.into_iter().filter(|r| seen.insert(id(r))));
        if found.len() as i64 > MAX_SCAN {
            return Ok(Found::TooMany);
        }
    }
    found.sort_by_key(|r| order(r));
    Ok(Found::Rows(found))
}

/// A filter's candidates: what its lookups found, else the whole directory as `scan` reads it
/// (`None` when it holds more than [`MAX_SCAN`], found without reading them), counted by how in
/// `unseat_scim_filter_reads_total` for `resource` (`Users`, `Groups`). More than [`MAX_SCAN`]
/// candidates are `tooMany`, with `hint` saying which filters narrow them.
pub(crate) async fn found_or_scanned<R>(
    metrics: &Metrics,
    resource: &str,
    found: Found<R>,
    scan: impl std::future::Future<Output = unseat_store::Result<Option<Vec<R>>>>,
    hint: &str,
) -> Result<Vec<R>, ApiError> {
    let read = if matches!(found, Found::Unplanned) { "scan" } else { "lookup" };
    metrics.scim_filter_reads.get_or_create(&FilterLabels { resource: resource.into(), read: read.into() }).inc();
    let rows = match found {
        Found::Rows(rows) => Some(rows),
        Found::TooMany => None,
        Found::Unplanned => scan.await?,
    };
    match rows {
        Some(rows) if rows.len() as i64 <= MAX_SCAN => Ok(rows),
        _ => Err(ScimError::too_many(hint.to_string()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The users' own keys, as the service looks users up.
    use crate::users::KEYS as USERS;

    /// The plan for `f`, each lookup by the attribute or value it reads.
    fn plan(f: &str) -> Option<Vec<String>> {
        let f = Filter::parse(f).unwrap();
        let plan = USERS.plan(&f)?;
        Some(
            plan.into_iter()
                .map(|l| match l {
                    Lookup::Name(v) => format!("userName {v}"),
                    Lookup::ExternalId(v) => format!("externalId {v}"),
                    Lookup::Id(v) => format!("id {v}"),
                    Lookup::Element(v) => format!("email {v}"),
                    Lookup::Text(v, within) => format!("text {v} {within:?}"),
                    Lookup::Stamped(r) => format!("stamped {:?}", r.stamp),
                })
                .collect(),
        )
    }

    fn some(lookups: &[&str]) -> Option<Vec<String>> {
        Some(lookups.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_plan_finds_every_resource_a_filter_can_select() {
        assert_eq!(plan(r#"USERNAME eq "a""#), some(&["userName a"]));
        assert_eq!(plan(r#"title sw "Lead""#), some(&["text Lead Start"]));
        assert_eq!(plan(r#"meta.lastModified gt "2026-01-01T00:00:00Z""#), some(&["stamped Modified"]));
        // An and: its best ranked term, indexes first, the first of equals.
        assert_eq!(
            plan(r#"title eq "t" and emails.value eq "e" and externalId eq "x" and userName eq "a""#),
            some(&["externalId x"])
        );
        assert_eq!(plan(r#"active eq true and emails[type eq "work"].value eq "e""#), some(&["email e"]));
        // An or: both sides, each side by its own best term.
        assert_eq!(plan(r#"userName eq "a" or id eq "b""#), some(&["userName a", "id b"]));
        assert_eq!(
            plan(r#"(title eq "t" and userName eq "a") or (title co "u" and emails.value eq "e")"#),
            some(&["userName a", "email e"])
        );
        // An and of ors takes its cheapest or, and of equals the one with fewest lookups.
        assert_eq!(
            plan(r#"(userName eq "a" or userName eq "b") and externalId eq "x" and id eq "y""#),
            some(&["externalId x"])
        );
        assert_eq!(
            plan(r#"(title eq "t" or userName eq "a") and (emails.value eq "e" or emails.value eq "f")"#),
            some(&["email e", "email f"])
        );
        // A part with no lookup leaves the filter to the scan.
        for none in [
            r#"title gt "x""#,
            r#"userName eq "a" or title ne "x""#,
            r#"not (userName eq "a")"#,
            r#"meta.lastModified ne "2026-01-01T00:00:00Z""#,
            "active eq false",
        ] {
            assert_eq!(plan(none), None, "{none}");
        }
        // Too many lookups, or too many searches, are scanned instead …
        let ors = |term: &str, n: usize| vec![term; n].join(" or ");
        assert_eq!(plan(&ors(r#"userName eq "a""#, MAX_LOOKUPS)).map(|p| p.len()), Some(MAX_LOOKUPS));
        assert_eq!(plan(&ors(r#"userName eq "a""#, MAX_LOOKUPS + 1)), None);
        assert_eq!(plan(&ors(r#"title eq "t""#, MAX_SEARCHES)).map(|p| p.len()), Some(MAX_SEARCHES));
        assert_eq!(plan(&ors(r#"title eq "t""#, MAX_SEARCHES + 1)), None);
        // … unless another term of an and can be looked up within the bounds.
        assert_eq!(plan(&format!(r#"({}) and title eq "t""#, ors(r#"title eq "t""#, 5))), some(&["text t Whole"]));
    }
}
