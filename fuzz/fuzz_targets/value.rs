//! Typed value deserialization: type id from the first two bytes, value bytes after. Whatever parses
//! must serialize again; where the encoding is canonical (no number to normalize, no set to sort) the
//! bytes must be identical, and in every case serialize∘deserialize must be a fixed point. Also runs
//! `normalize_number` on the input as UTF-8 and checks that normalization is idempotent.
//! Maps count as canonicalizing too: the reader accepts entries in any order, the writer sorts them.
//!
//! The value codec is crate-private in ddbguard-dbe; see `ddbguard_fuzz::value`.
#![no_main]

use ddbguard_fuzz::value::AttributeValue;
use libfuzzer_sys::fuzz_target;

/// Whether serialization may legitimately change the bytes: numbers are normalized, sets sorted.
fn canonicalizes(v: &AttributeValue) -> bool {
    match v {
        AttributeValue::N(_) | AttributeValue::Ns(_) | AttributeValue::Ss(_) | AttributeValue::Bs(_) => true,
        AttributeValue::M(_) => true,
        AttributeValue::L(l) => l.iter().any(canonicalizes),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(n) = ddbguard_dbe::normalize_number(s) {
            let again = ddbguard_dbe::normalize_number(&n).expect("a normalized number must normalize");
            assert_eq!(again, n, "number normalization is not idempotent");
        }
    }
    let Some((tid, bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let tid = u16::from_be_bytes(*tid);
    let Ok(v) = ddbguard_fuzz::value_deserialize(tid, bytes) else {
        return;
    };
    assert_eq!(v.type_id(), tid);
    let owned = ddbguard_fuzz::value_deserialize_owned(tid, bytes.to_vec()).expect("owned parse must agree");
    assert_eq!(owned, v);
    // Numbers that do not normalize parse (as strings) but cannot be serialized: that is an error, not a panic.
    let Ok(ser) = ddbguard_fuzz::value_serialize(&v) else {
        return;
    };
    if !canonicalizes(&v) {
        assert_eq!(ser, bytes, "value re-serialization differs from the parsed bytes");
    }
    let v2 = ddbguard_fuzz::value_deserialize(tid, &ser).expect("serialized value must parse");
    let ser2 = ddbguard_fuzz::value_serialize(&v2).expect("re-parsed value must serialize");
    assert_eq!(ser2, ser, "serialization is not a fixed point");
});
