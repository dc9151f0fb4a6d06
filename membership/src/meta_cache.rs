//! Decoding [`MemberMeta`] into a shared copy, without allocating when the
//! value is one already seen (in the compact form, with its labels in key
//! order: the form every SWIM packet uses).
//!
//! Every SWIM header and member update carries an [`Identity`](crate::Identity),
//! and with it the member's role, labels and version. A cluster has a
//! handful of distinct values (one per role, zone and agent version), so
//! decoding each into fresh strings and a fresh map, only to find the equal
//! copy and drop the new one, was most of the cost of an identity. Here the
//! strings are read into a reused scratch buffer, compared with the cached
//! value of the same hash, and turned into a new value only on a miss.
//!
//! Only a cache: the decoded value and the errors are the ones the derived
//! `Deserialize` gives, whether the value came from here or not (labels
//! repeated or out of order never match a cached value, and are built into
//! a map as the derived decode builds it; the named form is decoded by the
//! derived decode itself). A decode that fails after the metadata (in the
//! rest of the identity) may still have cached it; no value depends on
//! that.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hasher;
use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::{MemberMeta, Role};

/// Distinct metadata values kept for sharing, per thread. A peer sending
/// more only makes the cache start over.
const METAS_CACHED_MAX: usize = 1024;

/// The strings of the metadata being decoded: every key, value and the
/// version, one after another in `text`.
#[derive(Default)]
struct Scratch {
    text: String,
    labels: Vec<(Range<usize>, Range<usize>)>,
    version: Range<usize>,
}

impl Scratch {
    fn clear(&mut self) {
        self.text.clear();
        self.labels.clear();
        self.version = 0..0;
    }

    fn labels(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.labels
            .iter()
            .map(|(key, value)| (&self.text[key.clone()], &self.text[value.clone()]))
    }

    fn version(&self) -> &str {
        &self.text[self.version.clone()]
    }

    /// Whether `meta` is the value these strings decode to. Labels must
    /// match one for one and in order: the cached map's keys ascend with
    /// no repeats, so labels repeated or out of order never match, and
    /// take the miss path, which builds the map as the derived decode does.
    fn matches(&self, role: Role, meta: &MemberMeta) -> bool {
        meta.role == role
            && meta.version == self.version()
            && meta.labels.len() == self.labels.len()
            && meta
                .labels
                .iter()
                .zip(self.labels())
                .all(|((key, value), (k, v))| key == k && value == v)
    }

    /// The value the derived decode builds from these strings: each label
    /// inserted in turn, so a repeated key keeps its last value.
    fn to_meta(&self, role: Role) -> MemberMeta {
        let mut labels = BTreeMap::new();
        for (key, value) in self.labels() {
            labels.insert(key.to_owned(), value.to_owned());
        }
        MemberMeta {
            role,
            labels,
            version: self.version().to_owned(),
        }
    }
}

fn hash_of<'a>(role: Role, labels: impl Iterator<Item = (&'a str, &'a str)>, version: &str) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write_u8(role as u8);
    for (key, value) in labels {
        hasher.write(key.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(value.as_bytes());
        hasher.write_u8(0xff);
    }
    hasher.write(version.as_bytes());
    hasher.finish()
}

fn hash_of_meta(meta: &MemberMeta) -> u64 {
    hash_of(
        meta.role,
        meta.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &meta.version,
    )
}

thread_local! {
    /// Decoded metadata by hash, and the scratch buffer (taken out while a
    /// decode runs). A simulator's many agents share them.
    static METAS: RefCell<BTreeMap<u64, Arc<MemberMeta>>> = const { RefCell::new(BTreeMap::new()) };
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            text: String::new(),
            labels: Vec::new(),
            version: 0..0,
        })
    };
}

/// The shared copy of `meta`'s value (cached if it was not).
fn share(meta: MemberMeta) -> Arc<MemberMeta> {
    let hash = hash_of_meta(&meta);
    METAS.with_borrow_mut(|metas| {
        if let Some(shared) = metas.get(&hash)
            && **shared == meta
        {
            return shared.clone();
        }
        if metas.len() >= METAS_CACHED_MAX {
            metas.clear();
        }
        let shared = Arc::new(meta);
        metas.insert(hash, shared.clone());
        shared
    })
}

/// The shared copy of the value in `scratch`, built only on a miss.
fn share_scratch(role: Role, scratch: &Scratch) -> Arc<MemberMeta> {
    let hash = hash_of(role, scratch.labels(), scratch.version());
    let cached = METAS.with_borrow(|metas| {
        metas
            .get(&hash)
            .filter(|shared| scratch.matches(role, shared))
            .cloned()
    });
    cached.unwrap_or_else(|| share(scratch.to_meta(role)))
}

/// Decodes a [`MemberMeta`] and returns the shared copy of that value.
pub(crate) fn interned_meta<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Arc<MemberMeta>, D::Error> {
    deserializer.deserialize_struct("MemberMeta", &["role", "labels", "version"], MetaVisitor)
}

struct MetaVisitor;

impl<'de> Visitor<'de> for MetaVisitor {
    type Value = Arc<MemberMeta>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct MemberMeta")
    }

    /// The compact form every SWIM packet uses: `[role, labels, version]`.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut scratch = SCRATCH.take();
        scratch.clear();
        let decoded = read_fields(&mut seq, &mut scratch);
        let shared = decoded.map(|role| share_scratch(role, &scratch));
        SCRATCH.set(scratch);
        shared
    }

    /// Field names and values (a self-describing encoding): decoded as
    /// derived, then shared.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        MemberMeta::deserialize(de::value::MapAccessDeserializer::new(map)).map(share)
    }
}

/// Reads `[role, labels, version]` into `scratch`; returns the role. Errors
/// as the derived decode's `visit_seq` does.
fn read_fields<'de, A: SeqAccess<'de>>(
    seq: &mut A,
    scratch: &mut Scratch,
) -> Result<Role, A::Error> {
    const EXPECTED: &str = "struct MemberMeta with 3 elements";
    let role: Role = seq
        .next_element()?
        .ok_or_else(|| de::Error::invalid_length(0, &EXPECTED))?;
    seq.next_element_seed(Labels(scratch))?
        .ok_or_else(|| de::Error::invalid_length(1, &EXPECTED))?;
    scratch.version = seq
        .next_element_seed(Text(&mut scratch.text))?
        .ok_or_else(|| de::Error::invalid_length(2, &EXPECTED))?;
    Ok(role)
}

/// The labels map, appended to the scratch.
struct Labels<'a>(&'a mut Scratch);

impl<'de> DeserializeSeed<'de> for Labels<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Labels<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(Text(&mut self.0.text))? {
            let value = map.next_value_seed(Text(&mut self.0.text))?;
            self.0.labels.push((key, value));
        }
        Ok(())
    }
}

/// One string, appended to the scratch text; its range there.
struct Text<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for Text<'_> {
    type Value = Range<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for Text<'_> {
    type Value = Range<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        let start = self.0.len();
        self.0.push_str(text);
        Ok(start..self.0.len())
    }

    /// As `String`'s own decode: bytes are accepted if they are UTF-8.
    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.visit_str(text),
            Err(_) => Err(de::Error::invalid_value(
                de::Unexpected::Bytes(bytes),
                &self,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Serialize;
    use serde::ser::{SerializeMap, SerializeTuple, Serializer};

    use super::*;

    fn meta(labels: &[(&str, &str)]) -> MemberMeta {
        MemberMeta {
            role: Role::Seed,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            version: "1.2.3".into(),
        }
    }

    /// Decodes `bytes` both ways, from a slice as `codec::decode_item`
    /// does: through the cache, and as derived. Errors as their messages.
    fn both(bytes: &[u8]) -> (Result<MemberMeta, String>, Result<MemberMeta, String>) {
        let cached = interned_meta(&mut rmp_serde::Deserializer::from_read_ref(bytes))
            .map(|shared| (*shared).clone())
            .map_err(|e| e.to_string());
        let derived = MemberMeta::deserialize(&mut rmp_serde::Deserializer::from_read_ref(bytes))
            .map_err(|e| e.to_string());
        (cached, derived)
    }

    /// `[role, labels as listed (any order, repeats), version]`, labels as
    /// strings or, with `bin`, as byte strings.
    fn odd_meta(role: &str, labels: &[(&[u8], &[u8])], version: &[u8], bin: bool) -> Vec<u8> {
        struct Text<'a>(&'a [u8], bool);
        impl Serialize for Text<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if self.1 {
                    s.serialize_bytes(self.0)
                } else {
                    // Possibly not UTF-8: written as a str marker by hand.
                    s.serialize_str(std::str::from_utf8(self.0).unwrap_or("\u{fffd}"))
                }
            }
        }
        struct Pairs<'a>(&'a [(&'a [u8], &'a [u8])], bool);
        impl Serialize for Pairs<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    map.serialize_entry(&Text(k, self.1), &Text(v, self.1))?;
                }
                map.end()
            }
        }
        let mut bytes = Vec::new();
        let mut ser = rmp_serde::Serializer::new(&mut bytes);
        let mut tuple = (&mut ser).serialize_tuple(3).unwrap();
        tuple.serialize_element(role).unwrap();
        tuple.serialize_element(&Pairs(labels, bin)).unwrap();
        tuple.serialize_element(&Text(version, bin)).unwrap();
        tuple.end().unwrap();
        bytes
    }

    #[test]
    fn decodes_what_the_derived_decode_does() {
        let plain = meta(&[("region", "eu"), ("zone", "a")]);
        // The compact form, twice (a miss, then a hit), and the named form.
        for bytes in [
            rmp_serde::to_vec(&plain).unwrap(),
            rmp_serde::to_vec(&plain).unwrap(),
            rmp_serde::to_vec_named(&plain).unwrap(),
        ] {
            assert_eq!(both(&bytes), (Ok(plain.clone()), Ok(plain.clone())));
        }
        // Labels out of order and a repeated key: the derived map keeps the
        // last value; so must the cache, and it must not return the value
        // cached for the canonical form above.
        let odd = odd_meta(
            "seed",
            &[(b"zone", b"a"), (b"region", b"us"), (b"zone", b"b")],
            b"1.2.3",
            false,
        );
        let (cached, derived) = both(&odd);
        assert_eq!(cached, Ok(meta(&[("region", "us"), ("zone", "b")])));
        assert_eq!(cached, derived);
        // Strings sent as byte strings are accepted if UTF-8, as `String`'s
        // own decode accepts them.
        let bin = odd_meta("seed", &[(b"zone", b"a")], b"1.2.3", true);
        let (cached, derived) = both(&bin);
        assert_eq!(cached, Ok(meta(&[("zone", "a")])));
        assert_eq!(cached, derived);
        // Failures give the same error, whatever breaks.
        let mut not_utf8 = odd_meta("seed", &[(b"zone", b"a")], b"1.2.3", false);
        let at = not_utf8.len() - 1;
        not_utf8[at] = 0xff;
        let broken: Vec<Vec<u8>> = vec![
            not_utf8,
            odd_meta("seed", &[(b"zone", b"\xff")], b"1.2.3", true),
            odd_meta("leader", &[], b"1.2.3", false),
            rmp_serde::to_vec(&("seed", (), "1.2.3")).unwrap(),
            rmp_serde::to_vec(&("seed", BTreeMap::<String, String>::new())).unwrap(),
            rmp_serde::to_vec(&("seed", BTreeMap::<String, String>::new(), "1", 4)).unwrap(),
            rmp_serde::to_vec(&("seed", [("zone", 7)], "1")).unwrap(),
            rmp_serde::to_vec(&7).unwrap(),
        ];
        for bytes in broken {
            let (cached, derived) = both(&bytes);
            assert!(derived.is_err(), "{bytes:x?} decodes: {derived:?}");
            assert_eq!(cached, derived, "{bytes:x?}");
        }
        let good = rmp_serde::to_vec(&plain).unwrap();
        for cut in 0..good.len() {
            let (cached, derived) = both(&good[..cut]);
            assert!(derived.is_err(), "cut at {cut}");
            assert_eq!(cached, derived, "cut at {cut}");
        }
    }

    proptest! {
        /// Any bytes, and valid metadata with bytes changed: the cache and
        /// the derived decode agree on the value or on the error.
        #[test]
        fn agrees_with_the_derived_decode_on_any_bytes(
            labels in proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{0,4}", 0..4),
            seed in any::<bool>(),
            changes in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            noise in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let meta = MemberMeta {
                role: if seed { Role::Seed } else { Role::Member },
                labels,
                version: "0.1".into(),
            };
            let mut bytes = rmp_serde::to_vec(&meta).unwrap();
            for (at, byte) in changes {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            let (cached, derived) = both(&bytes);
            prop_assert_eq!(cached, derived);
            let (cached, derived) = both(&noise);
            prop_assert_eq!(cached, derived);
        }
    }

    #[test]
    fn equal_values_share_one_allocation() {
        let a = meta(&[("zone", "x")]);
        let b = meta(&[("zone", "y")]);
        let decode = |meta: &MemberMeta| {
            let bytes = rmp_serde::to_vec(meta).unwrap();
            interned_meta(&mut rmp_serde::Deserializer::from_read_ref(&bytes)).unwrap()
        };
        let (a1, a2, b1) = (decode(&a), decode(&a), decode(&b));
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b1));
        assert_eq!((&*a1, &*b1), (&a, &b));
    }
}
