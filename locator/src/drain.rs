//! Drain deadlines: when a draining edge's deadline passes, the locator replica holding its link
//! tells the edge to end every session it still carries, with close code 4400 (ask the locator
//! again), so its participants come back through placement to another edge. From then on the
//! edge takes no new sessions (placement filters it as `drained`) until an admin resumes it.
//!
//! Each replica checks the draining edges linked to it once a second and sends the command once
//! per link: an edge that was unlinked at its deadline, or whose link died before the command
//! arrived, gets it again on its next link (ending sessions is idempotent, and a drained edge
//! should carry none). The first replica to act records `drained_at` with a conditional update
//! and writes the one `edge_drained` audit entry.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duet_proto::link::{Command, SessionEndReason, LINK_VERSION_END_ALL};

use crate::db::{audit_kind, LocatorAuditEntry, StoreError, ACTOR_LOCATOR};
use crate::tokens::now_ms;
use crate::LocatorState;

/// How often a replica looks for drains that reached their deadline.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The links (edge id, link id) this replica has sent a drain's command on.
#[derive(Default)]
pub struct Sent(Mutex<HashSet<(String, u64)>>);

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

/// Ends the sessions of every linked edge whose drain deadline has passed, once per link;
/// answers how many edges it told.
pub async fn check(state: &LocatorState) -> Result<usize, StoreError> {
    let linked = state.links.linked_edges();
    {
        // Forget links that are gone.
        let mut sent = state.drain_sent.0.lock().unwrap_or_else(|p| p.into_inner());
        sent.retain(|key| linked.contains(key));
    }
    if linked.is_empty() {
        return Ok(0);
    }
    let now = now_ms();
    let mut told = 0;
    for edge in state.store.draining_edges().await? {
        let Some(deadline) = edge.drain_deadline.filter(|_| edge.drain_due(now)) else { continue };
        let Some(key) = linked.iter().find(|(id, _)| *id == edge.id).cloned() else { continue };
        let Some(version) = state.links.link_version(&edge.id) else { continue };
        if !state.drain_sent.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key) {
            continue;
        }
        let ended = end_all(state, &edge.id, version).await?;
        told += 1;
        tracing::info!(edge.id = %edge.id, "drain deadline reached: the edge was told to end its sessions");
        if state.store.mark_drained(&edge.id, deadline, now_ms()).await? {
            let entry = LocatorAuditEntry {
                at_ms: now_ms(),
                kind: audit_kind::EDGE_DRAINED.into(),
                edge_id: Some(edge.id.clone()),
                session_id: None,
                actor: ACTOR_LOCATOR.into(),
                detail: format!("drain deadline reached; {ended}"),
            };
            state.store.insert_audit(&entry).await?;
        }
    }
    Ok(told)
}

/// Tells the edge to end its sessions; answers what was sent, for the audit entry.
async fn end_all(state: &LocatorState, edge_id: &str, version: u16) -> Result<String, StoreError> {
    if version >= LINK_VERSION_END_ALL {
        let sent = state.links.send_to(edge_id, &Command::EndAllSessions { reason: SessionEndReason::Drained });
        return Ok(if sent {
            "the edge was told to end every session it carries"
        } else {
            "the edge's link closed first; it is told when it links again"
        }
        .into());
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
