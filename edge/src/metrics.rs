//! `/metrics` in the Prometheus text format (version 0.0.4), read from the edge's own counters
//! at scrape time: nothing is updated on the relay's hot path beyond the counters the usage
//! entries already keep. The names are listed in docs/operations.md and used by the Grafana
//! dashboard in deploy/grafana.
//!
//! The small writers here ([`gauge`], [`counter`], [`gauge_family`], [`counter_family`]) are
//! shared with the locator, which scrapes its own state the same way.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::EdgeState;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Writes one gauge without labels.
pub fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// Writes one counter without labels (`_total` is appended to `name`).
pub fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// Writes a gauge with one series per label set.
pub fn gauge_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(&[(&str, &str)], f64)],
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// Writes a counter with one series per label set.
pub fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(&[(&str, &str)], u64)],
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// Encodes a registry, for a `/metrics` response.
pub fn render(registry: &Registry) -> String {
    let mut text = String::with_capacity(4096);
    // Writing into a String cannot fail; a collector error would leave a truncated page, which
    // Prometheus reports as a parse error, so it is logged too.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    text
}

/// A `/metrics` response with the Prometheus content type.
pub fn response(text: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// Reads an edge's state at scrape time.
pub struct EdgeCollector(pub Arc<EdgeState>);

impl fmt::Debug for EdgeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EdgeCollector").field(&self.0.edge_id).finish()
    }
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

impl Collector for EdgeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &*self.0;
        let version = env!("CARGO_PKG_VERSION");
        gauge_family(
            &mut enc,
            "duet_edge_info",
            "This edge's id, region and version (always 1)",
            &[(&[("edge_id", s.edge_id.as_str()), ("region", s.config.region.as_str()), ("version", version)], 1.0)],
        )?;
        let load = s.current_load();
        gauge(
            &mut enc,
            "duet_edge_connections",
            "Open client websockets (sessions and presence)",
            load.connections.into(),
        )?;
        gauge(&mut enc, "duet_edge_sessions", "Sessions running on this edge", load.sessions.into())?;
        counter(
            &mut enc,
            "duet_edge_messages_relayed",
            "Client messages relayed since start",
            s.relayed_messages.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "duet_edge_bytes_relayed",
            "Payload bytes delivered to participants since start",
            s.relayed_bytes.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "duet_edge_cpu_ratio",
            "CPU used over the last interval, as a share of the usable cores",
            load.cpu.into(),
        )?;
        gauge(
            &mut enc,
            "duet_edge_loop_lag_seconds",
            "How late the event loop ran a timer over the last interval",
            f64::from(load.loop_lag_ms) / 1000.0,
        )?;
        let outbox = s.outbox.status();
        gauge(
            &mut enc,
            "duet_edge_outbox_depth",
            "Audit and metrics entries not yet acknowledged by the locator",
            outbox.depth as f64,
        )?;
        gauge(
            &mut enc,
            "duet_edge_outbox_oldest_age_seconds",
            "Age of the oldest unacknowledged outbox entry (0 when empty)",
            outbox.oldest_age_ms as f64 / 1000.0,
        )?;
        counter_family(
            &mut enc,
            "duet_edge_outbox_dropped",
            "Outbox entries refused because the outbox was full, since start",
            &[(&[("kind", "audit")], outbox.dropped_audit), (&[("kind", "metrics")], outbox.dropped_metrics)],
        )?;
        gauge(
            &mut enc,
            "duet_edge_link_up",
            "1 while the link to the locator is registered",
            flag(s.linked.load(Ordering::Acquire)),
        )?;
        counter(
            &mut enc,
            "duet_edge_link_connects",
            "Registrations with a locator since start (the first one and every reconnect)",
            s.link_connects.load(Ordering::Relaxed),
        )?;
        gauge(&mut enc, "duet_edge_draining", "1 while the edge drains before it stops", flag(s.is_draining()))?;
        gauge(&mut enc, "duet_edge_ready", "1 while /readyz answers 200", flag(s.is_ready()))?;
        if let Some(media) = &s.media {
            encode_media(&mut enc, &media.stats)?;
        }
        Ok(())
    }
}

/// The media task's counters (bitrates are `rate()` of the byte counters, times 8).
fn encode_media(enc: &mut DescriptorEncoder, m: &crate::media::MediaStats) -> fmt::Result {
    use crate::media::MediaStats as M;
    gauge(enc, "duet_edge_media_peers", "Open media (WebRTC) connections", M::get(&m.peers) as f64)?;
    gauge(enc, "duet_edge_media_tracks", "Published tracks being forwarded", M::get(&m.tracks) as f64)?;
    counter(enc, "duet_edge_media_packets_received", "RTP packets received from publishers", M::get(&m.packets_in))?;
    counter(
        enc,
        "duet_edge_media_bytes_received",
        "Bytes of RTP packets received from publishers",
        M::get(&m.bytes_in),
    )?;
    counter(
        enc,
        "duet_edge_media_packets_sent",
        "RTP packets forwarded to subscribers (retransmissions included)",
        M::get(&m.packets_out),
    )?;
    counter(enc, "duet_edge_media_bytes_sent", "Bytes of RTP packets forwarded to subscribers", M::get(&m.bytes_out))?;
    counter(
        enc,
        "duet_edge_media_packets_lost",
        "Packets lost between publishers and the edge (from receiver statistics)",
        M::get(&m.packets_lost),
    )?;
    counter(
        enc,
        "duet_edge_media_datagrams_unmatched",
        "Datagrams on the media port that belonged to no media connection",
        M::get(&m.unmatched),
    )?;
    counter(
        enc,
        "duet_edge_media_send_dropped",
        "Datagrams dropped because the socket or an ICE-TCP connection was full",
        M::get(&m.send_dropped),
    )?;
    counter(enc, "duet_edge_media_peers_opened", "Media connections opened since start", M::get(&m.peers_opened))?;
    counter(
        enc,
        "duet_edge_media_peer_panics",
        "Panics caught inside one media connection's state (it was closed)",
        M::get(&m.peer_panics),
    )
}

/// The edge's metrics page.
pub fn scrape(edge: &Arc<EdgeState>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(EdgeCollector(edge.clone())));
    render(&registry)
}
