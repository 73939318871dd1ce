// The reaction step of Herald's choreography benchmark, as a Kafka Streams application:
// consume one event, update the state of its key, emit one event. Run by `run` (next to
// this file), driven by `cargo run --release -p herald-bench --bin react`.
//
// Equivalent work to Herald's participant (crates/bench/src/bin/react/step.rs):
// - input: Herald's `bench.react.Ping {id: string, n: long}` in Avro single-object
//   encoding, keyed by `id`, decoded with Avro's BinaryMessageDecoder (checks the
//   fingerprint, as Herald does);
// - state: `bench.react.Seen {n: int}` Avro-encoded per key in an in-memory store with a
//   changelog (as Herald: memory plus a compacted changelog), caching on so a key changed
//   several times between commits is written once (as Herald: once per transaction);
// - output: `bench.react.Pong {id, n}` in single-object encoding, same key, the input's
//   headers forwarded (Herald writes its CloudEvents headers).
//
// Usage: ReactStep BOOTSTRAP APPLICATION_ID INPUT OUTPUT COMMIT_INTERVAL_MS GUARANTEE THREADS
// Runs until SIGTERM, then closes (commits) and exits.
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

public final class ReactStep {
  static final Schema PING = new Schema.Parser().parse(
      "{\"type\":\"record\",\"name\":\"Ping\",\"namespace\":\"bench.react\",\"fields\":[{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"n\",\"type\":\"long\"}]}");
  static final Schema PONG = new Schema.Parser().parse(
      "{\"type\":\"record\",\"name\":\"Pong\",\"namespace\":\"bench.react\",\"fields\":[{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"n\",\"type\":\"int\"}]}");
  static final Schema SEEN = new Schema.Parser().parse(
      "{\"type\":\"record\",\"name\":\"Seen\",\"namespace\":\"bench.react\",\"fields\":[{\"name\":\"n\",\"type\":\"int\"}]}");
  static final String STORE = "seen";

  static final class Step implements Processor<String, byte[], String, byte[]> {
    private final BinaryMessageDecoder<GenericRecord> pings = new BinaryMessageDecoder<>(GenericData.get(), PING);
    private final BinaryMessageEncoder<GenericRecord> pongs = new BinaryMessageEncoder<>(GenericData.get(), PONG);
    private final GenericDatumReader<GenericRecord> seenReader = new GenericDatumReader<>(SEEN);
    private final GenericDatumWriter<GenericRecord> seenWriter = new GenericDatumWriter<>(SEEN);
    private final ByteArrayOutputStream buffer = new ByteArrayOutputStream(64);
    private BinaryDecoder decoder;
    private BinaryEncoder encoder;
    private ProcessorContext<String, byte[]> context;
    private KeyValueStore<String, byte[]> store;

    @Override
    public void init(ProcessorContext<String, byte[]> context) {
      this.context = context;
      this.store = context.getStateStore(STORE);
    }

    @Override
    public void process(Record<String, byte[]> record) {
      try {
        GenericRecord ping = pings.decode(record.value());
        String id = ping.get("id").toString();
        byte[] old = store.get(record.key());
        int n = 0;
        if (old != null) {
          decoder = DecoderFactory.get().binaryDecoder(old, decoder);
          n = (Integer) seenReader.read(null, decoder).get("n");
        }
        n += 1;
        GenericRecord seen = new GenericData.Record(SEEN);
        seen.put("n", n);
        buffer.reset();
        encoder = EncoderFactory.get().binaryEncoder(buffer, encoder);
        seenWriter.write(seen, encoder);
        encoder.flush();
        store.put(record.key(), buffer.toByteArray());
        GenericRecord pong = new GenericData.Record(PONG);
        pong.put("id", id);
        pong.put("n", n);
        ByteBuffer out = pongs.encode(pong);
        byte[] bytes = new byte[out.remaining()];
        out.get(bytes);
        context.forward(record.withValue(bytes));
      } catch (java.io.IOException e) {
        throw new RuntimeException(e);
      }
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 7) {
      System.err.println("usage: ReactStep BOOTSTRAP APPLICATION_ID INPUT OUTPUT COMMIT_INTERVAL_MS GUARANTEE THREADS");
      System.exit(2);
    }
    Properties props = new Properties();
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[1]);
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.parseLong(args[4]));
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, args[5]);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args[6]));
    props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
    props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
    props.put(StreamsConfig.STATE_DIR_CONFIG, System.getProperty("java.io.tmpdir") + "/herald-kstreams-" + args[1]);
    props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
    props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);

    Topology topology = new Topology();
    topology.addSource("in", Serdes.String().deserializer(), Serdes.ByteArray().deserializer(), args[2]);
    topology.addProcessor("step", Step::new, "in");
    topology.addStateStore(
        Stores.keyValueStoreBuilder(Stores.inMemoryKeyValueStore(STORE), Serdes.String(), Serdes.ByteArray()).withCachingEnabled(),
        "step");
    topology.addSink("out", args[3], Serdes.String().serializer(), Serdes.ByteArray().serializer(), "step");

    KafkaStreams streams = new KafkaStreams(topology, props);
    CountDownLatch done = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close(Duration.ofSeconds(30));
      done.countDown();
    }));
    streams.setUncaughtExceptionHandler(e -> {
      e.printStackTrace();
      return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });
    streams.start();
    System.out.println("started");
    done.await();
  }
}
