//! The link codec: postcard, one message per websocket binary frame.
//!
//! Postcard is compact and has a stable, documented wire format; it is used only between duet's
//! own Rust processes. Decoding a peer's bytes never panics; an oversized frame is refused by the
//! websocket layer before it gets here.

use serde::{Deserialize, Serialize};

use crate::link::{EdgeMessage, Hello, LocatorMessage};
use crate::outbox::OutboxEntry;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("link message could not be encoded: {0}")]
    Encode(postcard::Error),
    #[error("link message could not be decoded: {0}")]
    Decode(postcard::Error),
    #[error("the first link message must be a hello")]
    NotHello,
    #[error("link protocol version {got} not supported (this locator accepts {min} to {max})")]
    UnsupportedVersion { got: u16, min: u16, max: u16 },
}

pub fn encode_edge(msg: &EdgeMessage) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(msg).map_err(CodecError::Encode)
}

pub fn decode_edge(bytes: &[u8]) -> Result<EdgeMessage, CodecError> {
    postcard::from_bytes(bytes).map_err(CodecError::Decode)
}

pub fn encode_locator(msg: &LocatorMessage) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(msg).map_err(CodecError::Encode)
}

pub fn decode_locator(bytes: &[u8]) -> Result<LocatorMessage, CodecError> {
    postcard::from_bytes(bytes).map_err(CodecError::Decode)
}

/// Encodes one outbox entry for the edge's durable store.
pub fn encode_entry(entry: &OutboxEntry) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(entry).map_err(CodecError::Encode)
}

pub fn decode_entry(bytes: &[u8]) -> Result<OutboxEntry, CodecError> {
    postcard::from_bytes(bytes).map_err(CodecError::Decode)
}

/// The stable head of every version's hello: the `Hello` variant tag and the version.
#[derive(Deserialize, Serialize)]
struct HelloHead {
    tag: u32,
    protocol_version: u16,
}

/// Reads only the protocol version of a first link message, whatever the rest of its layout.
pub fn peek_hello_version(bytes: &[u8]) -> Result<u16, CodecError> {
    let (head, _) = postcard::take_from_bytes::<HelloHead>(bytes).map_err(CodecError::Decode)?;
    if head.tag != 0 {
        return Err(CodecError::NotHello);
    }
    Ok(head.protocol_version)
}

/// Decodes a first link message, accepting versions `min..=max`.
pub fn decode_hello(bytes: &[u8], min: u16, max: u16) -> Result<Hello, CodecError> {
    let got = peek_hello_version(bytes)?;
    if got < min || got > max {
        return Err(CodecError::UnsupportedVersion { got, min, max });
    }
    match decode_edge(bytes)? {
        EdgeMessage::Hello(hello) => Ok(hello),
        _ => Err(CodecError::NotHello),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::*;

    fn hello(version: u16) -> Hello {
        Hello {
            protocol_version: version,
            edge_id: "edge-a".into(),
            region: "eu".into(),
            public_url: "ws://127.0.0.1:8081".into(),
            capacity: Capacity { max_connections: 10, max_sessions: 5 },
            build: "duet 0.1.0".into(),
            live_sessions: vec![],
            load: Load::default(),
            outbox_id: 7,
        }
    }

    #[test]
    fn hello_version_is_readable_and_checked() {
        let bytes = encode_edge(&EdgeMessage::Hello(hello(LINK_PROTOCOL_VERSION))).unwrap();
        assert_eq!(peek_hello_version(&bytes).unwrap(), LINK_PROTOCOL_VERSION);
        decode_hello(&bytes, LINK_MIN_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION).unwrap();

        let future = encode_edge(&EdgeMessage::Hello(hello(LINK_PROTOCOL_VERSION + 1))).unwrap();
        assert!(matches!(
            decode_hello(&future, LINK_MIN_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION),
            Err(CodecError::UnsupportedVersion { .. })
        ));
        let hb = encode_edge(&EdgeMessage::Heartbeat(Heartbeat::default())).unwrap();
        assert!(matches!(peek_hello_version(&hb), Err(CodecError::NotHello) | Err(CodecError::Decode(_))));
    }

    #[test]
    fn garbage_is_an_error() {
        for bytes in [&[][..], &[0xff; 3][..], &[0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f][..]] {
            assert!(decode_edge(bytes).is_err());
            assert!(decode_locator(bytes).is_err());
        }
    }
}
