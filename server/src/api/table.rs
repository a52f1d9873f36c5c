//! `Table` output (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): what
//! `kubectl get` prints, computed on the server from the kind's printer columns.

use super::objects::meta;
use crate::registry::{printers, Resource};
use serde_json::{json, Map, Value};

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// The object's metadata as `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

/// Table options from the query.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// `includeObject`.
    pub include: IncludeObject,
}

impl TableOptions {
    /// Reads `includeObject`.
    pub fn from_query(q: &std::collections::HashMap<String, String>) -> TableOptions {
        let include = match q.get("includeObject").map(String::as_str) {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        };
        TableOptions { include }
    }
}

/// Whether an Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    // The first acceptable type wins, as in upstream's negotiation.
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=Table")
            && p.contains("g=meta.k8s.io")
            && p.contains("v=v1")
            && !p.contains("v=v1beta1")
        {
            return true;
        }
        if p.starts_with("application/json")
            || p.starts_with("*/*")
            || p.starts_with("application/yaml")
        {
            return false;
        }
    }
    false
}

/// Builds a Table of `objects`. Column definitions are included when `with_columns`
/// (a watch sends them in its first event only).
pub fn to_table(
    r: &Resource,
    objects: &[Value],
    opts: &TableOptions,
    with_columns: bool,
    revision: Option<i64>,
    continue_token: Option<&str>,
) -> Value {
    let columns = printers::columns(r.group, r.kind);
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(printers::cells(r.group, r.kind, obj, now)));
            match opts.include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert(
                        "object".into(),
                        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta(obj)}),
                    );
                }
                IncludeObject::Object => {
                    row.insert("object".into(), obj.clone());
                }
            }
            Value::Object(row)
        })
        .collect();
    let mut metadata = Map::new();
    if let Some(rev) = revision {
        metadata.insert("resourceVersion".into(), rev.to_string().into());
    }
    if let Some(c) = continue_token {
        metadata.insert("continue".into(), c.into());
    }
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [],
        "rows": rows,
    });
    if with_columns {
        table["columnDefinitions"] = columns
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.type_,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect();
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_chosen_only_when_asked_first() {
        assert!(wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(
            "application/json, application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
    }
}
