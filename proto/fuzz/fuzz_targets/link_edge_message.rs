//! `codec::decode_edge` (what the locator reads from an edge's link) on arbitrary bytes: never
//! panics, and what decodes re-encodes stably. Compared as bytes, not values: `Load::cpu` is an
//! `f32` and may be NaN.

#![no_main]

use duet_proto::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = codec::decode_edge(data) {
        let once = codec::encode_edge(&msg).expect("a decoded edge message encodes");
        let again = codec::decode_edge(&once).expect("an encoded edge message decodes");
        assert_eq!(codec::encode_edge(&again).expect("encodes"), once);
    }
});
