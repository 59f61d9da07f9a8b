//! WebRTC media through a real edge: str0m load peers (the test kit's) publishing and subscribing
//! over the session websocket's signalling, on 127.0.0.1. The browser and the Rust `webrtc` client
//! peers are in `media_browser` and `media_webrtc`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use duet_locator::db::EntryFilter;
use duet_proto::session::{error_code, ClientFrame, MediaCloseReason, TrackSource};
use duet_testkit::media::{LoadPeer, Publish};
use duet_testkit::{wait_until, Cluster};

use crate::support::*;

const MEDIA_WAIT: Duration = Duration::from_secs(20);

pub const VIDEO: Publish = Publish::Video { fps: 30, frame_bytes: 1000, keyframe_every: 60 };

fn media(cluster: &Cluster) -> duet_edge::media::Media {
    cluster.edges[0].state.media.clone().expect("the test kit's edges have media")
}

/// A host publishes video; a guest receives it through the edge: the track is announced with its
/// publisher and source, RTP arrives from the edge's media port, and the edge's forwarded-packet
/// counter covers everything the guest received. Mute is relayed; leaving media unpublishes the
/// track; when both leave, the edge holds no peer and no track.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_flows_from_a_publisher_to_a_subscriber_through_the_edge() {
    let cluster = Cluster::start().await;
    let media = media(&cluster);
    let (placed, host_session) = host(&cluster, "Ada").await;
    let (_, guest_session) = guest(&cluster, &placed.session_id, "Bo").await;

    let publisher = LoadPeer::start(host_session, VIDEO).await.unwrap();
    let subscriber = LoadPeer::start(guest_session, Publish::Nothing).await.unwrap();
    wait_until("the guest receives video", MEDIA_WAIT, || async { subscriber.stats.packets() > 60 }).await;

    let tracks = subscriber.stats.tracks.lock().unwrap().clone();
    assert_eq!(tracks.len(), 1, "one track announced: {tracks:?}");
    let track = tracks.values().next().unwrap().clone();
    assert_eq!(track.participant_id, 1, "the host publishes it");
    assert_eq!(track.source, TrackSource::Camera);
    // The publisher declared its source before its first offer, as the protocol allows.
    assert!(publisher.stats.errors.lock().unwrap().is_empty(), "{:?}", publisher.stats.errors.lock().unwrap());
    assert_eq!(*subscriber.stats.rtp_source.lock().unwrap(), Some(media.udp_addr), "media comes from the edge's port");
    let forwarded = media.stats.packets_out.load(Ordering::Relaxed);
    let received = subscriber.stats.packets();
    assert!(forwarded >= received, "the edge forwarded {forwarded} packets, the guest received {received}");
    assert!(media.stats.packets_in.load(Ordering::Relaxed) > 0);
    assert_eq!(media.stats.peers.load(Ordering::Relaxed), 2);
    assert_eq!(media.stats.tracks.load(Ordering::Relaxed), 1);
    assert!(subscriber.stats.frames() > 0, "whole frames reassembled");
    let page =
        reqwest::get(format!("http://{}/metrics", cluster.edges[0].local_addr)).await.unwrap().text().await.unwrap();
    let sent = page
        .lines()
        .find_map(|l| l.strip_prefix("duet_edge_media_packets_sent_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("the forwarded-packet counter on /metrics");
    assert!(sent >= received as f64, "/metrics says {sent} forwarded, the guest received {received}");
    assert!(page.contains("duet_edge_media_tracks 1"), "{page}");

    publisher.mute(true);
    wait_until("the guest learns of the mute", MEDIA_WAIT, || async {
        subscriber.stats.tracks.lock().unwrap().get(&track.track_id).is_some_and(|t| t.muted)
    })
    .await;

    publisher.leave_media();
    wait_until("the track is unpublished", MEDIA_WAIT, || async { subscriber.stats.track_count() == 0 }).await;
    wait_until("the publisher is told", MEDIA_WAIT, || async {
        *publisher.stats.closed.lock().unwrap() == Some(MediaCloseReason::Left)
    })
    .await;
    let _host = publisher.stop().await;
    let guest = subscriber.stop().await;
    guest.sender().send_raw(ClientFrame::MediaLeave.encode().unwrap()).unwrap();
    wait_until("no media state is left", MEDIA_WAIT, || async {
        media.stats.peers.load(Ordering::Relaxed) == 0 && media.stats.tracks.load(Ordering::Relaxed) == 0
    })
    .await;

    // The media events reached the locator's audit log through the outbox.
    let store = &cluster.locator.state.store;
    let kinds = || async {
        let filter = EntryFilter { session_id: Some(placed.session_id.clone()), ..Default::default() };
        let (entries, _) = store.audit_entries(&filter, 200, None).await.expect("audit entries");
        entries.into_iter().map(|e| (e.kind, e.participant_id, e.detail)).collect::<Vec<_>>()
    };
    wait_until("the media audit entries are stored", MEDIA_WAIT, || async {
        let k = kinds().await;
        ["media_connected", "track_published", "track_unpublished", "media_closed"]
            .iter()
            .all(|want| k.iter().any(|(kind, _, _)| kind == want))
    })
    .await;
    let entries = kinds().await;
    let published = entries.iter().find(|(k, _, _)| k == "track_published").unwrap();
    assert_eq!(published.1, Some(1), "the host published: {published:?}");
    assert!(published.2.contains("camera"), "{published:?}");
    let closed = entries.iter().find(|(k, p, _)| k == "media_closed" && *p == Some(1)).unwrap();
    assert!(closed.2.starts_with("left;"), "{closed:?}");
    cluster.shutdown().await;
}

/// An edge bound to the unspecified address advertises the configured address: its candidates
/// carry it, and media flows to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advertised_address_is_what_peers_reach() {
    let mut cluster = Cluster::start_with(Default::default()).await;
    cluster
        .add_edge(|c| {
            let media = c.media.as_mut().unwrap();
            media.listen = "0.0.0.0:0".parse().unwrap();
            media.advertised = vec!["127.0.0.1".parse().unwrap()];
        })
        .await;
    let media = media(&cluster);
    assert!(media.udp_addr.ip().is_unspecified());
    let advertised = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), media.udp_addr.port());
    assert_eq!(&*media.candidates, &[advertised]);
    let (placed, host_session) = host(&cluster, "Ada").await;
    let (_, guest_session) = guest(&cluster, &placed.session_id, "Bo").await;
    let publisher = LoadPeer::start(host_session, VIDEO).await.unwrap();
    let subscriber = LoadPeer::start(guest_session, Publish::Nothing).await.unwrap();
    wait_until("the guest receives video", MEDIA_WAIT, || async { subscriber.stats.packets() > 30 }).await;
    assert_eq!(*subscriber.stats.rtp_source.lock().unwrap(), Some(advertised));
    drop((publisher, subscriber));
    cluster.shutdown().await;
}

/// A guest that joins media after the host already publishes gets the track at once; a
/// participant that leaves the session takes its media with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscribers_get_existing_tracks_and_leaving_the_session_ends_media() {
    let cluster = Cluster::start().await;
    let media = media(&cluster);
    let (placed, host_session) = host(&cluster, "Ada").await;
    let publisher = LoadPeer::start(host_session, VIDEO).await.unwrap();
    wait_until("the host's track is published", MEDIA_WAIT, || async {
        media.stats.tracks.load(Ordering::Relaxed) == 1
    })
    .await;
    let (_, guest_session) = guest(&cluster, &placed.session_id, "Bo").await;
    let subscriber = LoadPeer::start(guest_session, Publish::Audio).await.unwrap();
    wait_until("the late guest receives video", MEDIA_WAIT, || async { subscriber.stats.packets() > 30 }).await;
    wait_until("the host receives the guest's audio", MEDIA_WAIT, || async { publisher.stats.packets() > 10 }).await;
    let guest_track = publisher.stats.tracks.lock().unwrap().values().next().cloned().expect("a track");
    assert_eq!(guest_track.source, TrackSource::Microphone);

    // The guest leaves the session: its peer and track go.
    let guest = subscriber.stop().await;
    guest.leave().unwrap();
    wait_until("the guest's track is gone", MEDIA_WAIT, || async { publisher.stats.track_count() == 0 }).await;
    wait_until("one peer is left", MEDIA_WAIT, || async { media.stats.peers.load(Ordering::Relaxed) == 1 }).await;
    drop(publisher);
    cluster.shutdown().await;
}

/// A panic inside one peer's state closes that peer only: the edge, the session and the other
/// peers go on, and the failed participant can open media again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_peer_closes_only_that_peer() {
    let cluster = Cluster::start().await;
    let media = media(&cluster);
    let (placed, host_session) = host(&cluster, "Ada").await;
    let (_, g1) = guest(&cluster, &placed.session_id, "Bo").await;
    let (_, g2) = guest(&cluster, &placed.session_id, "Cy").await;
    let publisher = LoadPeer::start(host_session, VIDEO).await.unwrap();
    let doomed = LoadPeer::start(g1, Publish::Nothing).await.unwrap();
    let survivor = LoadPeer::start(g2, Publish::Nothing).await.unwrap();
    wait_until("both guests receive video", MEDIA_WAIT, || async {
        doomed.stats.packets() > 30 && survivor.stats.packets() > 30
    })
    .await;

    media.panic_in(placed.session_id.as_str().into(), 2);
    wait_until("the failed peer is closed", MEDIA_WAIT, || async {
        *doomed.stats.closed.lock().unwrap() == Some(MediaCloseReason::Failed)
    })
    .await;
    assert_eq!(media.stats.peer_panics.load(Ordering::Relaxed), 1);
    let before = survivor.stats.packets();
    wait_until("the other guest keeps receiving", MEDIA_WAIT, || async { survivor.stats.packets() > before + 30 })
        .await;

    // The session is untouched and the failed guest can come back to media.
    let g1 = doomed.stop().await;
    let again = LoadPeer::start(g1, Publish::Nothing).await.unwrap();
    wait_until("the guest receives video again", MEDIA_WAIT, || async { again.stats.packets() > 30 }).await;
    drop((publisher, survivor, again));
    cluster.shutdown().await;
}

/// Media frames are refused cleanly: garbage SDP gets `error` 7 and changes nothing; a mute for a
/// mid that publishes nothing gets `error` 8; an edge with media off answers `error` 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_media_signalling_is_refused_with_a_precise_error() {
    let mut cluster = Cluster::start().await;
    let (placed, host_session) = host(&cluster, "Ada").await;
    let peer = LoadPeer::start(host_session, Publish::Nothing).await.unwrap();
    peer.send(ClientFrame::MediaOffer { sdp: "v=0\r\nthis is not sdp".into() });
    peer.send(ClientFrame::TrackMute { mid: "7".into(), muted: true });
    peer.send(ClientFrame::MediaCandidate { candidate: "candidate:garbage".into() });
    wait_until("three errors", MEDIA_WAIT, || async { peer.stats.errors.lock().unwrap().len() >= 3 }).await;
    let errors = peer.stats.errors.lock().unwrap().clone();
    assert_eq!(errors[0].0, error_code::MEDIA_REJECTED, "{errors:?}");
    assert!(errors[0].1.starts_with("offer:"), "{errors:?}");
    assert_eq!(errors[1].0, error_code::UNKNOWN_TRACK, "{errors:?}");
    assert_eq!(errors[2].0, error_code::MEDIA_REJECTED, "{errors:?}");
    let session = peer.stop().await;
    assert!(session.sender().ping(1).is_ok(), "the session is still open");
    drop(session);

    // An edge without media.
    cluster.stop_edge(0);
    cluster.add_edge(|c| c.media = None).await;
    wait_until("the new edge takes sessions", MEDIA_WAIT, || async {
        cluster.client().create_session(&user("Probe")).await.is_ok_and(|p| p.edge.url != placed.edge.url)
    })
    .await;
    let (_, mut s) = host(&cluster, "Di").await;
    s.sender().send_raw(ClientFrame::MediaOffer { sdp: "v=0\r\n".into() }.encode().unwrap()).unwrap();
    loop {
        if let duet_proto::session::EdgeFrame::Error { code, .. } = next_frame(&mut s).await {
            assert_eq!(code, error_code::MEDIA_UNAVAILABLE);
            break;
        }
    }
    cluster.shutdown().await;
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("resident pages");
    pages * 4096
}

/// Opening and closing many media connections leaks nothing: after each round of ten
/// subscribers that connect, receive and leave, the edge holds only the publisher's peer, and the
/// runtime's task count and the process's resident memory return to where the first round left
/// them (the first round pays for one-time allocations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_peers_opened_and_closed_leave_no_tasks_or_memory_behind() {
    const ROUNDS: usize = 5;
    const PEERS: usize = 10;
    let cluster = Cluster::start().await;
    let media = media(&cluster);
    let (placed, host_session) = host(&cluster, "Ada").await;
    let publisher = LoadPeer::start(host_session, VIDEO).await.unwrap();
    let mut guests = Vec::new();
    for i in 0..PEERS {
        guests.push(guest(&cluster, &placed.session_id, &format!("G{i}")).await.1);
    }
    let runtime = tokio::runtime::Handle::current();
    let mut after_first = None;
    for round in 0..ROUNDS {
        let mut peers = Vec::new();
        for session in guests.drain(..) {
            peers.push(LoadPeer::start(session, Publish::Nothing).await.unwrap());
        }
        wait_until("every subscriber receives video", MEDIA_WAIT, || async {
            peers.iter().all(|p| p.stats.packets() > 10)
        })
        .await;
        assert_eq!(media.stats.peers.load(Ordering::Relaxed), 1 + PEERS as u64);
        for peer in peers {
            let session = peer.stop().await;
            session.sender().send_raw(ClientFrame::MediaLeave.encode().unwrap()).unwrap();
            guests.push(session);
        }
        wait_until("only the publisher's peer is left", MEDIA_WAIT, || async {
            media.stats.peers.load(Ordering::Relaxed) == 1
        })
        .await;
        match after_first {
            None => after_first = Some((runtime.metrics().num_alive_tasks(), rss_bytes())),
            Some((base_tasks, base_rss)) => {
                // Tasks that are ending (a closing websocket's writer) may still be counted for
                // a moment: wait for the count, bounded.
                wait_until("the task count returns to the first round's", MEDIA_WAIT, || async {
                    runtime.metrics().num_alive_tasks() <= base_tasks
                })
                .await;
                let grown = rss_bytes().saturating_sub(base_rss);
                assert!(grown < 32 << 20, "round {round}: resident memory grew by {grown} bytes since round 1");
            }
        }
    }
    assert_eq!(media.stats.peers_opened.load(Ordering::Relaxed), 1 + (ROUNDS * PEERS) as u64);
    drop(publisher);
    cluster.shutdown().await;
}
