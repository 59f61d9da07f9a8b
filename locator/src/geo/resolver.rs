//! The resolver: a client address to a region, with the reason.
//!
//! A [`Resolver`] is an immutable snapshot of the rules, built when they change and shared in an
//! `Arc`; resolving runs on every placement, so everything that can be is done at build time.
//! Order of precedence: the longest matching CIDR rule, then the country rule of the address's
//! GeoIP country, then the continent rule of its continent, then the default region.
//!
//! CIDR rules are kept per address family in tables grouped by prefix length, longest first,
//! each a sorted array searched by binary search: a lookup costs at most 33 (IPv4) or 129 (IPv6)
//! searches however many rules there are, and allocates nothing. Country and continent rules sit
//! in 26×26 tables indexed by the two letters of the code. The only allocations of a resolution
//! are the strings it returns.

use std::collections::hash_map::{Entry, HashMap};
use std::net::IpAddr;
use std::ops::BitAnd;
use std::sync::Arc;

use ipnet::IpNet;

use super::{normalize_matcher, parse_cidr, GeoInfo, GeoIp, RegionRule, RuleKind};

/// Why a client got its region.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RegionSource {
    /// The request named its region explicitly.
    Request,
    /// The longest CIDR rule containing the client's address.
    Cidr {
        rule_id: i64,
        #[serde(rename = "match")]
        network: String,
    },
    /// The rule for the client's GeoIP country.
    Country {
        rule_id: i64,
        #[serde(rename = "match")]
        code: String,
    },
    /// The rule for the client's GeoIP continent (no rule for its country).
    Continent {
        rule_id: i64,
        #[serde(rename = "match")]
        code: String,
    },
    /// No rule applied (or the address is unknown, private, or not in the GeoIP database).
    Default,
}

/// A client's region and why. `geo` is what the GeoIP database says about the address, filled
/// whenever the database knows it, even when a CIDR rule decided (so an explanation shows both).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resolution {
    pub region: String,
    pub source: RegionSource,
    #[serde(flatten)]
    pub geo: GeoInfo,
}

/// A rule as the resolver answers it.
#[derive(Debug)]
struct Target {
    rule_id: i64,
    /// Normalized, as shown in [`RegionSource`].
    matcher: String,
    region: String,
}

/// Immutable snapshot of the rules; rebuilt whenever rules change (cheap to share in an Arc).
pub struct Resolver {
    default_region: String,
    geoip: Option<Arc<GeoIp>>,
    /// Every rule in use (duplicates and invalid rules left out); the tables index into it.
    targets: Vec<Target>,
    v4: PrefixTable<u32>,
    v6: PrefixTable<u128>,
    countries: CodeTable,
    continents: CodeTable,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("default_region", &self.default_region)
            .field("geoip", &self.geoip)
            .field("rules", &self.targets)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Builds the snapshot. Rules are normalized again (a rule the database holds in another
    /// spelling still works; one that is invalid is left out with a warning). Of two rules with
    /// the same kind and matcher, which the database refuses, the lower id is kept.
    pub fn new(rules: &[RegionRule], default_region: String, geoip: Option<Arc<GeoIp>>) -> Resolver {
        let mut ordered: Vec<&RegionRule> = rules.iter().collect();
        ordered.sort_by_key(|r| r.id);
        let mut targets: Vec<Target> = Vec::with_capacity(ordered.len());
        let mut networks: HashMap<IpNet, usize> = HashMap::new();
        let mut countries = CodeTable::new();
        let mut continents = CodeTable::new();
        for rule in ordered {
            let normalized = match rule.kind {
                RuleKind::Cidr => parse_cidr(&rule.matcher).map(|net| (net.to_string(), Some(net))),
                kind => normalize_matcher(kind, &rule.matcher).map(|code| (code, None)),
            };
            let (matcher, network) = match normalized {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(
                        rule.id = rule.id,
                        kind = rule.kind.as_str(),
                        matcher = %rule.matcher,
                        error = %e,
                        "ignoring an invalid region rule"
                    );
                    continue;
                }
            };
            let index = targets.len();
            let kept = match rule.kind {
                RuleKind::Cidr => network.and_then(|net| match networks.entry(net) {
                    Entry::Occupied(e) => Some(*e.get()),
                    Entry::Vacant(e) => {
                        e.insert(index);
                        None
                    }
                }),
                RuleKind::Country => countries.insert(&matcher, index),
                RuleKind::Continent => continents.insert(&matcher, index),
            };
            if let Some(kept) = kept {
                tracing::warn!(
                    rule.id = rule.id,
                    kept.id = targets[kept].rule_id,
                    kind = rule.kind.as_str(),
                    matcher = %matcher,
                    "ignoring a duplicate region rule"
                );
                continue;
            }
            targets.push(Target { rule_id: rule.id, matcher, region: rule.region.clone() });
        }
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (net, index) in networks {
            match net {
                IpNet::V4(n) => v4.push((n.prefix_len(), n.netmask().into(), n.network().into(), index)),
                IpNet::V6(n) => v6.push((n.prefix_len(), n.netmask().into(), n.network().into(), index)),
            }
        }
        Resolver {
            default_region,
            geoip,
            targets,
            v4: PrefixTable::build(v4),
            v6: PrefixTable::build(v6),
            countries,
            continents,
        }
    }

    /// The region of clients no rule places.
    pub fn default_region(&self) -> &str {
        &self.default_region
    }

    /// The GeoIP database this snapshot uses, if any.
    pub fn geoip(&self) -> Option<&Arc<GeoIp>> {
        self.geoip.as_ref()
    }

    /// Region of a client address (`None`: address unknown -> default region). An IPv4-mapped
    /// IPv6 address is resolved as the IPv4 address.
    pub fn resolve(&self, ip: Option<IpAddr>) -> Resolution {
        let Some(ip) = ip.map(|ip| ip.to_canonical()) else {
            return Resolution {
                region: self.default_region.clone(),
                source: RegionSource::Default,
                geo: GeoInfo::default(),
            };
        };
        let cidr = match ip {
            IpAddr::V4(a) => self.v4.lookup(a.into()),
            IpAddr::V6(a) => self.v6.lookup(a.into()),
        };
        let geo = self.geoip.as_ref().map(|db| db.lookup(ip)).unwrap_or_default();
        let country = geo.country.as_deref().and_then(|c| self.countries.get(c));
        let continent = geo.continent.as_deref().and_then(|c| self.continents.get(c));
        let (region, source) = match (cidr, country, continent) {
            (Some(i), _, _) => {
                let t = &self.targets[i];
                (&t.region, RegionSource::Cidr { rule_id: t.rule_id, network: t.matcher.clone() })
            }
            (None, Some(i), _) => {
                let t = &self.targets[i];
                (&t.region, RegionSource::Country { rule_id: t.rule_id, code: t.matcher.clone() })
            }
            (None, None, Some(i)) => {
                let t = &self.targets[i];
                (&t.region, RegionSource::Continent { rule_id: t.rule_id, code: t.matcher.clone() })
            }
            (None, None, None) => (&self.default_region, RegionSource::Default),
        };
        Resolution { region: region.clone(), source, geo }
    }
}

/// CIDR rules of one address family (`u32` for IPv4, `u128` for IPv6), grouped by prefix length.
#[derive(Debug)]
struct PrefixTable<A> {
    /// Longest prefix first, so the first hit is the longest match.
    groups: Vec<PrefixGroup<A>>,
}

/// The rules with one prefix length.
#[derive(Debug)]
struct PrefixGroup<A> {
    mask: A,
    /// (network address, target index), sorted by network address, networks distinct.
    networks: Vec<(A, usize)>,
}

impl<A: Copy + Ord + BitAnd<Output = A>> PrefixTable<A> {
    /// From (prefix length, mask, network address, target index), networks distinct.
    fn build(mut entries: Vec<(u8, A, A, usize)>) -> PrefixTable<A> {
        entries.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(&b.2)));
        let mut groups: Vec<PrefixGroup<A>> = Vec::new();
        let mut current = None;
        for (len, mask, network, index) in entries {
            if current != Some(len) {
                current = Some(len);
                groups.push(PrefixGroup { mask, networks: Vec::new() });
            }
            if let Some(group) = groups.last_mut() {
                group.networks.push((network, index));
            }
        }
        PrefixTable { groups }
    }

    fn lookup(&self, addr: A) -> Option<usize> {
        self.groups.iter().find_map(|g| {
            let key = addr & g.mask;
            g.networks.binary_search_by(|(network, _)| network.cmp(&key)).ok().map(|i| g.networks[i].1)
        })
    }
}

/// Two-letter uppercase codes (countries, continents) to target indexes.
struct CodeTable {
    /// Indexed by `26 * first letter + second letter`.
    slots: Box<[Option<usize>; 26 * 26]>,
}

impl CodeTable {
    fn new() -> CodeTable {
        CodeTable { slots: Box::new([None; 26 * 26]) }
    }

    fn slot(code: &str) -> Option<usize> {
        match code.as_bytes() {
            &[a @ b'A'..=b'Z', b @ b'A'..=b'Z'] => Some(usize::from(a - b'A') * 26 + usize::from(b - b'A')),
            _ => None,
        }
    }

    fn get(&self, code: &str) -> Option<usize> {
        Self::slot(code).and_then(|s| self.slots[s])
    }

    /// Adds a code; answers the index already there instead, if any. Codes are normalized
    /// before they get here; anything else is ignored.
    fn insert(&mut self, code: &str, index: usize) -> Option<usize> {
        let slot = Self::slot(code)?;
        match self.slots[slot] {
            Some(existing) => Some(existing),
            None => {
                self.slots[slot] = Some(index);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::testdata::{CITY_TEST, CN, COUNTRY_TEST, EU6, GB, JP6, LY6, SE, US};
    use super::*;

    fn rule(id: i64, kind: RuleKind, matcher: &str, region: &str) -> RegionRule {
        RegionRule { id, kind, matcher: matcher.into(), region: region.into() }
    }

    fn country_db() -> Option<Arc<GeoIp>> {
        Some(Arc::new(GeoIp::open(Path::new(&*COUNTRY_TEST)).unwrap()))
    }

    fn region(r: &Resolver, ip: &str) -> (String, RegionSource) {
        let res = r.resolve(Some(ip.parse().unwrap()));
        (res.region, res.source)
    }

    fn cidr(rule_id: i64, network: &str) -> RegionSource {
        RegionSource::Cidr { rule_id, network: network.into() }
    }

    #[test]
    fn the_longest_prefix_wins_ipv4() {
        let rules = [
            rule(1, RuleKind::Cidr, "10.0.0.0/8", "a"),
            rule(2, RuleKind::Cidr, "10.1.0.0/16", "b"),
            rule(3, RuleKind::Cidr, "10.1.2.0/24", "c"),
            rule(4, RuleKind::Cidr, "10.1.2.3/32", "d"),
            rule(5, RuleKind::Cidr, "10.2.0.0/16", "e"),
            rule(6, RuleKind::Cidr, "192.168.0.0/16", "f"),
        ];
        let r = Resolver::new(&rules, "home".into(), None);
        assert_eq!(region(&r, "10.1.2.3"), ("d".into(), cidr(4, "10.1.2.3/32")));
        assert_eq!(region(&r, "10.1.2.4"), ("c".into(), cidr(3, "10.1.2.0/24")));
        assert_eq!(region(&r, "10.1.3.1"), ("b".into(), cidr(2, "10.1.0.0/16")));
        assert_eq!(region(&r, "10.2.255.255"), ("e".into(), cidr(5, "10.2.0.0/16")));
        assert_eq!(region(&r, "10.3.0.0"), ("a".into(), cidr(1, "10.0.0.0/8")));
        assert_eq!(region(&r, "10.255.255.255"), ("a".into(), cidr(1, "10.0.0.0/8")));
        assert_eq!(region(&r, "192.168.7.7"), ("f".into(), cidr(6, "192.168.0.0/16")));
        assert_eq!(region(&r, "11.0.0.0"), ("home".into(), RegionSource::Default));
        assert_eq!(region(&r, "9.255.255.255"), ("home".into(), RegionSource::Default));
        // IPv4 rules do not match IPv6 clients.
        assert_eq!(region(&r, "::a01:203"), ("home".into(), RegionSource::Default));
    }

    #[test]
    fn the_longest_prefix_wins_ipv6() {
        let rules = [
            rule(1, RuleKind::Cidr, "2001:db8::/32", "a"),
            rule(2, RuleKind::Cidr, "2001:db8:1::/48", "b"),
            rule(3, RuleKind::Cidr, "2001:db8:1:2::/64", "c"),
            rule(4, RuleKind::Cidr, "2001:db8:1:2::1/128", "d"),
            rule(5, RuleKind::Cidr, "fc00::/7", "lab"),
        ];
        let r = Resolver::new(&rules, "home".into(), None);
        assert_eq!(region(&r, "2001:db8:1:2::1"), ("d".into(), cidr(4, "2001:db8:1:2::1/128")));
        assert_eq!(region(&r, "2001:db8:1:2::2"), ("c".into(), cidr(3, "2001:db8:1:2::/64")));
        assert_eq!(region(&r, "2001:db8:1:3::1"), ("b".into(), cidr(2, "2001:db8:1::/48")));
        assert_eq!(region(&r, "2001:db8:ffff::1"), ("a".into(), cidr(1, "2001:db8::/32")));
        assert_eq!(region(&r, "fd12:3456::1"), ("lab".into(), cidr(5, "fc00::/7")));
        assert_eq!(region(&r, "2001:db9::1"), ("home".into(), RegionSource::Default));
    }

    #[test]
    fn catch_all_networks_match_their_family_only() {
        let rules = [rule(1, RuleKind::Cidr, "0.0.0.0/0", "v4"), rule(2, RuleKind::Cidr, "::/0", "v6")];
        let r = Resolver::new(&rules, "home".into(), None);
        assert_eq!(region(&r, "203.0.113.1").0, "v4");
        assert_eq!(region(&r, "::ffff:203.0.113.1").0, "v4");
        assert_eq!(region(&r, "2001:db8::1").0, "v6");
        assert_eq!(region(&r, "::1").0, "v6");
    }

    #[test]
    fn ipv4_mapped_clients_are_ipv4() {
        // The second rule is stored in its mapped spelling; it is the IPv4 network 10.1.0.0/16.
        let rules = [rule(1, RuleKind::Cidr, "10.0.0.0/8", "a"), rule(2, RuleKind::Cidr, "::ffff:10.1.0.0/112", "b")];
        let r = Resolver::new(&rules, "home".into(), country_db());
        assert_eq!(region(&r, "::ffff:10.9.9.9"), ("a".into(), cidr(1, "10.0.0.0/8")));
        assert_eq!(region(&r, "::ffff:10.1.2.3"), ("b".into(), cidr(2, "10.1.0.0/16")));
        assert_eq!(region(&r, "10.1.2.3"), ("b".into(), cidr(2, "10.1.0.0/16")));
        // GeoIP sees the IPv4 address too.
        let res = r.resolve(Some(format!("::ffff:{GB}").parse().unwrap()));
        assert_eq!((res.geo.country.as_deref(), res.geo.continent.as_deref()), (Some("GB"), Some("EU")));
    }

    fn geo_rules() -> Vec<RegionRule> {
        vec![
            rule(1, RuleKind::Continent, "EU", "eu"),
            rule(2, RuleKind::Continent, "na", "na"),
            rule(3, RuleKind::Country, "GB", "uk"),
            rule(4, RuleKind::Continent, "AS", "asia"),
            rule(5, RuleKind::Continent, "AF", "africa"),
            rule(6, RuleKind::Cidr, "89.160.20.112/28", "office"),
            rule(7, RuleKind::Country, "jp", "tokyo"),
        ]
    }

    #[test]
    fn a_cidr_rule_beats_geoip() {
        let r = Resolver::new(&geo_rules(), "home".into(), country_db());
        let res = r.resolve(Some(SE.parse().unwrap()));
        assert_eq!((res.region.as_str(), &res.source), ("office", &cidr(6, "89.160.20.112/28")));
        // The explanation still says what GeoIP knows.
        assert_eq!(res.geo, GeoInfo { country: Some("SE".into()), continent: Some("EU".into()) });
    }

    #[test]
    fn a_country_rule_beats_its_continent_rule() {
        let r = Resolver::new(&geo_rules(), "home".into(), country_db());
        let res = r.resolve(Some(GB.parse().unwrap()));
        assert_eq!(res.region, "uk");
        assert_eq!(res.source, RegionSource::Country { rule_id: 3, code: "GB".into() });
        assert_eq!(res.geo, GeoInfo { country: Some("GB".into()), continent: Some("EU".into()) });
        assert_eq!(region(&r, JP6), ("tokyo".into(), RegionSource::Country { rule_id: 7, code: "JP".into() }));
    }

    #[test]
    fn a_continent_rule_applies_without_a_country_rule() {
        let r = Resolver::new(&geo_rules(), "home".into(), country_db());
        let continent = |rule_id, code: &str| RegionSource::Continent { rule_id, code: code.into() };
        assert_eq!(region(&r, "89.160.20.200"), ("eu".into(), continent(1, "EU"))); // Sweden, outside the CIDR rule
        assert_eq!(region(&r, US), ("na".into(), continent(2, "NA")));
        assert_eq!(region(&r, CN), ("asia".into(), continent(4, "AS")));
        assert_eq!(region(&r, LY6), ("africa".into(), continent(5, "AF")));
        // A network with a continent and no country.
        let res = r.resolve(Some(EU6.parse().unwrap()));
        assert_eq!((res.region.as_str(), &res.source), ("eu", &continent(1, "EU")));
        assert_eq!(res.geo, GeoInfo { country: None, continent: Some("EU".into()) });
    }

    #[test]
    fn a_city_database_works_the_same() {
        let city = Some(Arc::new(GeoIp::open(Path::new(&*CITY_TEST)).unwrap()));
        let mut rules = geo_rules();
        rules.push(rule(8, RuleKind::Continent, "OC", "oceania"));
        let r = Resolver::new(&rules, "home".into(), city);
        assert_eq!(region(&r, GB).0, "uk");
        assert_eq!(region(&r, US).0, "na");
        assert_eq!(region(&r, "214.0.1.1").0, "oceania"); // Australia, in the City database only
    }

    #[test]
    fn private_unknown_and_missing_addresses_get_the_default() {
        let mut rules = geo_rules();
        rules.push(rule(9, RuleKind::Cidr, "::/0", "v6")); // does not catch IPv4-mapped clients
        let r = Resolver::new(&rules, "home".into(), country_db());
        for ip in ["10.0.0.1", "192.168.1.1", "127.0.0.1", "::ffff:192.168.1.1", "192.0.2.10"] {
            let res = r.resolve(Some(ip.parse().unwrap()));
            assert_eq!(
                (res.region.as_str(), &res.source, &res.geo),
                ("home", &RegionSource::Default, &GeoInfo::default())
            );
        }
        let r = Resolver::new(&geo_rules(), "home".into(), country_db());
        for ip in ["fc00::1", "fe80::1", "::1"] {
            assert_eq!(region(&r, ip), ("home".into(), RegionSource::Default), "{ip}");
        }
        let res = r.resolve(None);
        assert_eq!((res.region.as_str(), res.source, res.geo), ("home", RegionSource::Default, GeoInfo::default()));
    }

    #[test]
    fn without_geoip_only_cidr_rules_apply() {
        let r = Resolver::new(&geo_rules(), "home".into(), None);
        assert!(r.geoip().is_none());
        assert_eq!(r.default_region(), "home");
        assert_eq!(region(&r, GB), ("home".into(), RegionSource::Default));
        assert_eq!(region(&r, SE).0, "office");
    }

    #[test]
    fn duplicates_keep_the_lower_id_and_invalid_rules_are_skipped() {
        let rules = [
            rule(9, RuleKind::Cidr, "10.0.0.0/8", "later"),
            rule(4, RuleKind::Cidr, "::ffff:10.0.0.0/104", "earlier"), // the same network
            rule(8, RuleKind::Country, "gb", "later"),
            rule(5, RuleKind::Country, "GB", "earlier"),
            rule(7, RuleKind::Continent, "EU", "later"),
            rule(6, RuleKind::Continent, "eu", "earlier"),
            rule(1, RuleKind::Cidr, "10.1.2.3/8", "bad"),
            rule(2, RuleKind::Country, "XX", "bad"),
            rule(3, RuleKind::Continent, "EUR", "bad"),
        ];
        let r = Resolver::new(&rules, "home".into(), country_db());
        assert_eq!(region(&r, "10.1.2.3"), ("earlier".into(), cidr(4, "10.0.0.0/8")));
        assert_eq!(region(&r, GB), ("earlier".into(), RegionSource::Country { rule_id: 5, code: "GB".into() }));
        assert_eq!(region(&r, SE), ("earlier".into(), RegionSource::Continent { rule_id: 6, code: "EU".into() }));
        assert_eq!(r.targets.len(), 3);
    }

    #[test]
    fn many_rules_resolve_like_a_linear_scan() {
        // Nested and disjoint networks of every prefix length, checked against the obvious
        // definition of the longest match.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut rules = Vec::new();
        for id in 0..400 {
            let len = (next() % 33) as u8;
            let addr = std::net::Ipv4Addr::from((next() as u32) & 0x0aff_ffff);
            let net = ipnet::Ipv4Net::new(addr, len).unwrap().trunc();
            rules.push(rule(id, RuleKind::Cidr, &net.to_string(), &format!("r{id}")));
        }
        let r = Resolver::new(&rules, "home".into(), None);
        for probe in 0..5_000 {
            // Half the probes inside some rule's network, half anywhere.
            let ip = if probe % 2 == 0 {
                let net: ipnet::Ipv4Net = rules[(next() % 400) as usize].matcher.parse().unwrap();
                std::net::Ipv4Addr::from(u32::from(net.network()) | (next() as u32 & u32::from(net.hostmask())))
            } else {
                std::net::Ipv4Addr::from((next() as u32) & 0x0aff_ffff)
            };
            let expected = rules
                .iter()
                .filter(|rule| rule.matcher.parse::<ipnet::Ipv4Net>().unwrap().contains(&ip))
                .min_by_key(|rule| {
                    (std::cmp::Reverse(rule.matcher.parse::<ipnet::Ipv4Net>().unwrap().prefix_len()), rule.id)
                })
                .map_or("home".to_owned(), |rule| rule.region.clone());
            assert_eq!(r.resolve(Some(ip.into())).region, expected, "{ip}");
        }
    }

    #[test]
    fn resolutions_serialize_as_explanations_show_them() {
        let r = Resolver::new(&geo_rules(), "home".into(), country_db());
        let json = |ip: &str| serde_json::to_value(r.resolve(Some(ip.parse().unwrap()))).unwrap();
        assert_eq!(
            json(GB),
            serde_json::json!({
                "region": "uk",
                "source": { "kind": "country", "rule_id": 3, "match": "GB" },
                "country": "GB",
                "continent": "EU",
            })
        );
        assert_eq!(
            json(SE)["source"],
            serde_json::json!({ "kind": "cidr", "rule_id": 6, "match": "89.160.20.112/28" })
        );
        assert_eq!(json(US)["source"], serde_json::json!({ "kind": "continent", "rule_id": 2, "match": "NA" }));
        assert_eq!(
            json("10.0.0.1"),
            serde_json::json!({ "region": "home", "source": { "kind": "default" }, "country": null, "continent": null })
        );
        assert_eq!(serde_json::to_value(RegionSource::Request).unwrap(), serde_json::json!({ "kind": "request" }));
    }
}
