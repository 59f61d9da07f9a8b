//! `GET /api/v1/teams/{team}/presence`: which edge serves a team's presence, and a token for it.
//!
//! Each team's presence lives on one edge, recorded in `team_presence`. The assignment stays
//! while that edge takes joins (up, or link lost for less than `link_grace`); once it is gone,
//! the next request assigns the team to the best edge by load and the client's region, as for a
//! new session. The assignment is conditional on the previous one, so racing replicas agree.
//! Edges learn their teams' live sessions from the locator over their links ([`run_sync`]): each
//! replica sends the edges linked to it the lists of the teams assigned to them, whenever they
//! change (checked at once when a session starts or ends here, and every 2 s for changes seen by
//! other replicas).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use duet_proto::link::Command;
use duet_proto::token::Claims;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio::sync::Notify;

use super::sessions::{check_joinable, check_len, sign, EdgeInfo};
use super::ApiError;
use crate::db::{audit_kind, LocatorAuditEntry, ACTOR_LOCATOR};
use crate::tokens::now_ms;
use crate::LocatorState;

/// Sessions listed per team (the newest).
const LISTED_SESSIONS: usize = 500;

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
    let client_ip = crate::client_addr::client_ip(peer.ip(), &headers, &state.config.trusted_proxies);
    let client = crate::access::admit(&state, &headers, client_ip).await?;
    client.may_use_team(Some(&team))?;
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
    state.presence.changed();

    // Without a name, the user id is the name.
    let (user_id, display_name) = match (client.user(), q.user, q.name) {
        (Some(vouched), _, _) => vouched,
        (None, Some(id), Some(name)) => (id, name),
        (None, Some(id), None) => (id.clone(), id),
        (None, None, name) => {
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

/// How often each replica compares its linked edges' team session lists with the database even
/// when nothing here changed (sessions reported to other replicas, a notice lost in a full queue).
const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Wakes [`run_sync`] when a session started or ended, or a team was assigned.
#[derive(Default)]
pub struct Notifier {
    wake: Notify,
}

impl Notifier {
    /// Something may have changed a team's live sessions; never waits, and many notices before
    /// the next sync make one sync.
    pub fn changed(&self) {
        self.wake.notify_one();
    }
}

/// What was last sent to one edge's link, per team.
struct Sent {
    link_id: u64,
    teams: HashMap<String, Vec<String>>,
}

/// Keeps every edge linked to this replica up to date with the live sessions of the teams whose
/// presence it serves, sending only lists that changed (and an empty list for a team that has
/// none any more or moved away). A new link of an edge gets every list again.
pub async fn run_sync(state: Arc<LocatorState>) {
    let mut sent: HashMap<String, Sent> = HashMap::new();
    loop {
        tokio::select! {
            _ = state.presence.wake.notified() => {}
            _ = tokio::time::sleep(SYNC_INTERVAL) => {}
            _ = state.shutdown.cancelled() => return,
        }
        if let Err(e) = sync_once(&state, &mut sent).await {
            tracing::warn!(error = %e, "could not sync team presence; retrying");
        }
    }
}

async fn sync_once(state: &LocatorState, sent: &mut HashMap<String, Sent>) -> Result<(), crate::db::StoreError> {
    let linked = state.links.linked_edges();
    sent.retain(|edge, s| linked.iter().any(|(e, id)| e == edge && *id == s.link_id));
    if linked.is_empty() {
        return Ok(());
    }
    let mut wanted: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
    for (edge, team, session) in state.store.presence_sessions().await? {
        let list = wanted.entry(edge).or_default().entry(team).or_default();
        if list.len() < LISTED_SESSIONS {
            list.push(session);
        }
    }
    for (edge, link_id) in linked {
        let now = wanted.remove(&edge).unwrap_or_default();
        let was = sent.entry(edge.clone()).or_insert_with(|| Sent { link_id, teams: HashMap::new() });
        let gone: Vec<String> = was.teams.keys().filter(|t| !now.contains_key(*t)).cloned().collect();
        for team in gone {
            was.teams.remove(&team);
            state.links.send_to(&edge, &Command::TeamSessions { team, sessions: Vec::new() });
        }
        for (team, sessions) in now {
            if was.teams.get(&team) != Some(&sessions) {
                state.links.send_to(&edge, &Command::TeamSessions { team: team.clone(), sessions: sessions.clone() });
                was.teams.insert(team, sessions);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn team_names_are_escaped_as_one_path_segment() {
        assert_eq!(super::escape_segment("platform-eu_1.x~"), "platform-eu_1.x~");
        assert_eq!(super::escape_segment("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }
}
