//! The few pieces every page is built from: escaping, the page shell, status badges, times and
//! links that keep the current filters. Pages are plain `format!` over escaped values; every
//! value that came from a user, an IdP or an app goes through [`esc`] (or [`attr`]) first.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::fmt::Write;

/// Escapes text for an HTML element body or a double-quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Same as [`esc`]; named for readability where the value lands in an attribute.
pub fn attr(s: &str) -> String {
    esc(s)
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// A query string from (name, value) pairs, skipping empty values; "" when none remain.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> =
        pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", enc(v))).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A point in time: UTC in the text (readable without script) and on hover; the page script
/// rewrites the text into the viewer's zone and keeps the UTC instant in the title.
pub fn time(t: DateTime<Utc>) -> String {
    let utc = t.format("%Y-%m-%d %H:%M:%S UTC");
    format!(r#"<time datetime="{}" title="{utc}">{utc}</time>"#, t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

pub fn time_opt(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".to_string(), time)
}

/// A duration in words an admin reads at a glance: "850 ms", "4.2 s", "3 min 5 s".
pub fn duration(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let ms = (to - from).num_milliseconds().max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// A status as text and colour (never colour alone). A dead-lettered failure says so.
pub fn status(status: &str, dead_lettered: bool) -> String {
    let label = match status {
        "failed" if dead_lettered => "failed · dead-lettered".to_string(),
        "dead_lettered" => "dead-lettered".to_string(),
        s => s.to_string(),
    };
    format!(r#"<span class="status s-{}">{}</span>"#, attr(status), esc(&label))
}

/// The page shell: title, navigation, the live-update hook (`live`: the SSE URL, if the page
/// updates itself), and the body.
pub struct Shell<'a> {
    pub title: &'a str,
    /// (label, href) of the navigation, first is the product's home for this tenant.
    pub nav: Vec<(String, String)>,
    pub live: Option<String>,
    pub csrf: Option<&'a str>,
}

impl Shell<'_> {
    pub fn render(&self, body: &str) -> String {
        let mut nav = String::new();
        for (label, href) in &self.nav {
            let _ = write!(nav, r#"<a href="{}">{}</a>"#, attr(href), esc(label));
        }
        let sign_out = self.csrf.map_or_else(String::new, |csrf| {
            format!(
                r#"<form method="post" action="/console/sign-out" class="sign-out"><input type="hidden" name="csrf" value="{}"><button type="submit">Sign out</button></form>"#,
                attr(csrf)
            )
        });
        let live = self.live.as_deref().map_or_else(String::new, |url| format!(r#" data-live="{}""#, attr(url)));
        let indicator = if self.live.is_some() {
            r#"<span id="live-state" class="live-state" role="status" aria-live="polite">Live updates need JavaScript; reload to refresh.</span>"#
        } else {
            ""
        };
        format!(
            r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · unseat</title>
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script>
</head>
<body{live}>
<header class="top"><strong class="brand">unseat</strong><nav>{nav}</nav>{indicator}{sign_out}</header>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
            title = esc(self.title),
        )
    }
}

/// A complete page response.
pub fn page(status: StatusCode, html: String) -> Response {
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    headers.insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
    response
}

/// A page that explains a refusal or a mistake and says what to do next.
pub fn problem(status: StatusCode, title: &str, message: &str, next: &str) -> Response {
    let shell = Shell { title, nav: vec![("Sign in".into(), "/console/sign-in".into())], live: None, csrf: None };
    page(status, shell.render(&format!(r#"<p class="problem">{}</p><p>{next}</p>"#, esc(message))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc(r#"<script>"x"&'y'</script>"#), "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;");
        assert_eq!(enc("a b&c=ü"), "a%20b%26c%3D%C3%BC");
        assert_eq!(query(&[("status", "failed"), ("user", ""), ("q", "a b")]), "?status=failed&q=a%20b");
        assert_eq!(query(&[("user", "")]), "");
    }

    #[test]
    fn durations_read_naturally() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(duration(t, t + chrono::Duration::milliseconds(850)), "850 ms");
        assert_eq!(duration(t, t + chrono::Duration::milliseconds(4200)), "4.2 s");
        assert_eq!(duration(t, t + chrono::Duration::seconds(185)), "3 min 5 s");
        assert_eq!(duration(t, t - chrono::Duration::seconds(5)), "0 ms");
    }

    #[test]
    fn status_has_text_not_only_colour() {
        assert_eq!(status("failed", true), r#"<span class="status s-failed">failed · dead-lettered</span>"#);
        assert!(status("succeeded", false).contains(">succeeded<"));
    }
}
