// Apache Avro's Java `SchemaNormalization` (the reference implementation) as a judge for
// Herald's parsing canonical form and fingerprints.
//
//   java -cp "$(bash fetch.sh)" Canonical FILE.avsc...
//
// Prints one JSON object per file and line: {"file", "canonical", "fingerprint"}, where
// "canonical" is `SchemaNormalization.toParsingForm` and "fingerprint" the hex of
// `parsingFingerprint64` as its 8 little-endian bytes (the order single-object encoding
// writes after C3 01), or {"file", "error"} when Java does not parse the file.
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.File;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;

public final class Canonical {
  public static void main(String[] args) throws Exception {
    ObjectMapper json = new ObjectMapper();
    for (String file : args) {
      ObjectNode out = json.createObjectNode();
      out.put("file", file);
      try {
        Schema schema = new Schema.Parser().parse(new File(file));
        out.put("canonical", SchemaNormalization.toParsingForm(schema));
        byte[] bytes = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN)
            .putLong(SchemaNormalization.parsingFingerprint64(schema)).array();
        StringBuilder hex = new StringBuilder();
        for (byte b : bytes) {
          hex.append(String.format("%02x", b));
        }
        out.put("fingerprint", hex.toString());
      } catch (Exception e) {
        out.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
      }
      System.out.println(json.writeValueAsString(out));
    }
  }
}
