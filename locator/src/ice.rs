//! ICE servers for WebRTC media: the STUN and TURN entries every placement answer carries, shaped
//! like the browser's `RTCIceServer`, with TURN credentials minted by coturn's REST API scheme
//! (`use-auth-secret`).
//!
//! A TURN credential is never stored: the username is `"{expiry}:{session_id}/{participant_id}"`
//! (expiry in Unix seconds; coturn takes the timestamp before its default separator `:` and
//! refuses the credential for new allocations after it) and the password is base64 (standard, padded) of
//! HMAC-SHA1(`turn_secret`, username). A TURN server started with `use-auth-secret` and the same
//! `static-auth-secret` recomputes it, so the locator and coturn share nothing but the secret.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::LocatorConfig;

/// One entry of `ice_servers`, the JSON of the browser's `RTCIceServer`: STUN entries have only
/// `urls`, TURN entries a username and credential as well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A TURN username and password in coturn's REST API scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    pub username: String,
    pub credential: String,
}

/// The Unix time (seconds) at which a credential minted at `now_unix` stops being accepted.
pub fn expiry(now_unix: u64, lifetime: Duration) -> u64 {
    now_unix.saturating_add(lifetime.as_secs())
}

/// Mints the credential of `participant` (`"{session_id}/{participant_id}"`), valid until
/// `expires_unix`.
pub fn turn_credential(secret: &[u8], participant: &str, expires_unix: u64) -> TurnCredential {
    let username = format!("{expires_unix}:{participant}");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    TurnCredential { username, credential }
}

/// The `ice_servers` of one participant's placement answer: a STUN entry when `stun_urls` is
/// set, a TURN entry with a fresh credential when `turn_urls` is set; empty when neither is.
pub fn servers(config: &LocatorConfig, session_id: &str, participant_id: u32, now_unix: u64) -> Vec<IceServer> {
    let mut servers = Vec::with_capacity(2);
    if !config.stun_urls.is_empty() {
        servers.push(IceServer { urls: config.stun_urls.clone(), username: None, credential: None });
    }
    // Validation guarantees the secret whenever there are TURN URLs.
    let turn_secret = config.turn_secret.as_deref().filter(|_| !config.turn_urls.is_empty());
    if let Some(secret) = turn_secret {
        let expires = expiry(now_unix, config.turn_credential_lifetime);
        let c = turn_credential(secret.as_bytes(), &format!("{session_id}/{participant_id}"), expires);
        servers.push(IceServer {
            urls: config.turn_urls.clone(),
            username: Some(c.username),
            credential: Some(c.credential),
        });
    }
    servers
}

/// Splits a comma-separated list of URLs (spaces around commas and empty items ignored).
pub fn parse_url_list(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect()
}

/// Checks a STUN URL (RFC 7064): `stun:` or `stuns:`, then `host[:port]`.
pub fn check_stun_url(url: &str) -> Result<(), String> {
    let rest = ["stun:", "stuns:"]
        .iter()
        .find_map(|s| url.strip_prefix(s))
        .ok_or_else(|| format!("{url:?} must start with stun: or stuns:"))?;
    check_host_port(url, rest)
}

/// Checks a TURN URL (RFC 7065): `turn:` or `turns:`, then `host[:port]`, optionally
/// `?transport=udp` or `?transport=tcp`.
pub fn check_turn_url(url: &str) -> Result<(), String> {
    let rest = ["turn:", "turns:"]
        .iter()
        .find_map(|s| url.strip_prefix(s))
        .ok_or_else(|| format!("{url:?} must start with turn: or turns:"))?;
    let (host_port, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    if let Some(q) = query {
        if !matches!(q, "transport=udp" | "transport=tcp") {
            return Err(format!("{url:?}: the only query allowed is ?transport=udp or ?transport=tcp"));
        }
    }
    check_host_port(url, host_port)
}

/// `host[:port]` as browsers accept it: a name or IPv4 address, or an IPv6 address in brackets.
fn check_host_port(url: &str, rest: &str) -> Result<(), String> {
    let bad = || format!("{url:?} must be scheme:host[:port] (no //, no path), e.g. stun:stun.example.com:3478");
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (addr, after) = inner.split_once(']').ok_or_else(bad)?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (addr, None),
            p => (addr, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let name_ok = |h: &str| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !(rest.starts_with('[') || name_ok(host)) {
        return Err(bad());
    }
    if let Some(p) = port {
        if !matches!(p.parse::<u16>(), Ok(1..)) {
            return Err(format!("{url:?}: the port must be 1 to 65535"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"north-sea-turn-secret-0123456789";

    #[test]
    fn credential_matches_an_independent_computation() {
        // Computed with Python: base64.b64encode(hmac.new(SECRET, username, hashlib.sha1).digest()).
        let c = turn_credential(SECRET, "s_4fj2kq9x7m1c8d0a3b5e6g7h/2", 1_700_043_200);
        assert_eq!(c.username, "1700043200:s_4fj2kq9x7m1c8d0a3b5e6g7h/2");
        assert_eq!(c.credential, "+uiPbaj2edHOsvOxHGyjD0pW9OM=");
        // The worked example of docs/protocol.md (§1, ICE servers).
        let doc = turn_credential(b"example-static-auth-secret", "s_4fj2kq9x7m1c8d0a3b5e6g7h/1", 1_795_471_500);
        assert_eq!(doc.username, "1795471500:s_4fj2kq9x7m1c8d0a3b5e6g7h/1");
        assert_eq!(doc.credential, "k109rS0oppxASBqgGLGd2gobaCw=");
        // RFC 2202, HMAC-SHA1 test case 2, through the same primitives.
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(base64::engine::general_purpose::STANDARD.encode(tag.as_ref()), "7/zfauXrL6LSdBbV8YTfnCWafHk=");
    }

    #[test]
    fn expiry_is_now_plus_lifetime() {
        assert_eq!(expiry(1_700_000_000, Duration::from_secs(12 * 3600)), 1_700_043_200);
        // Sub-second parts of the lifetime are dropped, never rounded up past it.
        assert_eq!(expiry(10, Duration::from_millis(60_999)), 70);
        assert_eq!(expiry(u64::MAX - 1, Duration::from_secs(60)), u64::MAX);
    }

    fn config(stun: &[&str], turn: &[&str], secret: Option<&str>) -> LocatorConfig {
        let mut c = LocatorConfig::new("unused".into());
        c.stun_urls = stun.iter().map(|s| s.to_string()).collect();
        c.turn_urls = turn.iter().map(|s| s.to_string()).collect();
        c.turn_secret = secret.map(str::to_owned);
        c.turn_credential_lifetime = Duration::from_secs(12 * 3600);
        c
    }

    #[test]
    fn servers_follow_the_configuration() {
        assert!(servers(&config(&[], &[], None), "s_a", 1, 0).is_empty());
        let stun_only = servers(&config(&["stun:stun.example.com"], &[], None), "s_a", 1, 0);
        assert_eq!(
            serde_json::to_value(&stun_only).unwrap(),
            serde_json::json!([{ "urls": ["stun:stun.example.com"] }])
        );
        let secret = std::str::from_utf8(SECRET).unwrap();
        let both = servers(
            &config(&["stun:a.example.com"], &["turn:127.0.0.1:3478?transport=tcp"], Some(secret)),
            "s_4fj2kq9x7m1c8d0a3b5e6g7h",
            2,
            1_700_000_000,
        );
        assert_eq!(
            serde_json::to_value(&both).unwrap(),
            serde_json::json!([
                { "urls": ["stun:a.example.com"] },
                {
                    "urls": ["turn:127.0.0.1:3478?transport=tcp"],
                    "username": "1700043200:s_4fj2kq9x7m1c8d0a3b5e6g7h/2",
                    "credential": "+uiPbaj2edHOsvOxHGyjD0pW9OM="
                }
            ])
        );
    }

    #[test]
    fn urls_are_checked() {
        for ok in ["stun:stun.example.com", "stuns:stun.example.com:5349", "stun:[::1]:3478", "stun:10.0.0.1"] {
            check_stun_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["http://x", "stun://x", "stun:", "stun:x:0", "stun:x:port", "stun:x y", "turn:x", "stun:[zz]"] {
            assert!(check_stun_url(bad).is_err(), "{bad}");
        }
        for ok in
            ["turn:127.0.0.1:3478?transport=tcp", "turns:turn.example.com:443", "turn:[2001:db8::1]?transport=udp"]
        {
            check_turn_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["stun:x", "turn:x?transport=sctp", "turn:x/path", "turn:"] {
            assert!(check_turn_url(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_url_list(" stun:a, stun:b ,,"), ["stun:a", "stun:b"]);
    }
}
