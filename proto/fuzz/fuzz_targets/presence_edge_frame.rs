//! `PresenceFrame::decode` on arbitrary bytes: never panics, and what decodes round-trips.

#![no_main]

use duet_proto::presence::PresenceFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = PresenceFrame::decode(data) {
        let bytes = frame.encode().expect("a decoded presence frame encodes");
        assert_eq!(PresenceFrame::decode(&bytes).expect("an encoded presence frame decodes"), frame);
    }
});
