//! Claims of the participant tokens the locator signs and edges verify (JWT, EdDSA).
//!
//! The signature and expiry are handled by the JWT library on both sides; this is only the shape
//! both sides agree on. Claim names are short because a token travels in every `join`.

use serde::{Deserialize, Serialize};

/// Clock-skew leeway edges allow on `exp`, in seconds.
pub const EXPIRY_LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Session id.
    pub sid: String,
    /// `host` or `guest`.
    pub role: String,
    /// Participant id inside the session.
    pub pid: u32,
    /// User id.
    pub sub: String,
    /// Display name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Guests need the host's approval before they receive session traffic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub appr: bool,
    /// The most participants the session holds at once (the edge's own limit applies too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxp: Option<u32>,
    /// The edge the session is placed on.
    pub edge: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
}
