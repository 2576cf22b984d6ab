//! Event patterns in the EventBridge pattern language, matched against an event's JSON form.
//!
//! A pattern is a JSON object mirroring the event: a nested object descends into the
//! event, an array lists the allowed values of a leaf (any one may match), and `$or`
//! lists alternative sub-patterns. Leaf matchers: literals (strings, numbers compared
//! numerically, booleans, null), `prefix`, `suffix`, `equals-ignore-case`, `wildcard`,
//! `anything-but` (a value, a list, or a `prefix`/`suffix`), `numeric` ranges and
//! `exists`. When the event's field is an array, it matches if any element does.
//! Patterns are compiled once, when a rule is registered, so bad ones are refused then.

use serde_json::{Map, Value};

/// Why a pattern was refused, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("event pattern must be a non-empty JSON object")]
    NotAnObject,
    #[error("pattern field `{path}`: {problem}")]
    Invalid { path: String, problem: String },
}

/// A compiled event pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
struct Node {
    fields: Vec<(String, Field)>,
    /// Each inner Vec is one `$or` group: at least one alternative must match.
    or_groups: Vec<Vec<Node>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Nested(Node),
    Leaf(Vec<Matcher>),
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Exact(Value),
    Prefix { text: String, ignore_case: bool },
    Suffix { text: String, ignore_case: bool },
    EqualsIgnoreCase(String),
    Wildcard(String),
    AnythingBut(AnythingBut),
    Numeric(Vec<(Cmp, f64)>),
    Exists(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum AnythingBut {
    Values(Vec<Value>),
    Prefix(String),
    Suffix(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Pattern {
    /// Compiles a pattern given as JSON.
    pub fn compile(value: &Value) -> Result<Self, PatternError> {
        match value {
            Value::Object(map) if !map.is_empty() => Ok(Self {
                root: compile_node(map, "")?,
            }),
            _ => Err(PatternError::NotAnObject),
        }
    }

    /// Whether the event (its JSON form) matches.
    pub fn matches(&self, event: &Value) -> bool {
        match_node(&self.root, Some(event))
    }

    /// Whether a CloudEvent matches, reading its members directly (its `data` is
    /// parsed only if the pattern looks into it).
    pub fn matches_event(&self, event: &crate::CloudEvent) -> bool {
        match_fields(&self.root, &|key| event.member(key))
    }
}

fn err(path: &str, problem: impl Into<String>) -> PatternError {
    PatternError::Invalid {
        path: if path.is_empty() {
            "(root)".into()
        } else {
            path.to_owned()
        },
        problem: problem.into(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn compile_node(map: &Map<String, Value>, path: &str) -> Result<Node, PatternError> {
    let mut node = Node {
        fields: Vec::new(),
        or_groups: Vec::new(),
    };
    for (key, value) in map {
        let here = join(path, key);
        if key == "$or" {
            let Value::Array(alternatives) = value else {
                return Err(err(&here, "`$or` takes an array of patterns"));
            };
            if alternatives.len() < 2 {
                return Err(err(&here, "`$or` needs at least two alternatives"));
            }
            let group = alternatives
                .iter()
                .map(|alt| match alt {
                    Value::Object(m) if !m.is_empty() => compile_node(m, path),
                    _ => Err(err(
                        &here,
                        "each `$or` alternative must be a non-empty object",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            node.or_groups.push(group);
            continue;
        }
        let field = match value {
            Value::Object(inner) if !inner.is_empty() => Field::Nested(compile_node(inner, &here)?),
            Value::Array(items) if !items.is_empty() => Field::Leaf(
                items
                    .iter()
                    .map(|item| compile_matcher(item, &here))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Array(_) => {
                return Err(err(&here, "a list of allowed values must not be empty"));
            }
            _ => {
                return Err(err(
                    &here,
                    "leaf values must be arrays of allowed values, e.g. [\"a\"] or [{\"prefix\": \"a\"}]",
                ));
            }
        };
        node.fields.push((key.clone(), field));
    }
    Ok(node)
}

fn string_operand(value: &Value, path: &str, op: &str) -> Result<(String, bool), PatternError> {
    match value {
        Value::String(s) => Ok((s.clone(), false)),
        Value::Object(m) if m.len() == 1 => match m.get("equals-ignore-case") {
            Some(Value::String(s)) => Ok((s.clone(), true)),
            _ => Err(err(
                path,
                format!("`{op}` takes a string or {{\"equals-ignore-case\": string}}"),
            )),
        },
        _ => Err(err(path, format!("`{op}` takes a string"))),
    }
}

fn compile_matcher(item: &Value, path: &str) -> Result<Matcher, PatternError> {
    let Value::Object(m) = item else {
        if item.is_array() {
            return Err(err(
                path,
                "nested arrays are not allowed in a list of values",
            ));
        }
        return Ok(Matcher::Exact(item.clone()));
    };
    if m.len() != 1 {
        return Err(err(path, "a matcher object has exactly one operator"));
    }
    let Some((op, arg)) = m.iter().next() else {
        return Err(err(path, "empty matcher object"));
    };
    match op.as_str() {
        "prefix" => {
            let (text, ignore_case) = string_operand(arg, path, "prefix")?;
            Ok(Matcher::Prefix { text, ignore_case })
        }
        "suffix" => {
            let (text, ignore_case) = string_operand(arg, path, "suffix")?;
            Ok(Matcher::Suffix { text, ignore_case })
        }
        "equals-ignore-case" => match arg {
            Value::String(s) => Ok(Matcher::EqualsIgnoreCase(s.clone())),
            _ => Err(err(path, "`equals-ignore-case` takes a string")),
        },
        "wildcard" => match arg {
            Value::String(s) => Ok(Matcher::Wildcard(s.clone())),
            _ => Err(err(path, "`wildcard` takes a string")),
        },
        "exists" => match arg {
            Value::Bool(b) => Ok(Matcher::Exists(*b)),
            _ => Err(err(path, "`exists` takes true or false")),
        },
        "anything-but" => compile_anything_but(arg, path).map(Matcher::AnythingBut),
        "numeric" => compile_numeric(arg, path).map(Matcher::Numeric),
        other => Err(err(path, format!("unknown matcher `{other}`"))),
    }
}

fn compile_anything_but(arg: &Value, path: &str) -> Result<AnythingBut, PatternError> {
    match arg {
        Value::Array(values)
            if !values.is_empty() && values.iter().all(|v| v.is_string() || v.is_number()) =>
        {
            Ok(AnythingBut::Values(values.clone()))
        }
        Value::String(_) | Value::Number(_) => Ok(AnythingBut::Values(vec![arg.clone()])),
        Value::Object(m) if m.len() == 1 => match (m.get("prefix"), m.get("suffix")) {
            (Some(Value::String(p)), None) => Ok(AnythingBut::Prefix(p.clone())),
            (None, Some(Value::String(s))) => Ok(AnythingBut::Suffix(s.clone())),
            _ => Err(err(
                path,
                "`anything-but` takes {\"prefix\": string} or {\"suffix\": string}",
            )),
        },
        _ => Err(err(
            path,
            "`anything-but` takes a string, a number, a list of them, or a prefix/suffix",
        )),
    }
}

fn compile_numeric(arg: &Value, path: &str) -> Result<Vec<(Cmp, f64)>, PatternError> {
    let Value::Array(items) = arg else {
        return Err(err(
            path,
            "`numeric` takes an array like [\">\", 0, \"<=\", 5]",
        ));
    };
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        return Err(err(
            path,
            "`numeric` takes one or two (operator, number) pairs",
        ));
    }
    items
        .chunks(2)
        .map(|pair| {
            let cmp = match pair[0].as_str() {
                Some("=") => Cmp::Eq,
                Some("<") => Cmp::Lt,
                Some("<=") => Cmp::Le,
                Some(">") => Cmp::Gt,
                Some(">=") => Cmp::Ge,
                _ => return Err(err(path, format!("unknown numeric operator {}", pair[0]))),
            };
            let n = pair[1]
                .as_f64()
                .ok_or_else(|| err(path, format!("numeric operand {} is not a number", pair[1])))?;
            Ok((cmp, n))
        })
        .collect()
}

fn match_node(node: &Node, value: Option<&Value>) -> bool {
    match_fields(node, &|key| value.and_then(|v| v.get(key)))
}

/// Matches a node against an object given by its member lookup.
fn match_fields<'a>(node: &Node, member: &dyn Fn(&str) -> Option<&'a Value>) -> bool {
    node.fields.iter().all(|(key, field)| {
        let child = member(key);
        match field {
            Field::Nested(inner) => match child {
                // An array of objects matches if any element does.
                Some(Value::Array(items)) => items.iter().any(|item| match_node(inner, Some(item))),
                Some(v @ Value::Object(_)) => match_node(inner, Some(v)),
                _ => match_node(inner, None),
            },
            Field::Leaf(matchers) => matchers.iter().any(|m| match_leaf(m, child)),
        }
    }) && node
        .or_groups
        .iter()
        .all(|group| group.iter().any(|alt| match_fields(alt, member)))
}

fn match_leaf(matcher: &Matcher, value: Option<&Value>) -> bool {
    match (matcher, value) {
        (Matcher::Exists(want), v) => {
            let present = match v {
                None => false,
                Some(Value::Array(items)) => !items.is_empty(),
                Some(Value::Object(_)) => false,
                Some(_) => true,
            };
            present == *want
        }
        (_, None) => false,
        (m, Some(Value::Array(items))) => items.iter().any(|item| match_scalar(m, item)),
        (m, Some(v)) => match_scalar(m, v),
    }
}

fn match_scalar(matcher: &Matcher, value: &Value) -> bool {
    match matcher {
        Matcher::Exact(want) => values_equal(want, value),
        Matcher::Prefix { text, ignore_case } => value.as_str().is_some_and(|s| {
            if *ignore_case {
                s.to_lowercase().starts_with(&text.to_lowercase())
            } else {
                s.starts_with(text.as_str())
            }
        }),
        Matcher::Suffix { text, ignore_case } => value.as_str().is_some_and(|s| {
            if *ignore_case {
                s.to_lowercase().ends_with(&text.to_lowercase())
            } else {
                s.ends_with(text.as_str())
            }
        }),
        Matcher::EqualsIgnoreCase(want) => value
            .as_str()
            .is_some_and(|s| s.to_lowercase() == want.to_lowercase()),
        Matcher::Wildcard(glob) => value
            .as_str()
            .is_some_and(|s| wildcard(glob.as_bytes(), s.as_bytes())),
        Matcher::AnythingBut(AnythingBut::Values(values)) => {
            !value.is_null() && !value.is_object() && !values.iter().any(|v| values_equal(v, value))
        }
        Matcher::AnythingBut(AnythingBut::Prefix(p)) => {
            value.as_str().is_some_and(|s| !s.starts_with(p.as_str()))
        }
        Matcher::AnythingBut(AnythingBut::Suffix(p)) => {
            value.as_str().is_some_and(|s| !s.ends_with(p.as_str()))
        }
        Matcher::Numeric(conds) => value.as_f64().is_some_and(|n| {
            conds.iter().all(|(cmp, bound)| match cmp {
                Cmp::Eq => n == *bound,
                Cmp::Lt => n < *bound,
                Cmp::Le => n <= *bound,
                Cmp::Gt => n > *bound,
                Cmp::Ge => n >= *bound,
            })
        }),
        Matcher::Exists(_) => false,
    }
}

/// Numbers compare by value (EventBridge treats 300 and 3.0e2 as equal); the rest exactly.
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// `*` matches any run of characters; everything else literally.
fn wildcard(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && glob[g] == b'*' {
            star = Some((g, t));
            g += 1;
        } else if g < glob.len() && glob[g] == text[t] {
            g += 1;
            t += 1;
        } else if let Some((sg, st)) = star {
            g = sg + 1;
            t = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(pattern: Value, event: Value) -> bool {
        Pattern::compile(&pattern).unwrap().matches(&event)
    }

    /// The example event of EventBridge's "Amazon EventBridge event patterns" page.
    fn ec2_event() -> Value {
        json!({
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2",
            "account": "111122223333",
            "time": "2017-12-22T18:43:48Z",
            "region": "us-west-1",
            "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
            "detail": {
                "instance-id": "i-1234567890abcdef0",
                "state": "terminated",
                "c-count": 5,
                "d-count": 3,
                "x-limit": 301.8,
                "source-ip": "10.0.0.123"
            }
        })
    }

    #[test]
    fn documented_exact_and_nested_examples() {
        assert!(m(json!({"source": ["aws.ec2"]}), ec2_event()));
        assert!(m(
            json!({"source": ["aws.ec2"], "detail": {"state": ["terminated", "stopped"]}}),
            ec2_event()
        ));
        assert!(!m(json!({"detail": {"state": ["running"]}}), ec2_event()));
        // A field in the pattern that the event lacks never matches a value.
        assert!(!m(json!({"detail": {"nope": ["x"]}}), ec2_event()));
    }

    #[test]
    fn documented_prefix_suffix_and_ignore_case() {
        assert!(m(json!({"time": [{"prefix": "2017-12-22"}]}), ec2_event()));
        assert!(m(
            json!({"region": [{"prefix": {"equals-ignore-case": "US-"}}]}),
            ec2_event()
        ));
        assert!(m(json!({"source": [{"suffix": ".ec2"}]}), ec2_event()));
        assert!(!m(json!({"source": [{"suffix": ".s3"}]}), ec2_event()));
        assert!(m(
            json!({"detail-type": [{"equals-ignore-case": "ec2 instance state-change notification"}]}),
            ec2_event()
        ));
        assert!(m(
            json!({"detail": {"instance-id": [{"wildcard": "i-*def0"}]}}),
            ec2_event()
        ));
    }

    #[test]
    fn documented_anything_but() {
        assert!(m(
            json!({"detail": {"state": [{"anything-but": "initializing"}]}}),
            ec2_event()
        ));
        assert!(!m(
            json!({"detail": {"state": [{"anything-but": ["stopped", "terminated"]}]}}),
            ec2_event()
        ));
        assert!(m(
            json!({"detail": {"c-count": [{"anything-but": [100, 200]}]}}),
            ec2_event()
        ));
        assert!(!m(
            json!({"detail": {"state": [{"anything-but": {"prefix": "term"}}]}}),
            ec2_event()
        ));
        assert!(m(
            json!({"detail": {"state": [{"anything-but": {"suffix": ".txt"}}]}}),
            ec2_event()
        ));
        // anything-but does not match an absent field.
        assert!(!m(
            json!({"detail": {"absent": [{"anything-but": "x"}]}}),
            ec2_event()
        ));
    }

    #[test]
    fn documented_numeric_ranges() {
        let p = json!({"detail": {
            "c-count": [{"numeric": [">", 0, "<=", 5]}],
            "d-count": [{"numeric": ["<", 10]}],
            "x-limit": [{"numeric": ["=", 3.018e2]}]
        }});
        assert!(m(p, ec2_event()));
        assert!(!m(
            json!({"detail": {"c-count": [{"numeric": [">", 5]}]}}),
            ec2_event()
        ));
        assert!(!m(
            json!({"detail": {"state": [{"numeric": [">", 0]}]}}),
            ec2_event()
        ));
    }

    #[test]
    fn documented_exists() {
        assert!(m(
            json!({"detail": {"state": [{"exists": true}]}}),
            ec2_event()
        ));
        assert!(m(
            json!({"detail": {"no-such": [{"exists": false}]}}),
            ec2_event()
        ));
        assert!(!m(
            json!({"detail": {"state": [{"exists": false}]}}),
            ec2_event()
        ));
        // exists on an object is not a leaf: it does not count as existing.
        assert!(m(json!({"detail": [{"exists": false}]}), ec2_event()));
    }

    #[test]
    fn arrays_match_if_any_element_matches() {
        assert!(m(
            json!({"resources": [{"prefix": "arn:aws:ec2"}]}),
            ec2_event()
        ));
        let e = json!({"tags": ["a", "b"], "items": [{"k": 1}, {"k": 2}]});
        assert!(m(json!({"tags": ["b"]}), e.clone()));
        assert!(m(json!({"items": {"k": [2]}}), e.clone()));
        assert!(!m(json!({"items": {"k": [3]}}), e));
    }

    #[test]
    fn documented_or() {
        let p = json!({"source": ["aws.ec2"], "$or": [
            {"detail": {"c-count": [{"numeric": [">", 100]}]}},
            {"detail": {"d-count": [{"numeric": ["<", 10]}]}}
        ]});
        assert!(m(p, ec2_event()));
        let p = json!({"$or": [{"source": ["x"]}, {"region": ["eu-west-1"]}]});
        assert!(!m(p, ec2_event()));
    }

    #[test]
    fn literals_compare_by_type_and_numbers_by_value() {
        let e = json!({"n": 300, "b": true, "z": null, "s": "300"});
        assert!(m(json!({"n": [3.0e2]}), e.clone()));
        assert!(!m(json!({"s": [300]}), e.clone()));
        assert!(m(json!({"b": [true]}), e.clone()));
        assert!(m(json!({"z": [null]}), e));
    }

    #[test]
    fn refuses_malformed_patterns_naming_the_field() {
        for bad in [
            json!([]),
            json!({}),
            json!({"type": "user_action"}),
            json!({"type": []}),
            json!({"type": [{"nope": 1}]}),
            json!({"n": [{"numeric": [">", "x"]}]}),
            json!({"n": [{"numeric": ["~", 1]}]}),
            json!({"$or": [{"a": ["x"]}]}),
            json!({"a": [{"exists": "yes"}]}),
        ] {
            assert!(Pattern::compile(&bad).is_err(), "{bad} should be refused");
        }
        let e = Pattern::compile(&json!({"detail": {"state": "x"}})).unwrap_err();
        assert!(e.to_string().contains("detail.state"), "{e}");
    }
}
