//! Stream images (`aws_sdk_dynamodbstreams::types::AttributeValue` maps) and DynamoDB items
//! (`aws_sdk_dynamodb::types::AttributeValue` maps, from Scan or GetItem) to the item model of `ddbguard-dbe`, and
//! back.
//!
//! The conversion is total: every input gives either an [`Item`] or a [`ConvertError`] that names the attribute
//! path and what was wrong — never a value, never a panic, never a silently dropped attribute. The engine turns a
//! `ConvertError` into an `integrity_failed` verdict with reason [`ConvertError::reason`].

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue as TableValue;
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

/// The conversions for one SDK's attribute type: DynamoDB Streams images and DynamoDB items are the same data in
/// two crates' types, converted by one template.
macro_rules! conversions {
    ($sdk:ident, $krate:ident, $Value:ty, $to_item:ident, $attr_from:ident, $from_item:ident, $attr_to:ident, $what:literal) => {
        #[doc = concat!("Converts ", $what, " into an [`Item`].")]
        pub fn $to_item(image: &HashMap<String, $Value>) -> Result<Item, ConvertError> {
            let mut item = Item::new();
            for (name, value) in image {
                item.insert(name.clone(), $attr_from(value, name)?);
            }
            Ok(item)
        }

        /// Converts one attribute value; `path` names it in errors.
        pub fn $attr_from(value: &$Value, path: &str) -> Result<AttributeValue, ConvertError> {
            $sdk::convert(value, path, 0)
        }

        #[doc = concat!("The inverse: an [`Item`] as ", $what, ".")]
        pub fn $from_item(item: &Item) -> HashMap<String, $Value> {
            item.iter().map(|(k, v)| (k.clone(), $attr_to(v))).collect()
        }

        #[doc = concat!("One attribute value of ", $what, ".")]
        pub fn $attr_to(value: &AttributeValue) -> $Value {
            use $sdk::{Blob, V};
            match value {
                AttributeValue::S(s) => V::S(s.clone()),
                AttributeValue::N(n) => V::N(n.clone()),
                AttributeValue::B(b) => V::B(Blob::new(b.clone())),
                AttributeValue::Bool(b) => V::Bool(*b),
                AttributeValue::Null => V::Null(true),
                AttributeValue::Ss(v) => V::Ss(v.clone()),
                AttributeValue::Ns(v) => V::Ns(v.clone()),
                AttributeValue::Bs(v) => V::Bs(v.iter().map(|b| Blob::new(b.clone())).collect()),
                AttributeValue::M(m) => V::M(m.iter().map(|(k, v)| (k.clone(), $attr_to(v))).collect()),
                AttributeValue::L(l) => V::L(l.iter().map($attr_to).collect()),
            }
        }

        mod $sdk {
            pub(super) use $krate::primitives::Blob;
            pub(super) use $krate::types::AttributeValue as V;

            use super::{AttributeValue, BTreeMap, ConvertError, MAX_CONVERT_DEPTH};

            pub(super) fn convert(value: &V, path: &str, depth: usize) -> Result<AttributeValue, ConvertError> {
                let blob = |b: &Blob| b.as_ref().to_vec();
                Ok(match value {
                    V::S(s) => AttributeValue::S(s.clone()),
                    V::N(n) => AttributeValue::N(n.clone()),
                    V::B(b) => AttributeValue::B(blob(b)),
                    V::Bool(b) => AttributeValue::Bool(*b),
                    V::Null(true) => AttributeValue::Null,
                    V::Null(false) => {
                        return Err(ConvertError::NullFalse {
                            path: path.to_owned(),
                        })
                    }
                    V::Ss(v) => AttributeValue::Ss(v.clone()),
                    V::Ns(v) => AttributeValue::Ns(v.clone()),
                    V::Bs(v) => AttributeValue::Bs(v.iter().map(blob).collect()),
                    V::M(m) => {
                        if depth + 1 >= MAX_CONVERT_DEPTH {
                            return Err(ConvertError::TooDeep {
                                path: path.to_owned(),
                            });
                        }
                        let mut out = BTreeMap::new();
                        for (k, v) in m {
                            out.insert(
                                k.clone(),
                                convert(v, k, depth + 1).map_err(|e| e.within(path, "."))?,
                            );
                        }
                        AttributeValue::M(out)
                    }
                    V::L(l) => {
                        if depth + 1 >= MAX_CONVERT_DEPTH {
                            return Err(ConvertError::TooDeep {
                                path: path.to_owned(),
                            });
                        }
                        let mut out = Vec::with_capacity(l.len());
                        for (i, v) in l.iter().enumerate() {
                            out.push(convert(v, "", depth + 1).map_err(|e| e.within(&format!("{path}[{i}]"), ""))?);
                        }
                        AttributeValue::L(out)
                    }
                    _ => {
                        return Err(ConvertError::UnknownType {
                            path: path.to_owned(),
                        })
                    }
                })
            }
        }
    };
}

conversions!(
    dynamodbstreams,
    aws_sdk_dynamodbstreams,
    StreamValue,
    image_to_item,
    attribute_from_stream,
    item_to_image,
    attribute_to_stream,
    "a stream image"
);
conversions!(
    dynamodb,
    aws_sdk_dynamodb,
    TableValue,
    table_item_to_item,
    attribute_from_table,
    item_to_table_item,
    attribute_to_table,
    "a DynamoDB item (GetItem, Scan)"
);

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
        assert_eq!(table_item_to_item(&item_to_table_item(&item)).unwrap(), item);
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
