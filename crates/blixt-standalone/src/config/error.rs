//! What can be wrong with a configuration, said so that a person can find it.

use std::fmt;
use std::path::PathBuf;

/// Every problem of one load. A load is all-or-nothing: with any problem, nothing of it may be
/// applied (the caller keeps serving the last good configuration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// In file order, then document order, then the order found within a document.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// What kind of problem, for callers and tests that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The path, a directory entry or a file cannot be read, or is not UTF-8.
    Io,
    /// The document is not valid YAML.
    Syntax,
    /// The document is not a mapping with string `apiVersion` and `kind`.
    NotAnObject,
    /// An `apiVersion`/`kind` pair Blixt does not read.
    UnknownKind,
    /// `metadata.name` missing or empty.
    MissingName,
    /// A field that does not deserialize: wrong type, missing required field, bad format.
    InvalidField,
    /// A field no version of the kind has (usually a typo); `kubectl apply` refuses these too.
    UnknownField,
    /// A second object of the same kind, namespace and name, or a second NodeConfig.
    Duplicate,
    /// A well-formed value that is not acceptable (a NodeConfig check).
    InvalidValue,
}

/// One problem, located.
///
/// Displays as
/// `FILE:LINE:COLUMN: document N (line L), KIND NAMESPACE/NAME: FIELD: MESSAGE`, leaving out
/// what is unknown: `LINE:COLUMN` is where the field is (the document's first line when the
/// field cannot be located), `document N (line L)` counts the file's non-empty documents from
/// 1 and gives the line the document starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based number of the document among the file's non-empty documents.
    pub document: Option<usize>,
    /// Line the document's content starts on.
    pub document_line: Option<usize>,
    /// Line and column of the field, when found.
    pub position: Option<(usize, usize)>,
    /// `TCPRoute default/app`, when kind and name are known.
    pub object: Option<String>,
    /// `spec.rules[0].backendRefs[0].port`, when the problem is in one field.
    pub field: Option<String>,
    pub kind: ProblemKind,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        match (self.position, self.document_line) {
            (Some((line, column)), _) => write!(f, ":{line}:{column}")?,
            (None, Some(line)) => write!(f, ":{line}")?,
            (None, None) => {}
        }
        f.write_str(":")?;
        let mut sep = " ";
        if let Some(n) = self.document {
            write!(f, " document {n}")?;
            if let Some(line) = self.document_line {
                write!(f, " (line {line})")?;
            }
            sep = ", ";
        }
        if let Some(object) = &self.object {
            write!(f, "{sep}{object}")?;
        }
        if self.document.is_some() || self.object.is_some() {
            f.write_str(":")?;
        }
        if let Some(field) = &self.field {
            write!(f, " {field}:")?;
        }
        write!(f, " {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let mut p = Problem {
            file: "examples/routes.yaml".into(),
            document: Some(2),
            document_line: Some(14),
            position: Some((22, 13)),
            object: Some("TCPRoute default/app".into()),
            field: Some("spec.rules[0].backendRefs[0].port".into()),
            kind: ProblemKind::InvalidField,
            message: "invalid type: string \"x\", expected i32".into(),
        };
        assert_eq!(
            p.to_string(),
            "examples/routes.yaml:22:13: document 2 (line 14), TCPRoute default/app: \
             spec.rules[0].backendRefs[0].port: invalid type: string \"x\", expected i32"
        );
        p.position = None;
        p.object = None;
        p.field = None;
        p.message = "unknown kind".into();
        assert_eq!(
            p.to_string(),
            "examples/routes.yaml:14: document 2 (line 14): unknown kind"
        );
        let io = Problem {
            file: "missing.yaml".into(),
            document: None,
            document_line: None,
            position: None,
            object: None,
            field: None,
            kind: ProblemKind::Io,
            message: "No such file or directory (os error 2)".into(),
        };
        assert_eq!(
            io.to_string(),
            "missing.yaml: No such file or directory (os error 2)"
        );
    }
}
