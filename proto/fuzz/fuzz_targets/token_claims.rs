//! Token claims, the JSON payload of a participant token, parsed by serde_json into `Claims`:
//! never panics, and what parses round-trips.

#![no_main]

use duet_proto::token::Claims;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(claims) = serde_json::from_slice::<Claims>(data) {
        let json = serde_json::to_vec(&claims).expect("claims serialize");
        assert_eq!(serde_json::from_slice::<Claims>(&json).expect("serialized claims parse"), claims);
    }
});
