//! The admin API's answers as the CLI shows them to people: typed views of just the fields shown
//! (unknown fields are ignored, so a newer locator does not break an older CLI) and their
//! rendering as short summaries and [`Table`]s. Rendering is pure: it takes "now" as an argument
//! and returns text, so every output is tested without a clock or a terminal.
//!
//! Times are shown as ages relative to now ("3s ago", "5m ago"), the question an operator asks
//! of a heartbeat or a rule; a GeoIP database's build is shown as its date and age.

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::table::{Align, Table};

/// Shown in a cell that has no value.
const NONE: &str = "-";

#[derive(Debug, Deserialize)]
pub struct EdgeList {
    pub edges: Vec<Edge>,
}

#[derive(Debug, Deserialize)]
pub struct Edge {
    pub id: String,
    /// The region placement uses: the admin's override if set, else the reported one.
    pub region: String,
    #[serde(default)]
    pub reported_region: Option<String>,
    #[serde(default)]
    pub region_override: Option<String>,
    pub admin_state: String,
    pub health: String,
    pub available: bool,
    #[serde(default)]
    pub load: Load,
    #[serde(default)]
    pub capacity: Capacity,
    #[serde(default)]
    pub last_heartbeat_at: Option<String>,
    #[serde(default)]
    pub outbox: Outbox,
    #[serde(default)]
    pub drain_deadline: Option<String>,
}

/// The edge's outbox as its last heartbeat reported it.
#[derive(Debug, Default, Deserialize)]
pub struct Outbox {
    #[serde(default)]
    pub depth: u64,
    #[serde(default)]
    pub oldest_age_ms: u64,
    #[serde(default)]
    pub dropped_audit: u64,
    #[serde(default)]
    pub dropped_metrics: u64,
}

#[derive(Debug, Default, Deserialize)]
pub struct Load {
    #[serde(default)]
    pub cpu: f64,
    #[serde(default)]
    pub loop_lag_ms: u64,
    #[serde(default)]
    pub connections: u64,
    #[serde(default)]
    pub sessions: u64,
}

/// Configured limits; 0 is unlimited.
#[derive(Debug, Default, Deserialize)]
pub struct Capacity {
    #[serde(default)]
    pub max_connections: u64,
    #[serde(default)]
    pub max_sessions: u64,
}

#[derive(Debug, Deserialize)]
pub struct Regions {
    pub default_region: String,
    #[serde(default)]
    pub geoip: Option<GeoIp>,
    #[serde(default)]
    pub regions: Vec<Region>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
pub struct Region {
    pub name: String,
    #[serde(default)]
    pub edges: Vec<String>,
    #[serde(default)]
    pub fallback: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Rule {
    pub id: i64,
    pub kind: String,
    #[serde(rename = "match")]
    pub matcher: String,
    pub region: String,
}

#[derive(Debug, Deserialize)]
pub struct GeoIp {
    pub path: String,
    pub database_type: String,
    pub build_epoch: i64,
}

#[derive(Debug, Deserialize)]
pub struct Fallback {
    pub region: String,
    pub fallback: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Explanation {
    #[serde(default)]
    pub client_ip: Option<String>,
    pub wanted_region: String,
    pub region_source: RegionSource,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub continent: Option<String>,
    #[serde(default)]
    pub served_region: Option<String>,
    #[serde(default)]
    pub fallback: bool,
    #[serde(default)]
    pub chosen: Option<String>,
    #[serde(default)]
    pub candidates: Vec<Candidate>,
}

/// Why the client got its region. Kept loose (a kind and optional rule) so that a new kind of
/// source is shown by name instead of failing the command.
#[derive(Debug, Deserialize)]
pub struct RegionSource {
    pub kind: String,
    #[serde(default)]
    pub rule_id: Option<i64>,
    #[serde(default, rename = "match")]
    pub matcher: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Candidate {
    pub edge: String,
    pub region: String,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub filtered: Option<String>,
    /// Why a demoted edge was demoted, e.g. `cpu 0.93 > 0.85`.
    #[serde(default)]
    pub demoted: Option<String>,
    #[serde(default)]
    pub score: Option<f64>,
}

/// `edges list`.
pub fn edge_table(list: &EdgeList, now: OffsetDateTime) -> String {
    if list.edges.is_empty() {
        return "no edges have registered\n".into();
    }
    let mut table = Table::new(&[
        ("EDGE", Align::Left),
        ("REGION", Align::Left),
        ("STATE", Align::Left),
        ("HEALTH", Align::Left),
        ("AVAILABLE", Align::Left),
        ("SESSIONS", Align::Right),
        ("CONNECTIONS", Align::Right),
        ("CPU", Align::Right),
        ("LAG", Align::Right),
        ("OUTBOX", Align::Right),
        ("HEARTBEAT", Align::Left),
    ]);
    let mut overridden = false;
    for e in &list.edges {
        let mut region = e.region.clone();
        if e.region_override.is_some() {
            overridden = true;
            region.push('*');
        }
        table.row(vec![
            e.id.clone(),
            region,
            e.admin_state.clone(),
            e.health.clone(),
            yes_no(e.available).into(),
            of_capacity(e.load.sessions, e.capacity.max_sessions),
            of_capacity(e.load.connections, e.capacity.max_connections),
            percent(e.load.cpu),
            format!("{}ms", e.load.loop_lag_ms),
            outbox(&e.outbox),
            e.last_heartbeat_at.as_deref().map_or_else(|| NONE.into(), |t| age(t, now)),
        ]);
    }
    let mut out = table.render();
    if overridden {
        out.push_str("* region set by an admin (`regions set-edge EDGE --clear` gives the edge its own back)\n");
    }
    out
}

/// Entries waiting for the locator, with the oldest one's age, and drops if any.
fn outbox(o: &Outbox) -> String {
    let mut out = o.depth.to_string();
    if o.depth > 0 {
        out.push_str(&format!(" ({}s)", o.oldest_age_ms / 1000));
    }
    if o.dropped_audit + o.dropped_metrics > 0 {
        out.push_str(&format!(" dropped {}+{}", o.dropped_audit, o.dropped_metrics));
    }
    out
}

/// One edge after `edges suspend`, `edges resume` or `regions set-edge`.
pub fn edge_summary(e: &Edge) -> String {
    let region = match (&e.region_override, &e.reported_region) {
        (Some(_), Some(reported)) => format!("{} (set by an admin; the edge reports {reported})", e.region),
        (Some(_), None) => format!("{} (set by an admin)", e.region),
        (None, _) => e.region.clone(),
    };
    let available = if e.available { "available" } else { "not available" };
    let deadline = match &e.drain_deadline {
        Some(at) => format!(" (remaining sessions end at {at})"),
        None => String::new(),
    };
    format!("edge {}: {}{deadline}, health {}, {available}, region {region}\n", e.id, e.admin_state, e.health)
}

/// `regions list`.
pub fn regions_tables(r: &Regions, now: OffsetDateTime) -> String {
    let mut out = format!("default region: {}\n", r.default_region);
    match &r.geoip {
        Some(g) => out.push_str(&format!("geoip: {}\n", geoip_summary(g, now))),
        None => out.push_str("geoip: none configured (only CIDR rules place clients by address)\n"),
    }
    out.push('\n');
    let mut regions = Table::new(&[("REGION", Align::Left), ("EDGES", Align::Left), ("FALLBACK", Align::Left)]);
    for region in &r.regions {
        regions.row(vec![region.name.clone(), list_or_none(&region.edges), list_or_none(&region.fallback)]);
    }
    out.push_str(&regions.render());
    out.push('\n');
    if r.rules.is_empty() {
        out.push_str("no rules: clients go to the region they ask for, else the default region\n");
        return out;
    }
    let mut rules =
        Table::new(&[("RULE", Align::Right), ("KIND", Align::Left), ("MATCH", Align::Left), ("REGION", Align::Left)]);
    for rule in &r.rules {
        rules.row(vec![rule.id.to_string(), rule.kind.clone(), rule.matcher.clone(), rule.region.clone()]);
    }
    out.push_str(&rules.render());
    if r.geoip.is_none() && r.rules.iter().any(|rule| rule.kind != "cidr") {
        out.push_str("note: country and continent rules match nothing until a GeoIP database is configured\n");
    }
    out
}

/// A rule `regions add-*` created.
pub fn rule_summary(rule: &Rule) -> String {
    format!("rule {}: {} {} -> region {}\n", rule.id, rule.kind, rule.matcher, rule.region)
}

/// `regions fallback`.
pub fn fallback_summary(f: &Fallback) -> String {
    if f.fallback.is_empty() {
        return format!(
            "region {} has no fallback order (any region serves when it has no available edge)\n",
            f.region
        );
    }
    format!("region {} falls back to {} (then any region)\n", f.region, f.fallback.join(", then "))
}

/// `geoip reload`.
pub fn geoip_reloaded(g: &GeoIp, now: OffsetDateTime) -> String {
    format!("geoip database reloaded: {}\n", geoip_summary(g, now))
}

fn geoip_summary(g: &GeoIp, now: OffsetDateTime) -> String {
    let built = match OffsetDateTime::from_unix_timestamp(g.build_epoch) {
        Ok(t) => format!("{} ({})", t.date(), ago((now - t).whole_seconds())),
        Err(_) => format!("epoch {}", g.build_epoch),
    };
    format!("{} at {}, built {built}", g.database_type, g.path)
}

/// `placement explain`.
pub fn explanation(x: &Explanation) -> String {
    let mut geo = Vec::new();
    if let Some(c) = &x.country {
        geo.push(format!("country {c}"));
    }
    if let Some(c) = &x.continent {
        geo.push(format!("continent {c}"));
    }
    let client = match (&x.client_ip, geo.is_empty()) {
        (Some(ip), false) => format!("{ip} ({})", geo.join(", ")),
        (Some(ip), true) => format!("{ip} (no GeoIP location)"),
        (None, _) => "no address".into(),
    };
    let served = match &x.served_region {
        Some(r) if x.fallback => format!("{r} (fallback: {} has no available edge)", x.wanted_region),
        Some(r) => r.clone(),
        None => "none: no edge is available".into(),
    };
    let mut out = format!(
        "client:        {client}\nwanted region: {}, from {}\nserved region: {served}\nchosen edge:   {}\n\n",
        x.wanted_region,
        source(&x.region_source),
        x.chosen.as_deref().unwrap_or("none"),
    );
    if x.candidates.is_empty() {
        out.push_str("no edges have registered\n");
        return out;
    }
    let mut table = Table::new(&[
        ("EDGE", Align::Left),
        ("REGION", Align::Left),
        ("TIER", Align::Left),
        ("FILTERED", Align::Left),
        ("SCORE", Align::Right),
    ]);
    for c in &x.candidates {
        let tier = match (&c.tier, &c.demoted) {
            (Some(t), Some(why)) => format!("{t} ({why})"),
            (Some(t), None) => t.clone(),
            (None, _) => NONE.into(),
        };
        table.row(vec![
            c.edge.clone(),
            c.region.clone(),
            tier,
            c.filtered.clone().unwrap_or_else(|| NONE.into()),
            c.score.map_or_else(|| NONE.into(), |s| format!("{s:.3}")),
        ]);
    }
    out.push_str(&table.render());
    out
}

fn source(s: &RegionSource) -> String {
    let rule = |name: &str| match (s.rule_id, &s.matcher) {
        (Some(id), Some(m)) => format!("{name} rule {id} ({m})"),
        (Some(id), None) => format!("{name} rule {id}"),
        (None, _) => format!("a {name} rule"),
    };
    match s.kind.as_str() {
        "cidr" => rule("CIDR"),
        "country" => rule("country"),
        "continent" => rule("continent"),
        "default" => "the default region (no rule matched)".into(),
        "request" => "the request (--region)".into(),
        other => other.into(),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `used` or `used/limit` when a limit is set.
fn of_capacity(used: u64, limit: u64) -> String {
    if limit == 0 {
        used.to_string()
    } else {
        format!("{used}/{limit}")
    }
}

/// A share of the cores (0.0-1.0) as a whole percentage.
fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        NONE.into()
    } else {
        items.join(", ")
    }
}

#[derive(Debug, Deserialize)]
pub struct SessionList {
    pub sessions: Vec<Session>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Session {
    pub id: String,
    pub edge_id: String,
    #[serde(default)]
    pub team: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub ended_at: Option<String>,
    #[serde(default)]
    pub end_reason: Option<String>,
    #[serde(default)]
    pub participant_count: u32,
}

#[derive(Debug, Deserialize)]
pub struct SessionDetail {
    pub session: Session,
    #[serde(default)]
    pub participants: Vec<Participant>,
}

#[derive(Debug, Deserialize)]
pub struct Participant {
    pub participant_id: u32,
    pub role: String,
    pub user_id: String,
    pub display_name: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize)]
pub struct AuditEntry {
    pub at: String,
    pub kind: String,
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub edge_id: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub detail: String,
}

#[derive(Debug, Deserialize)]
pub struct Usage {
    pub step_seconds: i64,
    pub points: Vec<UsagePoint>,
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Debug, Deserialize)]
pub struct UsagePoint {
    pub at: String,
    pub users_online: u64,
    pub sessions: u64,
    pub connections: u64,
}

#[derive(Debug, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<Token>,
}

#[derive(Debug, Deserialize)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub created_by: String,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub last_used_at: Option<String>,
    /// Only in the answer that creates it.
    #[serde(default)]
    pub token: Option<String>,
}

fn or_none(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| NONE.into())
}

/// `sessions list`.
pub fn session_table(list: &SessionList, now: OffsetDateTime) -> String {
    if list.sessions.is_empty() {
        return "no sessions\n".into();
    }
    let mut table = Table::new(&[
        ("SESSION", Align::Left),
        ("EDGE", Align::Left),
        ("TEAM", Align::Left),
        ("CREATED", Align::Left),
        ("ENDED", Align::Left),
        ("REASON", Align::Left),
        ("PARTICIPANTS", Align::Right),
    ]);
    for s in &list.sessions {
        table.row(vec![
            s.id.clone(),
            s.edge_id.clone(),
            or_none(&s.team),
            age(&s.created_at, now),
            s.ended_at.as_deref().map_or_else(|| "live".into(), |t| age(t, now)),
            or_none(&s.end_reason),
            s.participant_count.to_string(),
        ]);
    }
    let mut out = table.render();
    if list.next_cursor.is_some() {
        out.push_str("(more: raise --limit or narrow with --state, --edge, --team)\n");
    }
    out
}

/// `sessions show`.
pub fn session_detail(d: &SessionDetail, now: OffsetDateTime) -> String {
    let s = &d.session;
    let state = match (&s.ended_at, &s.end_reason) {
        (Some(at), reason) => format!("ended {} ({})", age(at, now), or_none(reason)),
        (None, _) => "live".into(),
    };
    let mut out = format!(
        "session {} on edge {}, team {}, created {}, {state}\n",
        s.id,
        s.edge_id,
        or_none(&s.team),
        age(&s.created_at, now)
    );
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("ROLE", Align::Left),
        ("USER", Align::Left),
        ("NAME", Align::Left),
        ("JOINED", Align::Left),
    ]);
    for p in &d.participants {
        table.row(vec![
            p.participant_id.to_string(),
            p.role.clone(),
            p.user_id.clone(),
            p.display_name.clone(),
            age(&p.created_at, now),
        ]);
    }
    out.push_str(&table.render());
    out
}

/// `audit tail`: times in full (an audit log is read for exact times); with `follow`, rows
/// after the first batch come without the header.
pub fn audit_table(entries: &[AuditEntry], follow: bool) -> String {
    if entries.is_empty() {
        return if follow { String::new() } else { "no audit entries\n".into() };
    }
    let mut table = Table::new(&[
        ("TIME", Align::Left),
        ("KIND", Align::Left),
        ("ACTOR", Align::Left),
        ("EDGE", Align::Left),
        ("SESSION", Align::Left),
        ("DETAIL", Align::Left),
    ]);
    for e in entries {
        table.row(vec![
            e.at.clone(),
            e.kind.clone(),
            or_none(&e.actor),
            or_none(&e.edge_id),
            or_none(&e.session_id),
            e.detail.clone(),
        ]);
    }
    table.render()
}

#[derive(Debug, Deserialize)]
pub struct MetricsEntry {
    pub at: String,
    pub kind: String,
    pub edge_id: String,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub connections: Option<u32>,
    #[serde(default)]
    pub sessions: Option<u32>,
    #[serde(default)]
    pub participants: Option<u32>,
    #[serde(default)]
    pub messages_relayed: u64,
    #[serde(default)]
    pub bytes_relayed: u64,
}

/// `metrics tail`.
pub fn metrics_table(entries: &[MetricsEntry], follow: bool) -> String {
    if entries.is_empty() {
        return if follow { String::new() } else { "no metrics entries\n".into() };
    }
    let mut table = Table::new(&[
        ("TIME", Align::Left),
        ("KIND", Align::Left),
        ("EDGE", Align::Left),
        ("SESSION", Align::Left),
        ("CONNECTIONS", Align::Right),
        ("SESSIONS", Align::Right),
        ("PARTICIPANTS", Align::Right),
        ("MESSAGES", Align::Right),
        ("BYTES", Align::Right),
    ]);
    let num = |v: Option<u32>| v.map_or_else(|| NONE.into(), |v| v.to_string());
    for e in entries {
        table.row(vec![
            e.at.clone(),
            e.kind.clone(),
            e.edge_id.clone(),
            or_none(&e.session_id),
            num(e.connections),
            num(e.sessions),
            num(e.participants),
            e.messages_relayed.to_string(),
            e.bytes_relayed.to_string(),
        ]);
    }
    table.render()
}

/// `usage`.
pub fn usage_table(u: &Usage) -> String {
    let mut table = Table::new(&[
        ("FROM", Align::Left),
        ("USERS", Align::Right),
        ("SESSIONS", Align::Right),
        ("CONNECTIONS", Align::Right),
    ]);
    for p in &u.points {
        table.row(vec![p.at.clone(), p.users_online.to_string(), p.sessions.to_string(), p.connections.to_string()]);
    }
    let mut out = format!("peaks per {} s step\n", u.step_seconds);
    out.push_str(&table.render());
    if u.truncated {
        out.push_str("(users are a lower bound: too many participants in the range to count them all)\n");
    }
    out
}

/// `tokens list`.
pub fn token_table(list: &TokenList, now: OffsetDateTime) -> String {
    if list.tokens.is_empty() {
        return "no tokens (the bootstrap admin token is not listed)\n".into();
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("NAME", Align::Left),
        ("SCOPE", Align::Left),
        ("CREATED", Align::Left),
        ("BY", Align::Left),
        ("EXPIRES", Align::Left),
        ("REVOKED", Align::Left),
        ("LAST USED", Align::Left),
    ]);
    for t in &list.tokens {
        table.row(vec![
            t.id.clone(),
            t.name.clone(),
            t.scope.clone(),
            age(&t.created_at, now),
            t.created_by.clone(),
            or_none(&t.expires_at),
            t.revoked_at.as_deref().map_or_else(|| NONE.into(), |at| age(at, now)),
            t.last_used_at.as_deref().map_or_else(|| "never".into(), |at| age(at, now)),
        ]);
    }
    table.render()
}

/// `tokens create`: the token on a line of its own, so `| head -1` gets it.
pub fn token_created(t: &Token) -> String {
    let expiry = t.expires_at.as_deref().map_or_else(|| "never expires".into(), |at| format!("expires {at}"));
    format!(
        "{}\ntoken {} (id {}, {} scope, {expiry}); it is shown only now\n",
        t.token.as_deref().unwrap_or(NONE),
        t.name,
        t.id,
        t.scope
    )
}

/// `tokens revoke`.
pub fn token_revoked(t: &Token) -> String {
    format!("token {} (id {}) revoked\n", t.name, t.id)
}

#[derive(Debug, Deserialize)]
pub struct ClientKeyList {
    pub client_keys: Vec<ClientKey>,
}

#[derive(Debug, Deserialize)]
pub struct ClientKey {
    pub id: String,
    pub team: String,
    pub name: String,
    pub created_by: String,
    pub created_at: String,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub last_used_at: Option<String>,
    /// Only in the answer that creates it.
    #[serde(default)]
    pub key: Option<String>,
}

/// `client-keys list`.
pub fn client_key_table(list: &ClientKeyList, now: OffsetDateTime) -> String {
    if list.client_keys.is_empty() {
        return "no client keys\n".into();
    }
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("TEAM", Align::Left),
        ("NAME", Align::Left),
        ("CREATED", Align::Left),
        ("BY", Align::Left),
        ("REVOKED", Align::Left),
        ("LAST USED", Align::Left),
    ]);
    for k in &list.client_keys {
        table.row(vec![
            k.id.clone(),
            k.team.clone(),
            k.name.clone(),
            age(&k.created_at, now),
            k.created_by.clone(),
            k.revoked_at.as_deref().map_or_else(|| NONE.into(), |at| age(at, now)),
            k.last_used_at.as_deref().map_or_else(|| "never".into(), |at| age(at, now)),
        ]);
    }
    table.render()
}

/// `client-keys create`: the key on a line of its own.
pub fn client_key_created(k: &ClientKey) -> String {
    format!(
        "{}\nclient key {} for team {} (id {}); it is shown only now\n",
        k.key.as_deref().unwrap_or(NONE),
        k.name,
        k.team,
        k.id
    )
}

/// `client-keys revoke`.
pub fn client_key_revoked(k: &ClientKey) -> String {
    format!("client key {} for team {} (id {}) revoked\n", k.name, k.team, k.id)
}

/// The age of an RFC 3339 time; a time that does not parse is shown as it is.
fn age(at: &str, now: OffsetDateTime) -> String {
    match OffsetDateTime::parse(at, &Rfc3339) {
        Ok(t) => ago((now - t).whole_seconds()),
        Err(_) => at.to_owned(),
    }
}

/// Seconds in the largest whole unit: `now`, `42s ago`, `5m ago`, `3h ago`, `12d ago`. A time
/// slightly in the future (clocks of two machines disagree) is `now`.
fn ago(secs: i64) -> String {
    match secs {
        s if s < 1 => "now".into(),
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-11-23T10:15:03.500Z", &Rfc3339).unwrap()
    }

    fn edges_json() -> serde_json::Value {
        serde_json::json!({"edges": [
            {"id": "edge-1", "region": "eu", "reported_region": "default", "region_override": "eu",
             "public_url": "ws://127.0.0.1:8081", "build": "0.1.0", "admin_state": "active", "health": "up",
             "available": true, "load": {"cpu": 0.123, "loop_lag_ms": 1, "connections": 4, "sessions": 2},
             "capacity": {"max_connections": 0, "max_sessions": 100}, "reserved_sessions": 0.0,
             "last_heartbeat_at": "2026-11-23T10:15:00.123Z", "registered_at": "2026-11-23T10:00:00Z",
             "some_future_field": [1, 2]},
            {"id": "edge-22", "region": "us", "reported_region": "us", "region_override": null,
             "public_url": "wss://us.example", "build": "0.1.0", "admin_state": "suspended",
             "health": "link_lost", "available": false,
             "load": {"cpu": 0.9, "loop_lag_ms": 140, "connections": 1200, "sessions": 13},
             "capacity": {"max_connections": 0, "max_sessions": 0}, "reserved_sessions": 1.5,
             "last_heartbeat_at": "2026-11-23T09:10:00Z", "registered_at": "2026-11-20T00:00:00Z",
             "outbox": {"depth": 4200, "oldest_age_ms": 65000, "last_seq": 9000, "dropped_audit": 0,
                        "dropped_metrics": 0}}
        ]})
    }

    #[test]
    fn edges_render_as_a_table_with_ages() {
        let list: EdgeList = serde_json::from_value(edges_json()).unwrap();
        assert_eq!(
            edge_table(&list, now()),
            "EDGE     REGION  STATE      HEALTH     AVAILABLE  SESSIONS  CONNECTIONS  CPU    LAG      OUTBOX  HEARTBEAT\n\
             edge-1   eu*     active     up         yes           2/100            4  12%    1ms           0  3s ago\n\
             edge-22  us      suspended  link_lost  no               13         1200  90%  140ms  4200 (65s)  1h ago\n\
             * region set by an admin (`regions set-edge EDGE --clear` gives the edge its own back)\n"
        );
        assert_eq!(edge_table(&EdgeList { edges: vec![] }, now()), "no edges have registered\n");
    }

    #[test]
    fn an_edge_summary_says_where_its_region_comes_from() {
        let list: EdgeList = serde_json::from_value(edges_json()).unwrap();
        assert_eq!(
            edge_summary(&list.edges[0]),
            "edge edge-1: active, health up, available, region eu (set by an admin; the edge reports default)\n"
        );
        assert_eq!(
            edge_summary(&list.edges[1]),
            "edge edge-22: suspended, health link_lost, not available, region us\n"
        );
    }

    #[test]
    fn regions_render_as_two_tables() {
        let r: Regions = serde_json::from_value(serde_json::json!({
            "default_region": "default",
            "geoip": {"path": "/data/GeoLite2-Country.mmdb", "database_type": "GeoLite2-Country", "build_epoch": 1700000000},
            "regions": [
                {"name": "default", "edges": [], "fallback": []},
                {"name": "eu", "edges": ["edge-1", "edge-2"], "fallback": ["us", "ap"]}
            ],
            "rules": [
                {"id": 3, "kind": "cidr", "match": "10.0.0.0/8", "region": "eu", "created_at": "2026-11-23T10:00:00Z"},
                {"id": 14, "kind": "country", "match": "GB", "region": "eu", "created_at": "2026-11-23T10:00:00Z"}
            ]
        }))
        .unwrap();
        assert_eq!(
            regions_tables(&r, now()),
            "default region: default\n\
             geoip: GeoLite2-Country at /data/GeoLite2-Country.mmdb, built 2023-11-14 (1104d ago)\n\
             \n\
             REGION   EDGES           FALLBACK\n\
             default  -               -\n\
             eu       edge-1, edge-2  us, ap\n\
             \n\
             RULE  KIND     MATCH       REGION\n   \
                3  cidr     10.0.0.0/8  eu\n  \
               14  country  GB          eu\n"
        );
        let bare: Regions = serde_json::from_value(serde_json::json!({
            "default_region": "default", "geoip": null, "regions": [], "rules": []
        }))
        .unwrap();
        let shown = regions_tables(&bare, now());
        assert!(!shown.contains("note:"), "{shown}");
        assert!(
            shown.contains("geoip: none configured")
                && shown.ends_with("no rules: clients go to the region they ask for, else the default region\n"),
            "{shown}"
        );
        let no_geoip: Regions = serde_json::from_value(serde_json::json!({
            "default_region": "default", "geoip": null, "regions": [],
            "rules": [{"id": 1, "kind": "country", "match": "GB", "region": "uk"}]
        }))
        .unwrap();
        let shown = regions_tables(&no_geoip, now());
        assert!(shown.ends_with("match nothing until a GeoIP database is configured\n"), "{shown}");
    }

    #[test]
    fn a_dry_run_explains_region_and_candidates() {
        let x: Explanation = serde_json::from_value(serde_json::json!({
            "client_ip": "81.2.69.142", "wanted_region": "uk",
            "region_source": {"kind": "country", "rule_id": 4, "match": "GB"},
            "country": "GB", "continent": "EU", "served_region": "eu", "fallback": true, "chosen": "edge-1",
            "candidates": [
                {"edge": "edge-1", "region": "eu", "tier": "preferred", "filtered": null, "score": 0.25,
                 "sessions": 2, "connections": 4, "reserved_sessions": 1.0},
                {"edge": "edge-2", "region": "eu", "tier": "demoted", "demoted": "cpu 0.93 > 0.85",
                 "filtered": null, "score": 1.5, "reserved_sessions": 0.0},
                {"edge": "edge-3", "region": "uk", "tier": null, "filtered": "stale_heartbeat", "score": null,
                 "reserved_sessions": 0.0}
            ]
        }))
        .unwrap();
        assert_eq!(
            explanation(&x),
            "client:        81.2.69.142 (country GB, continent EU)\n\
             wanted region: uk, from country rule 4 (GB)\n\
             served region: eu (fallback: uk has no available edge)\n\
             chosen edge:   edge-1\n\
             \n\
             EDGE    REGION  TIER                       FILTERED         SCORE\n\
             edge-1  eu      preferred                  -                0.250\n\
             edge-2  eu      demoted (cpu 0.93 > 0.85)  -                1.500\n\
             edge-3  uk      -                          stale_heartbeat      -\n"
        );
        let none: Explanation = serde_json::from_value(serde_json::json!({
            "client_ip": "10.1.2.3", "wanted_region": "default", "region_source": {"kind": "default"},
            "country": null, "continent": null, "served_region": null, "fallback": false, "chosen": null,
            "candidates": []
        }))
        .unwrap();
        assert_eq!(
            explanation(&none),
            "client:        10.1.2.3 (no GeoIP location)\n\
             wanted region: default, from the default region (no rule matched)\n\
             served region: none: no edge is available\n\
             chosen edge:   none\n\
             \n\
             no edges have registered\n"
        );
    }

    #[test]
    fn small_summaries() {
        let rule: Rule = serde_json::from_value(serde_json::json!({
            "id": 3, "kind": "cidr", "match": "10.0.0.0/8", "region": "eu", "created_at": "2026-11-23T10:00:00Z"
        }))
        .unwrap();
        assert_eq!(rule_summary(&rule), "rule 3: cidr 10.0.0.0/8 -> region eu\n");
        let set = Fallback { region: "eu".into(), fallback: vec!["us".into(), "ap".into()] };
        assert_eq!(fallback_summary(&set), "region eu falls back to us, then ap (then any region)\n");
        let cleared = Fallback { region: "eu".into(), fallback: vec![] };
        assert!(fallback_summary(&cleared).contains("no fallback order"));
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        assert_eq!(ago(-3), "now");
        assert_eq!(ago(0), "now");
        assert_eq!(ago(59), "59s ago");
        assert_eq!(ago(60), "1m ago");
        assert_eq!(ago(7199), "1h ago");
        assert_eq!(ago(3 * 86_400), "3d ago");
        assert_eq!(age("not a time", now()), "not a time");
    }
}
