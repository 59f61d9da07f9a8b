//! `codec::decode_entry`, what an edge reads back from its outbox file (a damaged file is
//! untrusted input too): never panics, and what decodes round-trips.

#![no_main]

use duet_proto::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = codec::decode_entry(data) {
        let once = codec::encode_entry(&entry).expect("a decoded outbox entry encodes");
        let again = codec::decode_entry(&once).expect("an encoded outbox entry decodes");
        assert_eq!(again, entry);
        assert_eq!(codec::encode_entry(&again).expect("encodes"), once);
    }
});
