#!/usr/bin/env python3
"""The official AWS Encryption SDK for Python as an interop oracle for ddbguard's message format (crates/esdk).

Reads one JSON request on stdin and writes one JSON answer on stdout, so a test pays the SDK's start-up once for a
whole batch:

    {"endpoint": "http://127.0.0.1:PORT",
     "ops": [{"op": "encrypt", "key_arn": ARN, "suite": "0578", "frame_length": 4096,
              "encryption_context": {...}, "plaintext": BASE64},
             {"op": "decrypt", "key_arn": ARN, "ciphertext": BASE64}]}

    {"results": [{"ok": true, "ciphertext": BASE64} |
                 {"ok": true, "plaintext": BASE64, "encryption_context": {...}, "suite": "0578"} |
                 {"ok": false, "error": "ExceptionName: message"}, ...]}

Keys are used through KMS (the local environment at `endpoint`) with the MRK-aware strict master key provider:
`key_arn` names the key to use, and its region is the region of every KMS call (so a us-east-1 MRK's message
decrypts with the ap-southeast-2 replica's ARN). `frame_length` 0 writes a non-framed message. Decryption uses the
SDK's default commitment policy (REQUIRE_ENCRYPT_REQUIRE_DECRYPT), as applications do.
"""

import base64
import json
import os
import sys


def main() -> int:
    request = json.load(sys.stdin)
    # botocore reads the endpoint and credentials from the environment; the SDK makes its own KMS clients.
    os.environ["AWS_ENDPOINT_URL"] = request["endpoint"]
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    import aws_encryption_sdk
    from aws_encryption_sdk import CommitmentPolicy
    from aws_encryption_sdk.identifiers import Algorithm
    from aws_encryption_sdk.key_providers.kms import MRKAwareStrictAwsKmsMasterKeyProvider

    suites = {
        "0478": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        "0578": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
    }
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    providers = {}

    def provider(arn):
        if arn not in providers:
            providers[arn] = MRKAwareStrictAwsKmsMasterKeyProvider(key_ids=[arn])
        return providers[arn]

    results = []
    for op in request["ops"]:
        try:
            if op["op"] == "encrypt":
                ciphertext, _ = client.encrypt(
                    source=base64.b64decode(op["plaintext"]),
                    key_provider=provider(op["key_arn"]),
                    encryption_context=op.get("encryption_context", {}),
                    algorithm=suites[op["suite"]],
                    frame_length=op.get("frame_length", 4096),
                )
                results.append({"ok": True, "ciphertext": base64.b64encode(ciphertext).decode()})
            elif op["op"] == "decrypt":
                plaintext, header = client.decrypt(
                    source=base64.b64decode(op["ciphertext"]), key_provider=provider(op["key_arn"])
                )
                results.append(
                    {
                        "ok": True,
                        "plaintext": base64.b64encode(plaintext).decode(),
                        "encryption_context": dict(header.encryption_context),
                        "suite": "%04x" % header.algorithm.algorithm_id,
                    }
                )
            else:
                results.append({"ok": False, "error": "unknown op %r" % op["op"]})
        except Exception as e:  # noqa: BLE001 - every failure is an answer, not a crash
            results.append({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
    json.dump({"results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
