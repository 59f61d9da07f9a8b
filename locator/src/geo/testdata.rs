//! MaxMind's test databases and addresses known to be in them, for the tests of this module.
//!
//! The databases are MaxMind's published test data (`shared/testdata/geoip`, see its README).
//! The addresses were read from the databases by iterating their networks, not guessed.

use std::sync::LazyLock;

/// The directory of the test databases: `DUET_GEOIP_TESTDATA`, else the first
/// `shared/testdata/geoip` beside the checkout or one of its parents.
fn geoip_test_file(name: &str) -> String {
    let dir = std::env::var_os("DUET_GEOIP_TESTDATA").map(std::path::PathBuf::from).or_else(|| {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest.ancestors().map(|a| a.join("shared/testdata/geoip")).find(|d| d.is_dir())
    });
    match dir {
        Some(d) => d.join(name).display().to_string(),
        None => panic!("MaxMind test databases not found: set DUET_GEOIP_TESTDATA to their directory"),
    }
}

pub static COUNTRY_TEST: LazyLock<String> = LazyLock::new(|| geoip_test_file("GeoIP2-Country-Test.mmdb"));
pub static CITY_TEST: LazyLock<String> = LazyLock::new(|| geoip_test_file("GeoIP2-City-Test.mmdb"));
pub static GEOLITE_COUNTRY_TEST: LazyLock<String> = LazyLock::new(|| geoip_test_file("GeoLite2-Country-Test.mmdb"));
pub static GEOLITE_CITY_TEST: LazyLock<String> = LazyLock::new(|| geoip_test_file("GeoLite2-City-Test.mmdb"));
pub static ASN_TEST: LazyLock<String> = LazyLock::new(|| geoip_test_file("GeoLite2-ASN-Test.mmdb"));

/// An address and what GeoIP2-Country-Test.mmdb and GeoIP2-City-Test.mmdb say about it.
pub struct Known {
    pub ip: &'static str,
    pub country: Option<&'static str>,
    pub continent: Option<&'static str>,
    pub city_country: Option<&'static str>,
    pub city_continent: Option<&'static str>,
}

const fn both(ip: &'static str, country: &'static str, continent: &'static str) -> Known {
    Known {
        ip,
        country: Some(country),
        continent: Some(continent),
        city_country: Some(country),
        city_continent: Some(continent),
    }
}

/// Each comment names the network of GeoIP2-Country-Test.mmdb and GeoIP2-City-Test.mmdb the
/// address is in (the same network in both unless said otherwise).
pub const ADDRESSES: [Known; 13] = [
    both("81.2.69.142", "GB", "EU"),    // 81.2.69.142/31
    both("89.160.20.112", "SE", "EU"),  // 89.160.20.112/28
    both("216.160.83.56", "US", "NA"),  // 216.160.83.56/29
    both("175.16.199.1", "CN", "AS"),   // 175.16.199.0/24
    both("67.43.156.1", "BT", "AS"),    // 67.43.156.0/24
    both("202.196.224.1", "PH", "AS"),  // 202.196.224.0/20
    both("2001:218::1", "JP", "AS"),    // 2001:218::/32
    both("2001:480:10::1", "US", "NA"), // 2001:480:10::/48
    both("2a02:e700::1", "LY", "AF"),   // 2a02:e700::/29
    both("2a02:cfc0::1", "FR", "EU"),   // 2a02:cfc0::/29
    // 2a02:ec80::/29: a continent and no country, in both.
    Known { ip: "2a02:ec80::1", country: None, continent: Some("EU"), city_country: None, city_continent: Some("EU") },
    // 214.0.1.0/24 of the City database; the Country database does not know it.
    Known { ip: "214.0.1.1", country: None, continent: None, city_country: Some("AU"), city_continent: Some("OC") },
    // 50.114.0.0/22 of the Country database; the City database does not know it.
    Known { ip: "50.114.0.1", country: Some("US"), continent: Some("NA"), city_country: None, city_continent: None },
];

/// Addresses of ADDRESSES by name, for the resolver's tests (all in GeoIP2-Country-Test.mmdb).
pub const GB: &str = "81.2.69.142";
pub const SE: &str = "89.160.20.112";
pub const US: &str = "216.160.83.56";
pub const CN: &str = "175.16.199.1";
pub const JP6: &str = "2001:218::1";
pub const LY6: &str = "2a02:e700::1";
/// Europe without a country.
pub const EU6: &str = "2a02:ec80::1";
