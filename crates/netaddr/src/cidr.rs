//! Strict CIDR parsing and IPv4-mapped networks.
//!
//! Networks typed by an operator (trusted proxies, region rules) are parsed strictly: a prefix
//! length is required, host bits must be clear, and an IPv4-mapped IPv6 network
//! (`::ffff:10.0.0.0/104`) is the IPv4 network it covers (`10.0.0.0/8`), so that one network has
//! one spelling. Errors say what is wrong with the input and, where there is an obvious fix, what
//! was probably meant.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Inputs are echoed in error messages up to this many characters, so that a megabyte of garbage
/// does not come back as a megabyte of error.
const MAX_ECHOED_CHARS: usize = 64;

/// Why [`parse_cidr`] refuses its input. The messages are meant for the operator who typed it;
/// `input` is the trimmed input, shortened to 64 characters (and `…`) if it was longer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    /// The input is empty or only whitespace.
    #[error("a CIDR network cannot be empty")]
    Empty,
    /// Not an address and a prefix length; `reason` says which part is wrong.
    #[error("`{input}` is not a valid CIDR: {reason}")]
    Invalid { input: String, reason: String },
    /// An address without a prefix length; `suggestion` is the /32 or /128 network.
    #[error("`{input}` is a single address, not a network: write {suggestion} to match only this address")]
    BareAddress { input: String, suggestion: String },
    /// A valid address and prefix length, but bits beyond the prefix are set; `network` is the
    /// network with them cleared.
    #[error("`{input}` is not a network address: host bits are set (did you mean {network}?)")]
    HostBitsSet { input: String, network: String },
}

/// Parses a CIDR network strictly: surrounding whitespace is ignored, a prefix length (digits
/// only, at most 32 or 128) is required, host bits must be clear, and IPv4-mapped IPv6 networks
/// are answered as IPv4 ([`unmap`]). The answer's `to_string()` is the canonical spelling
/// (lowercase, compressed IPv6).
pub fn parse_cidr(input: &str) -> Result<IpNet, CidrError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(CidrError::Empty);
    }
    let invalid = |reason: String| CidrError::Invalid { input: echoed(text), reason };
    let Some((addr, len)) = text.split_once('/') else {
        return Err(match text.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = ip.to_canonical();
                let suggestion = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
                CidrError::BareAddress { input: echoed(text), suggestion }
            }
            Err(_) => invalid("expected an address and a prefix length, like 10.0.0.0/8".into()),
        });
    };
    let addr: IpAddr =
        addr.parse().map_err(|_| invalid(format!("`{}` is not an IPv4 or IPv6 address", echoed(addr))))?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len.parse::<u8>() {
        // `u8` parsing accepts a leading `+`; a prefix length is digits only.
        Ok(n) if n <= max && len.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return Err(invalid(format!("the prefix length `{}` is not a number from 0 to {max}", echoed(len)))),
    };
    let net = match addr {
        IpAddr::V4(a) => Ipv4Net::new(a, len).map(IpNet::V4),
        IpAddr::V6(a) => Ipv6Net::new(a, len).map(IpNet::V6),
    }
    .map_err(|e| invalid(e.to_string()))?;
    let net = unmap(net);
    let network = net.trunc();
    if network != net {
        return Err(CidrError::HostBitsSet { input: echoed(text), network: network.to_string() });
    }
    Ok(net)
}

/// An IPv6 network inside `::ffff:0:0/96` as the IPv4 network it covers; other networks as they
/// are. (A shorter IPv6 network such as `::/0` stays IPv6 and does not match IPv4 clients.)
/// Host bits are kept: `::ffff:10.1.2.3/104` is `10.1.2.3/8`.
pub fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, n.prefix_len() - 96).map(IpNet::V4).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// `input` as it appears in an error message: at most [`MAX_ECHOED_CHARS`] characters (cut on a
/// character boundary, with `…`), so a huge input cannot make a huge message.
pub fn echoed(input: &str) -> String {
    match input.char_indices().nth(MAX_ECHOED_CHARS) {
        Some((cut, _)) => format!("{}…", &input[..cut]),
        None => input.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Result<String, String> {
        parse_cidr(s).map(|net| net.to_string()).map_err(|e| e.to_string())
    }

    #[test]
    fn cidrs_are_normalized() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("  192.168.1.0/24 ", "192.168.1.0/24"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("203.0.113.7/32", "203.0.113.7/32"),
            ("10.0.0.0/08", "10.0.0.0/8"),
            ("2001:DB8::/32", "2001:db8::/32"),
            ("2001:0db8:0000:0000:0000:0000:0000:0000/48", "2001:db8::/48"),
            ("2001:db8::1/128", "2001:db8::1/128"),
            ("::/0", "::/0"),
            // IPv4-mapped IPv6 networks are the IPv4 networks they cover.
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::FFFF:a00:0/104", "10.0.0.0/8"),
            ("::ffff:0.0.0.0/96", "0.0.0.0/0"),
            ("::ffff:203.0.113.7/128", "203.0.113.7/32"),
            // Shorter than /96, or outside ::ffff:0:0/96, it stays an IPv6 network.
            ("::/64", "::/64"),
            ("64:ff9b::/96", "64:ff9b::/96"),
        ];
        for (input, want) in cases {
            assert_eq!(cidr(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        let cases = [
            ("10.1.2.3/8", "`10.1.2.3/8` is not a network address: host bits are set (did you mean 10.0.0.0/8?)"),
            (
                "2001:db8::1/32",
                "`2001:db8::1/32` is not a network address: host bits are set (did you mean 2001:db8::/32?)",
            ),
            (
                "::ffff:10.1.2.3/104",
                "`::ffff:10.1.2.3/104` is not a network address: host bits are set (did you mean 10.0.0.0/8?)",
            ),
            ("10.0.0.0/33", "`10.0.0.0/33` is not a valid CIDR: the prefix length `33` is not a number from 0 to 32"),
            (
                "10.0.0.0/999",
                "`10.0.0.0/999` is not a valid CIDR: the prefix length `999` is not a number from 0 to 32",
            ),
            (
                "2001:db8::/129",
                "`2001:db8::/129` is not a valid CIDR: the prefix length `129` is not a number from 0 to 128",
            ),
            ("10.0.0.0/", "`10.0.0.0/` is not a valid CIDR: the prefix length `` is not a number from 0 to 32"),
            ("10.0.0.0/+8", "`10.0.0.0/+8` is not a valid CIDR: the prefix length `+8` is not a number from 0 to 32"),
            ("10.0.0.0/-1", "`10.0.0.0/-1` is not a valid CIDR: the prefix length `-1` is not a number from 0 to 32"),
            (
                "10.0.0.0/8/8",
                "`10.0.0.0/8/8` is not a valid CIDR: the prefix length `8/8` is not a number from 0 to 32",
            ),
            ("10.0.0/8", "`10.0.0/8` is not a valid CIDR: `10.0.0` is not an IPv4 or IPv6 address"),
            ("banana/8", "`banana/8` is not a valid CIDR: `banana` is not an IPv4 or IPv6 address"),
            ("banana", "`banana` is not a valid CIDR: expected an address and a prefix length, like 10.0.0.0/8"),
            ("10.1.2.3", "`10.1.2.3` is a single address, not a network: write 10.1.2.3/32 to match only this address"),
            (
                "2001:DB8::1",
                "`2001:DB8::1` is a single address, not a network: write 2001:db8::1/128 to match only this address",
            ),
            (
                "::ffff:10.1.2.3",
                "`::ffff:10.1.2.3` is a single address, not a network: write 10.1.2.3/32 to match only this address",
            ),
            ("fe80::1%eth0/64", "`fe80::1%eth0/64` is not a valid CIDR: `fe80::1%eth0` is not an IPv4 or IPv6 address"),
            ("   ", "a CIDR network cannot be empty"),
        ];
        for (input, want) in cases {
            assert_eq!(cidr(input).unwrap_err(), want, "{input}");
        }
        assert_eq!(parse_cidr(""), Err(CidrError::Empty));
        assert_eq!(
            parse_cidr(" 10.1.2.3/8 "),
            Err(CidrError::HostBitsSet { input: "10.1.2.3/8".into(), network: "10.0.0.0/8".into() })
        );
        let long = "1".repeat(1000);
        let e = cidr(&long).unwrap_err();
        assert!(e.len() < 200 && e.contains('…'), "a long input is shortened in the message: {e}");
        // Shortened on a character boundary.
        let long = format!("{}/8", "é".repeat(100));
        let Err(CidrError::Invalid { input, .. }) = parse_cidr(&long) else { panic!("{long}") };
        assert_eq!(input, format!("{}…", "é".repeat(64)));
    }

    #[test]
    fn unmap_converts_only_mapped_networks() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(unmap(net("::ffff:10.0.0.0/104")), net("10.0.0.0/8"));
        assert_eq!(unmap(net("::ffff:10.1.2.3/104")), net("10.1.2.3/8"), "host bits are kept");
        assert_eq!(unmap(net("::ffff:0.0.0.0/96")), net("0.0.0.0/0"));
        assert_eq!(unmap(net("::ffff:203.0.113.7/128")), net("203.0.113.7/32"));
        for same in ["::/0", "::ffff:0:0/95", "64:ff9b::/96", "2001:db8::/32", "10.0.0.0/8"] {
            assert_eq!(unmap(net(same)), net(same), "{same}");
        }
    }
}
