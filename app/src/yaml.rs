//! A YAML tree that remembers where every node starts.
//!
//! serde_yaml forgets positions once a value is built, and a role-file
//! diagnostic without a line and column is not much use, so the role-file
//! parser reads the event stream of `yaml-rust2` into this small tree instead.
//! Scalars are resolved the way PyYAML (and so K3) resolved them: YAML 1.1
//! booleans (`yes`, `False`, ...), integers, floats and nulls.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    fn from_marker(m: &Marker) -> Pos {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: m.line() as u32,
            column: m.col() as u32 + 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Scalar {
        text: String,
        quoted: bool,
        pos: Pos,
    },
    Seq {
        items: Vec<Node>,
        pos: Pos,
    },
    Map {
        entries: Vec<(Node, Node)>,
        pos: Pos,
    },
}

/// A scalar after YAML 1.1 resolution.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar { pos, .. } | Node::Seq { pos, .. } | Node::Map { pos, .. } => *pos,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => match self.scalar() {
                Some(Scalar::Null) => "null",
                Some(Scalar::Bool(_)) => "boolean",
                Some(Scalar::Int(_)) => "integer",
                Some(Scalar::Float(_)) => "number",
                _ => "string",
            },
            Node::Seq { .. } => "list",
            Node::Map { .. } => "mapping",
        }
    }

    pub fn scalar(&self) -> Option<Scalar<'_>> {
        match self {
            Node::Scalar {
                text, quoted: true, ..
            } => Some(Scalar::Str(text)),
            Node::Scalar {
                text,
                quoted: false,
                ..
            } => Some(resolve_plain(text)),
            _ => None,
        }
    }

    /// The scalar's text as written (without quotes), for messages and strings.
    pub fn text(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.scalar(), Some(Scalar::Null))
    }

    /// A short rendering of the node for error messages: scalars quoted as
    /// written, collections by kind.
    pub fn describe(&self) -> String {
        match self {
            Node::Scalar { text, .. } => {
                let mut t: String = text.chars().take(60).collect();
                if text.chars().count() > 60 {
                    t.push('…');
                }
                format!("{:?}", t)
            }
            Node::Seq { .. } => "a list".into(),
            Node::Map { .. } => "a mapping".into(),
        }
    }

    /// Converts to a JSON value with resolved scalar types, keeping key order.
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Scalar { .. } => match self.scalar().expect("scalar") {
                Scalar::Null => Value::Null,
                Scalar::Bool(b) => Value::Bool(b),
                Scalar::Int(i) => Value::from(i),
                Scalar::Float(f) => serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                Scalar::Str(s) => Value::String(s.to_string()),
            },
            Node::Seq { items, .. } => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Map { entries, .. } => {
                let mut m = serde_json::Map::new();
                for (k, v) in entries {
                    let key = match k {
                        Node::Scalar { text, .. } => text.clone(),
                        other => other.describe(),
                    };
                    m.insert(key, v.to_value());
                }
                Value::Object(m)
            }
        }
    }
}

fn resolve_plain(text: &str) -> Scalar<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Scalar::Bool(true)
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Scalar::Bool(false)
        }
        _ => {}
    }
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        && digits.as_bytes()[0] != b'_'
    {
        if let Ok(i) = text.replace('_', "").parse::<i64>() {
            return Scalar::Int(i);
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Scalar::Int(i);
        }
    }
    let looks_float = digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-' | b'_'));
    if looks_float {
        if let Ok(f) = text.replace('_', "").parse::<f64>() {
            return Scalar::Float(f);
        }
    }
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" => Scalar::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Scalar::Float(f64::NAN),
        _ => Scalar::Str(text),
    }
}

/// A YAML syntax error, positioned.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// One parsed document with the position of its first event.
#[derive(Debug)]
pub struct Document {
    pub root: Option<Node>,
    pub pos: Pos,
}

enum Frame {
    Seq {
        items: Vec<Node>,
        pos: Pos,
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        pos: Pos,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    docs: Vec<Document>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    doc_pos: Pos,
    error: Option<SyntaxError>,
}

impl Builder {
    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(&mark);
        match ev {
            Event::DocumentStart => {
                self.root = None;
                self.doc_pos = pos;
            }
            Event::DocumentEnd => {
                let root = self.root.take();
                self.docs.push(Document {
                    root,
                    pos: self.doc_pos,
                });
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.complete(Node::Scalar { text, quoted, pos }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                items: vec![],
                pos,
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                entries: vec![],
                key: None,
                pos,
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                // Block collections are marked where the parser noticed them,
                // which can be past their first item; report the earlier one.
                Some(Frame::Seq { items, pos, anchor }) => {
                    let pos = items
                        .first()
                        .map(Node::pos)
                        .filter(|p| *p < pos)
                        .unwrap_or(pos);
                    self.complete(Node::Seq { items, pos }, anchor)
                }
                Some(Frame::Map {
                    entries,
                    pos,
                    anchor,
                    ..
                }) => {
                    let pos = entries
                        .first()
                        .map(|e| e.0.pos())
                        .filter(|p| *p < pos)
                        .unwrap_or(pos);
                    self.complete(Node::Map { entries, pos }, anchor)
                }
                None => {}
            },
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                // The copy keeps the anchor's position; report uses at the alias.
                Some(node) => self.complete(node, 0),
                None => {
                    if self.error.is_none() {
                        self.error = Some(SyntaxError {
                            pos,
                            message: "alias to an unknown anchor".into(),
                        });
                    }
                    self.complete(
                        Node::Scalar {
                            text: String::new(),
                            quoted: false,
                            pos,
                        },
                        0,
                    );
                }
            },
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

/// Parses every document of a YAML stream.
pub fn parse_documents(src: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(src);
    if let Err(e) = parser.load(&mut builder, true) {
        let m = e.marker();
        return Err(SyntaxError {
            pos: Pos::from_marker(m),
            message: e.info().to_string(),
        });
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let docs = parse_documents("a: 1\nbb:\n  - x\n").unwrap();
        let Some(Node::Map { entries, .. }) = &docs[0].root else {
            panic!()
        };
        assert_eq!(entries[0].0.pos(), Pos { line: 1, column: 1 });
        assert_eq!(entries[0].1.pos(), Pos { line: 1, column: 4 });
        let Node::Seq { items, .. } = &entries[1].1 else {
            panic!()
        };
        assert_eq!(items[0].pos(), Pos { line: 3, column: 5 });
    }

    #[test]
    fn scalars_resolve_like_pyyaml() {
        let docs = parse_documents("[False, yes, 3, 0.25, ~, '3', abc, 1e3]").unwrap();
        let v = docs[0].root.as_ref().unwrap().to_value();
        assert_eq!(
            v,
            serde_json::json!([false, true, 3, 0.25, null, "3", "abc", 1000.0])
        );
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let docs = parse_documents("a: &x {k: 1}\nb: *x\n").unwrap();
        let v = docs[0].root.as_ref().unwrap().to_value();
        assert_eq!(v["b"]["k"], 1);
    }
}
