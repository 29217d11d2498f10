"""AWS-side steps of scripts/demo.sh, run with the local environment's venv (boto3 comes with moto).

Each subcommand does one step against the local two-region environment and prints what it saw, so the
demo script reads like the story it tells. Not a general tool: the endpoint and credentials are local.
"""

import argparse
import base64
import json
import sys
import time

import boto3

REGIONS = ("us-east-1", "ap-southeast-2")


def client(service, region, endpoint):
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def mrk(args):
    primary, replica_region = REGIONS
    kms = client("kms", primary, args.endpoint)
    key = kms.create_key(Description="ddbguard demo MRK", MultiRegion=True)["KeyMetadata"]
    rep = kms.replicate_key(KeyId=key["KeyId"], ReplicaRegion=replica_region)["ReplicaKeyMetadata"]
    print(f"  primary MRK  {key['Arn']}")
    print(f"  replica MRK  {rep['Arn']}")
    context = {"aws-crypto-table-name": "Customers"}
    dk = kms.generate_data_key(KeyId=key["Arn"], NumberOfBytes=32, EncryptionContext=context)
    remote = client("kms", replica_region, args.endpoint)
    plain = remote.decrypt(KeyId=rep["Arn"], CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=context)
    same = plain["Plaintext"] == dk["Plaintext"] and plain["KeyId"] == rep["Arn"]
    print(f"  data key generated in {primary}, decrypted in {replica_region} with the replica: "
          f"{'same 32 bytes' if same else 'MISMATCH'}")
    if not same:
        sys.exit(1)
    if args.arn_file:
        with open(args.arn_file, "w") as f:
            f.write(key["Arn"])


def disable(args):
    kms = client("kms", args.region, args.endpoint)
    kms.disable_key(KeyId=args.key_arn)
    print(f"  DisableKey {args.key_arn}")


def enable(args):
    kms = client("kms", args.region, args.endpoint)
    kms.enable_key(KeyId=args.key_arn)
    print(f"  EnableKey {args.key_arn}")


def single_key(args):
    """A key that is not multi-Region: what a misconfigured writer might use."""
    kms = client("kms", args.region, args.endpoint)
    key = kms.create_key(Description="ddbguard demo single-Region key")["KeyMetadata"]
    print(f"  single-Region key {key['Arn']}", file=sys.stderr)
    print(key["Arn"])


def replication(args):
    """Pauses or resumes replication of one table in one direction (the local environment's knob)."""
    import urllib.request
    knob = {"source": args.source, "target": args.target, "table": args.table, "paused": args.state == "pause"}
    req = urllib.request.Request(f"{args.endpoint}/_local/replication", data=json.dumps(knob).encode(), method="POST")
    urllib.request.urlopen(req, timeout=5).read()
    print(f"  replication {args.source} -> {args.target} of {args.table}: {args.state}d")


def _scrape(url):
    import urllib.request
    try:
        return urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return ""


def _metric(text, name, labels):
    total = None
    for line in text.splitlines():
        if line.startswith("#") or not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def metric(args):
    """Prints a metric's value (the sum of the matching series; 0 when none) from a /metrics URL. With --at-least
    or --equals it waits (up to --wait seconds) for the value and exits 1 if it never comes."""
    labels = dict(kv.split("=", 1) for kv in args.label)
    started = time.monotonic()
    while True:
        value = _metric(_scrape(args.url), args.name, labels) or 0.0
        done = ((args.at_least is None or value >= args.at_least)
                and (args.equals is None or value == args.equals))
        if done or time.monotonic() - started > args.wait:
            print(f"{value:g}")
            if args.verbose:
                print(f"  {args.name}{labels} = {value:g} after {time.monotonic() - started:.1f} s", file=sys.stderr)
            sys.exit(0 if done else 1)
        time.sleep(0.2)


def verdicts(args):
    """Prints `VERDICT COUNT` lines: ddbguard_records_total of a /metrics URL summed by verdict."""
    counts = {}
    for line in _scrape(args.url).splitlines():
        if line.startswith("ddbguard_records_total{") and 'verdict="' in line:
            verdict = line.split('verdict="', 1)[1].split('"', 1)[0]
            counts[verdict] = counts.get(verdict, 0) + int(float(line.rsplit(" ", 1)[1]))
    for verdict, count in sorted(counts.items()):
        print(verdict, count)


def plain_item(args):
    """Customer items in DynamoDB JSON, not encrypted (for `ddbguard item encrypt`, or written as is): one line
    per item, customers N to N + count - 1."""
    for n in range(args.n, args.n + args.count):
        item = customer(n, email=args.email)
        print(json.dumps({k: _plain_json(v) for k, v in item.items()}))


def table(args):
    primary, replica_region = REGIONS
    ddb = client("dynamodb", primary, args.endpoint)
    for region in REGIONS:
        try:
            client("dynamodb", region, args.endpoint).delete_table(TableName=args.table)
        except Exception:  # the table did not exist: nothing to clean up
            pass
    # A branch key store (--key-store) has the official key store's key schema.
    hash_key, range_key = ("branch-key-id", "type") if args.key_store else ("pk", "sk")
    ddb.create_table(
        TableName=args.table,
        KeySchema=[{"AttributeName": hash_key, "KeyType": "HASH"}, {"AttributeName": range_key, "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": hash_key, "AttributeType": "S"},
                              {"AttributeName": range_key, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    ddb.update_table(TableName=args.table, ReplicaUpdates=[{"Create": {"RegionName": replica_region}}])
    replicas = client("dynamodb", replica_region, args.endpoint).describe_table(TableName=args.table)
    names = [r["RegionName"] for r in replicas["Table"].get("Replicas", [])]
    print(f"  global table {args.table}: replicas {', '.join(sorted(names))}")


def put(args):
    item = json.load(open(args.file))
    client("dynamodb", args.region, args.endpoint).put_item(TableName=args.table, Item=_to_boto(item))
    print(f"  PutItem in {args.region}: {len(item)} attributes")


def get(args):
    ddb = client("dynamodb", args.region, args.endpoint)
    key = json.loads(args.key)
    started = time.monotonic()
    while True:
        got = ddb.get_item(TableName=args.table, Key=_to_boto(key), ConsistentRead=True).get("Item")
        if got:
            print(f"  arrived in {args.region} after {1000 * (time.monotonic() - started):.0f} ms", file=sys.stderr)
            json.dump(_from_boto(got), sys.stdout)
            print()
            return
        if time.monotonic() - started > args.wait:
            print(f"  not replicated to {args.region} within {args.wait} s", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.05)


def flip_bit(args):
    item = json.load(sys.stdin)
    raw = bytearray(base64.b64decode(item[args.attribute]["B"]))
    raw[len(raw) // 2] ^= 0x01
    item[args.attribute]["B"] = base64.b64encode(bytes(raw)).decode()
    json.dump(item, sys.stdout)
    print()


def seed(args):
    """Plaintext customers, as a table holds them before client-side encryption is adopted."""
    ddb = boto3.resource("dynamodb", region_name=args.region, endpoint_url=args.endpoint,
                         aws_access_key_id="test", aws_secret_access_key="test").Table(args.table)
    with ddb.batch_writer() as batch:
        for i in range(args.count):
            batch.put_item(Item=customer(i))
    print(f"  {args.count} plaintext items written in {args.region}")


def customer(i, email=None):
    return {
        "pk": f"customer#{10000 + i}",
        "sk": "profile",
        "email": email or f"customer{i}@example.com",
        "ssn": f"078-05-{i % 10000:04d}",
        "address": {"street": f"{i} Main St", "city": "Springfield", "zip": f"{10000 + i % 90000}"},
        "tier": ["bronze", "silver", "gold"][i % 3],
    }


def updates(args):
    """JSON lines of plaintext updates the application is about to write (encrypted by ddbguard item encrypt)."""
    for i in range(0, args.count * args.every, args.every):
        item = customer(i, email=f"updated{i}@example.com")
        print(json.dumps({k: _plain_json(v) for k, v in item.items()}))


def _plain_json(v):
    if isinstance(v, dict):
        return {"M": {k: _plain_json(x) for k, x in v.items()}}
    return {"S": v}


def writer(args):
    """The application, already writing encrypted items, keeps writing while the migration runs."""
    ddb = client("dynamodb", args.region, args.endpoint)
    lines = [json.loads(line)["item"] for line in open(args.file) if line.strip()]
    pause = args.seconds / max(len(lines), 1)
    for item in lines:
        ddb.put_item(TableName=args.table, Item=_to_boto(item))
        time.sleep(pause)
    print(f"  application writer: {len(lines)} encrypted updates written in {args.region} over {args.seconds:.0f} s")


def _to_boto(item):
    def conv(v):
        (t, x), = v.items()
        if t == "B":
            return {"B": base64.b64decode(x)}
        if t == "BS":
            return {"BS": [base64.b64decode(b) for b in x]}
        if t == "M":
            return {"M": {k: conv(y) for k, y in x.items()}}
        if t == "L":
            return {"L": [conv(y) for y in x]}
        return {t: x}
    return {k: conv(v) for k, v in item.items()}


def _from_boto(item):
    def conv(v):
        (t, x), = v.items()
        if t == "B":
            return {"B": base64.b64encode(x).decode()}
        if t == "BS":
            return {"BS": [base64.b64encode(b).decode() for b in x]}
        if t == "M":
            return {"M": {k: conv(y) for k, y in x.items()}}
        if t == "L":
            return {"L": [conv(y) for y in x]}
        return {t: x}
    return {k: conv(v) for k, v in item.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mrk")
    m.add_argument("--arn-file", help="write the primary key ARN here")
    m.set_defaults(func=mrk)
    d = sub.add_parser("disable")
    d.add_argument("--region", required=True)
    d.add_argument("key_arn")
    d.set_defaults(func=disable)
    en = sub.add_parser("enable")
    en.add_argument("--region", required=True)
    en.add_argument("key_arn")
    en.set_defaults(func=enable)
    sk = sub.add_parser("single-key")
    sk.add_argument("--region", required=True)
    sk.set_defaults(func=single_key)
    r = sub.add_parser("replication")
    r.add_argument("state", choices=["pause", "resume"])
    r.add_argument("--table", required=True)
    r.add_argument("--source", required=True)
    r.add_argument("--target", required=True)
    r.set_defaults(func=replication)
    me = sub.add_parser("metric")
    me.add_argument("--url", required=True)
    me.add_argument("--label", action="append", default=[], help="NAME=VALUE (repeatable)")
    me.add_argument("--at-least", type=float)
    me.add_argument("--equals", type=float)
    me.add_argument("--wait", type=float, default=0.0)
    me.add_argument("--verbose", action="store_true")
    me.add_argument("name")
    me.set_defaults(func=metric)
    ve = sub.add_parser("verdicts")
    ve.add_argument("--url", required=True)
    ve.set_defaults(func=verdicts)
    pi = sub.add_parser("plain-item")
    pi.add_argument("--email")
    pi.add_argument("--count", type=int, default=1)
    pi.add_argument("n", type=int)
    pi.set_defaults(func=plain_item)
    t = sub.add_parser("table")
    t.add_argument("table")
    t.add_argument("--key-store", action="store_true", help="key schema of a branch key store")
    t.set_defaults(func=table)
    pu = sub.add_parser("put")
    pu.add_argument("--region", required=True)
    pu.add_argument("--table", required=True)
    pu.add_argument("file")
    pu.set_defaults(func=put)
    g = sub.add_parser("get")
    g.add_argument("--region", required=True)
    g.add_argument("--table", required=True)
    g.add_argument("--key", required=True)
    g.add_argument("--wait", type=float, default=5.0)
    g.set_defaults(func=get)
    f = sub.add_parser("flip-bit")
    f.add_argument("--attribute", required=True)
    f.set_defaults(func=flip_bit)
    se = sub.add_parser("seed")
    se.add_argument("--region", required=True)
    se.add_argument("--table", required=True)
    se.add_argument("--count", type=int, required=True)
    se.set_defaults(func=seed)
    up = sub.add_parser("updates")
    up.add_argument("--count", type=int, required=True)
    up.add_argument("--every", type=int, default=7, help="update every Nth seeded customer")
    up.set_defaults(func=updates)
    w = sub.add_parser("writer")
    w.add_argument("--region", required=True)
    w.add_argument("--table", required=True)
    w.add_argument("--seconds", type=float, default=10.0)
    w.add_argument("file", help="JSON lines of `ddbguard item encrypt` output")
    w.set_defaults(func=writer)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
