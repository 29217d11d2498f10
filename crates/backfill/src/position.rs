//! A scan segment's position: its `LastEvaluatedKey`, stored in the segment's lease as text.
//!
//! The key is written as DynamoDB JSON (`{"pk":{"S":"a"},"sk":{"N":"1"}}`, binary as base64). Key attributes are
//! only ever S, N or B, so nothing else is accepted back.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_ddb::{AttributeValue, Item};

/// Why a stored position could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable scan position in the ledger: {0}")]
pub struct PositionError(String);

/// The text form of a `LastEvaluatedKey`.
pub fn encode(key: &Item) -> Result<String, PositionError> {
    let mut out = BTreeMap::new();
    for (name, value) in key {
        let typed = match value {
            AttributeValue::S(s) => ("S", s.clone()),
            AttributeValue::N(n) => ("N", n.clone()),
            AttributeValue::B(b) => ("B", STANDARD.encode(b.as_ref())),
            other => {
                return Err(PositionError(format!(
                    "key attribute {name} has a non-key type {other:?}"
                )));
            }
        };
        out.insert(name.clone(), BTreeMap::from([typed]));
    }
    serde_json::to_string(&out).map_err(|e| PositionError(e.to_string()))
}

/// The `LastEvaluatedKey` of a stored position.
pub fn decode(text: &str) -> Result<Item, PositionError> {
    let parsed: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_str(text).map_err(|e| PositionError(e.to_string()))?;
    let mut key = Item::new();
    for (name, typed) in parsed {
        let mut entries = typed.into_iter();
        let value = match (entries.next(), entries.next()) {
            (Some((t, v)), None) => match t.as_str() {
                "S" => AttributeValue::S(v),
                "N" => AttributeValue::N(v),
                "B" => AttributeValue::B(
                    STANDARD
                        .decode(v)
                        .map_err(|e| PositionError(format!("{name}: {e}")))?
                        .into(),
                ),
                other => return Err(PositionError(format!("{name}: unknown key type {other}"))),
            },
            _ => return Err(PositionError(format!("{name}: expected exactly one type"))),
        };
        key.insert(name, value);
    }
    if key.is_empty() {
        return Err(PositionError("empty key".into()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_garbage_is_an_error() {
        let key = Item::from([
            ("pk".to_owned(), AttributeValue::S("a\"b".into())),
            ("sk".to_owned(), AttributeValue::N("-1.5e3".into())),
            ("bin".to_owned(), AttributeValue::B(vec![0u8, 255].into())),
        ]);
        assert_eq!(decode(&encode(&key).unwrap()).unwrap(), key);
        for bad in [
            "",
            "{}",
            "[1]",
            r#"{"pk":{"X":"1"}}"#,
            r#"{"pk":{"S":"a","N":"1"}}"#,
            r#"{"b":{"B":"!"}}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
        assert!(encode(&Item::from([("m".to_owned(), AttributeValue::Bool(true))])).is_err());
    }
}
