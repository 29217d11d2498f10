//! Segmented, resumable re-encryption of legacy plaintext items (`ddbguard backfill` / `migrate`).
//!
//! This crate will own parallel scan segments with leases, per-segment checkpoints, capacity and KMS
//! rate limiting, and conditional write-back that never overwrites a concurrent application write
//! (architecture §6). Intentionally empty until the backfill issue lands.
