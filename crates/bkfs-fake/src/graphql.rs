//! A small GraphQL engine for the fake Buildkite: a lexer, a parser for executable documents
//! and for the schema definition language, validation of a whole document against a
//! [`Schema`], variable coercion, and an executor that asks a [`Resolver`] for each field of
//! each object it completes.
//!
//! It follows the GraphQL specification (October 2021) for what it supports:
//!
//! - Lexing: names, punctuators, ints, floats, strings with escapes (`\uXXXX`, surrogate
//!   pairs, `\u{...}`), block strings (indentation removed as the spec says), `#` comments;
//!   commas, whitespace and a BOM are ignored.
//! - Documents with any number of operations (`query Name($v: Type = default) @dir { ... }` or
//!   an anonymous `{ ... }`) and fragments; fields with aliases, arguments (every literal kind,
//!   and `$variables` anywhere a value goes), directives, inline fragments (with or without a
//!   type condition) and fragment spreads; `__typename` on every composite type.
//! - The directives `@skip(if:)` and `@include(if:)`; any other directive is an error.
//! - Validation before anything runs: operation and fragment names, field existence, argument
//!   names, types and required arguments, leaf/composite selections, fragment type conditions
//!   and where they may be spread, fragment cycles, unused fragments, variable definitions
//!   (input types, defaults), undefined and unused variables, variable usages against their
//!   location's type, directive placement, and field merging (same response key: same field
//!   and arguments, unless the parents are distinct object types).
//! - Execution: fields are collected (fragments applied by the concrete type), arguments
//!   coerced (defaults, variables, single values for lists), results completed by the field's
//!   type (enums and scalars checked, lists, abstract types resolved to their object type);
//!   a field error nulls the nearest nullable position and is reported with its `path`.
//!
//! Not supported: introspection (`__schema`, `__type`), fragment variables, `extend` in the
//! schema language, and executing mutations or subscriptions (the caller's schema has no root
//! type for them, so validation rejects them). Error messages follow graphql-ruby's wording,
//! which is what Buildkite's API answers with.
//!
//! Over 1,000 lines, and known: issue 14 replaces this hand-written engine with a GraphQL
//! library in the fake's own crate, so it is not split here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value as Json};

// ---------------------------------------------------------------------------------------------
// Errors

/// A line and column, both 1-based (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// One step of an error's `path` in the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// One entry of the response's `errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    pub locations: Vec<Pos>,
    pub path: Option<Vec<PathSeg>>,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            locations: Vec::new(),
            path: None,
        }
    }

    pub fn at(message: impl Into<String>, pos: Pos) -> Error {
        Error {
            message: message.into(),
            locations: vec![pos],
            path: None,
        }
    }

    /// `{"message": .., "locations": [{"line", "column"}]?, "path": [..]?}`.
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("message".into(), Json::String(self.message.clone()));
        if !self.locations.is_empty() {
            let locs = self
                .locations
                .iter()
                .map(|p| serde_json::json!({"line": p.line, "column": p.column}))
                .collect();
            m.insert("locations".into(), Json::Array(locs));
        }
        if let Some(path) = &self.path {
            let segs = path
                .iter()
                .map(|s| match s {
                    PathSeg::Key(k) => Json::String(k.clone()),
                    PathSeg::Index(i) => Json::from(*i),
                })
                .collect();
            m.insert("path".into(), Json::Array(segs));
        }
        Json::Object(m)
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Punct(&'static str),
    Name(String),
    Int(String),
    Float(String),
    Str(String),
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Punct(p) => write!(f, "\"{p}\""),
            Tok::Name(n) => write!(f, "Name \"{n}\""),
            Tok::Int(n) => write!(f, "Int \"{n}\""),
            Tok::Float(n) => write!(f, "Float \"{n}\""),
            Tok::Str(s) => write!(f, "String {s:?}"),
            Tok::Eof => write!(f, "<EOF>"),
        }
    }
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: usize,
    col: usize,
}

fn syntax(msg: impl fmt::Display, pos: Pos) -> Error {
    Error::at(format!("Syntax Error: {msg}"), pos)
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

impl Lexer {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.col,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.i + n).copied()
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(k, c)| self.peek_at(k) == Some(c))
    }

    /// Consumes one character; `\r\n` is one line break and reads as `\r`.
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        match c {
            '\n' => {
                self.line += 1;
                self.col = 1;
            }
            '\r' => {
                if self.peek() == Some('\n') {
                    self.i += 1;
                }
                self.line += 1;
                self.col = 1;
            }
            _ => self.col += 1,
        }
        Some(c)
    }

    fn tokens(mut self) -> Result<Vec<(Tok, Pos)>, Error> {
        let mut out = Vec::new();
        loop {
            // Ignored tokens.
            while let Some(c) = self.peek() {
                match c {
                    ' ' | '\t' | ',' | '\u{feff}' | '\n' | '\r' => {
                        self.bump();
                    }
                    '#' => {
                        while !matches!(self.peek(), None | Some('\n' | '\r')) {
                            self.bump();
                        }
                    }
                    _ => break,
                }
            }
            let pos = self.pos();
            let Some(c) = self.peek() else {
                out.push((Tok::Eof, pos));
                return Ok(out);
            };
            let tok = match c {
                '!' | '$' | '&' | '(' | ')' | ':' | '=' | '@' | '[' | ']' | '{' | '|' | '}' => {
                    self.bump();
                    Tok::Punct(match c {
                        '!' => "!",
                        '$' => "$",
                        '&' => "&",
                        '(' => "(",
                        ')' => ")",
                        ':' => ":",
                        '=' => "=",
                        '@' => "@",
                        '[' => "[",
                        ']' => "]",
                        '{' => "{",
                        '|' => "|",
                        _ => "}",
                    })
                }
                '.' => {
                    if self.starts_with("...") {
                        for _ in 0..3 {
                            self.bump();
                        }
                        Tok::Punct("...")
                    } else {
                        return Err(syntax("Unexpected character: \".\".", pos));
                    }
                }
                '"' => {
                    if self.starts_with("\"\"\"") {
                        self.block_string(pos)?
                    } else {
                        self.string(pos)?
                    }
                }
                '-' | '0'..='9' => self.number()?,
                c if is_name_start(c) => {
                    let mut s = String::new();
                    while let Some(c) = self.peek().filter(|c| is_name_char(*c)) {
                        s.push(c);
                        self.bump();
                    }
                    Tok::Name(s)
                }
                c => return Err(syntax(format!("Unexpected character: {c:?}."), pos)),
            };
            out.push((tok, pos));
        }
    }

    fn digits(&mut self, s: &mut String) -> Result<(), Error> {
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {}
            other => {
                let got = other.map_or("<EOF>".to_string(), |c| format!("{c:?}"));
                return Err(syntax(
                    format!("Invalid number, expected digit but got: {got}."),
                    self.pos(),
                ));
            }
        }
        while let Some(c) = self.peek().filter(char::is_ascii_digit) {
            s.push(c);
            self.bump();
        }
        Ok(())
    }

    fn number(&mut self) -> Result<Tok, Error> {
        let mut s = String::new();
        if self.peek() == Some('-') {
            s.push('-');
            self.bump();
        }
        if self.peek() == Some('0') {
            s.push('0');
            self.bump();
            if let Some(c) = self.peek().filter(char::is_ascii_digit) {
                return Err(syntax(
                    format!("Invalid number, unexpected digit after 0: {c:?}."),
                    self.pos(),
                ));
            }
        } else {
            self.digits(&mut s)?;
        }
        let mut float = false;
        if self.peek() == Some('.') {
            float = true;
            s.push('.');
            self.bump();
            self.digits(&mut s)?;
        }
        if let Some(e @ ('e' | 'E')) = self.peek() {
            float = true;
            s.push(e);
            self.bump();
            if let Some(sign @ ('+' | '-')) = self.peek() {
                s.push(sign);
                self.bump();
            }
            self.digits(&mut s)?;
        }
        if let Some(c) = self.peek().filter(|&c| c == '.' || is_name_start(c)) {
            return Err(syntax(
                format!("Invalid number, expected digit but got: {c:?}."),
                self.pos(),
            ));
        }
        Ok(if float { Tok::Float(s) } else { Tok::Int(s) })
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            v = v * 16 + self.peek()?.to_digit(16)?;
            self.bump();
        }
        Some(v)
    }

    fn unicode_escape(&mut self, at: Pos) -> Result<char, Error> {
        let bad = || syntax("Invalid Unicode escape sequence.", at);
        if self.peek() == Some('{') {
            self.bump();
            let mut v: u32 = 0;
            let mut n = 0;
            while let Some(d) = self.peek().and_then(|c| c.to_digit(16)) {
                v = v
                    .checked_mul(16)
                    .and_then(|v| v.checked_add(d))
                    .ok_or_else(bad)?;
                n += 1;
                self.bump();
            }
            if n == 0 || self.peek() != Some('}') {
                return Err(bad());
            }
            self.bump();
            return char::from_u32(v).ok_or_else(bad);
        }
        let hi = self.hex4().ok_or_else(bad)?;
        if (0xD800..0xDC00).contains(&hi) {
            // A surrogate pair written as two escapes.
            if self.starts_with("\\u") {
                self.bump();
                self.bump();
                let lo = self.hex4().ok_or_else(bad)?;
                if (0xDC00..0xE000).contains(&lo) {
                    let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    return char::from_u32(c).ok_or_else(bad);
                }
            }
            return Err(bad());
        }
        char::from_u32(hi).ok_or_else(bad)
    }

    fn string(&mut self, pos: Pos) -> Result<Tok, Error> {
        self.bump(); // "
        let mut s = String::new();
        loop {
            let at = self.pos();
            match self.peek() {
                None | Some('\n' | '\r') => return Err(syntax("Unterminated string.", pos)),
                Some('"') => {
                    self.bump();
                    return Ok(Tok::Str(s));
                }
                Some('\\') => {
                    self.bump();
                    let c = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => self.unicode_escape(at)?,
                        Some(c) => {
                            return Err(syntax(
                                format!("Invalid character escape sequence: \"\\{c}\"."),
                                at,
                            ))
                        }
                        None => return Err(syntax("Unterminated string.", pos)),
                    };
                    s.push(c);
                }
                Some(c) => {
                    s.push(c);
                    self.bump();
                }
            }
        }
    }

    fn block_string(&mut self, pos: Pos) -> Result<Tok, Error> {
        for _ in 0..3 {
            self.bump();
        }
        let mut raw = String::new();
        loop {
            if self.starts_with("\"\"\"") {
                for _ in 0..3 {
                    self.bump();
                }
                return Ok(Tok::Str(block_string_value(&raw)));
            }
            if self.starts_with("\\\"\"\"") {
                for _ in 0..4 {
                    self.bump();
                }
                raw.push_str("\"\"\"");
                continue;
            }
            match self.bump() {
                Some(c) => raw.push(c),
                None => return Err(syntax("Unterminated string.", pos)),
            }
        }
    }
}

/// The spec's BlockStringValue: common indentation removed, blank first and last lines
/// dropped, line breaks normalised to `\n`.
fn block_string_value(raw: &str) -> String {
    let lines: Vec<&str> = raw.split(['\n', '\r']).collect();
    let indent = |l: &str| l.chars().take_while(|c| *c == ' ' || *c == '\t').count();
    let common = lines
        .iter()
        .skip(1)
        .filter(|l| indent(l) < l.chars().count())
        .map(|l| indent(l))
        .min();
    let mut out: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| match common {
            Some(n) if i > 0 => l.chars().skip(n).collect(),
            _ => l.to_string(),
        })
        .collect();
    let blank = |l: &String| l.chars().all(|c| c == ' ' || c == '\t');
    while out.first().is_some_and(blank) {
        out.remove(0);
    }
    while out.last().is_some_and(blank) {
        out.pop();
    }
    out.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Syntax tree

/// A type reference: `Name`, `[T]`, `T!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeRef {
    Named(String),
    List(Box<TypeRef>),
    NonNull(Box<TypeRef>),
}

impl TypeRef {
    /// The named type inside all wrappers.
    pub fn name(&self) -> &str {
        match self {
            TypeRef::Named(n) => n,
            TypeRef::List(t) | TypeRef::NonNull(t) => t.name(),
        }
    }

    pub fn is_non_null(&self) -> bool {
        matches!(self, TypeRef::NonNull(_))
    }

    /// Without an outer `!`.
    pub fn nullable(&self) -> &TypeRef {
        match self {
            TypeRef::NonNull(t) => t,
            t => t,
        }
    }
}

impl fmt::Display for TypeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeRef::Named(n) => write!(f, "{n}"),
            TypeRef::List(t) => write!(f, "[{t}]"),
            TypeRef::NonNull(t) => write!(f, "{t}!"),
        }
    }
}

/// A literal or a variable.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Var(String),
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Null,
    Enum(String),
    List(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Var(v) => write!(f, "${v}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{}", Json::String(s.clone())),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Null => write!(f, "null"),
            Value::Enum(e) => write!(f, "{e}"),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Value::Object(fields) => {
                write!(f, "{{")?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                write!(f, "}}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: String,
    pub value: Value,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<Arg>,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub alias: Option<String>,
    pub name: String,
    pub args: Vec<Arg>,
    pub directives: Vec<Directive>,
    pub selections: Vec<Selection>,
    pub pos: Pos,
}

impl Field {
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    Field(Field),
    Inline {
        type_cond: Option<String>,
        directives: Vec<Directive>,
        selections: Vec<Selection>,
        pos: Pos,
    },
    Spread {
        name: String,
        directives: Vec<Directive>,
        pos: Pos,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Query,
    Mutation,
    Subscription,
}

impl OpKind {
    fn plural(self) -> &'static str {
        match self {
            OpKind::Query => "queries",
            OpKind::Mutation => "mutations",
            OpKind::Subscription => "subscriptions",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VarDef {
    pub name: String,
    pub ty: TypeRef,
    pub default: Option<Value>,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub kind: OpKind,
    pub name: Option<String>,
    pub vars: Vec<VarDef>,
    pub directives: Vec<Directive>,
    pub selections: Vec<Selection>,
    pub pos: Pos,
}

impl Operation {
    fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| "anonymous query".into())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    pub name: String,
    pub type_cond: String,
    pub directives: Vec<Directive>,
    pub selections: Vec<Selection>,
    pub pos: Pos,
}

/// An executable document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    pub operations: Vec<Operation>,
    pub fragments: Vec<Fragment>,
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    toks: Vec<(Tok, Pos)>,
    i: usize,
}

const TYPE_SYSTEM_WORDS: [&str; 9] = [
    "schema",
    "scalar",
    "type",
    "interface",
    "union",
    "enum",
    "input",
    "directive",
    "extend",
];

impl Parser {
    fn new(src: &str) -> Result<Parser, Error> {
        let lexer = Lexer {
            chars: src.chars().collect(),
            i: 0,
            line: 1,
            col: 1,
        };
        Ok(Parser {
            toks: lexer.tokens()?,
            i: 0,
        })
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.i].0
    }

    fn peek2(&self) -> &Tok {
        &self.toks[(self.i + 1).min(self.toks.len() - 1)].0
    }

    fn pos(&self) -> Pos {
        self.toks[self.i].1
    }

    fn advance(&mut self) -> (Tok, Pos) {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn at_eof(&self) -> bool {
        *self.peek() == Tok::Eof
    }

    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn eat(&mut self, p: &str) -> bool {
        let yes = self.is(p);
        if yes {
            self.advance();
        }
        yes
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Name(n) if n == w)
    }

    fn expected(&self, what: &str) -> Error {
        syntax(
            format!("Expected {what}, found {}.", self.peek()),
            self.pos(),
        )
    }

    fn unexpected(&self) -> Error {
        syntax(format!("Unexpected {}.", self.peek()), self.pos())
    }

    fn expect(&mut self, p: &str) -> Result<Pos, Error> {
        if self.is(p) {
            Ok(self.advance().1)
        } else {
            Err(self.expected(&format!("\"{p}\"")))
        }
    }

    fn name(&mut self) -> Result<(String, Pos), Error> {
        match self.peek().clone() {
            Tok::Name(n) => {
                let pos = self.advance().1;
                Ok((n, pos))
            }
            _ => Err(self.expected("Name")),
        }
    }

    fn expect_word(&mut self, w: &str) -> Result<(), Error> {
        if self.is_word(w) {
            self.advance();
            Ok(())
        } else {
            Err(self.expected(&format!("\"{w}\"")))
        }
    }

    // -- executable documents

    fn document(&mut self) -> Result<Document, Error> {
        let mut doc = Document::default();
        if self.at_eof() {
            return Err(self.unexpected());
        }
        while !self.at_eof() {
            let pos = self.pos();
            match self.peek().clone() {
                Tok::Punct("{") => {
                    let selections = self.selection_set()?;
                    doc.operations.push(Operation {
                        kind: OpKind::Query,
                        name: None,
                        vars: Vec::new(),
                        directives: Vec::new(),
                        selections,
                        pos,
                    });
                }
                Tok::Name(w) if w == "query" || w == "mutation" || w == "subscription" => {
                    doc.operations.push(self.operation()?)
                }
                Tok::Name(w) if w == "fragment" => doc.fragments.push(self.fragment()?),
                Tok::Name(w) if TYPE_SYSTEM_WORDS.contains(&w.as_str()) => {
                    return Err(Error::at(
                        format!(
                            "Type system definitions (`{w}`) are not executable: send queries only"
                        ),
                        pos,
                    ))
                }
                _ => return Err(self.unexpected()),
            }
        }
        Ok(doc)
    }

    fn operation(&mut self) -> Result<Operation, Error> {
        let (word, pos) = self.name()?;
        let kind = match word.as_str() {
            "mutation" => OpKind::Mutation,
            "subscription" => OpKind::Subscription,
            _ => OpKind::Query,
        };
        let name = match self.peek() {
            Tok::Name(_) => Some(self.name()?.0),
            _ => None,
        };
        let mut vars = Vec::new();
        if self.eat("(") {
            loop {
                let vpos = self.expect("$")?;
                let (vname, _) = self.name()?;
                self.expect(":")?;
                let ty = self.type_ref()?;
                let default = if self.eat("=") {
                    Some(self.value(true)?)
                } else {
                    None
                };
                self.directives(true)?; // allowed by the grammar, ignored
                vars.push(VarDef {
                    name: vname,
                    ty,
                    default,
                    pos: vpos,
                });
                if self.eat(")") {
                    break;
                }
            }
        }
        let directives = self.directives(false)?;
        let selections = self.selection_set()?;
        Ok(Operation {
            kind,
            name,
            vars,
            directives,
            selections,
            pos,
        })
    }

    fn fragment(&mut self) -> Result<Fragment, Error> {
        let pos = self.advance().1; // fragment
        if self.is_word("on") {
            return Err(self.unexpected());
        }
        let (name, _) = self.name()?;
        self.expect_word("on")?;
        let (type_cond, _) = self.name()?;
        let directives = self.directives(false)?;
        let selections = self.selection_set()?;
        Ok(Fragment {
            name,
            type_cond,
            directives,
            selections,
            pos,
        })
    }

    fn type_ref(&mut self) -> Result<TypeRef, Error> {
        let t = if self.eat("[") {
            let inner = self.type_ref()?;
            self.expect("]")?;
            TypeRef::List(Box::new(inner))
        } else {
            TypeRef::Named(self.name()?.0)
        };
        Ok(if self.eat("!") {
            TypeRef::NonNull(Box::new(t))
        } else {
            t
        })
    }

    fn value(&mut self, constant: bool) -> Result<Value, Error> {
        let pos = self.pos();
        Ok(match self.peek().clone() {
            Tok::Punct("$") => {
                if constant {
                    let name = match self.peek2() {
                        Tok::Name(n) => n.clone(),
                        _ => String::new(),
                    };
                    return Err(syntax(
                        format!("Unexpected variable \"${name}\" in constant value."),
                        pos,
                    ));
                }
                self.advance();
                Value::Var(self.name()?.0)
            }
            Tok::Int(s) => {
                self.advance();
                match s.parse::<i64>() {
                    Ok(n) => Value::Int(n),
                    // Too big for any integer type: keep it, validation rejects it.
                    Err(_) => Value::Float(s.parse().unwrap_or(f64::INFINITY)),
                }
            }
            Tok::Float(s) => {
                self.advance();
                Value::Float(s.parse().unwrap_or(f64::NAN))
            }
            Tok::Str(s) => {
                self.advance();
                Value::Str(s)
            }
            Tok::Name(n) => {
                self.advance();
                match n.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    _ => Value::Enum(n),
                }
            }
            Tok::Punct("[") => {
                self.advance();
                let mut items = Vec::new();
                while !self.eat("]") {
                    if self.at_eof() {
                        return Err(self.expected("\"]\""));
                    }
                    items.push(self.value(constant)?);
                }
                Value::List(items)
            }
            Tok::Punct("{") => {
                self.advance();
                let mut fields = Vec::new();
                while !self.eat("}") {
                    let (k, _) = self.name()?;
                    self.expect(":")?;
                    fields.push((k, self.value(constant)?));
                }
                Value::Object(fields)
            }
            _ => return Err(self.unexpected()),
        })
    }

    fn arguments(&mut self, constant: bool) -> Result<Vec<Arg>, Error> {
        let mut args = Vec::new();
        if self.eat("(") {
            loop {
                let (name, pos) = self.name()?;
                self.expect(":")?;
                let value = self.value(constant)?;
                args.push(Arg { name, value, pos });
                if self.eat(")") {
                    break;
                }
            }
        }
        Ok(args)
    }

    fn directives(&mut self, constant: bool) -> Result<Vec<Directive>, Error> {
        let mut out = Vec::new();
        while self.is("@") {
            let pos = self.advance().1;
            let (name, _) = self.name()?;
            let args = self.arguments(constant)?;
            out.push(Directive { name, args, pos });
        }
        Ok(out)
    }

    fn selection_set(&mut self) -> Result<Vec<Selection>, Error> {
        self.expect("{")?;
        let mut out = Vec::new();
        loop {
            out.push(self.selection()?);
            if self.eat("}") {
                return Ok(out);
            }
        }
    }

    fn selection(&mut self) -> Result<Selection, Error> {
        if self.is("...") {
            let pos = self.advance().1;
            if self.is_word("on") {
                self.advance();
                let (t, _) = self.name()?;
                let directives = self.directives(false)?;
                let selections = self.selection_set()?;
                return Ok(Selection::Inline {
                    type_cond: Some(t),
                    directives,
                    selections,
                    pos,
                });
            }
            if let Tok::Name(_) = self.peek() {
                let (name, _) = self.name()?;
                let directives = self.directives(false)?;
                return Ok(Selection::Spread {
                    name,
                    directives,
                    pos,
                });
            }
            let directives = self.directives(false)?;
            let selections = self.selection_set()?;
            return Ok(Selection::Inline {
                type_cond: None,
                directives,
                selections,
                pos,
            });
        }
        let (first, pos) = self.name()?;
        let (alias, name) = if self.eat(":") {
            (Some(first), self.name()?.0)
        } else {
            (None, first)
        };
        let args = self.arguments(false)?;
        let directives = self.directives(false)?;
        let selections = if self.is("{") {
            self.selection_set()?
        } else {
            Vec::new()
        };
        Ok(Selection::Field(Field {
            alias,
            name,
            args,
            directives,
            selections,
            pos,
        }))
    }

    // -- schema definition language

    fn description(&mut self) {
        if let Tok::Str(_) = self.peek() {
            self.advance();
        }
    }

    fn schema(&mut self) -> Result<Schema, Error> {
        let mut schema = Schema {
            types: BTreeMap::new(),
            query: "Query".into(),
            mutation: None,
            subscription: None,
        };
        let mut roots: Option<Vec<(String, String)>> = None;
        while !self.at_eof() {
            self.description();
            let (word, pos) = self.name()?;
            let mut def = TypeDef {
                name: String::new(),
                kind: Kind::Scalar,
                fields: Vec::new(),
                interfaces: Vec::new(),
                members: Vec::new(),
                values: Vec::new(),
                inputs: Vec::new(),
            };
            match word.as_str() {
                "schema" => {
                    self.directives(true)?;
                    self.expect("{")?;
                    let mut r = Vec::new();
                    while !self.eat("}") {
                        let (op, _) = self.name()?;
                        self.expect(":")?;
                        r.push((op, self.name()?.0));
                    }
                    roots = Some(r);
                    continue;
                }
                "directive" => {
                    self.expect("@")?;
                    self.name()?;
                    if self.is("(") {
                        self.input_defs(")")?;
                    }
                    if self.is_word("repeatable") {
                        self.advance();
                    }
                    self.expect_word("on")?;
                    self.eat("|");
                    self.name()?;
                    while self.eat("|") {
                        self.name()?;
                    }
                    continue;
                }
                "scalar" => {
                    def.name = self.name()?.0;
                    self.directives(true)?;
                }
                "type" | "interface" => {
                    def.kind = if word == "type" {
                        Kind::Object
                    } else {
                        Kind::Interface
                    };
                    def.name = self.name()?.0;
                    if self.is_word("implements") {
                        self.advance();
                        self.eat("&");
                        def.interfaces.push(self.name()?.0);
                        while self.eat("&") {
                            def.interfaces.push(self.name()?.0);
                        }
                    }
                    self.directives(true)?;
                    if self.eat("{") {
                        while !self.eat("}") {
                            self.description();
                            let (name, _) = self.name()?;
                            let args = if self.is("(") {
                                self.input_defs(")")?
                            } else {
                                Vec::new()
                            };
                            self.expect(":")?;
                            let ty = self.type_ref()?;
                            self.directives(true)?;
                            def.fields.push(FieldDef { name, args, ty });
                        }
                    }
                }
                "union" => {
                    def.kind = Kind::Union;
                    def.name = self.name()?.0;
                    self.directives(true)?;
                    if self.eat("=") {
                        self.eat("|");
                        def.members.push(self.name()?.0);
                        while self.eat("|") {
                            def.members.push(self.name()?.0);
                        }
                    }
                }
                "enum" => {
                    def.kind = Kind::Enum;
                    def.name = self.name()?.0;
                    self.directives(true)?;
                    if self.eat("{") {
                        while !self.eat("}") {
                            self.description();
                            def.values.push(self.name()?.0);
                            self.directives(true)?;
                        }
                    }
                }
                "input" => {
                    def.kind = Kind::InputObject;
                    def.name = self.name()?.0;
                    self.directives(true)?;
                    if self.is("{") {
                        def.inputs = self.input_defs("}")?;
                    }
                }
                _ => {
                    return Err(syntax(
                        format!("Unexpected Name \"{word}\": expected a type definition."),
                        pos,
                    ))
                }
            }
            if schema.types.contains_key(&def.name) {
                return Err(Error::at(
                    format!("Type \"{}\" is defined twice.", def.name),
                    pos,
                ));
            }
            schema.types.insert(def.name.clone(), def);
        }
        if let Some(roots) = roots {
            for (op, ty) in roots {
                match op.as_str() {
                    "query" => schema.query = ty,
                    "mutation" => schema.mutation = Some(ty),
                    _ => schema.subscription = Some(ty),
                }
            }
        } else {
            for (slot, name) in [
                (&mut schema.mutation, "Mutation"),
                (&mut schema.subscription, "Subscription"),
            ] {
                if schema.types.contains_key(name) {
                    *slot = Some(name.to_string());
                }
            }
        }
        Ok(schema)
    }

    /// `( ... )` argument definitions or `{ ... }` input fields, after the opening bracket.
    fn input_defs(&mut self, close: &str) -> Result<Vec<InputValue>, Error> {
        self.advance(); // ( or {
        let mut out = Vec::new();
        while !self.eat(close) {
            self.description();
            let (name, _) = self.name()?;
            self.expect(":")?;
            let ty = self.type_ref()?;
            let default = if self.eat("=") {
                Some(self.value(true)?)
            } else {
                None
            };
            self.directives(true)?;
            out.push(InputValue { name, ty, default });
        }
        Ok(out)
    }
}

/// Parses an executable document (operations and fragments).
pub fn parse(src: &str) -> Result<Document, Error> {
    Parser::new(src)?.document()
}

// ---------------------------------------------------------------------------------------------
// Schema

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scalar,
    Object,
    Interface,
    Union,
    Enum,
    InputObject,
}

/// An argument or an input object field.
#[derive(Debug, Clone, PartialEq)]
pub struct InputValue {
    pub name: String,
    pub ty: TypeRef,
    pub default: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldDef {
    pub name: String,
    pub args: Vec<InputValue>,
    pub ty: TypeRef,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TypeDef {
    pub name: String,
    pub kind: Kind,
    /// Objects and interfaces.
    pub fields: Vec<FieldDef>,
    /// Interfaces an object or interface implements.
    pub interfaces: Vec<String>,
    /// Union members.
    pub members: Vec<String>,
    /// Enum values.
    pub values: Vec<String>,
    /// Input object fields.
    pub inputs: Vec<InputValue>,
}

/// A schema read from SDL; the built-in scalars are always there.
#[derive(Debug, Clone)]
pub struct Schema {
    pub types: BTreeMap<String, TypeDef>,
    pub query: String,
    pub mutation: Option<String>,
    pub subscription: Option<String>,
}

const BUILTIN_SCALARS: [&str; 5] = ["Int", "Float", "String", "Boolean", "ID"];

impl Schema {
    /// Parses SDL (descriptions, directives and `schema { }` accepted, `extend` not).
    pub fn parse(src: &str) -> Result<Schema, Error> {
        let mut s = Parser::new(src)?.schema()?;
        for name in BUILTIN_SCALARS {
            s.types.entry(name.to_string()).or_insert_with(|| TypeDef {
                name: name.to_string(),
                kind: Kind::Scalar,
                fields: Vec::new(),
                interfaces: Vec::new(),
                members: Vec::new(),
                values: Vec::new(),
                inputs: Vec::new(),
            });
        }
        Ok(s)
    }

    /// Every type a definition refers to, that is missing (empty when the schema is whole).
    pub fn dangling_references(&self) -> Vec<String> {
        let mut missing = BTreeSet::new();
        let mut need = |n: &str| {
            if !self.types.contains_key(n) {
                missing.insert(n.to_string());
            }
        };
        need(&self.query);
        for t in self.types.values() {
            for f in &t.fields {
                need(f.ty.name());
                for a in &f.args {
                    need(a.ty.name());
                }
            }
            for n in t.interfaces.iter().chain(&t.members) {
                need(n);
            }
            for i in &t.inputs {
                need(i.ty.name());
            }
        }
        missing.into_iter().collect()
    }

    pub fn get(&self, name: &str) -> Option<&TypeDef> {
        self.types.get(name)
    }

    pub fn kind(&self, name: &str) -> Option<Kind> {
        self.get(name).map(|t| t.kind)
    }

    pub fn field(&self, ty: &str, name: &str) -> Option<&FieldDef> {
        self.get(ty)?.fields.iter().find(|f| f.name == name)
    }

    fn is_leaf(&self, name: &str) -> bool {
        matches!(self.kind(name), Some(Kind::Scalar | Kind::Enum))
    }

    fn is_composite(&self, name: &str) -> bool {
        matches!(
            self.kind(name),
            Some(Kind::Object | Kind::Interface | Kind::Union)
        )
    }

    fn is_input(&self, name: &str) -> bool {
        matches!(
            self.kind(name),
            Some(Kind::Scalar | Kind::Enum | Kind::InputObject)
        )
    }

    /// The object types a value of this type can be.
    pub fn possible_types(&self, name: &str) -> BTreeSet<&str> {
        let Some(t) = self.get(name) else {
            return BTreeSet::new();
        };
        match t.kind {
            Kind::Object => [t.name.as_str()].into(),
            Kind::Union => t.members.iter().map(String::as_str).collect(),
            Kind::Interface => self
                .types
                .values()
                .filter(|o| o.kind == Kind::Object && o.interfaces.contains(&t.name))
                .map(|o| o.name.as_str())
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    fn overlap(&self, a: &str, b: &str) -> bool {
        let pa = self.possible_types(a);
        self.possible_types(b).iter().any(|t| pa.contains(t))
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

/// Everything wrong with the document, in document order (empty when it may run).
pub fn validate(schema: &Schema, doc: &Document) -> Vec<Error> {
    let mut v = Validator {
        schema,
        frags: HashMap::new(),
        errors: Vec::new(),
        used_frags: HashSet::new(),
    };
    v.document(doc);
    let mut seen = HashSet::new();
    v.errors
        .into_iter()
        .filter(|e| seen.insert((e.message.clone(), e.locations.clone())))
        .collect()
}

struct Validator<'a> {
    schema: &'a Schema,
    frags: HashMap<&'a str, &'a Fragment>,
    errors: Vec<Error>,
    used_frags: HashSet<&'a str>,
}

/// The variables of the operation being validated, and which of them were used.
struct Scope<'a> {
    op: String,
    defs: HashMap<&'a str, &'a VarDef>,
    used: HashSet<String>,
}

/// A field as seen by the merge check: its parent type.
struct Flat<'a> {
    parent: String,
    field: &'a Field,
}

impl<'a> Validator<'a> {
    fn err(&mut self, msg: impl Into<String>, pos: Pos) {
        self.errors.push(Error::at(msg, pos));
    }

    fn document(&mut self, doc: &'a Document) {
        // Operations: names, kinds.
        let mut names = HashSet::new();
        for op in &doc.operations {
            match &op.name {
                Some(n) if !names.insert(n.as_str()) => {
                    self.err(format!("Operation name \"{n}\" must be unique"), op.pos)
                }
                None if doc.operations.len() > 1 => self.err(
                    "Operation name is required when multiple operations are present",
                    op.pos,
                ),
                _ => {}
            }
            let root = match op.kind {
                OpKind::Query => Some(&self.schema.query),
                OpKind::Mutation => self.schema.mutation.as_ref(),
                OpKind::Subscription => self.schema.subscription.as_ref(),
            };
            if root.is_none() {
                self.err(
                    format!(
                        "Schema is not configured for {} (this API serves queries only)",
                        op.kind.plural()
                    ),
                    op.pos,
                );
            }
        }
        // Fragments: names, type conditions, cycles.
        for f in &doc.fragments {
            if self.frags.insert(&f.name, f).is_some() {
                self.err(
                    format!("Fragment name \"{}\" must be unique", f.name),
                    f.pos,
                );
            }
            self.type_condition(Some(&f.type_cond), f.pos, Some(&f.name));
            self.directives(&f.directives, "fragment definitions", None);
        }
        for f in &doc.fragments {
            let mut stack = vec![f.name.as_str()];
            if self.cycles(&f.selections, &mut stack, &f.name) {
                self.err(
                    format!("Fragment {} contains an infinite loop", f.name),
                    f.pos,
                );
            }
        }
        // Operations: variables and selections.
        for op in &doc.operations {
            let root = match op.kind {
                OpKind::Query => Some(self.schema.query.clone()),
                OpKind::Mutation => self.schema.mutation.clone(),
                OpKind::Subscription => self.schema.subscription.clone(),
            };
            let Some(root) = root else { continue };
            let mut scope = Scope {
                op: op.label(),
                defs: HashMap::new(),
                used: HashSet::new(),
            };
            for vd in &op.vars {
                if scope.defs.insert(&vd.name, vd).is_some() {
                    self.err(
                        format!("There can only be one variable named \"{}\"", vd.name),
                        vd.pos,
                    );
                }
                let tname = vd.ty.name();
                if self.schema.get(tname).is_none() {
                    self.err(
                        format!("{tname} isn't a defined input type (on ${})", vd.name),
                        vd.pos,
                    );
                } else if !self.schema.is_input(tname) {
                    self.err(
                        format!("{tname} isn't a valid input type (on ${})", vd.name),
                        vd.pos,
                    );
                } else if let Some(d) = &vd.default {
                    let ctx = VarCtx {
                        arg: &vd.name,
                        has_default: false,
                        pos: vd.pos,
                    };
                    if !self.value_ok(d, &vd.ty, &ctx, None) {
                        self.err(
                            format!(
                                "Default value for ${} doesn't match type {}",
                                vd.name, vd.ty
                            ),
                            vd.pos,
                        );
                    }
                }
            }
            self.directives(&op.directives, op.kind.plural(), None);
            let mut visited = HashSet::new();
            self.selections(&root, &op.selections, &mut Some(&mut scope), &mut visited);
            for vd in &op.vars {
                if !scope.used.contains(&vd.name) {
                    self.err(
                        format!(
                            "Variable ${} is declared by {} but not used",
                            vd.name, scope.op
                        ),
                        vd.pos,
                    );
                }
            }
        }
        // Fragments no operation uses: an error, and their bodies are still checked.
        for f in &doc.fragments {
            if !self.used_frags.contains(f.name.as_str()) {
                self.err(
                    format!("Fragment {} was defined, but not used", f.name),
                    f.pos,
                );
                if self.schema.is_composite(&f.type_cond) {
                    let mut visited = HashSet::from([f.name.as_str()]);
                    self.selections(&f.type_cond, &f.selections, &mut None, &mut visited);
                }
            }
        }
    }

    /// Whether following spreads from `sels` leads back to the fragment at the bottom of the
    /// stack.
    fn cycles(&self, sels: &'a [Selection], stack: &mut Vec<&'a str>, target: &str) -> bool {
        for sel in sels {
            let found = match sel {
                Selection::Field(f) => self.cycles(&f.selections, stack, target),
                Selection::Inline { selections, .. } => self.cycles(selections, stack, target),
                Selection::Spread { name, .. } => {
                    if name == target {
                        true
                    } else if stack.contains(&name.as_str()) {
                        false
                    } else if let Some(f) = self.frags.get(name.as_str()) {
                        stack.push(name);
                        let r = self.cycles(&f.selections, stack, target);
                        stack.pop();
                        r
                    } else {
                        false
                    }
                }
            };
            if found {
                return true;
            }
        }
        false
    }

    /// Checks a type condition; true when it names a composite type.
    fn type_condition(&mut self, cond: Option<&str>, pos: Pos, frag: Option<&str>) -> bool {
        let Some(t) = cond else { return true };
        let what = match frag {
            Some(n) => format!("Fragment {n}"),
            None => "Inline fragment".into(),
        };
        match self.schema.kind(t) {
            None => {
                self.err(
                    format!("No such type {t}, so it can't be a fragment condition ({what})"),
                    pos,
                );
                false
            }
            Some(Kind::Object | Kind::Interface | Kind::Union) => true,
            Some(_) => {
                self.err(
                    format!("Invalid fragment on type {t} (must be Union, Interface or Object)"),
                    pos,
                );
                false
            }
        }
    }

    fn directives(&mut self, dirs: &'a [Directive], place: &str, scope: Option<&mut Scope<'a>>) {
        let mut scope = scope;
        let mut seen = HashSet::new();
        for d in dirs {
            if !seen.insert(d.name.as_str()) {
                self.err(
                    format!(
                        "The directive \"{}\" can only be used once at this location.",
                        d.name
                    ),
                    d.pos,
                );
            }
            if d.name != "skip" && d.name != "include" {
                self.err(format!("Directive @{} is not defined", d.name), d.pos);
                continue;
            }
            if !matches!(place, "fields" | "fragment spreads" | "inline fragments") {
                self.err(
                    format!(
                        "'@{}' can't be applied to {place} (allowed: fields, fragment spreads, inline fragments)",
                        d.name
                    ),
                    d.pos,
                );
                continue;
            }
            let def = InputValue {
                name: "if".into(),
                ty: TypeRef::NonNull(Box::new(TypeRef::Named("Boolean".into()))),
                default: None,
            };
            let site = format!("Directive '@{}'", d.name);
            self.arguments(
                &site,
                std::slice::from_ref(&def),
                &d.args,
                d.pos,
                &mut scope,
            );
        }
    }

    /// Argument names, values and required arguments of a field or directive.
    fn arguments(
        &mut self,
        site: &str,
        defs: &[InputValue],
        args: &'a [Arg],
        pos: Pos,
        scope: &mut Option<&mut Scope<'a>>,
    ) {
        let mut seen = HashSet::new();
        for a in args {
            if !seen.insert(a.name.as_str()) {
                self.err(
                    format!("There can be only one argument named \"{}\"", a.name),
                    a.pos,
                );
            }
            let Some(def) = defs.iter().find(|d| d.name == a.name) else {
                self.err(
                    format!("{site} doesn't accept argument '{}'", a.name),
                    a.pos,
                );
                continue;
            };
            let ctx = VarCtx {
                arg: &a.name,
                has_default: def.default.is_some(),
                pos: a.pos,
            };
            let ok = self.value_ok(&a.value, &def.ty, &ctx, scope.as_deref_mut());
            if !ok {
                self.err(
                    format!(
                        "Argument '{}' on {site} has an invalid value ({}). Expected type '{}'.",
                        a.name, a.value, def.ty
                    ),
                    a.pos,
                );
            }
        }
        let missing: Vec<&str> = defs
            .iter()
            .filter(|d| d.ty.is_non_null() && d.default.is_none())
            .filter(|d| !args.iter().any(|a| a.name == d.name))
            .map(|d| d.name.as_str())
            .collect();
        if !missing.is_empty() {
            self.err(
                format!(
                    "{site} is missing required arguments: {}",
                    missing.join(", ")
                ),
                pos,
            );
        }
    }

    /// Whether a value fits an input type; variables are checked against their definition
    /// when a scope is given (outside one, nothing is known about them).
    fn value_ok(
        &mut self,
        v: &'a Value,
        ty: &TypeRef,
        ctx: &VarCtx,
        mut scope: Option<&mut Scope<'a>>,
    ) -> bool {
        if let Value::Var(name) = v {
            let Some(s) = scope else { return true };
            s.used.insert(name.clone());
            let Some(def) = s.defs.get(name.as_str()).copied() else {
                let op = s.op.clone();
                self.err(
                    format!("Variable ${name} is used by {op} but not declared"),
                    ctx.pos,
                );
                return true;
            };
            let vt = &def.ty;
            let var_default = def.default.as_ref().is_some_and(|d| *d != Value::Null);
            let ok = if ty.is_non_null() && !vt.is_non_null() {
                (var_default || ctx.has_default) && types_compatible(vt, ty.nullable())
            } else {
                types_compatible(vt, ty)
            };
            if !ok {
                let kind = if vt.name() == ty.name() {
                    "Nullability"
                } else {
                    "Type"
                };
                self.err(
                    format!(
                        "{kind} mismatch on variable ${name} and argument {} ({vt} / {ty})",
                        ctx.arg
                    ),
                    ctx.pos,
                );
            }
            return true;
        }
        let inner = match ty {
            TypeRef::NonNull(t) => {
                if *v == Value::Null {
                    return false;
                }
                t.as_ref()
            }
            t => t,
        };
        if *v == Value::Null {
            return true;
        }
        let nested = VarCtx {
            has_default: false,
            ..*ctx
        };
        match inner {
            TypeRef::List(t) => match v {
                Value::List(items) => {
                    let mut ok = true;
                    for item in items {
                        ok &= self.value_ok(item, t, &nested, scope.as_deref_mut());
                    }
                    ok
                }
                _ => self.value_ok(v, t, &nested, scope),
            },
            TypeRef::NonNull(_) => false,
            TypeRef::Named(n) => {
                let schema = self.schema;
                let Some(def) = schema.get(n) else {
                    return false;
                };
                match def.kind {
                    Kind::Scalar => scalar_literal_ok(n, v),
                    Kind::Enum => matches!(v, Value::Enum(e) if def.values.contains(e)),
                    Kind::InputObject => {
                        let Value::Object(fields) = v else {
                            return false;
                        };
                        let mut ok = true;
                        for (k, fv) in fields {
                            match def.inputs.iter().find(|i| &i.name == k) {
                                Some(i) => {
                                    ok &= self.value_ok(fv, &i.ty, &nested, scope.as_deref_mut())
                                }
                                None => ok = false,
                            }
                        }
                        ok && def
                            .inputs
                            .iter()
                            .filter(|i| i.ty.is_non_null() && i.default.is_none())
                            .all(|i| fields.iter().any(|(k, _)| *k == i.name))
                    }
                    _ => false,
                }
            }
        }
    }

    fn selections(
        &mut self,
        parent: &str,
        sels: &'a [Selection],
        scope: &mut Option<&mut Scope<'a>>,
        visited: &mut HashSet<&'a str>,
    ) {
        self.merge_check(&[(parent.to_string(), sels)]);
        for sel in sels {
            match sel {
                Selection::Field(f) => self.field(parent, f, scope, visited),
                Selection::Inline {
                    type_cond,
                    directives,
                    selections,
                    pos,
                } => {
                    self.directives(directives, "inline fragments", scope.as_deref_mut());
                    if !self.type_condition(type_cond.as_deref(), *pos, None) {
                        continue;
                    }
                    let t = type_cond.clone().unwrap_or_else(|| parent.to_string());
                    if !self.schema.overlap(parent, &t) {
                        self.err(
                            format!("Fragment on {t} can't be spread inside {parent}"),
                            *pos,
                        );
                        continue;
                    }
                    self.selections(&t, selections, scope, visited);
                }
                Selection::Spread {
                    name,
                    directives,
                    pos,
                } => {
                    self.directives(directives, "fragment spreads", scope.as_deref_mut());
                    let Some(f) = self.frags.get(name.as_str()).copied() else {
                        self.err(format!("Fragment {name} was used, but not defined"), *pos);
                        continue;
                    };
                    self.used_frags.insert(&f.name);
                    if !self.schema.is_composite(&f.type_cond) {
                        continue;
                    }
                    if !self.schema.overlap(parent, &f.type_cond) {
                        self.err(
                            format!(
                                "Fragment {name} on {} can't be spread inside {parent}",
                                f.type_cond
                            ),
                            *pos,
                        );
                        continue;
                    }
                    if visited.insert(&f.name) {
                        self.selections(&f.type_cond, &f.selections, scope, visited);
                    }
                }
            }
        }
    }

    fn field(
        &mut self,
        parent: &str,
        f: &'a Field,
        scope: &mut Option<&mut Scope<'a>>,
        visited: &mut HashSet<&'a str>,
    ) {
        self.directives(&f.directives, "fields", scope.as_deref_mut());
        if f.name == "__typename" {
            self.arguments(&format!("Field '{}'", f.name), &[], &f.args, f.pos, scope);
            if !f.selections.is_empty() {
                self.err(
                    "Selections can't be made on scalars (field '__typename' returns String!)",
                    f.pos,
                );
            }
            return;
        }
        let kind = self.schema.kind(parent);
        if kind == Some(Kind::Union) {
            self.err(
                format!(
                    "Selections can't be made directly on unions (see selections on {parent}): use `... on Type` or __typename for '{}'",
                    f.name
                ),
                f.pos,
            );
            return;
        }
        let Some(def) = self.schema.field(parent, &f.name) else {
            self.err(
                format!("Field '{}' doesn't exist on type '{parent}'", f.name),
                f.pos,
            );
            return;
        };
        self.arguments(
            &format!("Field '{}'", f.name),
            &def.args,
            &f.args,
            f.pos,
            scope,
        );
        let ret = def.ty.name().to_string();
        if self.schema.is_leaf(&ret) {
            if !f.selections.is_empty() {
                let what = if self.schema.kind(&ret) == Some(Kind::Enum) {
                    "enums"
                } else {
                    "scalars"
                };
                let names: Vec<String> = f
                    .selections
                    .iter()
                    .map(|s| match s {
                        Selection::Field(x) => x.name.clone(),
                        Selection::Inline { .. } => "...".into(),
                        Selection::Spread { name, .. } => format!("...{name}"),
                    })
                    .collect();
                self.err(
                    format!(
                        "Selections can't be made on {what} (field '{}' returns {ret} but has selections [{}])",
                        f.name,
                        names.join(", ")
                    ),
                    f.pos,
                );
            }
        } else if f.selections.is_empty() {
            self.err(
                format!(
                    "Field must have selections (field '{}' returns {ret} but has no selections. Did you mean '{} {{ ... }}'?)",
                    f.name, f.name
                ),
                f.pos,
            );
        } else {
            self.selections(&ret, &f.selections, scope, visited);
        }
    }

    /// Fields that land on the same response key must be the same field with the same
    /// arguments (unless their parents are distinct object types); their sub-selections merge
    /// and are checked together. `sets` are selection sets that merge, each with its parent.
    fn merge_check(&mut self, sets: &[(String, &'a [Selection])]) {
        let schema = self.schema;
        let mut flat = Vec::new();
        let mut seen = HashSet::new();
        for (parent, sels) in sets {
            self.flatten(parent, sels, &mut flat, &mut seen);
        }
        let mut groups: Vec<(&str, Vec<&Flat>)> = Vec::new();
        for fl in &flat {
            let key = fl.field.key();
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.push(fl),
                None => groups.push((key, vec![fl])),
            }
        }
        for (key, group) in groups {
            if group.len() < 2 {
                continue;
            }
            let first = group[0];
            let mut merged: Vec<(String, &'a [Selection])> = Vec::new();
            let mut push_sub = |fl: &Flat<'a>| {
                if let Some(d) = schema.field(&fl.parent, &fl.field.name) {
                    if schema.is_composite(d.ty.name()) {
                        merged.push((d.ty.name().to_string(), &fl.field.selections));
                    }
                }
            };
            push_sub(first);
            for other in &group[1..] {
                let distinct_objects = first.parent != other.parent
                    && schema.kind(&first.parent) == Some(Kind::Object)
                    && schema.kind(&other.parent) == Some(Kind::Object);
                if distinct_objects {
                    continue;
                }
                if first.field.name != other.field.name {
                    self.err(
                        format!(
                            "Field '{key}' has a field conflict: {} or {}?",
                            first.field.name, other.field.name
                        ),
                        other.field.pos,
                    );
                } else if !same_args(&first.field.args, &other.field.args) {
                    let show = |a: &[Arg]| {
                        let parts: Vec<String> = a
                            .iter()
                            .map(|a| format!("{}: {}", a.name, a.value))
                            .collect();
                        format!("{{{}}}", parts.join(", "))
                    };
                    self.err(
                        format!(
                            "Field '{key}' has an argument conflict: {} or {}?",
                            show(&first.field.args),
                            show(&other.field.args)
                        ),
                        other.field.pos,
                    );
                } else {
                    push_sub(other);
                }
            }
            if merged.len() > 1 {
                self.merge_check(&merged);
            }
        }
    }

    fn flatten(
        &self,
        parent: &str,
        sels: &'a [Selection],
        out: &mut Vec<Flat<'a>>,
        seen: &mut HashSet<&'a str>,
    ) {
        for sel in sels {
            match sel {
                Selection::Field(f) => out.push(Flat {
                    parent: parent.to_string(),
                    field: f,
                }),
                Selection::Inline {
                    type_cond,
                    selections,
                    ..
                } => {
                    let t = type_cond.as_deref().unwrap_or(parent);
                    if self.schema.is_composite(t) {
                        self.flatten(t, selections, out, seen);
                    }
                }
                Selection::Spread { name, .. } => {
                    if let Some(f) = self.frags.get(name.as_str()) {
                        if seen.insert(&f.name) && self.schema.is_composite(&f.type_cond) {
                            self.flatten(&f.type_cond, &f.selections, out, seen);
                        }
                    }
                }
            }
        }
    }
}

/// Where a variable is used: the argument and whether it has a default.
#[derive(Clone, Copy)]
struct VarCtx<'s> {
    arg: &'s str,
    has_default: bool,
    pos: Pos,
}

fn same_args(a: &[Arg], b: &[Arg]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| y.name == x.name && y.value == x.value))
}

/// The spec's AreTypesCompatible(variableType, locationType).
fn types_compatible(var: &TypeRef, loc: &TypeRef) -> bool {
    match (var, loc) {
        (TypeRef::NonNull(v), TypeRef::NonNull(l)) => types_compatible(v, l),
        (_, TypeRef::NonNull(_)) => false,
        (TypeRef::NonNull(v), l) => types_compatible(v, l),
        (TypeRef::List(v), TypeRef::List(l)) => types_compatible(v, l),
        (_, TypeRef::List(_)) | (TypeRef::List(_), _) => false,
        (TypeRef::Named(v), TypeRef::Named(l)) => v == l,
    }
}

fn scalar_literal_ok(scalar: &str, v: &Value) -> bool {
    match scalar {
        "Int" => matches!(v, Value::Int(n) if i32::try_from(*n).is_ok()),
        "Float" => matches!(v, Value::Int(_) | Value::Float(_)),
        "String" | "DateTime" => matches!(v, Value::Str(_)),
        "Boolean" => matches!(v, Value::Bool(_)),
        "ID" => matches!(v, Value::Str(_) | Value::Int(_)),
        "JSInt" => matches!(v, Value::Int(_)),
        // Other custom scalars (JSON, YAML, ...) take any literal.
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Input coercion

/// A JSON input value coerced to an input type, or why it does not fit.
pub fn coerce_input(schema: &Schema, v: &Json, ty: &TypeRef) -> Result<Json, String> {
    match ty {
        TypeRef::NonNull(t) => {
            if v.is_null() {
                Err(format!("Expected value to not be null (type {ty})"))
            } else {
                coerce_input(schema, v, t)
            }
        }
        _ if v.is_null() => Ok(Json::Null),
        TypeRef::List(t) => match v {
            Json::Array(items) => items
                .iter()
                .map(|i| coerce_input(schema, i, t))
                .collect::<Result<Vec<_>, _>>()
                .map(Json::Array),
            other => Ok(Json::Array(vec![coerce_input(schema, other, t)?])),
        },
        TypeRef::Named(n) => {
            let bad = || format!("Could not coerce value {v} to {n}");
            let def = schema.get(n).ok_or_else(bad)?;
            match def.kind {
                Kind::Scalar => coerce_scalar(n, v).ok_or_else(bad),
                Kind::Enum => match v {
                    Json::String(s) if def.values.contains(s) => Ok(v.clone()),
                    _ => Err(format!(
                        "Expected {v} to be one of: {}",
                        def.values.join(", ")
                    )),
                },
                Kind::InputObject => {
                    let Json::Object(m) = v else {
                        return Err(bad());
                    };
                    let mut out = Map::new();
                    for (k, fv) in m {
                        let i = def
                            .inputs
                            .iter()
                            .find(|i| &i.name == k)
                            .ok_or_else(|| format!("Field '{k}' is not defined on {n}"))?;
                        out.insert(k.clone(), coerce_input(schema, fv, &i.ty)?);
                    }
                    for i in &def.inputs {
                        if !out.contains_key(&i.name) {
                            if let Some(d) = &i.default {
                                out.insert(i.name.clone(), literal_json(d));
                            } else if i.ty.is_non_null() {
                                return Err(format!("Field '{}' of {n} is required", i.name));
                            }
                        }
                    }
                    Ok(Json::Object(out))
                }
                _ => Err(bad()),
            }
        }
    }
}

fn coerce_scalar(scalar: &str, v: &Json) -> Option<Json> {
    let integral = |v: &Json| -> Option<i64> {
        v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
    };
    match scalar {
        "Int" => integral(v)
            .filter(|n| i32::try_from(*n).is_ok())
            .map(Json::from),
        "JSInt" => integral(v).map(Json::from),
        "Float" => v.as_f64().map(Json::from),
        "String" | "DateTime" => v.as_str().map(|_| v.clone()),
        "Boolean" => v.as_bool().map(Json::Bool),
        "ID" => match v {
            Json::String(_) => Some(v.clone()),
            _ => v.as_i64().map(|n| Json::String(n.to_string())),
        },
        _ => Some(v.clone()),
    }
}

/// A constant literal as JSON (enum values become strings).
fn literal_json(v: &Value) -> Json {
    match v {
        Value::Var(_) | Value::Null => Json::Null,
        Value::Int(n) => Json::from(*n),
        Value::Float(x) => Json::from(*x),
        Value::Str(s) | Value::Enum(s) => Json::String(s.clone()),
        Value::Bool(b) => Json::Bool(*b),
        Value::List(items) => Json::Array(items.iter().map(literal_json).collect()),
        Value::Object(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), literal_json(v)))
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Execution

/// The coerced arguments of one field: absent when neither given nor defaulted.
#[derive(Debug, Clone, Default)]
pub struct Args(BTreeMap<String, Json>);

impl Args {
    /// The value, `None` when absent or `null`.
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(Json::as_i64)
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Json::as_str)
    }

    /// A list of strings (enum values included).
    pub fn strs(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).and_then(Json::as_array).map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    }
}

/// What a resolver hands back for one field.
pub enum Out<O> {
    Null,
    /// A scalar or enum value (checked against the field's type).
    Leaf(Json),
    Object(O),
    List(Vec<Out<O>>),
}

/// Resolves fields of the application's objects.
pub trait Resolver {
    /// A value of some object type.
    type Obj;
    /// The object type of a value (for `__typename`, fragments and abstract types).
    fn type_of(&self, obj: &Self::Obj) -> &'static str;
    /// One field of an object, with its coerced arguments. An `Err` is a field error.
    fn resolve(&self, obj: &Self::Obj, field: &str, args: &Args) -> Result<Out<Self::Obj>, String>;
}

/// Response data, keeping the order of the selections.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Null,
    Leaf(Json),
    List(Vec<Data>),
    Object(Vec<(String, Data)>),
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::Null => s.serialize_unit(),
            Data::Leaf(v) => v.serialize(s),
            Data::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Data::Object(fields) => {
                let mut m = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

/// The outcome of one request: `data` is `Null` when the request failed before execution.
#[derive(Debug, Clone)]
pub struct Response {
    pub data: Data,
    pub errors: Vec<Error>,
}

impl Response {
    fn failed(errors: Vec<Error>) -> Response {
        Response {
            data: Data::Null,
            errors,
        }
    }

    /// `{"data": .., "errors": [..]}` (`errors` only when there are some).
    pub fn body(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            data: &'a Data,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            errors: Vec<Json>,
        }
        serde_json::to_string(&Body {
            data: &self.data,
            errors: self.errors.iter().map(Error::to_json).collect(),
        })
        .unwrap_or_else(|_| r#"{"data":null,"errors":[{"message":"serialization failed"}]}"#.into())
    }
}

/// Parses, validates and runs one request.
pub fn run<R: Resolver>(
    schema: &Schema,
    query: &str,
    operation_name: Option<&str>,
    variables: &Map<String, Json>,
    resolver: &R,
    root: R::Obj,
) -> Response {
    let doc = match parse(query) {
        Ok(d) => d,
        Err(e) => return Response::failed(vec![e]),
    };
    let errors = validate(schema, &doc);
    if !errors.is_empty() {
        return Response::failed(errors);
    }
    let op = match operation_name {
        Some(name) => match doc
            .operations
            .iter()
            .find(|o| o.name.as_deref() == Some(name))
        {
            Some(op) => op,
            None => {
                return Response::failed(vec![Error::new(format!("No operation named \"{name}\""))])
            }
        },
        None => match doc.operations.as_slice() {
            [op] => op,
            [] => return Response::failed(vec![Error::new("No operations in the document")]),
            _ => {
                return Response::failed(vec![Error::new(
                    "An operation name is required when the document has several operations",
                )])
            }
        },
    };
    let vars = match coerce_variables(schema, op, variables) {
        Ok(v) => v,
        Err(e) => return Response::failed(e),
    };
    let mut ex = Executor {
        schema,
        frags: doc.fragments.iter().map(|f| (f.name.as_str(), f)).collect(),
        vars: &vars,
        resolver,
        errors: Vec::new(),
    };
    let root_type = schema.query.clone();
    let mut groups = Vec::new();
    ex.collect(&root_type, &op.selections, &mut groups, &mut HashSet::new());
    let mut path = Vec::new();
    let data = match ex.fields(&root, &root_type, &groups, &mut path) {
        Ok(fields) => Data::Object(fields),
        Err(()) => Data::Null,
    };
    Response {
        data,
        errors: ex.errors,
    }
}

fn coerce_variables(
    schema: &Schema,
    op: &Operation,
    given: &Map<String, Json>,
) -> Result<BTreeMap<String, Json>, Vec<Error>> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for vd in &op.vars {
        match given.get(&vd.name) {
            Some(v) => match coerce_input(schema, v, &vd.ty) {
                Ok(v) => {
                    out.insert(vd.name.clone(), v);
                }
                Err(why) => errors.push(Error::at(
                    format!(
                        "Variable ${} of type {} was provided invalid value: {why}",
                        vd.name, vd.ty
                    ),
                    vd.pos,
                )),
            },
            None => {
                if let Some(d) = &vd.default {
                    out.insert(vd.name.clone(), literal_json(d));
                } else if vd.ty.is_non_null() {
                    errors.push(Error::at(
                        format!(
                            "Variable ${} of required type {} was not provided.",
                            vd.name, vd.ty
                        ),
                        vd.pos,
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

struct Executor<'a, R: Resolver> {
    schema: &'a Schema,
    frags: HashMap<&'a str, &'a Fragment>,
    vars: &'a BTreeMap<String, Json>,
    resolver: &'a R,
    errors: Vec<Error>,
}

type Groups<'a> = Vec<(String, Vec<&'a Field>)>;

impl<'a, R: Resolver> Executor<'a, R> {
    fn error(&mut self, msg: impl Into<String>, pos: Pos, path: &[PathSeg]) {
        self.errors.push(Error {
            message: msg.into(),
            locations: vec![pos],
            path: Some(path.to_vec()),
        });
    }

    /// `@skip` / `@include`.
    fn included(&self, dirs: &[Directive]) -> bool {
        dirs.iter().all(|d| {
            let cond = d
                .args
                .iter()
                .find(|a| a.name == "if")
                .and_then(|a| self.value(&a.value))
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            match d.name.as_str() {
                "skip" => !cond,
                "include" => cond,
                _ => true,
            }
        })
    }

    fn applies(&self, cond: &str, object: &str) -> bool {
        cond == object || self.schema.possible_types(cond).contains(object)
    }

    fn collect(
        &self,
        object: &str,
        sels: &'a [Selection],
        out: &mut Groups<'a>,
        visited: &mut HashSet<&'a str>,
    ) {
        for sel in sels {
            match sel {
                Selection::Field(f) => {
                    if !self.included(&f.directives) {
                        continue;
                    }
                    match out.iter_mut().find(|(k, _)| k == f.key()) {
                        Some((_, g)) => g.push(f),
                        None => out.push((f.key().to_string(), vec![f])),
                    }
                }
                Selection::Inline {
                    type_cond,
                    directives,
                    selections,
                    ..
                } => {
                    if !self.included(directives) {
                        continue;
                    }
                    if type_cond.as_deref().is_none_or(|t| self.applies(t, object)) {
                        self.collect(object, selections, out, visited);
                    }
                }
                Selection::Spread {
                    name, directives, ..
                } => {
                    if !self.included(directives) || !visited.insert(name.as_str()) {
                        continue;
                    }
                    if let Some(f) = self.frags.get(name.as_str()).copied() {
                        if self.applies(&f.type_cond, object) {
                            self.collect(object, &f.selections, out, visited);
                        }
                    }
                }
            }
        }
    }

    /// A value with variables substituted; `None` for an absent variable.
    fn value(&self, v: &Value) -> Option<Json> {
        Some(match v {
            Value::Var(name) => return self.vars.get(name).cloned(),
            Value::List(items) => Json::Array(
                items
                    .iter()
                    .map(|i| self.value(i).unwrap_or(Json::Null))
                    .collect(),
            ),
            Value::Object(fields) => Json::Object(
                fields
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), self.value(v)?)))
                    .collect(),
            ),
            other => literal_json(other),
        })
    }

    fn args(&self, defs: &[InputValue], given: &[Arg]) -> Result<Args, String> {
        let mut out = BTreeMap::new();
        for def in defs {
            let v = given
                .iter()
                .find(|a| a.name == def.name)
                .and_then(|a| self.value(&a.value))
                .or_else(|| def.default.as_ref().map(literal_json));
            match v {
                Some(v) => {
                    let v = coerce_input(self.schema, &v, &def.ty)
                        .map_err(|why| format!("Argument '{}' is invalid: {why}", def.name))?;
                    out.insert(def.name.clone(), v);
                }
                None if def.ty.is_non_null() => {
                    return Err(format!(
                        "Argument '{}' of type {} is required",
                        def.name, def.ty
                    ))
                }
                None => {}
            }
        }
        Ok(Args(out))
    }

    /// Executes grouped fields on one object; `Err` when a non-null field failed (the object
    /// becomes null).
    fn fields(
        &mut self,
        obj: &R::Obj,
        object: &str,
        groups: &Groups<'a>,
        path: &mut Vec<PathSeg>,
    ) -> Result<Vec<(String, Data)>, ()> {
        let mut out = Vec::with_capacity(groups.len());
        for (key, fields) in groups {
            let f = fields[0];
            path.push(PathSeg::Key(key.clone()));
            let value = if f.name == "__typename" {
                Ok(Data::Leaf(Json::String(object.to_string())))
            } else {
                self.field(obj, object, fields, path)
            };
            path.pop();
            out.push((key.clone(), value?));
        }
        Ok(out)
    }

    fn field(
        &mut self,
        obj: &R::Obj,
        object: &str,
        fields: &[&'a Field],
        path: &mut Vec<PathSeg>,
    ) -> Result<Data, ()> {
        let f = fields[0];
        let schema = self.schema;
        let Some(def) = schema.field(object, &f.name) else {
            self.error(
                format!("Field '{}' doesn't exist on type '{object}'", f.name),
                f.pos,
                path,
            );
            return Ok(Data::Null);
        };
        let site = format!("{object}.{}", f.name);
        let resolved = self
            .args(&def.args, &f.args)
            .and_then(|args| self.resolver.resolve(obj, &f.name, &args));
        match resolved {
            Ok(out) => self.complete(&def.ty, &site, fields, out, path),
            Err(msg) => {
                self.error(msg, f.pos, path);
                if def.ty.is_non_null() {
                    Err(())
                } else {
                    Ok(Data::Null)
                }
            }
        }
    }

    fn complete(
        &mut self,
        ty: &TypeRef,
        site: &str,
        fields: &[&'a Field],
        out: Out<R::Obj>,
        path: &mut Vec<PathSeg>,
    ) -> Result<Data, ()> {
        match ty {
            TypeRef::NonNull(inner) => {
                let d = self.complete_nullable(inner, site, fields, out, path)?;
                if d == Data::Null {
                    self.error(
                        format!("Cannot return null for non-nullable field {site}"),
                        fields[0].pos,
                        path,
                    );
                    Err(())
                } else {
                    Ok(d)
                }
            }
            _ => Ok(self
                .complete_nullable(ty, site, fields, out, path)
                .unwrap_or(Data::Null)),
        }
    }

    fn complete_nullable(
        &mut self,
        ty: &TypeRef,
        site: &str,
        fields: &[&'a Field],
        out: Out<R::Obj>,
        path: &mut Vec<PathSeg>,
    ) -> Result<Data, ()> {
        let pos = fields[0].pos;
        if let Out::Null = out {
            return Ok(Data::Null);
        }
        match ty {
            TypeRef::NonNull(_) => unreachable!("complete() unwraps non-null"),
            TypeRef::List(inner) => {
                let Out::List(items) = out else {
                    self.error(format!("{site} did not resolve to a list"), pos, path);
                    return Err(());
                };
                let mut data = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    path.push(PathSeg::Index(i));
                    let d = self.complete(inner, site, fields, item, path);
                    path.pop();
                    data.push(d?);
                }
                Ok(Data::List(data))
            }
            TypeRef::Named(name) => {
                let schema = self.schema;
                let Some(def) = schema.get(name) else {
                    self.error(format!("{site}: unknown type {name}"), pos, path);
                    return Err(());
                };
                match (def.kind, out) {
                    (Kind::Scalar | Kind::Enum, Out::Leaf(v)) => {
                        let ok = match def.kind {
                            Kind::Enum => v
                                .as_str()
                                .filter(|s| def.values.iter().any(|e| e == s))
                                .map(|_| v.clone()),
                            _ => coerce_scalar(name, &v),
                        };
                        match ok {
                            Some(v) => Ok(Data::Leaf(v)),
                            None => {
                                self.error(
                                    format!("{site}: {v} is not a valid {name} value"),
                                    pos,
                                    path,
                                );
                                Err(())
                            }
                        }
                    }
                    (Kind::Object | Kind::Interface | Kind::Union, Out::Object(o)) => {
                        let object = self.resolver.type_of(&o);
                        if !schema.possible_types(name).contains(object) {
                            self.error(
                                format!("{site}: {object} is not a possible type of {name}"),
                                pos,
                                path,
                            );
                            return Err(());
                        }
                        let mut groups = Vec::new();
                        let mut visited = HashSet::new();
                        for f in fields {
                            self.collect(object, &f.selections, &mut groups, &mut visited);
                        }
                        self.fields(&o, object, &groups, path).map(Data::Object)
                    }
                    _ => {
                        self.error(
                            format!("{site} resolved to a value that does not fit {name}"),
                            pos,
                            path,
                        );
                        Err(())
                    }
                }
            }
        }
    }
}
