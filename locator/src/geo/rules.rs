//! Validation and normalization of region rules and region names.
//!
//! Every rule is normalized before it is stored, so that one network or code has exactly one
//! spelling (the database refuses a second rule with the same kind and matcher, which only works
//! if `10.0.0.0/8` and `::ffff:10.0.0.0/104`, or `gb` and `GB`, are the same text). Errors say
//! what is wrong with the input and, where there is an obvious fix, what was probably meant.

use duet_netaddr::echoed;
use duet_netaddr::CidrError;
use ipnet::IpNet;

use super::countries;
use super::RuleKind;

/// Continent codes as GeoIP databases use them: Africa, Antarctica, Asia, Europe, North America,
/// Oceania, South America.
pub const CONTINENT_CODES: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// Region names are at most this long: they are identifiers (`eu-west`, `home.lab`), and they
/// travel in every placement answer and explanation.
pub const MAX_REGION_NAME: usize = 64;

/// Why a rule or region name is refused. The messages are meant for the admin who typed it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("the match of a {kind} rule is empty")]
    Empty { kind: RuleKind },
    #[error("`{input}` is not a valid CIDR: {reason}")]
    InvalidCidr { input: String, reason: String },
    #[error("`{input}` is a single address, not a network: write {suggestion} to match only this address")]
    BareAddress { input: String, suggestion: String },
    #[error("`{input}` is not a network address: host bits are set (did you mean {network}?)")]
    HostBitsSet { input: String, network: String },
    #[error("`{input}` is not an ISO 3166-1 alpha-2 country code")]
    UnknownCountry { input: String },
    #[error("`{input}` is not a continent code (one of AF, AN, AS, EU, NA, OC, SA)")]
    UnknownContinent { input: String },
    #[error("a region name cannot be empty")]
    EmptyRegionName,
    #[error("a region name is at most {MAX_REGION_NAME} bytes long, `{name}` has {len}")]
    RegionNameTooLong { name: String, len: usize },
    #[error(
        "`{name}` is not a valid region name: {found:?} is not allowed (use ASCII letters, digits, '-', '_', '.')"
    )]
    InvalidRegionName { name: String, found: char },
}

/// Validates and normalizes a rule's matcher.
///
/// - CIDR: the canonical `ipnet` text (lowercase, compressed IPv6); an IPv4-mapped IPv6 network
///   (`::ffff:10.0.0.0/104`) becomes the IPv4 network (`10.0.0.0/8`), because clients with
///   IPv4-mapped addresses are matched as IPv4. A bare address is refused (the fix is to add
///   `/32` or `/128`), and so is a network with host bits set.
/// - country: uppercase ISO 3166-1 alpha-2 code ([`countries`]); lowercase input is accepted.
/// - continent: uppercase, one of [`CONTINENT_CODES`]; lowercase input is accepted.
///
/// Surrounding whitespace is ignored.
pub fn normalize_matcher(kind: RuleKind, matcher: &str) -> Result<String, RuleError> {
    let text = matcher.trim();
    if text.is_empty() {
        return Err(RuleError::Empty { kind });
    }
    match kind {
        RuleKind::Cidr => parse_cidr(text).map(|net| net.to_string()),
        RuleKind::Country => {
            let code = text.to_ascii_uppercase();
            if countries::is_country_code(&code) {
                Ok(code)
            } else {
                Err(RuleError::UnknownCountry { input: echoed(text) })
            }
        }
        RuleKind::Continent => {
            let code = text.to_ascii_uppercase();
            if CONTINENT_CODES.contains(&code.as_str()) {
                Ok(code)
            } else {
                Err(RuleError::UnknownContinent { input: echoed(text) })
            }
        }
    }
}

/// Parses a CIDR network with the checks of [`normalize_matcher`]: a prefix length is required,
/// host bits must be clear, and IPv4-mapped IPv6 networks are answered as IPv4. The parsing is
/// [`duet_netaddr::parse_cidr`], shared with the trusted-proxy list; its errors are answered as
/// [`RuleError`]s.
pub fn parse_cidr(input: &str) -> Result<IpNet, RuleError> {
    duet_netaddr::parse_cidr(input).map_err(|e| match e {
        CidrError::Empty => RuleError::Empty { kind: RuleKind::Cidr },
        CidrError::Invalid { input, reason } => RuleError::InvalidCidr { input, reason },
        CidrError::BareAddress { input, suggestion } => RuleError::BareAddress { input, suggestion },
        CidrError::HostBitsSet { input, network } => RuleError::HostBitsSet { input, network },
    })
}

/// Region names: 1 to [`MAX_REGION_NAME`] bytes of ASCII letters, digits, `-`, `_` and `.`.
pub fn validate_region_name(name: &str) -> Result<(), RuleError> {
    if name.is_empty() {
        return Err(RuleError::EmptyRegionName);
    }
    if name.len() > MAX_REGION_NAME {
        return Err(RuleError::RegionNameTooLong { name: echoed(name), len: name.len() });
    }
    match name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        Some(found) => Err(RuleError::InvalidRegionName { name: name.to_owned(), found }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Result<String, String> {
        normalize_matcher(RuleKind::Cidr, s).map_err(|e| e.to_string())
    }

    /// CIDR parsing itself is `duet_netaddr`'s (tested there, case by case); here, that a CIDR
    /// rule goes through it and that each kind of refusal keeps its message.
    #[test]
    fn cidr_rules_use_the_shared_parser_and_keep_its_messages() {
        for (input, want) in
            [("10.0.0.0/08", "10.0.0.0/8"), ("2001:DB8::/32", "2001:db8::/32"), ("::ffff:10.0.0.0/104", "10.0.0.0/8")]
        {
            assert_eq!(cidr(input).as_deref(), Ok(want), "{input}");
        }
        let cases = [
            ("10.1.2.3/8", "`10.1.2.3/8` is not a network address: host bits are set (did you mean 10.0.0.0/8?)"),
            ("10.0.0.0/33", "`10.0.0.0/33` is not a valid CIDR: the prefix length `33` is not a number from 0 to 32"),
            ("10.1.2.3", "`10.1.2.3` is a single address, not a network: write 10.1.2.3/32 to match only this address"),
            ("   ", "the match of a cidr rule is empty"),
        ];
        for (input, want) in cases {
            assert_eq!(cidr(input).unwrap_err(), want, "{input}");
        }
    }

    #[test]
    fn countries_are_uppercased_and_checked() {
        for (input, want) in [("GB", "GB"), ("gb", "GB"), ("Se", "SE"), (" us ", "US"), ("xk", "XK")] {
            assert_eq!(normalize_matcher(RuleKind::Country, input).as_deref(), Ok(want), "{input}");
        }
        for input in ["XX", "UK", "EU", "GBR", "G", "1A", "ÄÖ"] {
            let e = normalize_matcher(RuleKind::Country, input).unwrap_err();
            assert_eq!(e, RuleError::UnknownCountry { input: input.into() });
            assert_eq!(e.to_string(), format!("`{input}` is not an ISO 3166-1 alpha-2 country code"));
        }
        assert_eq!(normalize_matcher(RuleKind::Country, ""), Err(RuleError::Empty { kind: RuleKind::Country }));
    }

    #[test]
    fn continents_are_uppercased_and_checked() {
        for code in CONTINENT_CODES {
            assert_eq!(normalize_matcher(RuleKind::Continent, code).as_deref(), Ok(code));
            assert_eq!(normalize_matcher(RuleKind::Continent, &code.to_lowercase()).as_deref(), Ok(code));
        }
        for input in ["EUR", "Europe", "AM", "XX", "E"] {
            let e = normalize_matcher(RuleKind::Continent, input).unwrap_err();
            assert_eq!(e.to_string(), format!("`{input}` is not a continent code (one of AF, AN, AS, EU, NA, OC, SA)"));
        }
        assert_eq!(
            normalize_matcher(RuleKind::Continent, "").unwrap_err().to_string(),
            "the match of a continent rule is empty"
        );
    }

    #[test]
    fn region_names() {
        for name in ["eu", "eu-west-1", "home.lab", "A_B", "0", &"x".repeat(MAX_REGION_NAME)] {
            assert_eq!(validate_region_name(name), Ok(()), "{name}");
        }
        let msg = |name: &str| validate_region_name(name).unwrap_err().to_string();
        assert_eq!(msg(""), "a region name cannot be empty");
        assert_eq!(
            msg("eu west"),
            "`eu west` is not a valid region name: ' ' is not allowed (use ASCII letters, digits, '-', '_', '.')"
        );
        assert!(msg("eu/west").contains("'/' is not allowed"));
        assert!(msg("région").contains("'é' is not allowed"));
        let long = "x".repeat(MAX_REGION_NAME + 1);
        assert_eq!(
            validate_region_name(&long),
            Err(RuleError::RegionNameTooLong { name: format!("{}…", "x".repeat(64)), len: 65 })
        );
        assert!(msg(&long).starts_with("a region name is at most 64 bytes long"));
    }
}
