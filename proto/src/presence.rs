//! The team presence protocol: a websocket at `<edge>/v1/teams/{team}/presence` on the edge the
//! locator assigned the team to. Framing as in [`crate::session`]: one binary websocket message
//! per frame, a kind byte, big-endian integers, `u16`-prefixed UTF-8 strings; decoding is strict
//! and bounded by the frame. `docs/protocol.md` §2b is the normative description.
//!
//! The edge sends a full [`PresenceFrame::Snapshot`] after `hello` and after every change: teams
//! are small (tens to hundreds of members), so a snapshot is a few KiB and a client never has to
//! merge deltas or detect a missed one.

use bytes::{BufMut, Bytes, BytesMut};

use crate::session::{put_str16, DecodeError, EncodeError, Reader};

/// The presence protocol version a client sends in `hello`.
pub const PRESENCE_PROTOCOL_VERSION: u8 = 1;

/// Kind bytes. Stable forever.
pub mod kind {
    pub const HELLO: u8 = 0x11;
    pub const PING: u8 = 0x12;

    pub const SNAPSHOT: u8 = 0x91;
    pub const PONG: u8 = 0x92;
}

/// A team member with at least one presence connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub display_name: String,
    /// Open presence connections of this user (several IDE windows).
    pub connections: u16,
}

/// Frames a presence client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceClientFrame {
    /// First frame: the token from `GET /api/v1/teams/{team}/presence`.
    Hello {
        version: u8,
        token: String,
    },
    Ping {
        nonce: u64,
    },
}

/// Frames the edge sends on a presence connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceFrame {
    /// Who is online and which of the team's sessions are live. `seq` increases with every
    /// snapshot of this team on this edge.
    Snapshot {
        seq: u64,
        members: Vec<Member>,
        sessions: Vec<String>,
    },
    Pong {
        nonce: u64,
    },
}

fn count(len: usize, field: &'static str) -> Result<u16, EncodeError> {
    u16::try_from(len).map_err(|_| EncodeError::TooLong { field, max: u16::MAX as usize })
}

impl PresenceClientFrame {
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        match self {
            PresenceClientFrame::Hello { version, token } => {
                out.put_u8(kind::HELLO);
                out.put_u8(*version);
                put_str16(&mut out, token, "token")?;
            }
            PresenceClientFrame::Ping { nonce } => {
                out.put_u8(kind::PING);
                out.put_u64(*nonce);
            }
        }
        Ok(out.freeze())
    }

    pub fn decode(frame: &[u8]) -> Result<PresenceClientFrame, DecodeError> {
        let (&k, rest) = frame.split_first().ok_or(DecodeError::Empty)?;
        let mut r = Reader { kind: k, buf: rest };
        let decoded = match k {
            kind::HELLO => PresenceClientFrame::Hello { version: r.u8("version")?, token: r.str16("token")? },
            kind::PING => PresenceClientFrame::Ping { nonce: r.u64("nonce")? },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(decoded)
    }
}

impl PresenceFrame {
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        match self {
            PresenceFrame::Snapshot { seq, members, sessions } => {
                out.put_u8(kind::SNAPSHOT);
                out.put_u64(*seq);
                out.put_u16(count(members.len(), "members")?);
                for m in members {
                    put_str16(&mut out, &m.user_id, "user_id")?;
                    put_str16(&mut out, &m.display_name, "display_name")?;
                    out.put_u16(m.connections);
                }
                out.put_u16(count(sessions.len(), "sessions")?);
                for s in sessions {
                    put_str16(&mut out, s, "session_id")?;
                }
            }
            PresenceFrame::Pong { nonce } => {
                out.put_u8(kind::PONG);
                out.put_u64(*nonce);
            }
        }
        Ok(out.freeze())
    }

    pub fn decode(frame: &[u8]) -> Result<PresenceFrame, DecodeError> {
        let (&k, rest) = frame.split_first().ok_or(DecodeError::Empty)?;
        let mut r = Reader { kind: k, buf: rest };
        let decoded = match k {
            kind::SNAPSHOT => {
                let seq = r.u64("seq")?;
                let n = r.u16("member_count")?;
                // Each member takes at least 6 bytes: refuse a count the frame cannot hold
                // before allocating for it.
                if usize::from(n) * 6 > r.buf.len() {
                    return Err(DecodeError::Truncated { kind: k, field: "members" });
                }
                let mut members = Vec::with_capacity(n.into());
                for _ in 0..n {
                    members.push(Member {
                        user_id: r.str16("user_id")?,
                        display_name: r.str16("display_name")?,
                        connections: r.u16("connections")?,
                    });
                }
                let n = r.u16("session_count")?;
                if usize::from(n) * 2 > r.buf.len() {
                    return Err(DecodeError::Truncated { kind: k, field: "sessions" });
                }
                let mut sessions = Vec::with_capacity(n.into());
                for _ in 0..n {
                    sessions.push(r.str16("session_id")?);
                }
                PresenceFrame::Snapshot { seq, members, sessions }
            }
            kind::PONG => PresenceFrame::Pong { nonce: r.u64("nonce")? },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(decoded)
    }
}

/// The `sid` claim of a presence token for `team`.
pub fn presence_subject(team: &str) -> String {
    format!("presence:{team}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncations_are_errors() {
        let snapshot = PresenceFrame::Snapshot {
            seq: 3,
            members: vec![Member { user_id: "ada".into(), display_name: "Ada".into(), connections: 2 }],
            sessions: vec!["s_1".into()],
        };
        let bytes = snapshot.encode().unwrap();
        assert_eq!(PresenceFrame::decode(&bytes).unwrap(), snapshot);
        for cut in 0..bytes.len() {
            assert!(PresenceFrame::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for f in [PresenceClientFrame::Hello { version: 1, token: "t".into() }, PresenceClientFrame::Ping { nonce: 9 }]
        {
            assert_eq!(PresenceClientFrame::decode(&f.encode().unwrap()).unwrap(), f);
        }
        assert_eq!(PresenceClientFrame::decode(&[0x01]), Err(DecodeError::UnknownKind(0x01)));
        let huge = [kind::SNAPSHOT, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
        assert!(matches!(PresenceFrame::decode(&huge), Err(DecodeError::Truncated { .. })));
    }
}
