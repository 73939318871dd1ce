// Apache Avro's Java single-object encoding (`BinaryMessageEncoder`/`BinaryMessageDecoder`,
// writer schemas found by `SchemaStore.Cache`, i.e. by `parsingFingerprint64`), to check
// that Herald's events and Java's cross over with logical types intact.
//
//   java -cp "$(bash fetch.sh)" SingleObject decode SCHEMAS_DIR PAYLOAD...
//     One JSON line per payload file: {"file", "type", "fingerprint", "data"}, the writer
//     schema found by fingerprint among every .avsc under SCHEMAS_DIR and the record it
//     decodes to (timestamp-millis as an ISO 8601 instant with milliseconds, read through
//     Java's TimestampMillisConversion); {"file", "error"} when Java cannot.
//   java -cp "$(bash fetch.sh)" SingleObject encode SCHEMA.avsc DATA.json OUT.bin ...
//     Reads DATA.json (Avro's JSON encoding) with SCHEMA and writes it to OUT.bin in
//     single-object encoding; repeat the triple for more.
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.apache.avro.Schema;
import org.apache.avro.data.TimeConversions;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericEnumSymbol;
import org.apache.avro.generic.GenericFixed;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.avro.message.SchemaStore;

public final class SingleObject {
  private static final JsonNodeFactory NODES = JsonNodeFactory.instance;
  private static final DateTimeFormatter MILLIS =
      DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);

  public static void main(String[] args) throws Exception {
    GenericData model = new GenericData();
    model.addLogicalTypeConversion(new TimeConversions.TimestampMillisConversion());
    if (args.length >= 2 && args[0].equals("decode")) {
      decode(model, Path.of(args[1]), List.of(args).subList(2, args.length));
    } else if (args.length >= 4 && args[0].equals("encode") && (args.length - 1) % 3 == 0) {
      for (int i = 1; i < args.length; i += 3) {
        Schema schema = new Schema.Parser().parse(new File(args[i]));
        GenericDatumReader<Object> reader = new GenericDatumReader<>(schema, schema, model);
        Object datum = reader.read(null, DecoderFactory.get().jsonDecoder(schema, Files.readString(Path.of(args[i + 1]))));
        ByteBuffer bytes = new BinaryMessageEncoder<Object>(model, schema).encode(datum);
        byte[] out = new byte[bytes.remaining()];
        bytes.get(out);
        Files.write(Path.of(args[i + 2]), out);
      }
    } else {
      System.err.println("usage: SingleObject decode SCHEMAS_DIR PAYLOAD... | encode (SCHEMA DATA OUT)...");
      System.exit(2);
    }
  }

  private static void decode(GenericData model, Path schemas, List<String> payloads) throws IOException {
    SchemaStore.Cache store = new SchemaStore.Cache();
    try (Stream<Path> files = Files.walk(schemas)) {
      for (Path file : (Iterable<Path>) files.filter(p -> p.toString().endsWith(".avsc")).sorted()::iterator) {
        store.addSchema(new Schema.Parser().parse(file.toFile())); // each file stands alone
      }
    }
    ObjectMapper json = new ObjectMapper();
    for (String file : payloads) {
      ObjectNode out = json.createObjectNode();
      out.put("file", file);
      try {
        byte[] payload = Files.readAllBytes(Path.of(file));
        long fingerprint = ByteBuffer.wrap(payload, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        Schema writer = store.findByFingerprint(fingerprint);
        if (writer == null) {
          throw new IllegalStateException("no schema has fingerprint " + hex(payload, 2, 10));
        }
        // Java's own single-object reader, which looks the writer up by fingerprint again.
        Object datum = new BinaryMessageDecoder<Object>(model, writer, store).decode(payload);
        out.put("type", writer.getFullName());
        out.put("fingerprint", hex(payload, 2, 10));
        out.set("data", toJson(datum));
      } catch (Exception e) {
        out.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
      }
      System.out.println(json.writeValueAsString(out));
    }
  }

  private static String hex(byte[] bytes, int from, int to) {
    StringBuilder s = new StringBuilder();
    for (int i = from; i < to; i++) {
      s.append(String.format("%02x", bytes[i]));
    }
    return s.toString();
  }

  private static JsonNode toJson(Object value) {
    if (value == null) {
      return NODES.nullNode();
    } else if (value instanceof GenericRecord record) {
      ObjectNode node = NODES.objectNode();
      for (Schema.Field field : record.getSchema().getFields()) {
        node.set(field.name(), toJson(record.get(field.pos())));
      }
      return node;
    } else if (value instanceof Instant instant) {
      return NODES.textNode(MILLIS.format(instant));
    } else if (value instanceof CharSequence || value instanceof GenericEnumSymbol<?>) {
      return NODES.textNode(value.toString());
    } else if (value instanceof Integer i) {
      return NODES.numberNode(i);
    } else if (value instanceof Long l) {
      return NODES.numberNode(l);
    } else if (value instanceof Boolean b) {
      return NODES.booleanNode(b);
    } else if (value instanceof Double d) {
      return NODES.numberNode(d);
    } else if (value instanceof Float f) {
      return NODES.numberNode(f);
    } else if (value instanceof List<?> list) {
      ArrayNode node = NODES.arrayNode();
      list.forEach(item -> node.add(toJson(item)));
      return node;
    } else if (value instanceof Map<?, ?> map) {
      ObjectNode node = NODES.objectNode();
      map.forEach((k, v) -> node.set(k.toString(), toJson(v)));
      return node;
    } else if (value instanceof GenericFixed fixed) {
      return NODES.textNode(hex(fixed.bytes(), 0, fixed.bytes().length));
    } else if (value instanceof ByteBuffer buffer) {
      byte[] bytes = new byte[buffer.remaining()];
      buffer.duplicate().get(bytes);
      return NODES.textNode(hex(bytes, 0, bytes.length));
    }
    throw new IllegalArgumentException("unexpected " + value.getClass().getName());
  }
}
