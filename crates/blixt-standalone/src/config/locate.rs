//! Line and column of a field path in a YAML document.
//!
//! Typed deserialization runs on a `serde_yaml::Value`, which gives clean messages and field
//! paths but no positions. The position is found afterwards by walking the document's text
//! with a seed that follows the path and stops with an error where the path ends: serde_yaml
//! stamps every error raised inside a visitor with the position of the node being read. The
//! walk stops at the deepest node of the path that exists, so a missing field is reported at
//! the mapping that lacks it.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::path::{FieldPath, Segment};

/// 1-based line and column.
pub(crate) type Position = (usize, usize);

/// Position of `path` in `text` (one YAML document), or of the deepest part of it that exists.
/// `None` when the text does not parse (its syntax error is reported elsewhere).
pub(crate) fn locate(text: &str, path: &FieldPath) -> Option<Position> {
    let de = serde_yaml::Deserializer::from_str(text);
    match (Locator { path: &path.0 }).deserialize(de) {
        Ok(()) => None,
        Err(e) => e.location().map(|l| (l.line(), l.column())),
    }
}

fn here<E: de::Error>() -> E {
    E::custom("position found")
}

struct Locator<'p> {
    path: &'p [Segment],
}

impl<'de> DeserializeSeed<'de> for Locator<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Reads one mapping key: `Ok(true)` when it is the key looked for. When that key ends the
/// path, the walk stops on the key itself (its line is where a person looks).
struct KeySeed<'k> {
    want: &'k str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if v == self.want {
            if self.last {
                return Err(here());
            }
            return Ok(true);
        }
        Ok(false)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

impl<'de> Visitor<'de> for Locator<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    // A scalar ends the walk whether or not the path goes on: it is the deepest node there is.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(here())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(here())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(here())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(here())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(here())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(here())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(here())
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Segment::Index(want), rest)) = self.path.split_first() else {
            return Err(here());
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(here());
            }
        }
        match seq.next_element_seed(Locator { path: rest })? {
            Some(()) => Ok(()),
            None => Err(here()),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Key(want), rest)) = self.path.split_first() else {
            return Err(here());
        };
        let seed = || KeySeed {
            want,
            last: rest.is_empty(),
        };
        while let Some(found) = map.next_key_seed(seed())? {
            if found {
                return map.next_value_seed(Locator { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(here())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata:
  name: app
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs:
    - name: a
      port: 80
    - name: b
      port: x
";

    #[test]
    fn finds_keys_indices_and_the_nearest_existing_node() {
        let p = |s: &[&str]| FieldPath::keys(s);
        assert_eq!(locate(DOC, &p(&["kind"])), Some((2, 1)));
        assert_eq!(locate(DOC, &p(&["metadata", "name"])), Some((4, 3)));
        let port = p(&["spec", "rules"])
            .index(0)
            .key("backendRefs")
            .index(1)
            .key("port");
        assert_eq!(locate(DOC, &port), Some((12, 7)));
        // A missing field: the mapping that lacks it (its first key).
        let weight = p(&["spec", "rules"])
            .index(0)
            .key("backendRefs")
            .index(0)
            .key("weight");
        assert_eq!(locate(DOC, &weight), Some((9, 7)));
        // An index past the end: the sequence.
        let third = p(&["spec", "rules"]).index(0).key("backendRefs").index(5);
        assert_eq!(locate(DOC, &third), Some((9, 5)));
        // Flow style.
        let parent = p(&["spec", "parentRefs"]).index(0).key("name");
        assert_eq!(locate(DOC, &parent), Some((6, 17)));
        assert_eq!(locate(DOC, &FieldPath::root()), Some((1, 1)));
    }
}
