//! RBAC: Roles, ClusterRoles and their bindings, evaluated from an in-memory index.
//!
//! The [`Index`] holds every Role, ClusterRole, RoleBinding and ClusterRoleBinding, and a
//! map from subject (user or group) to the bindings that name it, so a request costs a
//! hash lookup per group of the user plus the rules of the roles bound to them, however
//! many bindings exist. [`run`] keeps it current from the store's watch, and keeps the
//! `rules` of aggregated ClusterRoles filled (upstream's clusterrole-aggregation
//! controller).

use super::authz::{Attributes, Decision};
use crate::api::handlers::{self, Part, WriteOptions};
use crate::api::request::Target;
use crate::api::selectors::LabelSelector;
use crate::api::Api;
use crate::registry;
use crate::store::{self, Entry, EventKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// The datastore prefix under which every RBAC object lives.
pub const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// One rule of a role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Verbs, `*` for all.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// API groups, `*` for all, `""` for core.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources (`pods`, `pods/log`, `*/scale`, `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names; empty for any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource paths (`/healthz`, `/apis/*`, `*`).
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == want || v == "*")
}

impl Rule {
    /// A rule for resources: `verbs` on `resources` in `groups`.
    pub fn new(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
        let s = |l: &[&str]| l.iter().map(|v| v.to_string()).collect();
        Rule {
            verbs: s(verbs),
            api_groups: s(groups),
            resources: s(resources),
            ..Rule::default()
        }
    }

    /// A rule for non-resource paths.
    pub fn urls(verbs: &[&str], urls: &[&str]) -> Rule {
        let s = |l: &[&str]| l.iter().map(|v| v.to_string()).collect();
        Rule {
            verbs: s(verbs),
            non_resource_urls: s(urls),
            ..Rule::default()
        }
    }

    /// Narrows the rule to objects named `names`.
    pub fn names(mut self, names: &[&str]) -> Rule {
        self.resource_names = names.iter().map(|v| v.to_string()).collect();
        self
    }

    /// Whether the rule allows the request.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        if !has(&self.api_groups, &a.api_group) {
            return false;
        }
        let resource_ok = self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if a.subresource.is_empty() {
                return *r == a.resource;
            }
            r.strip_suffix(a.subresource.as_str())
                .and_then(|p| p.strip_suffix('/'))
                .is_some_and(|p| p == "*" || p == a.resource)
        });
        if !resource_ok {
            return false;
        }
        self.resource_names.is_empty()
            || (!a.name.is_empty() && self.resource_names.contains(&a.name))
    }
}

/// A binding's subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    /// `rbac.authorization.k8s.io` for users and groups, `""` for service accounts.
    #[serde(default)]
    pub api_group: String,
    /// The name.
    pub name: String,
    /// A service account's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Subject {
    /// A `User` subject.
    pub fn user(name: &str) -> Subject {
        Subject {
            kind: "User".into(),
            api_group: GROUP.into(),
            name: name.into(),
            namespace: String::new(),
        }
    }

    /// A `Group` subject.
    pub fn group(name: &str) -> Subject {
        Subject {
            kind: "Group".into(),
            api_group: GROUP.into(),
            name: name.into(),
            namespace: String::new(),
        }
    }

    /// A `ServiceAccount` subject.
    pub fn service_account(namespace: &str, name: &str) -> Subject {
        Subject {
            kind: "ServiceAccount".into(),
            api_group: String::new(),
            name: name.into(),
            namespace: namespace.into(),
        }
    }
}

/// What a binding grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// Always [`GROUP`].
    #[serde(default)]
    pub api_group: String,
    /// `Role` or `ClusterRole`.
    pub kind: String,
    /// The role's name.
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleObject {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    rules: Option<Vec<Rule>>,
    #[serde(default)]
    aggregation_rule: Option<AggregationRule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AggregationRule {
    #[serde(default)]
    cluster_role_selectors: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BindingObject {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    subjects: Option<Vec<Subject>>,
    role_ref: RoleRef,
}

/// A role as the index keeps it.
#[derive(Debug, Clone, Default)]
pub struct Role {
    /// Its rules.
    pub rules: Arc<Vec<Rule>>,
    /// Its labels (aggregation selects by them).
    pub labels: serde_json::Map<String, Value>,
    /// Its aggregation selectors (ClusterRoles only).
    pub aggregation: Option<Vec<Value>>,
}

/// A binding as the index keeps it.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The binding's name.
    pub name: String,
    /// Its namespace; empty for a ClusterRoleBinding.
    pub namespace: String,
    /// What it grants.
    pub role_ref: RoleRef,
    /// To whom.
    pub subjects: Vec<Subject>,
}

/// Who a subject key names: a user or a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Who {
    User(String),
    Group(String),
}

/// Everything RBAC knows at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Roles by `namespace/name`.
    pub roles: HashMap<String, Role>,
    /// ClusterRoles by name.
    pub cluster_roles: HashMap<String, Role>,
    /// RoleBindings by datastore key.
    pub role_bindings: BTreeMap<String, Arc<Binding>>,
    /// ClusterRoleBindings by datastore key.
    pub cluster_role_bindings: BTreeMap<String, Arc<Binding>>,
    by_subject: HashMap<Who, Vec<Arc<Binding>>>,
}

fn who(subject: &Subject, binding_ns: &str) -> Option<Who> {
    match subject.kind.as_str() {
        "User" => Some(Who::User(subject.name.clone())),
        "Group" => Some(Who::Group(subject.name.clone())),
        "ServiceAccount" => {
            let ns = if subject.namespace.is_empty() {
                binding_ns
            } else {
                &subject.namespace
            };
            Some(Who::User(format!(
                "system:serviceaccount:{ns}:{}",
                subject.name
            )))
        }
        _ => None,
    }
}

impl Snapshot {
    /// Applies one stored object (put) or its removal (delete) by datastore key.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            return;
        };
        let (plural, _) = rest.split_once('/').unwrap_or((rest, ""));
        match plural {
            "roles" | "clusterroles" => {
                let role = value.and_then(|v| serde_json::from_slice::<RoleObject>(v).ok());
                let map = if plural == "roles" {
                    &mut self.roles
                } else {
                    &mut self.cluster_roles
                };
                let id = rest[plural.len() + 1..].to_string();
                match role {
                    Some(r) => {
                        map.insert(
                            id,
                            Role {
                                rules: Arc::new(r.rules.unwrap_or_default()),
                                labels: r.metadata.labels,
                                aggregation: r
                                    .aggregation_rule
                                    .map(|a| a.cluster_role_selectors.unwrap_or_default()),
                            },
                        );
                    }
                    None => {
                        map.remove(&id);
                    }
                }
            }
            "rolebindings" | "clusterrolebindings" => {
                let binding = value.and_then(|v| serde_json::from_slice::<BindingObject>(v).ok());
                let map = if plural == "rolebindings" {
                    &mut self.role_bindings
                } else {
                    &mut self.cluster_role_bindings
                };
                match binding {
                    Some(b) => {
                        let ns = if plural == "rolebindings" {
                            b.metadata.namespace
                        } else {
                            String::new()
                        };
                        map.insert(
                            key.to_string(),
                            Arc::new(Binding {
                                name: b.metadata.name,
                                namespace: ns,
                                role_ref: b.role_ref,
                                subjects: b.subjects.unwrap_or_default(),
                            }),
                        );
                    }
                    None => {
                        map.remove(key);
                    }
                }
            }
            _ => {}
        }
    }

    /// Rebuilds the subject index after changes.
    pub fn reindex(&mut self) {
        let mut by_subject: HashMap<Who, Vec<Arc<Binding>>> = HashMap::new();
        for b in self
            .cluster_role_bindings
            .values()
            .chain(self.role_bindings.values())
        {
            for s in &b.subjects {
                if let Some(w) = who(s, &b.namespace) {
                    let list = by_subject.entry(w).or_default();
                    if !list.iter().any(|x| Arc::ptr_eq(x, b)) {
                        list.push(b.clone());
                    }
                }
            }
        }
        self.by_subject = by_subject;
    }

    /// A snapshot of `entries` (every RBAC object).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Snapshot {
        let mut s = Snapshot::default();
        for e in entries {
            s.apply(&e.key, Some(&e.value));
        }
        s.reindex();
        s
    }

    /// The bindings that name the user or one of their groups.
    fn bindings_of<'a>(
        &'a self,
        user: &'a str,
        groups: &'a [String],
    ) -> impl Iterator<Item = &'a Arc<Binding>> + 'a {
        let keys = std::iter::once(Who::User(user.to_string()))
            .chain(groups.iter().map(|g| Who::Group(g.clone())));
        keys.filter_map(|k| self.by_subject.get(&k)).flatten()
    }

    /// The rules a binding grants, or the reason they are missing.
    fn rules_of(&self, b: &Binding) -> Result<&Arc<Vec<Rule>>, String> {
        match b.role_ref.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&b.role_ref.name)
                .map(|r| &r.rules)
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io {:?} not found",
                        b.role_ref.name
                    )
                }),
            _ => self
                .roles
                .get(&format!("{}/{}", b.namespace, b.role_ref.name))
                .map(|r| &r.rules)
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io {:?} not found",
                        b.role_ref.name
                    )
                }),
        }
    }

    /// Authorizes one request: allowed if a rule of a role bound to the user allows it
    /// (a RoleBinding only in its namespace). Otherwise no opinion, with the reason upstream
    /// gives (the roles that bindings name but that do not exist).
    pub fn authorize(&self, a: &Attributes) -> (Decision, String) {
        let mut errors: Vec<String> = Vec::new();
        for b in self.bindings_of(&a.user.name, &a.user.groups) {
            if !b.namespace.is_empty() && (b.namespace != a.namespace || !a.resource_request) {
                continue;
            }
            match self.rules_of(b) {
                Ok(rules) => {
                    if rules.iter().any(|r| r.allows(a)) {
                        return (Decision::Allow, String::new());
                    }
                }
                Err(e) => {
                    if !errors.contains(&e) {
                        errors.push(e)
                    }
                }
            }
        }
        let reason = match errors.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", errors[0]),
            _ => format!("RBAC: [{}]", errors.join(", ")),
        };
        (Decision::NoOpinion, reason)
    }

    /// The rules that apply to the user in `namespace` (cluster-wide ones included), for
    /// SelfSubjectRulesReview, and whether some could not be found.
    pub fn rules_for(&self, user: &str, groups: &[String], namespace: &str) -> (Vec<Rule>, bool) {
        let mut out: Vec<Rule> = Vec::new();
        let mut incomplete = false;
        for b in self.bindings_of(user, groups) {
            if !b.namespace.is_empty() && b.namespace != namespace {
                continue;
            }
            match self.rules_of(b) {
                Ok(rules) => {
                    for r in rules.iter() {
                        if !out.contains(r) {
                            out.push(r.clone());
                        }
                    }
                }
                Err(_) => incomplete = true,
            }
        }
        (out, incomplete)
    }

    /// The aggregated ClusterRoles whose rules differ from what their selectors gather:
    /// (name, the rules they should have).
    pub fn aggregation_updates(&self) -> Vec<(String, Vec<Rule>)> {
        let mut out = Vec::new();
        let mut names: Vec<&String> = self.cluster_roles.keys().collect();
        names.sort();
        for name in &names {
            let role = &self.cluster_roles[*name];
            let Some(selectors) = &role.aggregation else {
                continue;
            };
            let selectors: Vec<LabelSelector> = selectors
                .iter()
                .filter_map(|s| LabelSelector::from_object(s).ok())
                .collect();
            let mut rules: Vec<Rule> = Vec::new();
            for other in &names {
                if other == name {
                    continue;
                }
                let o = &self.cluster_roles[*other];
                if selectors.iter().any(|s| s.matches(Some(&o.labels))) {
                    for r in o.rules.iter() {
                        if !rules.contains(r) {
                            rules.push(r.clone());
                        }
                    }
                }
            }
            if rules != *role.rules {
                out.push((name.to_string(), rules));
            }
        }
        out
    }
}

/// What of `servant` the `owner` rules do not cover, broken down per group, resource
/// and name (upstream's `Covers` on `BreakdownRule`): the uncovered rules, their verbs
/// merged.
pub fn uncovered(owner: &[Rule], servant: &Rule) -> Vec<Rule> {
    let covers_one = |verb: &str, group: &str, resource: &str, name: &str| {
        owner.iter().any(|o| {
            has(&o.verbs, verb)
                && has(&o.api_groups, group)
                && o.resources.iter().any(|r| {
                    r == "*"
                        || r == resource
                        || resource
                            .split_once('/')
                            .is_some_and(|(_, sub)| r.strip_prefix("*/") == Some(sub))
                })
                && (o.resource_names.is_empty() || o.resource_names.iter().any(|n| n == name))
        })
    };
    let mut out: Vec<Rule> = Vec::new();
    let names: Vec<&str> = if servant.resource_names.is_empty() {
        vec![""]
    } else {
        servant.resource_names.iter().map(String::as_str).collect()
    };
    for g in &servant.api_groups {
        for r in &servant.resources {
            for n in &names {
                let verbs: Vec<String> = servant
                    .verbs
                    .iter()
                    .filter(|v| {
                        // An unnamed request must be covered by an unnamed rule.
                        !covers_one(v, g, r, n)
                            || (n.is_empty()
                                && !owner.iter().any(|o| {
                                    o.resource_names.is_empty()
                                        && has(&o.verbs, v)
                                        && has(&o.api_groups, g)
                                        && o.resources.iter().any(|x| {
                                            x == "*"
                                                || x == r
                                                || r.split_once('/').is_some_and(|(_, sub)| {
                                                    x.strip_prefix("*/") == Some(sub)
                                                })
                                        })
                                }))
                    })
                    .cloned()
                    .collect();
                if !verbs.is_empty() {
                    out.push(Rule {
                        verbs,
                        api_groups: vec![g.clone()],
                        resources: vec![r.clone()],
                        resource_names: if n.is_empty() {
                            Vec::new()
                        } else {
                            vec![n.to_string()]
                        },
                        non_resource_urls: Vec::new(),
                    });
                }
            }
        }
    }
    for u in &servant.non_resource_urls {
        let verbs: Vec<String> = servant
            .verbs
            .iter()
            .filter(|v| {
                !owner.iter().any(|o| {
                    has(&o.verbs, v)
                        && o.non_resource_urls.iter().any(|ou| {
                            ou == "*"
                                || ou == u
                                || ou.strip_suffix('*').is_some_and(|p| u.starts_with(p))
                        })
                })
            })
            .cloned()
            .collect();
        if !verbs.is_empty() {
            out.push(Rule {
                verbs,
                non_resource_urls: vec![u.clone()],
                ..Rule::default()
            });
        }
    }
    out
}

/// A rule as upstream's `CompactString` prints it.
pub fn compact_string(r: &Rule) -> String {
    let q = |l: &[String]| {
        l.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut parts = Vec::new();
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:[{}]", q(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:[{}]", q(&r.resources)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:[{}]", q(&r.non_resource_urls)));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:[{}]", q(&r.resource_names)));
    }
    parts.push(format!("Verbs:[{}]", q(&r.verbs)));
    format!("{{{}}}", parts.join(", "))
}

/// The live RBAC index, shared by the authorizer and the loop that keeps it current.
#[derive(Debug, Default)]
pub struct Index {
    current: RwLock<Arc<Snapshot>>,
}

impl Index {
    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, s: Snapshot) {
        let s = Arc::new(s);
        match self.current.write() {
            Ok(mut g) => *g = s,
            Err(poisoned) => *poisoned.into_inner() = s,
        }
    }

    /// Loads everything under [`PREFIX`] from the store; answers the revision loaded at.
    pub fn load(&self, store: &store::Store) -> store::Revision {
        let revision = store.revision();
        let page = store.list(PREFIX, None, 0, false, &|_| true);
        self.replace(Snapshot::from_entries(&page.items));
        page.revision.max(revision)
    }

    fn apply_events(&self, events: &[store::Event]) {
        let old = self.snapshot();
        let mut next = Snapshot {
            roles: old.roles.clone(),
            cluster_roles: old.cluster_roles.clone(),
            role_bindings: old.role_bindings.clone(),
            cluster_role_bindings: old.cluster_role_bindings.clone(),
            by_subject: HashMap::new(),
        };
        for ev in events {
            let value = (ev.kind == EventKind::Put).then_some(&ev.entry.value[..]);
            next.apply(&ev.entry.key, value);
        }
        next.reindex();
        self.replace(next);
    }
}

/// Writes the aggregated rules of the ClusterRoles whose selectors gather other rules
/// than they hold.
async fn aggregate(api: &Api) {
    let Some(resource) = registry::find_kind(GROUP, "ClusterRole") else {
        return;
    };
    for (name, rules) in api.rbac.snapshot().aggregation_updates() {
        let target = Target {
            resource,
            namespace: None,
            name: Some(name.clone()),
            subresource: None,
        };
        let rules_json = match serde_json::to_value(&rules) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let r = handlers::guaranteed_update(
            api,
            &target,
            Part::Main,
            &WriteOptions::default(),
            |old| {
                let mut new = old.clone();
                new["rules"] = rules_json.clone();
                Ok(new)
            },
        )
        .await;
        if let Err(e) = r {
            tracing::warn!(clusterrole = %name, error = %e, "aggregating rules failed");
        }
    }
}

/// Keeps `api.rbac` current from the store's watch and the aggregated ClusterRoles'
/// rules filled, until `cancel` fires.
pub async fn run(api: Arc<Api>, cancel: CancellationToken) -> Result<(), crate::Error> {
    loop {
        let revision = api.rbac.load(&api.store);
        aggregate(&api).await;
        let Ok(mut watch) = api.store.watch(PREFIX, revision) else {
            continue;
        };
        loop {
            let events = tokio::select! {
                e = watch.next() => e,
                _ = cancel.cancelled() => return Ok(()),
            };
            let Ok(events) = events else { break };
            api.rbac.apply_events(&events);
            let touches_cluster_roles = events.iter().any(|e| {
                e.entry
                    .key
                    .starts_with("/registry/rbac.authorization.k8s.io/clusterroles/")
            });
            if touches_cluster_roles {
                aggregate(&api).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::User;
    use serde_json::json;

    fn attrs<'a>(user: &'a User, verb: &str, group: &str, res: &str, ns: &str) -> Attributes<'a> {
        Attributes {
            user,
            verb: verb.into(),
            resource_request: true,
            namespace: ns.into(),
            api_group: group.into(),
            resource: res.into(),
            ..Attributes::new(user)
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let u = User::new("alice", vec![]);
        let r = Rule::new(&["get", "list"], &[""], &["pods", "pods/log"]);
        assert!(r.allows(&attrs(&u, "get", "", "pods", "default")));
        assert!(!r.allows(&attrs(&u, "delete", "", "pods", "default")));
        assert!(!r.allows(&attrs(&u, "get", "apps", "pods", "default")));
        let mut log = attrs(&u, "get", "", "pods", "default");
        log.subresource = "log".into();
        assert!(r.allows(&log));
        log.subresource = "exec".into();
        assert!(!r.allows(&log));
        let scale = Rule::new(&["update"], &["*"], &["*/scale"]);
        let mut s = attrs(&u, "update", "apps", "deployments", "x");
        assert!(!scale.allows(&s));
        s.subresource = "scale".into();
        assert!(scale.allows(&s));
        let named = Rule::new(&["get"], &[""], &["secrets"]).names(&["a"]);
        let mut g = attrs(&u, "get", "", "secrets", "x");
        assert!(!named.allows(&g), "no name: not allowed by a named rule");
        g.name = "a".into();
        assert!(named.allows(&g));
        g.name = "b".into();
        assert!(!named.allows(&g));
        let all = Rule::new(&["*"], &["*"], &["*"]);
        assert!(all.allows(&log));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let u = User::new("alice", vec![]);
        let r = Rule::urls(&["get"], &["/healthz", "/apis/*"]);
        let mut a = Attributes::new(&u);
        a.verb = "get".into();
        a.path = "/healthz".into();
        assert!(r.allows(&a));
        a.path = "/healthz/ping".into();
        assert!(!r.allows(&a));
        a.path = "/apis/apps".into();
        assert!(r.allows(&a));
        a.resource_request = true;
        assert!(!r.allows(&a), "url rules never allow resource requests");
    }

    fn entry(key: &str, v: Value) -> Entry {
        Entry {
            key: key.into(),
            value: v.to_string().into(),
            revision: 1,
            create_revision: 1,
        }
    }

    fn snapshot(objs: &[(&str, Value)]) -> Snapshot {
        let entries: Vec<Entry> = objs.iter().map(|(k, v)| entry(k, v.clone())).collect();
        Snapshot::from_entries(&entries)
    }

    #[test]
    fn bindings_grant_roles_to_users_groups_and_service_accounts() {
        let s = snapshot(&[
            (
                "/registry/rbac.authorization.k8s.io/roles/ns1/reader",
                json!({"metadata": {"name": "reader", "namespace": "ns1"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/rolebindings/ns1/rb",
                json!({"metadata": {"name": "rb", "namespace": "ns1"}, "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "reader"},
                    "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Group", "apiGroup": GROUP, "name": "devs"}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterroles/nodes-reader",
                json!({"metadata": {"name": "nodes-reader"}, "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["nodes"]}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterrolebindings/crb",
                json!({"metadata": {"name": "crb"}, "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "nodes-reader"},
                    "subjects": [{"kind": "User", "apiGroup": GROUP, "name": "bob"}, {"kind": "User", "apiGroup": GROUP, "name": "carol"}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterrolebindings/dangling",
                json!({"metadata": {"name": "dangling"}, "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "gone"},
                    "subjects": [{"kind": "User", "apiGroup": GROUP, "name": "carol"}]}),
            ),
        ]);
        let sa = User::new("system:serviceaccount:ns1:sa", vec![]);
        assert_eq!(
            s.authorize(&attrs(&sa, "get", "", "pods", "ns1")).0,
            Decision::Allow
        );
        assert_eq!(
            s.authorize(&attrs(&sa, "get", "", "pods", "ns2")).0,
            Decision::NoOpinion
        );
        assert_eq!(
            s.authorize(&attrs(&sa, "get", "", "pods", "")).0,
            Decision::NoOpinion
        );
        let dev = User::new("dave", vec!["devs".into()]);
        assert_eq!(
            s.authorize(&attrs(&dev, "get", "", "pods", "ns1")).0,
            Decision::Allow
        );
        let bob = User::new("bob", vec![]);
        assert_eq!(
            s.authorize(&attrs(&bob, "list", "", "nodes", "")).0,
            Decision::Allow
        );
        assert_eq!(
            s.authorize(&attrs(&bob, "get", "", "pods", "ns1")).0,
            Decision::NoOpinion
        );
        let carol = User::new("carol", vec![]);
        let (d, reason) = s.authorize(&attrs(&carol, "get", "", "pods", "ns1"));
        assert_eq!(d, Decision::NoOpinion);
        assert_eq!(
            reason,
            "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found"
        );
        let (rules, incomplete) = s.rules_for("system:serviceaccount:ns1:sa", &[], "ns1");
        assert_eq!(rules.len(), 1);
        assert!(!incomplete);
    }

    #[test]
    fn the_index_follows_deletes() {
        let mut s = snapshot(&[
            (
                "/registry/rbac.authorization.k8s.io/clusterroles/r",
                json!({"metadata": {"name": "r"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterrolebindings/b",
                json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "r"},
                    "subjects": [{"kind": "User", "apiGroup": GROUP, "name": "eve"}]}),
            ),
        ]);
        let eve = User::new("eve", vec![]);
        assert_eq!(
            s.authorize(&attrs(&eve, "delete", "", "pods", "x")).0,
            Decision::Allow
        );
        s.apply(
            "/registry/rbac.authorization.k8s.io/clusterrolebindings/b",
            None,
        );
        s.reindex();
        assert_eq!(
            s.authorize(&attrs(&eve, "delete", "", "pods", "x")).0,
            Decision::NoOpinion
        );
    }

    #[test]
    fn escalation_finds_what_the_owner_lacks() {
        let owner = vec![
            Rule::new(&["get", "list"], &[""], &["pods", "configmaps"]),
            Rule::new(&["update"], &["apps"], &["*/scale"]),
            Rule::new(&["get"], &[""], &["secrets"]).names(&["mine"]),
        ];
        assert!(uncovered(&owner, &Rule::new(&["get"], &[""], &["pods"])).is_empty());
        assert!(uncovered(
            &owner,
            &Rule::new(&["update"], &["apps"], &["deployments/scale"])
        )
        .is_empty());
        assert!(uncovered(
            &owner,
            &Rule::new(&["get"], &[""], &["secrets"]).names(&["mine"])
        )
        .is_empty());
        let missing = uncovered(
            &owner,
            &Rule::new(&["get", "delete"], &[""], &["pods", "secrets"]),
        );
        assert_eq!(
            missing.iter().map(compact_string).collect::<Vec<_>>(),
            vec![
                "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}",
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"delete\"]}",
            ]
        );
        let admin = vec![
            Rule::new(&["*"], &["*"], &["*"]),
            Rule::urls(&["*"], &["*"]),
        ];
        assert!(uncovered(&admin, &Rule::urls(&["get"], &["/healthz"])).is_empty());
        assert_eq!(
            uncovered(&owner, &Rule::urls(&["get"], &["/healthz"])).len(),
            1
        );
    }

    #[test]
    fn aggregation_gathers_the_selected_roles_rules() {
        let s = snapshot(&[
            (
                "/registry/rbac.authorization.k8s.io/clusterroles/view",
                json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterroles/b-extra",
                json!({"metadata": {"name": "b-extra", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                    "rules": [{"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterroles/a-extra",
                json!({"metadata": {"name": "a-extra", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                    "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterroles/other",
                json!({"metadata": {"name": "other"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}),
            ),
        ]);
        let updates = s.aggregation_updates();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].0, "view");
        assert_eq!(
            updates[0].1,
            vec![
                Rule::new(&["get"], &[""], &["pods"]),
                Rule::new(&["get"], &["example.com"], &["widgets"])
            ]
        );
    }
}
