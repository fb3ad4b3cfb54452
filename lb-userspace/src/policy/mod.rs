//! The YAML policy: what services to balance, over which real servers, how.
//!
//! `schema` mirrors the file (serde, with source positions); `validate` checks it and builds
//! the `model` the rest of the controller uses. Every problem is reported as
//! `FILE:LINE:COLUMN: message`.

mod duration;
mod fingerprint;
pub mod model;
mod schema;
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

/// The largest policy file read: thousands of services fit in far less; a device or a
/// runaway file is refused before it is read into memory.
const MAX_POLICY_BYTES: u64 = 4 << 20;

/// Reads and validates a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let file = path.display().to_string();
    let whole = |message: String| PolicyError {
        file: file.clone(),
        line: 0,
        column: 0,
        message,
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
        let column = good.iter().rev().take_while(|&&b| b != b'\n').count() as u64 + 1;
        PolicyError {
            file: file.clone(),
            line,
            column,
            message: "not UTF-8 text (save the policy as UTF-8)".into(),
        }
    })?;
    parse(&file, &text)
}

/// Validates policy text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
    let raw: schema::PolicyFile = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        PolicyError {
            file: file.to_string(),
            line,
            column,
            message: plain_message(&e),
        }
    })?;
    validate::validate(raw).map_err(|e| PolicyError {
        file: file.to_string(),
        line: e.line,
        column: e.column,
        message: e.message,
    })
}

/// serde-saphyr renders `error: line L column C: message` plus a source excerpt; keep only the
/// message, since we print the position ourselves.
fn plain_message(error: &serde_saphyr::Error) -> String {
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
