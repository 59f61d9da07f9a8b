//! Two `MediaPeer`s on 127.0.0.1 connect to each other and exchange synthetic media, the way a
//! client and the edge do: offer/answer, re-offers in both directions, the outstanding-offer
//! rule, pause and unpublish. Run with `cargo test -p duet-client --features media`.

use std::future::Future;
use std::time::Duration;

use duet_client::media::{MediaConfig, MediaError, MediaPeer, Publish};

/// Loopback ICE and DTLS take well under a second; the margin is for a loaded CI machine.
const CONNECT: Duration = Duration::from_secs(15);
/// Media flows within a few frames of connecting (20 ms audio, 40 ms video).
const MEDIA: Duration = Duration::from_secs(10);

/// Polls `check` until it holds, failing the test after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        poll.tick().await;
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
    }
}

/// `a` publishes audio and video and offers; `b` answers. Both connected.
async fn connected_pair() -> (MediaPeer, MediaPeer) {
    let (a, offer) = MediaPeer::new(&MediaConfig::loopback(), &[Publish::Audio, Publish::Video]).await.unwrap();
    assert!(offer.contains("a=candidate:"), "the offer carries its candidates:\n{offer}");
    let (b, answer) = MediaPeer::accept(&MediaConfig::loopback(), &offer).await.unwrap();
    assert!(answer.contains("a=candidate:"), "the answer carries its candidates:\n{answer}");
    a.apply_answer(&answer).await.unwrap();
    a.wait_connected(CONNECT).await.unwrap();
    b.wait_connected(CONNECT).await.unwrap();
    (a, b)
}

#[tokio::test]
async fn peers_exchange_media_over_loopback() {
    let (a, b) = connected_pair().await;
    let published = a.published();
    assert_eq!(published.iter().map(|t| t.kind).collect::<Vec<_>>(), [Publish::Audio, Publish::Video]);
    let (audio, video) = (published[0].mid.clone(), published[1].mid.clone());
    assert_ne!(audio, video);

    a.start_sending();
    a.start_sending(); // idempotent
    eventually(MEDIA, "audio and video packets at b", || async {
        b.packets_received_on(&audio).await >= 10 && b.packets_received_on(&video).await >= 10
    })
    .await;
    assert!(b.packets_received() >= 20);
    assert!(a.samples_sent() > 0);
    assert_eq!(a.packets_received(), 0, "b publishes nothing yet");

    for peer in [&a, &b] {
        let remote = peer.selected_remote().await.expect("a selected candidate pair");
        assert!(remote.ip().is_loopback(), "{remote}");
        assert_ne!(remote.port(), 0);
    }

    // b re-offers to publish its own audio; a answers (as a client answers the edge).
    let offer = b.publish(Publish::Audio).await.unwrap();
    let b_audio = b.published()[0].mid.clone();
    assert!(![&audio, &video].contains(&&b_audio), "a new send-only transceiver, not a reused one");
    let answer = a.answer_offer(&offer).await.unwrap();
    b.apply_answer(&answer).await.unwrap();
    b.start_sending();
    eventually(MEDIA, "b's audio at a", || async { a.packets_received_on(&b_audio).await >= 10 }).await;

    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn renegotiation_follows_the_edge_rules() {
    let (a, b) = connected_pair().await;
    a.start_sending();
    let audio = a.published()[0].mid.clone();

    // While a's re-offer is outstanding it refuses to answer another offer, changing nothing.
    let a_offer = a.publish(Publish::Video).await.unwrap();
    assert!(a.has_outstanding_offer().await);
    let (_c, c_offer) = MediaPeer::new(&MediaConfig::loopback(), &[Publish::Audio]).await.unwrap();
    assert!(matches!(a.answer_offer(&c_offer).await, Err(MediaError::OfferOutstanding)));
    let answer = b.answer_offer(&a_offer).await.unwrap();
    a.apply_answer(&answer).await.unwrap();
    assert!(!a.has_outstanding_offer().await);
    let second_video = a.published()[2].mid.clone();
    eventually(MEDIA, "the second video track at b", || async { b.packets_received_on(&second_video).await >= 5 })
        .await;

    // A paused track sends nothing while the others go on.
    a.set_paused(&audio, true).unwrap();
    let audio_before = b.packets_received_on(&audio).await;
    let video_before = b.packets_received_on(&second_video).await;
    eventually(MEDIA, "more video at b", || async { b.packets_received_on(&second_video).await >= video_before + 25 })
        .await;
    // At most what was in flight when the pause took effect.
    assert!(b.packets_received_on(&audio).await <= audio_before + 2);
    a.set_paused(&audio, false).unwrap();
    eventually(MEDIA, "audio again at b", || async { b.packets_received_on(&audio).await > audio_before + 5 }).await;
    assert!(matches!(a.set_paused("no-such-mid", true), Err(MediaError::UnknownMid(_))));

    // Unpublishing re-offers with the track gone.
    let offer = a.unpublish(&second_video).await.unwrap();
    let answer = b.answer_offer(&offer).await.unwrap();
    a.apply_answer(&answer).await.unwrap();
    assert_eq!(a.published().len(), 2);
    assert!(matches!(a.unpublish(&second_video).await, Err(MediaError::UnknownMid(_))));

    a.stop_sending();
    a.close().await;
    b.close().await;
}
