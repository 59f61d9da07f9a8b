//! Network addresses for duet's servers: the client's address through trusted proxies, and
//! strict CIDR parsing ([`parse_cidr`], [`unmap`]).
//!
//! # The client's address, through trusted proxies
//!
//! A server needs the address of the client, not of the load balancer in front of it.
//! Proxies say whom they forward for in `Forwarded` (RFC 7239) or `X-Forwarded-For`, but anyone
//! can send those headers, so they are believed only from the networks the operator lists
//! ([`TrustedProxies`]), and only as far as the chain of trusted proxies goes: walking the chain
//! from the right (the hop nearest to us), trusted addresses are skipped, and the first address
//! that is not trusted is the client. Whatever is left of it could have been written by the
//! client itself.
//!
//! Guarantees: a peer that is not trusted gets its own address, whatever it sends; a forged entry
//! left of the real client changes nothing; an entry that is not an address (`unknown`, an
//! obfuscated `_hidden`, garbage) ends the walk at the last trusted hop, because nothing to its
//! left can be verified. The work is bounded ([`MAX_HOPS`], [`MAX_HEADER_VALUE`]) and any bytes,
//! UTF-8 or not, are handled without panicking. IPv4-mapped IPv6 addresses are IPv4 throughout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{HeaderMap, FORWARDED};
use ipnet::IpNet;

mod cidr;

pub use cidr::{echoed, parse_cidr, unmap, CidrError};

/// The legacy header; `http` has no constant for it.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// At most this many hops are examined, from the right. A real deployment has a handful of
/// proxies (CDN, load balancer, ingress); 32 leaves room for any of them while a client cannot
/// make a server walk thousands of forged entries.
pub const MAX_HOPS: usize = 32;

/// A header line longer than this is not a proxy chain anyone configured: 8 KiB is what common
/// proxies accept for one header line (nginx's `large_client_header_buffers`, Apache's
/// `LimitRequestFieldSize`). It is not parsed, and the answer is the peer.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;

/// Networks whose X-Forwarded-For / Forwarded headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// IPv4-mapped IPv6 networks are stored as the IPv4 networks they cover.
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts `nets`, with host bits cleared and IPv4-mapped IPv6 networks as IPv4 ([`unmap`]).
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets: nets.into_iter().map(|n| unmap(n.trunc())).collect() }
    }

    /// Parses a comma- or whitespace-separated list of CIDRs or bare addresses (a bare address
    /// means /32 or /128). Errors name the bad entry; a CIDR is checked by [`parse_cidr`] (host
    /// bits must be clear).
    pub fn parse_list(s: &str) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for entry in s.split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty()) {
            let net = if entry.contains('/') {
                parse_cidr(entry).map_err(|e| e.to_string())?
            } else {
                let ip: IpAddr =
                    entry.parse().map_err(|_| format!("`{entry}` is not an IP address or a CIDR network"))?;
                IpNet::from(ip.to_canonical())
            };
            nets.push(net);
        }
        Ok(TrustedProxies::new(nets))
    }

    /// True if no network is trusted: every peer is then the client.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// True if `ip` is in a trusted network (an IPv4-mapped IPv6 address is its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The trusted networks, normalized as by [`TrustedProxies::new`].
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

/// The client's address: the socket peer, unless the peer is a trusted proxy; then the
/// rightmost address in the forwarding chain that is not a trusted proxy (walking from the
/// right). The chain is the `Forwarded` header if the request has one, else `X-Forwarded-For`
/// (all lines of the header, in order). See the module documentation for the rules.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let forwarded = headers.get_all(FORWARDED);
    let (lines, format) = if forwarded.iter().next().is_some() {
        (forwarded, Format::Forwarded)
    } else {
        (headers.get_all(X_FORWARDED_FOR), Format::XForwardedFor)
    };
    // Not "absent": the proxy's own entry is at the right end of what would be ignored, and
    // falling back to the other header would read one the client wrote.
    if lines.iter().any(|v| v.len() > MAX_HEADER_VALUE) {
        return peer;
    }
    let mut walk = Walk { trusted, last_trusted: peer, hops: 0 };
    let mut elements = Vec::new();
    for line in lines.iter().rev() {
        elements.clear();
        elements.extend(split_list(line.as_bytes(), b',').filter(|e| !e.is_empty()));
        for element in elements.iter().rev() {
            let hop = match format {
                Format::Forwarded => forwarded_for(element),
                Format::XForwardedFor => parse_node(element),
            };
            if let Some(end) = walk.step(hop) {
                return end;
            }
        }
    }
    walk.last_trusted
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Forwarded,
    XForwardedFor,
}

/// The walk from the right through the chain.
struct Walk<'a> {
    trusted: &'a TrustedProxies,
    /// The answer if the walk ends now: the peer, then each trusted hop passed.
    last_trusted: IpAddr,
    hops: usize,
}

impl Walk<'_> {
    /// Takes the next hop (`None`: not an address); answers the client if the walk ends here.
    fn step(&mut self, hop: Option<IpAddr>) -> Option<IpAddr> {
        if self.hops == MAX_HOPS {
            return Some(self.last_trusted);
        }
        self.hops += 1;
        let Some(ip) = hop.map(|ip| ip.to_canonical()) else {
            return Some(self.last_trusted);
        };
        if !self.trusted.contains(ip) {
            return Some(ip);
        }
        self.last_trusted = ip;
        None
    }
}

/// Splits a header list on `sep` outside quoted strings (RFC 9110 lists, RFC 7239 elements and
/// pairs), trimming whitespace around each piece. A quote that is never closed runs to the
/// end of the input.
fn split_list(input: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(input);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        let mut escaped = false;
        let mut end = s.len();
        for (i, &b) in s.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == sep && !quoted {
                end = i;
                break;
            }
        }
        rest = s.get(end + 1..);
        Some(s[..end].trim_ascii())
    })
}

/// The `for=` parameter of a `Forwarded` element (`for=192.0.2.1;proto=https`). `None` if the
/// element has none, has it twice, or it is not an address.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_list(element, b';') {
        let Some(eq) = pair.iter().position(|&b| b == b'=') else { continue };
        if pair[..eq].trim_ascii().eq_ignore_ascii_case(b"for") {
            if found.is_some() {
                return None;
            }
            found = Some(pair[eq + 1..].trim_ascii());
        }
    }
    let value = found?;
    match value {
        [b'"', inner @ .., b'"'] => unquote(inner, parse_node),
        _ => parse_node(value),
    }
}

/// The longest quoted node worth reading: the longest address with a port,
/// `[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535`, is 53 bytes.
const MAX_QUOTED_NODE: usize = 64;

/// The content of a quoted string (without its quotes), backslash escapes resolved, given to `f`.
fn unquote(inner: &[u8], f: impl FnOnce(&[u8]) -> Option<IpAddr>) -> Option<IpAddr> {
    if !inner.contains(&b'\\') {
        return f(inner);
    }
    let mut buf = [0u8; MAX_QUOTED_NODE];
    let mut len = 0;
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        let b = if b == b'\\' { *bytes.next()? } else { b };
        *buf.get_mut(len)? = b;
        len += 1;
    }
    f(&buf[..len])
}

/// A node: `192.0.2.1`, `192.0.2.1:8080`, `[2001:db8::1]`, `[2001:db8::1]:4711` or a bare
/// `2001:db8::1`. `None` for anything else, including `unknown` and obfuscated `_names`.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let node = std::str::from_utf8(node).ok()?;
    if let Some(rest) = node.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    match node.split_once(':') {
        Some((addr, port)) if !port.contains(':') => {
            if !is_port(port) {
                return None;
            }
            addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        }
        Some(_) => node.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => node.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// A port (0 to 65535, at most 5 digits) or an RFC 7239 obfuscated port (`_` followed by
/// letters, digits, `.`, `_` and `-`).
fn is_port(port: &str) -> bool {
    let b = port.as_bytes();
    match b {
        [b'_', rest @ ..] => {
            !rest.is_empty() && rest.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        }
        _ => (1..=5).contains(&b.len()) && b.iter().all(u8::is_ascii_digit) && port.parse::<u16>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const PEER: &str = "10.0.0.1"; // the load balancer, trusted

    fn trusted() -> TrustedProxies {
        TrustedProxies::parse_list("10.0.0.0/8, 192.0.2.1 2001:db8:ffff::/48").unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    /// The client as seen from a trusted peer with these headers.
    fn via(lines: &[(&str, &str)]) -> IpAddr {
        client_ip(ip(PEER), &headers(lines), &trusted())
    }

    fn xff(value: &str) -> IpAddr {
        via(&[("x-forwarded-for", value)])
    }

    fn fwd(value: &str) -> IpAddr {
        via(&[("forwarded", value)])
    }

    #[test]
    fn parse_list_accepts_cidrs_and_addresses() {
        let t =
            TrustedProxies::parse_list(" 10.0.0.0/8,192.0.2.1\n2001:DB8::/32\t::ffff:172.16.0.0/108,, ::1 ").unwrap();
        let want: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "172.16.0.0/12", "::1/128"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(t.nets(), want.as_slice());
        assert!(!t.is_empty());
        assert!(TrustedProxies::parse_list("").unwrap().is_empty());
        assert!(TrustedProxies::parse_list(" , ").unwrap().is_empty());
        assert_eq!(TrustedProxies::parse_list("::ffff:10.1.2.3").unwrap().nets(), &["10.1.2.3/32".parse().unwrap()]);
    }

    #[test]
    fn parse_list_errors_name_the_entry() {
        let err = |s: &str| TrustedProxies::parse_list(s).unwrap_err();
        assert_eq!(err("10.0.0.1, banana"), "`banana` is not an IP address or a CIDR network");
        assert!(err("10.0.0.0/33").contains("`10.0.0.0/33`"), "{}", err("10.0.0.0/33"));
        assert!(err("10.1.2.3/8").contains("did you mean 10.0.0.0/8?"));
        assert!(err("1.2.3/24").contains("`1.2.3/24`"));
    }

    #[test]
    fn new_normalizes_mapped_and_host_bits() {
        let t = TrustedProxies::new(vec!["::ffff:10.1.2.3/104".parse().unwrap(), "192.0.2.77/24".parse().unwrap()]);
        assert_eq!(t.nets(), &["10.0.0.0/8".parse::<IpNet>().unwrap(), "192.0.2.0/24".parse().unwrap()]);
    }

    #[test]
    fn contains_treats_mapped_addresses_as_ipv4() {
        let t = trusted();
        assert!(t.contains(ip("10.9.8.7")));
        assert!(t.contains(ip("::ffff:10.9.8.7")));
        assert!(t.contains(ip("192.0.2.1")));
        assert!(!t.contains(ip("192.0.2.2")));
        assert!(t.contains(ip("2001:db8:ffff:1::1")));
        assert!(!t.contains(ip("2001:db8:fffe::1")));
        assert!(!TrustedProxies::default().contains(ip("10.0.0.1")));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let forged = headers(&[("x-forwarded-for", "198.51.100.7"), ("forwarded", "for=198.51.100.8")]);
        assert_eq!(client_ip(ip("203.0.113.5"), &forged, &trusted()), ip("203.0.113.5"));
        assert_eq!(client_ip(ip("203.0.113.5"), &forged, &TrustedProxies::default()), ip("203.0.113.5"));
        // The peer's own mapped address is normalized too.
        assert_eq!(client_ip(ip("::ffff:203.0.113.5"), &forged, &trusted()), ip("203.0.113.5"));
    }

    #[test]
    fn a_trusted_peer_without_headers_is_the_client() {
        assert_eq!(via(&[]), ip(PEER));
        assert_eq!(client_ip(ip("::ffff:10.0.0.1"), &HeaderMap::new(), &trusted()), ip(PEER));
    }

    #[test]
    fn x_forwarded_for_rightmost_untrusted() {
        assert_eq!(xff("198.51.100.7"), ip("198.51.100.7"));
        // Forged entries left of the client do not matter; trusted hops right of it are skipped.
        assert_eq!(xff("1.1.1.1, 198.51.100.7, 10.1.1.1, 192.0.2.1"), ip("198.51.100.7"));
        assert_eq!(xff("1.1.1.1,198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(xff("2001:db8::7, 2001:db8:ffff::2"), ip("2001:db8::7"));
        // Empty list elements are allowed and skipped.
        assert_eq!(xff(" , 198.51.100.7 ,, "), ip("198.51.100.7"));
    }

    #[test]
    fn x_forwarded_for_lines_are_joined_in_order() {
        let lines = [("x-forwarded-for", "1.1.1.1, 198.51.100.7"), ("x-forwarded-for", "10.2.2.2, 10.3.3.3")];
        assert_eq!(via(&lines), ip("198.51.100.7"));
        let lines = [("x-forwarded-for", "198.51.100.7"), ("x-forwarded-for", "203.0.113.9")];
        assert_eq!(via(&lines), ip("203.0.113.9"));
    }

    #[test]
    fn x_forwarded_for_entries_may_carry_ports() {
        assert_eq!(xff("198.51.100.7:5678"), ip("198.51.100.7"));
        assert_eq!(xff("[2001:db8::1]:80"), ip("2001:db8::1"));
        assert_eq!(xff("[2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(xff("198.51.100.7:5678, 10.0.0.2:443"), ip("198.51.100.7"));
    }

    #[test]
    fn ipv4_mapped_results_are_ipv4() {
        assert_eq!(xff("::ffff:198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(xff("198.51.100.7, ::ffff:10.1.1.1"), ip("198.51.100.7"), "a mapped trusted hop is skipped");
        assert_eq!(fwd("for=\"[::ffff:198.51.100.7]:1\""), ip("198.51.100.7"));
    }

    #[test]
    fn forwarded_is_preferred_over_x_forwarded_for() {
        let lines = [("x-forwarded-for", "198.51.100.1"), ("forwarded", "for=198.51.100.2")];
        assert_eq!(via(&lines), ip("198.51.100.2"));
    }

    #[test]
    fn forwarded_elements_and_parameters() {
        assert_eq!(fwd("for=198.51.100.7"), ip("198.51.100.7"));
        assert_eq!(fwd("For=198.51.100.7;proto=https;by=10.0.0.1"), ip("198.51.100.7"));
        assert_eq!(fwd("proto=https; for=198.51.100.7 ;host=example.com"), ip("198.51.100.7"));
        assert_eq!(fwd("for=\"192.0.2.60:8080\""), ip("192.0.2.60"));
        assert_eq!(fwd("for=\"[2001:db8:cafe::17]:4711\""), ip("2001:db8:cafe::17"));
        assert_eq!(fwd("for=\"[2001:db8:cafe::17]\""), ip("2001:db8:cafe::17"));
        assert_eq!(fwd("for=\"198.51.100.7:_port\""), ip("198.51.100.7"));
        assert_eq!(fwd("for=\"198.\\51.100.7\""), ip("198.51.100.7"), "a quoted-pair is the character");
        // Elements, right to left.
        assert_eq!(fwd("for=1.1.1.1, for=198.51.100.7;proto=http, for=10.1.1.1"), ip("198.51.100.7"));
        // A comma inside a quoted string does not split elements.
        assert_eq!(fwd("for=198.51.100.7, for=10.1.1.1;ext=\"a, for=6.6.6.6\""), ip("198.51.100.7"));
        // Several header lines.
        let lines = [("forwarded", "for=1.1.1.1, for=198.51.100.7"), ("forwarded", "for=10.2.2.2")];
        assert_eq!(via(&lines), ip("198.51.100.7"));
    }

    #[test]
    fn an_entry_that_is_not_an_address_ends_the_walk() {
        // Nothing left of `unknown` can be verified: the answer is the last trusted hop.
        assert_eq!(fwd("for=198.51.100.7, for=unknown, for=10.1.1.1"), ip("10.1.1.1"));
        assert_eq!(fwd("for=198.51.100.7, for=_hidden"), ip(PEER));
        assert_eq!(fwd("for=198.51.100.7, for=\"_gazonk\", for=192.0.2.1"), ip("192.0.2.1"));
        assert_eq!(fwd("for=198.51.100.7, proto=https"), ip(PEER), "an element without for=");
        assert_eq!(fwd("for=198.51.100.7;for=198.51.100.8"), ip(PEER), "for= twice");
        assert_eq!(xff("198.51.100.7, garbage, 10.1.1.1"), ip("10.1.1.1"));
        assert_eq!(xff("198.51.100.7, unknown"), ip(PEER));
        assert_eq!(xff("198.51.100.7:99999"), ip(PEER), "not a port");
        assert_eq!(xff("198.51.100.7:"), ip(PEER));
        assert_eq!(xff("[2001:db8::1]x"), ip(PEER));
        assert_eq!(xff("fe80::1%eth0"), ip(PEER));
        assert_eq!(xff("198.051.100.7"), ip(PEER), "no octal-looking octets");
        assert_eq!(fwd("for=\"198.51.100.7"), ip(PEER), "an unclosed quote");
    }

    #[test]
    fn when_every_entry_is_trusted_the_leftmost_is_the_client() {
        assert_eq!(xff("10.3.3.3, 10.2.2.2, 192.0.2.1"), ip("10.3.3.3"));
        assert_eq!(fwd("for=10.3.3.3, for=10.2.2.2"), ip("10.3.3.3"));
        assert_eq!(via(&[("forwarded", "")]), ip(PEER), "an empty header");
    }

    #[test]
    fn at_most_max_hops_are_examined() {
        let trusted_hops = |n: usize| (0..n).map(|i| format!("10.0.{}.{}", i / 256, i % 256)).collect::<Vec<_>>();
        // The client right behind MAX_HOPS - 1 trusted hops is found...
        let mut chain = vec!["198.51.100.7".to_owned()];
        chain.extend(trusted_hops(MAX_HOPS - 1));
        assert_eq!(xff(&chain.join(", ")), ip("198.51.100.7"));
        // ...one more trusted hop and the walk stops at the last trusted hop it examined.
        let mut chain = vec!["198.51.100.7".to_owned()];
        chain.extend(trusted_hops(MAX_HOPS));
        assert_eq!(xff(&chain.join(", ")), ip("10.0.0.0"));
        // Empty elements do not count as hops.
        let padded = format!("198.51.100.7{}", ",".repeat(1000));
        assert_eq!(xff(&padded), ip("198.51.100.7"));
    }

    #[test]
    fn an_oversized_header_is_ignored() {
        let long = format!("{}198.51.100.7", "1.1.1.1, ".repeat(MAX_HEADER_VALUE / 9));
        assert!(long.len() > MAX_HEADER_VALUE);
        assert_eq!(xff(&long), ip(PEER));
        assert_eq!(via(&[("x-forwarded-for", &long), ("x-forwarded-for", "198.51.100.8")]), ip(PEER));
        let forwarded = format!("for={}", "x".repeat(MAX_HEADER_VALUE));
        assert_eq!(via(&[("forwarded", &forwarded), ("x-forwarded-for", "198.51.100.8")]), ip(PEER));
        // Just under the limit is read.
        let fits = format!("{}198.51.100.7", " ".repeat(MAX_HEADER_VALUE - 12));
        assert_eq!(fits.len(), MAX_HEADER_VALUE);
        assert_eq!(xff(&fits), ip("198.51.100.7"));
    }

    #[test]
    fn non_utf8_values_do_not_panic() {
        let mut map = HeaderMap::new();
        map.append(X_FORWARDED_FOR, HeaderValue::from_bytes(b"198.51.100.7, \xff\xfe, 10.1.1.1").unwrap());
        assert_eq!(client_ip(ip(PEER), &map, &trusted()), ip("10.1.1.1"));
        let mut map = HeaderMap::new();
        map.append(FORWARDED, HeaderValue::from_bytes(b"for=198.51.100.7, for=\"\xc3\x28\"").unwrap());
        assert_eq!(client_ip(ip(PEER), &map, &trusted()), ip(PEER));
    }

    /// Random header values, valid or not: no panic, and the answer is the peer or an address
    /// that the header spells.
    #[test]
    fn arbitrary_header_values() {
        const ADDRESSES: [&[u8]; 8] = [
            b"198.51.100.7",
            b"10.1.1.1",
            b"192.0.2.1",
            b"[2001:db8::7]",
            b"2001:db8:ffff::2",
            b"::ffff:203.0.113.9",
            b"\"[2001:db8::8]:4711\"",
            b"\"203.0.113.10:80\"",
        ];
        const NOISE: [&[u8]; 16] = [
            b":80",
            b":_x",
            b"for=",
            b";proto=https",
            b"\"",
            b"\\",
            b",",
            b";",
            b"=",
            b"[",
            b"]",
            b"unknown",
            b"_hidden",
            b" ",
            b":",
            b".",
        ];
        let mut x = 0x853c_49e6_748f_ea9b_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let trusted = trusted();
        let mut answered_from_header = 0;
        for round in 0..4_000 {
            let forwarded = round % 2 == 0;
            let mut value = Vec::new();
            for element in 0..next() % 8 {
                if element > 0 {
                    value.extend_from_slice([&b","[..], b", ", b" ,"][(next() % 3) as usize]);
                }
                match next() % 10 {
                    0 => value.extend((0..next() % 12).map(|_| next() as u8)),
                    1 | 2 => {
                        for _ in 0..1 + next() % 4 {
                            value.extend_from_slice(NOISE[(next() % NOISE.len() as u64) as usize]);
                        }
                    }
                    _ => {
                        if forwarded && next() % 4 != 0 {
                            value.extend_from_slice(b"for=");
                        }
                        value.extend_from_slice(ADDRESSES[(next() % ADDRESSES.len() as u64) as usize]);
                        if next() % 4 == 0 {
                            value.extend_from_slice(NOISE[(next() % NOISE.len() as u64) as usize]);
                        }
                    }
                }
            }
            // HeaderValue refuses control characters; replace them rather than skip the case.
            for b in &mut value {
                if (*b < 0x20 && *b != b'\t') || *b == 0x7f {
                    *b = b'x';
                }
            }
            let name = if forwarded { FORWARDED.as_str() } else { X_FORWARDED_FOR };
            let mut map = HeaderMap::new();
            map.append(name, HeaderValue::from_bytes(&value).unwrap());
            let peer = if round % 5 == 0 { ip("203.0.113.200") } else { ip(PEER) };
            let got = client_ip(peer, &map, &trusted);
            if got == peer {
                continue;
            }
            assert!(trusted.contains(peer), "an untrusted peer's headers are ignored");
            let text = String::from_utf8_lossy(&value).to_ascii_lowercase();
            assert!(text.contains(&got.to_string()), "{got} is not in {text:?}");
            answered_from_header += 1;
        }
        assert!(answered_from_header > 1_000, "the generator reaches the interesting cases ({answered_from_header})");
    }
}
