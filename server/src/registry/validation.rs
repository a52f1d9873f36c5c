//! Upstream's validation of built-in kinds, applied to defaulted objects as JSON.
//!
//! kubectl users read these messages, so they follow the `field.Error` bodies of
//! `k8s.io/apimachinery/pkg/util/validation/field` and the rules of
//! `pkg/apis/<group>/validation` upstream: `Required value`, `Invalid value: <value>:
//! <detail>`, `Unsupported value: <value>: supported values: ...` and so on, with
//! strings quoted and other values rendered as JSON.
//!
//! Only the rules users hit most are covered: metadata labels and annotations, pod
//! specs (containers, ports, volumes and mounts, policies), pod updates, workload
//! selectors and strategies, Jobs and CronJobs, Services, and ConfigMap/Secret data.
//! Objects arrive after the typed round trip and defaulting, so field types are right
//! and defaulted fields are present; values of another shape are skipped.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

type Obj = Map<String, Value>;

/// One field error (a StatusCause).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The cause type, e.g. `FieldValueInvalid`.
    pub reason: &'static str,
    /// The field path, e.g. `spec.containers[0].name`.
    pub field: String,
    /// Upstream's error body, e.g. `Required value`.
    pub message: String,
}

const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;
const MAX_SECRET_SIZE: usize = 1024 * 1024;
const MAX_INT32: i64 = 2_147_483_647;
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', \
    and must start and end with an alphanumeric character";
const LABEL_KEY_EXAMPLES: [&str; 3] = ["MyName", "my.name", "123-abc"];
const POD_UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,\
    `spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),\
    `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";
const IMMUTABLE_WHEN_SET: &str = "field is immutable when `immutable` is set";
const SELECTOR_MISMATCH: &str = "`selector` does not match template `labels`";

/// Which naming rule `metadata.name` of `kind` follows, as upstream's per-kind
/// `ValidateNameFunc`. Returns the failure messages only; the caller adds
/// `Invalid value: "<name>": `. An empty name gives none (it is reported as
/// required elsewhere).
pub fn validate_name(group: &str, kind: &str, name: &str) -> Vec<String> {
    if name.is_empty() {
        return Vec::new();
    }
    match (group, kind) {
        // Service names are RFC 1123 labels since RelaxedServiceNameValidation;
        // StatefulSet names become pod hostnames.
        ("", "Namespace" | "Service") | ("apps", "StatefulSet") => is_dns1123_label(name),
        ("rbac.authorization.k8s.io", _) => is_path_segment_name(name),
        ("batch", "CronJob") => {
            let mut msgs = is_dns1123_subdomain(name);
            // Job names get an 11-character suffix and must stay DNS-1035 labels.
            if name.len() > 52 {
                msgs.push("must be no more than 52 characters".to_owned());
            }
            msgs
        }
        _ => is_dns1123_subdomain(name),
    }
}

/// Validates `obj` of `kind` in API group `group` (`""` is core); `old` is the
/// stored object on update. Returns every failure found, in upstream's order where
/// practical.
pub fn validate(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Errs::default();
    let Some(root) = obj.as_object() else {
        return errs.0;
    };
    object_meta(child(root, "metadata"), "metadata", &mut errs);
    // A spec an update leaves as it is was valid when it was stored, and cannot break an
    // immutability rule: only the metadata is checked then (most updates are of status).
    // ConfigMaps and Secrets have no spec; their rules read the root.
    let spec_only = !matches!((group, kind), ("", "ConfigMap" | "Secret"));
    if spec_only && old.is_some_and(|o| o.get("spec") == obj.get("spec")) {
        return errs.0;
    }
    // Upstream defaults stored objects as it reads them, so a field defaulted since
    // `old` was written does not count as a change.
    let old = old.map(|o| {
        let mut o = o.clone();
        super::defaults::apply_defaults(group, kind, &mut o);
        o
    });
    let old = old.as_ref().and_then(Value::as_object);
    let spec = child(root, "spec");
    let old_spec = old.map(|o| child(o, "spec"));
    match (group, kind) {
        ("", "Pod") => {
            pod_spec(spec, "spec", &mut errs);
            if let Some(old_spec) = old_spec {
                pod_update(spec, old_spec, &mut errs);
            }
        }
        ("", "Service") => service(spec, old_spec, &mut errs),
        ("", "ConfigMap") => config_map(root, old, &mut errs),
        ("", "Secret") => secret(root, old, &mut errs),
        ("apps", "Deployment") => deployment(spec, old_spec, &mut errs),
        ("apps", "ReplicaSet") => {
            errs.nonnegative(spec, "replicas", "spec");
            errs.nonnegative(spec, "minReadySeconds", "spec");
            workload(spec, Workload::ReplicaSet, &mut errs);
            selector_immutable(spec, old_spec, &mut errs);
        }
        ("apps", "DaemonSet") => daemon_set(spec, old_spec, &mut errs),
        ("apps", "StatefulSet") => stateful_set(spec, old_spec, &mut errs),
        ("batch", "Job") => job(spec, old_spec, &mut errs),
        ("batch", "CronJob") => cron_job(spec, &mut errs),
        _ => {}
    }
    errs.0
}

// ---------------------------------------------------------------------------
// Name and key formats (apimachinery's util/validation).

/// Checks `s` against RFC 1123 label rules (at most 63 characters, lower case
/// alphanumerics and '-', alphanumeric at both ends); returns upstream's messages.
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > 63 {
        msgs.push(max_len(63));
    }
    if matches_subdomain(s) && !matches_label(s) {
        msgs.push("must not contain dots".to_owned());
    } else if !matches_label(s) {
        msgs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
             or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    msgs
}

/// Checks `s` against RFC 1123 subdomain rules (at most 253 characters,
/// dot-separated labels); returns upstream's messages.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > 253 {
        msgs.push(max_len(253));
    }
    if !matches_subdomain(s) {
        msgs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    msgs
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
fn matches_label(s: &str) -> bool {
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| edge(c) || *c == b'-')
}

fn matches_subdomain(s: &str) -> bool {
    s.split('.').all(matches_label)
}

/// `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`, the name part of a label key.
fn matches_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Label and annotation keys, finalizers: an optional DNS subdomain prefix and
/// '/' before a name part.
fn is_qualified_name(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    let name_part_error = || regex_error(LABEL_KEY_MSG, LABEL_KEY_FMT, &LABEL_KEY_EXAMPLES);
    let name = match s.split('/').collect::<Vec<_>>().as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                msgs.push("prefix part must be non-empty".to_owned());
            }
            for m in is_dns1123_subdomain(prefix)
                .into_iter()
                .filter(|_| !prefix.is_empty())
            {
                msgs.push(format!("prefix part {m}"));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' \
                 (e.g. 'example.com/MyName')",
                name_part_error()
            )];
        }
    };
    if name.is_empty() {
        msgs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        msgs.push("name part must be no more than 63 bytes".to_owned());
    }
    if !matches_label_name(name) {
        msgs.push(format!("name part {}", name_part_error()));
    }
    msgs
}

fn is_label_value(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > 63 {
        msgs.push("must be no more than 63 bytes".to_owned());
    }
    if !s.is_empty() && !matches_label_name(s) {
        msgs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, \
             '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    msgs
}

fn is_config_map_key(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > 253 {
        msgs.push(max_len(253));
    }
    let allowed = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    if s.is_empty() || !s.bytes().all(allowed) {
        msgs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "[-._a-zA-Z0-9]+",
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    match s {
        "." => msgs.push("must not be '.'".to_owned()),
        ".." => msgs.push("must not be '..'".to_owned()),
        _ if s.starts_with("..") => msgs.push("must not start with '..'".to_owned()),
        _ => {}
    }
    msgs
}

fn is_path_segment_name(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|bad| s.contains(**bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

fn is_port_name(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > 15 {
        msgs.push(max_len(15));
    }
    let allowed = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
    if s.is_empty() || !s.bytes().all(allowed) {
        msgs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        msgs.push("must contain at least one letter (a-z)".to_owned());
    }
    if s.contains("--") {
        msgs.push("must not contain consecutive hyphens".to_owned());
    }
    if s.starts_with('-') || s.ends_with('-') {
        msgs.push("must not begin or end with a hyphen".to_owned());
    }
    msgs
}

/// RelaxedEnvironmentVariableValidation: any printable ASCII but '='.
fn is_env_name(s: &str) -> Vec<String> {
    if s.chars().all(|c| (' '..='~').contains(&c) && c != '=') {
        return Vec::new();
    }
    vec![
        "a valid environment variable name must consist only of printable ASCII \
          characters other than '='"
            .to_owned(),
    ]
}

fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{fmt}')",
        examples.join(" or ")
    )
}

// ---------------------------------------------------------------------------
// Error collection and value rendering (field.ErrorBody).

#[derive(Default)]
struct Errs(Vec<Cause>);

impl Errs {
    fn push(&mut self, reason: &'static str, field: &str, head: String, detail: &str) {
        let message = if detail.is_empty() {
            head
        } else {
            format!("{head}: {detail}")
        };
        let field = field.to_owned();
        self.0.push(Cause {
            reason,
            field,
            message,
        });
    }

    fn required(&mut self, field: &str, detail: &str) {
        self.push("FieldValueRequired", field, "Required value".into(), detail);
    }

    fn invalid(&mut self, field: &str, bad: &str, detail: &str) {
        let head = format!("Invalid value: {bad}");
        self.push("FieldValueInvalid", field, head, detail);
    }

    fn not_supported(&mut self, field: &str, bad: &str, valid: &[&str]) {
        let valid: Vec<String> = valid.iter().map(|v| quote(v)).collect();
        let detail = format!("supported values: {}", valid.join(", "));
        let head = format!("Unsupported value: {bad}");
        self.push("FieldValueNotSupported", field, head, &detail);
    }

    fn duplicate(&mut self, field: &str, bad: &str) {
        let head = format!("Duplicate value: {bad}");
        self.push("FieldValueDuplicate", field, head, "");
    }

    fn forbidden(&mut self, field: &str, detail: &str) {
        self.push("FieldValueForbidden", field, "Forbidden".into(), detail);
    }

    fn too_long(&mut self, field: &str, max: usize) {
        let detail = format!("may not be more than {max} bytes");
        self.push("FieldValueTooLong", field, "Too long".into(), &detail);
    }

    /// One `Invalid value` per message of a format check on `value`.
    fn each(&mut self, field: &str, value: &str, msgs: Vec<String>) {
        for msg in msgs {
            self.invalid(field, &quote(value), &msg);
        }
    }

    /// A name-like field: required, then checked by `format`.
    fn named(&mut self, field: &str, value: &str, format: fn(&str) -> Vec<String>) {
        if value.is_empty() {
            self.required(field, "");
        } else {
            self.each(field, value, format(value));
        }
    }

    /// A plain enum field: required, and one of `allowed`.
    fn one_of(&mut self, m: &Obj, key: &str, path: &str, allowed: &[&str]) {
        let field = format!("{path}.{key}");
        match text(m, key) {
            "" => self.required(&field, ""),
            v if !allowed.contains(&v) => self.not_supported(&field, &quote(v), allowed),
            _ => {}
        }
    }

    fn nonnegative(&mut self, m: &Obj, key: &str, path: &str) {
        if let Some(n) = int(m, key).filter(|n| *n < 0) {
            let field = format!("{path}.{key}");
            self.invalid(&field, &n.to_string(), "must be greater than or equal to 0");
        }
    }

    fn port(&mut self, field: &str, n: i64) {
        if !(1..=65535).contains(&n) {
            let detail = "must be between 1 and 65535, inclusive";
            self.invalid(field, &n.to_string(), detail);
        }
    }

    fn immutable(&mut self, new: Option<&Value>, old: Option<&Value>, field: &str) {
        if !same(new, old) {
            let bad = render(new.unwrap_or(&Value::Null));
            self.invalid(field, &bad, "field is immutable");
        }
    }
}

/// Go's `%q` for the strings users write.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A bad value as `field.ErrorBody` prints it: strings quoted, numbers and bools
/// plain, anything else as JSON.
fn render(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Object(_) | Value::Array(_) => go_json(v),
        other => other.to_string(),
    }
}

/// JSON with object keys sorted, as Go marshals maps.
fn go_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            let fields: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), go_json(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(go_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// A label selector as Go marshals it; empty parts are omitted.
fn selector_json(sel: Option<&Obj>) -> String {
    let sel = sel.and_then(|s| normalize(&Value::Object(s.clone())));
    sel.map_or_else(|| "null".to_owned(), |s| go_json(&s))
}

// ---------------------------------------------------------------------------
// JSON access and comparison.

static EMPTY: std::sync::OnceLock<Obj> = std::sync::OnceLock::new();

/// The object under `key`, or an empty one.
fn child<'a>(m: &'a Obj, key: &str) -> &'a Obj {
    match m.get(key).and_then(Value::as_object) {
        Some(o) => o,
        None => EMPTY.get_or_init(Map::new),
    }
}

fn text<'a>(m: &'a Obj, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

fn int(m: &Obj, key: &str) -> Option<i64> {
    m.get(key).and_then(Value::as_i64)
}

fn array<'a>(m: &'a Obj, key: &str) -> &'a [Value] {
    m.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn objects<'a>(m: &'a Obj, key: &str) -> impl Iterator<Item = (usize, &'a Obj)> {
    let items = array(m, key).iter().enumerate();
    items.filter_map(|(i, v)| v.as_object().map(|o| (i, o)))
}

/// A string map (labels, data) in key order; other values read as "".
fn sorted(m: Option<&Value>) -> BTreeMap<&str, &str> {
    let entries = m.and_then(Value::as_object).into_iter().flatten();
    entries
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
        .collect()
}

fn is_set(m: &Obj, key: &str) -> bool {
    m.get(key).is_some_and(|v| !v.is_null())
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Drops nulls and empty lists and maps, which upstream's semantic equality
/// treats as unset.
fn normalize(v: &Value) -> Option<Value> {
    match v {
        Value::Array(a) if !a.is_empty() => {
            let items = a.iter().map(|x| normalize(x).unwrap_or(Value::Null));
            Some(Value::Array(items.collect()))
        }
        Value::Object(o) => {
            let m: Obj = o
                .iter()
                .filter_map(|(k, x)| normalize(x).map(|x| (k.clone(), x)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        other if is_empty(other) => None,
        other => Some(other.clone()),
    }
}

fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    a.and_then(normalize) == b.and_then(normalize)
}

// ---------------------------------------------------------------------------
// Metadata and label selectors.

fn object_meta(meta: &Obj, path: &str, errs: &mut Errs) {
    labels(meta.get("labels"), &format!("{path}.labels"), errs);
    annotations(
        meta.get("annotations"),
        &format!("{path}.annotations"),
        errs,
    );
    for f in array(meta, "finalizers").iter().filter_map(Value::as_str) {
        errs.each(&format!("{path}.finalizers"), f, is_qualified_name(f));
    }
}

fn labels(labels: Option<&Value>, field: &str, errs: &mut Errs) {
    for (k, v) in sorted(labels) {
        errs.each(field, k, is_qualified_name(k));
        errs.each(field, v, is_label_value(v));
    }
}

fn annotations(annotations: Option<&Value>, field: &str, errs: &mut Errs) {
    let all = sorted(annotations);
    for k in all.keys() {
        // The rule is a qualified name, but case does not matter.
        errs.each(field, k, is_qualified_name(&k.to_lowercase()));
    }
    if all.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > TOTAL_ANNOTATION_SIZE {
        errs.too_long(field, TOTAL_ANNOTATION_SIZE);
    }
}

fn label_selector(sel: &Obj, path: &str, errs: &mut Errs) {
    labels(sel.get("matchLabels"), &format!("{path}.matchLabels"), errs);
    for (i, expr) in objects(sel, "matchExpressions") {
        let p = format!("{path}.matchExpressions[{i}]");
        let has_values = !array(expr, "values").is_empty();
        match text(expr, "operator") {
            "In" | "NotIn" if !has_values => errs.required(
                &format!("{p}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            "Exists" | "DoesNotExist" if has_values => errs.forbidden(
                &format!("{p}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => errs.invalid(
                &format!("{p}.operator"),
                &quote(op),
                "not a valid selector operator",
            ),
        }
        let key = text(expr, "key");
        errs.each(&format!("{p}.key"), key, is_qualified_name(key));
    }
}

/// Whether `sel` matches `labels`; `None` when no selector can be built from it.
fn selector_matches(sel: &Obj, labels: &Obj) -> Option<bool> {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let mut matched = true;
    for (k, v) in sorted(sel.get("matchLabels")) {
        if !is_qualified_name(k).is_empty() || !is_label_value(v).is_empty() {
            return None;
        }
        matched &= label(k) == Some(v);
    }
    for (_, expr) in objects(sel, "matchExpressions") {
        let key = text(expr, "key");
        let values: Vec<&str> = array(expr, "values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if !is_qualified_name(key).is_empty() {
            return None;
        }
        matched &= match (text(expr, "operator"), values.is_empty()) {
            ("In", false) => label(key).is_some_and(|l| values.contains(&l)),
            ("NotIn", false) => label(key).is_none_or(|l| !values.contains(&l)),
            ("Exists", true) => label(key).is_some(),
            ("DoesNotExist", true) => label(key).is_none(),
            _ => return None,
        };
    }
    Some(matched)
}

fn selector_is_empty(sel: &Obj) -> bool {
    sel.get("matchLabels").is_none_or(is_empty) && array(sel, "matchExpressions").is_empty()
}

// ---------------------------------------------------------------------------
// Pod specs.

fn pod_template(template: &Obj, path: &str, errs: &mut Errs) {
    let meta = child(template, "metadata");
    // Upstream reports template metadata one level up: `spec.template.labels`.
    labels(meta.get("labels"), &format!("{path}.labels"), errs);
    annotations(
        meta.get("annotations"),
        &format!("{path}.annotations"),
        errs,
    );
    pod_spec(child(template, "spec"), &format!("{path}.spec"), errs);
}

fn pod_spec(spec: &Obj, path: &str, errs: &mut Errs) {
    let mut volumes = BTreeSet::new();
    for (i, v) in objects(spec, "volumes") {
        let (field, name) = (format!("{path}.volumes[{i}].name"), text(v, "name"));
        errs.named(&field, name, is_dns1123_label);
        if !volumes.insert(name) {
            errs.duplicate(&field, &quote(name));
        }
    }
    if array(spec, "containers").is_empty() {
        errs.required(&format!("{path}.containers"), "");
    }
    // Names are unique across regular and init containers.
    let mut names = BTreeSet::new();
    for key in ["containers", "initContainers"] {
        for (i, c) in objects(spec, key) {
            let p = format!("{path}.{key}[{i}]");
            container(c, &p, &volumes, errs);
            let name = text(c, "name");
            if !names.insert(name) {
                errs.duplicate(&format!("{p}.name"), &quote(name));
            }
        }
    }
    errs.one_of(
        spec,
        "restartPolicy",
        path,
        &["Always", "OnFailure", "Never"],
    );
    let dns = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
    errs.one_of(spec, "dnsPolicy", path, &dns);
    labels(
        spec.get("nodeSelector"),
        &format!("{path}.nodeSelector"),
        errs,
    );
    if let Some(n) = int(spec, "activeDeadlineSeconds").filter(|n| !(1..=MAX_INT32).contains(n)) {
        let detail = format!("must be between 1 and {MAX_INT32}, inclusive");
        errs.invalid(
            &format!("{path}.activeDeadlineSeconds"),
            &n.to_string(),
            &detail,
        );
    }
}

fn container(c: &Obj, path: &str, volumes: &BTreeSet<&str>, errs: &mut Errs) {
    errs.named(&format!("{path}.name"), text(c, "name"), is_dns1123_label);
    if text(c, "image").is_empty() {
        errs.required(&format!("{path}.image"), "");
    }
    let policies = ["File", "FallbackToLogsOnError"];
    errs.one_of(c, "terminationMessagePolicy", path, &policies);
    let mut port_names = BTreeSet::new();
    for (i, port) in objects(c, "ports") {
        let p = format!("{path}.ports[{i}]");
        let name = text(port, "name");
        let msgs = if name.is_empty() {
            Vec::new()
        } else {
            is_port_name(name)
        };
        if msgs.is_empty() && !name.is_empty() && !port_names.insert(name) {
            errs.duplicate(&format!("{p}.name"), &quote(name));
        }
        errs.each(&format!("{p}.name"), name, msgs);
        match int(port, "containerPort").unwrap_or(0) {
            0 => errs.required(&format!("{p}.containerPort"), ""),
            n => errs.port(&format!("{p}.containerPort"), n),
        }
        if let Some(n) = int(port, "hostPort").filter(|n| *n != 0) {
            errs.port(&format!("{p}.hostPort"), n);
        }
        errs.one_of(port, "protocol", &p, &PROTOCOLS);
    }
    for (i, e) in objects(c, "env") {
        errs.named(
            &format!("{path}.env[{i}].name"),
            text(e, "name"),
            is_env_name,
        );
    }
    let mut mount_paths = BTreeSet::new();
    for (i, m) in objects(c, "volumeMounts") {
        let p = format!("{path}.volumeMounts[{i}]");
        let (volume, mount_path) = (text(m, "name"), text(m, "mountPath"));
        if volume.is_empty() {
            errs.required(&format!("{p}.name"), "");
        }
        if !volumes.contains(volume) {
            let head = format!("Not found: {}", quote(volume));
            errs.push("FieldValueNotFound", &format!("{p}.name"), head, "");
        }
        if mount_path.is_empty() {
            errs.required(&format!("{p}.mountPath"), "");
        }
        if !mount_paths.insert(mount_path) {
            errs.invalid(
                &format!("{p}.mountPath"),
                &quote(mount_path),
                "must be unique",
            );
        }
    }
    let pull = ["Always", "IfNotPresent", "Never"];
    errs.one_of(c, "imagePullPolicy", path, &pull);
}

fn pod_update(new: &Obj, old: &Obj, errs: &mut Errs) {
    for key in ["containers", "initContainers"] {
        if array(new, key).len() != array(old, key).len() {
            let detail = "pod updates may not add or remove containers";
            errs.forbidden(&format!("spec.{key}"), detail);
            return;
        }
    }
    let field = "spec.activeDeadlineSeconds";
    match (
        int(new, "activeDeadlineSeconds"),
        int(old, "activeDeadlineSeconds"),
    ) {
        (Some(n), _) if !(0..=MAX_INT32).contains(&n) => {
            let detail = format!("must be between 0 and {MAX_INT32}, inclusive");
            errs.invalid(field, &n.to_string(), &detail);
            return;
        }
        (Some(n), Some(o)) if o < n => {
            let detail = "must be less than or equal to previous value";
            errs.invalid(field, &n.to_string(), detail);
            return;
        }
        (None, Some(_)) => {
            let detail = "must not update from a positive integer to nil value";
            errs.invalid(field, "null", detail);
        }
        _ => {}
    }
    let without_seconds = |t: &Value| {
        let mut t = t.clone();
        if let Some(o) = t.as_object_mut() {
            o.remove("tolerationSeconds");
        }
        normalize(&t)
    };
    let new_tolerations: Vec<_> = array(new, "tolerations")
        .iter()
        .map(without_seconds)
        .collect();
    if !array(old, "tolerations")
        .iter()
        .all(|t| new_tolerations.contains(&without_seconds(t)))
    {
        let detail = "existing toleration can not be modified except its tolerationSeconds";
        errs.forbidden("spec.tolerations", detail);
    }

    // Put back what may change; anything still different is forbidden.
    let mut munged = new.clone();
    for key in ["containers", "initContainers"] {
        if let Some(Value::Array(items)) = munged.get_mut(key) {
            for (item, old_item) in items.iter_mut().zip(array(old, key)) {
                if let (Some(o), Some(image)) = (item.as_object_mut(), old_item.get("image")) {
                    o.insert("image".to_owned(), image.clone());
                }
            }
        }
    }
    for key in ["activeDeadlineSeconds", "tolerations", "schedulingGates"] {
        munged.remove(key);
        if let Some(v) = old.get(key) {
            munged.insert(key.to_owned(), v.clone());
        }
    }
    let grace = "terminationGracePeriodSeconds";
    if int(old, grace).is_some_and(|n| n < 0) && int(&munged, grace) == Some(1) {
        munged.insert(
            grace.to_owned(),
            old.get(grace).cloned().unwrap_or_default(),
        );
    }
    let (munged, old) = (
        normalize(&Value::Object(munged)),
        normalize(&Value::Object(old.clone())),
    );
    if munged != old {
        let mut diff = Vec::new();
        diff_values("spec", old.as_ref(), munged.as_ref(), &mut diff);
        let detail = format!(
            "pod updates may not change fields other than {POD_UPDATABLE}\n{}",
            diff.join("\n")
        );
        errs.forbidden("spec", &detail);
    }
}

/// A short, line-per-change account of what differs (upstream prints a Go diff).
fn diff_values(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<String>) {
    if out.len() >= 20 || old == new {
        return;
    }
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            for k in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
                diff_values(&format!("{path}.{k}"), a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(&format!("{path}[{i}]"), Some(x), Some(y), out);
            }
        }
        _ => {
            out.extend(old.map(|o| format!("- {path}: {}", go_json(o))));
            out.extend(new.map(|n| format!("+ {path}: {}", go_json(n))));
        }
    }
}

// ---------------------------------------------------------------------------
// apps/v1

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    Deployment,
    ReplicaSet,
    DaemonSet,
    StatefulSet,
}

/// Selector and pod template checks shared by the four workload kinds.
fn workload(spec: &Obj, kind: Workload, errs: &mut Errs) {
    let selector = spec.get("selector").and_then(Value::as_object);
    let (kind_name, empty_msg) = match kind {
        // Upstream's ReplicaSet check reuses the Deployment wording, and both
        // share the ReplicaSet template check.
        Workload::Deployment | Workload::ReplicaSet => {
            ("ReplicaSet", "empty selector is invalid for deployment")
        }
        Workload::DaemonSet => ("DaemonSet", "empty selector is invalid for daemonset"),
        Workload::StatefulSet => ("StatefulSet", "empty selector is invalid for statefulset"),
    };
    match selector {
        None if kind != Workload::DaemonSet => errs.required("spec.selector", ""),
        None => {}
        Some(sel) => {
            label_selector(sel, "spec.selector", errs);
            if selector_is_empty(sel) {
                errs.invalid("spec.selector", &selector_json(Some(sel)), empty_msg);
            }
        }
    }
    let template = child(spec, "template");
    let template_meta = child(template, "metadata");
    // A missing selector selects nothing; an empty one is only reported as empty.
    let matches = match selector {
        None => Some(false),
        Some(sel) if selector_is_empty(sel) => Some(true),
        Some(sel) => selector_matches(sel, child(template_meta, "labels")),
    };
    match (matches, kind) {
        (Some(false), _) => {
            let bad = render(template_meta.get("labels").unwrap_or(&Value::Null));
            errs.invalid("spec.template.metadata.labels", &bad, SELECTOR_MISMATCH);
        }
        (None, Workload::Deployment | Workload::ReplicaSet) => {
            let sel = selector_json(selector);
            errs.invalid("spec.selector", &sel, "invalid label selector");
            return;
        }
        (None, Workload::StatefulSet) => {
            errs.invalid("spec.selector", &selector_json(selector), "");
            return;
        }
        _ => {}
    }
    if kind == Workload::StatefulSet {
        pod_template(&with_claim_volumes(spec, template), "spec.template", errs);
    } else {
        pod_template(template, "spec.template", errs);
    }
    let template_spec = child(template, "spec");
    let restart = text(template_spec, "restartPolicy");
    if restart != "Always" {
        let field = "spec.template.spec.restartPolicy";
        errs.not_supported(field, &quote(restart), &["Always"]);
    }
    if is_set(template_spec, "activeDeadlineSeconds") {
        let detail = format!("activeDeadlineSeconds in {kind_name} is not Supported");
        errs.forbidden("spec.template.spec.activeDeadlineSeconds", &detail);
    }
}

/// The template as the StatefulSet controller builds pods from it: each volume
/// claim template becomes a volume of the same name.
fn with_claim_volumes(spec: &Obj, template: &Obj) -> Obj {
    let mut template = template.clone();
    let mut volumes = array(child(&template, "spec"), "volumes").to_vec();
    for (_, claim) in objects(spec, "volumeClaimTemplates") {
        let name = text(child(claim, "metadata"), "name");
        if !volumes
            .iter()
            .any(|v| v.get("name").and_then(Value::as_str) == Some(name))
        {
            volumes.push(serde_json::json!({ "name": name }));
        }
    }
    let mut pod_spec = child(&template, "spec").clone();
    pod_spec.insert("volumes".to_owned(), Value::Array(volumes));
    template.insert("spec".to_owned(), Value::Object(pod_spec));
    template
}

fn selector_immutable(spec: &Obj, old_spec: Option<&Obj>, errs: &mut Errs) {
    let Some(old_spec) = old_spec else {
        return;
    };
    if !same(spec.get("selector"), old_spec.get("selector")) {
        let new = selector_json(spec.get("selector").and_then(Value::as_object));
        errs.invalid("spec.selector", &new, "field is immutable");
    }
}

/// Validates an int-or-percent field and returns its number when well formed.
fn int_or_percent(m: &Obj, key: &str, path: &str, errs: &mut Errs) -> Option<i64> {
    let field = format!("{path}.{key}");
    match m.get(key)? {
        Value::String(s) => {
            let number = s
                .strip_suffix('%')
                .filter(|n| n.bytes().all(|c| c.is_ascii_digit()));
            let value = number.and_then(|n| n.parse::<i64>().ok());
            if value.is_none() {
                let msg = regex_error(
                    "a valid percent string must be a numeric string followed by an ending '%'",
                    "[0-9]+%",
                    &["1%", "93%"],
                );
                errs.invalid(&field, &quote(s), &msg);
            } else if value.is_some_and(|n| n > 100) && key == "maxUnavailable" {
                errs.invalid(&field, &quote(s), "must not be greater than 100%");
            }
            value
        }
        Value::Number(n) => {
            errs.nonnegative(m, key, path);
            n.as_i64()
        }
        _ => None,
    }
}

/// The `Type`/`RollingUpdate` struct upstream prints for an unknown strategy.
fn strategy_json(strategy: &Obj) -> String {
    let rolling = strategy.get("rollingUpdate").unwrap_or(&Value::Null);
    let ty = Value::from(text(strategy, "type"));
    format!("{{\"Type\":{ty},\"RollingUpdate\":{}}}", go_json(rolling))
}

fn deployment(spec: &Obj, old_spec: Option<&Obj>, errs: &mut Errs) {
    errs.nonnegative(spec, "replicas", "spec");
    workload(spec, Workload::Deployment, errs);
    let strategy = child(spec, "strategy");
    let p = "spec.strategy.rollingUpdate";
    match (text(strategy, "type"), strategy.get("rollingUpdate")) {
        ("Recreate", Some(r)) if !r.is_null() => {
            let detail = "may not be specified when strategy `type` is 'Recreate'";
            errs.forbidden(p, detail);
        }
        ("Recreate", _) => {}
        ("RollingUpdate", Some(Value::Object(rolling))) => {
            let unavailable = int_or_percent(rolling, "maxUnavailable", p, errs);
            let surge = int_or_percent(rolling, "maxSurge", p, errs);
            if unavailable == Some(0) && surge.unwrap_or(0) == 0 {
                let bad = render(rolling.get("maxUnavailable").unwrap_or(&Value::Null));
                let detail = "may not be 0 when `maxSurge` is 0";
                errs.invalid(&format!("{p}.maxUnavailable"), &bad, detail);
            }
        }
        ("RollingUpdate", _) => errs.required(p, "this should be defaulted and never be nil"),
        _ => {
            let valid = ["Recreate", "RollingUpdate"];
            errs.not_supported("spec.strategy", &strategy_json(strategy), &valid);
        }
    }
    errs.nonnegative(spec, "minReadySeconds", "spec");
    errs.nonnegative(spec, "revisionHistoryLimit", "spec");
    if let Some(deadline) = int(spec, "progressDeadlineSeconds") {
        errs.nonnegative(spec, "progressDeadlineSeconds", "spec");
        if deadline <= int(spec, "minReadySeconds").unwrap_or(0) {
            let field = "spec.progressDeadlineSeconds";
            errs.invalid(
                field,
                &deadline.to_string(),
                "must be greater than minReadySeconds",
            );
        }
    }
    selector_immutable(spec, old_spec, errs);
}

fn daemon_set(spec: &Obj, old_spec: Option<&Obj>, errs: &mut Errs) {
    workload(spec, Workload::DaemonSet, errs);
    errs.nonnegative(spec, "minReadySeconds", "spec");
    let strategy = child(spec, "updateStrategy");
    let p = "spec.updateStrategy.rollingUpdate";
    match (text(strategy, "type"), strategy.get("rollingUpdate")) {
        ("OnDelete", _) => {}
        ("RollingUpdate", Some(Value::Object(rolling))) => {
            int_or_percent(rolling, "maxUnavailable", p, errs);
            int_or_percent(rolling, "maxSurge", p, errs);
        }
        ("RollingUpdate", _) => errs.required(p, ""),
        _ => {
            let valid = ["RollingUpdate", "OnDelete"];
            errs.not_supported("spec.updateStrategy", &strategy_json(strategy), &valid);
        }
    }
    errs.nonnegative(spec, "revisionHistoryLimit", "spec");
    selector_immutable(spec, old_spec, errs);
}

fn stateful_set(spec: &Obj, old_spec: Option<&Obj>, errs: &mut Errs) {
    match text(spec, "podManagementPolicy") {
        "OrderedReady" | "Parallel" => {}
        "" => errs.required("spec.podManagementPolicy", ""),
        other => {
            let detail = "must be 'OrderedReady' or 'Parallel'";
            errs.invalid("spec.podManagementPolicy", &quote(other), detail);
        }
    }
    let strategy = child(spec, "updateStrategy");
    let rolling = strategy.get("rollingUpdate").filter(|v| !v.is_null());
    match (text(strategy, "type"), rolling) {
        ("", _) => errs.required("spec.updateStrategy", ""),
        ("OnDelete", Some(r)) => {
            let detail = "only allowed for updateStrategy 'RollingUpdate'";
            errs.invalid("spec.updateStrategy.rollingUpdate", &render(r), detail);
        }
        ("RollingUpdate", Some(Value::Object(r))) => {
            errs.nonnegative(r, "partition", "spec.updateStrategy.rollingUpdate");
        }
        ("OnDelete" | "RollingUpdate", _) => {}
        _ => {
            let detail = "must be 'RollingUpdate' or 'OnDelete'";
            errs.invalid("spec.updateStrategy", &strategy_json(strategy), detail);
        }
    }
    errs.nonnegative(spec, "replicas", "spec");
    errs.nonnegative(spec, "minReadySeconds", "spec");
    workload(spec, Workload::StatefulSet, errs);

    let Some(old_spec) = old_spec else {
        return;
    };
    let mutable = [
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    ];
    let rest = |s: &Obj| {
        let kept = s.iter().filter(|(k, _)| !mutable.contains(&k.as_str()));
        Value::Object(kept.map(|(k, v)| (k.clone(), v.clone())).collect())
    };
    if !same(Some(&rest(spec)), Some(&rest(old_spec))) {
        let detail = "updates to statefulset spec for fields other than 'replicas', \
            'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' \
            and 'minReadySeconds' are forbidden";
        errs.forbidden("spec", detail);
    }
}

// ---------------------------------------------------------------------------
// batch/v1

fn job_spec(spec: &Obj, path: &str, errs: &mut Errs) {
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
    ] {
        errs.nonnegative(spec, key, path);
    }
    let template = child(spec, "template");
    pod_template(template, &format!("{path}.template"), errs);
    let restart = text(child(template, "spec"), "restartPolicy");
    if restart != "OnFailure" && restart != "Never" {
        let field = format!("{path}.template.spec.restartPolicy");
        errs.not_supported(&field, &quote(restart), &["OnFailure", "Never"]);
    }
}

fn job(spec: &Obj, old_spec: Option<&Obj>, errs: &mut Errs) {
    job_spec(spec, "spec", errs);
    // The selector is generated by the server unless the user manages it.
    if let Some(sel) = spec.get("selector").and_then(Value::as_object) {
        label_selector(sel, "spec.selector", errs);
        let template_meta = child(child(spec, "template"), "metadata");
        if selector_matches(sel, child(template_meta, "labels")) == Some(false) {
            let bad = render(template_meta.get("labels").unwrap_or(&Value::Null));
            errs.invalid("spec.template.metadata.labels", &bad, SELECTOR_MISMATCH);
        }
    }
    let Some(old_spec) = old_spec else {
        return;
    };
    // Indexed jobs may scale completions together with parallelism.
    let elastic = text(spec, "completionMode") == "Indexed"
        && int(spec, "completions") == int(spec, "parallelism")
        && int(old_spec, "completions") == int(old_spec, "parallelism");
    if !elastic {
        errs.immutable(
            spec.get("completions"),
            old_spec.get("completions"),
            "spec.completions",
        );
    }
    if is_set(old_spec, "selector") && !same(spec.get("selector"), old_spec.get("selector")) {
        let new = selector_json(spec.get("selector").and_then(Value::as_object));
        errs.invalid("spec.selector", &new, "field is immutable");
    }
    // Suspended jobs may get new scheduling directives before they start.
    if old_spec.get("suspend") != Some(&Value::Bool(true)) {
        errs.immutable(
            spec.get("template"),
            old_spec.get("template"),
            "spec.template",
        );
    }
    let mode = "completionMode";
    errs.immutable(spec.get(mode), old_spec.get(mode), "spec.completionMode");
}

fn cron_job(spec: &Obj, errs: &mut Errs) {
    let schedule = text(spec, "schedule");
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    let descriptors = [
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
    ];
    if schedule.is_empty() {
        errs.required("spec.schedule", "");
    } else if schedule.contains("TZ") {
        let detail = "cannot use TZ or CRON_TZ in schedule, use timeZone field instead";
        errs.invalid("spec.schedule", &quote(schedule), detail);
    } else if schedule.starts_with('@') {
        let known = descriptors.contains(&schedule) || schedule == "@hourly";
        if !known && !schedule.starts_with("@every ") {
            let detail = format!("unrecognized descriptor: {schedule}");
            errs.invalid("spec.schedule", &quote(schedule), &detail);
        }
    } else if fields.len() != 5 {
        // robfig/cron's parser, which upstream uses, words it this way.
        let n = fields.len();
        let detail = format!(
            "expected exactly 5 fields, found {n}: [{}]",
            fields.join(" ")
        );
        errs.invalid("spec.schedule", &quote(schedule), &detail);
    }
    errs.nonnegative(spec, "startingDeadlineSeconds", "spec");
    errs.one_of(
        spec,
        "concurrencyPolicy",
        "spec",
        &["Allow", "Forbid", "Replace"],
    );
    job_spec(
        child(child(spec, "jobTemplate"), "spec"),
        "spec.jobTemplate.spec",
        errs,
    );
    errs.nonnegative(spec, "successfulJobsHistoryLimit", "spec");
    errs.nonnegative(spec, "failedJobsHistoryLimit", "spec");
}

// ---------------------------------------------------------------------------
// Services.

fn service(spec: &Obj, old_spec: Option<&Obj>, errs: &mut Errs) {
    let ty = text(spec, "type");
    let first_ip = array(spec, "clusterIPs").first().and_then(Value::as_str);
    let headless = first_ip.unwrap_or(text(spec, "clusterIP")) == "None";
    let ports = array(spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.required("spec.ports", "");
    }
    match ty {
        "LoadBalancer" | "NodePort" if headless => {
            let detail = format!("may not be set to 'None' for {ty} services");
            errs.invalid("spec.clusterIPs[0]", &quote("None"), &detail);
        }
        "ExternalName" => {
            let cname = text(spec, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            errs.named("spec.externalName", cname, is_dns1123_subdomain);
        }
        _ => {}
    }
    let (mut names, mut node_ports, mut keys) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for (i, port) in objects(spec, "ports") {
        let p = format!("spec.ports[{i}]");
        let name = text(port, "name");
        if ports.len() > 1 || !name.is_empty() {
            errs.named(&format!("{p}.name"), name, is_dns1123_label);
        }
        if !name.is_empty() && !names.insert(name) {
            errs.duplicate(&format!("{p}.name"), &quote(name));
        }
        errs.port(&format!("{p}.port"), int(port, "port").unwrap_or(0));
        errs.one_of(port, "protocol", &p, &PROTOCOLS);
        match port.get("targetPort") {
            Some(Value::Number(n)) => {
                errs.port(&format!("{p}.targetPort"), n.as_i64().unwrap_or(0))
            }
            Some(Value::String(s)) => errs.each(&format!("{p}.targetPort"), s, is_port_name(s)),
            _ => {}
        }
    }
    labels(spec.get("selector"), "spec.selector", errs);
    errs.one_of(spec, "sessionAffinity", "spec", &["ClientIP", "None"]);
    let types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    errs.one_of(spec, "type", "spec", &types);
    for (i, port) in objects(spec, "ports") {
        let p = format!("spec.ports[{i}]");
        let (protocol, number) = (text(port, "protocol"), int(port, "port").unwrap_or(0));
        let node_port = int(port, "nodePort").unwrap_or(0);
        if ty == "ClusterIP" && node_port != 0 {
            let detail = "may not be used when `type` is 'ClusterIP'";
            errs.forbidden(&format!("{p}.nodePort"), detail);
        }
        if node_port != 0 && !node_ports.insert((protocol, node_port)) {
            errs.duplicate(&format!("{p}.nodePort"), &node_port.to_string());
        }
        if !keys.insert((protocol, number)) {
            // Upstream prints the internal ServicePort holding just the key fields.
            let key = format!(
                "{{\"Name\":\"\",\"Protocol\":{},\"AppProtocol\":null,\"Port\":{number},\
                 \"TargetPort\":0,\"NodePort\":0}}",
                Value::from(protocol)
            );
            errs.duplicate(&p, &key);
        }
    }
    let external = matches!(ty, "LoadBalancer" | "NodePort")
        || (ty == "ClusterIP" && !array(spec, "externalIPs").is_empty());
    let policy = text(spec, "externalTrafficPolicy");
    if external {
        errs.one_of(spec, "externalTrafficPolicy", "spec", &["Cluster", "Local"]);
    } else if !policy.is_empty() {
        let detail = "may only be set for externally-accessible services";
        errs.invalid("spec.externalTrafficPolicy", &quote(policy), detail);
    }
    if is_set(spec, "internalTrafficPolicy") {
        errs.one_of(spec, "internalTrafficPolicy", "spec", &["Cluster", "Local"]);
    }
    // A load balancer's source ranges: CIDRs, which may be space-padded (as the old
    // annotation's were).
    let ranges = array(spec, "loadBalancerSourceRanges");
    if !ranges.is_empty() && ty != "LoadBalancer" {
        let detail = "may only be used when `type` is 'LoadBalancer'";
        errs.forbidden("spec.loadBalancerSourceRanges", detail);
    }
    for (i, range) in ranges.iter().enumerate() {
        let value = range.as_str().unwrap_or_default();
        if value.trim().parse::<ipnet::IpNet>().is_err() {
            let detail = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
            let path = format!("spec.loadBalancerSourceRanges[{i}]");
            errs.invalid(&path, &quote(value), detail);
        }
    }
    if let Some(old_spec) = old_spec {
        cluster_ip_update(spec, old_spec, errs);
    }
}

/// A cluster IP, once allocated, stays. An update that leaves it out keeps the
/// old one (upstream's storage copies it in before validating), so only a
/// different value is an error.
fn cluster_ip_update(spec: &Obj, old_spec: &Obj, errs: &mut Errs) {
    if text(spec, "type") == "ExternalName" || text(old_spec, "type") == "ExternalName" {
        return;
    }
    let (new_ip, old_ip) = (text(spec, "clusterIP"), text(old_spec, "clusterIP"));
    if new_ip.is_empty() || old_ip.is_empty() || new_ip == old_ip {
        return;
    }
    let mut ips = array(spec, "clusterIPs").to_vec();
    if ips.first().and_then(Value::as_str) != Some(new_ip) {
        ips = vec![Value::from(new_ip)];
    }
    let bad = go_json(&Value::Array(ips));
    errs.invalid("spec.clusterIPs[0]", &bad, "may not change once set");
}

// ---------------------------------------------------------------------------
// ConfigMaps and Secrets.

/// Decoded length of a base64 value as it appears in JSON.
fn decoded_len(v: &str) -> usize {
    let padding = v.bytes().rev().take_while(|&c| c == b'=').count();
    (v.len() / 4 * 3).saturating_sub(padding)
}

fn data_keys(m: &Obj, key: &str, path: &str, errs: &mut Errs) {
    for k in sorted(m.get(key)).keys() {
        errs.each(&format!("{path}[{k}]"), k, is_config_map_key(k));
    }
}

/// Once `immutable: true` is stored, neither the flag nor `keys` may change.
fn immutable_data(root: &Obj, old: Option<&Obj>, keys: &[&str], errs: &mut Errs) {
    let Some(old) = old.filter(|o| o.get("immutable") == Some(&Value::Bool(true))) else {
        return;
    };
    if root.get("immutable") != Some(&Value::Bool(true)) {
        errs.forbidden("immutable", IMMUTABLE_WHEN_SET);
    }
    for key in keys {
        if !same(root.get(*key), old.get(*key)) {
            errs.forbidden(key, IMMUTABLE_WHEN_SET);
        }
    }
}

fn config_map(root: &Obj, old: Option<&Obj>, errs: &mut Errs) {
    immutable_data(root, old, &["data", "binaryData"], errs);
    let (data, binary) = (sorted(root.get("data")), sorted(root.get("binaryData")));
    for k in data.keys() {
        errs.each(&format!("data[{k}]"), k, is_config_map_key(k));
        if binary.contains_key(k) {
            let detail = "duplicate of key present in binaryData";
            errs.invalid(&format!("data[{k}]"), &quote(k), detail);
        }
    }
    data_keys(root, "binaryData", "binaryData", errs);
    let size = data.values().map(|v| v.len()).sum::<usize>()
        + binary.values().map(|v| decoded_len(v)).sum::<usize>();
    if size > MAX_SECRET_SIZE {
        errs.too_long("", MAX_SECRET_SIZE);
    }
}

fn secret(root: &Obj, old: Option<&Obj>, errs: &mut Errs) {
    data_keys(root, "data", "data", errs);
    // stringData is merged into data before upstream validates.
    data_keys(root, "stringData", "data", errs);
    let (data, string_data) = (sorted(root.get("data")), sorted(root.get("stringData")));
    let size = data.values().map(|v| decoded_len(v)).sum::<usize>()
        + string_data.values().map(|v| v.len()).sum::<usize>();
    if size > MAX_SECRET_SIZE {
        errs.too_long("data", MAX_SECRET_SIZE);
    }
    let required: &[&str] = match text(root, "type") {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for key in required {
        if !data.contains_key(key) && !string_data.contains_key(key) {
            errs.required(&format!("data[{key}]"), "");
        }
    }
    if let Some(old) = old {
        errs.immutable(root.get("type"), old.get("type"), "type");
    }
    immutable_data(root, old, &["data"], errs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::defaults::apply_defaults;
    use serde_json::json;

    /// Defaults then validates, as the server does.
    fn check(group: &str, kind: &str, mut obj: Value, old: Option<Value>) -> Vec<Cause> {
        apply_defaults(group, kind, &mut obj);
        let old = old.map(|mut o| {
            apply_defaults(group, kind, &mut o);
            o
        });
        validate(group, kind, &obj, old.as_ref())
    }

    /// `field: message` lines, easy to compare.
    fn lines(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    }

    fn web() -> Value {
        json!({"containers": [{"name": "web", "image": "nginx"}]})
    }

    fn deployment(labels: Value, selector: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"selector": selector, "template": {"metadata": {"labels": labels},
                        "spec": web()}}})
    }

    #[test]
    fn dns_names_use_upstream_messages() {
        assert_eq!(
            is_dns1123_subdomain("Foo_bar"),
            vec![
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                  characters, '-' or '.', and must start and end with an alphanumeric character \
                  (e.g. 'example.com', regex used for validation is \
                  '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
        assert_eq!(
            is_dns1123_label("-x"),
            vec![
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
                  or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
                  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(is_dns1123_label("a.b"), vec!["must not contain dots"]);
        assert_eq!(
            is_dns1123_label(&"a".repeat(64))[0],
            "must be no more than 63 characters"
        );
        assert!(is_dns1123_label("my-app-1").is_empty());
        assert!(is_dns1123_subdomain("kube-system.example.com").is_empty());
        assert!(!is_dns1123_subdomain("a..b").is_empty());
    }

    #[test]
    fn name_rule_follows_the_kind() {
        assert!(validate_name("", "ConfigMap", "app.config").is_empty());
        assert_eq!(
            validate_name("", "Namespace", "team.a"),
            vec!["must not contain dots"]
        );
        assert_eq!(
            validate_name("", "Service", "web.svc"),
            vec!["must not contain dots"]
        );
        assert!(validate_name("", "Service", "1web").is_empty());
        assert!(
            validate_name("rbac.authorization.k8s.io", "ClusterRole", "system:Admin").is_empty()
        );
        assert_eq!(
            validate_name("rbac.authorization.k8s.io", "Role", "a/b%c"),
            vec!["may not contain '/'", "may not contain '%'"]
        );
        assert_eq!(
            validate_name("rbac.authorization.k8s.io", "Role", ".."),
            vec!["may not be '..'"]
        );
        assert_eq!(
            validate_name("batch", "CronJob", &"c".repeat(53)),
            vec!["must be no more than 52 characters"]
        );
        assert!(validate_name("", "Pod", "").is_empty());
    }

    #[test]
    fn labels_and_annotations() {
        let obj = json!({"metadata": {"name": "c",
            "labels": {"app": "bad value", "-x": "ok", "a/b/c": "v"},
            "annotations": {"Example.com/Owner": "me", "bad key": "v"}}});
        let got = lines(&check("", "ConfigMap", obj, None));
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[0].starts_with(
            "metadata.labels: Invalid value: \"-x\": name part must consist of alphanumeric"
        ));
        assert!(got[1].starts_with("metadata.labels: Invalid value: \"a/b/c\": a valid label key "));
        assert!(got[2].starts_with(
            "metadata.labels: Invalid value: \"bad value\": a valid label must be an empty string"
        ));
        assert!(got[3].starts_with("metadata.annotations: Invalid value: \"bad key\": name part"));

        let big = json!({"metadata": {"name": "c", "annotations": {"k": "v".repeat(256 * 1024)}}});
        assert_eq!(
            lines(&check("", "ConfigMap", big, None)),
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
    }

    #[test]
    fn valid_objects_pass() {
        assert_eq!(check("", "Pod", pod(web()), None), vec![]);
        let d = deployment(json!({"app": "a"}), json!({"matchLabels": {"app": "a"}}));
        assert_eq!(check("apps", "Deployment", d, None), vec![]);
        let svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
        assert_eq!(check("", "Service", svc, None), vec![]);
        let job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec":
            {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
        assert_eq!(check("batch", "Job", job, None), vec![]);
    }

    #[test]
    fn pod_spec_rules() {
        assert_eq!(
            lines(&check("", "Pod", pod(json!({"containers": []})), None)),
            vec!["spec.containers: Required value"]
        );
        let spec = json!({
        "restartPolicy": "Sometimes",
        "volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [
            {"name": "Web", "image": "nginx", "ports": [{"containerPort": 0}, {"containerPort": 70000}]},
            {"name": "side", "image": "", "volumeMounts": [{"name": "cache", "mountPath": "/c"}]},
            {"name": "side", "image": "x", "imagePullPolicy": "always"}
        ]});
        let got = lines(&check("", "Pod", pod(spec), None));
        let want = [
            "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label",
            "spec.containers[0].ports[0].containerPort: Required value",
            "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[1].image: Required value",
            "spec.containers[1].volumeMounts[0].name: Not found: \"cache\"",
            "spec.containers[2].imagePullPolicy: Unsupported value: \"always\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            "spec.containers[2].name: Duplicate value: \"side\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{g} should start with {w}");
        }
    }

    #[test]
    fn pod_updates() {
        let old = pod(json!({"containers": [{"name": "web", "image": "nginx:1"}],
                             "tolerations": [{"key": "a", "operator": "Exists"}]}));
        let image = pod(json!({"containers": [{"name": "web", "image": "nginx:2"}],
                               "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]}));
        assert_eq!(check("", "Pod", image, Some(old.clone())), vec![]);

        let ports = pod(json!({"containers": [{"name": "web", "image": "nginx:1",
                                               "ports": [{"containerPort": 80}]}],
                               "tolerations": [{"key": "a", "operator": "Exists"}]}));
        let got = check("", "Pod", ports, Some(old.clone()));
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].reason, got[0].field.as_str()),
            ("FieldValueForbidden", "spec")
        );
        assert!(got[0].message.starts_with(
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        ));
        assert!(
            got[0].message.contains("+ spec.containers[0].ports:"),
            "{}",
            got[0].message
        );

        // A pod stored before today's defaults still takes a status-only update.
        let bare = pod(json!({"containers": [{"name": "web", "image": "nginx:1"}]}));
        let mut defaulted = bare.clone();
        apply_defaults("", "Pod", &mut defaulted);
        assert_eq!(validate("", "Pod", &defaulted, Some(&bare)), vec![]);

        let removed = pod(json!({"containers": [{"name": "web", "image": "nginx:1"}]}));
        assert_eq!(
            lines(&check("", "Pod", removed, Some(old.clone()))),
            vec!["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]
        );
        let two = pod(
            json!({"containers": [{"name": "web", "image": "a"}, {"name": "b", "image": "b"}]}),
        );
        assert_eq!(
            lines(&check("", "Pod", two, Some(old))),
            vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
        );
    }

    #[test]
    fn workload_selectors() {
        let d = deployment(json!({"app": "b"}), json!({"matchLabels": {"app": "a"}}));
        assert_eq!(
            lines(&check("apps", "Deployment", d, None)),
            vec!["spec.template.metadata.labels: Invalid value: {\"app\":\"b\"}: `selector` does not match template `labels`"]
        );
        let mut missing = deployment(json!({"app": "a"}), Value::Null);
        missing["spec"]["replicas"] = json!(-1);
        assert_eq!(
            lines(&check("apps", "Deployment", missing, None)),
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.selector: Required value",
                "spec.template.metadata.labels: Invalid value: {\"app\":\"a\"}: `selector` does not match template `labels`",
            ]
        );
        let old = deployment(
            json!({"app": "a", "v": "1"}),
            json!({"matchLabels": {"app": "a"}}),
        );
        let new = deployment(
            json!({"app": "a", "v": "1"}),
            json!({"matchLabels": {"v": "1"}}),
        );
        assert_eq!(
            lines(&check("apps", "Deployment", new, Some(old))),
            vec![
                "spec.selector: Invalid value: {\"matchLabels\":{\"v\":\"1\"}}: field is immutable"
            ]
        );
        let exprs = deployment(
            json!({"tier": "web"}),
            json!({"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "canary", "operator": "DoesNotExist"}]}),
        );
        assert_eq!(check("apps", "Deployment", exprs, None), vec![]);
        let bad_op = deployment(
            json!({"a": "b"}),
            json!({"matchExpressions": [{"key": "a", "operator": "Is"}]}),
        );
        assert_eq!(
            lines(&check("apps", "Deployment", bad_op, None)),
            vec![
                "spec.selector.matchExpressions[0].operator: Invalid value: \"Is\": not a valid selector operator",
                "spec.selector: Invalid value: {\"matchExpressions\":[{\"key\":\"a\",\"operator\":\"Is\"}]}: invalid label selector",
            ]
        );
    }

    #[test]
    fn workload_templates_and_strategies() {
        let mut d = deployment(json!({"app": "a"}), json!({"matchLabels": {"app": "a"}}));
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        d["spec"]["strategy"] = json!({"type": "Rolling"});
        assert_eq!(
            lines(&check("apps", "Deployment", d, None)),
            vec![
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.strategy: Unsupported value: {\"Type\":\"Rolling\",\"RollingUpdate\":null}: supported values: \"Recreate\", \"RollingUpdate\"",
            ]
        );
        let mut zero = deployment(json!({"app": "a"}), json!({"matchLabels": {"app": "a"}}));
        zero["spec"]["strategy"] =
            json!({"rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}});
        assert_eq!(
            lines(&check("apps", "Deployment", zero, None)),
            vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"]
        );
        let mut rs = deployment(json!({"app": "a"}), json!({"matchLabels": {"app": "a"}}));
        rs["spec"]["template"]["spec"]["containers"] = json!([]);
        assert_eq!(
            lines(&check("apps", "ReplicaSet", rs, None)),
            vec!["spec.template.spec.containers: Required value"]
        );
        let ds =
            json!({"spec": {"template": {"metadata": {"labels": {"app": "a"}}, "spec": web()}}});
        assert_eq!(
            lines(&check("apps", "DaemonSet", ds, None)),
            vec!["spec.template.metadata.labels: Invalid value: {\"app\":\"a\"}: `selector` does not match template `labels`"]
        );
    }

    #[test]
    fn stateful_set_updates_are_limited() {
        let sts = |service: &str, replicas: i64| {
            json!({"spec": {"serviceName": service, "replicas": replicas,
                   "selector": {"matchLabels": {"app": "db"}},
                   "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}],
                   "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [
                       {"name": "db", "image": "postgres", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}}}})
        };
        assert_eq!(check("apps", "StatefulSet", sts("db", 1), None), vec![]);
        assert_eq!(
            check("apps", "StatefulSet", sts("db", 3), Some(sts("db", 1))),
            vec![]
        );
        let got = lines(&check(
            "apps",
            "StatefulSet",
            sts("db2", 1),
            Some(sts("db", 1)),
        ));
        assert_eq!(got.len(), 1);
        assert!(got[0]
            .starts_with("spec: Forbidden: updates to statefulset spec for fields other than"));
    }

    #[test]
    fn jobs_and_cron_jobs() {
        let job = |restart: &str, image: &str| {
            json!({"spec": {"parallelism": -1, "template": {"spec": {"restartPolicy": restart,
                   "containers": [{"name": "c", "image": image}]}}}})
        };
        assert_eq!(
            lines(&check("batch", "Job", job("Always", "a"), None)),
            vec![
                "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
            ]
        );
        let got = lines(&check(
            "batch",
            "Job",
            job("Never", "b"),
            Some(job("Never", "a")),
        ));
        assert!(got
            .iter()
            .any(|l| l.starts_with("spec.template: Invalid value: {")
                && l.ends_with(": field is immutable")));

        let cron = |schedule: &str, policy: &str| {
            json!({"spec": {"schedule": schedule, "concurrencyPolicy": policy, "jobTemplate": {"spec":
                   {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}})
        };
        assert_eq!(
            check("batch", "CronJob", cron("*/5 * * * *", "Forbid"), None),
            vec![]
        );
        assert_eq!(
            check("batch", "CronJob", cron("@hourly", "Allow"), None),
            vec![]
        );
        assert_eq!(
            lines(&check("batch", "CronJob", cron("* * * *", "Sometimes"), None)),
            vec![
                "spec.schedule: Invalid value: \"* * * *\": expected exactly 5 fields, found 4: [* * * *]",
                "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
            ]
        );
        assert_eq!(
            lines(&check("batch", "CronJob", cron("", "Allow"), None)),
            vec!["spec.schedule: Required value"]
        );
    }

    #[test]
    fn services() {
        let svc = |spec: Value| json!({"metadata": {"name": "s"}, "spec": spec});
        assert_eq!(
            lines(&check("", "Service", svc(json!({})), None)),
            vec!["spec.ports: Required value"]
        );
        assert_eq!(
            check("", "Service", svc(json!({"clusterIP": "None"})), None),
            vec![]
        );
        let ext = json!({"type": "ExternalName", "externalName": "db.example.com."});
        assert_eq!(check("", "Service", svc(ext), None), vec![]);
        let got = lines(&check(
            "",
            "Service",
            svc(
                json!({"type": "Internal", "ports": [{"port": 80}, {"port": 80, "name": "b"}, {"port": 0, "name": "c"}]}),
            ),
            None,
        ));
        assert_eq!(
            got,
            vec![
                "spec.ports[0].name: Required value",
                "spec.ports[2].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                // targetPort defaults to port, as upstream.
                "spec.ports[2].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.type: Unsupported value: \"Internal\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                "spec.ports[1]: Duplicate value: {\"Name\":\"\",\"Protocol\":\"TCP\",\"AppProtocol\":null,\"Port\":80,\"TargetPort\":0,\"NodePort\":0}",
            ]
        );
        let with_ip = |ip: &str| svc(json!({"clusterIP": ip, "ports": [{"port": 80}]}));
        assert_eq!(
            lines(&check(
                "",
                "Service",
                with_ip("10.43.0.20"),
                Some(with_ip("10.43.0.10"))
            )),
            vec!["spec.clusterIPs[0]: Invalid value: [\"10.43.0.20\"]: may not change once set"]
        );
        let unset = svc(json!({"ports": [{"port": 80}]}));
        assert_eq!(
            check("", "Service", unset, Some(with_ip("10.43.0.10"))),
            vec![]
        );

        let ranged = |ty: &str, ranges: Value| {
            svc(json!({"type": ty, "ports": [{"port": 80}], "loadBalancerSourceRanges": ranges}))
        };
        let ok = json!([" 192.0.2.0/24", "2001:db8::/64"]);
        assert_eq!(
            check("", "Service", ranged("LoadBalancer", ok), None),
            vec![]
        );
        assert_eq!(
            lines(&check("", "Service", ranged("LoadBalancer", json!(["192.0.2.1", "x"])), None)),
            vec![
                "spec.loadBalancerSourceRanges[0]: Invalid value: \"192.0.2.1\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.loadBalancerSourceRanges[1]: Invalid value: \"x\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ]
        );
        assert_eq!(
            lines(&check("", "Service", ranged("NodePort", json!(["192.0.2.0/24"])), None)),
            vec!["spec.loadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'"]
        );
    }

    #[test]
    fn config_maps_and_secrets() {
        let cm = |data: Value, binary: Value| json!({"metadata": {"name": "c"}, "data": data, "binaryData": binary});
        assert_eq!(
            lines(&check("", "ConfigMap", cm(json!({"a b": "1", "x": "2"}), json!({"x": "AAAA"})), None)),
            vec![
                "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                "data[x]: Invalid value: \"x\": duplicate of key present in binaryData",
            ]
        );
        let big = cm(json!({"k": "v".repeat(1024 * 1024 + 1)}), Value::Null);
        assert_eq!(
            lines(&check("", "ConfigMap", big, None)),
            vec![": Too long: may not be more than 1048576 bytes"]
        );

        let mut frozen = cm(json!({"k": "1"}), Value::Null);
        frozen["immutable"] = json!(true);
        let mut changed = frozen.clone();
        changed["data"]["k"] = json!("2");
        assert_eq!(
            lines(&check("", "ConfigMap", changed, Some(frozen.clone()))),
            vec!["data: Forbidden: field is immutable when `immutable` is set"]
        );
        assert_eq!(check("", "ConfigMap", frozen.clone(), Some(frozen)), vec![]);

        let tls = json!({"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "AAAA"}});
        assert_eq!(
            lines(&check("", "Secret", tls.clone(), None)),
            vec!["data[tls.key]: Required value"]
        );
        let mut opaque = tls.clone();
        opaque["type"] = json!("Opaque");
        let got = lines(&check("", "Secret", opaque, Some(tls)));
        assert_eq!(
            got,
            vec!["type: Invalid value: \"Opaque\": field is immutable"]
        );
        let bad_key = json!({"stringData": {"../x": "v"}});
        assert_eq!(check("", "Secret", bad_key, None).len(), 2);
    }

    #[test]
    fn rendering_matches_go() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(
            go_json(&json!({"b": [1, "x"], "a": null})),
            "{\"a\":null,\"b\":[1,\"x\"]}"
        );
        assert_eq!(render(&json!(5)), "5");
        assert_eq!(render(&json!("25%")), "\"25%\"");
    }

    #[test]
    fn odd_input_does_not_panic() {
        let cases = [
            json!(null),
            json!([1]),
            json!({"metadata": 1, "spec": "x", "data": 3}),
            json!({"spec": {"containers": [1, null, {"ports": "x"}], "selector": [], "ports": {}}}),
            json!({"spec": {"template": 1, "strategy": [], "updateStrategy": {"rollingUpdate": 1}}}),
            json!({"metadata": {"labels": {"a": 1}, "annotations": [], "finalizers": [1]}}),
        ];
        let kinds = [
            ("", "Pod"),
            ("", "Service"),
            ("", "ConfigMap"),
            ("", "Secret"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("apps", "DaemonSet"),
            ("apps", "StatefulSet"),
            ("batch", "Job"),
            ("batch", "CronJob"),
        ];
        for case in &cases {
            for (group, kind) in kinds {
                validate(group, kind, case, None);
                validate(group, kind, case, Some(case));
                validate(group, kind, case, Some(&json!({"spec": {"containers": 5}})));
            }
        }
    }
}
