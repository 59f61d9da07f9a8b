//! Synthetic encoded frames for the published tracks: nobody decodes them, but they have the
//! shape, size and rate of real media so the edge's forwarding, keyframe and bandwidth paths see
//! realistic traffic.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// One Opus frame: 20 ms is what browsers send (`ptime` 20).
pub(super) const AUDIO_FRAME: Duration = Duration::from_millis(20);
/// One video frame at 25 fps, twice the audio frame so one 20 ms ticker drives both.
pub(super) const VIDEO_FRAME: Duration = Duration::from_millis(40);
/// A keyframe every 50 frames (2 s at 25 fps), like a browser under steady conditions.
pub(super) const KEYFRAME_EVERY: u64 = 50;
/// A keyframe spans a few RTP packets (the packetizer's MTU is 1200 bytes); a delta frame fits in one.
const KEYFRAME_BYTES: usize = 3000;
const DELTA_FRAME_BYTES: usize = 300;

/// An Opus frame of silence: TOC 0xF8 (CELT-only, fullband, 20 ms, mono, one frame) followed by
/// the two bytes libopus emits for a silent frame.
pub(super) fn opus_silence() -> Bytes {
    Bytes::from_static(&[0xF8, 0xFF, 0xFE])
}

/// A VP8 frame (RFC 6386 §9.1): a 3-byte frame tag, and for a keyframe the start code and a
/// 320x240 size, then filler. `n` varies the filler so consecutive frames differ.
pub(super) fn vp8_frame(n: u64) -> Bytes {
    let key = n.is_multiple_of(KEYFRAME_EVERY);
    let len = if key { KEYFRAME_BYTES } else { DELTA_FRAME_BYTES };
    let mut frame = BytesMut::with_capacity(len);
    let header_len = if key { 10 } else { 3 };
    let first_partition = ((len - header_len) as u32) & 0x7_FFFF;
    // bit 0: 0 = keyframe; bits 1-3: version 0; bit 4: show_frame; bits 5-23: first partition size.
    let tag = u32::from(!key) | (1 << 4) | (first_partition << 5);
    frame.put_slice(&tag.to_le_bytes()[..3]);
    if key {
        frame.put_slice(&[0x9D, 0x01, 0x2A]);
        frame.put_u16_le(320);
        frame.put_u16_le(240);
    }
    let seed = n as u8;
    frame.extend((0..len - header_len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_are_flagged_and_sized() {
        let key = vp8_frame(0);
        assert_eq!(key.len(), KEYFRAME_BYTES);
        assert_eq!(key[0] & 1, 0, "bit 0 clear marks a keyframe");
        assert_eq!(&key[3..6], &[0x9D, 0x01, 0x2A]);
        assert_eq!(u16::from_le_bytes([key[6], key[7]]), 320);

        let delta = vp8_frame(1);
        assert_eq!(delta.len(), DELTA_FRAME_BYTES);
        assert_eq!(delta[0] & 1, 1);
        assert_eq!(vp8_frame(KEYFRAME_EVERY)[0] & 1, 0);
    }

    #[test]
    fn first_partition_size_matches_the_payload() {
        let frame = vp8_frame(1);
        let tag = u32::from_le_bytes([frame[0], frame[1], frame[2], 0]);
        assert_eq!((tag >> 5) as usize, DELTA_FRAME_BYTES - 3);
    }
}
