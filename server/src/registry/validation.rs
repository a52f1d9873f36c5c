//! Placeholder until the validation module lands.
#![allow(missing_docs)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}
pub fn validate_name(_group: &str, _kind: &str, _name: &str) -> Vec<String> {
    Vec::new()
}
pub fn validate(
    _group: &str,
    _kind: &str,
    _obj: &serde_json::Value,
    _old: Option<&serde_json::Value>,
) -> Vec<Cause> {
    Vec::new()
}
