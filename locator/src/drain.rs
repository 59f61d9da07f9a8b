//! Drain deadlines: when a draining edge's deadline passes, the locator replica holding its link
//! ends every session the edge still carries, with close code 4400 (ask the locator again), so
//! its participants come back through placement to another edge.
//!
//! Each replica checks the edges linked to it once a second. The replica that clears the stored
//! deadline (a conditional update, so exactly one wins even if the edge relinks elsewhere at the
//! same moment) sends the command and writes the `edge_drained` audit entry. The edge stays
//! `draining`, without a deadline, until an admin resumes it. An edge whose link is down at its
//! deadline is handled when it links again.

use std::sync::Arc;
use std::time::Duration;

use duet_proto::link::{Command, SessionEndReason, LINK_VERSION_END_ALL};

use crate::db::{audit_kind, AdminState, LocatorAuditEntry, StoreError, ACTOR_LOCATOR};
use crate::tokens::now_ms;
use crate::LocatorState;

/// How often a replica looks for drains that reached their deadline.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(state: Arc<LocatorState>) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = check(&state).await {
            tracing::warn!(error = %e, "drain check failed; retrying");
        }
    }
}

/// Ends the sessions of every linked edge whose drain deadline has passed; answers how many
/// edges it drained.
pub async fn check(state: &LocatorState) -> Result<usize, StoreError> {
    let linked = state.links.linked_edges();
    if linked.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    let mut drained = 0;
    for edge in state.store.edges().await? {
        let Some(deadline) = edge.drain_deadline else { continue };
        if edge.admin_state != AdminState::Draining || deadline > now {
            continue;
        }
        let Some(version) = state.links.link_version(&edge.id) else { continue };
        if !state.store.claim_drain_deadline(&edge.id, deadline).await? {
            continue;
        }
        let ended = end_all(state, &edge.id, version).await?;
        tracing::info!(edge.id = %edge.id, "drain deadline reached: the edge's sessions were told to end");
        let entry = LocatorAuditEntry {
            at_ms: now_ms(),
            kind: audit_kind::EDGE_DRAINED.into(),
            edge_id: Some(edge.id.clone()),
            session_id: None,
            actor: ACTOR_LOCATOR.into(),
            detail: format!("drain deadline reached; {ended}"),
        };
        state.store.insert_audit(&entry).await?;
        drained += 1;
    }
    Ok(drained)
}

/// Tells the edge to end its sessions; answers what was sent, for the audit entry.
async fn end_all(state: &LocatorState, edge_id: &str, version: u16) -> Result<String, StoreError> {
    if version >= LINK_VERSION_END_ALL {
        let sent = state.links.send_to(edge_id, &Command::EndAllSessions { reason: SessionEndReason::Drained });
        return Ok(if sent { "every session on the edge was ended" } else { "the edge's link closed first" }.into());
    }
    // An edge of the previous version knows only per-session ends (closing with 4200).
    let live = state.store.live_sessions_on(edge_id).await?;
    for s in &live {
        state
            .links
            .send_to(edge_id, &Command::EndSession { session_id: s.id.clone(), reason: SessionEndReason::Ended });
    }
    Ok(format!("{} sessions were ended one by one (edge on link version {version})", live.len()))
}
