//! The YAML policy: what services to balance, over which real servers, how.
//!
//! Read in three steps, so every mistake is reported at once and in the policy's words:
//! `tree` reads the YAML with the position of every key and value; `shape` checks it against
//! the table of keys in `keys` (which `reference` also renders as xdplb.yaml(5)); `schema`
//! then reads the now well-formed file typed, and `validate` checks the rules between keys
//! and builds the `model` the rest of the controller uses. Every problem is reported as
//! `FILE:LINE:COLUMN: message`.

mod duration;
mod fingerprint;
pub mod keys;
pub mod model;
pub mod reference;
mod schema;
mod shape;
mod tree;
mod validate;
mod warnings;

#[cfg(test)]
mod tests;

use std::{fmt, path::Path};

pub use fingerprint::fingerprint;
pub use model::*;
pub use warnings::warnings;

/// A policy that cannot be used, with where in the file the problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // About the file as a whole: no position to give.
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for PolicyError {}

/// Everything wrong with a policy, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

/// More than this many problems are summarised: a file that wrong needs its first ones fixed.
const SHOWN_ERRORS: usize = 50;

impl PolicyErrors {
    fn one(error: PolicyError) -> PolicyErrors {
        PolicyErrors(vec![error])
    }

    /// The first problem in the file.
    pub fn first(&self) -> &PolicyError {
        &self.0[0]
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().take(SHOWN_ERRORS).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        if self.0.len() > SHOWN_ERRORS {
            write!(f, "\n... and {} more problems", self.0.len() - SHOWN_ERRORS)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// The largest policy file read: thousands of services fit in far less; a device or a
/// runaway file is refused before it is read into memory.
const MAX_POLICY_BYTES: u64 = 4 << 20;

/// Reads and validates a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyErrors> {
    let file = path.display().to_string();
    let whole = |message: String| {
        PolicyErrors::one(PolicyError {
            file: file.clone(),
            line: 0,
            column: 0,
            message,
        })
    };
    let meta =
        std::fs::metadata(path).map_err(|e| whole(format!("cannot read the policy: {e}")))?;
    if !meta.is_file() {
        return Err(whole("the policy must be a regular file".into()));
    }
    if meta.len() > MAX_POLICY_BYTES {
        return Err(whole(format!(
            "the policy is {} bytes; at most {MAX_POLICY_BYTES} are read",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| whole(format!("cannot read the policy: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        // Where the first byte that is not UTF-8 is, so the operator can find it.
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        // In characters, as every other position is.
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[line_start..]).chars().count() as u64 + 1;
        PolicyErrors::one(PolicyError {
            file: file.clone(),
            line,
            column,
            message: "not UTF-8 text (save the policy as UTF-8)".into(),
        })
    })?;
    parse(&file, &text)
}

/// Validates policy text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyErrors> {
    let located = |problems: Vec<validate::Invalid>| {
        PolicyErrors(
            problems
                .into_iter()
                .map(|p| PolicyError {
                    file: file.to_string(),
                    line: p.line,
                    column: p.column,
                    message: p.message,
                })
                .collect(),
        )
    };
    let yaml_error = |e: serde_saphyr::Error| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        // Never past the file's end (a file of comments is "empty" at its line 1).
        let line = line.min(text.lines().count().max(1) as u64);
        located(vec![syntax_problem(text, line, column, plain_message(&e))])
    };
    if let Some(line) = second_document(text) {
        return Err(located(vec![validate::Invalid {
            line,
            column: 1,
            message: "a second YAML document starts here; the policy is one document (remove this `---` and what follows)".into(),
        }]));
    }
    let mut tree = tree::read(text).map_err(yaml_error)?;
    if matches!(tree.value, tree::Value::Null) {
        (tree.line, tree.column) = (1, 1);
    }
    let problems = shape::check(&tree, &keys::POLICY);
    if !problems.is_empty() {
        return Err(located(problems));
    }
    // The shape is right, so the typed read succeeds; its error stays reported if not.
    let raw: schema::PolicyFile =
        serde_saphyr::from_str_with_options(text, tree::options()).map_err(yaml_error)?;
    validate::validate(raw).map_err(located)
}

/// The line of a `---` that starts a second document (one before any content starts the first).
fn second_document(text: &str) -> Option<u64> {
    let mut content = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            if content {
                return Some(i as u64 + 1);
            }
            content = true; // what follows is the first document
            continue;
        }
        let body = trimmed.trim_start();
        if !body.is_empty() && !body.starts_with('#') && !body.starts_with('%') {
            content = true;
        }
    }
    None
}

/// A YAML syntax error, or the tab that caused it: YAML indents with spaces only, and the
/// parser reports a tab where the indentation it broke ends, often on another line.
fn syntax_problem(text: &str, line: u64, column: u64, message: String) -> validate::Invalid {
    let tab = text
        .lines()
        .enumerate()
        .take(line as usize + 1)
        .find_map(|(i, l)| {
            let indent = &l[..l.len() - l.trim_start().len()];
            indent.find('\t').map(|col| (i as u64 + 1, col as u64 + 1))
        });
    match tab {
        Some((line, column)) => validate::Invalid {
            line,
            column,
            message: "a tab indents this line; YAML indents with spaces only".into(),
        },
        None => validate::Invalid {
            line,
            column,
            message: format!("not valid YAML: {message}"),
        },
    }
}

/// The parser's message, without its position (printed by us), in plainer words where the
/// parser's own would send the operator to its API or its internals.
fn plain_message(error: &serde_saphyr::Error) -> String {
    let message = parser_message(error);
    let plainer = [
        (
            "budget breached",
            "the policy is nested too deeply or has too many aliases",
        ),
        ("recursion limit", "the policy is nested too deeply"),
        (
            "simple key expected ':'",
            "a key needs `: ` (a colon and a space) before its value",
        ),
        (
            "multiple YAML documents",
            "the policy is one YAML document: remove the second `---` and what follows",
        ),
    ];
    for (theirs, ours) in plainer {
        if message.contains(theirs) {
            return ours.to_string();
        }
    }
    message
}

/// serde-saphyr renders `error: line L column C: message` plus a source excerpt; keep only the
/// message.
fn parser_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or("invalid policy").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.split_once(": ") {
        Some((position, message))
            if position.starts_with("line ") && position.contains(" column ") =>
        {
            message.to_string()
        }
        _ => first.to_string(),
    }
}
