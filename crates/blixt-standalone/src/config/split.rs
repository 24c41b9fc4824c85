//! Splitting a multi-document YAML file into its documents, keeping line numbers.
//!
//! YAML forbids a line starting with `---` or `...` (followed by a blank or the line end)
//! inside any node, so those lines are document boundaries wherever they appear (YAML 1.2,
//! section 9.1.2 "Document Markers"). Each document is parsed on its own so that one broken
//! document does not hide the errors of the others, and its text is prefixed with as many
//! newlines as lines precede it so that every position serde_yaml reports is a line of the
//! file.

/// One document of a file.
#[derive(Debug, Clone)]
pub(crate) struct RawDocument {
    /// The document's text, preceded by newlines so positions are the file's.
    pub text: String,
    /// 1-based line of the document's first content line (not blank, not a comment, not a
    /// bare `---`); `None` when it has none (an empty document, skipped).
    pub first_line: Option<usize>,
}

fn is_marker(line: &str, marker: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    match line.strip_prefix(marker) {
        Some(rest) => rest.is_empty() || rest.starts_with([' ', '\t']),
        None => false,
    }
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return false;
    }
    // `---` alone or followed by a comment opens a document but holds nothing.
    if is_marker(line, "---") {
        let rest = t[3..].trim_start();
        return !(rest.is_empty() || rest.starts_with('#'));
    }
    !is_marker(line, "...")
}

pub(crate) fn split_documents(text: &str) -> Vec<RawDocument> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let mut current: Option<(usize, String, Option<usize>)> = None;
    let finish = |cur: Option<(usize, String, Option<usize>)>, docs: &mut Vec<RawDocument>| {
        if let Some((start, body, first_line)) = cur {
            docs.push(RawDocument {
                text: "\n".repeat(start) + &body,
                first_line,
            });
        }
    };
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        if is_marker(line, "---") {
            finish(current.take(), &mut docs);
        }
        let (_, body, first_line) = current.get_or_insert_with(|| (idx, String::new(), None));
        body.push_str(line);
        if first_line.is_none() && is_content(line) {
            *first_line = Some(idx + 1);
        }
        if is_marker(line, "...") {
            finish(current.take(), &mut docs);
        }
    }
    finish(current, &mut docs);
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_markers_and_keeps_lines() {
        let text =
            "# leading comment\n---\na: 1\n--- # second\n\nb: 2\n...\n---\n\n--- {c: 3}\n---x: 4\n";
        let docs = split_documents(text);
        let firsts: Vec<_> = docs.iter().map(|d| d.first_line).collect();
        assert_eq!(firsts, vec![None, Some(3), Some(6), None, Some(10)]);
        // Positions are the file's: the second document's `b` is on line 6.
        let v: serde_yaml::Value = serde_yaml::from_str(&docs[2].text).unwrap();
        assert_eq!(v["b"], serde_yaml::Value::from(2));
        let err = serde_yaml::from_str::<u32>(&docs[2].text).unwrap_err();
        assert_eq!(err.location().unwrap().line(), 6);
        // `---x` is not a marker: it belongs to the document opened by `--- {c: 3}`, which is
        // then invalid YAML, as it should be.
        assert!(docs[4].text.ends_with("--- {c: 3}\n---x: 4\n"));
    }

    #[test]
    fn a_file_without_markers_is_one_document() {
        let docs = split_documents("\u{feff}a: 1\r\nb: 2\r\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].first_line, Some(1));
    }
}
