//! Small helpers on objects as JSON values.

use serde_json::{Map, Value};

/// `metadata` of an object (empty if missing).
pub fn meta(obj: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    obj.get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

/// `metadata` of an object, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj).get(field).and_then(Value::as_str).unwrap_or("")
}

/// The object's `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    format_time(jiff::Timestamp::now())
}

/// A timestamp as Kubernetes writes it.
pub fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Marks `obj` for deletion `grace` seconds after `now` (`deletionTimestamp` and
/// `deletionGracePeriodSeconds`).
pub fn mark_deleted(obj: &mut Value, grace: i64, now: jiff::Timestamp) {
    let when = now + jiff::SignedDuration::from_secs(grace);
    let m = meta_mut(obj);
    m.insert("deletionTimestamp".into(), format_time(when).into());
    m.insert("deletionGracePeriodSeconds".into(), grace.into());
}

/// Whether two objects differ only in the fields that change on every write
/// (`metadata.resourceVersion`, `metadata.managedFields`): "did anything change".
/// Compares in place; the objects are not copied.
pub fn same_but_volatile(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    fn lasting(o: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
        o.get("metadata")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(k, _)| !matches!(k.as_str(), "resourceVersion" | "managedFields"))
    }
    let meta_b = b.get("metadata").and_then(Value::as_object);
    a.len() == b.len()
        && a.contains_key("metadata") == b.contains_key("metadata")
        && a.iter()
            .all(|(k, v)| k == "metadata" || b.get(k) == Some(v))
        && lasting(a).count() == lasting(b).count()
        && lasting(a).all(|(k, v)| meta_b.and_then(|m| m.get(k)) == Some(v))
}

/// Paths of fields present in `input` (non-null) but missing from `typed`: what a typed
/// decode dropped as unknown.
pub fn unknown_fields(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(input, typed, &mut String::new(), &mut out);
    out
}

fn walk_unknown(input: &Value, typed: &Value, path: &mut String, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                match b.get(k) {
                    Some(tv) => walk_unknown(v, tv, path, out),
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, tv)) in a.iter().zip(b.iter()).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk_unknown(v, tv, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Characters upstream uses for generated name suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `generateName` plus five random characters, as upstream's name generator makes them.
pub fn generate_name(base: &str) -> String {
    use rand::Rng;
    let base = if base.len() > 58 { &base[..58] } else { base };
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_with_paths() {
        let input = json!({"spec": {"replicas": 1, "replica": 2, "template": {"spec": {"containers": [{"name": "a", "imagee": "x"}]}}}, "extra": null});
        let typed =
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a"}]}}}});
        assert_eq!(
            unknown_fields(&input, &typed),
            vec!["spec.replica", "spec.template.spec.containers[0].imagee"]
        );
    }

    #[test]
    fn only_volatile_fields_may_differ_for_an_unchanged_object() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1", "managedFields": []}, "spec": {"a": 1}});
        let same = json!({"spec": {"a": 1}, "metadata": {"resourceVersion": "2", "name": "x"}});
        assert!(same_but_volatile(&a, &same));
        for other in [
            json!({"metadata": {"name": "x"}, "spec": {"a": 2}}),
            json!({"metadata": {"name": "y"}, "spec": {"a": 1}}),
            json!({"metadata": {"name": "x", "labels": {}}, "spec": {"a": 1}}),
            json!({"metadata": {"name": "x"}, "spec": {"a": 1}, "status": {}}),
            json!({"metadata": {"name": "x"}, "status": {"a": 1}}),
        ] {
            assert!(!same_but_volatile(&a, &other), "{other}");
            assert!(!same_but_volatile(&other, &a), "{other}");
        }
        let bare = json!({"spec": {}});
        assert!(!same_but_volatile(
            &bare,
            &json!({"metadata": {"resourceVersion": "1"}, "spec": {}})
        ));
    }

    #[test]
    fn generated_names_keep_the_base() {
        let n = generate_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9);
    }
}
