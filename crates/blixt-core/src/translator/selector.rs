//! Kubernetes label selectors (`matchLabels` + `matchExpressions`), as used by
//! `allowedRoutes.namespaces.selector`.

use std::collections::BTreeMap;

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirement<'a> {
    pub key: &'a str,
    pub operator: &'a str,
    pub values: &'a [String],
}

/// Whether `labels` satisfy every `match_labels` pair and every requirement. An empty selector
/// selects everything (Kubernetes semantics). An unknown operator selects nothing: a selector
/// Blixt cannot evaluate must not widen access.
pub(crate) fn matches(
    match_labels: Option<&BTreeMap<String, String>>,
    requirements: &[Requirement<'_>],
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_ok = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && requirements.iter().all(|r| {
            let value = labels.get(r.key);
            match r.operator {
                "In" => value.is_some_and(|v| r.values.contains(v)),
                "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions() {
        let l = labels(&[("team", "a"), ("env", "prod")]);
        assert!(matches(None, &[], &l));
        assert!(matches(Some(&labels(&[("team", "a")])), &[], &l));
        assert!(!matches(Some(&labels(&[("team", "b")])), &[], &l));
        let vals = vec!["prod".to_string(), "staging".to_string()];
        let req = |op| Requirement {
            key: "env",
            operator: op,
            values: &vals,
        };
        assert!(matches(None, &[req("In")], &l));
        assert!(!matches(None, &[req("NotIn")], &l));
        assert!(matches(None, &[req("Exists")], &l));
        assert!(!matches(None, &[req("DoesNotExist")], &l));
        assert!(!matches(None, &[req("Gt")], &l));
        let none = labels(&[]);
        assert!(matches(None, &[req("NotIn")], &none));
        assert!(!matches(None, &[req("In")], &none));
    }
}
