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
    fn reads_the_business_use_case_header() {
        let h = r#"{"1001":[{"type":"ads_management","call_count":100,"estimated_time_to_regain_access":3},
                    {"type":"business_management","estimated_time_to_regain_access":0}]}"#;
        assert_eq!(business_use_case_wait(h), Some(Duration::from_secs(180)));
        assert_eq!(business_use_case_wait(r#"{"1":[{"estimated_time_to_regain_access":0}]}"#), None);
        assert_eq!(business_use_case_wait("{}"), None);
        assert_eq!(business_use_case_wait("not json"), None);
    }
}
