//! `Header::parse` on arbitrary bytes. The header codec is canonical: whatever parses must encode back
//! to exactly the input bytes.
#![no_main]

use ddbguard_dbe::Header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Header::parse(data) {
        let encoded = header.encode().expect("a parsed header must encode");
        assert_eq!(encoded, data, "header re-encoding differs from the parsed bytes");
        assert_eq!(Header::parse(&encoded).expect("re-encoded header must parse"), header);
    }
});
