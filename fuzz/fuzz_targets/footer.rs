//! `Footer::parse` under a header derived from the first input byte (bit 0: suite 0x6700 or 0x6701;
//! bits 1-2: one to four EDKs). Whatever parses must encode back to exactly the footer bytes.
#![no_main]

use ddbguard_dbe::{AlgorithmSuite, EncryptedDataKey, EncryptionContext, Footer, Header};
use libfuzzer_sys::fuzz_target;

fn header(selector: u8) -> Header {
    let suite = if selector & 1 == 0 { AlgorithmSuite::HmacOnly } else { AlgorithmSuite::EcdsaP384 };
    let edks = usize::from((selector >> 1) & 3) + 1;
    Header {
        version: 1,
        suite,
        message_id: [7; ddbguard_dbe::MESSAGE_ID_LEN],
        legend: Vec::new(),
        stored_context: EncryptionContext::new(),
        edks: vec![
            EncryptedDataKey {
                provider_id: "fuzz".to_owned(),
                provider_info: b"key".to_vec(),
                ciphertext: vec![0; 48 + 12 + 16],
            };
            edks
        ],
        commitment: [0; ddbguard_dbe::COMMITMENT_LEN],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, footer_bytes)) = data.split_first() else {
        return;
    };
    let header = header(selector);
    if let Ok(footer) = Footer::parse(footer_bytes, &header) {
        assert_eq!(footer.encode(), footer_bytes, "footer re-encoding differs from the parsed bytes");
        assert_eq!(footer.tags.len(), header.edks.len());
        assert_eq!(footer.signature.is_some(), header.suite.signs());
    }
});
