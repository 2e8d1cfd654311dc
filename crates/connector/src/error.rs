//! App errors and the retry decision. Adapters turn what an app answered into an [`AppError`];
//! the runtime asks it [`AppError::class`] and never looks at status codes itself.

use std::time::Duration;

/// The longest wait an app's hint (`Retry-After`, Meta's `estimated_time_to_regain_access`)
/// is honoured for: Meta's limits are counted over a rolling hour, so an hour; a longer hint
/// is clamped. A wait that long parks the task in a delay queue and holds no delivery.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What went wrong talking to an app. Messages never carry the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// The app answered with an error status.
    #[error("HTTP {status}{}: {message}", code_suffix(*.code, *.subcode))]
    Api {
        status: u16,
        /// The app's own error code (Graph `error.code`), if it gave one.
        code: Option<i64>,
        subcode: Option<i64>,
        message: String,
        /// The wait the app asked for (`Retry-After`), if any.
        retry_after: Option<Duration>,
    },
    #[error("the app did not answer within {0:?}")]
    Timeout(Duration),
    #[error("could not reach the app: {0}")]
    Unreachable(String),
    /// The app answered 2xx with something we cannot understand.
    #[error("unexpected answer from the app: {0}")]
    Protocol(String),
    /// No request was sent: the app throttled the integration and named a wait, and its next
    /// request slot is this far away ([`crate::limit::MAX_SLOT_WAIT`] or more).
    #[error("no request sent: the app throttled this integration, whose next request slot is {} s away", .0.as_secs())]
    Paused(Duration),
    /// The integration's settings do not let us call the app at all.
    #[error("the integration is misconfigured: {0}")]
    Misconfigured(String),
}

fn code_suffix(code: Option<i64>, subcode: Option<i64>) -> String {
    match (code, subcode) {
        (Some(c), Some(s)) => format!(" (code {c}, subcode {s})"),
        (Some(c), None) => format!(" (code {c})"),
        _ => String::new(),
    }
}

/// What the runtime does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later, waiting at least `retry_after` when the app said so.
    Transient { retry_after: Option<Duration> },
    /// The app said "slow down" (HTTP 429, Graph throttling codes): try again after the
    /// runtime's throttle wait, or `retry_after` when longer. Calling sooner only adds to what
    /// the app counts against us, so these attempts do not spend the attempt budget; the
    /// task's age bounds them.
    Throttled { retry_after: Option<Duration> },
    /// Retrying cannot help; the task fails.
    Permanent,
    /// Retrying cannot help until an admin fixes the integration (credential, permissions,
    /// settings); the task fails and the integration is flagged.
    NeedsAttention,
}

/// Graph codes that mean "slow down": the app's, a user's, a Page's, a custom or a business
/// use case's rate limit, and 368 (blocked for abuse: wait before calling again).
pub fn is_throttle_code(code: i64) -> bool {
    matches!(code, 4 | 17 | 32 | 341 | 368 | 613) || (80000..=80014).contains(&code)
}

/// Graph codes that mean a temporary problem, safe to retry: 1 and 2 (unknown and service
/// errors), 3919 (an unexpected technical issue on an asset permission).
fn is_temporary(code: i64) -> bool {
    matches!(code, 1 | 2 | 3919)
}

/// Graph codes an admin has to act on: the credential (190, 102), its permissions (10,
/// 200–299), the app's capability (3) or two-factor authentication the business asks for (415).
fn is_auth_or_permission(code: i64) -> bool {
    matches!(code, 3 | 10 | 102 | 190 | 415) || (200..=299).contains(&code)
}

impl AppError {
    /// The retry decision. The app's own code wins over the HTTP status (Graph throttles with
    /// HTTP 400 and code 4, say); then 401/403 need an admin, 429 is throttling, 408 and 5xx
    /// are transient but for 501/505 (not implemented), and any other status is permanent. Network failures and timeouts are transient.
    pub fn class(&self) -> ErrorClass {
        match self {
            AppError::Api { status, code, retry_after, .. } => {
                let retry_after = retry_after.map(|d| d.min(MAX_RETRY_AFTER));
                let transient = ErrorClass::Transient { retry_after };
                if let Some(code) = *code {
                    if is_throttle_code(code) {
                        return ErrorClass::Throttled { retry_after };
                    }
                    if is_temporary(code) {
                        return transient;
                    }
                    if is_auth_or_permission(code) {
                        return ErrorClass::NeedsAttention;
                    }
                }
                match *status {
                    401 | 403 => ErrorClass::NeedsAttention,
                    429 => ErrorClass::Throttled { retry_after },
                    408 => transient,
                    // Not implemented (a SCIM app need not implement PATCH, RFC 7644 3.5.2) and
                    // HTTP version not supported: the same request fails the same way again.
                    501 | 505 => ErrorClass::Permanent,
                    s if s >= 500 => transient,
                    _ => ErrorClass::Permanent,
                }
            }
            AppError::Timeout(_) | AppError::Unreachable(_) => ErrorClass::Transient { retry_after: None },
            AppError::Paused(wait) => ErrorClass::Throttled { retry_after: Some((*wait).min(MAX_RETRY_AFTER)) },
            AppError::Protocol(_) => ErrorClass::Permanent,
            AppError::Misconfigured(_) => ErrorClass::NeedsAttention,
        }
    }

    /// True when the app did not answer (a timeout, a refused connection) or failed on its
    /// side (a 5xx, Graph's temporary codes): the errors that hold an integration's tasks back
    /// once they come in a row ([`crate::breaker`]). A throttle is an answer.
    pub fn app_failing(&self) -> bool {
        matches!(self.class(), ErrorClass::Transient { .. })
    }

    /// The HTTP status the app answered, for the task's events.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            AppError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the error says the object is not there (HTTP 404, or Graph code 100 with
    /// subcode 33): on a removal that means "already removed".
    pub fn is_not_found(&self) -> bool {
        matches!(self, AppError::Api { status: 404, .. } | AppError::Api { code: Some(100), subcode: Some(33), .. })
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (RFC 9110). A date in the
/// past means no wait.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - now;
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn api(status: u16, code: Option<i64>) -> AppError {
        AppError::Api { status, code, subcode: None, message: "x".into(), retry_after: None }
    }

    #[test]
    fn classifies_statuses_and_graph_codes() {
        let transient = ErrorClass::Transient { retry_after: None };
        let throttled = ErrorClass::Throttled { retry_after: None };
        assert_eq!(api(503, None).class(), transient);
        assert_eq!(api(500, Some(2)).class(), transient);
        assert_eq!(api(400, Some(1)).class(), transient);
        assert_eq!(api(400, Some(3919)).class(), transient);
        assert_eq!(api(408, None).class(), transient);
        assert_eq!(api(429, None).class(), throttled);
        for code in [4, 17, 32, 341, 368, 613, 80000, 80004, 80014] {
            assert_eq!(api(400, Some(code)).class(), throttled, "code {code}");
        }
        // The code wins over a status that would say otherwise.
        assert_eq!(api(500, Some(17)).class(), throttled);
        for code in [3, 10, 102, 190, 200, 299, 415] {
            assert_eq!(api(400, Some(code)).class(), ErrorClass::NeedsAttention, "code {code}");
        }
        assert_eq!(api(401, None).class(), ErrorClass::NeedsAttention);
        assert_eq!(api(403, None).class(), ErrorClass::NeedsAttention);
        assert_eq!(api(400, Some(100)).class(), ErrorClass::Permanent);
        assert_eq!(api(400, Some(3914)).class(), ErrorClass::Permanent);
        assert_eq!(api(400, Some(2620)).class(), ErrorClass::Permanent);
        assert_eq!(api(404, None).class(), ErrorClass::Permanent);
        assert_eq!(api(409, None).class(), ErrorClass::Permanent);
        assert_eq!(api(501, None).class(), ErrorClass::Permanent, "not implemented: calling again changes nothing");
        assert_eq!(api(505, None).class(), ErrorClass::Permanent);
        assert_eq!(api(502, None).class(), transient);
        assert_eq!(AppError::Timeout(Duration::from_secs(1)).class(), transient);
        assert_eq!(AppError::Unreachable("refused".into()).class(), transient);
        assert_eq!(AppError::Protocol("garbage".into()).class(), ErrorClass::Permanent);
        assert_eq!(AppError::Misconfigured("no business id".into()).class(), ErrorClass::NeedsAttention);
        assert_eq!(
            AppError::Paused(Duration::from_secs(90)).class(),
            ErrorClass::Throttled { retry_after: Some(Duration::from_secs(90)) }
        );
    }

    #[test]
    fn retry_after_is_kept_and_clamped() {
        let e = AppError::Api {
            status: 429,
            code: Some(4),
            subcode: None,
            message: "x".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(e.class(), ErrorClass::Throttled { retry_after: Some(Duration::from_secs(3)) });
        // Meta's estimate of half an hour is honoured, a day is not.
        let e = AppError::Api {
            status: 400,
            code: Some(80004),
            subcode: None,
            message: "x".into(),
            retry_after: Some(Duration::from_secs(1800)),
        };
        assert_eq!(e.class(), ErrorClass::Throttled { retry_after: Some(Duration::from_secs(1800)) });
        let e = AppError::Api {
            status: 503,
            code: None,
            subcode: None,
            message: "x".into(),
            retry_after: Some(Duration::from_secs(86400)),
        };
        assert_eq!(e.class(), ErrorClass::Transient { retry_after: Some(MAX_RETRY_AFTER) });
    }

    #[test]
    fn not_found_means_already_removed() {
        assert!(api(404, None).is_not_found());
        let gone =
            AppError::Api { status: 400, code: Some(100), subcode: Some(33), message: "x".into(), retry_after: None };
        assert!(gone.is_not_found());
        assert!(!api(400, Some(100)).is_not_found());
        assert!(!api(403, None).is_not_found());
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let now = chrono::Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).single().expect("valid date");
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn messages_name_the_codes() {
        let e = AppError::Api {
            status: 400,
            code: Some(100),
            subcode: Some(33),
            message: "gone".into(),
            retry_after: None,
        };
        assert_eq!(e.to_string(), "HTTP 400 (code 100, subcode 33): gone");
    }
}
