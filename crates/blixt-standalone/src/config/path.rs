//! Field paths inside a document, as a person reads them: `spec.rules[0].backendRefs[1].port`.

use std::fmt;

/// One step into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Where a field lies in a document. Displays as `spec.rules[0].port`; keys that are not
/// plain identifiers are quoted: `metadata.labels["kubernetes.io/service-name"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// A path of keys only: `FieldPath::keys(&["metadata", "name"])`.
    pub fn keys(keys: &[&str]) -> Self {
        FieldPath(keys.iter().map(|k| Segment::Key(k.to_string())).collect())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// This path with a key appended.
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_string()));
        p
    }

    /// This path with an index appended.
    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Index(index));
        p
    }

    /// The path serde_path_to_error recorded. Enum variants and segments it could not name
    /// are left out: they are not keys a person could find in the file.
    pub(crate) fn from_tracked(path: &serde_path_to_error::Path) -> Self {
        FieldPath(
            path.iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { .. }
                    | serde_path_to_error::Segment::Unknown => None,
                })
                .collect(),
        )
    }

    /// The path of a field serde_ignored saw skipped.
    pub(crate) fn from_ignored(path: &serde_ignored::Path<'_>) -> Self {
        fn walk(p: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
            match p {
                serde_ignored::Path::Root => {}
                serde_ignored::Path::Seq { parent, index } => {
                    walk(parent, out);
                    out.push(Segment::Index(*index));
                }
                serde_ignored::Path::Map { parent, key } => {
                    walk(parent, out);
                    out.push(Segment::Key(key.clone()));
                }
                serde_ignored::Path::Some { parent }
                | serde_ignored::Path::NewtypeStruct { parent }
                | serde_ignored::Path::NewtypeVariant { parent } => walk(parent, out),
            }
        }
        let mut out = Vec::new();
        walk(path, &mut out);
        FieldPath(out)
    }
}

fn plain(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if plain(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{k:?}]")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let p = FieldPath::keys(&["spec", "rules"])
            .index(0)
            .key("backendRefs")
            .index(2)
            .key("port");
        assert_eq!(p.to_string(), "spec.rules[0].backendRefs[2].port");
        let l = FieldPath::keys(&["metadata", "labels", "kubernetes.io/service-name"]);
        assert_eq!(
            l.to_string(),
            r#"metadata.labels["kubernetes.io/service-name"]"#
        );
        assert_eq!(FieldPath::root().to_string(), "(document)");
    }
}
