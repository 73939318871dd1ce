//! Where in a JSON value a mapping error happened.
//!
//! A path is written the way you would reach the value in JavaScript or `jq`, relative to
//! the event: record fields joined with `.`, array elements as `[index]`, map entries as
//! `["key"]` (the key JSON-quoted). `lines[0].quantity` is the `quantity` field of the
//! first element of the `lines` array; `attributes["colour"]` is the `colour` entry of the
//! `attributes` map. Union branches add nothing to the path. The event itself is `(root)`.

use std::fmt;

/// One step from a value into one of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A record field, by name.
    Field(String),
    /// An array element, by index.
    Index(usize),
    /// A map entry, by key.
    Key(String),
}

/// A location inside an event, for example `lines[0].quantity` (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(Vec<Segment>);

impl Path {
    /// The event itself.
    pub fn root() -> Self {
        Path(Vec::new())
    }

    /// True for the event itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The steps of this path, outermost first.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Steps into a part.
    pub(crate) fn push(&mut self, segment: Segment) {
        self.0.push(segment);
    }

    /// Steps back out of the innermost part.
    pub(crate) fn pop(&mut self) {
        self.0.pop();
    }
}

impl From<Vec<Segment>> for Path {
    fn from(segments: Vec<Segment>) -> Self {
        Path(segments)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(root)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Field(name) if i == 0 => f.write_str(name)?,
                Segment::Field(name) => write!(f, ".{name}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => write!(f, "[{}]", serde_json::Value::String(key.clone()))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_javascript() {
        let path = Path::from(vec![
            Segment::Field("lines".into()),
            Segment::Index(0),
            Segment::Field("quantity".into()),
        ]);
        assert_eq!(path.to_string(), "lines[0].quantity");
        let path = Path::from(vec![Segment::Field("attributes".into()), Segment::Key("a \"b\"".into()), Segment::Index(2)]);
        assert_eq!(path.to_string(), r#"attributes["a \"b\""][2]"#);
        assert_eq!(Path::root().to_string(), "(root)");
    }
}
