//! The choreography as a Mermaid flowchart.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{Declaration, DEADLINE};
use crate::input::KeyKind;

/// Draws the choreography as a Mermaid flowchart: participants as rounded boxes, topics as
/// cylinders, an arrow per emitted type (dotted for compensations, thick for terminal
/// events), an arrow per subscription (labelled with the state key when the inputs are
/// repartitioned), and a loop for deadlines.
///
/// ```
/// let mermaid = herald_choreography::declaration::diagram(&[]);
/// assert!(mermaid.starts_with("flowchart LR"));
/// ```
pub fn diagram(declarations: &[Declaration]) -> String {
    let mut out = String::from("flowchart LR\n");
    let topics: BTreeSet<&str> = declarations.iter().flat_map(|d| d.consumes.iter().map(|c| c.topic.as_str()).chain(d.emits.iter().map(|o| o.topic()))).collect();
    for d in declarations {
        let _ = writeln!(out, "    {}([\"{}\"])", node("p", &d.name), d.name);
    }
    for topic in &topics {
        let _ = writeln!(out, "    {}[(\"{}\")]", node("t", topic), topic);
    }
    for d in declarations {
        let p = node("p", &d.name);
        for c in &d.consumes {
            let t = node("t", &c.topic);
            match &c.key {
                KeyKind::Subject => {
                    let _ = writeln!(out, "    {t} --> {p}");
                }
                KeyKind::Correlation => {
                    let _ = writeln!(out, "    {t} -- \"repartition by correlation id\" --> {p}");
                }
                KeyKind::By(key) => {
                    let _ = writeln!(out, "    {t} -- \"repartition by {key}\" --> {p}");
                }
            }
        }
        if d.deadlines {
            let timed: Vec<&str> = d.emits.iter().filter(|o| o.causes().iter().any(|c| c == DEADLINE)).map(|o| short(o.type_name())).collect();
            let _ = writeln!(out, "    {p} -. \"deadline{}\" .-> {p}", if timed.is_empty() { String::new() } else { format!(": {}", timed.join(", ")) });
        }
        for o in &d.emits {
            let t = node("t", o.topic());
            let label = short(o.type_name());
            if let Some(step) = o.compensated_step() {
                let _ = writeln!(out, "    {p} -. \"{label} (undoes {})\" .-> {t}", short(step));
            } else if o.is_terminal() {
                let _ = writeln!(out, "    {p} == \"{label}\" ==> {t}");
            } else {
                let _ = writeln!(out, "    {p} -- \"{label}\" --> {t}");
            }
        }
    }
    out
}

/// A Mermaid node id: a prefix and the name with every other character as `_`.
fn node(prefix: &str, name: &str) -> String {
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("{prefix}_{clean}")
}

/// The type's simple name (after the last dot).
fn short(type_name: &str) -> &str {
    type_name.rsplit('.').next().unwrap_or(type_name)
}
