//! `EdgeFrame::decode` on arbitrary bytes: never panics, and what decodes round-trips. Every frame
//! kind, present and future, goes through the same `decode`, so new kinds are fuzzed too.

#![no_main]

use duet_proto::session::EdgeFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = EdgeFrame::decode(data) {
        let bytes = frame.encode().expect("a decoded edge frame encodes");
        assert_eq!(EdgeFrame::decode(&bytes).expect("an encoded edge frame decodes"), frame);
    }
});
