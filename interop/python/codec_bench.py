#!/usr/bin/env python3
"""fastavro encode/decode of the codec benchmark's OrderPlaced, for scale.

The Rust benchmark (crates/bench/benches/codec.rs) times Herald, apache-avro and
serde_avro_fast on one OrderPlaced: three order lines and a note, a 190-byte datum
(200 bytes with the single-object frame). This script times fastavro's
``schemaless_writer`` / ``schemaless_reader`` (the compiled Cython module) on the same
event, built here exactly as ``herald_bench::workload::order(0, note_len)`` builds it,
with the note length chosen the same way (framed payload closest to 200 bytes).

    PY=$(scripts/python-env python)
    $PY interop/python/codec_bench.py [--iterations N] [--repeats R] [--expect-hex HEX]

The Rust bench prints the datum's hex on stderr; ``--expect-hex`` checks that this
script encodes exactly those bytes. Before timing, the script checks that decoding gives
back the event and consumes every byte.

Prints one JSON object: per operation the median, min and max ns per op over R repeats
of N operations each, and the datum's size and hex.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fastavro
from fastavro import parse_schema, schemaless_reader, schemaless_writer

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "schemas" / "shop" / "orders" / "OrderPlaced" / "v2.avsc"
# herald_shop::orders::EXAMPLE_TIME_MILLIS: the workload's orders are placed within a day of it.
EXAMPLE_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=1_764_583_200_000)
FRAME_LEN = 10  # C3 01 + 8-byte fingerprint
TARGET = 200
NOTE = "leave the parcel at the back door; ring twice, the bell is quiet " * 4


def order(i: int, note_len: int) -> dict:
    """herald_bench::workload::order, field for field."""
    lines = [
        {
            "sku": f"SKU-{(i * 3 + l) % 100_000_000:08}",
            "quantity": 1 + (i + l) % 3,
            "unit_price_cents": 100_000 + (i * 7 + l) % 16_000,
        }
        for l in range(3)
    ]
    return {
        "order_id": f"order-{i % 1_000_000_000_000:012}",
        "customer_id": f"customer-{i % 1_000_000:06}",
        "total_cents": sum(l["unit_price_cents"] * l["quantity"] for l in lines),
        "currency": "EUR",
        "lines": lines,
        "note": NOTE[:note_len],
        "placed_at": EXAMPLE_TIME + timedelta(milliseconds=i % 86_400_000),
    }


def encode(schema, record: dict) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, record)
    return out.getvalue()


def per_op_ns(fn, iterations: int, repeats: int) -> dict:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(iterations):
            fn()
        samples.append((time.perf_counter_ns() - start) / iterations)
    return {
        "median_ns": round(statistics.median(samples), 1),
        "min_ns": round(min(samples), 1),
        "max_ns": round(max(samples), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=100_000, help="operations per repeat")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats; the median is reported")
    parser.add_argument("--expect-hex", help="the datum the Rust bench printed; fail if ours differs")
    args = parser.parse_args()

    schema = parse_schema(json.loads(SCHEMA.read_text()))
    # The first note length (0..=256) whose framed payload is closest to 200 bytes, as
    # Workload::new picks it.
    note_len = min(range(257), key=lambda n: abs(FRAME_LEN + len(encode(schema, order(0, n))) - TARGET))
    record = order(0, note_len)
    datum = encode(schema, record)

    if args.expect_hex is not None and datum.hex() != args.expect_hex.strip().lower():
        sys.exit(f"codec_bench.py: error: fastavro wrote\n  {datum.hex()}\nexpected\n  {args.expect_hex}")
    stream = io.BytesIO(datum)
    if schemaless_reader(stream, schema, None) != record or stream.tell() != len(datum):
        sys.exit("codec_bench.py: error: decoding does not give back the event")

    result = {
        "fastavro": fastavro.__version__,
        "python": platform.python_version(),
        "compiled": type(schemaless_reader).__name__ == "cython_function_or_method"
        or "cyfunction" in repr(schemaless_reader),
        "datum_len": len(datum),
        "datum_hex": datum.hex(),
        "iterations": args.iterations,
        "repeats": args.repeats,
        "encode": per_op_ns(lambda: encode(schema, record), args.iterations, args.repeats),
        "decode": per_op_ns(lambda: schemaless_reader(io.BytesIO(datum), schema, None), args.iterations, args.repeats),
    }
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
