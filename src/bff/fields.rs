//! Field selection: which members of a part's JSON answer a client receives.
//!
//! A selection is a list of names or dotted paths (`id`, `items.name`). It applies to an
//! object, and to every object of an array at any level, so `items.name` keeps the name of
//! each item. A member that is absent stays absent; values that are neither objects nor
//! arrays are kept whole.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The paths to keep, as a tree of member names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// A path ends here: the member is kept whole, whatever longer paths say.
    whole: bool,
    children: BTreeMap<String, Selection>,
}

// === impl Selection ===

impl Selection {
    /// Builds a selection from paths, or says which one is malformed.
    pub fn parse<'a>(
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<Selection, (usize, String)> {
        let mut root = Selection::default();
        for (i, path) in paths.into_iter().enumerate() {
            if path.split('.').any(str::is_empty) {
                return Err((
                    i,
                    format!("{path:?} is not a member name or a dotted path such as items.id"),
                ));
            }
            let mut node = &mut root;
            for segment in path.split('.') {
                node = node.children.entry(segment.to_string()).or_default();
            }
            node.whole = true;
        }
        Ok(root)
    }

    /// The parts of `value` the selection names.
    pub fn apply(&self, value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(self.apply_object(map)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.apply(v)).collect()),
            other => other,
        }
    }

    fn apply_object(&self, mut map: Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, sub) in &self.children {
            if let Some(v) = map.remove(name) {
                let kept = if sub.whole { v } else { sub.apply(v) };
                out.insert(name.clone(), kept);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn select(paths: &[&str], value: Value) -> Value {
        Selection::parse(paths.iter().copied())
            .unwrap()
            .apply(value)
    }

    #[test]
    fn keeps_listed_members_of_objects() {
        let v = json!({"id": 1, "name": "a", "email": "a@x", "address": {"city": "c", "zip": "z"}});
        assert_eq!(
            select(&["id", "address.city"], v),
            json!({"id": 1, "address": {"city": "c"}})
        );
    }

    #[test]
    fn applies_to_every_object_of_an_array() {
        let v = json!({"items": [{"id": 1, "name": "a", "price": 3}, {"id": 2, "price": 4}], "total": 7});
        assert_eq!(
            select(&["items.id", "items.name"], v),
            json!({"items": [{"id": 1, "name": "a"}, {"id": 2}]})
        );
        let top = json!([{"id": 1, "x": 2}, {"id": 3, "x": 4}]);
        assert_eq!(select(&["id"], top), json!([{"id": 1}, {"id": 3}]));
    }

    #[test]
    fn a_shorter_path_keeps_the_whole_member() {
        let v = json!({"a": {"b": 1, "c": 2}});
        assert_eq!(select(&["a.b", "a"], v.clone()), v);
        assert_eq!(select(&["a", "a.b"], v.clone()), v);
    }

    #[test]
    fn scalars_and_absent_members_are_left_alone() {
        assert_eq!(select(&["a.b"], json!({"a": 5})), json!({"a": 5}));
        assert_eq!(select(&["missing"], json!({"a": 5})), json!({}));
        assert_eq!(select(&["a"], json!("text")), json!("text"));
    }

    #[test]
    fn malformed_paths_are_refused() {
        assert_eq!(Selection::parse(["ok", "a..b"]).unwrap_err().0, 1);
        assert!(Selection::parse([""]).is_err());
        assert!(Selection::parse(["a."]).is_err());
    }
}
