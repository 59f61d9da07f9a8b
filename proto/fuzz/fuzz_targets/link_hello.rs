//! The link handshake: `codec::peek_hello_version` and `codec::decode_hello`, the first things the
//! locator runs on a new link's bytes. Never panics; a peeked version is one `decode_hello` accepts
//! as a version; a decoded hello re-encodes stably.

#![no_main]

use duet_proto::codec::{self, CodecError};
use duet_proto::link::{EdgeMessage, LINK_MIN_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(version) = codec::peek_hello_version(data) {
        let r = codec::decode_hello(data, version, version);
        assert!(!matches!(r, Err(CodecError::UnsupportedVersion { .. })), "peeked version {version} refused");
    }
    if let Ok(hello) = codec::decode_hello(data, LINK_MIN_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION) {
        assert!((LINK_MIN_PROTOCOL_VERSION..=LINK_PROTOCOL_VERSION).contains(&hello.protocol_version));
        let once = codec::encode_edge(&EdgeMessage::Hello(hello)).expect("a decoded hello encodes");
        let again = codec::decode_hello(&once, LINK_MIN_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION).expect("decodes");
        assert_eq!(codec::encode_edge(&EdgeMessage::Hello(again)).expect("encodes"), once);
    }
});
