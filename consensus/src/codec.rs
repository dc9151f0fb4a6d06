//! The bytes a Raft message travels as between seeds.
//!
//! raft-rs addresses peers by `u64`; the transport addresses them by [`NodeId`]. A
//! [`RaftMessage`] carries both: the sender's and receiver's names plus raft's
//! protobuf message. Its encoding (version 1):
//!
//! ```text
//! [format = 1][from_len: u8][from: utf-8][to_len: u8][to: utf-8][raft protobuf message]
//! ```
//!
//! Decoding checks the format, the names' constraints, the protobuf, and that each
//! name maps ([`RaftId::of`]) to the id in the protobuf message, so a node can trust
//! the sender name it learns from a decoded message as much as it trusts the
//! transport that delivered it.

// raft-rs's protobuf types are built by default-then-assign, as raft-rs itself does.
#![allow(clippy::field_reassign_with_default)]

use protobuf::Message as _;
use raft::eraftpb::Message;

use crate::error::Error;
use crate::ids::{NodeId, RaftId};

/// The format byte that starts an encoded [`RaftMessage`].
pub const MESSAGE_FORMAT_V1: u8 = 1;
/// Largest encoded message accepted by [`decode_message`], in bytes. Snapshot
/// messages carry the whole catalog, so this is generous.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A raft-rs message with its sender and receiver named.
#[derive(Clone, Debug, PartialEq)]
pub struct RaftMessage {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// raft-rs's message; its `from`/`to` ids equal [`RaftId::of`] the names.
    pub message: Message,
}

impl RaftMessage {
    /// Whether this message carries a snapshot (the transport should send it on its
    /// own stream and report the outcome with [`crate::RaftNode::report_snapshot`]).
    pub fn is_snapshot(&self) -> bool {
        self.message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot
    }
}

/// Encodes a message for the transport.
pub fn encode_message(message: &RaftMessage) -> Result<Vec<u8>, Error> {
    let body = message
        .message
        .write_to_bytes()
        .map_err(|err| Error::MalformedMessage {
            reason: format!("raft message does not encode: {err}"),
        })?;
    let from = message.from.as_str().as_bytes();
    let to = message.to.as_str().as_bytes();
    let mut bytes = Vec::with_capacity(3 + from.len() + to.len() + body.len());
    bytes.push(MESSAGE_FORMAT_V1);
    // NodeId's length limit (64) fits in a byte.
    bytes.push(u8::try_from(from.len()).expect("node id length fits in u8"));
    bytes.extend_from_slice(from);
    bytes.push(u8::try_from(to.len()).expect("node id length fits in u8"));
    bytes.extend_from_slice(to);
    bytes.extend_from_slice(&body);
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "raft message",
            len_bytes: bytes.len(),
            len_max_bytes: MESSAGE_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// Decodes bytes from the transport. Malformed input is an error, never a panic.
pub fn decode_message(bytes: &[u8]) -> Result<RaftMessage, Error> {
    let malformed = |reason: &str| Error::MalformedMessage {
        reason: reason.to_owned(),
    };
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(malformed("too large"));
    }
    let (format, rest) = bytes.split_first().ok_or_else(|| malformed("empty"))?;
    if *format != MESSAGE_FORMAT_V1 {
        return Err(malformed("unknown format"));
    }
    let (from, rest) = take_name(rest).ok_or_else(|| malformed("bad sender name"))?;
    let (to, rest) = take_name(rest).ok_or_else(|| malformed("bad receiver name"))?;
    let message = Message::parse_from_bytes(rest).map_err(|err| Error::MalformedMessage {
        reason: format!("raft message does not decode: {err}"),
    })?;
    if message.from != RaftId::of(&from).0 || message.to != RaftId::of(&to).0 {
        return Err(malformed("names do not match raft ids"));
    }
    Ok(RaftMessage { from, to, message })
}

fn take_name(bytes: &[u8]) -> Option<(NodeId, &[u8])> {
    let (len, rest) = bytes.split_first()?;
    let len = usize::from(*len);
    if rest.len() < len {
        return None;
    }
    let (name, rest) = rest.split_at(len);
    let name = NodeId::new(std::str::from_utf8(name).ok()?).ok()?;
    Some((name, rest))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn message(from: &str, to: &str, term: u64) -> RaftMessage {
        let from = NodeId::new(from).unwrap();
        let to = NodeId::new(to).unwrap();
        let mut message = Message::default();
        message.from = RaftId::of(&from).0;
        message.to = RaftId::of(&to).0;
        message.term = term;
        message.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
        RaftMessage { from, to, message }
    }

    #[test]
    fn round_trip() {
        let original = message("db-01", "db-02", 7);
        let bytes = encode_message(&original).unwrap();
        assert_eq!(decode_message(&bytes).unwrap(), original);
    }

    #[test]
    fn rejects_mismatched_ids() {
        let mut original = message("db-01", "db-02", 7);
        original.message.from = 42;
        let bytes = encode_message(&original).unwrap();
        assert!(matches!(
            decode_message(&bytes),
            Err(Error::MalformedMessage { .. })
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_message(&bytes);
        }

        #[test]
        fn truncation_is_an_error_or_a_message(term in any::<u64>(), cut in 0usize..64) {
            let bytes = encode_message(&message("a", "bb", term)).unwrap();
            let cut = cut.min(bytes.len());
            let _ = decode_message(&bytes[..cut]);
        }
    }
}
