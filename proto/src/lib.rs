//! duet's wire formats: every byte that crosses a process boundary is defined here.
//!
//! Layout:
//! - [`session`]: the client-to-edge session protocol, a hand-specified binary layout (kind byte,
//!   big-endian integers, length-prefixed strings) that a browser, TypeScript or Kotlin client can
//!   implement from `docs/protocol.md` alone.
//! - [`presence`]: the team presence websocket between a client and the team's edge, framed
//!   like the session protocol.
//! - [`link`]: the edge-to-locator link messages (Rust to Rust, postcard through [`codec`]).
//! - [`codec`]: the only place that turns link messages into bytes and back.
//! - [`outbox`]: audit and metrics entries that edges buffer and relay to the locator.
//! - [`close`]: the registry of websocket close codes (4000-4999, one range per area).
//!
//! This crate does no I/O: no tokio, hyper or sqlx here, so every encoding can be frozen by
//! golden-bytes tests (`tests/golden.rs`) that also check the examples in `docs/protocol.md`.

pub mod close;
pub mod codec;
pub mod link;
pub mod outbox;
pub mod presence;
pub mod session;
pub mod token;

pub use close::CloseCode;
