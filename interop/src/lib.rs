//! Interoperability of ddbguard with the official `aws-db-esdk` crate; run it with `scripts/interop.sh`.
//!
//! The tests live in `tests/` and this library is empty:
//!
//! - `tests/interop.rs`: items written by either side with a raw AES keyring decrypt on the other, edge
//!   values are accepted or rejected alike, tampered items fail on both sides;
//! - `tests/interop/hierarchy.rs`: branch keys made and rotated by either key store (official `KeyStore`,
//!   ddbguard's `DynamoKeyStore`, under a multi-Region key) serve both hierarchical keyrings, in one region
//!   and across regions over a global key store table; tampered hierarchy EDKs fail on both sides. These run
//!   against the local AWS environment of the workspace's tests (`ddbguard-e2e` starts
//!   `scripts/local-aws.d/launcher.py`, or uses `DDBGUARD_TEST_ENDPOINT`);
//! - `tests/interop/cli.rs`: the `ddbguard item decrypt` command prints the plaintext of items the official
//!   crate wrote, and exits 1 with `integrity_failed` when one ciphertext bit is flipped.
