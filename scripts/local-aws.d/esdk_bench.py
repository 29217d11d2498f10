#!/usr/bin/env python3
"""The official AWS Encryption SDK for Python's decrypt time per value, for the message-format benchmark
(crates/esdk/benches/decrypt.rs runs this and prints it beside ddbguard's numbers).

    .venv/bin/python scripts/local-aws.d/esdk_bench.py 11 1024 1048576

For each size and suite 0x0478 / 0x0578: encrypts one value (4096-byte frames, the encryption context the Rust
bench uses) under a raw AES-256 master key, then times decrypt; prints `SUITE SIZE MICROSECONDS` per line.
"""

import sys
import time

import aws_encryption_sdk
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.identifiers import Algorithm, EncryptionKeyType, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider


class BenchKeys(RawMasterKeyProvider):
    provider_id = "bench"

    def _get_raw_key(self, key_id):
        return WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=b"\x42" * 32,
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        )


def time_us(f, budget):
    end = time.perf_counter() + budget / 5
    while time.perf_counter() < end:
        f()
    best = float("inf")
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < budget / 3:
            f()
            n += 1
        best = min(best, (time.perf_counter() - start) * 1e6 / n)
    return best


def main():
    keys = BenchKeys()
    keys.add_master_key(b"key")
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    ec = {"table": "patients", "column": "ssn", "id": "12345"}
    suites = [
        ("0478", Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY),
        ("0578", Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384),
    ]
    for size in [int(a) for a in sys.argv[1:]]:
        plaintext = bytes(i % 256 for i in range(size))
        for name, suite in suites:
            message, _ = client.encrypt(
                source=plaintext, key_provider=keys, encryption_context=ec, algorithm=suite, frame_length=4096
            )
            budget = 3.0 if size > 100_000 else 1.5
            us = time_us(lambda: client.decrypt(source=message, key_provider=keys), budget)
            print("%s %d %.1f" % (name, size, us), flush=True)


if __name__ == "__main__":
    main()
