//! The AWS Encryption SDK message header parser (`ddbguard_esdk::Header::parse`) and the keyless structure
//! walk (`inspect`) on arbitrary bytes: never a panic; a header that parses lies within the input, and a
//! message that inspects cleanly has exactly the input's length.
#![no_main]

use ddbguard_esdk::{DecryptOptions, Header, inspect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Header::parse(data) {
        assert!(header.body_len < header.len && header.len <= data.len());
        assert!(!header.encrypted_data_keys.is_empty());
        assert_eq!(header.commitment.is_some(), header.suite.is_committing());
        // Any prefix of a parsed header is an incomplete header, never a different one.
        assert!(Header::parse(&data[..header.len - 1]).is_err());
    }
    let options = DecryptOptions {
        require_commitment: false,
        ..DecryptOptions::default()
    };
    if let Ok(info) = inspect(&options, data) {
        assert_eq!(info.message_len, data.len() as u64);
    }
});
