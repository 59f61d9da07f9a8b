//! `GET /api/v1/teams/{team}/presence`: which edge serves a team's presence, and a token for it.
//!
//! Each team's presence lives on one edge, recorded in `team_presence`. The assignment stays
//! while that edge takes joins (up, or link lost for less than `link_grace`); once it is gone,
//! the next request assigns the team to the best edge by load and the client's region, as for a
//! new session. The assignment is conditional on the previous one, so racing replicas agree.
//! The edge learns the team's live sessions from the locator over its link: at every request
//! here, and whenever one of the team's sessions starts or ends ([`sessions_changed`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use duet_proto::link::Command;
use duet_proto::token::Claims;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::sessions::{check_joinable, check_len, sign, EdgeInfo};
use super::ApiError;
use crate::db::{audit_kind, LocatorAuditEntry, ACTOR_LOCATOR};
use crate::tokens::now_ms;
use crate::LocatorState;

/// Sessions listed per team (the newest).
const LISTED_SESSIONS: u32 = 500;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceQuery {
    /// The user's stable id (1-256 bytes); a made-up anonymous id without it.
    pub user: Option<String>,
    /// Display name (1-256 bytes).
    pub name: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PresenceAnswer {
    pub team: String,
    pub edge: EdgeInfo,
    pub token: String,
    /// RFC 3339, UTC: connect before then.
    pub expires_at: String,
}

/// Path segment escaping for the team name in the edge URL (RFC 3986 unreserved stay as is).
fn escape_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn presence(
    State(state): State<Arc<LocatorState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    team: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<PresenceQuery>, QueryRejection>,
) -> Result<Json<PresenceAnswer>, ApiError> {
    let Path(team) = team.map_err(|e| ApiError::BadRequest(format!("team: {}", e.body_text())))?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    check_len("team", &team, 128)?;
    if team == "." || team == ".." {
        return Err(ApiError::BadRequest("`team` cannot be `.` or `..` (URLs cannot name them)".into()));
    }
    if let Some(user) = &q.user {
        check_len("user", user, 256)?;
    }
    if let Some(name) = &q.name {
        check_len("name", name, 256)?;
    }
    let now = now_ms();
    let current = state.store.presence_edge(&team).await?;
    let current_edge = match &current {
        Some((edge_id, _)) => state.store.edge(edge_id).await?,
        None => None,
    };
    let edge =
        match current_edge {
            Some(edge) if check_joinable(&state, &edge).is_ok() => edge,
            _ => {
                let client_ip = crate::client_addr::client_ip(peer.ip(), &headers, &state.config.trusted_proxies);
                let decision = state.placer.place(Some(client_ip), None, false);
                let chosen = decision.edge.ok_or(ApiError::NoEdgeAvailable)?;
                let previous = current.as_ref().map(|(id, _)| id.as_str());
                let assigned = state.store.assign_presence(&team, &chosen.id, previous, now).await?;
                if let Some(previous) = previous.filter(|p| *p != assigned) {
                    let entry = LocatorAuditEntry {
                        at_ms: now,
                        kind: audit_kind::PRESENCE_MOVED.into(),
                        edge_id: Some(assigned.clone()),
                        session_id: None,
                        actor: ACTOR_LOCATOR.into(),
                        detail: format!("team {team}: from {previous}, which is gone, to {assigned}"),
                    };
                    if let Err(e) = state.store.insert_audit(&entry).await {
                        tracing::warn!(error = %e, "could not audit a presence move");
                    }
                    tracing::info!(team = %team, from = previous, to = %assigned, "team presence moved");
                }
                if assigned == chosen.id {
                    chosen
                } else {
                    state.store.edge(&assigned).await?.ok_or_else(|| {
                        ApiError::Internal(format!("team {team} is assigned to unknown edge {assigned}"))
                    })?
                }
            }
        };
    send_team_sessions(&state, &team, &edge.id).await;

    // Without a name, the user id is the name.
    let (user_id, display_name) = match (q.user, q.name) {
        (Some(id), Some(name)) => (id, name),
        (Some(id), None) => (id.clone(), id),
        (None, name) => {
            let suffix = crate::ids::random_id(10);
            let name = name.unwrap_or_else(|| format!("Guest {}", &suffix[..4]));
            (format!("anon-{suffix}"), name)
        }
    };
    let claims = Claims {
        sid: duet_proto::presence::presence_subject(&team),
        role: "member".into(),
        pid: 0,
        sub: user_id,
        name: display_name,
        team: Some(team.clone()),
        appr: false,
        maxp: None,
        edge: edge.id.clone(),
        iat: 0,
        exp: 0,
    };
    let (token, expires_at) = sign(&state, claims)?;
    let url = format!("{}/v1/teams/{}/presence", edge.public_url.trim_end_matches('/'), escape_segment(&team));
    Ok(Json(PresenceAnswer {
        team,
        edge: EdgeInfo { id: edge.id.clone(), region: edge.effective_region().to_owned(), url },
        token,
        expires_at,
    }))
}

/// Sends `team`'s live sessions to its presence edge, if this replica holds that edge's link.
async fn send_team_sessions(state: &LocatorState, team: &str, edge_id: &str) {
    if !state.links.is_linked(edge_id) {
        return;
    }
    match state.store.live_team_sessions(team, LISTED_SESSIONS).await {
        Ok(sessions) => {
            state.links.send_to(edge_id, &Command::TeamSessions { team: team.to_owned(), sessions });
        }
        Err(e) => tracing::warn!(error = %e, team, "could not read the team's live sessions"),
    }
}

/// Sessions whose start or end may change a team's presence, waiting for [`run_notifier`].
const NOTIFY_QUEUE: usize = 65_536;

/// Tells the presence notifier about sessions that started or ended.
pub struct Notifier {
    tx: mpsc::Sender<String>,
}

impl Notifier {
    pub fn new() -> (Notifier, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(NOTIFY_QUEUE);
        (Notifier { tx }, rx)
    }

    /// Queues a session whose state changed (never waits; a full queue drops the notice, and
    /// the team's list is sent again at the next change or presence request).
    pub fn session_changed(&self, session_id: &str) {
        if self.tx.try_send(session_id.to_owned()).is_err() {
            tracing::debug!("presence notifier queue full");
        }
    }
}

/// Sends each team whose sessions changed its new list of live sessions, on its presence edge.
/// One task, so the lists for a team leave in the order they were read: the last one is current.
pub async fn run_notifier(state: Arc<LocatorState>, mut rx: mpsc::Receiver<String>) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, 1024) => if n == 0 { return },
            _ = state.shutdown.cancelled() => return,
        }
        let mut teams = std::collections::BTreeSet::new();
        for session_id in batch.drain(..) {
            match state.store.session(&session_id).await {
                Ok(Some(s)) => teams.extend(s.team),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not read a session for presence"),
            }
        }
        for team in teams {
            match state.store.presence_edge(&team).await {
                Ok(Some((edge_id, _))) => send_team_sessions(&state, &team, &edge_id).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not read a team's presence edge"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn team_names_are_escaped_as_one_path_segment() {
        assert_eq!(super::escape_segment("platform-eu_1.x~"), "platform-eu_1.x~");
        assert_eq!(super::escape_segment("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }
}
