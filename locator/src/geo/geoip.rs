//! The GeoIP database: a client address's country and continent.
//!
//! The whole MaxMind DB file is read into memory when it is opened, so a lookup never touches
//! the disk and the operator can replace the file while the locator runs (a reload opens the new
//! file; the old one stays in use until that succeeds). Opening checks that the file is a MaxMind
//! DB with country data (Country, City or Enterprise); an ASN or ISP database would load but
//! answer nothing, so it is refused. A lookup never fails: an address the database does not
//! know, or a record it cannot decode, is simply unknown.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{MaxMindDbError, Reader};
use serde::Deserialize;

/// Why a GeoIP database cannot be used. Each error names the file.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("geoip database {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read geoip database {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{} is not a MaxMind database (corrupt or another format): {source}", path.display())]
    NotMaxMind { path: PathBuf, source: MaxMindDbError },
    #[error(
        "{} is a {database_type} database, which has no country data (a Country or City database is needed)",
        path.display()
    )]
    WrongType { path: PathBuf, database_type: String },
}

/// Database types (from the file's metadata) that carry country and continent records, e.g.
/// `GeoIP2-Country`, `GeoLite2-City`, `GeoIP2-Enterprise`.
const TYPES_WITH_COUNTRIES: [&str; 3] = ["Country", "City", "Enterprise"];

/// A loaded MaxMind database.
pub struct GeoIp {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("path", &self.path)
            .field("database_type", &self.database_type())
            .field("build_epoch", &self.build_epoch())
            .finish()
    }
}

/// What the database says about an address. Both are uppercase codes as the database spells
/// them (`GB`, `EU`); either may be missing (some networks have a continent and no country).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GeoInfo {
    pub country: Option<String>,
    pub continent: Option<String>,
}

/// The two fields a lookup needs, borrowed from the database: decoding skips everything else
/// (names in a dozen languages, cities, coordinates).
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<CountryField<'a>>,
    #[serde(borrow, default)]
    continent: Option<ContinentField<'a>>,
}

#[derive(Deserialize)]
struct CountryField<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct ContinentField<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

impl GeoIp {
    /// Reads the whole file into memory and checks that it is a database with country data.
    pub fn open(path: &Path) -> Result<GeoIp, GeoError> {
        let reader = Reader::open_readfile(path).map_err(|e| match e {
            MaxMindDbError::Io(source) if source.kind() == std::io::ErrorKind::NotFound => {
                GeoError::Missing { path: path.to_owned() }
            }
            MaxMindDbError::Io(source) => GeoError::Unreadable { path: path.to_owned(), source },
            source => GeoError::NotMaxMind { path: path.to_owned(), source },
        })?;
        let database_type = &reader.metadata().database_type;
        if !TYPES_WITH_COUNTRIES.iter().any(|t| database_type.contains(t)) {
            return Err(GeoError::WrongType { path: path.to_owned(), database_type: database_type.clone() });
        }
        Ok(GeoIp { path: path.to_owned(), reader })
    }

    /// The file this database was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The type from the file's metadata, e.g. `GeoIP2-Country`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// When the database was built, in seconds since the Unix epoch.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// Country and continent codes of an address, if the database knows it. An IPv4-mapped IPv6
    /// address is looked up as the IPv4 address.
    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        let ip = ip.to_canonical();
        let record = self.reader.lookup(ip).and_then(|found| found.decode::<Record<'_>>());
        match record {
            Ok(Some(r)) => GeoInfo {
                country: r.country.and_then(|c| c.iso_code).map(str::to_owned),
                continent: r.continent.and_then(|c| c.code).map(str::to_owned),
            },
            Ok(None) => GeoInfo::default(),
            Err(e) => {
                // An IPv6 address in an IPv4-only database lands here too.
                tracing::debug!(
                    ip = %ip,
                    path = %self.path.display(),
                    error = %e,
                    "geoip lookup failed; address unknown"
                );
                GeoInfo::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{self, ADDRESSES, ASN_TEST, CITY_TEST, COUNTRY_TEST};
    use super::*;

    fn info(country: Option<&str>, continent: Option<&str>) -> GeoInfo {
        GeoInfo { country: country.map(Into::into), continent: continent.map(Into::into) }
    }

    #[test]
    fn opens_country_and_city_databases() {
        for (file, kind) in [
            (&*COUNTRY_TEST, "GeoIP2-Country"),
            (&*CITY_TEST, "GeoIP2-City"),
            (&*testdata::GEOLITE_COUNTRY_TEST, "GeoLite2-Country"),
            (&*testdata::GEOLITE_CITY_TEST, "GeoLite2-City"),
        ] {
            let db = GeoIp::open(Path::new(file)).unwrap();
            assert_eq!(db.database_type(), kind);
            assert_eq!(db.path(), Path::new(file));
            assert!(db.build_epoch() > 1_500_000_000, "{}", db.build_epoch());
            assert!(format!("{db:?}").contains(kind));
        }
    }

    #[test]
    fn looks_up_country_and_continent() {
        let country = GeoIp::open(Path::new(&*COUNTRY_TEST)).unwrap();
        let city = GeoIp::open(Path::new(&*CITY_TEST)).unwrap();
        for a in ADDRESSES {
            let ip: IpAddr = a.ip.parse().unwrap();
            assert_eq!(country.lookup(ip), info(a.country, a.continent), "{} in the Country database", a.ip);
            assert_eq!(city.lookup(ip), info(a.city_country, a.city_continent), "{} in the City database", a.ip);
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_looked_up_as_ipv4() {
        let db = GeoIp::open(Path::new(&*COUNTRY_TEST)).unwrap();
        let mapped: IpAddr = "::ffff:81.2.69.142".parse().unwrap();
        assert_eq!(db.lookup(mapped), info(Some("GB"), Some("EU")));
    }

    #[test]
    fn private_and_unknown_addresses_are_unknown() {
        let db = GeoIp::open(Path::new(&*COUNTRY_TEST)).unwrap();
        for ip in ["10.0.0.1", "192.168.1.1", "127.0.0.1", "fc00::1", "::1", "192.0.2.10", "214.1.1.1"] {
            assert_eq!(db.lookup(ip.parse().unwrap()), GeoInfo::default(), "{ip}");
        }
    }

    #[test]
    fn a_missing_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.mmdb");
        let e = GeoIp::open(&path).unwrap_err();
        assert!(matches!(e, GeoError::Missing { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("geoip database {} does not exist", path.display()));
    }

    #[test]
    fn a_directory_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let e = GeoIp::open(dir.path()).unwrap_err();
        assert!(matches!(e, GeoError::Unreadable { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!("cannot read geoip database {}: ", dir.path().display())));
    }

    #[test]
    fn a_corrupt_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.mmdb");
        // Deterministic noise, 64 KiB.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let bytes: Vec<u8> = (0..65_536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&garbage, bytes).unwrap();
        let empty = dir.path().join("empty.mmdb");
        std::fs::write(&empty, b"").unwrap();
        // A real database cut in half loses its metadata (which is at the end).
        let truncated = dir.path().join("truncated.mmdb");
        let whole = std::fs::read(&*COUNTRY_TEST).unwrap();
        std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
        for path in [garbage, empty, truncated] {
            let e = GeoIp::open(&path).unwrap_err();
            assert!(matches!(e, GeoError::NotMaxMind { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("{} is not a MaxMind database", path.display())), "{msg}");
        }
    }

    #[test]
    fn an_asn_database_is_the_wrong_type() {
        let e = GeoIp::open(Path::new(&*ASN_TEST)).unwrap_err();
        assert!(matches!(&e, GeoError::WrongType { database_type, .. } if database_type == "GeoLite2-ASN"), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("GeoLite2-ASN-Test.mmdb") && msg.contains("has no country data"), "{msg}");
    }
}
