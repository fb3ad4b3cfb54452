//! The policy file as a YAML tree that keeps the position of every key and value. It is read
//! before any type is imposed, so `shape` can report every mistake at once, in the policy's
//! words, where it is written.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Visitor},
};
use serde_saphyr::{Options, Spanned, options::DuplicateKeyPolicy};

/// One YAML node and where it is written.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub line: u64,
    pub column: u64,
    /// A scalar as the file spells it (`1e3`, `080`, `"104"`), for messages; empty if unknown.
    pub raw: String,
}

impl Node {
    /// What this node is, in the words an error message uses, as the file wrote it.
    pub fn describe(&self) -> String {
        if self.raw.is_empty() {
            self.value.describe()
        } else {
            format!("`{}`", self.raw)
        }
    }
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    /// Any whole number YAML can write; out-of-range numbers are the checker's to name.
    Whole(i128),
    Fraction(f64),
    Text(String),
    List(Vec<Node>),
    /// Entries in file order, duplicates kept so the checker can point at both.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What this value is, in the words an error message uses ("a list", "`abc`"); control
    /// characters escaped, so a message stays one line.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "nothing".into(),
            Value::List(_) => "a list".into(),
            Value::Map(_) => "a block of keys".into(),
            scalar => format!(
                "`{}`",
                scalar.scalar_text().unwrap_or_default().escape_debug()
            ),
        }
    }

    /// A scalar as text (numbers and booleans as YAML read them).
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Bool(b) => Some(b.to_string()),
            Value::Whole(n) => Some(n.to_string()),
            Value::Fraction(f) => Some(f.to_string()),
            Value::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
}

/// The options every policy read uses: duplicates are passed through so the checker can name
/// both places; everything else is serde-saphyr's guarded default (alias and size budgets).
pub fn options() -> Options {
    let mut options = Options::default();
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options
}

/// Reads YAML text into a tree; the error is the YAML syntax error with its position.
pub fn read(text: &str) -> Result<Node, serde_saphyr::Error> {
    let mut root = serde_saphyr::from_str_with_options::<Node>(text, options())?;
    let lines: Vec<&str> = text.lines().collect();
    spell(&mut root, &lines);
    Ok(root)
}

/// Fills in each plain or quoted one-line scalar's spelling from the source.
fn spell(node: &mut Node, lines: &[&str]) {
    match &mut node.value {
        Value::List(items) => items.iter_mut().for_each(|item| spell(item, lines)),
        Value::Map(entries) => entries
            .iter_mut()
            .for_each(|(_, value)| spell(value, lines)),
        Value::Null => {}
        _ => {
            let Some(line) = lines.get(node.line.saturating_sub(1) as usize) else {
                return;
            };
            let rest: String = line
                .chars()
                .skip(node.column.saturating_sub(1) as usize)
                .collect();
            node.raw = match rest.chars().next() {
                Some(quote @ ('"' | '\'')) => match rest[1..].find(quote) {
                    Some(end) => rest[..end + 2].to_string(),
                    None => String::new(),
                },
                // Block scalars span lines: described by value.
                Some('|' | '>') | None => String::new(),
                Some(_) => {
                    let end = rest
                        .find(" #")
                        .into_iter()
                        .chain(rest.find([',', ']', '}']))
                        .min()
                        .unwrap_or(rest.len());
                    rest[..end].trim_end().to_string()
                }
            };
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            value: spanned.value,
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            raw: String::new(),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Whole(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Whole(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Whole(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(Value::Whole(i128::try_from(v).unwrap_or(i128::MAX)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Fraction(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Text(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Text(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_types_and_duplicates() {
        let tree =
            read("a: 1\nb:\n  - x\n  - 2.5\na: [true, ~]\nc: 99999999999999999999\n").unwrap();
        let Value::Map(entries) = &tree.value else {
            panic!("{tree:?}")
        };
        let keys: Vec<_> = entries
            .iter()
            .map(|(k, _)| (k.value.scalar_text().unwrap(), k.line, k.column))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("a".into(), 1, 1),
                ("b".into(), 2, 1),
                ("a".into(), 5, 1),
                ("c".into(), 6, 1)
            ]
        );
        let Value::List(b) = &entries[1].1.value else {
            panic!()
        };
        assert!(matches!(&b[0].value, Value::Text(t) if t == "x"));
        assert_eq!((b[1].line, b[1].column), (4, 5));
        assert!(matches!(b[1].value, Value::Fraction(_)));
        assert_eq!(b[1].raw, "2.5");
        // A number too big for any key is still a number, for the checker to refuse in words.
        assert!(
            matches!(entries[3].1.value, Value::Whole(_) | Value::Fraction(_)),
            "{:?}",
            entries[3].1
        );
    }
}
