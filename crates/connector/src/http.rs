//! The HTTP client every adapter shares: one connection pool, a per-request timeout, the
//! integration's rate limit taken before every request, and transport errors turned into
//! [`AppError`]s without the request URL (which may carry a token).

use crate::error::{parse_retry_after, AppError};
use crate::limit::RateLimits;
use crate::public;
use crate::retry::{business_use_case_wait, usage_percent};
use reqwest::header::HeaderMap;
use std::sync::Arc;
use std::time::Duration;
use unseat_store::apply::Integration;

/// Longest error message kept from an app's body.
const MAX_MESSAGE: usize = 300;
/// The largest answer read from an app: a user, a page of a list or an error is a few
/// kilobytes; an answer beyond this is not what was asked for, and is not read into memory.
pub const MAX_BODY: usize = 1 << 20;
/// The integration setting that overrides the app kind's default rate limit.
pub const RATE_LIMIT_SETTING: &str = "rate_limit_per_second";

/// What the app answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The highest share of its budget the app reports used, in percent (Meta's usage
    /// headers), if it says.
    pub fn usage(&self) -> Option<f64> {
        let header = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok());
        usage_percent(header("x-app-usage"), header("x-business-use-case-usage"), header("x-ad-account-usage"))
    }

    /// The wait the app asked for: `Retry-After` (seconds or an HTTP date) or Meta's
    /// `X-Business-Use-Case-Usage` estimate, whichever is longer.
    pub fn retry_after(&self) -> Option<Duration> {
        let header = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok());
        let retry_after = header("retry-after").and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let usage = header("x-business-use-case-usage").and_then(business_use_case_wait);
        match (retry_after, usage) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The shared client. Cheap to clone.
#[derive(Clone)]
pub struct AppHttp {
    client: reqwest::Client,
    /// For every request but a read: it follows no redirect. A redirect would turn a PATCH or
    /// DELETE into a GET (303, and 301/302 for POST) whose success says nothing of the write.
    writes: reqwest::Client,
    timeout: Duration,
    limits: Arc<RateLimits>,
    default_rate: f64,
    public_only: bool,
}

impl AppHttp {
    /// A rustls client with a per-request `timeout`, taking request slots from `limits`
    /// (`default_rate` requests/s unless the integration sets `rate_limit_per_second`).
    pub fn new(timeout: Duration, limits: Arc<RateLimits>, default_rate: f64) -> Result<Self, reqwest::Error> {
        Self::with_reach(timeout, limits, default_rate, false)
    }

    /// [`AppHttp::new`], and with `public_only` a client that calls no address but the public
    /// internet's (see [`crate::public`]).
    pub fn with_reach(
        timeout: Duration,
        limits: Arc<RateLimits>,
        default_rate: f64,
        public_only: bool,
    ) -> Result<Self, reqwest::Error> {
        let builder = || {
            let builder = reqwest::Client::builder()
                .use_rustls_tls()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(5)))
                .user_agent(concat!("unseat/", env!("CARGO_PKG_VERSION")));
            if public_only {
                builder.dns_resolver(Arc::new(public::PublicOnly))
            } else {
                builder
            }
        };
        let client = if public_only { builder().redirect(public::redirects()) } else { builder() }.build()?;
        let writes = builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self { client, writes, timeout, limits, default_rate, public_only })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn limits(&self) -> &Arc<RateLimits> {
        &self.limits
    }

    /// The integration's rate limit in requests per second: its `rate_limit_per_second`
    /// setting when that is a positive number (within the bounds the console checks, for a
    /// value stored before it did), else the app kind's default.
    pub fn rate_for(&self, integration: &Integration) -> f64 {
        integration
            .settings
            .get(RATE_LIMIT_SETTING)
            .and_then(serde_json::Value::as_f64)
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| r.clamp(unseat_domain::MIN_APP_RATE, unseat_domain::MAX_APP_RATE))
            .unwrap_or(self.default_rate)
    }

    /// Sends a request once its rate-limit slot comes, and reads the whole answer. A 429 lowers
    /// the integration's rate.
    pub async fn send(&self, integration: &Integration, request: reqwest::RequestBuilder) -> Result<Answer, AppError> {
        let request = request.build().map_err(|e| self.transport(e))?;
        if self.public_only {
            // An address in the URL is not resolved, so the resolver cannot refuse it.
            public::check_literal(request.url()).map_err(|e| AppError::Misconfigured(e.to_string()))?;
        }
        let rate = self.rate_for(integration);
        self.limits.acquire(integration.tenant_id, integration.id, rate).await.map_err(AppError::Paused)?;
        let method = request.method().clone();
        let read = method == reqwest::Method::GET || method == reqwest::Method::HEAD;
        let client = if read { &self.client } else { &self.writes };
        let mut response = client.execute(request).await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        if !read && response.status().is_redirection() {
            let to = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
            let to = truncate(to.split('?').next().unwrap_or_default().to_string());
            return Err(AppError::Misconfigured(format!(
                "the app answered a {method} with a redirect (HTTP {status} to {to:?}), so nothing was changed: \
                 base_url is likely not the app's API address (redirects are followed for reads only)"
            )));
        }
        let too_big = || {
            AppError::Protocol(format!(
                "HTTP {status} with an answer larger than {} KiB; not read (an answer that big is not the one \
                 asked for)",
                MAX_BODY / 1024
            ))
        };
        if response.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_big());
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        let answer = Answer { status, headers, body };
        if status == 429 {
            self.throttled(integration, &answer).await;
        } else if let Some(percent) = answer.usage().filter(|p| answer.is_success() && *p >= crate::limit::NEARLY_USED)
        {
            // Near the budget, slow down before the app throttles (an error answer that is a
            // throttle lowers the rate through the adapter).
            self.limits.nearly_used(integration.tenant_id, integration.id, rate, percent).await;
        }
        Ok(answer)
    }

    /// Tells the limiter the app throttled this integration (for apps that say so in the body,
    /// as Graph does), with the wait `answer` names: the integration's requests pause until it
    /// has passed.
    pub async fn throttled(&self, integration: &Integration, answer: &Answer) {
        let pause = answer.retry_after().map(|d| d.min(crate::error::MAX_RETRY_AFTER));
        self.limits.throttled(integration.tenant_id, integration.id, self.rate_for(integration), pause).await;
    }

    fn transport(&self, error: reqwest::Error) -> AppError {
        if error.is_timeout() {
            return AppError::Timeout(self.timeout);
        }
        // Never let the URL (and any token in it) into a message.
        let error = error.without_url();
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            // Refused by the public-only setting: calling again changes nothing.
            if let Some(refused) = cause.downcast_ref::<public::NotPublic>() {
                return AppError::Misconfigured(refused.to_string());
            }
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        AppError::Unreachable(truncate(message))
    }
}

/// Cuts an app's message to a readable length on a character boundary.
pub fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
