//! HTTP routes: a method and a path template (`/users/{id}`, `/files/{path+}`) that
//! hand a request to a function, synchronously or as an event.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a route hands its request on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    /// The function gets the Lambda Function URL (HTTP API v2.0) event and its answer
    /// is the response.
    #[default]
    Sync,
    /// The request becomes a CloudEvent of the route's type, stored durably; 202.
    Event,
}

/// A route as users write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// `GET`, `POST`, ... or `ANY`.
    pub method: String,
    pub path: String,
    pub target: String,
    #[serde(default)]
    pub mode: RouteMode,
    /// The event type, in event mode.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// Callable without a token. Routes need an API token unless declared public.
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RouteError {
    #[error("invalid method `{0}`: use GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or ANY")]
    Method(String),
    #[error(
        "invalid route path `{path}`: {why} (paths start with `/`; parameters are whole segments like `{{id}}`, and `{{name+}}` only last)"
    )]
    Path { path: String, why: &'static str },
    #[error("route {0} is in event mode and needs an event type")]
    Type(String),
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// Matches the rest of the path, one segment or more.
    Greedy(String),
}

/// A compiled path template.
#[derive(Debug, Clone)]
pub struct PathTemplate {
    segments: Vec<Segment>,
}

impl RouteSpec {
    /// The route's key, as API Gateway writes it: `POST /actions`.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Normalises the method and validates everything but the target.
    pub fn validate(mut self) -> Result<(Self, PathTemplate), RouteError> {
        self.method = self.method.to_ascii_uppercase();
        if !METHODS.contains(&self.method.as_str()) {
            return Err(RouteError::Method(self.method));
        }
        let template = PathTemplate::parse(&self.path)?;
        if self.mode == RouteMode::Event && self.ty.as_deref().is_none_or(|t| t.trim().is_empty()) {
            return Err(RouteError::Type(self.key()));
        }
        Ok((self, template))
    }
}

impl PathTemplate {
    pub fn parse(path: &str) -> Result<Self, RouteError> {
        let bad = |why| RouteError::Path {
            path: path.to_owned(),
            why,
        };
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| bad("no leading `/`"))?;
        if path.len() > 1024 {
            return Err(bad("longer than 1024 characters"));
        }
        let mut segments = Vec::new();
        if rest.is_empty() {
            return Ok(Self { segments });
        }
        let parts: Vec<&str> = rest.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                return Err(bad("an empty segment"));
            }
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => {
                    let (name, greedy) = match name.strip_suffix('+') {
                        Some(n) => (n, true),
                        None => (name, false),
                    };
                    let ok = !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if !ok {
                        return Err(bad("a parameter name of letters, digits, _ and -"));
                    }
                    if greedy && i + 1 != parts.len() {
                        return Err(bad("a greedy parameter not last"));
                    }
                    if greedy {
                        Segment::Greedy(name.to_owned())
                    } else {
                        Segment::Param(name.to_owned())
                    }
                }
                None if part.contains(['{', '}']) => {
                    return Err(bad("a brace inside a segment"));
                }
                None => Segment::Literal((*part).to_owned()),
            };
            segments.push(segment);
        }
        Ok(Self { segments })
    }

    /// The path parameters when `path` (without its query) matches.
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut params = BTreeMap::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let part = parts.get(i).filter(|p| !p.is_empty())?;
                    params.insert(name.clone(), crate::percent::decode(part, false));
                }
                Segment::Greedy(name) => {
                    let tail = &parts[i.min(parts.len())..];
                    if tail.is_empty() || tail.iter().all(|p| p.is_empty()) {
                        return None;
                    }
                    params.insert(name.clone(), crate::percent::decode(&tail.join("/"), false));
                    return Some(params);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }

    /// Orders overlapping templates: at the first segment where two differ, a
    /// literal beats a parameter, which beats a greedy one. Higher is more specific.
    pub fn specificity(&self) -> Vec<u8> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 3,
                Segment::Param(_) => 2,
                Segment::Greedy(_) => 1,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn route(method: &str, path: &str) -> RouteSpec {
        RouteSpec {
            method: method.into(),
            path: path.into(),
            target: "f".into(),
            mode: RouteMode::Sync,
            ty: None,
            public: false,
        }
    }

    #[test]
    fn templates_bind_parameters_and_greedy_tails() {
        let t = PathTemplate::parse("/users/{id}/posts/{post}").unwrap();
        let p = t.matches("/users/42/posts/a%20b").unwrap();
        assert_eq!(p["id"], "42");
        assert_eq!(p["post"], "a b");
        assert!(t.matches("/users/42/posts").is_none());
        assert!(t.matches("/users/42/posts/1/x").is_none());
        assert!(t.matches("/users//posts/1").is_none());
        let g = PathTemplate::parse("/files/{path+}").unwrap();
        assert_eq!(g.matches("/files/a/b/c.txt").unwrap()["path"], "a/b/c.txt");
        assert!(g.matches("/files/").is_none());
        assert!(g.matches("/files").is_none());
        let root = PathTemplate::parse("/").unwrap();
        assert!(root.matches("/").is_some());
        assert!(root.matches("/x").is_none());
        assert!(
            PathTemplate::parse("/a").unwrap().specificity()
                > PathTemplate::parse("/{x}").unwrap().specificity()
        );
    }

    #[test]
    fn bad_routes_say_what_is_wrong() {
        assert!(matches!(
            route("FETCH", "/a").validate(),
            Err(RouteError::Method(_))
        ));
        for path in ["a", "/a//b", "/{}", "/{a+}/b", "/x{a}", "/{a b}"] {
            assert!(
                matches!(route("GET", path).validate(), Err(RouteError::Path { .. })),
                "{path}"
            );
        }
        let mut event = route("post", "/actions");
        event.mode = RouteMode::Event;
        assert_eq!(
            event.clone().validate().unwrap_err(),
            RouteError::Type("POST /actions".into())
        );
        event.ty = Some("user_action".into());
        assert_eq!(event.validate().unwrap().0.method, "POST");
    }
}
