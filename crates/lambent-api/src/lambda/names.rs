//! Function names as the Lambda API takes them: `name`, `name:qualifier`, a partial
//! ARN (`123456789012:function:name[:qualifier]`) or a full one
//! (`arn:aws:lambda:REGION:ACCOUNT:function:name[:qualifier]`).

use super::error::LambdaError;

/// The account and region Lambent's ARNs carry (there is one of each).
pub const ACCOUNT: &str = "000000000000";
pub const REGION: &str = "us-east-1";

/// A function and which version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qualified {
    pub name: String,
    /// A published version; `None` is `$LATEST` (or the alias's choice).
    pub version: Option<u64>,
    /// An alias, which picks the version per call.
    pub alias: Option<String>,
}

pub fn arn(name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
}

/// Resolves a path's function name and an optional `Qualifier` parameter.
pub fn resolve(raw: &str, qualifier: Option<&str>) -> Result<Qualified, LambdaError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (name, inline) = match parts.as_slice() {
        [name] => (*name, None),
        [name, q] => (*name, Some(*q)),
        [_, "function", name] => (*name, None),
        [_, "function", name, q] => (*name, Some(*q)),
        ["arn", _, "lambda", _, _, "function", name] => (*name, None),
        ["arn", _, "lambda", _, _, "function", name, q] => (*name, Some(*q)),
        _ => {
            return Err(LambdaError::invalid(format!(
                "`{raw}` is not a function name, a partial ARN or a function ARN"
            )));
        }
    };
    if lambent_core::function::validate_name(name).is_err() {
        return Err(LambdaError::invalid(format!(
            "invalid function name `{name}`: 1-64 of A-Z a-z 0-9 _ -"
        )));
    }
    let (version, alias) = match (inline, qualifier) {
        (Some(a), Some(b)) if a != b => {
            return Err(LambdaError::invalid(format!(
                "the qualifier `{b}` does not match the one in the name (`{a}`)"
            )));
        }
        (Some(q), _) | (None, Some(q)) => parse_qualifier(q)?,
        (None, None) => (None, None),
    };
    Ok(Qualified {
        name: name.to_owned(),
        version,
        alias,
    })
}

/// `$LATEST`, a version number, or an alias name.
fn parse_qualifier(q: &str) -> Result<(Option<u64>, Option<String>), LambdaError> {
    if q == "$LATEST" {
        return Ok((None, None));
    }
    if let Ok(v) = q.parse::<u64>() {
        return Ok((Some(v), None));
    }
    let alias = !q.is_empty()
        && q.len() <= 128
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !alias {
        return Err(LambdaError::invalid(format!(
            "qualifier `{q}`: `$LATEST`, a version number or an alias name"
        )));
    }
    Ok((None, Some(q.to_owned())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_form_of_a_name_resolves() {
        let plain = |n: &str| Qualified {
            name: n.into(),
            version: None,
            alias: None,
        };
        assert_eq!(resolve("f1", None).unwrap(), plain("f1"));
        assert_eq!(resolve("f1:$LATEST", None).unwrap(), plain("f1"));
        assert_eq!(
            resolve("123456789012:function:f1", None).unwrap(),
            plain("f1")
        );
        assert_eq!(
            resolve("arn:aws:lambda:us-east-1:123456789012:function:f1", None).unwrap(),
            plain("f1")
        );
        let v3 = resolve("arn:aws:lambda:us-east-1:123456789012:function:f1:3", None).unwrap();
        assert_eq!(v3.version, Some(3));
        assert_eq!(resolve("f1", Some("7")).unwrap().version, Some(7));
        assert!(resolve("f1:3", Some("4")).is_err());
        assert_eq!(
            resolve("f1:prod", None).unwrap().alias.as_deref(),
            Some("prod")
        );
        assert!(resolve("f1:a/b", None).is_err());
        assert!(resolve("a/b", None).is_err());
        assert!(resolve("a:b:c:d:e", None).is_err());
    }
}
