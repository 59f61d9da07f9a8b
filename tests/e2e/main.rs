//! duet's end-to-end tests: one test binary, a module per area. Everything runs against real
//! components on 127.0.0.1:0 (the test kit), real databases, and real processes where a module
//! says so (`cli`, `node`, `dashboard`: they need `cargo build --workspace --bins` first, which the README's
//! test command does).

mod access;
mod admin;
mod audit;
mod auth;
mod bad_input;
mod cli;
mod dashboard;
mod deploy;
mod ice;
mod link;
mod media;
mod media_browser;
mod node;
mod outbox;
mod placement;
mod presence;
mod reconcile;
mod relay;
mod resume;
mod store;
mod support;
mod tls;
