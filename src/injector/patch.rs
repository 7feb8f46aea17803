//! JSON Patch operations that add to a pod without replacing anything already there.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::Value;

/// Collects `add` operations; paths are built from tokens, so a `/` in an annotation key is
/// escaped as `~1` (RFC 6901).
#[derive(Debug, Default)]
pub struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

impl PatchBuilder {
    /// Adds `value` at the path made of `tokens`.
    pub fn add(&mut self, tokens: &[&str], value: Value) {
        self.ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(tokens.iter().copied()),
            value,
        }));
    }

    /// Adds `items` to the list at `list`: creates the list when the pod has none, else puts
    /// them at the front (`first`) or the end, keeping what is there.
    pub fn add_to_list(&mut self, list: &[&str], exists: bool, first: bool, items: Vec<Value>) {
        if items.is_empty() {
            return;
        }
        if !exists {
            self.add(list, Value::Array(items));
            return;
        }
        for (i, item) in items.into_iter().enumerate() {
            let index = if first {
                i.to_string()
            } else {
                "-".to_string()
            };
            let path: Vec<&str> = list.iter().copied().chain([index.as_str()]).collect();
            self.add(&path, item);
        }
    }

    /// Sets one entry of the map at `map`, creating the map when the pod has none.
    pub fn add_to_map(&mut self, map: &[&str], exists: bool, key: &str, value: Value) {
        if exists {
            let path: Vec<&str> = map.iter().copied().chain([key]).collect();
            self.add(&path, value);
        } else {
            let mut object = serde_json::Map::new();
            object.insert(key.to_string(), value);
            self.add(map, Value::Object(object));
        }
    }

    /// The patch, or `None` when there is nothing to do (no empty patch is ever sent).
    pub fn finish(self) -> Option<Patch> {
        (!self.ops.is_empty()).then_some(Patch(self.ops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(doc: &mut Value, builder: PatchBuilder) {
        let patch = builder.finish().unwrap();
        json_patch::patch(doc, &patch).unwrap();
    }

    #[test]
    fn keys_with_slashes_are_escaped() {
        let mut b = PatchBuilder::default();
        b.add_to_map(&["metadata", "annotations"], true, "a.io/b", json!("c"));
        let text = serde_json::to_string(&b.ops).unwrap();
        assert!(text.contains("/metadata/annotations/a.io~1b"), "{text}");
        let mut doc = json!({"metadata": {"annotations": {"x": "y"}}});
        apply(&mut doc, b);
        assert_eq!(doc["metadata"]["annotations"]["a.io/b"], "c");
        assert_eq!(doc["metadata"]["annotations"]["x"], "y");
    }

    #[test]
    fn lists_are_created_or_extended() {
        let mut doc = json!({"spec": {"l": ["old"]}});
        let mut b = PatchBuilder::default();
        b.add_to_list(&["spec", "l"], true, true, vec![json!("a"), json!("b")]);
        b.add_to_list(&["spec", "m"], false, true, vec![json!("c")]);
        b.add_to_list(&["spec", "l"], true, false, vec![json!("z")]);
        apply(&mut doc, b);
        assert_eq!(
            doc,
            json!({"spec": {"l": ["a", "b", "old", "z"], "m": ["c"]}})
        );
    }

    #[test]
    fn nothing_to_do_is_no_patch() {
        let mut b = PatchBuilder::default();
        b.add_to_list(&["spec", "l"], false, true, vec![]);
        assert!(b.finish().is_none());
    }
}
