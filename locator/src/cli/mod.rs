//! The admin subcommands of `duet-locator` (`regions`, `edges`, `placement`, `geoip`,
//! `sessions`, `audit`, `usage`, `tokens`): each makes one call to the admin API of a running
//! locator (`audit tail --follow` keeps polling) and prints the answer for people (aligned
//! tables, short summaries) or, with `--json`, as the API's JSON for scripts. `hash-password`
//! makes a password hash for the dashboard's configuration and calls nothing.
//!
//! Guarantees:
//! - The admin token is never a flag value (see [`token`] for where it is found).
//! - Exit status: 0 success; 1 the locator answered an error (printed as
//!   `duet-locator: <message> (<code>, HTTP <status>)`); 2 usage (clap); 64 no usable admin token
//!   or CA file; 69 the locator cannot be reached.
//! - Human output goes to stdout, errors to stderr; `--json` output is exactly the server's JSON,
//!   pretty-printed, so fields this CLI does not know yet pass through (`audit tail` and
//!   `metrics tail` print the entries they gathered as one array, or one per line with
//!   `--follow`).
//!
//! Layout: [`client`] (the HTTP calls and their errors), [`token`], [`views`] (typed answers and
//! their rendering), [`table`] (the aligned-table printer).

pub mod client;
pub mod table;
pub mod token;
pub mod views;

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use duet_edge::config::Env;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use time::OffsetDateTime;

use client::{AdminClient, CallError};

pub const ENV_LOCATOR_URL: &str = "DUET_LOCATOR_URL";
pub const ENV_CA_FILE: &str = "DUET_CA_FILE";
pub const DEFAULT_LOCATOR_URL: &str = "http://127.0.0.1:8080";

/// The locator answered with an error.
pub const EXIT_API_ERROR: u8 = 1;
/// No usable admin token or CA file (EX_USAGE, as for a bad server configuration).
pub const EXIT_USAGE: u8 = 64;
/// The locator cannot be reached (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

/// Options every admin command takes; accepted before or after the subcommand's own arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminOptions {
    /// Base URL of the locator's API (http:// or https://).
    #[arg(
        long,
        env = ENV_LOCATOR_URL,
        default_value = DEFAULT_LOCATOR_URL,
        value_parser = parse_base_url,
        value_name = "URL",
        global = true
    )]
    pub url: Url,
    /// Print the locator's JSON answer, pretty-printed, instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// Extra CA certificates (PEM) to trust for an https:// URL, besides the system's.
    #[arg(long, env = ENV_CA_FILE, value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// File holding the admin token. Without it the token comes from DUET_ADMIN_TOKEN, else the
    /// file named by DUET_ADMIN_TOKEN_FILE, else ./duet-data/admin-token (one-machine mode).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

const REGIONS_EXAMPLES: &str = "\
Examples:
  duet-locator regions list
  duet-locator regions add-cidr 10.20.0.0/16 eu
  duet-locator regions add-country GB uk
  duet-locator regions fallback uk eu us
  duet-locator regions set-edge edge-1 eu
  duet-locator regions remove 3";

const EDGES_EXAMPLES: &str = "\
Examples:
  duet-locator edges list
  duet-locator edges list --json --url https://locator.example:8443
  duet-locator edges suspend edge-1";

const SESSIONS_EXAMPLES: &str = "\
Examples:
  duet-locator sessions list
  duet-locator sessions list --state ended --team platform --limit 50
  duet-locator sessions show s_0123456789abcdefghijklmn";

const AUDIT_EXAMPLES: &str = "\
Examples:
  duet-locator audit tail
  duet-locator audit tail --kind edge_suspended --since 7d
  duet-locator audit tail --actor token:root --follow
  duet-locator audit tail --session s_0123456789abcdefghijklmn --json";

const TOKENS_EXAMPLES: &str = "\
Examples:
  duet-locator tokens create grafana --scope read
  duet-locator tokens create ci-deploy --scope admin --expires-in 90d
  duet-locator tokens list
  duet-locator tokens revoke 0123456789ab";

const PLACEMENT_EXAMPLES: &str = "\
Examples:
  duet-locator placement explain 81.2.69.142
  duet-locator placement explain 2001:db8::1 --region eu --json";

/// Admin commands: they call the admin API of a running locator (`--url`) with the admin token.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Regions, the rules that place clients in them, and their fallback orders.
    ///
    /// A client's region is, first found: the region its request names; the longest CIDR rule
    /// containing its address; the rule for its GeoIP country, else for its continent; the
    /// default region. Its session goes to an edge in that region, else in the region's fallback
    /// regions in order, else in any region.
    #[command(after_help = REGIONS_EXAMPLES)]
    Regions {
        #[command(subcommand)]
        command: RegionsCommand,
        #[command(flatten)]
        options: AdminOptions,
    },
    /// Edges: their state, health and load; suspending and resuming them.
    #[command(after_help = EDGES_EXAMPLES)]
    Edges {
        #[command(subcommand)]
        command: EdgesCommand,
        #[command(flatten)]
        options: AdminOptions,
    },
    /// Placement dry runs: where a client would be placed now, and why.
    #[command(after_help = PLACEMENT_EXAMPLES)]
    Placement {
        #[command(subcommand)]
        command: PlacementCommand,
        #[command(flatten)]
        options: AdminOptions,
    },
    /// The GeoIP database the locator places clients with.
    Geoip {
        #[command(subcommand)]
        command: GeoipCommand,
        #[command(flatten)]
        options: AdminOptions,
    },
    /// Live and past sessions.
    #[command(after_help = SESSIONS_EXAMPLES)]
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
        #[command(flatten)]
        options: AdminOptions,
    },
    /// The audit log: who changed what, and what happened to sessions and edges.
    #[command(after_help = AUDIT_EXAMPLES)]
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        #[command(flatten)]
        options: AdminOptions,
    },
    /// Metrics entries the edges relayed: usage per interval and one summary per ended session.
    #[command(
        after_help = "Examples:\n  duet-locator metrics tail --kind usage --edge edge-1\n  duet-locator metrics tail --session s_0123456789abcdefghijklmn --since 7d"
    )]
    Metrics {
        #[command(subcommand)]
        command: MetricsCommand,
        #[command(flatten)]
        options: AdminOptions,
    },
    /// Usage over time: users in sessions, sessions and connections (peaks per step).
    #[command(after_help = "Examples:\n  duet-locator usage\n  duet-locator usage --since 7d --step 6h")]
    Usage {
        /// How far back to look, e.g. 1h, 7d.
        #[arg(long, value_name = "DURATION", value_parser = duet_edge::config::parse_duration, default_value = "1h")]
        since: std::time::Duration,
        /// Length of each step [default: about 1/120 of --since, at least 1m].
        #[arg(long, value_name = "DURATION", value_parser = duet_edge::config::parse_duration)]
        step: Option<std::time::Duration>,
        #[command(flatten)]
        options: AdminOptions,
    },
    /// Named admin API tokens with read or admin scope (needs an admin-scope token).
    #[command(after_help = TOKENS_EXAMPLES)]
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
        #[command(flatten)]
        options: AdminOptions,
    },
    /// Per-team client keys for IDE plugins (client_auth keys).
    #[command(
        after_help = "Examples:\n  duet-locator client-keys create platform vscode-fleet\n  duet-locator client-keys list --team platform\n  duet-locator client-keys revoke 0123456789ab"
    )]
    ClientKeys {
        #[command(subcommand)]
        command: ClientKeysCommand,
        #[command(flatten)]
        options: AdminOptions,
    },
    /// Print an Argon2 hash of a password read from stdin, for DUET_DASHBOARD_PASSWORD_HASH
    /// (dashboard logins with DUET_DASHBOARD_USER). Calls no locator.
    #[command(
        after_help = "Example:\n  printf %s \"$PASSWORD\" | duet-locator hash-password > dashboard-password-hash"
    )]
    HashPassword,
}

#[derive(Debug, clap::Subcommand)]
pub enum SessionsCommand {
    /// Sessions, newest first.
    List {
        /// Only live or only ended sessions [default: both].
        #[arg(long, value_parser = ["live", "ended"])]
        state: Option<String>,
        /// Only sessions on this edge.
        #[arg(long, value_name = "EDGE")]
        edge: Option<String>,
        /// Only sessions of this team.
        #[arg(long, value_name = "TEAM")]
        team: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// One session and its participants.
    Show {
        /// The session's id.
        #[arg(value_name = "SESSION")]
        session: String,
    },
    /// Why a session was placed where it was: the explanation stored at its placement.
    Placement {
        /// The session's id.
        #[arg(value_name = "SESSION")]
        session: String,
    },
}

/// Which entries `audit tail` and `metrics tail` show.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Only entries of this kind, e.g. edge_suspended, session_ended, token_created (audit), or
    /// usage, session_summary (metrics).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only entries about this edge.
    #[arg(long, value_name = "EDGE")]
    pub edge: Option<String>,
    /// Only entries about this session.
    #[arg(long, value_name = "SESSION")]
    pub session: Option<String>,
    /// How far back to look, e.g. 1h, 30d.
    #[arg(long, value_name = "DURATION", value_parser = duet_edge::config::parse_duration, default_value = "1h")]
    pub since: std::time::Duration,
    /// Show at most this many of the latest entries (1 to 1000).
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub lines: u32,
    /// Keep running and print entries as they are stored (every 2 s; Ctrl-C stops). With
    /// --json, one entry per line.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// The latest audit entries (oldest first), optionally filtered; --follow keeps printing
    /// new ones as they are stored.
    Tail {
        #[command(flatten)]
        tail: TailArgs,
        /// Only entries made by this principal, e.g. token:root, user:ada, locator.
        #[arg(long, value_name = "PRINCIPAL")]
        actor: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum MetricsCommand {
    /// The latest metrics entries (oldest first), optionally filtered; --follow keeps printing
    /// new ones as they are stored.
    Tail {
        #[command(flatten)]
        tail: TailArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ClientKeysCommand {
    /// Every client key (of one team with --team): team, name, creator, revocation, last use.
    List {
        /// Only this team's keys.
        #[arg(long, value_name = "TEAM")]
        team: Option<String>,
    },
    /// Create a key for TEAM and print it once; plugins send it as `Authorization: Bearer KEY`.
    Create {
        /// The team whose sessions and presence the key reaches.
        #[arg(value_name = "TEAM")]
        team: String,
        /// A name for the key within the team, e.g. the plugin fleet or office it is for.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Revoke a key at once, on every locator replica (running sessions continue).
    Revoke {
        /// The key's id (the ID column of `client-keys list`).
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Every token: name, scope, who made it, expiry, revocation and last use.
    List,
    /// Create a token and print it once (it is not stored, only its hash).
    Create {
        /// A name for the token, shown in the audit log as token:NAME.
        #[arg(value_name = "NAME")]
        name: String,
        /// read (every GET route except tokens) or admin (everything).
        #[arg(long, value_parser = ["read", "admin"])]
        scope: String,
        /// Lifetime, e.g. 90d [default: no expiry].
        #[arg(long, value_name = "DURATION", value_parser = duet_edge::config::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// Revoke a token at once, on every locator replica.
    Revoke {
        /// The token's id (the ID column of `tokens list`).
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum RegionsCommand {
    /// Show the regions (their edges and fallback orders) and the rules that place clients.
    List,
    /// Put an edge in a region, overriding the region it reports; --clear removes the override.
    #[command(
        after_help = "Examples:\n  duet-locator regions set-edge edge-1 eu\n  duet-locator regions set-edge edge-1 --clear"
    )]
    SetEdge {
        /// The edge's id, as `edges list` shows it.
        #[arg(value_name = "EDGE")]
        edge: String,
        /// The region the edge serves from now on.
        #[arg(value_name = "REGION", required_unless_present = "clear")]
        region: Option<String>,
        /// Remove the override: the region the edge's own configuration reports applies again.
        #[arg(long, conflicts_with = "region")]
        clear: bool,
    },
    /// Place clients whose address is in an IPv4 or IPv6 network in REGION (the longest matching
    /// network wins; checked before GeoIP).
    #[command(after_help = "Example:\n  duet-locator regions add-cidr 10.20.0.0/16 eu")]
    AddCidr {
        /// The network, e.g. 10.20.0.0/16 or 2001:db8::/32.
        #[arg(value_name = "CIDR")]
        cidr: String,
        /// The region its clients are placed in.
        #[arg(value_name = "REGION")]
        region: String,
    },
    /// Place clients whose GeoIP country is CODE in REGION.
    #[command(after_help = "Example:\n  duet-locator regions add-country GB uk")]
    AddCountry {
        /// ISO 3166-1 alpha-2 country code, e.g. GB, DE, US.
        #[arg(value_name = "CODE")]
        code: String,
        /// The region its clients are placed in.
        #[arg(value_name = "REGION")]
        region: String,
    },
    /// Place clients whose GeoIP continent is CODE (and whose country has no rule) in REGION.
    #[command(after_help = "Example:\n  duet-locator regions add-continent EU eu")]
    AddContinent {
        /// Continent code: AF, AN, AS, EU, NA, OC or SA.
        #[arg(value_name = "CODE")]
        code: String,
        /// The region its clients are placed in.
        #[arg(value_name = "REGION")]
        region: String,
    },
    /// Delete a rule (its id is in the RULE column of `regions list`).
    Remove {
        /// The rule's id.
        #[arg(value_name = "RULE_ID")]
        rule_id: i64,
    },
    /// Set the regions tried, in order, when REGION has no available edge; with none listed,
    /// clear the order (any region then serves).
    #[command(after_help = "Examples:\n  duet-locator regions fallback eu us ap\n  duet-locator regions fallback eu")]
    Fallback {
        /// The region whose fallback order is set.
        #[arg(value_name = "REGION")]
        region: String,
        /// The regions to try, in order.
        #[arg(value_name = "FALLBACK_REGION")]
        fallback: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum EdgesCommand {
    /// Show every edge: region, admin state, health, availability, load and last heartbeat.
    List,
    /// Suspend an edge: it keeps its sessions and gets new ones only when no other edge is
    /// available.
    Suspend {
        /// The edge's id, as `edges list` shows it.
        #[arg(value_name = "EDGE")]
        edge: String,
    },
    /// Resume a suspended or draining edge: it takes new sessions again.
    Resume {
        /// The edge's id, as `edges list` shows it.
        #[arg(value_name = "EDGE")]
        edge: String,
    },
    /// Drain an edge: suspend it and, at the deadline, end the sessions it still carries (their
    /// participants are sent back to the locator, which places them elsewhere).
    #[command(after_help = "Example:\n  duet-locator edges drain edge-1 --deadline 15m")]
    Drain {
        /// The edge's id, as `edges list` shows it.
        #[arg(value_name = "EDGE")]
        edge: String,
        /// Time the sessions get to end by themselves, from 1s to 24h.
        #[arg(long, value_name = "DURATION", value_parser = duet_edge::config::parse_duration, default_value = "5m")]
        deadline: std::time::Duration,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum PlacementCommand {
    /// Dry run: the region a client at IP resolves to and why, and the edge a new session would
    /// get, with every candidate's tier, filter and score. Nothing is placed or reserved.
    Explain {
        /// The client's IPv4 or IPv6 address.
        #[arg(value_name = "IP")]
        ip: IpAddr,
        /// A region the client asks for, as a session request may.
        #[arg(long, value_name = "REGION")]
        region: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum GeoipCommand {
    /// Re-read the configured GeoIP database file (after replacing it); a broken file is refused
    /// and the database in use stays.
    Reload,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error(transparent)]
    Setup(#[from] client::SetupError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the locator's answer does not fit this command ({0}); is it the same version as this binary?")]
    Answer(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Password(String),
    /// Arguments clap accepted but that make no sense together or in range.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Token(_) | CliError::Setup(_) | CliError::Password(_) => EXIT_USAGE,
            CliError::Usage(_) => 2,
            CliError::Call(CallError::Unreachable { .. }) => EXIT_UNAVAILABLE,
            CliError::Call(_) | CliError::Answer(_) | CliError::Runtime(_) => EXIT_API_ERROR,
        }
    }
}

impl Command {
    /// The shared options; `None` for `hash-password`, which calls no locator.
    pub fn options(&self) -> Option<&AdminOptions> {
        match self {
            Command::Regions { options, .. }
            | Command::Edges { options, .. }
            | Command::Placement { options, .. }
            | Command::Geoip { options, .. }
            | Command::Sessions { options, .. }
            | Command::Audit { options, .. }
            | Command::Usage { options, .. }
            | Command::Tokens { options, .. }
            | Command::ClientKeys { options, .. }
            | Command::Metrics { options, .. } => Some(options),
            Command::HashPassword => None,
        }
    }
}

/// Runs one admin command to completion on its own current-thread runtime, printing its output
/// to stdout and any error to stderr; answers the process's exit status.
pub fn run(command: Command, env: &dyn Env) -> ExitCode {
    match run_inner(command, env) {
        Ok(output) => {
            // A closed pipe (`| head`) is the reader's choice, not a failure.
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(output.as_bytes()).and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("duet-locator: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_inner(command: Command, env: &dyn Env) -> Result<String, CliError> {
    let Some(options) = command.options().cloned() else { return hash_password_from_stdin() };
    let token = token::resolve(env, options.token_file.as_deref(), Path::new(token::DEFAULT_TOKEN_FILE))?;
    let client = AdminClient::new(options.url, token, options.ca_file.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(CliError::Runtime)?;
    match &command {
        Command::Audit { command: AuditCommand::Tail { tail: args, actor }, .. } => {
            let t = Tail::new("audit", args, Some(("actor", actor.clone())), &|entries, follow| {
                render_entries(entries, |l| views::audit_table(l, follow))
            });
            return runtime.block_on(tail(&client, t, options.json));
        }
        Command::Metrics { command: MetricsCommand::Tail { tail: args }, .. } => {
            let t = Tail::new("metrics", args, None, &|entries, follow| {
                render_entries(entries, |l| views::metrics_table(l, follow))
            });
            return runtime.block_on(tail(&client, t, options.json));
        }
        _ => {}
    }
    let (view, json) = runtime.block_on(execute(&client, &command))?;
    if options.json {
        // The answer as it came, never through the typed views: nothing is lost or refused.
        return Ok(json.map(|v| pretty(&v)).unwrap_or_default());
    }
    render(view, json.as_ref(), OffsetDateTime::now_utc())
}

/// How a command's answer is shown to people.
enum View {
    Regions,
    Edges,
    Edge,
    Rule,
    RuleRemoved(i64),
    Fallback,
    Explanation,
    GeoIp,
    Sessions,
    SessionDetail,
    Usage,
    Tokens,
    TokenCreated,
    TokenRevoked,
    ClientKeys,
    ClientKeyCreated,
    ClientKeyRevoked,
    StoredExplanation,
}

/// Calls `/api/v1/admin/<tail>`.
async fn call(
    client: &AdminClient,
    method: Method,
    tail: &[&str],
    body: Option<Value>,
) -> Result<Option<Value>, CliError> {
    let segments: Vec<&str> = ["api", "v1", "admin"].iter().chain(tail).copied().collect();
    Ok(client.call(method, &segments, body.as_ref()).await?)
}

/// Makes the command's call; answers how to show it and the JSON answer (`None` when empty).
async fn execute(client: &AdminClient, command: &Command) -> Result<(View, Option<Value>), CliError> {
    let done = match command {
        Command::Regions { command, .. } => match command {
            RegionsCommand::List => (View::Regions, call(client, Method::GET, &["regions"], None).await?),
            RegionsCommand::SetEdge { edge, region, clear: _ } => {
                // clap guarantees REGION or --clear, never both: no region (null) clears.
                let body = json!({ "region": region });
                (View::Edge, call(client, Method::PUT, &["edges", edge, "region"], Some(body)).await?)
            }
            RegionsCommand::AddCidr { cidr, region } => add_rule(client, "cidr", cidr, region).await?,
            RegionsCommand::AddCountry { code, region } => add_rule(client, "country", code, region).await?,
            RegionsCommand::AddContinent { code, region } => add_rule(client, "continent", code, region).await?,
            RegionsCommand::Remove { rule_id } => {
                let id = rule_id.to_string();
                (View::RuleRemoved(*rule_id), call(client, Method::DELETE, &["regions", "rules", &id], None).await?)
            }
            RegionsCommand::Fallback { region, fallback } => {
                let body = json!({ "fallback": fallback });
                (View::Fallback, call(client, Method::PUT, &["regions", region, "fallback"], Some(body)).await?)
            }
        },
        Command::Edges { command, .. } => match command {
            EdgesCommand::List => (View::Edges, call(client, Method::GET, &["edges"], None).await?),
            EdgesCommand::Suspend { edge } => {
                (View::Edge, call(client, Method::POST, &["edges", edge, "suspend"], None).await?)
            }
            EdgesCommand::Resume { edge } => {
                (View::Edge, call(client, Method::POST, &["edges", edge, "resume"], None).await?)
            }
            EdgesCommand::Drain { edge, deadline } => {
                if deadline.as_secs() < 1 {
                    return Err(CliError::Usage("--deadline must be at least 1s".into()));
                }
                let body = json!({ "deadline_seconds": deadline.as_secs() });
                (View::Edge, call(client, Method::POST, &["edges", edge, "drain"], Some(body)).await?)
            }
        },
        Command::Placement { command: PlacementCommand::Explain { ip, region }, .. } => {
            let body = json!({ "client_ip": ip.to_string(), "region": region });
            (View::Explanation, call(client, Method::POST, &["placement", "dry-run"], Some(body)).await?)
        }
        Command::Geoip { command: GeoipCommand::Reload, .. } => {
            (View::GeoIp, call(client, Method::POST, &["geoip", "reload"], None).await?)
        }
        Command::Sessions { command: SessionsCommand::List { state, edge, team, limit }, .. } => {
            let query = [
                ("state", state.clone()),
                ("edge", edge.clone()),
                ("team", team.clone()),
                ("limit", Some(limit.to_string())),
            ];
            (View::Sessions, call_query(client, &["sessions"], &query).await?)
        }
        Command::Sessions { command: SessionsCommand::Show { session }, .. } => {
            (View::SessionDetail, call(client, Method::GET, &["sessions", session], None).await?)
        }
        Command::Usage { since, step, .. } => {
            let now = OffsetDateTime::now_utc();
            let query = [
                ("from", Some(ago_rfc3339(now, *since, "--since")?)),
                ("to", Some(rfc3339(now))),
                ("step_seconds", step.map(|s| s.as_secs().to_string())),
            ];
            (View::Usage, call_query(client, &["usage"], &query).await?)
        }
        Command::Tokens { command: TokensCommand::List, .. } => {
            (View::Tokens, call(client, Method::GET, &["tokens"], None).await?)
        }
        Command::Tokens { command: TokensCommand::Create { name, scope, expires_in }, .. } => {
            let body =
                json!({ "name": name, "scope": scope, "expires_in_seconds": expires_in.map(|d| d.as_secs().max(1)) });
            (View::TokenCreated, call(client, Method::POST, &["tokens"], Some(body)).await?)
        }
        Command::Tokens { command: TokensCommand::Revoke { id }, .. } => {
            (View::TokenRevoked, call(client, Method::DELETE, &["tokens", id], None).await?)
        }
        Command::ClientKeys { command: ClientKeysCommand::List { team }, .. } => {
            (View::ClientKeys, call_query(client, &["client-keys"], &[("team", team.clone())]).await?)
        }
        Command::ClientKeys { command: ClientKeysCommand::Create { team, name }, .. } => {
            let body = json!({ "team": team, "name": name });
            (View::ClientKeyCreated, call(client, Method::POST, &["client-keys"], Some(body)).await?)
        }
        Command::ClientKeys { command: ClientKeysCommand::Revoke { id }, .. } => {
            (View::ClientKeyRevoked, call(client, Method::DELETE, &["client-keys", id], None).await?)
        }
        Command::Sessions { command: SessionsCommand::Placement { session }, .. } => {
            (View::StoredExplanation, call(client, Method::GET, &["sessions", session, "placement"], None).await?)
        }
        Command::Audit { .. } | Command::Metrics { .. } | Command::HashPassword => {
            return Err(CliError::Answer("not a single-call command".into()));
        }
    };
    Ok(done)
}

async fn add_rule(
    client: &AdminClient,
    kind: &str,
    matcher: &str,
    region: &str,
) -> Result<(View, Option<Value>), CliError> {
    let body = json!({ "kind": kind, "match": matcher, "region": region });
    Ok((View::Rule, call(client, Method::POST, &["regions", "rules"], Some(body)).await?))
}

/// `GET /api/v1/admin/<tail>?<query>`.
async fn call_query(
    client: &AdminClient,
    tail: &[&str],
    query: &[(&str, Option<String>)],
) -> Result<Option<Value>, CliError> {
    let segments: Vec<&str> = ["api", "v1", "admin"].iter().chain(tail).copied().collect();
    Ok(client.call_with_query(Method::GET, &segments, query, None).await?)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// How often `audit tail --follow` asks for new entries.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// What `audit tail` and `metrics tail` read: the route, its filters and how much to show.
struct Tail<'a> {
    path: &'static str,
    filters: Vec<(&'static str, Option<String>)>,
    since: std::time::Duration,
    lines: u32,
    follow: bool,
    render: &'a dyn Fn(Vec<Value>, bool) -> String,
}

impl<'a> Tail<'a> {
    fn new(
        path: &'static str,
        args: &TailArgs,
        extra: Option<(&'static str, Option<String>)>,
        render: &'a dyn Fn(Vec<Value>, bool) -> String,
    ) -> Tail<'a> {
        let mut filters =
            vec![("kind", args.kind.clone()), ("edge", args.edge.clone()), ("session", args.session.clone())];
        filters.extend(extra);
        Tail { path, filters, since: args.since, lines: args.lines, follow: args.follow, render }
    }
}

/// Entries arrive late (edges relay them from their outbox, replicas commit out of order), so
/// `--follow` re-reads this much of the recent past on every poll and prints what it has not
/// printed yet; an entry stored more than this long after it happened is not followed.
const FOLLOW_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);

/// Every entry of `t.path` from `from` on, following the server's `next_cursor`.
async fn read_all(client: &AdminClient, t: &Tail<'_>, from: &str) -> Result<Vec<Value>, CliError> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("from", Some(from.to_owned()))];
        query.extend(t.filters.iter().cloned());
        query.push(("limit", Some(AUDIT_PAGE.to_string())));
        query.push(("cursor", cursor.take()));
        let page: Value = call_query(client, &[t.path], &query).await?.unwrap_or(Value::Null);
        entries.extend(page.get("entries").and_then(Value::as_array).cloned().unwrap_or_default());
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(entries),
        }
    }
}

/// `now - d` as RFC 3339, or a usage error when that is before year 1.
fn ago_rfc3339(now: OffsetDateTime, d: std::time::Duration, flag: &str) -> Result<String, CliError> {
    now.checked_sub(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
        .filter(|t| t.year() >= 1)
        .map(rfc3339)
        .ok_or_else(|| CliError::Usage(format!("{flag} reaches back before year 1")))
}

/// Prints the last `lines` entries since `since`; with `follow`, keeps printing new ones.
async fn tail(client: &AdminClient, t: Tail<'_>, json_out: bool) -> Result<String, CliError> {
    let from = ago_rfc3339(OffsetDateTime::now_utc(), t.since, "--since")?;
    let mut entries = read_all(client, &t, &from).await?;
    // Ids printed, with when they were last seen in a window (to forget them later).
    let mut seen: HashMap<String, std::time::Instant> =
        entries.iter().map(|e| (e["id"].to_string(), std::time::Instant::now())).collect();
    let skip = entries.len().saturating_sub(t.lines as usize);
    entries.drain(..skip);
    loop {
        let out = if json_out {
            if t.follow {
                entries.iter().map(|e| format!("{e}\n")).collect()
            } else {
                pretty(&Value::Array(entries))
            }
        } else {
            (t.render)(entries, t.follow)
        };
        if !t.follow {
            return Ok(out);
        }
        let mut stdout = std::io::stdout().lock();
        if stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).is_err() {
            return Ok(String::new());
        }
        drop(stdout);
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let window = ago_rfc3339(OffsetDateTime::now_utc(), FOLLOW_WINDOW.min(t.since), "--since")?;
        let now = std::time::Instant::now();
        entries = read_all(client, &t, &window)
            .await?
            .into_iter()
            .filter(|e| seen.insert(e["id"].to_string(), now).is_none())
            .collect();
        seen.retain(|_, at| now.duration_since(*at) < FOLLOW_WINDOW * 2);
    }
}

fn render_entries<T: DeserializeOwned>(entries: Vec<Value>, table: impl Fn(&[T]) -> String) -> String {
    match decode::<Vec<T>>(Some(&Value::Array(entries))) {
        Ok(list) => table(&list),
        Err(e) => format!("{e}\n"),
    }
}

/// Entries per request of `audit tail` (the API's maximum).
const AUDIT_PAGE: u32 = 1000;

/// `hash-password`: one line of stdin (without its line end) to an Argon2id PHC string.
fn hash_password_from_stdin() -> Result<String, CliError> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(CliError::Runtime)?;
    let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
    if password.chars().count() < 12 {
        return Err(CliError::Password("the password must have at least 12 characters".into()));
    }
    let hash = crate::dashboard::hash_password(password).map_err(CliError::Password)?;
    Ok(format!("{hash}\n"))
}

fn render(view: View, json: Option<&Value>, now: OffsetDateTime) -> Result<String, CliError> {
    Ok(match view {
        View::Regions => views::regions_tables(&decode(json)?, now),
        View::Edges => views::edge_table(&decode(json)?, now),
        View::Edge => views::edge_summary(&decode(json)?),
        View::Rule => views::rule_summary(&decode(json)?),
        View::RuleRemoved(id) => format!("rule {id} removed\n"),
        View::Fallback => views::fallback_summary(&decode(json)?),
        View::Explanation => views::explanation(&decode(json)?),
        View::GeoIp => views::geoip_reloaded(&decode(json)?, now),
        View::Sessions => views::session_table(&decode(json)?, now),
        View::SessionDetail => views::session_detail(&decode(json)?, now),
        View::Usage => views::usage_table(&decode(json)?),
        View::Tokens => views::token_table(&decode(json)?, now),
        View::TokenCreated => views::token_created(&decode(json)?),
        View::TokenRevoked => views::token_revoked(&decode(json)?),
        View::ClientKeys => views::client_key_table(&decode(json)?, now),
        View::StoredExplanation => {
            let explanation = json.and_then(|j| j.get("explanation"));
            views::explanation(&decode(explanation)?)
        }
        View::ClientKeyCreated => views::client_key_created(&decode(json)?),
        View::ClientKeyRevoked => views::client_key_revoked(&decode(json)?),
    })
}

fn decode<T: DeserializeOwned>(json: Option<&Value>) -> Result<T, CliError> {
    let value = json.ok_or_else(|| CliError::Answer("an empty answer".into()))?;
    T::deserialize(value).map_err(|e| CliError::Answer(e.to_string()))
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// `--url`: an absolute http:// or https:// URL (a path prefix, for a locator behind a proxy
/// under a sub-path, is kept).
fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{s:?} must start with http:// or https://"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// What `duet-locator` does: the admin commands as its optional subcommand.
    #[derive(Debug, Parser)]
    #[command(name = "duet-locator")]
    struct T {
        #[command(subcommand)]
        c: Command,
    }

    fn parse(args: &[&str]) -> Command {
        let argv = std::iter::once("duet-locator").chain(args.iter().copied());
        match T::try_parse_from(argv) {
            Ok(t) => t.c,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn refused(args: &[&str]) -> clap::error::ErrorKind {
        let argv = std::iter::once("duet-locator").chain(args.iter().copied());
        T::try_parse_from(argv).expect_err("should be refused").kind()
    }

    #[test]
    fn the_command_tree_is_consistent() {
        T::command().debug_assert();
    }

    #[test]
    fn regions_subcommands_parse() {
        assert!(matches!(parse(&["regions", "list"]), Command::Regions { command: RegionsCommand::List, .. }));
        let Command::Regions { command: RegionsCommand::SetEdge { edge, region, clear }, .. } =
            parse(&["regions", "set-edge", "edge-1", "eu"])
        else {
            panic!("set-edge")
        };
        assert_eq!((edge.as_str(), region.as_deref(), clear), ("edge-1", Some("eu"), false));
        let Command::Regions { command: RegionsCommand::SetEdge { region, clear, .. }, .. } =
            parse(&["regions", "set-edge", "edge-1", "--clear"])
        else {
            panic!("set-edge --clear")
        };
        assert_eq!((region, clear), (None, true));
        assert!(matches!(
            parse(&["regions", "add-cidr", "10.0.0.0/8", "eu"]),
            Command::Regions { command: RegionsCommand::AddCidr { ref cidr, ref region }, .. }
                if cidr == "10.0.0.0/8" && region == "eu"
        ));
        assert!(matches!(
            parse(&["regions", "add-country", "GB", "uk"]),
            Command::Regions { command: RegionsCommand::AddCountry { ref code, ref region }, .. }
                if code == "GB" && region == "uk"
        ));
        assert!(matches!(
            parse(&["regions", "add-continent", "EU", "eu"]),
            Command::Regions { command: RegionsCommand::AddContinent { ref code, ref region }, .. }
                if code == "EU" && region == "eu"
        ));
        assert!(matches!(
            parse(&["regions", "remove", "3"]),
            Command::Regions { command: RegionsCommand::Remove { rule_id: 3 }, .. }
        ));
        assert!(matches!(
            parse(&["regions", "fallback", "eu", "us", "ap"]),
            Command::Regions { command: RegionsCommand::Fallback { ref region, ref fallback }, .. }
                if region == "eu" && fallback == &["us", "ap"]
        ));
        assert!(matches!(
            parse(&["regions", "fallback", "eu"]),
            Command::Regions { command: RegionsCommand::Fallback { ref fallback, .. }, .. } if fallback.is_empty()
        ));
    }

    #[test]
    fn edges_placement_and_geoip_subcommands_parse() {
        assert!(matches!(parse(&["edges", "list"]), Command::Edges { command: EdgesCommand::List, .. }));
        assert!(matches!(
            parse(&["edges", "suspend", "edge-1"]),
            Command::Edges { command: EdgesCommand::Suspend { ref edge }, .. } if edge == "edge-1"
        ));
        assert!(matches!(
            parse(&["edges", "resume", "edge-1"]),
            Command::Edges { command: EdgesCommand::Resume { ref edge }, .. } if edge == "edge-1"
        ));
        let Command::Placement { command: PlacementCommand::Explain { ip, region }, .. } =
            parse(&["placement", "explain", "81.2.69.142"])
        else {
            panic!("explain")
        };
        assert_eq!((ip.to_string(), region), ("81.2.69.142".to_owned(), None));
        let Command::Placement { command: PlacementCommand::Explain { ip, region }, .. } =
            parse(&["placement", "explain", "2001:db8::1", "--region", "eu"])
        else {
            panic!("explain --region")
        };
        assert_eq!((ip.to_string(), region.as_deref()), ("2001:db8::1".to_owned(), Some("eu")));
        assert!(matches!(parse(&["geoip", "reload"]), Command::Geoip { command: GeoipCommand::Reload, .. }));
    }

    #[test]
    fn usage_errors_are_refused_by_clap() {
        use clap::error::ErrorKind;
        assert_eq!(refused(&["regions", "set-edge", "edge-1"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(refused(&["regions", "set-edge", "edge-1", "eu", "--clear"]), ErrorKind::ArgumentConflict);
        assert_eq!(refused(&["regions", "remove", "three"]), ErrorKind::ValueValidation);
        assert_eq!(refused(&["placement", "explain", "not-an-ip"]), ErrorKind::ValueValidation);
        assert_eq!(refused(&["edges", "list", "--url", "ftp://h"]), ErrorKind::ValueValidation);
        assert_eq!(refused(&["edges", "list", "--token", "secret"]), ErrorKind::UnknownArgument);
        assert_eq!(refused(&["edges"]), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
    }

    #[test]
    fn shared_options_are_accepted_after_the_subcommand() {
        let c = parse(&["edges", "list", "--json", "--url", "http://h:8080"]);
        assert!(matches!(c, Command::Edges { command: EdgesCommand::List, .. }));
        assert!(c.options().unwrap().json);
        assert_eq!(c.options().unwrap().url.as_str(), "http://h:8080/");
        let c = parse(&[
            "regions",
            "set-edge",
            "edge-1",
            "--clear",
            "--url",
            "https://ops.example/duet",
            "--ca-file",
            "/etc/ca.pem",
            "--token-file",
            "/run/token",
        ]);
        let o = c.options().unwrap();
        assert_eq!(o.url.as_str(), "https://ops.example/duet");
        assert_eq!(o.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(o.token_file.as_deref(), Some(Path::new("/run/token")));
        assert!(!o.json);
        // Before the subcommand works too.
        let c = parse(&["placement", "--json", "explain", "10.0.0.1"]);
        assert!(c.options().unwrap().json);
        let c = parse(&["geoip", "reload"]);
        if std::env::var_os(ENV_LOCATOR_URL).is_none() {
            assert_eq!(c.options().unwrap().url.as_str(), "http://127.0.0.1:8080/");
        }
    }

    #[test]
    fn exit_codes_follow_the_kind_of_failure() {
        let api = CliError::from(CallError::Api { status: 409, code: "conflict".into(), message: "taken".into() });
        assert_eq!((api.exit_code(), api.to_string().as_str()), (EXIT_API_ERROR, "taken (conflict, HTTP 409)"));
        let down = CliError::from(CallError::Unreachable { url: "http://h/".into(), cause: "refused".into() });
        assert_eq!(down.exit_code(), EXIT_UNAVAILABLE);
        assert_eq!(CliError::from(token::TokenError::Missing).exit_code(), EXIT_USAGE);
    }

    #[test]
    fn an_answer_of_another_shape_is_an_error_for_people_only() {
        let odd = json!({ "edges": "not a list" });
        let err = render(View::Edges, Some(&odd), OffsetDateTime::UNIX_EPOCH).unwrap_err();
        assert!(matches!(err, CliError::Answer(_)) && err.exit_code() == EXIT_API_ERROR, "{err}");
        let err = render(View::Edge, None, OffsetDateTime::UNIX_EPOCH).unwrap_err();
        assert!(err.to_string().contains("empty answer"), "{err}");
        let removed = render(View::RuleRemoved(3), None, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(removed, "rule 3 removed\n");
    }

    #[test]
    fn a_missing_token_exits_64_before_any_call() {
        let dir = tempfile::tempdir().unwrap();
        let options =
            ["edges", "list", "--token-file", dir.path().join("none").to_str().unwrap(), "--url", "http://127.0.0.1:9"]
                .map(String::from);
        let argv = std::iter::once("duet-locator".to_owned()).chain(options);
        let command = T::try_parse_from(argv).unwrap().c;
        let err = run_inner(command, &[("X", "")]).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_USAGE, "{err}");
    }
}
