//! [`Fingerprint`]: the CRC-64-AVRO of a schema's parsing canonical form.

use apache_avro::Schema;

use super::canonical::{self, CanonicalError};

/// The CRC-64-AVRO (Rabin) fingerprint of a schema's parsing canonical form, as the Avro
/// specification defines both (see [`canonical`]), so it equals Java's
/// `SchemaNormalization.parsingFingerprint64` and fastavro's for every schema.
///
/// Stored as the 8 bytes in the order they appear after `C3 01` in Avro's single-object
/// encoding (little-endian), which is also the order `fastavro` and Java print.
///
/// ```
/// use herald_bus::schema::Fingerprint;
/// let fp = Fingerprint::of_json(&serde_json::json!({"type": "long", "logicalType": "timestamp-millis"}))?;
/// assert_eq!(fp, Fingerprint::of_json(&serde_json::json!("long"))?);
/// assert_eq!(fp.to_string(), "b71df49344e154d0");
/// # Ok::<(), herald_bus::schema::canonical::CanonicalError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 8]);

impl Fingerprint {
    /// The fingerprint of the schema `json` (the text of an `.avsc`, parsed).
    ///
    /// This is exact: every attribute the canonical form needs is read from the JSON as
    /// written. Prefer it to [`Fingerprint::of`] whenever the schema's text is at hand.
    pub fn of_json(json: &serde_json::Value) -> Result<Self, CanonicalError> {
        Ok(Self::of_canonical_form(&canonical::parsing_canonical_form(json)?))
    }

    /// The CRC-64-AVRO of an already canonical form.
    pub fn of_canonical_form(form: &str) -> Self {
        Fingerprint(crc64_avro(form.as_bytes()).to_le_bytes())
    }

    /// The fingerprint of a schema parsed by apache-avro, from the JSON apache-avro writes
    /// for it.
    ///
    /// apache-avro 0.21's model keeps everything the canonical form needs except in two
    /// cases, where it rewrites the schema: `uuid` on `fixed(16)` becomes a `uuid` string,
    /// and a `duration` fixed loses its name. For those (and to be safe, always) use
    /// [`Fingerprint::of_json`] on the schema's text, as [`super::SchemaSet`] does.
    ///
    /// ```
    /// use herald_bus::schema::Fingerprint;
    /// let schema = apache_avro::Schema::parse_str(r#""string""#).unwrap();
    /// assert_eq!(Fingerprint::of(&schema).to_string(), "c70345637248018f");
    /// ```
    pub fn of(schema: &Schema) -> Self {
        serde_json::to_value(schema)
            .ok()
            .and_then(|json| canonical::parsing_canonical_form_of_resolved(&json).ok())
            .map(|form| Self::of_canonical_form(&form))
            // apache-avro writes valid schemas; its own (logical-type-keeping) form is
            // only a last resort that no test has reached.
            .unwrap_or_else(|| Self::of_canonical_form(&schema.canonical_form()))
    }
}

/// CRC-64-AVRO, the specification's "Rabin" fingerprint ("Schema Fingerprints").
fn crc64_avro(data: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    const TABLE: [u64; 256] = {
        let mut table = [0u64; 256];
        let mut i = 0;
        while i < 256 {
            let mut fp = i as u64;
            let mut bit = 0;
            while bit < 8 {
                fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
                bit += 1;
            }
            table[i] = fp;
            i += 1;
        }
        table
    };
    data.iter().fold(EMPTY, |fp, &b| (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize])
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_avro_spec_vector() {
        // From the Avro specification's test vectors (Java SchemaNormalization):
        // "int" -> 0x7275d51a3f395c8f as a 64-bit value, little-endian on the wire.
        let fp = Fingerprint::of_json(&serde_json::json!("int")).expect("int");
        assert_eq!(u64::from_le_bytes(fp.0), 0x7275d51a3f395c8f_u64);
        assert_eq!(Fingerprint::of(&Schema::parse_str(r#""int""#).expect("valid")), fp);
    }

    #[test]
    fn a_logical_type_has_its_primitives_fingerprint() {
        // Java's SchemaNormalization.parsingFingerprint64 and fastavro agree (see
        // herald-schema's canonical_reference test); apache-avro 0.21 alone differs.
        let text = r#"{"type": "long", "logicalType": "timestamp-millis"}"#;
        let long = Fingerprint::of_json(&serde_json::json!("long")).expect("long");
        let json: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(Fingerprint::of_json(&json).expect("valid"), long);
        assert_eq!(Fingerprint::of(&Schema::parse_str(text).expect("valid")), long);
        assert_eq!(long.to_string(), "b71df49344e154d0");
    }
}
