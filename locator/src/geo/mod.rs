//! A client's region: admin CIDR rules, then GeoIP country and continent rules, then the default.
//!
//! Admins map clients to regions with rules stored in SQL: a CIDR rule (`10.20.0.0/16` → `eu`,
//! for networks GeoIP cannot place, such as offices and VPNs), a country rule (`GB` → `uk`) or a
//! continent rule (`EU` → `eu`). For a client address the [`Resolver`] answers, in order:
//!
//! 1. the CIDR rule with the longest prefix containing the address (IPv4 and IPv6 alike; an
//!    IPv4-mapped IPv6 address `::ffff:a.b.c.d` is the IPv4 address);
//! 2. the rule for the address's country in the GeoIP database ([`GeoIp`], a MaxMind Country
//!    or City database), else the rule for its continent;
//! 3. the default region.
//!
//! Private and unknown addresses are in no GeoIP database, so without a CIDR rule they get the
//! default region. The answer says which rule decided ([`RegionSource`]) so that a placement can
//! be explained.
//!
//! Layout:
//! - [`rules`]: validation and normalization of matchers and region names (one spelling per
//!   network or code, so the database can refuse duplicates).
//! - [`countries`]: the ISO 3166-1 alpha-2 codes a country rule may name.
//! - [`geoip`]: the MaxMind database, loaded into memory.
//! - [`resolver`]: the precomputed snapshot that answers a region per placement.

pub mod countries;
pub mod geoip;
pub mod resolver;
pub mod rules;

#[cfg(test)]
mod testdata;

pub use geoip::{GeoError, GeoInfo, GeoIp};
pub use resolver::{RegionSource, Resolution, Resolver};
pub use rules::{normalize_matcher, parse_cidr, validate_region_name, RuleError};

/// What a region rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// An IPv4 or IPv6 network.
    Cidr,
    /// An ISO 3166-1 alpha-2 country code, as GeoIP answers it.
    Country,
    /// A continent code (AF, AN, AS, EU, NA, OC, SA), as GeoIP answers it.
    Continent,
}

impl RuleKind {
    /// The kind as stored in SQL and shown in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            RuleKind::Cidr => "cidr",
            RuleKind::Country => "country",
            RuleKind::Continent => "continent",
        }
    }

    /// The inverse of [`RuleKind::as_str`].
    pub fn parse(s: &str) -> Option<RuleKind> {
        match s {
            "cidr" => Some(RuleKind::Cidr),
            "country" => Some(RuleKind::Country),
            "continent" => Some(RuleKind::Continent),
            _ => None,
        }
    }
}

impl std::fmt::Display for RuleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One admin rule as stored in SQL (matcher already normalized).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegionRule {
    pub id: i64,
    pub kind: RuleKind,
    /// Normalized by [`normalize_matcher`]: `10.0.0.0/8`, `GB`, `EU`.
    #[serde(rename = "match")]
    pub matcher: String,
    pub region: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_kinds_round_trip() {
        for kind in [RuleKind::Cidr, RuleKind::Country, RuleKind::Continent] {
            assert_eq!(RuleKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<RuleKind>(&json).unwrap(), kind);
        }
        for bad in ["", "planet", "CIDR", " cidr"] {
            assert_eq!(RuleKind::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rules_serialize_with_match() {
        let rule = RegionRule { id: 7, kind: RuleKind::Country, matcher: "GB".into(), region: "uk".into() };
        assert_eq!(
            serde_json::to_value(&rule).unwrap(),
            serde_json::json!({ "id": 7, "kind": "country", "match": "GB", "region": "uk" })
        );
    }
}
