//! Keeping connectors to the public internet when the operator asks (`UNSEAT_CONNECTOR_PUBLIC_ONLY`).
//!
//! A tenant admin chooses each integration's `base_url`, and the connector calls it and keeps
//! part of the answer as the task's `last_error`. Where tenants are not trusted with the network
//! unseat runs in, that would let one reach the cloud's metadata service, the database or
//! unseat's own ports. With the setting on, every address an app's name resolves to, an address
//! written in the URL itself, and the target of every redirect must be public: not loopback,
//! private (RFC 1918, IPv6 unique-local), link-local, shared (100.64.0.0/10), unspecified,
//! multicast or broadcast, nor such an address mapped into IPv6.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether `ip` is an address of the public internet (see the module's list of the others).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || shared
        || a == 0)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || unique_local || link_local)
}

/// An app address the setting refuses; found in a request error's sources, it makes the task a
/// misconfiguration instead of a network failure to retry.
#[derive(Debug)]
pub struct NotPublic(pub String);

impl fmt::Display for NotPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a public address, and UNSEAT_CONNECTOR_PUBLIC_ONLY is on", self.0)
    }
}

impl std::error::Error for NotPublic {}

/// The resolver of a public-only client: the system's answer with every address that is not
/// public dropped, or [`NotPublic`] when none is left.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(NotPublic(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// [`NotPublic`] for a URL whose host is an address (no name to resolve) that is not public.
pub fn check_literal(url: &reqwest::Url) -> Result<(), NotPublic> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(NotPublic(ip.to_string()))
    }
}

/// The redirect policy of a public-only client: reqwest's default (at most 10), refusing a
/// redirect to an address that is not public (a name goes through [`PublicOnly`]).
pub fn redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error("too many redirects");
        }
        match check_literal(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_url_naming_an_address_is_checked_without_resolving() {
        let check = |u: &str| check_literal(&reqwest::Url::parse(u).unwrap()).is_ok();
        assert!(!check("http://127.0.0.1:8081/hub"));
        assert!(!check("http://[::1]/"));
        assert!(!check("http://169.254.169.254/latest/meta-data"));
        assert!(check("https://93.184.216.34/"));
        assert!(check("https://graph.facebook.com/"), "names are left to the resolver");
    }
}
