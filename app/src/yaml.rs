//! A YAML tree that remembers where every node starts.
//!
//! serde_yaml forgets positions once a value is built, and a role-file
//! diagnostic without a line and column is not much use, so the role-file
//! parser reads the event stream of `yaml-rust2` into this small tree instead.
//! Scalars are resolved the way PyYAML (and so K3) resolved them: YAML 1.1
//! booleans (`yes`, `False`, ...), integers, floats and nulls.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser, Tag};
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

/// What a document may cost to build. Aliases copy nodes, so a few hundred
/// bytes of `&a [*b, *b, ...]` can otherwise ask for terabytes; block
/// nesting is unbounded in the grammar, and every walk over the tree
/// (building, cloning, dropping, validating) recurses once per level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Nesting of sequences and mappings.
    pub max_depth: usize,
    /// Nodes in all documents, aliases expanded.
    pub max_nodes: usize,
    /// Nodes that aliases (and merge keys through them) may copy in all.
    pub max_alias_nodes: usize,
    /// Scalar bytes that aliases may copy in all.
    pub max_alias_bytes: usize,
}

impl Limits {
    /// Far above any real role file (K3's largest is a few hundred nodes; a
    /// 100,000-peer `peer_globals` list is about 400,000) and small enough
    /// that the worst case builds in well under a second and a hundred MB.
    pub const ROLE_FILE: Limits = Limits {
        max_depth: 64,
        max_nodes: 1_000_000,
        max_alias_nodes: 100_000,
        max_alias_bytes: 1 << 20,
    };
}

/// Why a document was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not YAML, or YAML the parser cannot read.
    Syntax,
    /// Valid YAML that asks for more than [`Limits`] allow.
    Limit,
    /// Valid YAML using something role files refuse: control characters,
    /// tags, unsupported directives.
    Refused,
}

/// A YAML error, positioned.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
    pub kind: ErrorKind,
}

impl SyntaxError {
    fn new(pos: Pos, kind: ErrorKind, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            pos,
            message: message.into(),
            kind,
        }
    }
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

/// An anchored node and what copying it costs.
struct Anchored {
    node: Node,
    nodes: usize,
    bytes: usize,
}

struct Builder {
    limits: Limits,
    docs: Vec<Document>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    root: Option<Node>,
    doc_pos: Pos,
    nodes: usize,
    alias_nodes: usize,
    alias_bytes: usize,
}

/// Nodes and scalar bytes in a tree, counted without recursion.
fn cost(node: &Node) -> (usize, usize) {
    let (mut nodes, mut bytes) = (0, 0);
    let mut todo = vec![node];
    while let Some(n) = todo.pop() {
        nodes += 1;
        match n {
            Node::Scalar { text, .. } => bytes += text.len(),
            Node::Seq { items, .. } => todo.extend(items),
            Node::Map { entries, .. } => {
                for (k, v) in entries {
                    todo.push(k);
                    todo.push(v);
                }
            }
        }
    }
    (nodes, bytes)
}

/// A character no role-file value may hold: C0 and C1 controls other than
/// tab and line breaks (NUL among them, which C programs read as the end),
/// DEL, and the bidirectional embeddings, overrides and isolates that make a
/// value display as something other than what it is.
pub fn forbidden_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'
        | '\u{80}'..='\u{84}' | '\u{86}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        | '\u{fffe}' | '\u{ffff}')
}

fn char_name(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

/// The core schema tags, which only restate what a plain scalar resolves to;
/// `!!str` (and the non-specific `!`) make a scalar a string.
fn check_tag(tag: &Option<Tag>, pos: Pos) -> Result<bool, SyntaxError> {
    let Some(tag) = tag else { return Ok(false) };
    if tag.handle.is_empty() && tag.suffix == "!" || tag.handle == "!" && tag.suffix.is_empty() {
        return Ok(true);
    }
    let core = tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:";
    match (core, tag.suffix.as_str()) {
        (true, "str") => Ok(true),
        (true, "int" | "float" | "bool" | "null" | "map" | "seq") => Ok(false),
        _ => Err(SyntaxError::new(
            pos,
            ErrorKind::Refused,
            format!(
                "tag {:?} is not supported: role files hold plain strings, numbers, lists and mappings",
                format!("{}{}", if core { "!!" } else { &tag.handle }, tag.suffix)
            ),
        )),
    }
}

impl Builder {
    fn new(limits: Limits) -> Builder {
        Builder {
            limits,
            docs: vec![],
            stack: vec![],
            anchors: HashMap::new(),
            root: None,
            doc_pos: Pos::default(),
            nodes: 0,
            alias_nodes: 0,
            alias_bytes: 0,
        }
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), SyntaxError> {
        self.nodes += n;
        if self.nodes > self.limits.max_nodes {
            return Err(SyntaxError::new(
                pos,
                ErrorKind::Limit,
                format!(
                    "the role file has more than {} values (aliases expanded); this is where the limit was reached",
                    self.limits.max_nodes
                ),
            ));
        }
        Ok(())
    }

    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        if anchor > 0 {
            let (nodes, bytes) = cost(&node);
            // The anchor keeps a copy, which costs what the node does:
            // nested anchors around one big node would otherwise copy it
            // once per level without a single alias.
            self.count(nodes, node.pos())?;
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    nodes,
                    bytes,
                },
            );
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame, pos: Pos) -> Result<(), SyntaxError> {
        self.count(1, pos)?;
        if self.stack.len() >= self.limits.max_depth {
            return Err(SyntaxError::new(
                pos,
                ErrorKind::Limit,
                format!(
                    "lists and mappings nest more than {} deep here",
                    self.limits.max_depth
                ),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn alias(&mut self, id: usize, pos: Pos) -> Result<(), SyntaxError> {
        let Some(a) = self.anchors.get(&id) else {
            return Err(SyntaxError::new(
                pos,
                ErrorKind::Syntax,
                "alias to an unknown anchor",
            ));
        };
        let (nodes, bytes) = (a.nodes, a.bytes);
        self.alias_nodes += nodes;
        self.alias_bytes += bytes;
        if self.alias_nodes > self.limits.max_alias_nodes
            || self.alias_bytes > self.limits.max_alias_bytes
        {
            return Err(SyntaxError::new(
                pos,
                ErrorKind::Limit,
                format!(
                    "aliases copy more than {} values or {} KiB of text in all; this alias is where the limit was reached",
                    self.limits.max_alias_nodes,
                    self.limits.max_alias_bytes >> 10
                ),
            ));
        }
        self.count(nodes, pos)?;
        // The copy keeps the anchor's position; uses are reported there.
        let node = self.anchors[&id].node.clone();
        self.complete(node, 0)
    }

    fn on_event(&mut self, ev: Event, mark: Marker) -> Result<(), SyntaxError> {
        let pos = Pos::from_marker(&mark);
        match ev {
            Event::DocumentStart => {
                self.root = None;
                self.doc_pos = pos;
                // Anchors are local to their document.
                self.anchors.clear();
            }
            Event::DocumentEnd => {
                let root = self.root.take();
                self.docs.push(Document {
                    root,
                    pos: self.doc_pos,
                });
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, pos)?;
                if let Some(c) = text.chars().find(|&c| forbidden_char(c)) {
                    return Err(SyntaxError::new(
                        pos,
                        ErrorKind::Refused,
                        format!(
                            "this value holds the control character {}: values must be printable text",
                            char_name(c)
                        ),
                    ));
                }
                let quoted = !matches!(style, TScalarStyle::Plain) || check_tag(&tag, pos)?;
                self.complete(Node::Scalar { text, quoted, pos }, anchor)?;
            }
            Event::SequenceStart(anchor, tag) => {
                check_tag(&tag, pos)?;
                self.open(
                    Frame::Seq {
                        items: vec![],
                        pos,
                        anchor,
                    },
                    pos,
                )?
            }
            Event::MappingStart(anchor, tag) => {
                check_tag(&tag, pos)?;
                self.open(
                    Frame::Map {
                        entries: vec![],
                        key: None,
                        pos,
                        anchor,
                    },
                    pos,
                )?
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                // Block collections are marked where the parser noticed them,
                // which can be past their first item; report the earlier one.
                Some(Frame::Seq { items, pos, anchor }) => {
                    let pos = items
                        .first()
                        .map(Node::pos)
                        .filter(|p| *p < pos)
                        .unwrap_or(pos);
                    self.complete(Node::Seq { items, pos }, anchor)?
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
                    let entries = merge_keys(entries)?;
                    self.complete(Node::Map { entries, pos }, anchor)?
                }
                None => {}
            },
            Event::Alias(id) => self.alias(id, pos)?,
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(())
    }
}

fn is_merge_key(k: &Node) -> bool {
    matches!(k, Node::Scalar { text, quoted: false, .. } if text == "<<")
}

/// Applies YAML merge keys (`<<: *defaults`, `<<: [*a, *b]`), as PyYAML did:
/// merged entries come first, keys written in the mapping itself win, and
/// among merged mappings the earlier wins. The merged nodes were already paid
/// for when their aliases were copied, so this moves them and costs nothing.
fn merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, SyntaxError> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return Ok(entries);
    }
    let mut own = Vec::with_capacity(entries.len());
    let mut sources = Vec::new();
    for (k, v) in entries {
        if !is_merge_key(&k) {
            own.push((k, v));
            continue;
        }
        match v {
            Node::Map { entries, .. } => sources.push(entries),
            Node::Seq { items, pos } => {
                for item in items {
                    match item {
                        Node::Map { entries, .. } => sources.push(entries),
                        other => {
                            return Err(SyntaxError::new(
                                other.pos(),
                                ErrorKind::Syntax,
                                format!(
                                    "a merge key `<<` takes mappings, found {} {} in its list (at {}:{})",
                                    other.kind(),
                                    other.describe(),
                                    pos.line,
                                    pos.column
                                ),
                            ))
                        }
                    }
                }
            }
            other => {
                return Err(SyntaxError::new(
                    other.pos(),
                    ErrorKind::Syntax,
                    format!(
                        "a merge key `<<` takes a mapping or a list of mappings, found {} {}",
                        other.kind(),
                        other.describe()
                    ),
                ))
            }
        }
    }
    let mut seen: std::collections::HashSet<String> = own
        .iter()
        .filter_map(|(k, _)| k.text().map(str::to_string))
        .collect();
    let mut merged = Vec::new();
    for src in sources {
        for (k, v) in src {
            if let Some(t) = k.text() {
                if !seen.insert(t.to_string()) {
                    continue;
                }
            }
            merged.push((k, v));
        }
    }
    merged.extend(own);
    Ok(merged)
}

/// Refuses characters YAML does not allow in a stream and that no role file
/// needs, before the parser sees them (it would stop silently at a NUL).
fn check_chars(src: &str) -> Result<(), SyntaxError> {
    let (mut line, mut column) = (1u32, 1u32);
    for c in src.chars() {
        if forbidden_char(c) {
            return Err(SyntaxError::new(
                Pos { line, column },
                ErrorKind::Refused,
                format!(
                    "the role file holds the control character {} here: role files are printable text",
                    char_name(c)
                ),
            ));
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    Ok(())
}

/// `%YAML` directives must name 1.x, x at most 2; the parser keeps them to itself.
fn check_directives(src: &str) -> Result<(), SyntaxError> {
    if !src.contains("%YAML") {
        return Ok(());
    }
    // An error here is the parser's to report, with its own message.
    for tok in yaml_rust2::scanner::Scanner::new(src.chars()) {
        if let yaml_rust2::scanner::TokenType::VersionDirective(major, minor) = tok.1 {
            if major != 1 || minor > 2 {
                return Err(SyntaxError::new(
                    Pos::from_marker(&tok.0),
                    ErrorKind::Refused,
                    format!("%YAML {major}.{minor} is not a version this parser reads (1.1 and 1.2 are)"),
                ));
            }
        }
    }
    Ok(())
}

/// Parses every document of a YAML stream within [`Limits::ROLE_FILE`].
pub fn parse_documents(src: &str) -> Result<Vec<Document>, SyntaxError> {
    parse_documents_within(src, Limits::ROLE_FILE)
}

/// Parses every document of a YAML stream, refusing at the first place where
/// the document costs more than `limits` allow.
pub fn parse_documents_within(src: &str, limits: Limits) -> Result<Vec<Document>, SyntaxError> {
    check_chars(src)?;
    check_directives(src)?;
    let mut builder = Builder::new(limits);
    let mut parser = Parser::new_from_str(src);
    // The parser's own `load` recurses once per nesting level, so the events
    // are pulled here, in a loop, and the builder can stop at its limits.
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| {
            SyntaxError::new(Pos::from_marker(e.marker()), ErrorKind::Syntax, e.info())
        })?;
        if ev == Event::StreamEnd {
            break;
        }
        builder.on_event(ev, mark)?;
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
    /// `&a [x, x, ...]`, each level ten copies of the one before: 10^depth values.
    fn alias_bomb(levels: usize) -> String {
        let names: Vec<char> = ('a'..='z').take(levels).collect();
        let mut s = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        for w in names.windows(2) {
            let (p, i) = (w[0], w[1]);
            s += &format!("{i}: &{i} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n");
        }
        s
    }

    #[test]
    fn a_nested_alias_bomb_is_refused_where_the_budget_ran_out() {
        let src = alias_bomb(9);
        assert!(src.len() < 400, "{}", src.len());
        let err = parse_documents(&src).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Limit, "{err:?}");
        // Level n copies 10 × (11 + 10 × ...) values: 110, 1,110, 11,110,
        // then 111,110 on line 5, past the budget of 100,000.
        assert_eq!(err.pos.line, 5, "{err:?}");
        assert!(err.message.contains("aliases copy more than"), "{err:?}");
    }

    #[test]
    fn a_quadratic_alias_chain_is_refused() {
        let mut s = String::from("a0: &a0 [x]\n");
        for i in 1..2000 {
            s += &format!("a{i}: &a{i} [y, *a{}]\n", i - 1);
        }
        // Each level nests one deeper, so depth runs out first; flat chains
        // run into the copy budget instead.
        let err = parse_documents(&s).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Limit, "{err:?}");
        let mut flat = String::from("a0: &a0 {k0: v}\n");
        for i in 1..2000 {
            flat += &format!("a{i}: &a{i} {{k{i}: v, <<: *a{}}}\n", i - 1);
        }
        let err = parse_documents(&flat).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Limit, "{err:?}");
        assert!(err.pos.line > 100, "{err:?}");
    }

    #[test]
    fn aliases_used_as_keys_count_against_the_budget() {
        let mut s = alias_bomb(5);
        s += "? *e\n: 1\n? *e\n: 2\n";
        let err = parse_documents(&s).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Limit, "{err:?}");
    }

    #[test]
    fn ten_thousand_nested_block_sequences_are_refused_at_the_limit() {
        let mut s = String::new();
        for i in 0..10_000 {
            s += &" ".repeat(i * 2);
            s += "-\n";
        }
        // Run on a small stack: the parser must not recurse per level.
        let err = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || parse_documents(&s).unwrap_err())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::Limit, "{err:?}");
        assert_eq!(err.pos.line, 65, "{err:?}");
        let one_line = "- ".repeat(10_000) + "x\n";
        let err = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || parse_documents(&one_line).unwrap_err())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::Limit, "{err:?}");
        assert_eq!((err.pos.line, err.pos.column), (1, 129), "{err:?}");
    }

    #[test]
    fn nested_anchors_around_a_big_node_count_their_copies() {
        let mut s = String::new();
        for i in 0..60 {
            s += &format!("&a{i} [");
        }
        s += &vec!["x"; 30_000].join(",");
        s += &"]".repeat(60);
        assert!(s.len() < 100_000);
        let err = parse_documents(&s).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Limit, "{err:?}");
        // One anchor on a big mapping, as `defaults: &d {...}` files do, is fine.
        let one = format!("d: &d [{}]\n", vec!["x"; 30_000].join(","));
        parse_documents(&one).unwrap();
    }

    #[test]
    fn sixty_four_levels_are_still_fine() {
        let s = "[".repeat(63) + &"]".repeat(63);
        parse_documents(&s).unwrap();
    }

    #[test]
    fn a_nul_byte_is_refused_with_its_position_not_read_as_the_end() {
        let err = parse_documents("name: a\ncommand: ls\0; rm -rf /\n").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Refused);
        assert_eq!((err.pos.line, err.pos.column), (2, 12));
        assert!(err.message.contains("U+0000"), "{err:?}");
        // An escaped NUL in a double-quoted value is refused too.
        let err = parse_documents("command: \"ls\\0x\"\n").unwrap_err();
        assert!(err.message.contains("U+0000"), "{err:?}");
        assert_eq!(err.pos.line, 1);
    }

    #[test]
    fn bidi_overrides_are_refused() {
        let err = parse_documents("name: \"abc\\u202Egpj.exe\"\n").unwrap_err();
        assert!(err.message.contains("U+202E"), "{err:?}");
        let err = parse_documents("name: ab\u{2066}c\n").unwrap_err();
        assert_eq!((err.pos.line, err.pos.column), (1, 9), "{err:?}");
    }

    #[test]
    fn unknown_yaml_versions_and_tags_are_refused() {
        let err = parse_documents("%YAML 9.9\n---\nname: a\n").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Refused);
        assert!(err.message.contains("%YAML 9.9"), "{err:?}");
        parse_documents("%YAML 1.1\n---\nname: a\n").unwrap();
        let err = parse_documents("name: !!python/object:os.system ls\n").unwrap_err();
        assert!(err.message.contains("!!python/object:os.system"), "{err:?}");
        assert_eq!(err.pos.line, 1);
        let err = parse_documents("a: !custom {k: 1}\n").unwrap_err();
        assert!(err.message.contains("!custom"), "{err:?}");
    }

    #[test]
    fn core_tags_keep_their_meaning() {
        let docs = parse_documents("a: !!str 3\nb: !!int 4\nc: ! 5\n").unwrap();
        let v = docs[0].root.as_ref().unwrap().to_value();
        assert_eq!(v, serde_json::json!({"a": "3", "b": 4, "c": "5"}));
    }

    #[test]
    fn merge_keys_merge_like_pyyaml() {
        let src = "d: &d {cpu: 1, mem: 2}\ne: &e {mem: 3, x: 4}\nr:\n  <<: [*d, *e]\n  cpu: 9\n";
        let docs = parse_documents(src).unwrap();
        let v = docs[0].root.as_ref().unwrap().to_value();
        assert_eq!(v["r"], serde_json::json!({"mem": 2, "x": 4, "cpu": 9}));
        let keys: Vec<_> = v["r"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["mem", "x", "cpu"]);
        let err = parse_documents("r:\n  <<: 3\n").unwrap_err();
        assert_eq!((err.pos.line, err.pos.column), (2, 7), "{err:?}");
        // A quoted `<<` is an ordinary key.
        let docs = parse_documents("'<<': 1\n").unwrap();
        assert_eq!(docs[0].root.as_ref().unwrap().to_value()["<<"], 1);
    }

    #[test]
    fn anchors_do_not_leak_between_documents() {
        let err = parse_documents("a: &x 1\n---\nb: *x\n").unwrap_err();
        assert_eq!(err.pos.line, 3, "{err:?}");
    }
}
