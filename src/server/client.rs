//! Who is asking: the client IP (the socket peer, or `X-Forwarded-For` when — and only when —
//! the peer is a trusted proxy) and the visitor cookie that keeps a browser's history.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use ipnet::IpNet;

use crate::jobs::Client;

pub const VISITOR_COOKIE: &str = "easel_visitor";

/// The client's address. Walks `X-Forwarded-For` from the right (the hop nearest to us) while
/// the hops are trusted proxies; the first untrusted hop is the client. A peer that is not a
/// trusted proxy is the client, whatever headers it sends.
pub fn client_ip(peer: IpAddr, forwarded_for: &str, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    let peer = peer.to_canonical();
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.rsplit(',').map(str::trim).filter(|h| !h.is_empty()) {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A malformed hop: stop at the last address we could trust.
            None => break,
        }
    }
    client
}

/// The key a client is counted under (rate limits, busy checks, fair share). An IPv6 user
/// usually holds a whole /64 and can pick any address in it, so IPv6 clients are keyed by
/// their first `ipv6_prefix` bits; IPv4 addresses stand alone.
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, ipv6_prefix.min(128)).map(|net| IpAddr::V6(net.trunc().addr())).unwrap_or(ip),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` hop: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip().to_canonical())
}

/// Every `X-Forwarded-For` line in order, as one list: a proxy may add its own line rather
/// than append to the client's, and the client's line must not be the only one read.
fn forwarded_for(headers: &HeaderMap) -> String {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
}

/// How clients are told apart.
#[derive(Clone, Debug)]
pub struct Identify {
    pub trusted: Vec<IpNet>,
    pub ipv6_prefix: u8,
}

/// Whether the visitor reached us over https: the request's own scheme, or a trusted proxy's
/// `X-Forwarded-Proto` (anyone else's is ignored).
fn over_https(req: &Request, peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    req.uri().scheme_str() == Some("https")
        || (trusted.iter().any(|net| net.contains(&peer))
            && req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| {
                // The hop nearest to us is the last one.
                v.rsplit(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
            }))
}

/// Middleware for the page's server functions: a browser's cross-site request is refused
/// (`Sec-Fetch-Site: cross-site`, or an `Origin` that is not this site), so another site cannot
/// make a visitor's browser submit or cancel with the visitor's cookie. Clients without those
/// headers (scripts) are not browsers and carry no cookie of the visitor's.
pub async fn same_site_only(req: Request, next: Next) -> Response {
    if is_cross_site(req.headers()) {
        return crate::api::ApiError::new(crate::api::ErrorKind::Forbidden, "Requests from other sites are refused.").into_response();
    }
    next.run(req).await
}

fn is_cross_site(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let cross_site = header("sec-fetch-site") == Some("cross-site");
    let foreign_origin = header("origin").is_some_and(|origin| {
        let origin_host = url::Url::parse(origin).ok().and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
        // A proxy may pass the site's own host along in X-Forwarded-Host; a cross-site form
        // cannot set that header (it would need CORS).
        !origin_host.is_some_and(|o| [header("host"), header("x-forwarded-host")].into_iter().flatten().any(|h| h.eq_ignore_ascii_case(&o)))
    });
    cross_site || foreign_origin
}

/// Middleware: resolves the client, puts it in the request's extensions (for handlers, server
/// functions and the rate limiter) and gives a new browser its visitor cookie (never on an
/// image: those are `public, immutable`, and a cache must be able to keep them).
pub async fn identify(
    State(identify): State<Arc<Identify>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = client_key(client_ip(peer.ip(), &forwarded_for(req.headers()), &identify.trusted), identify.ipv6_prefix);
    let secure = over_https(&req, peer.ip(), &identify.trusted);
    let cacheable = req.uri().path().starts_with("/api/images/");
    let existing = req
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == VISITOR_COOKIE && uuid::Uuid::parse_str(c.value()).is_ok())
        .map(|c| c.value().to_string());
    let (visitor, is_new) = match existing {
        Some(v) => (v, false),
        None => (uuid::Uuid::new_v4().to_string(), true),
    };
    req.extensions_mut().insert(Client { ip, visitor: Some(visitor.clone()), new_visitor: is_new });
    let mut response = next.run(req).await;
    if is_new && !cacheable {
        let cookie = Cookie::build((VISITOR_COOKIE, visitor))
            .path("/")
            .http_only(true)
            .secure(secure)
            .same_site(SameSite::Lax)
            .max_age(cookie::time::Duration::days(365))
            .build();
        if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_cannot_claim_another_address() {
        assert_eq!(client_ip(ip("203.0.113.9"), "1.2.3.4", &[]), ip("203.0.113.9"));
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_ip(ip("203.0.113.9"), "1.2.3.4", &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_proxy_forwards_the_nearest_untrusted_hop() {
        let trusted = ["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()];
        // The leftmost entry is whatever the client typed; the rightmost untrusted is real.
        assert_eq!(client_ip(ip("127.0.0.1"), "6.6.6.6, 198.51.100.7, 10.1.2.3", &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("127.0.0.1"), "", &trusted), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), "junk, 198.51.100.7", &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("10.0.0.1"), "198.51.100.7, junk", &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), "198.51.100.7:5678", &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("127.0.0.1"), "[2001:db8::1]:443", &trusted), ip("2001:db8::1"));
        assert_eq!(client_ip(ip("::ffff:203.0.113.9"), "1.2.3.4", &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix() {
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1"), 64), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64), ip("2001:db8:1:2::"));
        assert_ne!(client_key(ip("2001:db8:1:3::1"), 64), client_key(ip("2001:db8:1:2::1"), 64));
        assert_eq!(client_key(ip("2001:db8:1:2::1"), 128), ip("2001:db8:1:2::1"));
        assert_eq!(client_key(ip("2001:db8:1:2::1"), 48), ip("2001:db8:1::"));
        assert_eq!(client_key(ip("198.51.100.7"), 64), ip("198.51.100.7"));
    }

    #[test]
    fn every_forwarded_for_line_counts() {
        // The client sent a line of its own; the trusted proxy added the real address after it.
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        headers.append("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        assert_eq!(client_ip(ip("127.0.0.1"), &forwarded_for(&headers), &trusted), ip("198.51.100.7"));
    }
}
