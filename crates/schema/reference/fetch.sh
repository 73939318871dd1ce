#!/usr/bin/env bash
# Fetches Apache Avro's Java library (the reference implementation) from Maven Central into
# a cache outside the repository and compiles the Java programs beside it against it.
#
#   bash crates/schema/reference/fetch.sh      # prints the classpath to use with `java -cp`
#
# Needs Java 17+ and Maven. The cache is `${HERALD_CACHE:-~/.cache/herald}/avro-java/<version>`.
set -euo pipefail

AVRO_VERSION="${AVRO_VERSION:-1.12.2}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${HERALD_CACHE:-$HOME/.cache/herald}/avro-java/$AVRO_VERSION"
mkdir -p "$cache/lib" "$cache/classes"

if [ ! -f "$cache/lib/avro-$AVRO_VERSION.jar" ]; then
  cat > "$cache/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>herald</groupId>
  <artifactId>avro-reference</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.avro</groupId>
      <artifactId>avro</artifactId>
      <version>$AVRO_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-nop</artifactId>
      <version>2.0.17</version>
    </dependency>
  </dependencies>
</project>
POM
  (cd "$cache" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=lib >&2)
fi

# Compat.java (SchemaCompatibility), Canonical.java (SchemaNormalization) and
# SingleObject.java (BinaryMessageEncoder/Decoder, SchemaStore).
for program in Compat Canonical SingleObject; do
  if [ ! -f "$cache/classes/$program.class" ] || [ "$here/$program.java" -nt "$cache/classes/$program.class" ]; then
    javac -d "$cache/classes" -cp "$cache/lib/*" "$here/$program.java" >&2
  fi
done

echo "$cache/classes:$cache/lib/*"
