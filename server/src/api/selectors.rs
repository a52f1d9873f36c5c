//! Label and field selectors, parsed and applied the way the Kubernetes API
//! server does for `?labelSelector=` and `?fieldSelector=` on list and watch.
//!
//! The grammar, the validation rules and the error wording follow
//! apimachinery's `labels` and `fields` packages and the per-kind field label
//! conversions of kube-apiserver, so that kubectl and client libraries get the
//! answers (and the messages) they would get from a real API server.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// Why a selector could not be parsed or used.
///
/// Messages reproduce upstream's wording, including the parts upstream
/// capitalises (`Invalid value`), because clients show them verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label selector string breaks the grammar between requirements.
    #[error("{0}")]
    Syntax(String),
    /// A requirement inside a label selector string is malformed or invalid.
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A requirement of a label selector object failed validation.
    #[error("{0}")]
    InvalidRequirement(String),
    /// A label selector object used an operator other than `In`, `NotIn`,
    /// `Exists` or `DoesNotExist`.
    #[error("{} is not a valid label selector operator", go_quote(.0))]
    InvalidOperator(String),
    /// A label selector object is not shaped like a `metav1.LabelSelector`.
    #[error("invalid label selector: {0}")]
    MalformedObject(String),
    /// A field selector term has none of `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldTerm {
        /// The whole selector as given.
        selector: String,
        /// The term that could not be understood.
        term: String,
    },
    /// A field selector value holds a backslash that escapes neither `\`, `,`
    /// nor `=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A field selector value holds a bare `,` or `=`.
    // Upstream prints the rune with %v, which is its code point.
    #[error("invalid field selector: unescaped character in value: {}", code_point(.0))]
    UnescapedCharacter(char),
    /// A field selector names a field the kind cannot be filtered by.
    #[error("{message}")]
    UnsupportedField {
        /// The rejected field label.
        label: String,
        /// Upstream's message, whose wording differs between API groups.
        message: String,
    },
}

fn code_point(c: &char) -> u32 {
    u32::from(*c)
}

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Operator,
    values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        // Labels are map[string]string upstream; anything else cannot be a label.
        let value = labels
            .and_then(|m| m.get(&self.key))
            .and_then(Value::as_str);
        match self.op {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotIn | Operator::NotEquals => {
                value.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(actual) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let [bound] = self.values.as_slice() else {
                    return false;
                };
                let Ok(bound) = bound.parse::<i64>() else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.op {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        let values = values.join(",");
        if matches!(self.op, Operator::In | Operator::NotIn) {
            write!(f, "({values})")
        } else {
            f.write_str(&values)
        }
    }
}

/// A parsed label selector, from the string form (`?labelSelector=`) or the
/// object form (`metav1.LabelSelector`).
///
/// All requirements must hold (logical AND). The default value is the empty
/// selector, which matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    // A null metav1.LabelSelector selects nothing, unlike an empty one.
    nothing: bool,
}

impl LabelSelector {
    /// Parses the string form, e.g. `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    ///
    /// Also accepts `==`, `key>N` and `key<N`, whitespace around tokens, and
    /// `()` as a set holding only the empty value, exactly as upstream does.
    /// Keys must be qualified names and values valid label values.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser::new(s);
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Converts the object form
    /// `{matchLabels: {...}, matchExpressions: [{key, operator, values}]}`.
    ///
    /// `null` selects nothing; an object without requirements selects
    /// everything.
    pub fn from_object(v: &Value) -> Result<Self, SelectorError> {
        let obj = match v {
            Value::Null => {
                return Ok(Self {
                    requirements: Vec::new(),
                    nothing: true,
                })
            }
            Value::Object(obj) => obj,
            other => {
                return Err(SelectorError::MalformedObject(format!(
                    "expected an object, got {}",
                    json_type(other)
                )))
            }
        };
        let empty = Map::new();
        let match_labels = match obj.get("matchLabels") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(SelectorError::MalformedObject(format!(
                    "matchLabels must be an object, got {}",
                    json_type(other)
                )))
            }
        };
        let expressions: &[Value] = match obj.get("matchExpressions") {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                return Err(SelectorError::MalformedObject(format!(
                    "matchExpressions must be an array, got {}",
                    json_type(other)
                )))
            }
        };

        let mut requirements = Vec::with_capacity(match_labels.len() + expressions.len());
        for (key, value) in match_labels {
            let Some(value) = value.as_str() else {
                return Err(SelectorError::MalformedObject(format!(
                    "matchLabels[{key}] must be a string, got {}",
                    json_type(value)
                )));
            };
            let r = new_requirement(key, Operator::Equals, vec![value.to_owned()])
                .map_err(SelectorError::InvalidRequirement)?;
            requirements.push(r);
        }
        for (i, expr) in expressions.iter().enumerate() {
            let Some(expr) = expr.as_object() else {
                return Err(SelectorError::MalformedObject(format!(
                    "matchExpressions[{i}] must be an object, got {}",
                    json_type(expr)
                )));
            };
            // Missing fields decode to their zero values upstream and then fail
            // validation with the usual messages.
            let key = optional_str(expr, "key", i)?;
            let operator = optional_str(expr, "operator", i)?;
            let values = match expr.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_owned).ok_or_else(|| {
                            SelectorError::MalformedObject(format!(
                                "matchExpressions[{i}].values must hold strings, got {}",
                                json_type(v)
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(SelectorError::MalformedObject(format!(
                        "matchExpressions[{i}].values must be an array, got {}",
                        json_type(other)
                    )))
                }
            };
            let op = match operator {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::InvalidOperator(other.to_owned())),
            };
            let r = new_requirement(key, op, values).map_err(SelectorError::InvalidRequirement)?;
            requirements.push(r);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// Whether an object with these labels (`metadata.labels`, absent when
    /// `None`) is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector places no restriction at all (and so matches
    /// every object).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }
}

/// Renders the canonical string form: requirements sorted by key, set values
/// sorted. Parsing the output yields an equal selector.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

fn optional_str<'a>(
    expr: &'a Map<String, Value>,
    field: &str,
    index: usize,
) -> Result<&'a str, SelectorError> {
    match expr.get(field) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(SelectorError::MalformedObject(format!(
            "matchExpressions[{index}].{field} must be a string, got {}",
            json_type(other)
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Builds a requirement the way upstream's `NewRequirement` does, returning
/// the aggregated field errors as one message on failure.
fn new_requirement(key: &str, op: Operator, values: Vec<String>) -> Result<Requirement, String> {
    let mut errs = Vec::new();
    if let Some(msg) = label_key_errors(key) {
        errs.push(format!("key: Invalid value: {}: {msg}", go_quote(key)));
    }
    match op {
        Operator::In | Operator::NotIn => {
            if values.is_empty() {
                errs.push(format!(
                    "values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty",
                    go_string_slice(&values)
                ));
            }
        }
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
            if values.len() != 1 {
                errs.push(format!(
                    "values: Invalid value: {}: exact-match compatibility requires one single value",
                    go_string_slice(&values)
                ));
            }
        }
        Operator::Exists | Operator::DoesNotExist => {
            if !values.is_empty() {
                errs.push(format!(
                    "values: Invalid value: {}: values set must be empty for exists and does not exist",
                    go_string_slice(&values)
                ));
            }
        }
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                errs.push(format!(
                    "values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required",
                    go_string_slice(&values)
                ));
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(format!(
                        "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                        go_quote(v)
                    ));
                }
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        if let Some(msg) = label_value_errors(v) {
            errs.push(format!(
                "values[{i}][{key}]: Invalid value: {}: {msg}",
                go_quote(v)
            ));
        }
    }
    match aggregate(errs) {
        Some(msg) => Err(msg),
        None => Ok(Requirement {
            key: key.to_owned(),
            op,
            values,
        }),
    }
}

/// Joins field errors like upstream's `ErrorList.ToAggregate().Error()`:
/// duplicates dropped, a lone error bare, several in brackets.
fn aggregate(errs: Vec<String>) -> Option<String> {
    let mut unique: Vec<String> = Vec::with_capacity(errs.len());
    for e in errs {
        if !unique.contains(&e) {
            unique.push(e);
        }
    }
    match unique.len() {
        0 => None,
        1 => unique.pop(),
        _ => Some(format!("[{}]", unique.join(", "))),
    }
}

// --- lexer -----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    End,
    ClosePar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

#[derive(Debug, Clone, Copy)]
struct Item<'a> {
    token: Token,
    literal: &'a str,
}

const END: Item<'static> = Item {
    token: Token::End,
    literal: "",
};

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosePar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

/// Splits a label selector into tokens. Every byte that is neither
/// whitespace nor one of `=!(),<>` belongs to an identifier; validation of
/// identifiers happens later, so the lexer itself never fails.
fn lex(s: &str) -> Vec<Item<'_>> {
    let bytes = s.as_bytes();
    let mut items = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        let Some(&first) = bytes.get(pos) else {
            items.push(END);
            return items;
        };
        let start = pos;
        if is_special(first) {
            // Longest match; the only two-byte symbols are `==` and `!=`.
            pos += 1;
            if bytes.get(pos) == Some(&b'=') && matches!(first, b'=' | b'!') {
                pos += 1;
            }
            let literal = &s[start..pos];
            let token = symbol(literal).unwrap_or(Token::Identifier);
            items.push(Item { token, literal });
        } else {
            while pos < bytes.len() && !is_special(bytes[pos]) && !is_whitespace(bytes[pos]) {
                pos += 1;
            }
            // Slicing is safe: the delimiters are ASCII, so `pos` sits on a
            // character boundary.
            let literal = &s[start..pos];
            let token = match literal {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            };
            items.push(Item { token, literal });
        }
    }
}

// --- parser ----------------------------------------------------------------

/// Where the parser is: `in` and `notin` are operators after a key but plain
/// identifiers where a key or value is expected (`in in (in)` is valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

struct Parser<'a> {
    items: Vec<Item<'a>>,
    position: usize,
}

impl<'a> Parser<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            items: lex(s),
            position: 0,
        }
    }

    fn lookahead(&self, context: Context) -> Item<'a> {
        let item = self.items.get(self.position).copied().unwrap_or(END);
        Self::in_context(item, context)
    }

    fn consume(&mut self, context: Context) -> Item<'a> {
        let item = self.lookahead(context);
        self.position += 1;
        item
    }

    fn in_context(mut item: Item<'a>, context: Context) -> Item<'a> {
        if context == Context::Values && matches!(item.token, Token::In | Token::NotIn) {
            item.token = Token::Identifier;
        }
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let next = self.lookahead(Context::Values);
            match next.token {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(SelectorError::Requirement)?;
                    requirements.push(r);
                    let after = self.consume(Context::Values);
                    match after.token {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let following = self.lookahead(Context::Values);
                            if !matches!(following.token, Token::Identifier | Token::DoesNotExist) {
                                return Err(SelectorError::Syntax(format!(
                                    "found '{}', expected: identifier after ','",
                                    following.literal
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError::Syntax(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                after.literal
                            )))
                        }
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(SelectorError::Syntax(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        next.literal
                    )))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(op) = inferred {
            return new_requirement(key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, op, values)
    }

    /// Reads `[!]key`. A bare key followed by `,` or the end means Exists;
    /// `!key` always means DoesNotExist (anything after it is left for the
    /// caller to reject).
    fn parse_key_and_infer_operator(&mut self) -> Result<(&'a str, Option<Operator>), String> {
        let mut op = None;
        let mut item = self.consume(Context::Values);
        if item.token == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            item = self.consume(Context::Values);
        }
        if item.token != Token::Identifier {
            return Err(format!("found '{}', expected: identifier", item.literal));
        }
        let key = item.literal;
        if let Some(msg) = label_key_errors(key) {
            // Upstream validates the key here with a nil field path.
            return Err(format!("<nil>: Invalid value: {}: {msg}", go_quote(key)));
        }
        let next = self.lookahead(Context::Values);
        if matches!(next.token, Token::End | Token::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((key, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let item = self.consume(Context::KeyAndOperator);
        Ok(match item.token {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{}', expected: {BINARY_OPERATORS}",
                    item.literal
                ))
            }
        })
    }

    /// Reads `( values )`; the result is sorted and deduplicated, and empty
    /// slots (`()`, `(,a)`, `(a,)`) stand for the empty value.
    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let open = self.consume(Context::Values);
        if open.token != Token::OpenPar {
            return Err(format!("found '{}' expected: '('", open.literal));
        }
        let next = self.lookahead(Context::Values);
        match next.token {
            Token::Identifier | Token::Comma => {
                let set = self.parse_identifiers_list()?;
                let close = self.consume(Context::Values);
                if close.token != Token::ClosePar {
                    return Err(format!("found '{}', expected: ')'", next.literal));
                }
                Ok(set.into_iter().map(str::to_owned).collect())
            }
            Token::ClosePar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                next.literal
            )),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<&'a str>, String> {
        let mut set = BTreeSet::new();
        loop {
            let item = self.consume(Context::Values);
            match item.token {
                Token::Identifier => {
                    set.insert(item.literal);
                    let next = self.lookahead(Context::Values);
                    match next.token {
                        Token::Comma => continue,
                        Token::ClosePar => return Ok(set),
                        _ => return Err(format!("found '{}', expected: ',' or ')'", next.literal)),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert("");
                    }
                    match self.lookahead(Context::Values).token {
                        Token::ClosePar => {
                            set.insert("");
                            return Ok(set);
                        }
                        Token::Comma => {
                            set.insert("");
                        }
                        _ => {}
                    }
                }
                _ => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        item.literal
                    ))
                }
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        if matches!(
            self.lookahead(Context::Values).token,
            Token::End | Token::Comma
        ) {
            return Ok(vec![String::new()]);
        }
        let item = self.consume(Context::Values);
        if item.token == Token::Identifier {
            Ok(vec![item.literal.to_owned()])
        } else {
            Err(format!("found '{}', expected: identifier", item.literal))
        }
    }
}

// --- label key and value validation ---------------------------------------

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_MAX_LEN: usize = 63;
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_MAX_LEN: usize = 63;
const DNS1123_SUBDOMAIN_FMT: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;

fn regex_error(msg: &str, regex: &str, examples: &[&str]) -> String {
    // Mirrors upstream's RegexError, double spaces before "or" included.
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(example);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(regex);
    out.push_str("')");
    out
}

fn max_len_error(max: usize) -> String {
    format!("must be no more than {max} characters")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`
fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (b.first(), b.last()) {
            (Some(first), Some(last)) => {
                edge(first) && edge(last) && b.iter().all(|c| edge(c) || *c == b'-')
            }
            _ => false,
        }
    })
}

/// Upstream's `IsQualifiedName`, messages joined with `"; "`.
fn label_key_errors(key: &str) -> Option<String> {
    let name_examples = ["MyName", "my.name", "123-abc"];
    let mut errs = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                if prefix.len() > DNS1123_SUBDOMAIN_MAX_LEN {
                    errs.push(format!(
                        "prefix part {}",
                        max_len_error(DNS1123_SUBDOMAIN_MAX_LEN)
                    ));
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(DNS1123_SUBDOMAIN_ERR, DNS1123_SUBDOMAIN_FMT, &["example.com"])
                    ));
                }
            }
            *name
        }
        _ => {
            return Some(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &name_examples)
            ))
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > QUALIFIED_NAME_MAX_LEN {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LEN)
        ));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &name_examples)
        ));
    }
    (!errs.is_empty()).then(|| errs.join("; "))
}

/// Upstream's `IsValidLabelValue`, messages joined with `"; "`.
fn label_value_errors(value: &str) -> Option<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LEN {
        errs.push(max_len_error(LABEL_VALUE_MAX_LEN));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    (!errs.is_empty()).then(|| errs.join("; "))
}

/// Quotes like Go's `%q`, so messages match upstream byte for byte for the
/// common cases.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Formats like Go's `%#v` of a `[]string`; an empty list prints as the nil
/// slice because that is the only empty list upstream ever reports.
fn go_string_slice(values: &[String]) -> String {
    if values.is_empty() {
        return "[]string(nil)".to_owned();
    }
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Equals,
    NotEquals,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    op: FieldOp,
    value: String,
}

/// A parsed field selector: comma-separated `field=value`, `field==value`
/// and `field!=value` terms, all of which must hold.
///
/// Values may contain `\,`, `\=` and `\\` escapes; field names are taken
/// literally, whitespace included. The default value is the empty selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    // Sorted by their raw text, as upstream does, which decides which of two
    // conflicting terms `exact` reports.
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses the string form. Empty terms (`a=b,,c=d`) are skipped.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut terms = Vec::with_capacity(parts.len());
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, raw)) = split_term(part) else {
                return Err(SelectorError::FieldTerm {
                    selector: s.to_owned(),
                    term: part.to_owned(),
                });
            };
            terms.push(FieldTerm {
                field: field.to_owned(),
                op,
                value: unescape_value(raw)?,
            });
        }
        Ok(Self { terms })
    }

    /// Checks every field label against what the API server accepts for
    /// `group`/`kind` (`group` is `""` for the core group), failing on the
    /// first unsupported one with upstream's message for that kind.
    pub fn check_supported(&self, group: &str, kind: &str) -> Result<(), SelectorError> {
        self.terms
            .iter()
            .try_for_each(|t| check_field_label(group, kind, &t.field))
    }

    /// Whether `obj`, an object of `group`/`kind` in its JSON form, is
    /// selected. A field the kind does not expose reads as the empty string,
    /// as upstream's field sets do.
    pub fn matches(&self, group: &str, kind: &str, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let equal = if is_pod_ips(group, kind, canonical_field(group, kind, &t.field)) {
                // A pod has several IPs; the term names one of them.
                pod_ips(obj).iter().any(|ip| *ip == t.value)
            } else {
                field_value(group, kind, obj, &t.field).unwrap_or_default() == t.value
            };
            equal == (t.op == FieldOp::Equals)
        })
    }

    /// The value an exact `field=value` (or `==`) term asks for, if any; lets
    /// the caller narrow a list, e.g. to one `metadata.name`.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.op == FieldOp::Equals)
            .map(|t| t.value.as_str())
    }

    /// Whether the selector places no restriction at all.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// Renders the canonical string form, values escaped; parsing the output
/// yields an equal selector.
impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match t.op {
                FieldOp::Equals => "=",
                FieldOp::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", t.field, escape_value(&t.value))?;
        }
        Ok(())
    }
}

/// Splits on commas not escaped by a backslash; escapes stay in the terms.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::with_capacity(1);
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator; field names have no escaping, so the
/// earliest `!=`, `==` or `=` wins.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    const OPERATORS: [(&str, FieldOp); 3] = [
        ("!=", FieldOp::NotEquals),
        ("==", FieldOp::Equals),
        ("=", FieldOp::Equals),
    ];
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (text, op) in OPERATORS {
            if let Some(value) = rest.strip_prefix(text) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => return Err(SelectorError::InvalidEscape(format!("\\{other}"))),
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(SelectorError::UnescapedCharacter(c)),
            other => out.push(other),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidEscape("\\".to_owned()));
    }
    Ok(out)
}

fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// --- per-kind field labels -------------------------------------------------

/// How upstream words the rejection of a field label; it differs by group.
#[derive(Debug, Clone, Copy)]
enum Rejection {
    /// `field label not supported: <label>`
    Plain,
    /// `field label "<label>" not supported for batchv1.Job`
    BatchJob,
    /// `field label not supported for resource.k8s.io/v1, Kind=ResourceSlice: <label>`
    ResourceSlice,
}

const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
    // Old v1 clients still send it; upstream renames it to spec.nodeName.
    "spec.host",
];

const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];

// events.k8s.io spells the same selectable fields after its own schema.
const EVENTS_V1_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];

/// The field labels a kind's own conversion accepts (replacing the default
/// `metadata.name`/`metadata.namespace` pair), and how it words a rejection;
/// `None` for kinds that only have the default.
fn kind_fields(group: &str, kind: &str) -> Option<(&'static [&'static str], Rejection)> {
    Some(match (group, kind) {
        ("", "Pod") => (POD_FIELDS, Rejection::Plain),
        // Cluster-scoped kinds with their own conversion do not list
        // metadata.namespace, so upstream rejects it for them.
        ("", "Node") => (&["metadata.name", "spec.unschedulable"], Rejection::Plain),
        ("", "Namespace") => (&["status.phase", "metadata.name"], Rejection::Plain),
        ("", "ReplicationController") => (
            &["metadata.name", "metadata.namespace", "status.replicas"],
            Rejection::Plain,
        ),
        ("", "Event") => (CORE_EVENT_FIELDS, Rejection::Plain),
        ("", "Secret") => (
            &["type", "metadata.namespace", "metadata.name"],
            Rejection::Plain,
        ),
        ("", "Service") => (
            &[
                "metadata.namespace",
                "metadata.name",
                "spec.clusterIP",
                "spec.type",
            ],
            Rejection::Plain,
        ),
        ("apps", "ReplicaSet") => (
            &["metadata.name", "metadata.namespace", "status.replicas"],
            Rejection::Plain,
        ),
        ("batch", "Job") => (
            &["metadata.name", "metadata.namespace", "status.successful"],
            Rejection::BatchJob,
        ),
        ("certificates.k8s.io", "CertificateSigningRequest" | "ClusterTrustBundle") => {
            (&["metadata.name", "spec.signerName"], Rejection::Plain)
        }
        ("events.k8s.io", "Event") => (EVENTS_V1_FIELDS, Rejection::Plain),
        ("resource.k8s.io", "ResourceSlice") => (
            &["metadata.name", "spec.nodeName", "spec.driver"],
            Rejection::ResourceSlice,
        ),
        _ => return None,
    })
}

/// The field labels a kind exposes (every kind has at least name and namespace).
pub fn selectable_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match kind_fields(group, kind) {
        Some((fields, _)) => fields,
        None => &["metadata.name", "metadata.namespace"],
    }
}

fn check_field_label(group: &str, kind: &str, label: &str) -> Result<(), SelectorError> {
    let message = match kind_fields(group, kind) {
        Some((accepted, _)) if accepted.contains(&label) => return Ok(()),
        Some((_, Rejection::Plain)) => format!("field label not supported: {label}"),
        Some((_, Rejection::BatchJob)) => {
            format!(
                "field label {} not supported for batchv1.Job",
                go_quote(label)
            )
        }
        Some((_, Rejection::ResourceSlice)) => {
            format!("field label not supported for resource.k8s.io/v1, Kind=ResourceSlice: {label}")
        }
        None if label == "metadata.name" || label == "metadata.namespace" => return Ok(()),
        None => format!(
            "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
            go_quote(label)
        ),
    };
    Err(SelectorError::UnsupportedField {
        label: label.to_owned(),
        message,
    })
}

/// Maps the legacy and group-specific spellings upstream converts on input
/// to the field name the kind's field set uses.
fn canonical_field<'a>(group: &str, kind: &str, field: &'a str) -> &'a str {
    match (group, kind, field) {
        ("", "Pod", "spec.host") => "spec.nodeName",
        ("events.k8s.io", "Event", "reportingController") => "reportingComponent",
        ("events.k8s.io", "Event", f) => match f.strip_prefix("regarding.") {
            Some(rest) => match rest {
                "kind" => "involvedObject.kind",
                "namespace" => "involvedObject.namespace",
                "name" => "involvedObject.name",
                "uid" => "involvedObject.uid",
                "apiVersion" => "involvedObject.apiVersion",
                "resourceVersion" => "involvedObject.resourceVersion",
                "fieldPath" => "involvedObject.fieldPath",
                _ => f,
            },
            None => f,
        },
        _ => field,
    }
}

fn is_pod_ips(group: &str, kind: &str, field: &str) -> bool {
    group.is_empty() && kind == "Pod" && field == "status.podIPs"
}

fn at<'v>(obj: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(obj, |v, key| v.get(key))
}

fn str_at<'v>(obj: &'v Value, path: &[&str]) -> Option<&'v str> {
    at(obj, path).and_then(Value::as_str)
}

/// A string field, with upstream's API default when it is unset or empty.
fn string_or(obj: &Value, path: &[&str], default: &str) -> String {
    match str_at(obj, path) {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => default.to_owned(),
    }
}

fn bool_at(obj: &Value, path: &[&str]) -> String {
    let b = at(obj, path).and_then(Value::as_bool).unwrap_or(false);
    b.to_string()
}

fn int_at(obj: &Value, path: &[&str]) -> String {
    match at(obj, path) {
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_owned(),
    }
}

/// The pod's IPs, primary first. Objects written before `podIPs` existed
/// only carry `podIP`, which upstream's conversion turns into a one-element
/// list.
fn pod_ips(obj: &Value) -> Vec<&str> {
    let listed: Vec<&str> = at(obj, &["status", "podIPs"])
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip.get("ip").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if !listed.is_empty() {
        return listed;
    }
    match str_at(obj, &["status", "podIP"]) {
        Some(ip) if !ip.is_empty() => vec![ip],
        _ => vec![""],
    }
}

/// How a kind's field label reads from an object in its JSON form, as
/// upstream's `ToSelectableFields` computes it: bools as `"true"`/`"false"`,
/// integers in decimal, and API defaults applied to unset fields. Returns
/// `None` when the kind does not expose `field`.
///
/// `group` is `""` for the core group. Legacy and group-specific spellings
/// the API server accepts (`spec.host`, `regarding.*`,
/// `reportingController`) read the same as their canonical fields.
pub fn field_value(group: &str, kind: &str, obj: &Value, field: &str) -> Option<String> {
    let field = canonical_field(group, kind, field);
    match field {
        "metadata.name" => {
            return Some(str_at(obj, &["metadata", "name"]).unwrap_or("").to_owned())
        }
        "metadata.namespace" => {
            return Some(
                str_at(obj, &["metadata", "namespace"])
                    .unwrap_or("")
                    .to_owned(),
            )
        }
        _ => {}
    }
    match (group, kind) {
        ("", "Pod") => pod_field(obj, field),
        ("", "Node") => {
            (field == "spec.unschedulable").then(|| bool_at(obj, &["spec", "unschedulable"]))
        }
        ("", "Namespace") => {
            (field == "status.phase").then(|| string_or(obj, &["status", "phase"], "Active"))
        }
        ("", "ReplicationController") | ("apps", "ReplicaSet") => {
            (field == "status.replicas").then(|| int_at(obj, &["status", "replicas"]))
        }
        ("", "Secret") => (field == "type").then(|| string_or(obj, &["type"], "Opaque")),
        ("", "Service") => match field {
            "spec.clusterIP" => Some(string_or(obj, &["spec", "clusterIP"], "")),
            "spec.type" => Some(string_or(obj, &["spec", "type"], "ClusterIP")),
            _ => None,
        },
        ("", "Event") | ("events.k8s.io", "Event") => event_field(obj, field),
        // The label says "successful" but the status field is "succeeded".
        ("batch", "Job") => {
            (field == "status.successful").then(|| int_at(obj, &["status", "succeeded"]))
        }
        ("certificates.k8s.io", "CertificateSigningRequest" | "ClusterTrustBundle") => {
            (field == "spec.signerName").then(|| string_or(obj, &["spec", "signerName"], ""))
        }
        ("resource.k8s.io", "ResourceSlice") => match field {
            "spec.nodeName" => Some(string_or(obj, &["spec", "nodeName"], "")),
            "spec.driver" => Some(string_or(obj, &["spec", "driver"], "")),
            _ => None,
        },
        _ => None,
    }
}

fn pod_field(obj: &Value, field: &str) -> Option<String> {
    Some(match field {
        "spec.nodeName" => string_or(obj, &["spec", "nodeName"], ""),
        "spec.restartPolicy" => string_or(obj, &["spec", "restartPolicy"], "Always"),
        "spec.schedulerName" => string_or(obj, &["spec", "schedulerName"], "default-scheduler"),
        // v1 still carries the deprecated serviceAccount, which upstream's
        // conversion falls back to.
        "spec.serviceAccountName" => match str_at(obj, &["spec", "serviceAccountName"]) {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => string_or(obj, &["spec", "serviceAccount"], ""),
        },
        "spec.hostNetwork" => bool_at(obj, &["spec", "hostNetwork"]),
        // The registry sets Pending on create, so an unset phase means Pending.
        "status.phase" => string_or(obj, &["status", "phase"], "Pending"),
        "status.podIP" => pod_ips(obj).first().copied().unwrap_or("").to_owned(),
        "status.podIPs" => pod_ips(obj).join(","),
        "status.nominatedNodeName" => string_or(obj, &["status", "nominatedNodeName"], ""),
        _ => return None,
    })
}

/// Reads both shapes an Event can be stored in (core/v1 and
/// events.k8s.io/v1), since the two APIs serve the same objects.
fn event_field(obj: &Value, field: &str) -> Option<String> {
    let first = |paths: &[&[&str]]| -> String {
        paths
            .iter()
            .find_map(|p| str_at(obj, p).filter(|s| !s.is_empty()))
            .unwrap_or("")
            .to_owned()
    };
    if let Some(rest) = field.strip_prefix("involvedObject.") {
        return match rest {
            "kind" | "namespace" | "name" | "uid" | "apiVersion" | "resourceVersion"
            | "fieldPath" => Some(first(&[&["involvedObject", rest], &["regarding", rest]])),
            _ => None,
        };
    }
    let reporting = || first(&[&["reportingComponent"], &["reportingController"]]);
    Some(match field {
        "reason" => first(&[&["reason"]]),
        "type" => first(&[&["type"]]),
        "reportingComponent" => reporting(),
        // Upstream falls back to the reporting controller when the legacy
        // source is unset.
        "source" => {
            let source = first(&[&["source", "component"], &["deprecatedSource", "component"]]);
            if source.is_empty() {
                reporting()
            } else {
                source
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("labels must be an object"),
        }
    }

    fn label_matches(selector: &str, set: Value) -> bool {
        let sel = LabelSelector::parse(selector).unwrap();
        sel.matches(Some(&labels(set)))
    }

    fn label_err(selector: &str) -> String {
        LabelSelector::parse(selector).unwrap_err().to_string()
    }

    const VALUE_REGEX_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    const NAME_REGEX_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    // --- label selector: grammar ----------------------------------------

    #[test]
    fn good_strings_round_trip_without_spaces() {
        for s in [
            "x=a,y=b,z=c",
            "",
            "x!=a,y=b",
            "x=",
            "x= ",
            "x=,z= ",
            "x= ,z= ",
            "!x",
            "x>1",
            "x>1,z<5",
            "x==a",
        ] {
            let sel = LabelSelector::parse(s).unwrap();
            assert_eq!(sel.to_string(), s.replace(' ', ""), "selector {s:?}");
        }
    }

    #[test]
    fn requirements_are_sorted_by_key() {
        let a = LabelSelector::parse("x=a,a=x").unwrap();
        let b = LabelSelector::parse("a=x,x=a").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "a=x,x=a");
    }

    #[test]
    fn set_based_forms_and_whitespace() {
        let cases = [
            ("\rx", "x"),
            ("foo  in\t (abc)", "foo in (abc)"),
            ("x notin\n (abc)", "x notin (abc)"),
            ("x  notin\t\t\t(abc,def)", "x notin (abc,def)"),
            ("x in (def,abc,abc)", "x in (abc,def)"),
            ("x in (abc,)", "x in (,abc)"),
            ("x in ()", "x in ()"),
            ("x notin ( )", "x notin ()"),
            ("x notin (, a)", "x notin (,a)"),
            ("x in (a,,b)", "x in (,a,b)"),
            ("a ", "a"),
            ("x,y in (a)", "x,y in (a)"),
            ("a in (x,y,notin, z,in)", "a in (in,notin,x,y,z)"),
            (
                "x notin (abc,def),bar,z in (),w",
                "bar,w,x notin (abc,def),z in ()",
            ),
            ("x=a,y!=b,z in (h,i,j)", "x=a,y!=b,z in (h,i,j)"),
        ];
        for (input, want) in cases {
            let sel = LabelSelector::parse(input).unwrap();
            assert_eq!(sel.to_string(), want, "selector {input:?}");
        }
    }

    #[test]
    fn keys_with_prefixes_and_values_with_punctuation() {
        let sel = LabelSelector::parse(
            "this-is-another-dns.domain.com/key-with-dash in (so,what),0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock),app.kubernetes.io/name=my_app-1.0",
        )
        .unwrap();
        assert!(sel.matches(Some(&labels(json!({
            "this-is-another-dns.domain.com/key-with-dash": "so",
            "0.1.2.domain/99": "other",
            "app.kubernetes.io/name": "my_app-1.0",
        })))));
    }

    #[test]
    fn in_and_notin_are_identifiers_where_keys_and_values_go() {
        assert!(label_matches("notin=in", json!({"notin": "in"})));
        assert!(label_matches("in in (in)", json!({"in": "in"})));
        assert!(label_matches("!in", json!({"x": "y"})));
    }

    #[test]
    fn grammar_errors_use_upstream_wording() {
        let cases = [
            (
                "x==a==b",
                "found '==', expected: ',' or 'end of string'".to_owned(),
            ),
            ("!x=a", "found '=', expected: ',' or 'end of string'".to_owned()),
            (
                ",x,y",
                "found ',', expected: !, identifier, or 'end of string'".to_owned(),
            ),
            (
                "(",
                "found '(', expected: !, identifier, or 'end of string'".to_owned(),
            ),
            ("a in (xyz),", "found '', expected: identifier after ','".to_owned()),
            (
                "a in (xyz)b notin ()",
                "found 'b', expected: ',' or 'end of string'".to_owned(),
            ),
            (
                "x nott in (y)",
                "unable to parse requirement: found 'nott', expected: in, notin, =, ==, !=, gt, lt"
                    .to_owned(),
            ),
            (
                "a (",
                "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"
                    .to_owned(),
            ),
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
                    .to_owned(),
            ),
            (
                "a in (xyz abc)",
                "unable to parse requirement: found 'abc', expected: ',' or ')'".to_owned(),
            ),
            (
                "a notin(",
                "unable to parse requirement: found '', expected: ',', ')' or identifier"
                    .to_owned(),
            ),
            (
                "a in x",
                "unable to parse requirement: found 'x' expected: '('".to_owned(),
            ),
            (
                "a in (x,=)",
                "unable to parse requirement: found '=', expected: ',', or identifier".to_owned(),
            ),
            (
                "x=!a",
                "unable to parse requirement: found '!', expected: identifier".to_owned(),
            ),
            (
                "!",
                "unable to parse requirement: found '', expected: identifier".to_owned(),
            ),
            (
                "x<a",
                "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer"
                    .to_owned(),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(label_err(input), want, "selector {input:?}");
        }
    }

    #[test]
    fn invalid_values_are_reported_with_their_path() {
        assert_eq!(
            label_err("x=a||y=b"),
            format!(
                "unable to parse requirement: values[0][x]: Invalid value: \"a||y\": {VALUE_REGEX_MSG}"
            )
        );
        let long = "v".repeat(64);
        assert_eq!(
            label_err(&format!("x={long}")),
            format!(
                "unable to parse requirement: values[0][x]: Invalid value: \"{long}\": must be no more than 63 characters"
            )
        );
        // Values are validated in sorted order, so the index follows it.
        assert_eq!(
            label_err("x in (b,-a)"),
            format!(
                "unable to parse requirement: values[0][x]: Invalid value: \"-a\": {VALUE_REGEX_MSG}"
            )
        );
        // Several bad values aggregate in brackets.
        assert_eq!(
            label_err("x in (-a,-b)"),
            format!(
                "unable to parse requirement: [values[0][x]: Invalid value: \"-a\": {VALUE_REGEX_MSG}, values[1][x]: Invalid value: \"-b\": {VALUE_REGEX_MSG}]"
            )
        );
        // A Gt value must be both an integer and a label value.
        assert_eq!(
            label_err("x>-1"),
            format!(
                "unable to parse requirement: values[0][x]: Invalid value: \"-1\": {VALUE_REGEX_MSG}"
            )
        );
    }

    #[test]
    fn invalid_keys_are_reported_with_a_nil_path() {
        let long = "k".repeat(64);
        assert_eq!(
            label_err(&long),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"{long}\": name part must be no more than 63 characters"
            )
        );
        assert!(LabelSelector::parse(&"k".repeat(63)).is_ok());
        assert_eq!(
            label_err("-x=a"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"-x\": name part {NAME_REGEX_MSG}"
            )
        );
        assert_eq!(
            label_err("/x"),
            "unable to parse requirement: <nil>: Invalid value: \"/x\": prefix part must be non-empty"
        );
        assert_eq!(
            label_err("example.com/"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"example.com/\": name part must be non-empty; name part {NAME_REGEX_MSG}"
            )
        );
        assert_eq!(
            label_err("Example.com/x"),
            "unable to parse requirement: <nil>: Invalid value: \"Example.com/x\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert_eq!(
            label_err("a/b/c"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name {NAME_REGEX_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )
        );
        let long_prefix = format!("{}.com/x", "a".repeat(250));
        assert!(label_err(&long_prefix).contains("prefix part must be no more than 253 characters"));
        assert!(LabelSelector::parse("a.b-c.d/e_f.G-1").is_ok());
    }

    #[test]
    fn go_quoting_escapes_like_percent_q() {
        assert_eq!(go_quote("a\"b\\c\td\u{1}é"), "\"a\\\"b\\\\c\\td\\x01é\"");
    }

    // --- label selector: matching ----------------------------------------

    #[test]
    fn empty_selector_matches_everything() {
        let sel = LabelSelector::parse("").unwrap();
        assert!(sel.is_empty());
        assert!(sel.matches(None));
        assert!(sel.matches(Some(&labels(json!({"x": "y"})))));
        assert!(LabelSelector::default().is_empty());
        assert!(LabelSelector::parse("   ").unwrap().is_empty());
    }

    #[test]
    fn equality_matching() {
        assert!(label_matches("x=y", json!({"x": "y"})));
        assert!(label_matches("x==y", json!({"x": "y"})));
        assert!(label_matches("x=y,z=w", json!({"x": "y", "z": "w"})));
        assert!(label_matches("x!=y,z!=w", json!({"x": "z", "z": "a"})));
        assert!(label_matches("x!=y", json!({})));
        assert!(!label_matches("x=z", json!({})));
        assert!(!label_matches("x=y", json!({"x": "z"})));
        assert!(!label_matches("x=y,z=w", json!({"x": "w", "z": "w"})));
        assert!(!label_matches("x!=y,z!=w", json!({"x": "z", "z": "w"})));
        assert!(label_matches("x=", json!({"x": ""})));
        assert!(!label_matches("x=", json!({})));
        let set = json!({"foo": "bar", "baz": "blah"});
        assert!(label_matches("foo=bar,baz=blah", set.clone()));
        assert!(!label_matches("foo=bar,foobar=bar,baz=blah", set));
    }

    #[test]
    fn existence_and_set_matching() {
        assert!(label_matches("x", json!({"x": "z"})));
        assert!(label_matches("x", json!({"x": ""})));
        assert!(!label_matches("x", json!({"y": "z"})));
        assert!(label_matches("!x", json!({"y": "z"})));
        assert!(!label_matches("!x", json!({"x": "z"})));
        assert!(label_matches(
            "x in (foo),y notin (alpha)",
            json!({"x": "foo", "y": "baz"})
        ));
        assert!(!label_matches(
            "x in (foo),y in (alpha)",
            json!({"x": "foo", "y": "baz"})
        ));
        assert!(label_matches("x notin (),y", json!({"y": ""})));
        assert!(!label_matches("x notin (),!y", json!({"y": ""})));
        assert!(!label_matches("x in ()", json!({"y": "baz"})));
        assert!(label_matches("x in ()", json!({"x": ""})));
        assert!(label_matches("x notin (a)", json!({})));
    }

    #[test]
    fn numeric_comparison_matching() {
        assert!(label_matches("x>1", json!({"x": "2"})));
        assert!(label_matches("x<1", json!({"x": "0"})));
        assert!(label_matches("x<1", json!({"x": "-5"})));
        assert!(!label_matches("x>1", json!({"x": "0"})));
        assert!(!label_matches("x<1", json!({"x": "2"})));
        assert!(!label_matches("x>1", json!({"x": "v2"})));
        assert!(!label_matches("x>1", json!({})));
    }

    #[test]
    fn missing_labels_and_non_string_values() {
        let sel = LabelSelector::parse("!x,y notin (a)").unwrap();
        assert!(sel.matches(None));
        let sel = LabelSelector::parse("x").unwrap();
        assert!(!sel.matches(None));
        assert!(!sel.matches(Some(&labels(json!({"x": 1})))));
    }

    // --- label selector: object form --------------------------------------

    #[test]
    fn object_form_matches_like_the_string_form() {
        let sel = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["frontend", "edge"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": []},
            ],
        }))
        .unwrap();
        assert_eq!(
            sel.to_string(),
            "app=web,env notin (dev),!legacy,team,tier in (edge,frontend)"
        );
        assert!(sel.matches(Some(&labels(
            json!({"app": "web", "tier": "edge", "team": "a", "env": "prod"})
        ))));
        assert!(!sel.matches(Some(&labels(
            json!({"app": "web", "tier": "edge", "team": "a", "legacy": "1"})
        ))));
    }

    #[test]
    fn null_object_selects_nothing_and_empty_object_everything() {
        let nothing = LabelSelector::from_object(&Value::Null).unwrap();
        assert!(!nothing.is_empty());
        assert!(!nothing.matches(None));
        assert!(!nothing.matches(Some(&labels(json!({"a": "b"})))));
        for v in [
            json!({}),
            json!({"matchLabels": {}, "matchExpressions": []}),
            json!({"matchLabels": null}),
        ] {
            let everything = LabelSelector::from_object(&v).unwrap();
            assert!(everything.is_empty());
            assert!(everything.matches(None));
        }
    }

    #[test]
    fn object_form_errors_use_upstream_wording() {
        let err = |v: Value| LabelSelector::from_object(&v).unwrap_err().to_string();
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]})),
            "\"Equals\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a"}]})),
            "\"\" is not a valid label selector operator"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x", "y"]}]})),
            "values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist"
        );
        assert_eq!(
            err(json!({"matchLabels": {"a": "b c"}})),
            format!("values[0][a]: Invalid value: \"b c\": {VALUE_REGEX_MSG}")
        );
        assert_eq!(
            err(json!({"matchLabels": {"-a": "b"}})),
            format!("key: Invalid value: \"-a\": name part {NAME_REGEX_MSG}")
        );
        assert_eq!(
            err(json!({"matchExpressions": [{"operator": "Exists"}]})),
            format!(
                "key: Invalid value: \"\": name part must be non-empty; name part {NAME_REGEX_MSG}"
            )
        );
        assert_eq!(
            err(json!("app=web")),
            "invalid label selector: expected an object, got string"
        );
        assert_eq!(
            err(json!({"matchLabels": {"a": 1}})),
            "invalid label selector: matchLabels[a] must be a string, got number"
        );
        assert_eq!(
            err(json!({"matchExpressions": {}})),
            "invalid label selector: matchExpressions must be an array, got object"
        );
    }

    // --- field selectors ---------------------------------------------------

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node-a", "serviceAccountName": "builder", "hostNetwork": true},
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.5",
                "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
            },
        })
    }

    #[test]
    fn field_selector_parses_operators_and_sorts_terms() {
        let sel = FieldSelector::parse("status.phase!=Failed,metadata.name==web-1,spec.nodeName=")
            .unwrap();
        assert_eq!(
            sel.to_string(),
            "metadata.name=web-1,spec.nodeName=,status.phase!=Failed"
        );
        assert_eq!(sel.exact("metadata.name"), Some("web-1"));
        assert_eq!(sel.exact("spec.nodeName"), Some(""));
        assert_eq!(sel.exact("status.phase"), None);
        assert_eq!(sel.exact("metadata.namespace"), None);
        // With conflicting terms the first in sorted order wins, as upstream.
        let sel = FieldSelector::parse("metadata.name=b,metadata.name=a").unwrap();
        assert_eq!(sel.exact("metadata.name"), Some("a"));
    }

    #[test]
    fn empty_field_selector_and_empty_terms() {
        for s in ["", ",", ",,"] {
            let sel = FieldSelector::parse(s).unwrap();
            assert!(sel.is_empty());
            assert!(sel.matches("", "Pod", &pod()));
            assert!(sel.check_supported("", "Pod").is_ok());
        }
        let sel = FieldSelector::parse(",metadata.name=web-1,,").unwrap();
        assert!(!sel.is_empty());
        assert!(FieldSelector::default().is_empty());
    }

    #[test]
    fn field_selector_escapes() {
        let sel = FieldSelector::parse(r"metadata.name=a\,b\=c\\d,type=x").unwrap();
        assert_eq!(sel.exact("metadata.name"), Some(r"a,b=c\d"));
        assert_eq!(sel.exact("type"), Some("x"));
        assert_eq!(sel.to_string(), r"metadata.name=a\,b\=c\\d,type=x");
        assert_eq!(FieldSelector::parse(&sel.to_string()).unwrap(), sel);
        // Only the earliest operator splits a term; what follows is value.
        let sel = FieldSelector::parse("a=!b").unwrap();
        assert_eq!(sel.exact("a"), Some("!b"));
    }

    #[test]
    fn field_selector_errors_use_upstream_wording() {
        let err = |s: &str| FieldSelector::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("foo"),
            "invalid selector: 'foo'; can't understand 'foo'"
        );
        assert_eq!(
            err("a=b,foo"),
            "invalid selector: 'a=b,foo'; can't understand 'foo'"
        );
        assert_eq!(
            err("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            err(r"a=b\n"),
            r"invalid field selector: invalid escape sequence: \n"
        );
        assert_eq!(
            err(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
    }

    #[test]
    fn field_selector_matches_pods() {
        let p = pod();
        let yes = [
            "metadata.name=web-1",
            "metadata.namespace=default",
            "spec.nodeName=node-a",
            "spec.host=node-a",
            "spec.restartPolicy=Always",
            "spec.schedulerName=default-scheduler",
            "spec.serviceAccountName=builder",
            "spec.hostNetwork=true",
            "status.phase=Running,status.phase!=Failed",
            "status.podIP=10.0.0.5",
            "status.podIPs=fd00::5",
            "status.nominatedNodeName=",
        ];
        for s in yes {
            assert!(
                FieldSelector::parse(s).unwrap().matches("", "Pod", &p),
                "{s}"
            );
        }
        let no = [
            "metadata.name=web-2",
            "spec.nodeName=",
            "spec.hostNetwork=false",
            "status.phase!=Running",
            "status.podIPs!=10.0.0.5",
            "status.podIP=fd00::5",
            // A field the kind does not expose reads as empty.
            "spec.unknown=x",
        ];
        for s in no {
            assert!(
                !FieldSelector::parse(s).unwrap().matches("", "Pod", &p),
                "{s}"
            );
        }
        assert!(FieldSelector::parse("spec.unknown=")
            .unwrap()
            .matches("", "Pod", &p));
    }

    #[test]
    fn field_values_apply_api_defaults_and_format_scalars() {
        let bare = json!({"metadata": {"name": "p"}});
        assert_eq!(
            field_value("", "Pod", &bare, "spec.hostNetwork").as_deref(),
            Some("false")
        );
        assert_eq!(
            field_value("", "Pod", &bare, "status.phase").as_deref(),
            Some("Pending")
        );
        assert_eq!(
            field_value("", "Pod", &bare, "spec.nodeName").as_deref(),
            Some("")
        );
        assert_eq!(
            field_value("", "Pod", &bare, "status.podIPs").as_deref(),
            Some("")
        );
        assert_eq!(
            field_value("", "Pod", &pod(), "status.podIPs").as_deref(),
            Some("10.0.0.5,fd00::5")
        );
        assert_eq!(
            field_value("", "Pod", &bare, "metadata.namespace").as_deref(),
            Some("")
        );
        assert_eq!(field_value("", "Pod", &bare, "spec.containers"), None);
        let legacy = json!({"spec": {"serviceAccount": "old"}, "status": {"podIP": "10.1.1.1"}});
        assert_eq!(
            field_value("", "Pod", &legacy, "spec.serviceAccountName").as_deref(),
            Some("old")
        );
        assert_eq!(
            field_value("", "Pod", &legacy, "status.podIP").as_deref(),
            Some("10.1.1.1")
        );

        let node = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        assert_eq!(
            field_value("", "Node", &node, "spec.unschedulable").as_deref(),
            Some("true")
        );
        assert_eq!(
            field_value("", "Node", &bare, "spec.unschedulable").as_deref(),
            Some("false")
        );
        assert_eq!(
            field_value("", "Namespace", &bare, "status.phase").as_deref(),
            Some("Active")
        );
        assert_eq!(
            field_value("", "Secret", &bare, "type").as_deref(),
            Some("Opaque")
        );
        let tls = json!({"type": "kubernetes.io/tls"});
        assert_eq!(
            field_value("", "Secret", &tls, "type").as_deref(),
            Some("kubernetes.io/tls")
        );
        assert_eq!(
            field_value("", "Service", &bare, "spec.type").as_deref(),
            Some("ClusterIP")
        );
        let svc = json!({"spec": {"clusterIP": "10.43.0.1", "type": "NodePort"}});
        assert_eq!(
            field_value("", "Service", &svc, "spec.clusterIP").as_deref(),
            Some("10.43.0.1")
        );
        assert_eq!(
            field_value("", "Service", &svc, "spec.type").as_deref(),
            Some("NodePort")
        );
        let rs = json!({"status": {"replicas": 3}});
        assert_eq!(
            field_value("apps", "ReplicaSet", &rs, "status.replicas").as_deref(),
            Some("3")
        );
        assert_eq!(
            field_value("apps", "ReplicaSet", &bare, "status.replicas").as_deref(),
            Some("0")
        );
        assert_eq!(
            field_value("", "ReplicationController", &rs, "status.replicas").as_deref(),
            Some("3")
        );
        let job = json!({"status": {"succeeded": 2}});
        assert_eq!(
            field_value("batch", "Job", &job, "status.successful").as_deref(),
            Some("2")
        );
        let csr = json!({"spec": {"signerName": "kubernetes.io/kubelet-serving"}});
        assert_eq!(
            field_value(
                "certificates.k8s.io",
                "CertificateSigningRequest",
                &csr,
                "spec.signerName"
            )
            .as_deref(),
            Some("kubernetes.io/kubelet-serving")
        );
        let slice = json!({"spec": {"nodeName": "n1", "driver": "gpu.example.com"}});
        assert_eq!(
            field_value("resource.k8s.io", "ResourceSlice", &slice, "spec.driver").as_deref(),
            Some("gpu.example.com")
        );
        // Kinds without their own fields expose only the metadata ones.
        assert_eq!(
            field_value("apps", "Deployment", &rs, "status.replicas"),
            None
        );
        assert_eq!(
            field_value("apps", "Deployment", &bare, "metadata.name").as_deref(),
            Some("p")
        );
    }

    #[test]
    fn event_fields_read_both_event_shapes() {
        let core = json!({
            "metadata": {"name": "e1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u1"},
            "reason": "Scheduled",
            "type": "Normal",
            "source": {"component": "default-scheduler"},
            "reportingComponent": "default-scheduler",
        });
        let v1 = json!({
            "metadata": {"name": "e1", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u1"},
            "reason": "Scheduled",
            "type": "Normal",
            "reportingController": "default-scheduler",
        });
        for obj in [&core, &v1] {
            for group in ["", "events.k8s.io"] {
                assert_eq!(
                    field_value(group, "Event", obj, "involvedObject.kind").as_deref(),
                    Some("Pod")
                );
                assert_eq!(
                    field_value(group, "Event", obj, "source").as_deref(),
                    Some("default-scheduler")
                );
                assert_eq!(
                    field_value(group, "Event", obj, "reportingComponent").as_deref(),
                    Some("default-scheduler")
                );
                assert_eq!(
                    field_value(group, "Event", obj, "reason").as_deref(),
                    Some("Scheduled")
                );
            }
        }
        let sel =
            FieldSelector::parse("involvedObject.name=web-1,involvedObject.kind=Pod,type=Normal")
                .unwrap();
        assert!(sel.check_supported("", "Event").is_ok());
        assert!(sel.matches("", "Event", &core));
        let sel =
            FieldSelector::parse("regarding.name=web-1,reportingController=default-scheduler")
                .unwrap();
        assert!(sel.check_supported("events.k8s.io", "Event").is_ok());
        assert!(sel.matches("events.k8s.io", "Event", &v1));
        assert!(sel.matches("events.k8s.io", "Event", &core));
        // Each API accepts only its own spelling.
        assert!(sel.check_supported("", "Event").is_err());
        let sel = FieldSelector::parse("involvedObject.name=web-1").unwrap();
        assert!(sel.check_supported("events.k8s.io", "Event").is_err());
    }

    #[test]
    fn supported_field_labels_per_kind() {
        let ok = |group: &str, kind: &str, s: &str| {
            FieldSelector::parse(s)
                .unwrap()
                .check_supported(group, kind)
                .is_ok()
        };
        for s in POD_FIELDS {
            assert!(ok("", "Pod", &format!("{s}=x")), "{s}");
        }
        assert!(ok("", "Node", "metadata.name=n,spec.unschedulable=false"));
        assert!(!ok("", "Node", "metadata.namespace="));
        assert!(ok(
            "",
            "Namespace",
            "status.phase=Active,metadata.name=default"
        ));
        assert!(!ok("", "Namespace", "metadata.namespace=x"));
        assert!(ok(
            "",
            "Secret",
            "type=Opaque,metadata.namespace=a,metadata.name=b"
        ));
        assert!(ok("", "Service", "spec.clusterIP=None,spec.type=ClusterIP"));
        assert!(ok("", "ReplicationController", "status.replicas=0"));
        assert!(ok("apps", "ReplicaSet", "status.replicas=0"));
        assert!(!ok("apps", "Deployment", "status.replicas=0"));
        assert!(ok("batch", "Job", "status.successful=1"));
        assert!(ok(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            "spec.signerName=x"
        ));
        assert!(ok(
            "resource.k8s.io",
            "ResourceSlice",
            "spec.nodeName=n,spec.driver=d"
        ));
        // Every kind supports the metadata fields by default, custom ones too.
        for (group, kind) in [
            ("", "ConfigMap"),
            ("apps", "Deployment"),
            ("networking.k8s.io", "Ingress"),
            ("example.com", "Widget"),
        ] {
            assert!(
                ok(group, kind, "metadata.name=a,metadata.namespace=b"),
                "{kind}"
            );
        }
    }

    #[test]
    fn unsupported_field_labels_use_each_kinds_message() {
        let err = |group: &str, kind: &str, s: &str| {
            FieldSelector::parse(s)
                .unwrap()
                .check_supported(group, kind)
                .unwrap_err()
        };
        assert_eq!(
            err("", "Pod", "foo.bar=baz").to_string(),
            "field label not supported: foo.bar"
        );
        assert_eq!(
            err("networking.k8s.io", "Ingress", "foo.bar=baz").to_string(),
            "\"foo.bar\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        assert_eq!(
            err("batch", "Job", "status.failed=1").to_string(),
            "field label \"status.failed\" not supported for batchv1.Job"
        );
        assert_eq!(
            err("resource.k8s.io", "ResourceSlice", "spec.pool=p").to_string(),
            "field label not supported for resource.k8s.io/v1, Kind=ResourceSlice: spec.pool"
        );
        // Field names are literal: surrounding spaces are part of the label.
        let e = err("", "Pod", "status.phase = Running");
        assert_eq!(e.to_string(), "field label not supported: status.phase ");
        assert!(
            matches!(e, SelectorError::UnsupportedField { ref label, .. } if label == "status.phase ")
        );
        // The first unsupported term in sorted order is the one reported.
        assert_eq!(
            err("", "Pod", "zz=1,aa=2").to_string(),
            "field label not supported: aa"
        );
    }

    #[test]
    fn field_selector_on_other_kinds() {
        let secret = json!({"metadata": {"name": "s", "namespace": "kube-system"}, "type": "kubernetes.io/service-account-token"});
        let sel = FieldSelector::parse(
            "type=kubernetes.io/service-account-token,metadata.namespace!=default",
        )
        .unwrap();
        assert!(sel.matches("", "Secret", &secret));
        let node = json!({"metadata": {"name": "n1"}, "spec": {}});
        assert!(FieldSelector::parse("spec.unschedulable=false")
            .unwrap()
            .matches("", "Node", &node));
        let cm = json!({"metadata": {"name": "c", "namespace": "a"}});
        assert!(FieldSelector::parse("metadata.namespace!=default")
            .unwrap()
            .matches("", "ConfigMap", &cm));
        assert!(!FieldSelector::parse("metadata.name=d")
            .unwrap()
            .matches("", "ConfigMap", &cm));
        // Cluster-scoped objects have an empty namespace.
        let ns = json!({"metadata": {"name": "a"}});
        assert!(FieldSelector::parse("metadata.namespace=")
            .unwrap()
            .matches("rbac.authorization.k8s.io", "ClusterRole", &ns));
    }
}
