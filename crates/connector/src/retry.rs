//! How long to wait before the next attempt: exponential backoff with full jitter (a uniform
//! draw between zero and the exponential cap, which spreads a crowd of retries best), never
//! shorter than what the app asked for.
//!
//! backon's jittered exponential adds a random share on top of the exponential delay; full
//! jitter draws the whole delay, so it is computed here in a few lines instead.

use rand::Rng;
use std::time::Duration;

/// The wait before attempt `attempt + 1` after attempt `attempt` (1-based) failed: uniform in
/// `[0, min(max, min * 2^(attempt-1))]`, then at least `app_hint`.
pub fn next_wait(attempt: u32, min: Duration, max: Duration, app_hint: Option<Duration>) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let cap = min.saturating_mul(1u32 << exp).min(max.max(min));
    let drawn = if cap.is_zero() { Duration::ZERO } else { cap.mul_f64(rand::rng().random_range(0.0..=1.0)) };
    app_hint.map_or(drawn, |hint| drawn.max(hint))
}

/// Consecutive doublings of the throttle wait: the fifth throttle in a row and later wait 16
/// times the first.
const THROTTLE_DOUBLINGS: u32 = 4;

/// The wait after an attempt the app throttled, the `throttled`-th (1-based) since the task
/// was last re-driven: `floor` doubled for each earlier one (at most [`THROTTLE_DOUBLINGS`]
/// times), plus up to half again drawn at random so throttled tasks do not come back together,
/// then at least `app_hint`. Never shorter than `floor`: the app counts every call, the
/// throttled ones too, so coming back at once only prolongs the throttle.
pub fn throttle_wait(throttled: u32, floor: Duration, app_hint: Option<Duration>) -> Duration {
    let base = floor.saturating_mul(1u32 << throttled.saturating_sub(1).min(THROTTLE_DOUBLINGS));
    let drawn = base + base.mul_f64(rand::rng().random_range(0.0..=0.5));
    app_hint.map_or(drawn, |hint| drawn.max(hint))
}

/// Reads Meta's `X-Business-Use-Case-Usage` header: for every business and use case, an
/// `estimated_time_to_regain_access` in minutes. Returns the longest, if any is above zero.
pub fn business_use_case_wait(header: &str) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_str(header).ok()?;
    let minutes = value
        .as_object()?
        .values()
        .filter_map(|v| v.as_array())
        .flatten()
        .filter_map(|entry| entry.get("estimated_time_to_regain_access").and_then(serde_json::Value::as_u64))
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes.saturating_mul(60)))
}

/// The highest share of its budget an app reports used, in percent: Meta's `X-App-Usage`
/// (`call_count`, `total_time`, `total_cputime`), each business's and use case's entry of
/// `X-Business-Use-Case-Usage` (the same three) and `X-Ad-Account-Usage` (`acc_id_util_pct`).
/// None when no header says.
pub fn usage_percent(app: Option<&str>, business_use_case: Option<&str>, ad_account: Option<&str>) -> Option<f64> {
    const SHARES: [&str; 3] = ["call_count", "total_time", "total_cputime"];
    let parse = |h: Option<&str>| h.and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok());
    let shares = |v: &serde_json::Value, keys: &[&str]| -> Vec<f64> {
        keys.iter().filter_map(|k| v.get(*k).and_then(serde_json::Value::as_f64)).collect()
    };
    let mut all = Vec::new();
    if let Some(v) = parse(app) {
        all.extend(shares(&v, &SHARES));
    }
    if let Some(serde_json::Value::Object(by_id)) = parse(business_use_case) {
        for entry in by_id.values().filter_map(|v| v.as_array()).flatten() {
            all.extend(shares(entry, &SHARES));
        }
    }
    if let Some(v) = parse(ad_account) {
        all.extend(shares(&v, &["acc_id_util_pct"]));
    }
    all.into_iter().filter(|p| p.is_finite()).reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_within_the_cap_and_honour_the_app() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..=12 {
            for _ in 0..50 {
                let w = next_wait(attempt, min, max, None);
                let cap = (min * 2u32.pow(attempt.min(20) - 1)).min(max);
                assert!(w <= cap, "attempt {attempt}: {w:?} > {cap:?}");
            }
        }
        let hinted = next_wait(1, min, max, Some(Duration::from_secs(7)));
        assert!(hinted >= Duration::from_secs(7));
        assert!(next_wait(u32::MAX, min, max, None) <= max);
    }

    #[test]
    fn throttle_waits_start_at_the_floor_and_double() {
        let floor = Duration::from_secs(60);
        for throttled in 0..=8u32 {
            for _ in 0..50 {
                let w = throttle_wait(throttled, floor, None);
                let base = floor * 2u32.pow(throttled.saturating_sub(1).min(4));
                assert!(w >= base && w <= base.mul_f64(1.5), "throttle {throttled}: {w:?} outside {base:?}..1.5x");
            }
        }
        assert!(throttle_wait(u32::MAX, floor, None) <= floor * 24);
        let hinted = throttle_wait(1, floor, Some(Duration::from_secs(1800)));
        assert!(hinted >= Duration::from_secs(1800));
    }

    #[test]
    fn reads_the_usage_headers() {
        let app = r#"{"call_count":28,"total_time":25,"total_cputime":25}"#;
        let buc = r#"{"1001":[{"type":"ads_management","call_count":95,"total_cputime":20,"total_time":20}],
                      "1002":[{"type":"pages","call_count":3}]}"#;
        let ad = r#"{"acc_id_util_pct":9.67,"reset_time_duration":100}"#;
        assert_eq!(usage_percent(Some(app), None, None), Some(28.0));
        assert_eq!(usage_percent(Some(app), Some(buc), Some(ad)), Some(95.0));
        assert_eq!(usage_percent(None, None, Some(ad)), Some(9.67));
        assert_eq!(usage_percent(None, Some("{}"), Some("not json")), None);
        assert_eq!(usage_percent(None, None, None), None);
    }

    #[test]
    fn reads_the_business_use_case_header() {
        let h = r#"{"1001":[{"type":"ads_management","call_count":100,"estimated_time_to_regain_access":3},
                    {"type":"business_management","estimated_time_to_regain_access":0}]}"#;
        assert_eq!(business_use_case_wait(h), Some(Duration::from_secs(180)));
        assert_eq!(business_use_case_wait(r#"{"1":[{"estimated_time_to_regain_access":0}]}"#), None);
        assert_eq!(business_use_case_wait("{}"), None);
        assert_eq!(business_use_case_wait("not json"), None);
    }
}
