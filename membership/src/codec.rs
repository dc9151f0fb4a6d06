//! The wire format of SWIM datagrams: a small envelope (magic, protocol
//! version, cluster name) in front of foca's payload, and the MessagePack
//! codec foca uses for headers and member updates.
//!
//! The envelope is checked before foca sees a byte, so packets of another
//! cluster, another protocol version, or plain garbage are counted and
//! dropped with a precise reason.

use bytes::{Buf, BufMut};
use foca::{Header, Member};
use serde::{Serialize, de::DeserializeOwned};

use crate::Identity;

/// First bytes of every Shoal datagram.
pub const MAGIC: [u8; 3] = *b"SHL";
/// Version of the datagram format. A packet with another version is dropped.
pub const PROTOCOL_VERSION: u8 = 1;
/// Longest cluster name, in bytes (it travels in every packet).
pub const CLUSTER_NAME_LEN_MAX: usize = 64;

/// Why a datagram was dropped before or inside foca. Exported as the
/// `reason` label of the drop counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Shorter than an envelope or not starting with [`MAGIC`].
    Malformed,
    /// A Shoal packet of another protocol version.
    Version,
    /// A Shoal packet of another cluster.
    ForeignCluster,
    /// Larger than the configured packet size.
    TooBig,
    /// The envelope was fine but foca could not decode or accept the payload.
    Decode,
    /// A packet that claims to come from this very node.
    FromSelf,
    /// A packet whose SWIM sender is not the node its TLS certificate names.
    Impersonation,
}

impl DropReason {
    /// Every reason, for exporting zeroed counters.
    pub const ALL: [DropReason; 7] = [
        DropReason::Malformed,
        DropReason::Version,
        DropReason::ForeignCluster,
        DropReason::TooBig,
        DropReason::Decode,
        DropReason::FromSelf,
        DropReason::Impersonation,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Version => "version",
            DropReason::ForeignCluster => "foreign_cluster",
            DropReason::TooBig => "too_big",
            DropReason::Decode => "decode",
            DropReason::FromSelf => "from_self",
            DropReason::Impersonation => "impersonation",
        }
    }
}

/// Builds and checks the envelope for one cluster.
#[derive(Clone, Debug)]
pub struct Envelope {
    prefix: Vec<u8>,
}

impl Envelope {
    /// The envelope for `cluster_name` (at most [`CLUSTER_NAME_LEN_MAX`]
    /// bytes; the caller validates it).
    pub fn new(cluster_name: &str) -> Self {
        assert!(!cluster_name.is_empty() && cluster_name.len() <= CLUSTER_NAME_LEN_MAX);
        let mut prefix = Vec::with_capacity(MAGIC.len() + 2 + cluster_name.len());
        prefix.extend_from_slice(&MAGIC);
        prefix.push(PROTOCOL_VERSION);
        prefix.push(cluster_name.len() as u8);
        prefix.extend_from_slice(cluster_name.as_bytes());
        Self { prefix }
    }

    /// Bytes the envelope adds to every packet.
    pub fn len(&self) -> usize {
        self.prefix.len()
    }

    /// Always false: an envelope has at least magic, version and a name.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `payload` with the envelope in front.
    pub fn wrap(&self, payload: &[u8]) -> Vec<u8> {
        let mut packet = Vec::with_capacity(self.prefix.len() + payload.len());
        packet.extend_from_slice(&self.prefix);
        packet.extend_from_slice(payload);
        packet
    }

    /// The payload of `packet` if its envelope is ours.
    pub fn open<'a>(&self, packet: &'a [u8]) -> Result<&'a [u8], DropReason> {
        if packet.len() < MAGIC.len() + 2 || packet[..MAGIC.len()] != MAGIC {
            return Err(DropReason::Malformed);
        }
        if packet[MAGIC.len()] != PROTOCOL_VERSION {
            return Err(DropReason::Version);
        }
        match packet.strip_prefix(self.prefix.as_slice()) {
            Some(payload) => Ok(payload),
            None => Err(DropReason::ForeignCluster),
        }
    }
}

/// A MessagePack encoding or decoding failure inside a foca payload.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The item does not fit in the space foca left in the packet; nothing
    /// was written.
    #[error("item of {needed} bytes does not fit in {available}")]
    NoSpace {
        /// Encoded size of the item.
        needed: usize,
        /// Space left in the buffer.
        available: usize,
    },
    /// Encoding failed (never expected for our types).
    #[error("encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The bytes do not start with one well-formed MessagePack value (they
    /// are cut short, or hold a reserved marker); nothing was consumed.
    #[error("decode: not a whole MessagePack value")]
    Incomplete,
    /// The bytes are not a valid item.
    #[error("decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The header's sender is not the authenticated peer that sent it.
    #[error("sender {claimed} arrived over a connection authenticated as {authenticated}")]
    Impersonation {
        /// The node id in the SWIM header.
        claimed: String,
        /// The node id in the peer's certificate.
        authenticated: String,
    },
}

/// foca's codec: every header and member as one MessagePack value.
#[derive(Clone, Copy, Debug, Default)]
pub struct MsgpackCodec;

thread_local! {
    /// Where an item is encoded before it is copied into foca's buffer;
    /// reused, so that encoding allocates only for an item larger than any
    /// before it.
    static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn encode_item<T: Serialize>(item: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
    ENCODED.with_borrow_mut(|bytes| {
        bytes.clear();
        item.serialize(&mut rmp_serde::Serializer::new(&mut *bytes))?;
        // foca requires that a failed encode leaves the buffer untouched.
        if bytes.len() > buf.remaining_mut() {
            return Err(CodecError::NoSpace {
                needed: bytes.len(),
                available: buf.remaining_mut(),
            });
        }
        buf.put_slice(bytes);
        Ok(())
    })
}

/// One item from the front of `buf`, which advances past it. The item's
/// extent is measured first, so that it decodes from a slice: node ids are
/// read in place, not copied through a reader's buffer (allocated anew for
/// every item); metadata strings go to `meta_cache`'s scratch.
pub(crate) fn decode_item<T: DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
    // foca guarantees the data is contiguous, so the first chunk is all of it.
    let chunk = buf.chunk();
    let len = value_len(chunk).ok_or(CodecError::Incomplete)?;
    let item = rmp_serde::from_slice(&chunk[..len])?;
    buf.advance(len);
    Ok(item)
}

/// Length of the MessagePack value at the front of `bytes`, or `None` if
/// `bytes` does not start with a whole, well-formed value. Walks the markers
/// without decoding or allocating; nesting costs a counter, not recursion.
pub(crate) fn value_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    // Values still to walk; each takes at least one byte, so more than the
    // bytes left means the input is cut short (and bounds the counter).
    let mut pending = 1usize;
    while pending > 0 {
        pending -= 1;
        let marker = *bytes.get(at)?;
        at += 1;
        let mut length = |width: usize| -> Option<usize> {
            let field = bytes.get(at..at.checked_add(width)?)?;
            at += width;
            Some(
                field
                    .iter()
                    .fold(0usize, |length, byte| (length << 8) | usize::from(*byte)),
            )
        };
        // (bytes of payload to skip, values nested inside)
        let (skip, nested) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
            0x80..=0x8f => (0, 2 * usize::from(marker & 0x0f)),
            0x90..=0x9f => (0, usize::from(marker & 0x0f)),
            0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
            0xc1 => return None,
            0xc4 | 0xd9 => (length(1)?, 0),
            0xc5 | 0xda => (length(2)?, 0),
            0xc6 | 0xdb => (length(4)?, 0),
            0xc7 => (length(1)?.checked_add(1)?, 0),
            0xc8 => (length(2)?.checked_add(1)?, 0),
            0xc9 => (length(4)?.checked_add(1)?, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, length(2)?),
            0xdd => (0, length(4)?),
            0xde => (0, length(2)?.checked_mul(2)?),
            0xdf => (0, length(4)?.checked_mul(2)?),
        };
        at = at.checked_add(skip)?;
        if at > bytes.len() {
            return None;
        }
        pending = pending.checked_add(nested)?;
        if pending > bytes.len() - at {
            return None;
        }
    }
    Some(at)
}

impl foca::Codec<Identity> for MsgpackCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<Identity>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        encode_item(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<Identity>, Self::Error> {
        decode_item(buf)
    }

    fn encode_member(
        &mut self,
        member: &Member<Identity>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        encode_item(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<Identity>, Self::Error> {
        decode_item(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every marker kind, and every value cut short by a byte.
    #[test]
    fn value_len_measures_every_kind_of_value() {
        use std::collections::BTreeMap;

        struct Bin<'a>(&'a [u8]);
        impl Serialize for Bin<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        let values: Vec<Vec<u8>> = vec![
            rmp_serde::to_vec(&("a", [1u8, 2], BTreeMap::from([("k", vec![0.5f64])]))).unwrap(),
            rmp_serde::to_vec(&(u64::MAX, -1i64, i64::MIN, 1.5f32, 2.5f64, true, ())).unwrap(),
            rmp_serde::to_vec(&"x".repeat(300)).unwrap(),
            rmp_serde::to_vec(&Bin(&[7; 70_000])).unwrap(),
            rmp_serde::to_vec(&vec![1u8; 20]).unwrap(),
            rmp_serde::to_vec(&BTreeMap::from_iter((0..20u32).map(|key| (key, key)))).unwrap(),
            // fixext 1 and ext 8
            vec![0xd4, 1, 2],
            vec![0xc7, 2, 1, 9, 9],
        ];
        for value in values {
            assert_eq!(value_len(&value), Some(value.len()), "{value:x?}");
            assert_eq!(value_len(&value[..value.len() - 1]), None, "{value:x?}");
        }
        assert_eq!(value_len(&[0xc1]), None);
        assert_eq!(value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(value_len(&[]), None);
    }

    #[test]
    fn envelope_checks_magic_version_and_cluster() {
        let ours = Envelope::new("prod-a");
        let packet = ours.wrap(b"payload");
        assert_eq!(ours.open(&packet), Ok(&b"payload"[..]));
        assert_eq!(
            Envelope::new("prod-b").open(&packet),
            Err(DropReason::ForeignCluster)
        );
        // A longer name sharing our prefix is another cluster, not a payload.
        assert_eq!(
            Envelope::new("prod").open(&packet),
            Err(DropReason::ForeignCluster)
        );
        let mut old = packet.clone();
        old[3] = PROTOCOL_VERSION + 1;
        assert_eq!(ours.open(&old), Err(DropReason::Version));
        assert_eq!(ours.open(b"GET / HTTP/1.1"), Err(DropReason::Malformed));
        assert_eq!(ours.open(b""), Err(DropReason::Malformed));
    }

    mod roundtrip {
        use std::collections::BTreeMap;
        use std::net::SocketAddr;

        use foca::{Codec, Header, Member, Message, State};
        use proptest::prelude::*;

        use super::super::MsgpackCodec;
        use crate::{Generation, Identity, MemberMeta, NodeId, Role};

        fn identity() -> impl Strategy<Value = Identity> {
            (
                "[a-z][a-z0-9-]{0,20}",
                any::<u16>(),
                any::<u64>(),
                any::<u32>(),
                proptest::collection::btree_map("[a-z]{1,8}", "[a-z0-9-]{0,16}", 0..4),
                any::<bool>(),
            )
                .prop_map(|(name, port, generation, rejoin, labels, seed)| Identity {
                    node_id: NodeId::new(name).unwrap(),
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    generation: Generation(generation),
                    rejoin,
                    meta: std::sync::Arc::new(MemberMeta {
                        role: if seed { Role::Seed } else { Role::Member },
                        labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
                        version: "1.2.3".into(),
                    }),
                })
        }

        proptest! {
            #[test]
            fn headers_and_members_roundtrip(
                src in identity(),
                dst in identity(),
                incarnation in any::<u16>(),
                probe in any::<u8>(),
                state in 0u8..3,
            ) {
                let mut codec = MsgpackCodec;
                let header = Header {
                    src: src.clone(),
                    src_incarnation: incarnation,
                    dst: dst.clone(),
                    message: Message::PingReq { target: dst.clone(), probe_number: probe },
                };
                let state = [State::Alive, State::Suspect, State::Down][state as usize];
                let member = Member::new(src, incarnation, state);
                let mut buf = Vec::new();
                codec.encode_header(&header, &mut buf).unwrap();
                codec.encode_member(&member, &mut buf).unwrap();
                let mut reader = &buf[..];
                prop_assert_eq!(codec.decode_header(&mut reader).unwrap(), header);
                prop_assert_eq!(codec.decode_member(&mut reader).unwrap(), member);
                prop_assert!(reader.is_empty());
            }

            #[test]
            fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let mut codec = MsgpackCodec;
                let _ = codec.decode_header(&mut &bytes[..]);
                let _ = codec.decode_member(&mut &bytes[..]);
            }
        }

        #[test]
        fn a_full_buffer_is_left_untouched() {
            let mut codec = MsgpackCodec;
            let member = Member::new(
                Identity::placeholder(NodeId::new("n1").unwrap(), "127.0.0.1:1".parse().unwrap()),
                0,
                State::Alive,
            );
            let mut storage = [0u8; 8];
            let mut buf = &mut storage[..];
            assert!(codec.encode_member(&member, &mut buf).is_err());
            assert_eq!(storage, [0u8; 8]);
        }
    }
}
