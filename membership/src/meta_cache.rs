//! Decoding [`MemberMeta`] into a shared copy, without allocating when the
//! value is one already seen.
//!
//! Every SWIM header and member update carries an [`Identity`](crate::Identity),
//! and with it the member's role, labels and version. A cluster has a
//! handful of distinct values (one per role, zone and agent version), so
//! decoding each into fresh strings and a fresh map, only to find the equal
//! copy and drop the new one, was most of the cost of an identity. Here the
//! strings are read into a reused scratch buffer, compared with the cached
//! value of the same hash, and turned into a new value only on a miss.
//!
//! Only a cache: the decoded value is the one the derived `Deserialize`
//! would give (same errors, same value; labels repeated or out of order
//! fall back to that exact path), whether it came from here or not.

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

    /// The value the derived decode builds from these strings (a repeated
    /// key keeps its last value).
    fn to_meta(&self, role: Role) -> MemberMeta {
        MemberMeta {
            role,
            labels: self
                .labels()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect::<BTreeMap<_, _>>(),
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
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
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

    /// Decodes `bytes` both ways: through the cache, and as derived.
    fn both(bytes: &[u8]) -> (Result<MemberMeta, String>, Result<MemberMeta, String>) {
        let mut de = rmp_serde::Deserializer::new(bytes);
        let cached = interned_meta(&mut de)
            .map(|shared| (*shared).clone())
            .map_err(|e| e.to_string());
        let derived = rmp_serde::from_slice::<MemberMeta>(bytes).map_err(|e| e.to_string());
        (cached, derived)
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
            let (cached, derived) = both(&bytes);
            assert_eq!(cached, Ok(plain.clone()));
            assert_eq!(derived, Ok(plain.clone()));
        }
        // Labels out of order and a repeated key: the derived map keeps the
        // last value; so must the cache, and it must not return the value
        // cached for the canonical form above.
        let odd = (
            Role::Seed,
            vec![("zone", "a"), ("region", "us"), ("zone", "b")],
            "1.2.3",
        );
        let mut bytes = Vec::new();
        {
            use serde::Serialize;
            use serde::ser::{SerializeMap, SerializeTuple, Serializer};
            let mut ser = rmp_serde::Serializer::new(&mut bytes);
            let mut tuple = (&mut ser).serialize_tuple(3).unwrap();
            tuple.serialize_element(&odd.0).unwrap();
            struct Pairs<'a>(&'a [(&'a str, &'a str)]);
            impl Serialize for Pairs<'_> {
                fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    let mut map = s.serialize_map(Some(self.0.len()))?;
                    for (k, v) in self.0 {
                        map.serialize_entry(k, v)?;
                    }
                    map.end()
                }
            }
            tuple.serialize_element(&Pairs(&odd.1)).unwrap();
            tuple.serialize_element(odd.2).unwrap();
            tuple.end().unwrap();
        }
        let (cached, derived) = both(&bytes);
        assert_eq!(cached, Ok(meta(&[("region", "us"), ("zone", "b")])));
        assert_eq!(cached, derived);
        // Broken input fails both ways, truncated anywhere.
        let good = rmp_serde::to_vec(&plain).unwrap();
        for cut in 0..good.len() {
            let (cached, derived) = both(&good[..cut]);
            assert!(cached.is_err() && derived.is_err(), "cut at {cut}");
        }
        // Two elements instead of three.
        let short = rmp_serde::to_vec(&(Role::Seed, BTreeMap::<String, String>::new())).unwrap();
        let (cached, derived) = both(&short);
        assert!(cached.is_err() && derived.is_err());
    }

    #[test]
    fn equal_values_share_one_allocation() {
        let a = meta(&[("zone", "x")]);
        let b = meta(&[("zone", "y")]);
        let decode = |meta: &MemberMeta| {
            let bytes = rmp_serde::to_vec(meta).unwrap();
            interned_meta(&mut rmp_serde::Deserializer::new(&bytes[..])).unwrap()
        };
        let (a1, a2, b1) = (decode(&a), decode(&a), decode(&b));
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b1));
        assert_eq!((&*a1, &*b1), (&a, &b));
    }
}
