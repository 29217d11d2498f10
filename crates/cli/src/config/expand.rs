//! `${VAR}` substitution in the config text, before TOML parsing, so that one file serves every region and
//! environment (ECS task definitions set the variables).
//!
//! Syntax (a small, strict subset of the shell's):
//!
//! - `${NAME}`: the value of the environment variable `NAME`; an error if it is unset.
//! - `${NAME:-default}`: the value of `NAME`, or `default` when it is unset or empty. The default is literal
//!   text: it cannot contain `{`, `}` or another `${…}`.
//! - `$${`: a literal `${` (the escape); any other `$` is kept as it is.
//! - `NAME` is `[A-Za-z_][A-Za-z0-9_]*`.
//! - Whole-line comments (lines whose first non-blank character is `#`) are copied unchanged, so comments can
//!   show the syntax. Everything else is expanded, strings and trailing comments included.
//!
//! Values are inserted verbatim: a value containing `"` or a newline can break the TOML around it, which then
//! fails to parse (the error names the line). Expansion never recurses into inserted values.

use std::fmt;

/// Why a `${…}` could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ExpandError {
    /// The 1-based line of the `${`.
    pub line: usize,
    /// What is wrong.
    pub kind: ExpandErrorKind,
}

/// The ways a `${…}` can be wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandErrorKind {
    /// `${NAME}` where `NAME` is not set and no default is given.
    Unset(String),
    /// `${` without a closing `}` on the same line.
    Unterminated,
    /// The name is empty or not `[A-Za-z_][A-Za-z0-9_]*`.
    BadName(String),
    /// A default containing `{`, `}` or `${`: nesting is not supported.
    Nested(String),
}

impl ExpandErrorKind {
    /// The variable concerned, if the error is about one.
    pub fn variable(&self) -> Option<&str> {
        match self {
            ExpandErrorKind::Unset(name) | ExpandErrorKind::Nested(name) => Some(name),
            ExpandErrorKind::BadName(_) | ExpandErrorKind::Unterminated => None,
        }
    }
}

impl fmt::Display for ExpandErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandErrorKind::Unset(name) => write!(
                f,
                "environment variable `{name}` is not set and `${{{name}}}` has no default \
                 (set it, or write `${{{name}:-default}}`)"
            ),
            ExpandErrorKind::Unterminated => {
                write!(f, "`${{` without a closing `}}` (write `$${{` for a literal `${{`)")
            }
            ExpandErrorKind::BadName(name) => write!(
                f,
                "{name:?} is not a variable name (letters, digits and `_`, not starting with a digit)"
            ),
            ExpandErrorKind::Nested(name) => write!(
                f,
                "the default of `${{{name}:-…}}` contains `{{`, `}}` or `${{`: defaults are literal text and cannot nest"
            ),
        }
    }
}

/// Expands every `${…}` of `text` with `lookup` (the process environment in production, a map in tests).
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            expand_line(line, index + 1, lookup, &mut out)?;
        }
    }
    Ok(out)
}

fn expand_line(
    line: &str,
    number: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), ExpandError> {
    let err = |kind| ExpandError { line: number, kind };
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| err(ExpandErrorKind::Unterminated))?;
            let body = &after[..end];
            let (name, default) = match body.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (body, None),
            };
            if !is_name(name) {
                // `${A${B}}`: the first `}` closes, leaving a name with `${` in it.
                return Err(err(if name.contains("${") {
                    ExpandErrorKind::Nested(name.split("${").next().unwrap_or_default().to_owned())
                } else {
                    ExpandErrorKind::BadName(name.to_owned())
                }));
            }
            // Checked whether or not the default is used, so that validity never depends on the environment.
            if default.is_some_and(|d| d.contains(['{', '$'])) {
                return Err(err(ExpandErrorKind::Nested(name.to_owned())));
            }
            let value = match (lookup(name), default) {
                (Some(value), None) => value,
                (Some(value), Some(_)) if !value.is_empty() => value,
                (_, Some(default)) => default.to_owned(),
                (None, None) => return Err(err(ExpandErrorKind::Unset(name.to_owned()))),
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(())
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "REGION" => Some("ap-southeast-2".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("a\"b".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, ExpandError> {
        expand(text, &env)
    }

    #[test]
    fn set_variables_are_substituted_anywhere_on_a_line() {
        assert_eq!(
            run("region = \"${REGION}\" # in ${REGION}\nx = \"${REGION}-${REGION}\"\n").unwrap(),
            "region = \"ap-southeast-2\" # in ap-southeast-2\nx = \"ap-southeast-2-ap-southeast-2\"\n"
        );
        // Set but empty, without a default: the empty string (as in the shell).
        assert_eq!(run("a = \"${EMPTY}\"").unwrap(), "a = \"\"");
        // Values are inserted verbatim, never expanded again.
        assert_eq!(run("a = ${QUOTE}").unwrap(), "a = a\"b");
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(run("a = \"${NOPE:-us-east-1}\"").unwrap(), "a = \"us-east-1\"");
        assert_eq!(run("a = \"${EMPTY:-fallback}\"").unwrap(), "a = \"fallback\"");
        assert_eq!(run("a = \"${REGION:-us-east-1}\"").unwrap(), "a = \"ap-southeast-2\"");
        assert_eq!(run("a = \"${NOPE:-}\"").unwrap(), "a = \"\"");
        // A default may contain ':' and '-' (URLs).
        assert_eq!(
            run("u = \"${NOPE:-http://localhost:4566}\"").unwrap(),
            "u = \"http://localhost:4566\""
        );
    }

    #[test]
    fn unset_variable_without_default_is_an_error_naming_it_and_its_line() {
        let e = run("a = 1\n\nb = \"${TABLE_NAME}\"\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(e.kind, ExpandErrorKind::Unset("TABLE_NAME".into()));
        assert_eq!(e.kind.variable(), Some("TABLE_NAME"));
        let message = e.to_string();
        assert!(
            message.contains("line 3") && message.contains("`TABLE_NAME`"),
            "{message}"
        );
    }

    #[test]
    fn nested_braces_are_rejected() {
        let e = run("a = \"${NOPE:-${REGION}}\"").unwrap_err();
        assert_eq!(e.kind, ExpandErrorKind::Nested("NOPE".into()));
        let e = run("a = \"${NOPE:-{x}\"").unwrap_err();
        assert_eq!(e.kind, ExpandErrorKind::Nested("NOPE".into()));
        let e = run("a = \"${RE${X}}\"").unwrap_err();
        assert_eq!(e.kind, ExpandErrorKind::Nested("RE".into()));
        // Rejected even when the variable is set and the default would not be used.
        let e = run("a = \"${REGION:-${X}}\"").unwrap_err();
        assert_eq!(e.kind, ExpandErrorKind::Nested("REGION".into()));
    }

    #[test]
    fn malformed_references_are_errors() {
        assert_eq!(run("a = \"${REGION\"").unwrap_err().kind, ExpandErrorKind::Unterminated);
        assert_eq!(
            run("a = \"${}\"").unwrap_err().kind,
            ExpandErrorKind::BadName(String::new())
        );
        assert_eq!(
            run("a = \"${1X}\"").unwrap_err().kind,
            ExpandErrorKind::BadName("1X".into())
        );
        assert_eq!(
            run("a = \"${A-B}\"").unwrap_err().kind,
            ExpandErrorKind::BadName("A-B".into())
        );
    }

    #[test]
    fn escape_and_lone_dollars_are_literal() {
        assert_eq!(run("a = \"$${REGION}\"").unwrap(), "a = \"${REGION}\"");
        // Read left to right: a lone `$`, then the escape.
        assert_eq!(run("a = \"$$${REGION}\"").unwrap(), "a = \"$${REGION}\"");
        assert_eq!(run("a = \"cost: $5 $\"").unwrap(), "a = \"cost: $5 $\"");
        assert_eq!(run("a = \"$REGION\"").unwrap(), "a = \"$REGION\"");
    }

    #[test]
    fn whole_line_comments_are_not_expanded() {
        let text = "# region = \"${UNSET_IN_COMMENT}\"\n  # ${ALSO}\na = \"${REGION}\"\n";
        assert_eq!(
            run(text).unwrap(),
            "# region = \"${UNSET_IN_COMMENT}\"\n  # ${ALSO}\na = \"ap-southeast-2\"\n"
        );
    }
}
