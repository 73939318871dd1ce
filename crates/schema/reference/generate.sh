#!/usr/bin/env bash
# Regenerates crates/schema/tests/corpus.json: every reader/writer pair of cases.json with
# the verdict of Apache Avro's Java SchemaCompatibility (the reference implementation).
#
#   bash crates/schema/reference/generate.sh
#
# Needs Java 17+ and Maven (fetch.sh downloads org.apache.avro:avro into ~/.cache/herald).
# The Rust test `tests/java_reference.rs` compares Herald's verdicts with the recorded ones,
# so CI needs no Java. A case where Herald intentionally differs carries "herald" (Herald's
# verdict) and "difference" (why) in cases.json.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
classpath="$(bash "$here/fetch.sh")"
out="$here/../tests/corpus.json"
java -cp "$classpath" Compat "$here/cases.json" > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -c '"java" :' "$out") cases, Avro ${AVRO_VERSION:-1.12.2})" >&2
