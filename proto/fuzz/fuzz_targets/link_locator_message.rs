//! `codec::decode_locator` (what an edge reads from the locator) on arbitrary bytes: never panics,
//! and what decodes round-trips.

#![no_main]

use duet_proto::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = codec::decode_locator(data) {
        let once = codec::encode_locator(&msg).expect("a decoded locator message encodes");
        let again = codec::decode_locator(&once).expect("an encoded locator message decodes");
        assert_eq!(again, msg);
        assert_eq!(codec::encode_locator(&again).expect("encodes"), once);
    }
});
