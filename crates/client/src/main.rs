//! `duet`: a terminal client. `duet host` starts a session and prints how to join it;
//! `duet join <session>` joins. Lines typed in one terminal appear in the others.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use duet_client::{Event, LocatorClient, PlacementRequest, User};
use duet_proto::session::EdgeFrame;
use tokio::io::{AsyncBufReadExt, BufReader};

/// duet terminal client: host or join a session and chat line by line.
#[derive(Parser)]
#[command(name = "duet", version, about)]
struct Args {
    /// The locator's URL.
    #[arg(long, env = "DUET_LOCATOR_URL", default_value = "http://127.0.0.1:8080", global = true)]
    locator: String,
    /// Extra CA certificates (PEM) to trust for https:// and wss:// URLs, besides the system roots.
    #[arg(long, env = "DUET_CA_FILE", global = true, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Your display name.
    #[arg(long, global = true)]
    name: Option<String>,
    /// File holding your team's client key or an ID token, for a locator that admits clients by
    /// `keys` or `oidc` (DUET_CLIENT_KEY may hold a key directly).
    #[arg(long, env = "DUET_CREDENTIAL_FILE", global = true, value_name = "FILE")]
    credential_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a session as its host.
    Host {
        /// Team the session belongs to.
        #[arg(long)]
        team: Option<String>,
    },
    /// Join a session as a guest.
    Join {
        /// The session id printed by `duet host`.
        session: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duet: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    duet_ws::tls::install_default_provider();
    let (locator, tls) = match &args.ca_file {
        Some(path) => {
            let certs = duet_ws::tls::read_pem_certs(path)?;
            let der: Vec<Vec<u8>> = certs.iter().map(|c| c.to_vec()).collect();
            (LocatorClient::with_ca_certs(&args.locator, &der)?, Some(duet_ws::tls::client_config(&certs)?))
        }
        None => (LocatorClient::new(&args.locator), None),
    };
    let credential = match (&args.credential_file, std::env::var("DUET_CLIENT_KEY")) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("credential file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, Ok(key)) if !key.trim().is_empty() => Some(key.trim().to_owned()),
        _ => None,
    };
    let locator = match credential {
        Some(c) => locator.with_credential(c),
        None => locator,
    };
    let user = args.name.clone().map(|name| User { id: name.to_lowercase().replace(' ', "-"), name });
    let placed = match &args.command {
        Command::Host { team } => {
            let p =
                locator.create_session(&PlacementRequest { team: team.clone(), user, ..Default::default() }).await?;
            println!("session {} on edge {} ({})", p.session_id, p.edge.id, p.edge.region);
            println!("join from another shell with: duet join {}", p.session_id);
            p
        }
        Command::Join { session } => {
            locator.join_session(session, &PlacementRequest { team: None, user, ..Default::default() }).await?
        }
    };
    let mut session = duet_client::connect_with_tls(&placed.edge.url, &placed.token, tls).await?;
    let mut names: HashMap<u32, String> =
        session.welcome.participants.iter().map(|p| (p.id, p.display_name.clone())).collect();
    let others: Vec<&str> = session
        .welcome
        .participants
        .iter()
        .filter(|p| p.id != session.welcome.participant_id)
        .map(|p| p.display_name.as_str())
        .collect();
    println!(
        "joined as participant {}; here: {}",
        session.welcome.participant_id,
        if others.is_empty() { "nobody else yet".to_string() } else { others.join(", ") }
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => session.send(0, 0, line.into_bytes())?,
                _ => {
                    stdin_open = false;
                    session.leave()?;
                }
            },
            event = session.recv() => match event {
                Some(Event::Frame(EdgeFrame::Message { from, payload, .. })) => {
                    let name = names.get(&from).cloned().unwrap_or_else(|| format!("#{from}"));
                    println!("{name}: {}", String::from_utf8_lossy(&payload));
                }
                Some(Event::Frame(EdgeFrame::ParticipantJoined { participant, .. })) => {
                    println!("* {} joined", participant.display_name);
                    names.insert(participant.id, participant.display_name);
                }
                Some(Event::Frame(EdgeFrame::ParticipantLeft { participant_id, .. })) => {
                    let name = names.remove(&participant_id).unwrap_or_else(|| format!("#{participant_id}"));
                    println!("* {name} left");
                }
                Some(Event::Frame(EdgeFrame::Error { code, message })) => eprintln!("duet: edge error {code}: {message}"),
                Some(Event::Frame(_)) => {}
                Some(Event::Closed { code, reason }) => {
                    if code == Some(1000) || !stdin_open {
                        return Ok(());
                    }
                    return Err(duet_client::ClientError::Closed { code, reason }.into());
                }
                None => return Ok(()),
            },
        }
    }
}
