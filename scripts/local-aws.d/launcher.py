#!/usr/bin/env python3
"""ddbguard's local two-region AWS environment: moto 5.2.5's server plus the gaps it has for ddbguard.

Runs moto (DynamoDB, DynamoDB Streams, KMS; every region) on one HTTP port and patches moto's internals so that:

a. KMS multi-Region keys work: ciphertext blobs carry a variable-length key id (moto's fixed 36-byte field cannot
   hold an ``mrk-`` id), replicas made by ReplicateKey share the key material, so a blob made in one region decrypts
   in every region holding a replica; a KeyId naming another region is NotFound.
b. KMS key states are enforced: Disabled -> DisabledException, PendingDeletion -> KMSInvalidStateException,
   unknown key (or an ARN of another region) -> NotFoundException; key-state calls accept ARNs.
c. DynamoDB global tables (version 2019.11.21): UpdateTable ReplicaUpdates Create/Delete makes/removes the replica
   table in the other region, DescribeTable lists Replicas, and every write is replayed into every other replica
   after a lag by a background worker, last writer wins, visible in that replica's stream, never re-replicated.
d. Fault knobs over HTTP under /_local/ (replication pause, lag, drop-next-N, per direction and per table),
   /_local/reset and /_local/health.

The patches target moto 5.2.5's internals exactly; the launcher refuses to start on another version.
See README.md beside this file.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import struct
import sys
import threading
import time
from typing import Any

import moto

EXPECTED_MOTO = "5.2.5"
if moto.__version__ != EXPECTED_MOTO:  # pragma: no cover - guard against a silent upgrade
    sys.exit(f"launcher.py patches moto {EXPECTED_MOTO} internals, found moto {moto.__version__}")

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from moto.core.exceptions import JsonRESTError  # noqa: E402
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends  # noqa: E402
from moto.dynamodb.models.dynamo_type import DynamoType  # noqa: E402
from moto.dynamodb.models.table import StreamShard, Table  # noqa: E402
from moto.dynamodb.responses import DynamoHandler, DynamoResult  # noqa: E402
from moto.dynamodbstreams.models import DynamoDBStreamsBackend, dynamodbstreams_backends  # noqa: E402
from moto.kms import models as kms_models  # noqa: E402
from moto.kms import utils as kms_utils  # noqa: E402
from moto.kms.exceptions import NotFoundException, ValidationException  # noqa: E402
from moto.kms.models import KmsBackend, kms_backends  # noqa: E402
from moto.kms.responses import KmsResponse  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server  # noqa: E402

log = logging.getLogger("ddbguard.local-aws")

# One lock serializes every request and every replicated write: moto's models are not thread-safe, and the
# replication worker writes into the same tables the request threads do.
BIG_LOCK = threading.RLock()
# Per-thread flags: `replaying` marks writes made by the replication worker (never re-replicated);
# `txn_buffer` collects the writes of a TransactWriteItems until it commits (a cancelled one replicates nothing).
_tls = threading.local()


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


class AwsError(JsonRESTError):
    """An AWS JSON-1.x shaped error: HTTP 400, body {"__type": type, "message": message}."""

    code = 400

    def __init__(self, error_type: str, message: str):
        super().__init__(error_type, message)


def aws_error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"__type": error_type, "message": message}).encode()


# ---------------------------------------------------------------------------------------------------------------
# a + b. KMS: MRK ciphertext blobs, replicas, key states
# ---------------------------------------------------------------------------------------------------------------

# Blob layout: b"DGK1" | u8 key-id length | key id (utf-8) | 12-byte IV | 16-byte tag | ciphertext.
BLOB_MAGIC = b"DGK1"


def _serialize_blob(key_id: str, iv: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    kid = key_id.encode()
    return BLOB_MAGIC + struct.pack(">B", len(kid)) + kid + iv + tag + ciphertext


def _deserialize_blob(blob: bytes) -> kms_utils.Ciphertext:
    if len(blob) < 5 or not blob.startswith(BLOB_MAGIC):
        raise ValueError("not a local-aws ciphertext blob")
    n = blob[4]
    off = 5 + n
    if len(blob) < off + kms_utils.IV_LEN + kms_utils.TAG_LEN:
        raise ValueError("truncated blob")
    key_id = blob[5:off].decode()
    iv = blob[off : off + kms_utils.IV_LEN]
    tag = blob[off + kms_utils.IV_LEN : off + kms_utils.IV_LEN + kms_utils.TAG_LEN]
    ct = blob[off + kms_utils.IV_LEN + kms_utils.TAG_LEN :]
    return kms_utils.Ciphertext(key_id=key_id, iv=iv, ciphertext=ct, tag=tag)


def _region_of_arn(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] if arn.startswith("arn:") and len(parts) > 5 else None


def kms_encrypt(master_keys: dict[str, Any], key_id: str, plaintext: bytes, encryption_context: dict[str, str]) -> bytes:
    key = master_keys.get(key_id)
    if key is None:
        raise NotFoundException(f"keyId {key_id} is not found.")
    if plaintext == b"":
        raise ValidationException(
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1"
        )
    if len(plaintext) > 4096:
        raise ValidationException(
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
            "Member must have length less than or equal to 4096"
        )
    iv = os.urandom(kms_utils.IV_LEN)
    aad = kms_utils._serialize_encryption_context(encryption_context=encryption_context)
    sealed = AESGCM(key.key_material).encrypt(iv, plaintext, aad)
    return _serialize_blob(key_id, iv, sealed[:-16], sealed[-16:])


def kms_decrypt(
    master_keys: dict[str, Any], ciphertext_blob: bytes, encryption_context: dict[str, str]
) -> tuple[bytes, str]:
    try:
        parsed = _deserialize_blob(ciphertext_blob)
    except Exception:
        raise AwsError("InvalidCiphertextException", "The ciphertext is not a valid ciphertext blob.")
    key = master_keys.get(parsed.key_id)
    if key is None:
        raise NotFoundException(f"The key {parsed.key_id} named by the ciphertext does not exist in this region.")
    _check_key_usable(key)
    aad = kms_utils._serialize_encryption_context(encryption_context=encryption_context)
    try:
        plaintext = AESGCM(key.key_material).decrypt(parsed.iv, parsed.ciphertext + parsed.tag, aad)
    except Exception:
        raise AwsError("InvalidCiphertextException", "")
    return plaintext, parsed.key_id


def _check_key_usable(key: Any) -> None:
    if key.key_state == "Disabled":
        raise AwsError("DisabledException", f"{key.arn} is disabled.")
    if key.key_state == "PendingDeletion":
        raise AwsError("KMSInvalidStateException", f"{key.arn} is pending deletion.")
    if key.key_state != "Enabled":
        raise AwsError("KMSInvalidStateException", f"{key.arn} is {key.key_state}.")


kms_models.encrypt = kms_encrypt
kms_models.decrypt = kms_decrypt
kms_utils.encrypt = kms_encrypt
kms_utils.decrypt = kms_decrypt

_orig_kms_encrypt = KmsBackend.encrypt
_orig_kms_decrypt = KmsBackend.decrypt
_orig_kms_re_encrypt = KmsBackend.re_encrypt
_orig_kms_generate_data_key = KmsBackend.generate_data_key


def _usable_key(backend: KmsBackend, key_id: str) -> Any:
    raw = backend.any_id_to_key_id(key_id)
    key = backend.keys.get(raw) if raw else None
    if key is None:
        raise NotFoundException(f"Key '{key_id}' does not exist")
    _check_key_usable(key)
    return key


def _kms_backend_encrypt(self: KmsBackend, key_id: str, plaintext: bytes, encryption_context: dict[str, str]):
    _usable_key(self, key_id)
    return _orig_kms_encrypt(self, key_id, plaintext, encryption_context)


def _kms_backend_decrypt(
    self: KmsBackend, ciphertext_blob: bytes, encryption_context: dict[str, str], key_id: str | None = None
):
    if key_id is not None:
        requested = _usable_key(self, key_id)
        try:
            named = _deserialize_blob(ciphertext_blob).key_id
        except Exception:
            raise AwsError("InvalidCiphertextException", "The ciphertext is not a valid ciphertext blob.")
        if named != requested.id:
            raise AwsError(
                "IncorrectKeyException",
                "The key ID in the request does not identify a CMK that can perform this operation.",
            )
    plaintext, actual = kms_decrypt(self.keys, ciphertext_blob, encryption_context)
    return plaintext, self.keys[actual].arn


def _kms_backend_re_encrypt(self: KmsBackend, ciphertext_blob, source_encryption_context, destination_key_id, destination_encryption_context):
    _usable_key(self, destination_key_id)
    return _orig_kms_re_encrypt(
        self, ciphertext_blob, source_encryption_context, destination_key_id, destination_encryption_context
    )


def _kms_backend_generate_data_key(self: KmsBackend, key_id, encryption_context, number_of_bytes, key_spec):
    _usable_key(self, key_id)
    return _orig_kms_generate_data_key(self, key_id, encryption_context, number_of_bytes, key_spec)


KmsBackend.encrypt = _kms_backend_encrypt
KmsBackend.decrypt = _kms_backend_decrypt
KmsBackend.re_encrypt = _kms_backend_re_encrypt
KmsBackend.generate_data_key = _kms_backend_generate_data_key


def _with_raw_key_id(fn):
    def wrapper(self: KmsBackend, key_id: str, *args: Any):
        return fn(self, self.get_key_id(key_id), *args)

    wrapper.__name__ = fn.__name__
    return wrapper


for _name in ("disable_key", "enable_key", "cancel_key_deletion", "schedule_key_deletion"):
    setattr(KmsBackend, _name, _with_raw_key_id(getattr(KmsBackend, _name)))


def _replicate_key(self: KmsBackend, key_id: str, replica_region: str) -> Any:
    """ReplicateKey: a replica with its own state and metadata, sharing the primary's key material."""
    raw = self.get_key_id(key_id)
    primary = self.keys[raw]
    if not primary.multi_region:
        raise AwsError("UnsupportedOperationException", f"{primary.arn} is not a multi-Region key.")
    if replica_region == self.region_name:
        raise ValidationException(f"The replica region {replica_region} is the region of the primary key.")
    target = kms_backends[self.account_id][replica_region]
    if raw in target.keys:
        raise AwsError("AlreadyExistsException", f"{target.keys[raw].arn} already exists in {replica_region}.")
    replica = copy.copy(primary)
    replica.region = replica_region
    replica.arn = primary.arn.replace(f":{self.region_name}:", f":{replica_region}:", 1)
    replica.key_state = "Enabled"
    replica.enabled = True
    replica.deletion_date = None
    replica.grants = {}
    replica.aliases = {}
    replica.rotations = []
    cfg = primary.multi_region_configuration
    replicas = [r for r in cfg["ReplicaKeys"] if r["Region"] != replica_region]
    replicas.append({"Arn": replica.arn, "Region": replica_region})
    # Every key of the set gets its own configuration dict (moto shares one, so describing a replica turned the
    # primary into a "REPLICA").
    for region_name in [cfg["PrimaryKey"]["Region"]] + [r["Region"] for r in replicas]:
        backend = kms_backends[self.account_id][region_name]
        key = replica if region_name == replica_region else backend.keys.get(raw)
        if key is None:
            continue
        key.multi_region_configuration = {
            "MultiRegionKeyType": "PRIMARY" if region_name == cfg["PrimaryKey"]["Region"] else "REPLICA",
            "PrimaryKey": dict(cfg["PrimaryKey"]),
            "ReplicaKeys": [dict(r) for r in replicas],
        }
    target.keys[raw] = replica
    return replica


KmsBackend.replicate_key = _replicate_key

_orig_validate_cmk_id = KmsResponse._validate_cmk_id


def _validate_cmk_id(self: KmsResponse, key_id: str) -> None:
    """moto's check, plus: an ARN names its region and account; another region's ARN is not found here."""
    if not isinstance(key_id, str) or not key_id:
        raise ValidationException("KeyId is required.")
    if key_id.startswith("arn:"):
        parts = key_id.split(":")
        if len(parts) < 6 or parts[3] != self.region or parts[4] != self.current_account:
            raise NotFoundException(f"Key '{key_id}' does not exist")
    _orig_validate_cmk_id(self, key_id)


KmsResponse._validate_cmk_id = _validate_cmk_id

# ---------------------------------------------------------------------------------------------------------------
# c + d. Global tables and the replication worker
# ---------------------------------------------------------------------------------------------------------------


class Replication:
    """Global-table membership, fault knobs, the pending queue and last-writer-wins bookkeeping."""

    def __init__(self, default_lag_ms: int):
        self.default_lag_ms = default_lag_ms
        self.reset()

    def reset(self) -> None:
        # (account, table name) -> set of regions holding a replica
        self.groups: dict[tuple[str, str], set[str]] = {}
        # (source, target, table) with None as wildcard -> {"paused": bool, "lag_ms": int, "drop_next": int}
        self.knobs: dict[tuple[str | None, str | None, str | None], dict[str, Any]] = {}
        self.pending: list[dict[str, Any]] = []
        # (account, region, table, key) -> (timestamp ns, origin region) of the last applied write
        self.last_write: dict[tuple[str, str, str, str], tuple[int, str]] = {}
        self.stats = {"delivered": 0, "dropped": 0, "skipped_older": 0}
        self.seq = 0

    # -- knobs ------------------------------------------------------------------------------------------------

    def _matching(self, source: str, target: str, table: str) -> list[dict[str, Any]]:
        found = []
        for (s, t, tb), knob in self.knobs.items():
            if s not in (None, source) or t not in (None, target) or tb not in (None, table):
                continue
            found.append(((s is not None) + (t is not None) + (tb is not None) * 2, knob))
        found.sort(key=lambda x: -x[0])
        return [k for _, k in found]

    def effective(self, source: str, target: str, table: str, field: str, default: Any) -> Any:
        for knob in self._matching(source, target, table):
            if field in knob:
                return knob[field]
        return default

    def take_drop(self, source: str, target: str, table: str) -> bool:
        for knob in self._matching(source, target, table):
            if knob.get("drop_next", 0) > 0:
                knob["drop_next"] -= 1
                return True
        return False

    def set_knob(self, body: dict[str, Any]) -> None:
        scope = (body.get("source"), body.get("target"), body.get("table"))
        knob = self.knobs.setdefault(scope, {})
        for field in ("paused", "lag_ms", "drop_next"):
            if field in body:
                knob[field] = body[field]

    def describe(self) -> dict[str, Any]:
        return {
            "default_lag_ms": self.default_lag_ms,
            "knobs": [
                {"source": s, "target": t, "table": tb, **knob} for (s, t, tb), knob in self.knobs.items()
            ],
            "queue_depth": len(self.pending),
            "paused_depth": sum(
                1 for e in self.pending if self.effective(e["source"], e["target"], e["table"], "paused", False)
            ),
            "global_tables": [
                {"account": a, "table": t, "regions": sorted(r)} for (a, t), r in sorted(self.groups.items())
            ],
            **self.stats,
        }

    # -- writes -----------------------------------------------------------------------------------------------

    def on_local_write(self, table: Table, old: Any, new: Any) -> None:
        regions = self.groups.get((table.account_id, table.name))
        if not regions or table.region_name not in regions:
            return
        item = new if new is not None else old
        if item is None:
            return
        key = _key_of(table, item)
        image = copy.deepcopy(new.to_json()["Attributes"]) if new is not None else None
        stamp = (time.time_ns(), table.region_name)
        event = {
            "account": table.account_id,
            "table": table.name,
            "source": table.region_name,
            "key": key,
            "image": image,
            "stamp": stamp,
        }
        buffer = getattr(_tls, "txn_buffer", None)
        if buffer is not None:
            buffer.append(event)
        else:
            self.enqueue(event)

    def enqueue(self, event: dict[str, Any]) -> None:
        account, name, source = event["account"], event["table"], event["source"]
        self.last_write[(account, source, name, _key_str(event["key"]))] = event["stamp"]
        for target in sorted(self.groups.get((account, name), ())):
            if target == source:
                continue
            if self.take_drop(source, target, name):
                self.stats["dropped"] += 1
                log.debug("drop %s -> %s %s %s", source, target, name, event["key"])
                continue
            lag = self.effective(source, target, name, "lag_ms", self.default_lag_ms)
            self.seq += 1
            self.pending.append({**event, "target": target, "due": time.monotonic() + lag / 1000.0, "seq": self.seq})

    def deliver_due(self) -> None:
        now = time.monotonic()
        keep = []
        blocked: set[tuple[str, str, str]] = set()
        for ev in self.pending:
            lane = (ev["source"], ev["target"], ev["table"])
            if lane in blocked or ev["due"] > now or self.effective(*lane, "paused", False):
                blocked.add(lane)  # keep per-direction order
                keep.append(ev)
                continue
            self.apply(ev)
        self.pending = keep

    def apply(self, ev: dict[str, Any]) -> None:
        backend = dynamodb_backends[ev["account"]][ev["target"]]
        table = backend.tables.get(ev["table"])
        if table is None:
            return
        lw_key = (ev["account"], ev["target"], ev["table"], _key_str(ev["key"]))
        last = self.last_write.get(lw_key)
        if last is not None and last > ev["stamp"]:
            self.stats["skipped_older"] += 1
            return
        self.last_write[lw_key] = ev["stamp"]
        _tls.replaying = True
        try:
            if ev["image"] is not None:
                table.put_item(copy.deepcopy(ev["image"]), overwrite=True)
            else:
                hash_value = DynamoType(ev["key"][table.hash_key_attr])
                range_value = DynamoType(ev["key"][table.range_key_attr]) if table.range_key_attr else None
                table.delete_item(hash_value, range_value)
            self.stats["delivered"] += 1
        except Exception:  # pragma: no cover - a replica whose schema diverged
            log.exception("replicated write failed: %s", ev)
        finally:
            _tls.replaying = False


def _key_of(table: Table, item: Any) -> dict[str, Any]:
    attrs = item.to_json()["Attributes"]
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return key


def _key_str(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


REPL = Replication(int(os.environ.get("DDBGUARD_LOCAL_LAG_MS", "200")))

_orig_shard_add = StreamShard.add


def _shard_add(self: StreamShard, old: Any, new: Any) -> None:
    _orig_shard_add(self, old, new)
    if not getattr(_tls, "replaying", False):
        REPL.on_local_write(self.table, old, new)


StreamShard.add = _shard_add

_orig_transact_write_items = DynamoDBBackend.transact_write_items


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    outer = getattr(_tls, "txn_buffer", None)
    _tls.txn_buffer = [] if outer is None else outer
    try:
        _orig_transact_write_items(self, transact_items)
        if outer is None:
            for ev in _tls.txn_buffer:
                REPL.enqueue(ev)
    finally:
        if outer is None:
            _tls.txn_buffer = None


DynamoDBBackend.transact_write_items = _transact_write_items

_orig_table_describe = Table.describe


def _table_describe(self: Table, base_key: str = "TableDescription") -> dict[str, Any]:
    result = _orig_table_describe(self, base_key)
    regions = REPL.groups.get((self.account_id, self.name))
    if regions and self.region_name in regions:
        result[base_key]["GlobalTableVersion"] = "2019.11.21"
        result[base_key]["Replicas"] = [{"RegionName": r, "ReplicaStatus": "ACTIVE"} for r in sorted(regions)]
    return result


Table.describe = _table_describe

_orig_delete_table = DynamoDBBackend.delete_table


def _delete_table(self: DynamoDBBackend, name: str) -> Table:
    table = _orig_delete_table(self, name)
    group = REPL.groups.get((self.account_id, name))
    if group is not None:
        group.discard(self.region_name)
        if len(group) < 2:
            REPL.groups.pop((self.account_id, name), None)
    return table


DynamoDBBackend.delete_table = _delete_table

_orig_update_table = DynamoHandler.update_table


def _update_table(self: DynamoHandler):
    updates = self.body.get("ReplicaUpdates")
    result = _orig_update_table(self)
    if not updates:
        return result
    if not isinstance(updates, list):
        raise AwsError("ValidationException", "ReplicaUpdates must be a list.")
    backend = self.dynamodb_backend
    table = backend.get_table(self.body["TableName"])
    for update in updates:
        if not isinstance(update, dict) or len(update) != 1:
            raise AwsError("ValidationException", "Each ReplicaUpdate must hold exactly one of Create, Update, Delete.")
        action, spec = next(iter(update.items()))
        region = (spec or {}).get("RegionName")
        if not region:
            raise AwsError("ValidationException", "ReplicaUpdate is missing RegionName.")
        if action == "Create":
            _create_replica(backend, table, region)
        elif action == "Delete":
            _delete_replica(backend, table, region)
        elif action == "Update":
            pass  # throughput/KMS overrides: accepted, not modelled
        else:
            raise AwsError("ValidationException", f"Unknown ReplicaUpdate action {action}.")
    return DynamoResult(table.describe())


def _create_replica(backend: DynamoDBBackend, table: Table, region: str) -> None:
    if region == backend.region_name:
        raise AwsError("ValidationException", f"Cannot add a replica in the table's own region {region}.")
    spec = table.stream_specification or {}
    if not spec.get("StreamEnabled"):
        backend.update_table_streams(table, {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    elif spec.get("StreamViewType") != "NEW_AND_OLD_IMAGES":
        raise AwsError(
            "ValidationException",
            "Table write capacity should either be Pay-Per-Request or AutoScaled and the table must have "
            "DynamoDB Streams enabled with NEW_AND_OLD_IMAGES.",
        )
    group = REPL.groups.setdefault((backend.account_id, table.name), {backend.region_name})
    if region in group:
        raise AwsError("ValidationException", f"Failed to create a replica of {table.name}: {region} already exists.")
    target = dynamodb_backends[backend.account_id][region]
    if table.name in target.tables:
        raise AwsError(
            "ValidationException",
            f"Failed to create a the new replica of table with name: {table.name} because one or more replicas "
            "already existed as tables.",
        )
    described = _orig_table_describe(table, "T")["T"]
    gsis = [
        {k: g[k] for k in ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput") if k in g}
        for g in described.get("GlobalSecondaryIndexes", [])
    ]
    lsis = [
        {k: i[k] for k in ("IndexName", "KeySchema", "Projection") if k in i}
        for i in described.get("LocalSecondaryIndexes", [])
    ]
    throughput = None
    if table.billing_mode != "PAY_PER_REQUEST":
        throughput = {k: v for k, v in table.throughput.items() if k != "NumberOfDecreasesToday"}
    replica = target.create_table(
        table.name,
        schema=copy.deepcopy(table.schema),
        throughput=throughput,
        attr=copy.deepcopy(table.attr),
        global_indexes=gsis or None,
        indexes=lsis or None,
        streams={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        billing_mode=table.billing_mode,
        sse_specification=None,
        tags=[],
        deletion_protection_enabled=False,
        warm_throughput=None,
    )
    group.add(region)
    # Existing items are copied into the new replica (as the real service backfills it).
    _tls.replaying = True
    try:
        for item in list(_iter_items(table)):
            replica.put_item(copy.deepcopy(item.to_json()["Attributes"]), overwrite=True)
    finally:
        _tls.replaying = False


def _iter_items(table: Table):
    for value in table.items.values():
        if table.has_range_key:
            yield from value.values()
        else:
            yield value


def _delete_replica(backend: DynamoDBBackend, table: Table, region: str) -> None:
    group = REPL.groups.get((backend.account_id, table.name))
    if not group or region not in group:
        raise AwsError("ValidationException", f"Replica in {region} of {table.name} does not exist.")
    group.discard(region)
    target = dynamodb_backends[backend.account_id][region]
    if table.name in target.tables:
        _orig_delete_table(target, table.name)
    REPL.pending = [e for e in REPL.pending if not (e["table"] == table.name and e["target"] == region)]
    if len(group) < 2:
        REPL.groups.pop((backend.account_id, table.name), None)


DynamoHandler.update_table = _update_table

# Streams: unknown iterators and shards are AWS-shaped errors, not HTML 500s.
_orig_get_records = DynamoDBStreamsBackend.get_records
_orig_get_shard_iterator = DynamoDBStreamsBackend.get_shard_iterator


def _get_records(self: DynamoDBStreamsBackend, iterator_arn: str, limit: int):
    if iterator_arn not in self.shard_iterators:
        if isinstance(iterator_arn, str) and "|1|" in iterator_arn:
            raise AwsError("ExpiredIteratorException", "Iterator expired or unknown.")
        raise AwsError("ValidationException", "Invalid ShardIterator.")
    return _orig_get_records(self, iterator_arn, limit)


def _get_shard_iterator(self: DynamoDBStreamsBackend, arn, shard_id, shard_iterator_type, sequence_number=None):
    try:
        table = self._get_table_from_arn(arn)
    except Exception:
        raise AwsError("ResourceNotFoundException", f"Requested resource not found: Stream: {arn} not found")
    if table.stream_shard is None or table.stream_shard.id != shard_id:
        raise AwsError("ResourceNotFoundException", f"Requested resource not found: Shard: {shard_id} not found")
    if shard_iterator_type in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        try:
            sequence_number = int(sequence_number)
        except (TypeError, ValueError):
            raise AwsError("ValidationException", "SequenceNumber is required and must be a number.")
    elif shard_iterator_type not in ("TRIM_HORIZON", "LATEST"):
        raise AwsError("ValidationException", f"Invalid ShardIteratorType {shard_iterator_type}.")
    return _orig_get_shard_iterator(self, arn, shard_id, shard_iterator_type, sequence_number)


DynamoDBStreamsBackend.get_records = _get_records
DynamoDBStreamsBackend.get_shard_iterator = _get_shard_iterator


def reset_everything() -> None:
    with BIG_LOCK:
        dynamodb_backends.reset()
        dynamodbstreams_backends.reset()
        kms_backends.reset()
        REPL.reset()


def worker() -> None:
    while True:
        time.sleep(0.02)
        if not REPL.pending:
            continue
        with BIG_LOCK:
            try:
                REPL.deliver_due()
            except Exception:  # pragma: no cover
                log.exception("replication worker")


# ---------------------------------------------------------------------------------------------------------------
# The WSGI app: /_local/ knobs in front of moto, one lock around it
# ---------------------------------------------------------------------------------------------------------------


class LocalApp:
    def __init__(self) -> None:
        self.moto = DomainDispatcherApplication(create_backend_app)

    def __call__(self, environ: dict[str, Any], start_response: Any):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_local/"):
            status, body = self.local(environ, path)
            log.debug("%s %s -> %s", environ.get("REQUEST_METHOD"), path, status)
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        with BIG_LOCK:
            captured: dict[str, Any] = {}

            def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
                captured["status"], captured["headers"] = status, headers
                return lambda _data: None

            chunks = self.moto(environ, capture)
            try:
                body = b"".join(chunks)
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
        status, headers = captured["status"], captured["headers"]
        if status.startswith("5") and target:
            # moto's unhandled exceptions come back as HTML 500s; AWS clients want JSON.
            log.warning("moto error on %s: %s", target, body[:300])
            body = aws_error_body("InternalFailure", f"local-aws: unhandled error in {target}")
            status = "500 Internal Server Error"
            headers = [("Content-Type", "application/x-amz-json-1.0")]
            headers = [h for h in headers if h[0].lower() != "content-length"]
        headers = [h for h in headers if h[0].lower() != "content-length"] + [("Content-Length", str(len(body)))]
        log.debug("%s %s -> %s", target or environ.get("REQUEST_METHOD"), path, status)
        start_response(status, headers)
        return [body]

    def local(self, environ: dict[str, Any], path: str) -> tuple[str, bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/_local/health" and method == "GET":
            return "200 OK", json.dumps({"status": "ok", "moto": moto.__version__}).encode()
        if path == "/_local/reset" and method == "POST":
            reset_everything()
            return "200 OK", b"{}"
        if path == "/_local/replication":
            if method == "GET":
                with BIG_LOCK:
                    return "200 OK", json.dumps(REPL.describe()).encode()
            if method == "POST":
                try:
                    length = int(environ.get("CONTENT_LENGTH") or 0)
                    raw = environ["wsgi.input"].read(length) if length else b"{}"
                    body = json.loads(raw or b"{}")
                    _validate_knob(body)
                except (ValueError, KnobError) as e:
                    return "400 Bad Request", aws_error_body("ValidationException", str(e))
                with BIG_LOCK:
                    REPL.set_knob(body)
                    return "200 OK", json.dumps(REPL.describe()).encode()
        return "404 Not Found", aws_error_body("UnknownOperationException", f"no local endpoint {method} {path}")


class KnobError(Exception):
    pass


def _validate_knob(body: Any) -> None:
    if not isinstance(body, dict):
        raise KnobError("the knob body must be a JSON object")
    allowed = {"source", "target", "table", "paused", "lag_ms", "drop_next"}
    unknown = set(body) - allowed
    if unknown:
        raise KnobError(f"unknown knob fields: {sorted(unknown)}")
    for field in ("source", "target", "table"):
        if field in body and body[field] is not None and not isinstance(body[field], str):
            raise KnobError(f"{field} must be a string")
    if "paused" in body and not isinstance(body["paused"], bool):
        raise KnobError("paused must be true or false")
    for field in ("lag_ms", "drop_next"):
        if field in body and (isinstance(body[field], bool) or not isinstance(body[field], int) or body[field] < 0):
            raise KnobError(f"{field} must be a non-negative integer")


# ---------------------------------------------------------------------------------------------------------------


def watch_parent(pid: int, server: Any) -> None:
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            log.info("parent %d is gone: exiting", pid)
            os._exit(0)
        except PermissionError:
            pass


class QuietHandler(MotoRequestHandler):
    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):
            super().log_request(code, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DDBGUARD_LOCAL_PORT", "4566")))
    parser.add_argument(
        "--exit-with-parent",
        type=int,
        default=int(os.environ.get("DDBGUARD_LOCAL_PARENT_PID", "0") or 0),
        metavar="PID",
        help="exit when this process no longer exists (polled every 500 ms)",
    )
    parser.add_argument("--lag-ms", type=int, default=None, help="default replication lag (env DDBGUARD_LOCAL_LAG_MS)")
    parser.add_argument("--debug", action="store_true", help="log one line per request (env DDBGUARD_LOCAL_DEBUG=1)")
    args = parser.parse_args()
    debug = args.debug or os.environ.get("DDBGUARD_LOCAL_DEBUG") == "1"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if not debug:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if args.lag_ms is not None:
        REPL.default_lag_ms = args.lag_ms
    server = make_server(args.host, args.port, LocalApp(), threaded=True, request_handler=QuietHandler)
    threading.Thread(target=worker, name="replication", daemon=True).start()
    if args.exit_with_parent:
        threading.Thread(target=watch_parent, args=(args.exit_with_parent, server), daemon=True).start()
    print(f"local-aws listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
