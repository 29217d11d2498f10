#!/usr/bin/env python3
"""The official legacy Amazon DynamoDB Encryption Client for Python (`dynamodb-encryption-sdk`) as an interop oracle
for ddbguard's legacy item format (crates/ddbec).

Reads one JSON request on stdin and writes one JSON answer on stdout, so a test pays the client's start-up once for
a whole batch:

    {"endpoint": "http://127.0.0.1:PORT",
     "ops": [{"op": "put", "region": "us-east-1", "table": NAME, "key_id": ARN,
              "actions": {"default": "ENCRYPT_AND_SIGN", "attributes": {"zip": "SIGN_ONLY", ...}},
              "item": DYNAMODB_JSON},
             {"op": "encrypt", ...as put...},
             {"op": "get", "region": "ap-southeast-2", "table": NAME, "key_id": ARN, "actions": {...},
              "key": DYNAMODB_JSON}]}

    {"results": [{"ok": true, "kms_calls": [...]} |                      (put: written with EncryptedClient.put_item)
                 {"ok": true, "item": DYNAMODB_JSON, "kms_calls": [...]} | (encrypt: encrypted, not written; get: the
                                                                            item read back and decrypted)
                 {"ok": false, "error": "ExceptionName: message", "kms_calls": [...]}, ...]}

DynamoDB JSON is the wire form with binary values (B, BS) in base64. Every op uses the direct KMS provider
`AwsKmsCryptographicMaterialsProvider(key_id)` with boto3 KMS clients of both local regions pointed at `endpoint`
(`regional_clients`): the provider itself picks the client of the region named in `key_id`. An op with
`"metastore": {"table": NAME, "material_name": NAME}` uses the most-recent provider instead
(`CachingMostRecentProvider` over a `MetaStore` of that table in the op's region, whose records are under the direct
KMS provider with `key_id`); it creates version 0 on first use. `{"op": "rotate", "region", "key_id", "metastore"}`
creates the next version (as a writer that rotates does) and answers `{"ok": true, "version": N}`. `kms_calls` lists the
KMS requests the provider made for the op, as sent: `{"operation", "region", "params"}` (without the blob), which
is how the tests observe the client's key choice and encryption context. `put` and `get` go through
`EncryptedClient` (which reads the key schema with DescribeTable and signs the key attributes, never encrypting
them); `encrypt` calls `encrypt_dynamodb_item` with the same configuration, so a test can alter the item before it
writes it itself. Attributes not listed in `actions.attributes` get `actions.default` (the client's default is
ENCRYPT_AND_SIGN).
"""

import base64
import json
import os
import sys


def to_wire(value):
    """DynamoDB JSON (base64 binaries) to the boto3 client's form (bytes)."""
    (kind, inner), = value.items()
    if kind == "B":
        return {"B": base64.b64decode(inner)}
    if kind == "BS":
        return {"BS": [base64.b64decode(b) for b in inner]}
    if kind == "L":
        return {"L": [to_wire(v) for v in inner]}
    if kind == "M":
        return {"M": {k: to_wire(v) for k, v in inner.items()}}
    return {kind: inner}


def from_wire(value):
    """The boto3 client's form to DynamoDB JSON (base64 binaries)."""
    (kind, inner), = value.items()
    if kind == "B":
        return {"B": base64.b64encode(bytes(inner)).decode()}
    if kind == "BS":
        return {"BS": [base64.b64encode(bytes(b)).decode() for b in inner]}
    if kind == "L":
        return {"L": [from_wire(v) for v in inner]}
    if kind == "M":
        return {"M": {k: from_wire(v) for k, v in inner.items()}}
    return {kind: inner}


def main() -> int:
    request = json.load(sys.stdin)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")

    import boto3
    from dynamodb_encryption_sdk.encrypted import CryptoConfig
    from dynamodb_encryption_sdk.encrypted.client import EncryptedClient
    from dynamodb_encryption_sdk.encrypted.item import encrypt_dynamodb_item
    from dynamodb_encryption_sdk.identifiers import CryptoAction
    from dynamodb_encryption_sdk.exceptions import NoKnownVersionError
    from dynamodb_encryption_sdk.material_providers.aws_kms import AwsKmsCryptographicMaterialsProvider
    from dynamodb_encryption_sdk.material_providers.most_recent import CachingMostRecentProvider
    from dynamodb_encryption_sdk.material_providers.store.meta import MetaStore
    from dynamodb_encryption_sdk.structures import AttributeActions, EncryptionContext, TableInfo

    endpoint = request["endpoint"]
    calls = []

    def record(region):
        def handler(params, model, **_):
            logged = {k: v for k, v in params.items() if k != "CiphertextBlob"}
            calls.append({"operation": model.name, "region": region, "params": logged})

        return handler

    kms_clients = {}
    for region in ("us-east-1", "ap-southeast-2"):
        client = boto3.client("kms", region_name=region, endpoint_url=endpoint)
        client.meta.events.register("provide-client-params.kms.*", record(region))
        kms_clients[region] = client
    ddb_clients = {}

    def ddb(region):
        if region not in ddb_clients:
            ddb_clients[region] = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint)
        return ddb_clients[region]

    def kms_provider(key_id):
        # The provider keeps the dict it is given, so both regions' clients are shared by every op.
        return AwsKmsCryptographicMaterialsProvider(key_id=key_id, regional_clients=kms_clients)

    def meta_store(op):
        table = boto3.resource("dynamodb", region_name=op["region"], endpoint_url=endpoint).Table(
            op["metastore"]["table"]
        )
        return MetaStore(table=table, materials_provider=kms_provider(op["key_id"]))

    def provider(op):
        if "metastore" in op:
            # A fresh provider per op: it asks the metastore for the newest version, as a new writer would.
            return CachingMostRecentProvider(
                provider_store=meta_store(op), material_name=op["metastore"]["material_name"], version_ttl=600.0
            )
        return kms_provider(op["key_id"])

    def actions(spec):
        return AttributeActions(
            default_action=CryptoAction[spec.get("default", "ENCRYPT_AND_SIGN")],
            attribute_actions={k: CryptoAction[v] for k, v in spec.get("attributes", {}).items()},
        )

    results = []
    for op in request["ops"]:
        calls.clear()
        try:
            client = ddb(op["region"])
            if op["op"] in ("put", "get"):
                encrypted = EncryptedClient(
                    client=client, materials_provider=provider(op), attribute_actions=actions(op["actions"])
                )
                if op["op"] == "put":
                    item = {k: to_wire(v) for k, v in op["item"].items()}
                    encrypted.put_item(TableName=op["table"], Item=item)
                    result = {"ok": True}
                else:
                    key = {k: to_wire(v) for k, v in op["key"].items()}
                    got = encrypted.get_item(TableName=op["table"], Key=key, ConsistentRead=True)
                    if "Item" not in got:
                        raise LookupError("no such item")
                    result = {"ok": True, "item": {k: from_wire(v) for k, v in got["Item"].items()}}
            elif op["op"] == "encrypt":
                info = TableInfo(name=op["table"])
                info.refresh_indexed_attributes(client)
                table_actions = actions(op["actions"])
                table_actions.set_index_keys(*info.protected_index_keys())
                item = {k: to_wire(v) for k, v in op["item"].items()}
                config = CryptoConfig(
                    materials_provider=provider(op),
                    encryption_context=EncryptionContext(attributes=item, **info.encryption_context_values),
                    attribute_actions=table_actions,
                )
                written = encrypt_dynamodb_item(item, config)
                result = {"ok": True, "item": {k: from_wire(v) for k, v in written.items()}}
            elif op["op"] == "rotate":
                store = meta_store(op)
                name = op["metastore"]["material_name"]
                try:
                    version = store.max_version(name) + 1
                except NoKnownVersionError:
                    version = 0
                store.get_or_create_provider(name, version)
                result = {"ok": True, "version": version}
            else:
                result = {"ok": False, "error": "unknown op %r" % op["op"]}
        except Exception as e:  # noqa: BLE001 - every failure is an answer, not a crash
            result = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        result["kms_calls"] = list(calls)
        results.append(result)
    json.dump({"results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
