//! The admin subcommands of `duet-locator` (`regions`, `edges`, `placement`, `geoip`): each
//! makes one call to the admin API of a running locator and prints the answer for people
//! (aligned tables, short summaries) or, with `--json`, as the API's JSON for scripts.
//!
//! Guarantees:
//! - The admin token is never a flag value (see [`token`] for where it is found).
//! - Exit status: 0 success; 1 the locator answered an error (printed as
//!   `duet-locator: <message> (<code>, HTTP <status>)`); 2 usage (clap); 64 no usable admin token
//!   or CA file; 69 the locator cannot be reached.
//! - Human output goes to stdout, errors to stderr; `--json` output is exactly the server's JSON,
//!   pretty-printed, so fields this CLI does not know yet pass through.
//!
//! Layout: [`client`] (the HTTP calls and their errors), [`token`], [`views`] (typed answers and
//! their rendering), [`table`] (the aligned-table printer).

pub mod client;
pub mod table;
pub mod token;
pub mod views;

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
    /// Resume a suspended edge: it takes new sessions again.
    Resume {
        /// The edge's id, as `edges list` shows it.
        #[arg(value_name = "EDGE")]
        edge: String,
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
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Token(_) | CliError::Setup(_) => EXIT_USAGE,
            CliError::Call(CallError::Unreachable { .. }) => EXIT_UNAVAILABLE,
            CliError::Call(_) | CliError::Answer(_) | CliError::Runtime(_) => EXIT_API_ERROR,
        }
    }
}

impl Command {
    pub fn options(&self) -> &AdminOptions {
        match self {
            Command::Regions { options, .. }
            | Command::Edges { options, .. }
            | Command::Placement { options, .. }
            | Command::Geoip { options, .. } => options,
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
    let options = command.options().clone();
    let token = token::resolve(env, options.token_file.as_deref(), Path::new(token::DEFAULT_TOKEN_FILE))?;
    let client = AdminClient::new(options.url, token, options.ca_file.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(CliError::Runtime)?;
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
        },
        Command::Placement { command: PlacementCommand::Explain { ip, region }, .. } => {
            let body = json!({ "client_ip": ip.to_string(), "region": region });
            (View::Explanation, call(client, Method::POST, &["placement", "dry-run"], Some(body)).await?)
        }
        Command::Geoip { command: GeoipCommand::Reload, .. } => {
            (View::GeoIp, call(client, Method::POST, &["geoip", "reload"], None).await?)
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
        assert!(c.options().json);
        assert_eq!(c.options().url.as_str(), "http://h:8080/");
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
        let o = c.options();
        assert_eq!(o.url.as_str(), "https://ops.example/duet");
        assert_eq!(o.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(o.token_file.as_deref(), Some(Path::new("/run/token")));
        assert!(!o.json);
        // Before the subcommand works too.
        let c = parse(&["placement", "--json", "explain", "10.0.0.1"]);
        assert!(c.options().json);
        let c = parse(&["geoip", "reload"]);
        if std::env::var_os(ENV_LOCATOR_URL).is_none() {
            assert_eq!(c.options().url.as_str(), "http://127.0.0.1:8080/");
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
