//! The country codes a country rule may name.
//!
//! Country rules are checked against this list when they are added, so that a typo (`UK` for
//! `GB`, `XX`) is refused at once instead of silently never matching. The list is the ISO 3166-1
//! alpha-2 codes that are officially assigned (249 of them), plus the one user-assigned code that
//! GeoIP databases actually return ([`GEOIP_EXTRA_CODES`]).

/// Officially assigned ISO 3166-1 alpha-2 codes, sorted (so lookups are a binary search).
pub const COUNTRY_CODES: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB", "BD",
    "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA",
    "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE",
    "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA",
    "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK",
    "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT",
    "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS",
    "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS",
    "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST",
    "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW",
    "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA",
    "ZM", "ZW",
];

/// Codes outside the official list that GeoIP databases return: `XK`, the user-assigned code
/// for Kosovo, which MaxMind (following GeoNames) uses. Without it Kosovo could not get a
/// country rule.
pub const GEOIP_EXTRA_CODES: [&str; 1] = ["XK"];

/// True if `code` (uppercase) is a country code a rule may name.
pub fn is_country_code(code: &str) -> bool {
    COUNTRY_CODES.binary_search(&code).is_ok() || GEOIP_EXTRA_CODES.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_unique_and_well_formed() {
        assert!(COUNTRY_CODES.windows(2).all(|w| w[0] < w[1]), "sorted without duplicates");
        for code in COUNTRY_CODES.iter().chain(&GEOIP_EXTRA_CODES) {
            assert!(code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()), "{code}");
        }
        assert!(!COUNTRY_CODES.contains(&GEOIP_EXTRA_CODES[0]));
    }

    #[test]
    fn known_and_unknown_codes() {
        for code in ["AD", "GB", "SE", "US", "JP", "SS", "BQ", "ZW", "XK"] {
            assert!(is_country_code(code), "{code}");
        }
        // UK and EU are reserved, not assigned; AN and YU were withdrawn; lowercase is normalized
        // before this check.
        for code in ["XX", "UK", "EU", "AN", "YU", "gb", "", "G", "GBR"] {
            assert!(!is_country_code(code), "{code}");
        }
    }
}
