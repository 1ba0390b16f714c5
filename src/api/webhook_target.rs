//! Where a webhook may be sent. A client names the URL, and the server makes the request, so an
//! unchecked URL would let anyone reach what only this machine can (its loopback, the private
//! network, a cloud metadata service): SSRF. Only http(s) URLs to public addresses are
//! accepted, unless the operator allow-lists a host. The URL and any literal address are
//! checked at submit; the addresses a name resolves to are checked again at every delivery
//! (`webhooks`), which connects only to the address it checked and follows no redirects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use super::{ApiError, ErrorKind};

/// Longest webhook URL accepted.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;

/// The hosts a webhook may reach beyond the public internet (`webhook_allow_hosts`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WebhookTargets {
    /// Host names or literal addresses, lowercase, IPv6 without brackets.
    allow_hosts: Vec<String>,
}

impl WebhookTargets {
    pub fn new<S: AsRef<str>>(allow_hosts: &[S]) -> Self {
        let allow_hosts = allow_hosts.iter().map(|h| canonical_host(h.as_ref())).filter(|h| !h.is_empty()).collect();
        Self { allow_hosts }
    }

    /// Whether the operator allow-listed this host (a name, or an address in any notation).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = canonical_host(host);
        self.allow_hosts.iter().any(|allowed| *allowed == host)
    }

    /// Parses and checks a webhook URL a client gave: http or https, no credentials, a host,
    /// and no literal address in a refused range. Names are resolved (and checked) only when
    /// the webhook is sent.
    pub fn check_url(&self, raw: &str) -> Result<Url, ApiError> {
        let raw = raw.trim();
        if raw.len() > MAX_WEBHOOK_URL_LEN {
            return Err(refused(format!("is {} characters long; the limit is {MAX_WEBHOOK_URL_LEN}.", raw.len())));
        }
        let mut url = Url::parse(raw).map_err(|e| refused(format!("is not a valid URL ({e}).")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused(format!("must be an http or https URL, not {}:.", url.scheme())));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused("must not carry a user name or password; check the webhook-signature header instead.".into()));
        }
        url.set_fragment(None);
        let host = url.host().ok_or_else(|| refused("has no host.".into()))?;
        let host_text = host.to_string();
        if self.allows_host(&host_text) {
            return Ok(url);
        }
        let refusal = match host {
            Host::Ipv4(ip) => refused_range(IpAddr::V4(ip)),
            Host::Ipv6(ip) => refused_range(IpAddr::V6(ip)),
            Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                (name == "localhost" || name.ends_with(".localhost")).then_some("loopback")
            }
        };
        match refusal {
            Some(range) => Err(refused(format!("points at a {range} address ({host_text}); webhooks go to public hosts only."))),
            None => Ok(url),
        }
    }

    /// Checks the addresses `host` resolved to, before connecting: every one must be public
    /// unless the host is allow-listed (a name that mixes public and private answers is
    /// refused: a rebinding trick).
    pub fn check_addresses(&self, host: &str, addresses: &[IpAddr]) -> Result<(), String> {
        if self.allows_host(host) {
            return Ok(());
        }
        for ip in addresses.iter().filter(|ip| !self.allows_host(&ip.to_string())) {
            if let Some(range) = refused_range(*ip) {
                return Err(format!("{host} resolves to a {range} address ({ip}); webhooks go to public hosts only"));
            }
        }
        Ok(())
    }
}

/// A host as compared with the allow-list: lowercase, no brackets or final dot, an address in
/// its canonical notation (`0:0:0:0:0:0:0:1` is `::1`).
fn canonical_host(host: &str) -> String {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host,
    }
}

fn refused(why: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidParams, format!("The webhook URL {why}"))
}

/// The kind of non-public range `ip` is in, or `None` for a public (globally routable) address.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "private",
        // 169.254.169.254 (AWS, GCP, Azure metadata) sits here.
        (169, 254, _) => "link-local or metadata",
        // Carrier-grade NAT; 100.100.100.200 (Alibaba metadata) sits here.
        (100, 64..=127, _) => "shared (CGNAT) or metadata",
        (192, 0, 0) => "IETF protocol (metadata)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // Forms that carry an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    let s = ip.segments();
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        // The local-use NAT64 prefix (64:ff9b:1::/48) leads into a private network.
        return Some("private (local NAT64)");
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64: 64:ff9b::a.b.c.d reaches a.b.c.d.
        let [.., hi, lo] = s;
        return refused_v4(Ipv4Addr::from(((hi as u32) << 16) | lo as u32));
    }
    if s[0] == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48 reaches AA.BB.CC.DD.
        return refused_v4(Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32));
    }
    Some(match s[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        // IPv4-compatible (deprecated) and other ::/8 forms.
        0 => "reserved",
        // fd00:ec2::254 (AWS metadata over IPv6) sits in the unique-local range.
        0xfc00..=0xfdff => "private (unique local) or metadata",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x0100 if s[1..4] == [0, 0, 0] => "discard",
        0x2001 if (0x10..=0x2f).contains(&s[1]) => "ORCHID",
        // Teredo tunnels to addresses we cannot see.
        0x2001 if s[1] == 0 => "Teredo",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_loopback_link_local_cgnat_and_metadata_ranges_are_refused() {
        for (addr, range) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local or metadata"),
            ("100.64.0.1", "shared (CGNAT) or metadata"),
            ("100.100.100.200", "shared (CGNAT) or metadata"),
            ("192.0.0.192", "IETF protocol (metadata)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved or broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local or metadata"),
            ("64:ff9b::10.0.0.1", "private"),
            ("2002:c0a8:0101::1", "private"),
            ("fd00:ec2::254", "private (unique local) or metadata"),
            ("fc00::1", "private (unique local) or metadata"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("64:ff9b:1::a00:1", "private (local NAT64)"),
            ("100::1", "discard"),
        ] {
            assert_eq!(refused_range(ip(addr)), Some(range), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::1.1.1.1"] {
            assert_eq!(refused_range(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn urls_are_checked_before_anything_is_stored() {
        let targets = WebhookTargets::default();
        assert_eq!(targets.check_url(" https://hooks.example.com/easel#x ").unwrap().as_str(), "https://hooks.example.com/easel");
        assert!(targets.check_url("http://93.184.216.34:8080/hook").is_ok());
        for (url, says) in [
            ("ftp://example.com/", "http or https"),
            ("file:///etc/passwd", "http or https"),
            ("not a url", "not a valid URL"),
            ("https://user:pw@example.com/", "user name or password"),
            ("http://127.0.0.1:3000/", "loopback"),
            ("http://localhost/", "loopback"),
            ("http://api.LOCALHOST./", "loopback"),
            ("http://[::1]/", "loopback"),
            ("http://169.254.169.254/latest/meta-data/", "metadata"),
            ("http://10.0.0.5/", "private"),
            ("http://0x7f000001/", "loopback"),
            ("http://2130706433/", "loopback"),
            ("http://[::ffff:10.0.0.1]/", "private"),
        ] {
            let error = targets.check_url(url).unwrap_err();
            assert_eq!(error.kind, ErrorKind::InvalidParams, "{url}");
            assert!(error.message.contains(says), "{url}: {}", error.message);
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_WEBHOOK_URL_LEN));
        assert!(targets.check_url(&long).unwrap_err().message.contains("limit"));
    }

    #[test]
    fn allow_listed_hosts_may_be_private() {
        let targets = WebhookTargets::new(&["127.0.0.1", "[0:0:0:0:0:0:0:1]", "Hooks.Internal"]);
        assert!(targets.check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(targets.check_url("http://[::1]:9/hook").is_ok());
        assert!(targets.check_url("http://127.0.0.2/").is_err(), "only the listed address");
        assert!(targets.check_addresses("hooks.internal", &[ip("10.0.0.8")]).is_ok());
        assert!(targets.check_addresses("other.internal", &[ip("10.0.0.8")]).unwrap_err().contains("private"));
        // A name whose answers mix public and private addresses is refused.
        let mixed = targets.check_addresses("rebind.example", &[ip("93.184.216.34"), ip("127.0.0.9")]);
        assert!(targets.check_addresses("any.example", &[ip("127.0.0.1")]).is_ok(), "an allow-listed address, by any name");
        assert!(mixed.unwrap_err().contains("loopback"));
        assert!(targets.check_addresses("example.com", &[ip("93.184.216.34")]).is_ok());
    }
}
