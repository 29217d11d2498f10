//! DynamoDB attribute values and their typed serialization (format digest §1.4).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::number;

/// A DynamoDB attribute value: all ten types.
///
/// Numbers are kept as the strings DynamoDB stores. Sets are kept in the order given; serialization
/// sorts them canonically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// String.
    S(String),
    /// Number, as its decimal string.
    N(String),
    /// Binary.
    B(Vec<u8>),
    /// Boolean.
    Bool(bool),
    /// Null.
    Null,
    /// String set.
    Ss(Vec<String>),
    /// Number set.
    Ns(Vec<String>),
    /// Binary set.
    Bs(Vec<Vec<u8>>),
    /// Map.
    M(BTreeMap<String, AttributeValue>),
    /// List.
    L(Vec<AttributeValue>),
}

/// A DynamoDB item: attribute name to value.
pub type Item = BTreeMap<String, AttributeValue>;

/// Terminal type ids of the structured-encryption format.
pub mod type_id {
    /// NULL
    pub const NULL: u16 = 0x0000;
    /// S
    pub const STRING: u16 = 0x0001;
    /// N
    pub const NUMBER: u16 = 0x0002;
    /// BOOL
    pub const BOOLEAN: u16 = 0x0004;
    /// SS
    pub const STRING_SET: u16 = 0x0101;
    /// NS
    pub const NUMBER_SET: u16 = 0x0102;
    /// BS
    pub const BINARY_SET: u16 = 0x01FF;
    /// M
    pub const MAP: u16 = 0x0200;
    /// L
    pub const LIST: u16 = 0x0300;
    /// B (also the type of `aws_dbe_head`, `aws_dbe_foot` and every encrypted attribute)
    pub const BINARY: u16 = 0xFFFF;
}

/// Deepest nesting accepted, counting the top-level attribute as the first level (DynamoDB and the
/// official DB-ESDK allow 32 levels, so at most 31 nested maps/lists around a scalar).
pub const MAX_DEPTH: usize = 32;

/// Whether a map or list at `depth` (0 = the top-level attribute) exceeds [`MAX_DEPTH`].
fn too_deep(depth: usize) -> bool {
    depth + 1 >= MAX_DEPTH
}

/// Map keys are attribute names: 1..=65535 UTF-8 bytes, as the official SDKs and DynamoDB require.
fn valid_map_key(key: &str) -> bool {
    (1..=usize::from(u16::MAX)).contains(&key.len())
}

/// Why a value cannot be (de)serialized. Never contains the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueError {
    /// Structural problem.
    Bad(&'static str),
    /// A number that does not normalize.
    Number(&'static str),
}

impl AttributeValue {
    /// The DynamoDB type name: `S`, `N`, `B`, `BOOL`, `NULL`, `SS`, `NS`, `BS`, `M`, `L`.
    pub fn type_name(&self) -> &'static str {
        match self {
            AttributeValue::S(_) => "S",
            AttributeValue::N(_) => "N",
            AttributeValue::B(_) => "B",
            AttributeValue::Bool(_) => "BOOL",
            AttributeValue::Null => "NULL",
            AttributeValue::Ss(_) => "SS",
            AttributeValue::Ns(_) => "NS",
            AttributeValue::Bs(_) => "BS",
            AttributeValue::M(_) => "M",
            AttributeValue::L(_) => "L",
        }
    }

    /// The terminal type id (§1.4).
    pub fn type_id(&self) -> u16 {
        match self {
            AttributeValue::S(_) => type_id::STRING,
            AttributeValue::N(_) => type_id::NUMBER,
            AttributeValue::B(_) => type_id::BINARY,
            AttributeValue::Bool(_) => type_id::BOOLEAN,
            AttributeValue::Null => type_id::NULL,
            AttributeValue::Ss(_) => type_id::STRING_SET,
            AttributeValue::Ns(_) => type_id::NUMBER_SET,
            AttributeValue::Bs(_) => type_id::BINARY_SET,
            AttributeValue::M(_) => type_id::MAP,
            AttributeValue::L(_) => type_id::LIST,
        }
    }

    /// The value bytes (without the type id), numbers normalized and sets sorted, appended to `out`.
    pub(crate) fn serialize_into(&self, out: &mut Vec<u8>) -> Result<(), ValueError> {
        self.serialize_depth(out, 0)
    }

    fn serialize_depth(&self, out: &mut Vec<u8>, depth: usize) -> Result<(), ValueError> {
        match self {
            AttributeValue::S(s) => out.extend_from_slice(s.as_bytes()),
            AttributeValue::N(n) => {
                let n = number::normalize_cow(n).map_err(ValueError::Number)?;
                out.extend_from_slice(n.as_bytes());
            }
            AttributeValue::B(b) => out.extend_from_slice(b),
            AttributeValue::Bool(b) => out.push(u8::from(*b)),
            AttributeValue::Null => {}
            AttributeValue::Ss(set) => {
                let mut sorted: Vec<&str> = set.iter().map(String::as_str).collect();
                sorted.sort_unstable_by(|a, b| cmp_utf16(a, b));
                write_set(out, sorted.iter().map(|s| s.as_bytes()))?;
            }
            AttributeValue::Ns(set) => {
                let mut sorted = Vec::with_capacity(set.len());
                for n in set {
                    sorted.push(number::normalize_cow(n).map_err(ValueError::Number)?);
                }
                sorted.sort_unstable_by(|a, b| cmp_utf16(a, b));
                write_set(out, sorted.iter().map(|s| s.as_bytes()))?;
            }
            AttributeValue::Bs(set) => {
                let mut sorted: Vec<&[u8]> = set.iter().map(Vec::as_slice).collect();
                sorted.sort_unstable();
                write_set(out, sorted.iter().copied())?;
            }
            AttributeValue::M(map) => {
                if too_deep(depth) {
                    return Err(ValueError::Bad("nested deeper than 32 levels"));
                }
                let mut entries: Vec<(&String, &AttributeValue)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| cmp_utf16(a.0, b.0));
                put_u32(out, entries.len())?;
                for (k, v) in entries {
                    if !valid_map_key(k) {
                        return Err(ValueError::Bad("map key is empty or longer than 65535 bytes"));
                    }
                    out.extend_from_slice(&type_id::STRING.to_be_bytes());
                    put_u32(out, k.len())?;
                    out.extend_from_slice(k.as_bytes());
                    v.serialize_nested(out, depth + 1)?;
                }
            }
            AttributeValue::L(list) => {
                if too_deep(depth) {
                    return Err(ValueError::Bad("nested deeper than 32 levels"));
                }
                put_u32(out, list.len())?;
                for v in list {
                    v.serialize_nested(out, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    /// `u16 type || u32 len || value` as used inside maps and lists.
    fn serialize_nested(&self, out: &mut Vec<u8>, depth: usize) -> Result<(), ValueError> {
        out.extend_from_slice(&self.type_id().to_be_bytes());
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        self.serialize_depth(out, depth)?;
        let len = out.len() - len_at - 4;
        let len = u32::try_from(len).map_err(|_| ValueError::Bad("value longer than 4 GiB"))?;
        if let Some(slot) = out.get_mut(len_at..len_at + 4) {
            slot.copy_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }

    /// The value bytes as a fresh vector.
    pub(crate) fn serialize(&self) -> Result<Vec<u8>, ValueError> {
        let mut out = Vec::new();
        self.serialize_into(&mut out)?;
        Ok(out)
    }

    /// Parses value bytes of the given type id.
    pub(crate) fn deserialize(type_id: u16, bytes: &[u8]) -> Result<AttributeValue, ValueError> {
        Self::deserialize_depth(type_id, bytes, 0)
    }

    /// Parses value bytes, taking ownership of the buffer for S and B (no copy).
    pub(crate) fn deserialize_owned(type_id: u16, bytes: Vec<u8>) -> Result<AttributeValue, ValueError> {
        match type_id {
            type_id::BINARY => Ok(AttributeValue::B(bytes)),
            type_id::STRING => String::from_utf8(bytes)
                .map(AttributeValue::S)
                .map_err(|_| ValueError::Bad("string is not UTF-8")),
            _ => Self::deserialize(type_id, &bytes),
        }
    }

    fn deserialize_depth(tid: u16, bytes: &[u8], depth: usize) -> Result<AttributeValue, ValueError> {
        Ok(match tid {
            type_id::NULL => {
                if !bytes.is_empty() {
                    return Err(ValueError::Bad("NULL with a non-empty value"));
                }
                AttributeValue::Null
            }
            type_id::STRING => AttributeValue::S(utf8(bytes)?),
            type_id::NUMBER => AttributeValue::N(utf8(bytes)?),
            type_id::BINARY => AttributeValue::B(bytes.to_vec()),
            type_id::BOOLEAN => match bytes {
                [0] => AttributeValue::Bool(false),
                [1] => AttributeValue::Bool(true),
                _ => return Err(ValueError::Bad("BOOL value is not a single 0x00/0x01 byte")),
            },
            type_id::STRING_SET => AttributeValue::Ss(read_set(bytes, utf8)?),
            type_id::NUMBER_SET => AttributeValue::Ns(read_set(bytes, utf8)?),
            type_id::BINARY_SET => AttributeValue::Bs(read_set(bytes, |b| Ok(b.to_vec()))?),
            type_id::MAP => {
                if too_deep(depth) {
                    return Err(ValueError::Bad("nested deeper than 32 levels"));
                }
                let mut r = Reader(bytes);
                let count = r.u32()?;
                let mut map = BTreeMap::new();
                for _ in 0..count {
                    if r.u16()? != type_id::STRING {
                        return Err(ValueError::Bad("map key is not a string"));
                    }
                    let klen = r.u32()?;
                    let key = utf8(r.take(klen)?)?;
                    if !valid_map_key(&key) {
                        return Err(ValueError::Bad("map key is empty or longer than 65535 bytes"));
                    }
                    let vt = r.u16()?;
                    let vlen = r.u32()?;
                    let value = Self::deserialize_depth(vt, r.take(vlen)?, depth + 1)?;
                    if map.insert(key, value).is_some() {
                        return Err(ValueError::Bad("duplicate map key"));
                    }
                }
                r.end()?;
                AttributeValue::M(map)
            }
            type_id::LIST => {
                if too_deep(depth) {
                    return Err(ValueError::Bad("nested deeper than 32 levels"));
                }
                let mut r = Reader(bytes);
                let count = r.u32()?;
                let mut list = Vec::with_capacity(count.min(bytes.len() / 6));
                for _ in 0..count {
                    let vt = r.u16()?;
                    let vlen = r.u32()?;
                    list.push(Self::deserialize_depth(vt, r.take(vlen)?, depth + 1)?);
                }
                r.end()?;
                AttributeValue::L(list)
            }
            _ => return Err(ValueError::Bad("unknown type id")),
        })
    }
}

/// Compares two strings by UTF-16 code units (Java/.NET/Dafny string order).
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    // UTF-8 byte order equals code point order; it differs from UTF-16 order only when the first
    // difference is between a supplementary character and one in U+E000..=U+FFFF.
    if a.is_ascii() || b.is_ascii() {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

fn utf8(b: &[u8]) -> Result<String, ValueError> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| ValueError::Bad("string is not UTF-8"))
}

fn put_u32(out: &mut Vec<u8>, n: usize) -> Result<(), ValueError> {
    let n = u32::try_from(n).map_err(|_| ValueError::Bad("length does not fit 32 bits"))?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

fn write_set<'a>(out: &mut Vec<u8>, sorted: impl ExactSizeIterator<Item = &'a [u8]>) -> Result<(), ValueError> {
    put_u32(out, sorted.len())?;
    let mut prev: Option<&[u8]> = None;
    for entry in sorted {
        if prev == Some(entry) {
            return Err(ValueError::Bad("duplicate set entry"));
        }
        put_u32(out, entry.len())?;
        out.extend_from_slice(entry);
        prev = Some(entry);
    }
    Ok(())
}

fn read_set<T>(bytes: &[u8], f: impl Fn(&[u8]) -> Result<T, ValueError>) -> Result<Vec<T>, ValueError> {
    let mut r = Reader(bytes);
    let count = r.u32()?;
    let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
    for _ in 0..count {
        let len = r.u32()?;
        out.push(f(r.take(len)?)?);
    }
    r.end()?;
    Ok(out)
}

/// A bounds-checked big-endian reader.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ValueError> {
        if n > self.0.len() {
            return Err(ValueError::Bad("length exceeds the remaining bytes"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, ValueError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<usize, ValueError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn end(&self) -> Result<(), ValueError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValueError::Bad("trailing bytes"))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round(v: &AttributeValue) -> AttributeValue {
        let bytes = v.serialize().unwrap();
        AttributeValue::deserialize(v.type_id(), &bytes).unwrap()
    }

    #[test]
    fn scalar_encodings() {
        assert_eq!(AttributeValue::S("ab".into()).serialize().unwrap(), b"ab");
        assert_eq!(AttributeValue::N("-0.50".into()).serialize().unwrap(), b"-0.5");
        assert_eq!(AttributeValue::Bool(true).serialize().unwrap(), [1]);
        assert_eq!(AttributeValue::Null.serialize().unwrap(), b"");
        assert_eq!(AttributeValue::B(vec![1, 2]).serialize().unwrap(), [1, 2]);
    }

    #[test]
    fn set_encoding_sorted() {
        let v = AttributeValue::Ss(vec!["b".into(), "a".into()]);
        assert_eq!(v.serialize().unwrap(), [0, 0, 0, 2, 0, 0, 0, 1, b'a', 0, 0, 0, 1, b'b']);
        let v = AttributeValue::Ns(vec!["10".into(), "2".into(), "1.0".into()]);
        let bytes = v.serialize().unwrap();
        assert_eq!(
            AttributeValue::deserialize(type_id::NUMBER_SET, &bytes).unwrap(),
            AttributeValue::Ns(vec!["1".into(), "10".into(), "2".into()])
        );
        assert!(AttributeValue::Ns(vec!["1".into(), "1.0".into()]).serialize().is_err());
        assert!(AttributeValue::Ss(vec!["x".into(), "x".into()]).serialize().is_err());
    }

    #[test]
    fn utf16_order() {
        // U+FF61 sorts after U+1D401 in UTF-8 but before it in UTF-16.
        assert_eq!(cmp_utf16("\u{FF61}", "\u{1D401}"), Ordering::Greater);
        assert_eq!("\u{FF61}".cmp("\u{1D401}"), Ordering::Less);
        assert_eq!(cmp_utf16("a", "b"), Ordering::Less);
    }

    #[test]
    fn map_encoding() {
        let mut m = BTreeMap::new();
        m.insert("k".to_owned(), AttributeValue::N("1".into()));
        let v = AttributeValue::M(m);
        assert_eq!(
            v.serialize().unwrap(),
            [0, 0, 0, 1, 0, 1, 0, 0, 0, 1, b'k', 0, 2, 0, 0, 0, 1, b'1']
        );
        assert_eq!(round(&v), v);
    }

    #[test]
    fn malformed_rejected() {
        for (t, b) in [
            (type_id::NULL, &[1u8][..]),
            (type_id::BOOLEAN, &[2]),
            (type_id::BOOLEAN, &[]),
            (type_id::STRING, &[0xff]),
            (type_id::STRING_SET, &[0, 0, 0, 1]),
            (type_id::STRING_SET, &[0, 0, 0, 0, 9]),
            (type_id::LIST, &[0xff, 0xff, 0xff, 0xff]),
            (type_id::MAP, &[0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            (0x0777, &[]),
        ] {
            assert!(AttributeValue::deserialize(t, b).is_err(), "{t:#x} {b:?}");
        }
    }

    #[test]
    fn depth_limit() {
        let mut v = AttributeValue::Null;
        for _ in 0..40 {
            v = AttributeValue::L(vec![v]);
        }
        assert!(v.serialize().is_err());
        // 31 containers around a scalar is the deepest the official SDKs read and write.
        let mut v = AttributeValue::Null;
        for _ in 0..31 {
            v = AttributeValue::L(vec![v]);
        }
        assert_eq!(round(&v), v);
        let deeper = AttributeValue::M([("k".to_owned(), v)].into());
        assert!(deeper.serialize().is_err());
        // A hand-made 32-container encoding is rejected on read as well.
        let mut bytes = vec![0, 0, 0, 0];
        for _ in 0..31 {
            let mut outer = vec![0, 0, 0, 1, 0x03, 0x00];
            outer.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
            outer.extend_from_slice(&bytes);
            bytes = outer;
        }
        assert!(AttributeValue::deserialize(type_id::LIST, &bytes).is_err());
    }

    #[test]
    fn empty_map_keys_are_rejected_both_ways() {
        let v = AttributeValue::M([(String::new(), AttributeValue::Null)].into());
        assert!(v.serialize().is_err());
        let bytes = [0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(AttributeValue::deserialize(type_id::MAP, &bytes).is_err());
    }

    pub(crate) fn arb_number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            (-1e50f64..1e50f64).prop_map(|v| format!("{v:e}")),
            "-?0{0,3}[1-9][0-9]{0,10}\\.[0-9]{0,6}0{0,3}",
        ]
    }

    /// Values whose serialization round-trips to themselves after normalization.
    pub(crate) fn arb_value() -> impl Strategy<Value = AttributeValue> {
        let leaf = prop_oneof![
            "\\PC{0,12}".prop_map(AttributeValue::S),
            arb_number().prop_map(AttributeValue::N),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(AttributeValue::B),
            any::<bool>().prop_map(AttributeValue::Bool),
            Just(AttributeValue::Null),
            proptest::collection::btree_set("\\PC{0,8}", 0..4)
                .prop_map(|s| AttributeValue::Ss(s.into_iter().collect())),
            proptest::collection::btree_set(any::<i32>(), 0..4)
                .prop_map(|s| AttributeValue::Ns(s.into_iter().map(|n| n.to_string()).collect())),
            proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 0..6), 0..4)
                .prop_map(|s| AttributeValue::Bs(s.into_iter().collect())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(AttributeValue::L),
                proptest::collection::btree_map("\\PC{1,6}", inner, 0..4).prop_map(AttributeValue::M),
            ]
        })
    }

    /// The canonical form a value takes after a serialization round trip.
    pub(crate) fn canonical(v: &AttributeValue) -> AttributeValue {
        match v {
            AttributeValue::N(n) => AttributeValue::N(number::normalize(n).unwrap()),
            AttributeValue::Ss(s) => {
                let mut s = s.clone();
                s.sort_by(|a, b| cmp_utf16(a, b));
                AttributeValue::Ss(s)
            }
            AttributeValue::Ns(s) => {
                let mut s: Vec<String> = s.iter().map(|n| number::normalize(n).unwrap()).collect();
                s.sort_by(|a, b| cmp_utf16(a, b));
                AttributeValue::Ns(s)
            }
            AttributeValue::Bs(s) => {
                let mut s = s.clone();
                s.sort();
                AttributeValue::Bs(s)
            }
            AttributeValue::M(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), canonical(v))).collect()),
            AttributeValue::L(l) => AttributeValue::L(l.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }

    proptest! {
        #[test]
        fn round_trip(v in arb_value()) {
            prop_assert_eq!(round(&v), canonical(&v));
        }

        #[test]
        fn deserialize_never_panics(t in any::<u16>(), b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = AttributeValue::deserialize(t, &b);
        }
    }
}
