//! Whole-message decryption under a fixed key (`ddbguard_esdk::decrypt` with the crate's fake keyring, the seeds
//! being messages under that key): never a panic; whatever decrypts also passes the keyless structure check
//! with the same plaintext length, and decrypting it pushed in 7-byte pieces gives the same plaintext.
#![no_main]

use ddbguard_esdk::fake::FakeKeyring;
use ddbguard_esdk::{DecryptOptions, Decryptor, decrypt, inspect};
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;

fn streamed(keyring: &FakeKeyring, options: &DecryptOptions, data: &[u8]) -> Option<Vec<u8>> {
    let mut d = Decryptor::new(options.clone());
    let mut out = Vec::new();
    for piece in data.chunks(7) {
        let mut rest = piece;
        loop {
            let n = d.push(rest, &mut out).ok()?;
            rest = &rest[n..];
            if d.needs_key() {
                block_on(d.unlock(keyring)).ok()?;
            } else {
                break;
            }
        }
    }
    d.finish().ok()?;
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let keyring = FakeKeyring::new("ddbguard-fuzz", "key-1", [0x42; 32]);
    let options = DecryptOptions {
        require_commitment: false,
        ..DecryptOptions::default()
    };
    // The fake keyring never awaits I/O: the future completes on its first poll.
    if let Ok(d) = block_on(decrypt(&keyring, &options, data)) {
        let info = inspect(&options, data).expect("a message that decrypts is structurally valid");
        assert_eq!(info.plaintext_len, d.plaintext.len() as u64);
        assert_eq!(streamed(&keyring, &options, data).as_deref(), Some(&d.plaintext[..]));
    }
});
