#!/usr/bin/env python3
"""Herald interoperability check with clients nobody here wrote.

Reads and writes Herald's wire format with confluent-kafka (Kafka client) and fastavro
(Avro), so a Python service can consume what Herald publishes and publish what Herald
consumes:

- key: the aggregate id as UTF-8 bytes, partitioned with ``murmur2_random`` (the Java
  client's function, which Herald's producer uses too);
- value: Avro single-object encoding: ``C3 01``, the 8-byte little-endian CRC-64-AVRO
  fingerprint of the writer schema's parsing canonical form, the Avro binary datum;
- headers: CloudEvents Kafka binding, binary mode (``ce_specversion``, ``ce_id``,
  ``ce_type`` = Avro full name, ``ce_source``, ``ce_time``, ``ce_subject`` = key,
  ``content-type: application/avro``), checked on every record read with the CloudEvents
  SDK's own Kafka binding (``cloudevents.core.bindings.kafka.from_binary``).

With ``--registry URL``, values use Confluent's wire format instead (``00``, the 4-byte
big-endian schema id, the datum), read and written by confluent-kafka's own
AvroDeserializer and AvroSerializer.

Subcommands (see ``--help`` of each):

  fingerprint FILE...    fastavro's CRC-64-AVRO fingerprint of each schema file
  canonical FILE...      fastavro's parsing canonical form and fingerprint, as JSON lines
  consume                read N records from the beginning of a topic, decode them
  produce                publish events given as JSON lines on stdin
  traceparent            read traceparent values with OpenTelemetry's W3C propagator
  encode                 fastavro's binary datum of each JSON line, as hex

Output is one JSON object per line, canonical (sorted keys, no spaces, UTF-8), so other
programs (Herald's integration test) can compare it byte for byte. Errors go to stderr
and end the program with a non-zero status; a record that does not follow the wire
format is an error, not something to skip.
"""

from __future__ import annotations

import argparse
import decimal
import io
import json
import os
import re
import secrets
import sys
import time
import uuid
from datetime import date, datetime, time as clock_time, timezone
from pathlib import Path
from typing import NoReturn

import fastavro
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka.serialization import MessageField, SerializationContext
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form
from fastavro.validation import validate

MAGIC = b"\xc3\x01"
CONTENT_TYPE = "application/avro"
SPECVERSION = "1.0"


def fail(message: str) -> NoReturn:
    print(f"interop.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def logical_to_json(value):
    """JSON for the values fastavro decodes logical types into, so the caller sees how
    fastavro understood them: a ``timestamp-millis`` becomes a timezone-aware datetime,
    printed ISO 8601 with milliseconds (``2025-12-01T10:00:00.123+00:00``); a ``date`` or
    ``time-*`` ISO 8601 too; a ``decimal`` its exact digits; a ``uuid`` its string."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds" if value.microsecond % 1000 == 0 else "microseconds")
    if isinstance(value, (date, clock_time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def emit(obj: dict) -> None:
    """One canonical JSON line: sorted keys, no spaces, non-ASCII kept as UTF-8."""
    line = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=logical_to_json)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def logical_from_json(schema, value, named: dict):
    """The inverse of ``logical_to_json`` for ``produce``: ISO 8601 strings become the
    datetime, date or time fastavro encodes for a logical type, decimal strings a Decimal,
    guided by the writer schema (parsed by fastavro). Unions are ``null`` or their first
    other branch, as in Herald's event schemas."""
    if isinstance(schema, str):
        return logical_from_json(named[schema], value, named) if schema in named else value
    if isinstance(schema, list):
        if value is None:
            return None
        branch = next((b for b in schema if b != "null"), "null")
        return logical_from_json(branch, value, named)
    kind, logical = schema.get("type"), schema.get("logicalType")
    if isinstance(value, str) and logical in ("timestamp-millis", "timestamp-micros", "local-timestamp-millis", "local-timestamp-micros"):
        return datetime.fromisoformat(value)
    if isinstance(value, str) and logical == "date":
        return date.fromisoformat(value)
    if isinstance(value, str) and logical in ("time-millis", "time-micros"):
        return clock_time.fromisoformat(value)
    if isinstance(value, (str, int, float)) and logical == "decimal":
        return decimal.Decimal(str(value))
    if kind == "record" and isinstance(value, dict):
        types = {f["name"]: f["type"] for f in schema["fields"]}
        return {k: logical_from_json(types[k], v, named) if k in types else v for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [logical_from_json(schema["items"], v, named) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: logical_from_json(schema["values"], v, named) for k, v in value.items()}
    return value


# --- fingerprints ---------------------------------------------------------------------

# CRC-64-AVRO as the Avro specification defines it ("Schema Fingerprints"), written out
# here only to pin down the byte order of fastavro's result independently of fastavro.
_EMPTY = 0xC15D213AA4D7A795
_TABLE = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY & -(_fp & 1))
    _TABLE.append(_fp)


def spec_crc64_avro(data: bytes) -> int:
    fp = _EMPTY
    for b in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ b) & 0xFF]
    return fp


def fingerprint_of(parsed: dict | str | list) -> str:
    """The fingerprint as single-object encoding puts it on the wire, in hex.

    ``fastavro.schema.fingerprint(canonical_form, "CRC-64-AVRO")`` returns the hex of the
    8 bytes in little-endian order: for the schema ``"int"`` it returns
    ``8f5c393f1ad57572``, the little-endian bytes of the specification's 64-bit value
    ``0x7275d51a3f395c8f``. That is exactly the order of the 8 bytes after ``C3 01``
    (and of Herald's ``Fingerprint`` display), so the hex string is used as is. The
    specification's algorithm below double-checks that order on every call.
    """
    canonical = to_parsing_canonical_form(parsed)
    fp = fastavro_fingerprint(canonical, "CRC-64-AVRO")
    expected = spec_crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little").hex()
    if fp != expected:
        fail(f"fastavro's CRC-64-AVRO {fp} differs from the specification's {expected} for {canonical}")
    return fp


class Schema:
    def __init__(self, path: Path, parsed: dict):
        self.path = path
        self.parsed = parsed
        self.name = parsed["name"] if isinstance(parsed, dict) and "name" in parsed else None
        self.fingerprint = fingerprint_of(parsed)
        self.named: dict = {}
        self.header = MAGIC + bytes.fromhex(self.fingerprint)


def load_schema(path: Path) -> Schema:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        # Each file stands alone (named types are resolved within it), as in Herald.
        named: dict = {}
        schema = Schema(path, parse_schema(raw, named_schemas=named))
        schema.named = named
        return schema
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as e:
        fail(f"cannot load schema {path}: {e}")


def _version(path: Path) -> int:
    m = re.fullmatch(r"v(\d+)", path.stem)
    return int(m.group(1)) if m else 0


def load_schemas(directory: str) -> tuple[dict[str, Schema], dict[str, Schema]]:
    """Every .avsc under ``directory``: by fingerprint, and by full name (newest version,
    ``v10`` after ``v9``, as Herald's SchemaSet picks it)."""
    files = sorted(Path(directory).rglob("*.avsc"), key=lambda p: (str(p.parent), _version(p), p.stem))
    if not files:
        fail(f"no .avsc files under {directory}")
    by_fp: dict[str, Schema] = {}
    by_name: dict[str, Schema] = {}
    for path in files:
        schema = load_schema(path)
        by_fp[schema.fingerprint] = schema
        if schema.name:
            by_name[schema.name] = schema
    return by_fp, by_name


def cmd_fingerprint(args: argparse.Namespace) -> None:
    # Same layout as sha256sum: "<16 hex digits>  <file>".
    for name in args.files:
        print(f"{load_schema(Path(name)).fingerprint}  {name}", flush=True)


def cmd_canonical(args: argparse.Namespace) -> None:
    # One JSON line per file: fastavro's parsing canonical form and fingerprint, or why
    # fastavro refused the file (Herald's reference test compares them with its own).
    for name in args.files:
        out = {"file": name}
        try:
            with open(name, encoding="utf-8") as f:
                parsed = parse_schema(json.load(f), named_schemas={})
            out["canonical"] = to_parsing_canonical_form(parsed)
            out["fingerprint"] = fingerprint_of(parsed)
        except Exception as e:  # SchemaParseException, ValueError, UnknownType, ...
            out["error"] = f"{type(e).__name__}: {e}"
        emit(out)


# --- consume --------------------------------------------------------------------------


def header_map(msg) -> dict[str, str]:
    out = {}
    for key, value in msg.headers() or []:
        if value is not None:
            out[key] = value.decode("utf-8")
    return out


def decode(value: bytes | None, by_fp: dict[str, Schema], where: str) -> tuple[Schema, dict]:
    if not value:
        fail(f"{where}: empty value")
    if value[:2] != MAGIC:
        fail(f"{where}: no single-object magic C3 01, found {value[:4].hex(' ').upper()}")
    if len(value) < 10:
        fail(f"{where}: truncated single-object header ({len(value)} bytes)")
    fp = value[2:10].hex()
    writer = by_fp.get(fp)
    if writer is None:
        fail(f"{where}: no schema under the schema folder has fingerprint {fp}")
    datum = io.BytesIO(value[10:])
    try:
        data = fastavro.schemaless_reader(datum, writer.parsed, None)
    except Exception as e:  # fastavro raises plain EOFError, ValueError, ...
        fail(f"{where}: {writer.name} datum does not decode: {e!r}")
    rest = len(value) - 10 - datum.tell()
    if rest:
        fail(f"{where}: {rest} trailing bytes after the {writer.name} datum")
    return writer, data


def cloud_event(msg, where: str):
    """The record read by the CloudEvents SDK's own Kafka binding (binary mode), which
    checks the required attributes, ``specversion`` 1.0, ``time`` as RFC 3339 with a
    zone, and extension names (lower-case letters and digits); the event, or fail."""
    headers = {}
    for name, value in msg.headers() or []:
        if name in headers:
            fail(f"{where}: header {name} repeats")
        headers[name] = value if value is not None else b""
    message = KafkaMessage(headers=headers, key=msg.key(), value=msg.value() or b"")
    try:
        event = from_binary(message, JSONFormat(), CloudEvent)
    except Exception as e:  # CloudEventValidationError, ValueError from the time parser ...
        fail(f"{where}: not a CloudEvent to the CloudEvents SDK: {e}")
    data = event.get_data()
    # The SDK hands a binary payload back as text when it happens to be valid UTF-8.
    if (data.encode("utf-8") if isinstance(data, str) else data) != msg.value():
        fail(f"{where}: the CloudEvents SDK read the data differently")
    return event


# The CloudEvents headers every record has (printed as fields of their own); the others are
# extensions (ce_sequence, ce_causationid, ce_replyto, traceparent, ...), printed with
# --extensions.
STANDARD_HEADERS = {"ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "ce_subject", "content-type"}


def cmd_consume(args: argparse.Namespace) -> None:
    by_fp, _ = load_schemas(args.schemas)
    registry = deserializer = None
    if args.registry:
        # Imported here: only the Confluent-format check needs the registry extras.
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer
        registry = SchemaRegistryClient({"url": args.registry})
        deserializer = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        # Partitions are assigned explicitly: no group membership, nothing committed.
        "group.id": f"herald-interop-python-{os.getpid()}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    try:
        meta = consumer.list_topics(args.topic, timeout=args.timeout)
        topic = meta.topics.get(args.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            fail(f"topic {args.topic} not found: {topic.error if topic else 'no metadata'}")
        consumer.assign([TopicPartition(args.topic, p, -2) for p in sorted(topic.partitions)])  # -2: beginning
        deadline = time.monotonic() + args.timeout
        read = 0
        while read < args.count:
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"read {read} of {args.count} records from {args.topic} within {args.timeout}s")
            msg = consumer.poll(min(left, 1.0))
            if msg is None:
                continue
            if msg.error():
                fail(f"consuming {args.topic}: {msg.error()}")
            where = f"{msg.topic()}/{msg.partition()}@{msg.offset()}"
            value = msg.value()
            if registry is not None and value and value[0] == 0:
                # Confluent wire format: confluent-kafka's own deserializer, schema by id.
                schema_id = int.from_bytes(value[1:5], "big")
                parsed = json.loads(registry.get_schema(schema_id).schema_str)
                writer_name = ".".join(filter(None, [parsed.get("namespace"), parsed["name"]]))
                data = deserializer(value, SerializationContext(msg.topic(), MessageField.VALUE))
                framing = {"schema_id": schema_id}
            else:
                writer, data = decode(value, by_fp, where)
                writer_name = writer.name
                framing = {"fingerprint": writer.fingerprint}
            headers = header_map(msg)
            key = msg.key().decode("utf-8") if msg.key() is not None else None
            cloud_event(msg, where)
            if headers.get("ce_type") != writer_name:
                fail(f"{where}: ce_type {headers.get('ce_type')!r} is not the writer schema's name {writer_name!r}")
            emit({
                "key": key,
                "partition": msg.partition(),
                "offset": msg.offset(),
                **framing,
                "ce_specversion": headers.get("ce_specversion"),
                "ce_id": headers.get("ce_id"),
                "ce_type": headers.get("ce_type"),
                "ce_source": headers.get("ce_source"),
                "ce_time": headers.get("ce_time"),
                "ce_subject": headers.get("ce_subject"),
                "content_type": headers.get("content-type"),
                **({"extensions": {k: v for k, v in headers.items() if k not in STANDARD_HEADERS}} if args.extensions else {}),
                "data": data,
            })
            read += 1
    finally:
        consumer.close()


# --- produce --------------------------------------------------------------------------


def uuid7() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, 74 random bits, as Herald
    creates event ids. Python 3.14's uuid.uuid7 when present."""
    if hasattr(uuid, "uuid7"):
        return uuid.uuid7()
    ms = time.time_ns() // 1_000_000
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | secrets.randbits(12) << 64 | 0b10 << 62 | secrets.randbits(62)
    return uuid.UUID(int=value)


def rfc3339_now() -> str:
    # Herald writes microseconds and "Z".
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def split_out(parsed, names: set[str]) -> tuple[object, list[tuple[str, dict]]]:
    """The schema with the first definition of each named type in ``names`` (full names)
    replaced by its full name, and those definitions, each with its namespace explicit:
    how a team that registers a shared type under its own subject writes the schemas
    that use it (Confluent schema references)."""
    found: list[tuple[str, dict]] = []

    def walk(node, space: str):
        if isinstance(node, list):
            return [walk(branch, space) for branch in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = node["name"]
            # An explicit "namespace": null is no namespace given: the enclosing one.
            namespace = node.get("namespace")
            namespace = space if namespace is None else namespace
            full = name if "." in name else (f"{namespace}.{name}" if namespace else name)
            inner = full.rsplit(".", 1)[0] if "." in full else ""
            split = full in names and all(full != n for n, _ in found)
            copy = dict(node)
            if "fields" in copy:
                before = len(found)
                copy["fields"] = [{**f, "type": walk(f["type"], inner)} for f in copy["fields"]]
                if split and len(found) > before:
                    fail(f"--reference {full}: it holds another --reference type; register only the outer one")
            if split:
                copy["name"], copy["namespace"] = full.rsplit(".", 1)[-1], inner
                found.append((full, copy))
                return full
            return copy
        if kind == "array":
            return {**node, "items": walk(node["items"], space)}
        if kind == "map":
            return {**node, "values": walk(node["values"], space)}
        if isinstance(kind, (dict, list)):
            return {**node, "type": walk(kind, space)}
        return node

    return walk(parsed, ""), found


def confluent_serializers(url: str, references: list[str]):
    """A function (schema, data, topic) -> bytes that frames with confluent-kafka's own
    AvroSerializer: it registers each schema's file text under TopicRecordNameStrategy
    (``<topic>-<record full name>``, the strategy for topics of several event types) and
    writes 0x00, the 4-byte schema id, the datum.

    With ``references`` (full names of named types), each such type defined in a schema
    is registered apart, under its full name as subject, and the schema is registered
    naming it by a Confluent schema reference instead of defining it."""
    # Imported here: only the Confluent-format check needs the registry extras.
    from confluent_kafka.schema_registry import Schema as RegistrySchema, SchemaReference
    from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
    from confluent_kafka.schema_registry.avro import AvroSerializer
    registry = SchemaRegistryClient({"url": url})
    serializers: dict[Path, AvroSerializer] = {}

    def registered(schema: Schema):
        if not references:
            return schema.path.read_text(encoding="utf-8")
        main, shared = split_out(json.loads(schema.path.read_text(encoding="utf-8")), set(references))
        refs = []
        for full, definition in shared:
            text = json.dumps(definition)
            registry.register_schema(full, RegistrySchema(text, "AVRO"))
            version = registry.lookup_schema(full, RegistrySchema(text, "AVRO")).version
            refs.append(SchemaReference(full, full, version))
        return RegistrySchema(json.dumps(main), "AVRO", refs)

    def serialize(schema: Schema, data, topic: str) -> bytes:
        if schema.path not in serializers:
            serializers[schema.path] = AvroSerializer(registry, registered(schema),
                                                      conf={"subject.name.strategy": topic_record_subject_name_strategy})
        return serializers[schema.path](data, SerializationContext(topic, MessageField.VALUE))
    return serialize


def cmd_produce(args: argparse.Namespace) -> None:
    _, by_name = load_schemas(args.schemas)
    if args.reference and not args.registry:
        fail("--reference needs --registry")
    confluent = confluent_serializers(args.registry, args.reference) if args.registry else None
    records = []
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            event_type, key, data = item["type"], item["key"], item["data"]
            extra = [(str(k), str(v)) for k, v in item.get("headers", {}).items()]
            # "id": the ce_id to write instead of a fresh UUIDv7 (CloudEvents allows any
            # non-empty string); "bare": no CloudEvents headers at all, as a plain Kafka
            # producer writes.
            given_id, bare = item.get("id"), bool(item.get("bare", False))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            fail(f"stdin line {n}: expected {{\"type\", \"key\", \"data\"[, \"headers\", \"id\", \"bare\"]}}: {e}")
        schema = by_name.get(event_type)
        if schema is None:
            fail(f"stdin line {n}: no schema named {event_type} under {args.schemas}")
        try:
            data = logical_from_json(schema.parsed, data, schema.named)
            validate(data, schema.parsed, raise_errors=True, strict=True)
            if confluent is None:
                out = io.BytesIO()
                out.write(schema.header)
                fastavro.schemaless_writer(out, schema.parsed, data, strict=True)
                value = out.getvalue()
            else:
                value = confluent(schema, data, args.topic)
        except KafkaException as e:
            fail(f"stdin line {n}: {event_type} through the schema registry: {e}")
        except Exception as e:  # ValidationError, ValueError, TypeError, SerializationError ...
            fail(f"stdin line {n}: data does not fit {event_type}: {e}")
        event_id = str(given_id) if given_id is not None else str(uuid7())
        headers = extra if bare else [
            ("ce_specversion", SPECVERSION),
            ("ce_id", event_id),
            ("ce_type", event_type),
            ("ce_source", args.source),
            ("ce_time", rfc3339_now()),
            ("ce_subject", key),
            ("content-type", CONTENT_TYPE),
            *extra,
        ]
        records.append((key, value, headers))

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        # The Java client's partitioner, as Herald's: a key lands where Herald puts it.
        "partitioner": "murmur2_random",
        "linger.ms": 5,
    })
    results: list[dict | None] = [None] * len(records)
    errors = []

    def delivered(index: int, headers: list):
        def callback(err, msg):
            if err is not None:
                errors.append(f"record {index + 1} (key {msg.key()!r}): {err}")
                return
            # The record's CreateTime, which librdkafka set when it took the record.
            result = {"key": msg.key().decode("utf-8"), "partition": msg.partition(), "offset": msg.offset(), "timestamp": msg.timestamp()[1]}
            if confluent is not None:
                result["schema_id"] = int.from_bytes(msg.value()[1:5], "big")
            for name, value in headers:
                result[name.replace("-", "_")] = value
            results[index] = result
        return callback

    for index, (key, value, headers) in enumerate(records):
        while True:
            try:
                producer.produce(args.topic, value=value, key=key.encode("utf-8"), headers=headers,
                                 on_delivery=delivered(index, headers))
                break
            except BufferError:
                producer.poll(0.1)  # queue full: serve deliveries, then try again
            except KafkaException as e:
                fail(f"producing record {index + 1}: {e}")
    left = producer.flush(args.timeout)
    if left:
        fail(f"{left} records not delivered within {args.timeout}s")
    if errors:
        fail("delivery failed: " + "; ".join(errors))
    for result in results:
        emit(result)


# --- encode ---------------------------------------------------------------------------


def cmd_encode(args: argparse.Namespace) -> None:
    # One JSON line per stdin line: {"datum": hex} of fastavro's schemaless (plain binary)
    # encoding of the line's value with the schema in --schema, logical types as
    # logical_from_json reads them.
    schema = load_schema(Path(args.schema))
    for line in sys.stdin:
        if not line.strip():
            continue
        value = logical_from_json(schema.parsed, json.loads(line), schema.named)
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema.parsed, value)
        emit({"datum": out.getvalue().hex()})


# --- traceparent ----------------------------------------------------------------------


def cmd_traceparent(args: argparse.Namespace) -> None:
    # Imported here: only this check needs OpenTelemetry.
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    propagator = TraceContextTextMapPropagator()
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as e:
            fail(f"stdin line {n}: expected a JSON string: {e}")
        context = trace.get_current_span(propagator.extract({"traceparent": value})).get_span_context()
        if not context.is_valid:
            emit({"input": value, "valid": False})
            continue
        carrier: dict[str, str] = {}
        propagator.inject(carrier, trace.set_span_in_context(trace.NonRecordingSpan(context)))
        emit({"input": value, "valid": True, "trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}",
              "flags": int(context.trace_flags), "written": carrier["traceparent"]})


# --- main -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
        sys.stdin.reconfigure(encoding="utf-8")
    parser = argparse.ArgumentParser(prog="interop.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fingerprint", help="print fastavro's CRC-64-AVRO fingerprint of schema files",
                       description="Prints '<fingerprint>  <file>' per file: the hex of the 8 bytes that "
                                   "follow C3 01 in single-object encoding (little-endian CRC-64-AVRO).")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_fingerprint)

    p = sub.add_parser("canonical", help="print fastavro's parsing canonical form and fingerprint of schema files",
                       description="Prints one JSON line per file: {file, canonical, fingerprint} with "
                                   "fastavro's to_parsing_canonical_form and CRC-64-AVRO (hex of the 8 "
                                   "little-endian bytes), or {file, error} when fastavro refuses it.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_canonical)

    p = sub.add_parser("consume", help="decode N records of a topic, from the beginning",
                       description="Reads COUNT records from the beginning of every partition of TOPIC, "
                                   "finds each writer schema by fingerprint among the .avsc files under "
                                   "SCHEMAS, decodes it with fastavro and prints one JSON line per record.")
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--schemas", required=True, metavar="DIR")
    p.add_argument("--registry", metavar="URL",
                   help="a Confluent-compatible schema registry: records framed 0x00 + schema id "
                        "are decoded with confluent-kafka's AvroDeserializer")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--extensions", action="store_true",
                   help="also print the other headers (CloudEvents extensions such as ce_sequence, "
                        "ce_causationid, traceparent) as an 'extensions' object")
    p.set_defaults(func=cmd_consume)

    p = sub.add_parser("produce", help="publish JSON lines {type, key, data[, headers, id, bare]} from stdin",
                       description="Encodes each stdin line {\"type\": AVRO_FULL_NAME, \"key\": ID, \"data\": {...}"
                                   "[, \"headers\": {NAME: VALUE}, \"id\": CE_ID, \"bare\": true]} "
                                   "with the newest schema of that name under SCHEMAS, publishes it with "
                                   "CloudEvents headers (acks=all, idempotent, murmur2_random), and prints "
                                   "one JSON line per record with where it landed and its headers.")
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--topic", required=True)
    p.add_argument("--schemas", required=True, metavar="DIR")
    p.add_argument("--source", default="/herald/interop/python", help="ce_source (default /herald/interop/python)")
    p.add_argument("--registry", metavar="URL",
                   help="frame values in the Confluent wire format with confluent-kafka's AvroSerializer "
                        "(registering each schema under <topic>-<record name>) instead of single-object "
                        "encoding; each printed line then has the schema_id")
    p.add_argument("--reference", action="append", default=[], metavar="FULL_NAME",
                   help="with --registry: register this named type apart (subject = its full name) and "
                        "the schemas that define it with a Confluent schema reference to it instead "
                        "(repeatable)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for deliveries (default 60)")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("traceparent", help="read traceparent values with OpenTelemetry's W3C propagator",
                       description="Reads one JSON string per stdin line, extracts it as a traceparent with "
                                   "opentelemetry-api's TraceContextTextMapPropagator and prints {input, valid} "
                                   "and, when valid, trace_id, span_id, flags and the traceparent it writes back.")
    p.set_defaults(func=cmd_traceparent)

    p = sub.add_parser("encode", help="encode JSON lines from stdin with fastavro, print each datum as hex",
                       description="Reads one JSON value per stdin line, encodes it with fastavro's "
                                   "schemaless_writer and the schema in FILE (logical types from ISO 8601 "
                                   "strings and decimal strings) and prints {datum: HEX} per line.")
    p.add_argument("--schema", required=True, metavar="FILE")
    p.set_defaults(func=cmd_encode)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
