//! Placeholder until the defaults module lands.
#![allow(missing_docs)]
pub fn apply_defaults(_group: &str, _kind: &str, _obj: &mut serde_json::Value) {}
