//! A link peer that speaks the real link protocol to a real locator, with the capacity and load
//! a test chooses. Placement tests need edges whose load is exactly what the test says (a real
//! edge reports its process's CPU, which in a test process is everybody's CPU); everything the
//! locator sees (hello, welcome, heartbeats) is the same as from a real edge.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use duet_proto::codec;
use duet_proto::link::{
    Capacity, EdgeMessage, Heartbeat, Hello, Load, LocatorMessage, LINK_PATH, LINK_PROTOCOL_VERSION,
};
use duet_ws::{Limits, Message};
use tokio_util::sync::CancellationToken;

/// Heartbeats every 200 ms: well inside any heartbeat timeout a test uses.
const HEARTBEAT: Duration = Duration::from_millis(200);
const LIMITS: Limits = Limits { max_message_bytes: 16 << 20, max_queued_bytes: 32 << 20 };

/// A scripted edge; it leaves (its link closes) when dropped.
pub struct ScriptedEdge {
    pub id: String,
    load: Arc<Mutex<Load>>,
    stop: CancellationToken,
}

impl ScriptedEdge {
    /// Links to the locator at `locator_url` and waits for its welcome.
    pub async fn connect(
        locator_url: &str,
        secret: &str,
        id: &str,
        region: &str,
        capacity: Capacity,
        load: Load,
    ) -> ScriptedEdge {
        let url = format!("{}{LINK_PATH}", locator_url.trim_end_matches('/'));
        let auth = format!("Bearer {secret}");
        let mut reader = duet_ws::connect(&url, &[("authorization", &auth)], LIMITS).await.expect("link connects");
        let writer = reader.writer().clone();
        let hello = EdgeMessage::Hello(Hello {
            protocol_version: LINK_PROTOCOL_VERSION,
            edge_id: id.into(),
            region: region.into(),
            public_url: format!("ws://{id}.invalid:1"),
            capacity,
            build: "scripted".into(),
            live_sessions: vec![],
            load,
            outbox_id: 1,
        });
        writer.send(codec::encode_edge(&hello).expect("encode").into()).expect("send hello");
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(Ok(Message::Binary(b))) => match codec::decode_locator(&b).expect("decode") {
                LocatorMessage::Welcome(_) => {}
                other => panic!("scripted edge {id}: expected welcome, got {other:?}"),
            },
            other => panic!("scripted edge {id}: expected welcome, got {other:?}"),
        }
        let load = Arc::new(Mutex::new(load));
        let stop = CancellationToken::new();
        let (beat_load, beat_stop) = (load.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let load = *beat_load.lock().expect("load lock");
                        let hb = codec::encode_edge(&EdgeMessage::Heartbeat(Heartbeat { load, outbox: Default::default() })).expect("encode");
                        if writer.send(hb.into()).is_err() {
                            return;
                        }
                    }
                    _ = beat_stop.cancelled() => {
                        writer.close(1000, "scripted edge leaves");
                        return;
                    }
                }
            }
        });
        // Reads (commands) are drained and ignored until the link closes.
        let read_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = reader.next() => if r.is_err() || matches!(r, Ok(Message::Close { .. })) { return },
                    _ = read_stop.cancelled() => return,
                }
            }
        });
        ScriptedEdge { id: id.into(), load, stop }
    }

    /// The load its next heartbeats report.
    pub fn set_load(&self, load: Load) {
        *self.load.lock().expect("load lock") = load;
    }
}

impl Drop for ScriptedEdge {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
