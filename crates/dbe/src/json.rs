//! DynamoDB JSON (`{"pk":{"S":"a"},"b":{"B":"base64"}}`) to and from [`Item`].

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use crate::value::{AttributeValue, Item, MAX_DEPTH};

/// A DynamoDB JSON document that is not a valid item. `path` names the attribute (`a.b[2]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct JsonError {
    /// Where: `$` for the item, else `attr`, `attr.key`, `attr[3]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> JsonError {
    JsonError {
        path: if path.is_empty() {
            "$".to_owned()
        } else {
            path.to_owned()
        },
        message: message.into(),
    }
}

/// Parses a DynamoDB JSON item.
pub fn item_from_ddb_json(value: &Value) -> Result<Item, JsonError> {
    let obj = value
        .as_object()
        .ok_or_else(|| err("", "an item must be a JSON object"))?;
    let mut item = Item::new();
    for (name, v) in obj {
        item.insert(name.clone(), value_from_ddb_json(v, name, 0)?);
    }
    Ok(item)
}

/// Parses one DynamoDB JSON attribute value (`{"S":"x"}`); `path` is used in errors.
pub fn attribute_from_ddb_json(value: &Value, path: &str) -> Result<AttributeValue, JsonError> {
    value_from_ddb_json(value, path, 0)
}

fn value_from_ddb_json(value: &Value, path: &str, depth: usize) -> Result<AttributeValue, JsonError> {
    let obj = value
        .as_object()
        .ok_or_else(|| err(path, "an attribute value must be an object like {\"S\": \"…\"}"))?;
    let mut entries = obj.iter();
    let (Some((tag, v)), None) = (entries.next(), entries.next()) else {
        return Err(err(path, "an attribute value must have exactly one type key"));
    };
    let string = |v: &Value| -> Result<String, JsonError> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| err(path, format!("{tag} value must be a string")))
    };
    let strings = |v: &Value| -> Result<Vec<String>, JsonError> {
        let arr = v
            .as_array()
            .ok_or_else(|| err(path, format!("{tag} value must be an array")))?;
        arr.iter()
            .map(|e| {
                e.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err(path, format!("{tag} entries must be strings")))
            })
            .collect()
    };
    let binary = |s: &str| -> Result<Vec<u8>, JsonError> {
        STANDARD
            .decode(s)
            .map_err(|e| err(path, format!("invalid base64 in {tag}: {e}")))
    };
    Ok(match tag.as_str() {
        "S" => AttributeValue::S(string(v)?),
        "N" => AttributeValue::N(string(v)?),
        "B" => AttributeValue::B(binary(&string(v)?)?),
        "BOOL" => AttributeValue::Bool(
            v.as_bool()
                .ok_or_else(|| err(path, "BOOL value must be true or false"))?,
        ),
        "NULL" => match v {
            Value::Bool(true) => AttributeValue::Null,
            _ => return Err(err(path, "NULL value must be true")),
        },
        "SS" => AttributeValue::Ss(strings(v)?),
        "NS" => AttributeValue::Ns(strings(v)?),
        "BS" => AttributeValue::Bs(strings(v)?.iter().map(|s| binary(s)).collect::<Result<_, _>>()?),
        "M" => {
            if depth >= MAX_DEPTH {
                return Err(err(path, "nested deeper than 32 levels"));
            }
            let m = v.as_object().ok_or_else(|| err(path, "M value must be an object"))?;
            let mut out = BTreeMap::new();
            for (k, v) in m {
                out.insert(k.clone(), value_from_ddb_json(v, &format!("{path}.{k}"), depth + 1)?);
            }
            AttributeValue::M(out)
        }
        "L" => {
            if depth >= MAX_DEPTH {
                return Err(err(path, "nested deeper than 32 levels"));
            }
            let l = v.as_array().ok_or_else(|| err(path, "L value must be an array"))?;
            let mut out = Vec::with_capacity(l.len());
            for (i, v) in l.iter().enumerate() {
                out.push(value_from_ddb_json(v, &format!("{path}[{i}]"), depth + 1)?);
            }
            AttributeValue::L(out)
        }
        other => return Err(err(path, format!("unknown attribute type {other:?}"))),
    })
}

/// Writes an item as DynamoDB JSON.
pub fn item_to_ddb_json(item: &Item) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), attribute_to_ddb_json(v)))
            .collect(),
    )
}

/// Writes one attribute value as DynamoDB JSON.
pub fn attribute_to_ddb_json(value: &AttributeValue) -> Value {
    let (tag, v) = match value {
        AttributeValue::S(s) => ("S", Value::String(s.clone())),
        AttributeValue::N(n) => ("N", Value::String(n.clone())),
        AttributeValue::B(b) => ("B", Value::String(STANDARD.encode(b))),
        AttributeValue::Bool(b) => ("BOOL", Value::Bool(*b)),
        AttributeValue::Null => ("NULL", Value::Bool(true)),
        AttributeValue::Ss(s) => ("SS", Value::Array(s.iter().cloned().map(Value::String).collect())),
        AttributeValue::Ns(s) => ("NS", Value::Array(s.iter().cloned().map(Value::String).collect())),
        AttributeValue::Bs(s) => (
            "BS",
            Value::Array(s.iter().map(|b| Value::String(STANDARD.encode(b))).collect()),
        ),
        AttributeValue::M(m) => ("M", item_to_ddb_json(m)),
        AttributeValue::L(l) => ("L", Value::Array(l.iter().map(attribute_to_ddb_json).collect())),
    };
    let mut obj = Map::new();
    obj.insert(tag.to_owned(), v);
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_all_types() {
        let doc = json!({
            "pk": {"S": "a"}, "n": {"N": "1.5"}, "b": {"B": "AAEC"}, "t": {"BOOL": true}, "z": {"NULL": true},
            "ss": {"SS": ["x", "y"]}, "ns": {"NS": ["1", "2"]}, "bs": {"BS": ["AA==", "AQ=="]},
            "m": {"M": {"k": {"L": [{"S": "v"}, {"N": "0"}]}}}
        });
        let item = item_from_ddb_json(&doc).unwrap();
        assert_eq!(item["b"], AttributeValue::B(vec![0, 1, 2]));
        assert_eq!(item_to_ddb_json(&item), doc);
    }

    #[test]
    fn errors_name_the_path() {
        let e = item_from_ddb_json(&json!({"a": {"M": {"k": {"L": [{"S": 1}]}}}})).unwrap_err();
        assert_eq!(e.path, "a.k[0]");
        let e = item_from_ddb_json(&json!({"a": {"S": "x", "N": "1"}})).unwrap_err();
        assert_eq!(e.path, "a");
        assert!(item_from_ddb_json(&json!([])).is_err());
        assert!(item_from_ddb_json(&json!({"a": {"B": "!!"}})).is_err());
        assert!(item_from_ddb_json(&json!({"a": {"X": "1"}})).is_err());
        assert!(item_from_ddb_json(&json!({"a": {"NULL": false}})).is_err());
    }
}
