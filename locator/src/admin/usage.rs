//! `GET /usage`: usage over time, for the dashboard's charts and capacity planning.
//!
//! Parameters, all optional: `from` and `to` (RFC 3339; default the last hour) and
//! `step_seconds` (default: the span divided into about 120 steps, at least 60 s). The answer has
//! one point per step, oldest first:
//!
//! - `connections` and `sessions`: each edge's peak within the step, from its `usage` metrics
//!   entries (one per edge per `usage_interval`), summed over edges. A step with no entry from an
//!   edge counts 0 for it.
//! - `users_online`: distinct users holding a place in a session that was live during the step
//!   (from joining until the session ended), from the session tables.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::audit::time_param;
use super::rfc3339_ms;
use crate::api::ApiError;
use crate::LocatorState;

/// At most this many points per answer.
pub const MAX_POINTS: i64 = 500;
/// The smallest step: below the edges' usage interval a series is mostly empty steps.
pub const MIN_STEP_SECONDS: i64 = 10;
/// The largest step: a year.
pub const MAX_STEP_SECONDS: i64 = 366 * 86_400;
/// Participants read for `users_online`; beyond this the answer says `truncated`.
const MAX_SPANS: u32 = 50_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    step_seconds: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Point {
    pub at: String,
    pub users_online: u64,
    pub sessions: u64,
    pub connections: u64,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub from: String,
    pub to: String,
    pub step_seconds: i64,
    pub points: Vec<Point>,
    /// True when there were more participants than one answer reads: `users_online` is then a
    /// lower bound.
    pub truncated: bool,
}

/// `a / b` rounded up, for positive `a` and `b`.
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// `(from, to, step_ms)` in Unix ms, checked.
pub fn parse(q: UsageQuery, now_ms: i64) -> Result<(i64, i64, i64), ApiError> {
    let to = time_param("to", q.to)?.unwrap_or(now_ms);
    let from = time_param("from", q.from)?.unwrap_or(to - 3_600_000);
    if from >= to {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    let span_s = ceil_div(to - from, 1000);
    let step_s = match q.step_seconds {
        None => (span_s / 120).max(60),
        Some(s) => {
            s.parse::<i64>().ok().filter(|n| (MIN_STEP_SECONDS..=MAX_STEP_SECONDS).contains(n)).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`step_seconds` {s:?} must be a whole number from {MIN_STEP_SECONDS} to {MAX_STEP_SECONDS}"
                ))
            })?
        }
    };
    if ceil_div(span_s, step_s) > MAX_POINTS {
        return Err(ApiError::BadRequest(format!(
            "{span_s} s in steps of {step_s} s is more than {MAX_POINTS} points: use a larger `step_seconds`"
        )));
    }
    Ok((from, to, step_s * 1000))
}

pub async fn series(
    State(state): State<Arc<LocatorState>>,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<Usage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (from, to, step) = parse(q, crate::tokens::now_ms())?;
    let n = ceil_div(to - from, step) as usize;
    let mut sessions = vec![0u64; n];
    let mut connections = vec![0u64; n];
    for row in state.store.usage_rows(from, to, step).await? {
        let Some(i) = usize::try_from(row.bucket).ok().filter(|i| *i < n) else { continue };
        sessions[i] += row.sessions.max(0) as u64;
        connections[i] += row.connections.max(0) as u64;
    }
    let spans = state.store.user_spans(from, to, MAX_SPANS).await?;
    let truncated = spans.len() >= MAX_SPANS as usize;
    let mut users: Vec<HashSet<&str>> = vec![HashSet::new(); n];
    let bucket = |t: i64| ((t - from).max(0) / step).min(n as i64 - 1) as usize;
    let now = crate::tokens::now_ms();
    for span in &spans {
        // A place is held over [joined, ended), and a live one until now, not into the future.
        let end = span.until.unwrap_or(now).min(to);
        if end <= from || end <= span.from {
            continue;
        }
        for set in &mut users[bucket(span.from)..=bucket(end - 1)] {
            set.insert(span.user_id.as_str());
        }
    }
    let points = (0..n)
        .map(|i| Point {
            at: rfc3339_ms(from + i as i64 * step),
            users_online: users[i].len() as u64,
            sessions: sessions[i],
            connections: connections[i],
        })
        .collect();
    Ok(Json(Usage { from: rfc3339_ms(from), to: rfc3339_ms(to), step_seconds: step / 1000, points, truncated }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_steps_are_checked() {
        let now = 10_000_000;
        assert_eq!(parse(UsageQuery::default(), now).unwrap(), (now - 3_600_000, now, 60_000));
        let q = UsageQuery { step_seconds: Some("3600".into()), ..Default::default() };
        assert_eq!(parse(q, now).unwrap().2, 3_600_000);
        for bad in [
            UsageQuery { step_seconds: Some("1".into()), ..Default::default() },
            UsageQuery { step_seconds: Some("x".into()), ..Default::default() },
            UsageQuery { step_seconds: Some("9223372036854775806".into()), ..Default::default() },
            UsageQuery {
                from: Some("2030-01-01T00:00:00Z".into()),
                to: Some("2020-01-01T00:00:00Z".into()),
                ..Default::default()
            },
            UsageQuery {
                from: Some("2020-01-01T00:00:00Z".into()),
                to: Some("2030-01-01T00:00:00Z".into()),
                step_seconds: Some("60".into()),
            },
        ] {
            assert!(matches!(parse(bad, now), Err(ApiError::BadRequest(_))));
        }
    }
}
