//! Stream images (`aws_sdk_dynamodbstreams::types::AttributeValue` maps) to the item model of `ddbguard-dbe`.
//!
//! The conversion is total: every input gives either an [`Item`] or a [`ConvertError`] that names the attribute
//! path and what was wrong — never a value, never a panic, never a silently dropped attribute. The engine turns a
//! `ConvertError` into an `integrity_failed` verdict with reason [`ConvertError::reason`].

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodbstreams::primitives::Blob;
use aws_sdk_dynamodbstreams::types::AttributeValue as StreamValue;
use ddbguard_dbe::{AttributeValue, Item, Reason};

/// Nesting beyond this is rejected before recursing further (DynamoDB itself stops at 32 levels, so this only
/// guards the stack against a hostile or corrupted image; the item format applies its own, exact limit).
pub const MAX_CONVERT_DEPTH: usize = 64;

/// Why an image could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The SDK did not recognise the attribute's type (`AttributeValue::Unknown`: a newer service type).
    #[error("attribute {path}: type unknown to this build of the SDK")]
    UnknownType {
        /// Attribute path (`a`, `a.b`, `a[3]`).
        path: String,
    },
    /// `NULL` with the value `false`, which DynamoDB never writes.
    #[error("attribute {path}: NULL attribute with value false")]
    NullFalse {
        /// Attribute path.
        path: String,
    },
    /// Maps or lists nested deeper than [`MAX_CONVERT_DEPTH`].
    #[error("attribute {path}: nested deeper than {MAX_CONVERT_DEPTH} levels")]
    TooDeep {
        /// Attribute path.
        path: String,
    },
}

impl ConvertError {
    /// The reason code of the `integrity_failed` verdict this gives a stream record.
    pub fn reason(&self) -> Reason {
        match self {
            ConvertError::UnknownType { .. } => Reason::UnknownAttributeType,
            ConvertError::NullFalse { .. } => Reason::NullFalse,
            ConvertError::TooDeep { .. } => Reason::ImageTooDeep,
        }
    }
}

/// Converts a stream image into an [`Item`].
pub fn image_to_item(image: &HashMap<String, StreamValue>) -> Result<Item, ConvertError> {
    let mut item = Item::new();
    for (name, value) in image {
        item.insert(name.clone(), convert(value, name, 0)?);
    }
    Ok(item)
}

/// Converts one attribute value; `path` names it in errors.
pub fn attribute_from_stream(value: &StreamValue, path: &str) -> Result<AttributeValue, ConvertError> {
    convert(value, path, 0)
}

fn blob(b: &Blob) -> Vec<u8> {
    b.as_ref().to_vec()
}

impl ConvertError {
    fn path_mut(&mut self) -> &mut String {
        match self {
            ConvertError::UnknownType { path } | ConvertError::NullFalse { path } | ConvertError::TooDeep { path } => {
                path
            }
        }
    }

    /// Prepends the enclosing attribute's path (paths are built only on the error path, not per value).
    fn within(mut self, parent: &str, sep: &str) -> ConvertError {
        let path = self.path_mut();
        *path = format!("{parent}{sep}{path}");
        self
    }
}

fn convert(value: &StreamValue, path: &str, depth: usize) -> Result<AttributeValue, ConvertError> {
    Ok(match value {
        StreamValue::S(s) => AttributeValue::S(s.clone()),
        StreamValue::N(n) => AttributeValue::N(n.clone()),
        StreamValue::B(b) => AttributeValue::B(blob(b)),
        StreamValue::Bool(b) => AttributeValue::Bool(*b),
        StreamValue::Null(true) => AttributeValue::Null,
        StreamValue::Null(false) => return Err(ConvertError::NullFalse { path: path.to_owned() }),
        StreamValue::Ss(v) => AttributeValue::Ss(v.clone()),
        StreamValue::Ns(v) => AttributeValue::Ns(v.clone()),
        StreamValue::Bs(v) => AttributeValue::Bs(v.iter().map(blob).collect()),
        StreamValue::M(m) => {
            if depth + 1 >= MAX_CONVERT_DEPTH {
                return Err(ConvertError::TooDeep { path: path.to_owned() });
            }
            let mut out = BTreeMap::new();
            for (k, v) in m {
                out.insert(k.clone(), convert(v, k, depth + 1).map_err(|e| e.within(path, "."))?);
            }
            AttributeValue::M(out)
        }
        StreamValue::L(l) => {
            if depth + 1 >= MAX_CONVERT_DEPTH {
                return Err(ConvertError::TooDeep { path: path.to_owned() });
            }
            let mut out = Vec::with_capacity(l.len());
            for (i, v) in l.iter().enumerate() {
                out.push(convert(v, "", depth + 1).map_err(|e| e.within(&format!("{path}[{i}]"), ""))?);
            }
            AttributeValue::L(out)
        }
        _ => return Err(ConvertError::UnknownType { path: path.to_owned() }),
    })
}

/// The inverse, for tests, fixtures and canaries: an [`Item`] as a stream image.
pub fn item_to_image(item: &Item) -> HashMap<String, StreamValue> {
    item.iter().map(|(k, v)| (k.clone(), attribute_to_stream(v))).collect()
}

/// One attribute value as the stream SDK type.
pub fn attribute_to_stream(value: &AttributeValue) -> StreamValue {
    match value {
        AttributeValue::S(s) => StreamValue::S(s.clone()),
        AttributeValue::N(n) => StreamValue::N(n.clone()),
        AttributeValue::B(b) => StreamValue::B(Blob::new(b.clone())),
        AttributeValue::Bool(b) => StreamValue::Bool(*b),
        AttributeValue::Null => StreamValue::Null(true),
        AttributeValue::Ss(v) => StreamValue::Ss(v.clone()),
        AttributeValue::Ns(v) => StreamValue::Ns(v.clone()),
        AttributeValue::Bs(v) => StreamValue::Bs(v.iter().map(|b| Blob::new(b.clone())).collect()),
        AttributeValue::M(m) => StreamValue::M(m.iter().map(|(k, v)| (k.clone(), attribute_to_stream(v))).collect()),
        AttributeValue::L(l) => StreamValue::L(l.iter().map(attribute_to_stream).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Item {
        let mut inner = BTreeMap::new();
        inner.insert("x".to_owned(), AttributeValue::N("1.5".into()));
        inner.insert(
            "l".to_owned(),
            AttributeValue::L(vec![AttributeValue::Null, AttributeValue::Bool(false)]),
        );
        let mut item = Item::new();
        item.insert("s".into(), AttributeValue::S("a".into()));
        item.insert("n".into(), AttributeValue::N("-7".into()));
        item.insert("b".into(), AttributeValue::B(vec![0, 1, 255]));
        item.insert("ss".into(), AttributeValue::Ss(vec!["p".into(), "q".into()]));
        item.insert("ns".into(), AttributeValue::Ns(vec!["1".into(), "2".into()]));
        item.insert("bs".into(), AttributeValue::Bs(vec![vec![1], vec![2, 3]]));
        item.insert("m".into(), AttributeValue::M(inner));
        item
    }

    #[test]
    fn round_trips_every_type() {
        let item = sample();
        assert_eq!(image_to_item(&item_to_image(&item)).unwrap(), item);
    }

    // `AttributeValue::Unknown` cannot be constructed outside the SDK (it is `#[non_exhaustive]`); it takes the
    // same typed-error path as `NULL: false` below, through the match's catch-all arm.
    #[test]
    fn null_false_is_a_typed_error_naming_the_path() {
        let nested = StreamValue::M([("deep".to_owned(), StreamValue::L(vec![StreamValue::Null(false)]))].into());
        let image: HashMap<_, _> = [("m2".to_owned(), nested)].into();
        let e = image_to_item(&image).unwrap_err();
        assert_eq!(
            e,
            ConvertError::NullFalse {
                path: "m2.deep[0]".into()
            }
        );
        assert_eq!(e.reason(), Reason::NullFalse);

        let image: HashMap<_, _> = [("z".to_owned(), StreamValue::L(vec![StreamValue::Null(false)]))].into();
        assert_eq!(
            image_to_item(&image).unwrap_err(),
            ConvertError::NullFalse { path: "z[0]".into() }
        );
        let image: HashMap<_, _> = [("n".to_owned(), StreamValue::Null(false))].into();
        assert_eq!(
            image_to_item(&image).unwrap_err(),
            ConvertError::NullFalse { path: "n".into() }
        );
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflow() {
        let mut v = StreamValue::S("leaf".into());
        for _ in 0..200 {
            v = StreamValue::L(vec![v]);
        }
        let image: HashMap<_, _> = [("deep".to_owned(), v)].into();
        assert!(matches!(image_to_item(&image), Err(ConvertError::TooDeep { .. })));
    }
}
