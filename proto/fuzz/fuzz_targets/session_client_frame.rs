//! `ClientFrame::decode` on arbitrary bytes: never panics, and what decodes round-trips. Every
//! frame kind, present and future, goes through the same `decode`, so new kinds are fuzzed too.

#![no_main]

use duet_proto::session::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = ClientFrame::decode(data) {
        let bytes = frame.encode().expect("a decoded client frame encodes");
        assert_eq!(ClientFrame::decode(&bytes).expect("an encoded client frame decodes"), frame);
    }
});
