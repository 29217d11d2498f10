//! The legacy clients' attribute serialization: what is encrypted, and what the signature hashes.
//!
//! Every value starts with a reserved `00` byte and a one-byte tag: `b` binary, `n` number, `s` string, `?`
//! boolean, `00` null, `B`/`N`/`S` the sets, `L` list, `M` map. Scalars are `u32 length || bytes` (numbers as
//! their normalized decimal string); a boolean is one byte `00`/`01`; null has nothing. Sets are
//! `u32 count` then each member's `u32 length || bytes`, sorted by those bytes; a list is `u32 count` then each
//! member serialized; a map is `u32 count` then, in byte order of the keys, the key serialized as a string and
//! the value. Lengths and counts are big-endian.

use std::collections::BTreeMap;

use ddbguard_dbe::{AttributeValue, MAX_DEPTH, normalize_number};

use crate::error::DdbecError;

const RESERVED: u8 = 0;

mod tag {
    pub const BINARY: u8 = b'b';
    pub const NUMBER: u8 = b'n';
    pub const STRING: u8 = b's';
    pub const BOOLEAN: u8 = b'?';
    pub const NULL: u8 = 0;
    pub const BINARY_SET: u8 = b'B';
    pub const NUMBER_SET: u8 = b'N';
    pub const STRING_SET: u8 = b'S';
    pub const LIST: u8 = b'L';
    pub const MAP: u8 = b'M';
}

/// A value that cannot be (de)serialized; the caller adds the attribute name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueError {
    /// Structural problem.
    Bad(&'static str),
    /// A number that does not normalize.
    Number,
}

impl ValueError {
    pub(crate) fn named(self, attribute: &str) -> DdbecError {
        match self {
            ValueError::Bad(what) => DdbecError::BadSerialization {
                attribute: attribute.to_owned(),
                what,
            },
            ValueError::Number => DdbecError::InvalidNumber {
                attribute: attribute.to_owned(),
            },
        }
    }
}

/// Serializes one attribute value as the legacy clients do.
pub fn serialize_attribute(value: &AttributeValue) -> Result<Vec<u8>, DdbecError> {
    let mut out = Vec::new();
    serialize_into(value, &mut out, 0).map_err(|e| e.named(""))?;
    Ok(out)
}

/// Serializes one attribute value into `out`, which is cleared first (a buffer reused across attributes).
pub(crate) fn serialize_value_into(value: &AttributeValue, out: &mut Vec<u8>) -> Result<(), ValueError> {
    out.clear();
    serialize_into(value, out, 0)
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), ValueError> {
    let len = u32::try_from(len).map_err(|_| ValueError::Bad("value longer than 4 GiB"))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

fn put_value(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), ValueError> {
    put_len(out, bytes.len())?;
    out.extend_from_slice(bytes);
    Ok(())
}

fn normalized(n: &str) -> Result<String, ValueError> {
    normalize_number(n).map_err(|_| ValueError::Number)
}

fn put_set<'a>(out: &mut Vec<u8>, tag: u8, members: impl Iterator<Item = &'a [u8]>) -> Result<(), ValueError> {
    let mut members: Vec<&[u8]> = members.collect();
    members.sort_unstable();
    out.extend_from_slice(&[RESERVED, tag]);
    put_len(out, members.len())?;
    for m in members {
        put_value(out, m)?;
    }
    Ok(())
}

fn serialize_into(value: &AttributeValue, out: &mut Vec<u8>, depth: usize) -> Result<(), ValueError> {
    match value {
        AttributeValue::B(b) => {
            out.extend_from_slice(&[RESERVED, tag::BINARY]);
            put_value(out, b)?;
        }
        AttributeValue::N(n) => {
            out.extend_from_slice(&[RESERVED, tag::NUMBER]);
            put_value(out, normalized(n)?.as_bytes())?;
        }
        AttributeValue::S(s) => {
            out.extend_from_slice(&[RESERVED, tag::STRING]);
            put_value(out, s.as_bytes())?;
        }
        AttributeValue::Bool(b) => out.extend_from_slice(&[RESERVED, tag::BOOLEAN, u8::from(*b)]),
        AttributeValue::Null => out.extend_from_slice(&[RESERVED, tag::NULL]),
        AttributeValue::Bs(set) => put_set(out, tag::BINARY_SET, set.iter().map(Vec::as_slice))?,
        AttributeValue::Ss(set) => put_set(out, tag::STRING_SET, set.iter().map(String::as_bytes))?,
        AttributeValue::Ns(set) => {
            let norm = set.iter().map(|n| normalized(n)).collect::<Result<Vec<_>, _>>()?;
            put_set(out, tag::NUMBER_SET, norm.iter().map(String::as_bytes))?;
        }
        AttributeValue::L(list) => {
            if depth + 1 >= MAX_DEPTH {
                return Err(ValueError::Bad("nested deeper than 32 levels"));
            }
            out.extend_from_slice(&[RESERVED, tag::LIST]);
            put_len(out, list.len())?;
            for v in list {
                serialize_into(v, out, depth + 1)?;
            }
        }
        AttributeValue::M(map) => {
            if depth + 1 >= MAX_DEPTH {
                return Err(ValueError::Bad("nested deeper than 32 levels"));
            }
            out.extend_from_slice(&[RESERVED, tag::MAP]);
            put_len(out, map.len())?;
            // BTreeMap<String, _> iterates in byte order of the keys, as the clients sort them.
            for (k, v) in map {
                out.extend_from_slice(&[RESERVED, tag::STRING]);
                put_value(out, k.as_bytes())?;
                serialize_into(v, out, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Deserializes one value (a decrypted attribute); the whole input must be consumed.
pub fn deserialize_attribute(bytes: &[u8]) -> Result<AttributeValue, DdbecError> {
    deserialize_value(bytes).map_err(|e| e.named(""))
}

pub(crate) fn deserialize_value(bytes: &[u8]) -> Result<AttributeValue, ValueError> {
    let mut r = Reader { bytes, at: 0 };
    let v = r.value(0)?;
    if r.at != bytes.len() {
        return Err(ValueError::Bad("trailing bytes after the value"));
    }
    Ok(v)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ValueError> {
        let end = self.at.checked_add(n).ok_or(ValueError::Bad("length overflows"))?;
        let s = self.bytes.get(self.at..end).ok_or(ValueError::Bad("truncated value"))?;
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<usize, ValueError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        usize::try_from(u32::from_be_bytes(b)).map_err(|_| ValueError::Bad("length overflows"))
    }

    fn field(&mut self) -> Result<&'a [u8], ValueError> {
        let n = self.u32()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, ValueError> {
        String::from_utf8(self.field()?.to_vec()).map_err(|_| ValueError::Bad("string is not UTF-8"))
    }

    fn number(&mut self) -> Result<String, ValueError> {
        let s = self.string()?;
        // Normalizing checks the syntax; the stored form is kept as written.
        normalized(&s)?;
        Ok(s)
    }

    /// A count, bounded by the bytes left so that a forged count cannot reserve memory.
    fn count(&mut self, min_member_len: usize) -> Result<usize, ValueError> {
        let n = self.u32()?;
        let left = self.bytes.len().saturating_sub(self.at);
        if n.saturating_mul(min_member_len) > left {
            return Err(ValueError::Bad("count exceeds the bytes left"));
        }
        Ok(n)
    }

    fn set<T>(&mut self, mut member: impl FnMut(&mut Self) -> Result<T, ValueError>) -> Result<Vec<T>, ValueError> {
        let n = self.count(4)?;
        (0..n).map(|_| member(self)).collect()
    }

    fn value(&mut self, depth: usize) -> Result<AttributeValue, ValueError> {
        let head = self.take(2)?;
        if head.first() != Some(&RESERVED) {
            return Err(ValueError::Bad("reserved byte is not zero"));
        }
        let tag = head.get(1).copied().unwrap_or_default();
        Ok(match tag {
            tag::BINARY => AttributeValue::B(self.field()?.to_vec()),
            tag::NUMBER => AttributeValue::N(self.number()?),
            tag::STRING => AttributeValue::S(self.string()?),
            tag::BOOLEAN => match self.take(1)? {
                [0] => AttributeValue::Bool(false),
                [1] => AttributeValue::Bool(true),
                _ => return Err(ValueError::Bad("boolean is neither 0 nor 1")),
            },
            tag::NULL => AttributeValue::Null,
            tag::BINARY_SET => AttributeValue::Bs(self.set(|r| r.field().map(<[u8]>::to_vec))?),
            tag::STRING_SET => AttributeValue::Ss(self.set(Self::string)?),
            tag::NUMBER_SET => AttributeValue::Ns(self.set(Self::number)?),
            tag::LIST | tag::MAP if depth + 1 >= MAX_DEPTH => {
                return Err(ValueError::Bad("nested deeper than 32 levels"));
            }
            tag::LIST => {
                let n = self.count(2)?;
                AttributeValue::L((0..n).map(|_| self.value(depth + 1)).collect::<Result<_, _>>()?)
            }
            tag::MAP => {
                let n = self.count(8)?;
                let mut map = BTreeMap::new();
                for _ in 0..n {
                    if self.take(2)? != [RESERVED, tag::STRING] {
                        return Err(ValueError::Bad("map key is not a string"));
                    }
                    let k = self.string()?;
                    let v = self.value(depth + 1)?;
                    if map.insert(k, v).is_some() {
                        return Err(ValueError::Bad("map key repeated"));
                    }
                }
                AttributeValue::M(map)
            }
            _ => return Err(ValueError::Bad("unknown type tag")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_have_the_reserved_byte_tag_and_length() {
        assert_eq!(
            serialize_attribute(&AttributeValue::N("1.50".into())).unwrap(),
            [0, b'n', 0, 0, 0, 3, b'1', b'.', b'5']
        );
        assert_eq!(serialize_attribute(&AttributeValue::Bool(true)).unwrap(), [0, b'?', 1]);
        assert_eq!(serialize_attribute(&AttributeValue::Null).unwrap(), [0, 0]);
        assert!(matches!(
            serialize_attribute(&AttributeValue::N("1e999".into())),
            Err(DdbecError::InvalidNumber { .. })
        ));
    }

    #[test]
    fn sets_sort_by_member_bytes_and_round_trip() {
        let a = serialize_attribute(&AttributeValue::Ss(vec!["b".into(), "a".into()])).unwrap();
        let b = serialize_attribute(&AttributeValue::Ss(vec!["a".into(), "b".into()])).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            deserialize_attribute(&a).unwrap(),
            AttributeValue::Ss(vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn deserialization_refuses_trailing_bytes_bad_tags_and_forged_counts() {
        assert!(deserialize_attribute(&[0, b'?', 1, 0]).is_err());
        assert!(deserialize_attribute(&[0, b'?', 2]).is_err());
        assert!(deserialize_attribute(&[1, b'?', 1]).is_err());
        assert!(deserialize_attribute(&[0, b'x']).is_err());
        assert!(deserialize_attribute(&[0, b'L', 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(deserialize_attribute(&[0, b'n', 0, 0, 0, 1, b'x']).is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let mut v = AttributeValue::Null;
        for _ in 0..40 {
            v = AttributeValue::L(vec![v]);
        }
        assert!(serialize_attribute(&v).is_err());
        let mut bytes = Vec::new();
        for _ in 0..40 {
            bytes.extend_from_slice(&[0, b'L', 0, 0, 0, 1]);
        }
        bytes.extend_from_slice(&[0, 0]);
        assert!(deserialize_attribute(&bytes).is_err());
    }
}
