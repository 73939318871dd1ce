// Apache Avro's Java `SchemaCompatibility` (the reference implementation) as a judge for
// Herald's corpus of reader/writer pairs.
//
//   java -cp "$(bash fetch.sh)" Compat CASES.json > OUT.json
//
// Reads a JSON array of cases `{"name", "rule", "reader", "writer", ...}` (schemas as JSON
// values), parses each schema with its own `Schema.Parser`, and writes the same array with
// `"java"` set to COMPATIBLE or INCOMPATIBLE (or PARSE_ERROR) and `"java_detail"` listing
// Java's incompatibilities (type, JSON-pointer location, message). Other keys pass through.
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.File;
import org.apache.avro.Schema;
import org.apache.avro.SchemaCompatibility;

public final class Compat {
  public static void main(String[] args) throws Exception {
    if (args.length != 1) {
      System.err.println("usage: Compat CASES.json");
      System.exit(2);
    }
    ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
    JsonNode cases = json.readTree(new File(args[0]));
    for (JsonNode node : cases) {
      ObjectNode c = (ObjectNode) node;
      ArrayNode detail = c.putArray("java_detail");
      try {
        Schema reader = new Schema.Parser().parse(c.get("reader").toString());
        Schema writer = new Schema.Parser().parse(c.get("writer").toString());
        SchemaCompatibility.SchemaPairCompatibility result =
            SchemaCompatibility.checkReaderWriterCompatibility(reader, writer);
        c.put("java", result.getType().toString());
        for (SchemaCompatibility.Incompatibility i : result.getResult().getIncompatibilities()) {
          detail.add(i.getType() + " at " + i.getLocation() + ": " + i.getMessage());
        }
      } catch (Exception e) {
        c.put("java", "PARSE_ERROR");
        detail.add(e.getClass().getSimpleName() + ": " + e.getMessage());
      }
    }
    System.out.println(json.writeValueAsString(cases));
  }
}
