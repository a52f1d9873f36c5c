//! The parts of a stored object that label and field selectors read, parsed from its
//! JSON without building the rest.
//!
//! Every watch with a selector tests each change twice (before and after), and a list
//! with a selector tests every object, so decoding whole objects there costs more than
//! anything else the API server does under load. Selectors read `metadata.name`,
//! `metadata.namespace`, `metadata.labels`, scalars at the top level and one level
//! down (`spec.nodeName`, `status.phase`, `involvedObject.kind`, `type`, ...), and the
//! rows of `status.podIPs`. [`parse`] keeps exactly those; everything else is skipped
//! by the parser without allocating.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Arrays one level down whose rows (their scalar members) a field selector reads.
const ROW_ARRAYS: &[&str] = &["podIPs"];

/// Parses what selectors read of an object (see the module docs); `matches` on the
/// result answers as it would on the whole object.
pub fn parse(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Keep::Root.deserialize(&mut de)?.unwrap_or(Value::Null);
    de.end()?;
    Ok(value)
}

/// What to keep of the value at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// The object itself.
    Root,
    /// `metadata`: name, namespace and labels.
    Metadata,
    /// A top-level member: a scalar, or an object's scalars and row arrays.
    TopMember,
    /// Scalars only; objects and arrays are skipped.
    Scalar,
    /// An array of rows, each kept as its scalar members.
    Rows,
    /// A row: its scalar members.
    Row,
    /// All of it.
    All,
}

impl Keep {
    /// What to keep of the member `key` of an object kept as `self`.
    fn member(self, key: &str) -> Option<Keep> {
        match self {
            Keep::Root if key == "metadata" => Some(Keep::Metadata),
            Keep::Root => Some(Keep::TopMember),
            Keep::Metadata => matches!(key, "name" | "namespace" | "labels").then_some(Keep::All),
            Keep::TopMember if ROW_ARRAYS.contains(&key) => Some(Keep::Rows),
            Keep::TopMember | Keep::Row => Some(Keep::Scalar),
            Keep::Scalar | Keep::Rows | Keep::All => None,
        }
    }

    fn keeps_objects(self) -> bool {
        matches!(
            self,
            Keep::Root | Keep::Metadata | Keep::TopMember | Keep::Row
        )
    }
}

impl<'de> DeserializeSeed<'de> for Keep {
    /// `None`: skipped.
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        if self == Keep::All {
            return serde::Deserialize::deserialize(d).map(Some);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Keep {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<Value>, E> {
        Ok(Some(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<Value>, E> {
        Ok(Some(Value::Number(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<Value>, E> {
        Ok(Some(Value::Number(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<Value>, E> {
        Ok(Number::from_f64(v).map(Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<Value>, E> {
        Ok(Some(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<Value>, E> {
        Ok(Some(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Value>, A::Error> {
        if self != Keep::Rows {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(None);
        }
        let mut rows = Vec::new();
        while let Some(row) = seq.next_element_seed(Keep::Row)? {
            rows.extend(row);
        }
        Ok(Some(Value::Array(rows)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        if !self.keeps_objects() {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(None);
        }
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match self.member(&key) {
                Some(keep) => {
                    if let Some(v) = map.next_value_seed(keep)? {
                        out.insert(key, v);
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(Value::Object(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::selectors::{field_value, selectable_fields};
    use serde_json::json;

    fn objects() -> Vec<(&'static str, &'static str, Value)> {
        vec![
            (
                "",
                "Pod",
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "tier": "a"},
                        "annotations": {"x": "y"}, "ownerReferences": [{"kind": "ReplicaSet", "name": "rs"}]},
                    "spec": {"nodeName": "n1", "restartPolicy": "Never", "schedulerName": "other",
                        "serviceAccount": "legacy", "hostNetwork": true,
                        "containers": [{"name": "c", "image": "busybox", "env": [{"name": "A", "value": "1"}]}]},
                    "status": {"phase": "Running", "podIP": "10.0.0.1",
                        "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
                        "nominatedNodeName": "n2",
                        "conditions": [{"type": "Ready", "status": "True"}]}
                }),
            ),
            ("", "Pod", json!({"metadata": {"name": "bare"}, "spec": {}})),
            (
                "",
                "Node",
                json!({"metadata": {"name": "n1", "labels": {"zone": "z"}}, "spec": {"unschedulable": true, "taints": []}}),
            ),
            (
                "",
                "Namespace",
                json!({"metadata": {"name": "ns"}, "status": {"phase": "Terminating"}}),
            ),
            (
                "",
                "Secret",
                json!({"metadata": {"name": "s", "namespace": "ns"}, "type": "kubernetes.io/tls", "data": {"a": "Yg=="}}),
            ),
            (
                "",
                "Service",
                json!({"metadata": {"name": "s", "namespace": "ns"}, "spec": {"clusterIP": "10.43.0.5", "type": "NodePort", "ports": [{"port": 80}]}}),
            ),
            (
                "apps",
                "ReplicaSet",
                json!({"metadata": {"name": "r", "namespace": "ns"}, "status": {"replicas": 3}}),
            ),
            (
                "batch",
                "Job",
                json!({"metadata": {"name": "j", "namespace": "ns"}, "status": {"succeeded": 2}}),
            ),
            (
                "",
                "Event",
                json!({"metadata": {"name": "e", "namespace": "ns"},
                    "involvedObject": {"kind": "Pod", "namespace": "ns", "name": "p", "uid": "u", "apiVersion": "v1", "resourceVersion": "7", "fieldPath": "spec.containers{c}"},
                    "reason": "Scheduled", "reportingComponent": "default-scheduler", "source": {"component": "kubelet", "host": "n1"}, "type": "Normal"}),
            ),
            (
                "events.k8s.io",
                "Event",
                json!({"metadata": {"name": "e", "namespace": "ns"},
                    "regarding": {"kind": "Pod", "namespace": "ns", "name": "p", "uid": "u"},
                    "reason": "Pulled", "reportingController": "kubelet", "deprecatedSource": {"component": "kubelet"}, "type": "Warning"}),
            ),
        ]
    }

    #[test]
    fn every_field_and_the_labels_read_the_same_as_on_the_whole_object() {
        for (group, kind, obj) in objects() {
            let view = parse(obj.to_string().as_bytes()).expect("parses");
            assert_eq!(
                view.pointer("/metadata/labels"),
                obj.pointer("/metadata/labels"),
                "{kind}"
            );
            for field in selectable_fields(group, kind) {
                assert_eq!(
                    field_value(group, kind, &view, field),
                    field_value(group, kind, &obj, field),
                    "{group}/{kind} {field}"
                );
            }
        }
    }

    #[test]
    fn leaves_out_what_no_selector_reads() {
        let (_, _, pod) = objects().remove(0);
        let view = parse(pod.to_string().as_bytes()).expect("parses");
        assert!(view.pointer("/metadata/annotations").is_none());
        assert!(view.pointer("/spec/containers").is_none());
        assert!(view.pointer("/status/conditions").is_none());
        assert_eq!(view.pointer("/status/podIPs/1/ip"), Some(&json!("fd00::1")));
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(parse(b"{\"metadata\": ").is_err());
        assert!(parse(b"{} x").is_err());
    }
}
