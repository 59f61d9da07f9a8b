//! The client's address, through trusted proxies.
//!
//! Placement needs the address of the client, not of the load balancer in front of the locator.
//! The logic is shared with the edge and lives in [`duet_netaddr`]: [`client_ip`] believes
//! `Forwarded` / `X-Forwarded-For` only from the networks of [`TrustedProxies`], walking the chain
//! from the right, with bounded work ([`MAX_HOPS`], [`MAX_HEADER_VALUE`]).

pub use duet_netaddr::{client_ip, TrustedProxies, MAX_HEADER_VALUE, MAX_HOPS};
