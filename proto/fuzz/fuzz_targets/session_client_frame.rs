//! `ClientFrame::decode` on arbitrary bytes: never panics, and what decodes round-trips.
//! `ClientFrame::decode_shared` (the edge's zero-copy decode) decides exactly the same. Every
//! frame kind, present and future, goes through the same decoder, so new kinds are fuzzed too.

#![no_main]

use bytes::Bytes;
use duet_proto::session::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = ClientFrame::decode(data);
    assert_eq!(ClientFrame::decode_shared(&Bytes::copy_from_slice(data)), decoded, "shared and copying decodes differ");
    if let Ok(frame) = decoded {
        let bytes = frame.encode().expect("a decoded client frame encodes");
        assert_eq!(ClientFrame::decode(&bytes).expect("an encoded client frame decodes"), frame);
    }
});
