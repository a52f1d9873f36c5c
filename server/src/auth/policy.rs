//! The default ClusterRoles and ClusterRoleBindings (upstream's bootstrap policy), and
//! how they are reconciled at every start: missing ones are created, and those annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"` get the rules, subjects, labels
//! and annotations they lack; others are left alone.
//!
//! skiff runs all its controllers as one user, `system:kube-controller-manager`, where
//! upstream gives each controller a service account and a `system:controller:*` role.
//! That user gets upstream's `system:kube-controller-manager` role plus one skiff role,
//! [`CONTROLLERS_ROLE`], holding the union of what skiff's controllers do: the garbage
//! collector and namespace controller's reads, updates and deletes of every kind, and
//! the creates of the workload, endpoints, service account, event and eviction paths.

use super::rbac::{Rule, Subject, GROUP};
use serde_json::{json, Value};

/// The annotation that lets reconciliation update a default object.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// The label every default object carries.
pub const BOOTSTRAPPING: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");

/// skiff's role for its controllers (see the module doc).
pub const CONTROLLERS_ROLE: &str = "system:skiff:controller-manager";

/// skiff's role for its nodes' network (service proxy, cluster DNS, network policy):
/// what reading Services, their endpoints, and the pods, namespaces and policies that
/// policies select takes. Bound to every node beside upstream's `system:node-proxier`.
pub const NODE_NETWORK_ROLE: &str = "system:skiff:node-network";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL_RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn rules_json(rules: &[Rule]) -> Value {
    serde_json::to_value(rules).unwrap_or(Value::Array(Vec::new()))
}

fn meta(name: &str, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert(BOOTSTRAPPING.0.into(), BOOTSTRAPPING.1.into());
    for (k, v) in extra_labels {
        labels.insert((*k).into(), (*v).into());
    }
    json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}})
}

fn role(name: &str, labels: &[(&str, &str)], rules: Vec<Rule>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": meta(name, labels),
        "rules": rules_json(&rules),
    })
}

fn aggregated(name: &str, labels: &[(&str, &str)], selects: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": meta(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {selects: "true"}}]},
        "rules": [],
    })
}

fn binding(name: &str, role: &str, subjects: &[Subject]) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": meta(name, &[]),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": serde_json::to_value(subjects).unwrap_or(Value::Array(Vec::new())),
    })
}

const TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The rules nodes have (upstream's `system:node` role).
pub fn node_role_rules() -> Vec<Rule> {
    vec![
        Rule::new(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        Rule::new(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        Rule::new(READ, &[""], &["services"]),
        Rule::new(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        Rule::new(&["update", "patch"], &[""], &["nodes/status"]),
        Rule::new(&["update", "patch"], &[""], &["nodes"]),
        Rule::new(
            &["create", "update", "patch"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        Rule::new(READ, &[""], &["pods"]),
        Rule::new(&["create", "delete"], &[""], &["pods"]),
        Rule::new(&["update", "patch"], &[""], &["pods/status"]),
        Rule::new(&["create"], &[""], &["pods/eviction"]),
        Rule::new(&["get"], &[""], &["configmaps", "secrets"]),
        Rule::new(
            &["get"],
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        Rule::new(&["get"], &[""], &["endpoints"]),
        Rule::new(
            &["update", "patch"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        Rule::new(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        Rule::new(READ, &["node.k8s.io"], &["runtimeclasses"]),
        Rule::new(&["create"], &[""], &["serviceaccounts/token"]),
    ]
}

/// Every default ClusterRole.
pub fn cluster_roles() -> Vec<Value> {
    let events = Rule::new(
        &["create", "update", "patch"],
        &["", "events.k8s.io"],
        &["events"],
    );
    vec![
        role(
            "cluster-admin",
            &[],
            vec![
                Rule::new(&["*"], &["*"], &["*"]),
                Rule::urls(&["*"], &["*"]),
            ],
        ),
        role(
            "system:discovery",
            &[],
            vec![Rule::urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:public-info-viewer",
            &[],
            vec![Rule::urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        role(
            "system:monitoring",
            &[],
            vec![Rule::urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        role(
            "system:basic-user",
            &[],
            vec![
                Rule::new(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                Rule::new(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        aggregated("admin", &[], TO_ADMIN),
        aggregated("edit", &[(TO_ADMIN, "true")], TO_EDIT),
        aggregated("view", &[(TO_EDIT, "true")], TO_VIEW),
        role(
            "system:aggregate-to-admin",
            &[(TO_ADMIN, "true")],
            vec![
                Rule::new(
                    ALL_RW,
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                ),
                Rule::new(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
            ],
        ),
        role(
            "system:aggregate-to-edit",
            &[(TO_EDIT, "true")],
            vec![
                Rule::new(&["impersonate"], &[""], &["serviceaccounts"]),
                Rule::new(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                Rule::new(&["create"], &[""], &["pods/eviction"]),
                Rule::new(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                Rule::new(&["create"], &[""], &["serviceaccounts/token"]),
                Rule::new(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                Rule::new(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                Rule::new(WRITE, &["batch"], &["cronjobs", "jobs"]),
                Rule::new(WRITE, &["policy"], &["poddisruptionbudgets"]),
                Rule::new(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                Rule::new(
                    &[
                        "create",
                        "delete",
                        "deletecollection",
                        "get",
                        "list",
                        "patch",
                        "update",
                        "watch",
                    ],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
            ],
        ),
        role(
            "system:aggregate-to-view",
            &[(TO_VIEW, "true")],
            vec![
                Rule::new(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                Rule::new(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                Rule::new(READ, &[""], &["namespaces"]),
                Rule::new(READ, &["discovery.k8s.io"], &["endpointslices"]),
                Rule::new(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                Rule::new(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                Rule::new(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                Rule::new(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                Rule::new(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
            ],
        ),
        role("system:node", &[], node_role_rules()),
        role(
            "system:node-proxier",
            &[],
            vec![
                Rule::new(&["list", "watch"], &[""], &["endpoints", "services"]),
                Rule::new(READ, &[""], &["nodes"]),
                events.clone(),
                Rule::new(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        role(
            "system:kube-scheduler",
            &[],
            vec![
                events.clone(),
                Rule::new(&["create"], &["coordination.k8s.io"], &["leases"]),
                Rule::new(&["get", "update"], &["coordination.k8s.io"], &["leases"])
                    .names(&["kube-scheduler"]),
                Rule::new(&["create"], &[""], &["endpoints"]),
                Rule::new(&["get", "update"], &[""], &["endpoints"]).names(&["kube-scheduler"]),
                Rule::new(READ, &[""], &["nodes"]),
                Rule::new(&["delete", "get", "list", "watch"], &[""], &["pods"]),
                Rule::new(&["create"], &[""], &["bindings", "pods/binding"]),
                Rule::new(&["patch", "update"], &[""], &["pods/status"]),
                Rule::new(READ, &[""], &["replicationcontrollers", "services"]),
                Rule::new(READ, &["apps"], &["replicasets", "statefulsets"]),
                Rule::new(READ, &["policy"], &["poddisruptionbudgets"]),
                Rule::new(
                    READ,
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                Rule::new(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                Rule::new(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                Rule::new(READ, &["storage.k8s.io"], &["csinodes"]),
                Rule::new(READ, &[""], &["namespaces"]),
                Rule::new(
                    READ,
                    &["storage.k8s.io"],
                    &["csidrivers", "csistoragecapacities"],
                ),
                // skiff's scheduler orders and preempts by PriorityClass itself.
                Rule::new(READ, &["scheduling.k8s.io"], &["priorityclasses"]),
            ],
        ),
        role(
            "system:volume-scheduler",
            &[],
            vec![
                Rule::new(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumes"],
                ),
                Rule::new(READ, &["storage.k8s.io"], &["storageclasses"]),
                Rule::new(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        role(
            "system:kube-controller-manager",
            &[],
            vec![
                events.clone(),
                Rule::new(&["create"], &["coordination.k8s.io"], &["leases"]),
                Rule::new(&["get", "update"], &["coordination.k8s.io"], &["leases"])
                    .names(&["kube-controller-manager"]),
                Rule::new(&["create"], &[""], &["endpoints"]),
                Rule::new(&["get", "update"], &[""], &["endpoints"])
                    .names(&["kube-controller-manager"]),
                Rule::new(&["create"], &[""], &["secrets", "serviceaccounts"]),
                Rule::new(&["delete"], &[""], &["secrets"]),
                Rule::new(
                    &["get"],
                    &[""],
                    &["configmaps", "namespaces", "secrets", "serviceaccounts"],
                ),
                Rule::new(&["update"], &[""], &["secrets", "serviceaccounts"]),
                Rule::new(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                Rule::new(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                Rule::new(&["list", "watch"], &["*"], &["*"]),
                Rule::new(&["create"], &[""], &["serviceaccounts/token"]),
            ],
        ),
        role(
            NODE_NETWORK_ROLE,
            &[],
            vec![
                Rule::new(
                    READ,
                    &[""],
                    &["services", "endpoints", "namespaces", "pods"],
                ),
                Rule::new(READ, &["discovery.k8s.io"], &["endpointslices"]),
                Rule::new(READ, &["networking.k8s.io"], &["networkpolicies"]),
            ],
        ),
        role(
            CONTROLLERS_ROLE,
            &[],
            vec![
                // The garbage collector and the namespace controller, over every kind.
                Rule::new(
                    &[
                        "get",
                        "list",
                        "watch",
                        "patch",
                        "update",
                        "delete",
                        "deletecollection",
                    ],
                    &["*"],
                    &["*"],
                ),
                // What the workload, endpoints, service account, root CA and node
                // lifecycle controllers create.
                Rule::new(
                    &["create"],
                    &[""],
                    &[
                        "pods",
                        "pods/eviction",
                        "endpoints",
                        "serviceaccounts",
                        "configmaps",
                        "secrets",
                        "persistentvolumeclaims",
                        "events",
                        "serviceaccounts/token",
                    ],
                ),
                Rule::new(
                    &["create"],
                    &["apps"],
                    &["replicasets", "controllerrevisions"],
                ),
                Rule::new(&["create"], &["batch"], &["jobs"]),
                Rule::new(&["create"], &["discovery.k8s.io"], &["endpointslices"]),
                Rule::new(&["create"], &["events.k8s.io"], &["events"]),
                Rule::new(&["create"], &["coordination.k8s.io"], &["leases"]),
            ],
        ),
    ]
}

/// Every default ClusterRoleBinding.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            &[Subject::group("system:masters")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[Subject::group("system:authenticated")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[Subject::group("system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                Subject::group("system:authenticated"),
                Subject::group("system:unauthenticated"),
            ],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            &[Subject::group("system:monitoring")],
        ),
        binding("system:node", "system:node", &[]),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            &[Subject::user("system:kube-proxy")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[Subject::user("system:kube-scheduler")],
        ),
        binding(
            "system:volume-scheduler",
            "system:volume-scheduler",
            &[Subject::user("system:kube-scheduler")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[Subject::user("system:kube-controller-manager")],
        ),
        binding(
            CONTROLLERS_ROLE,
            CONTROLLERS_ROLE,
            &[Subject::user("system:kube-controller-manager")],
        ),
        binding(
            "system:skiff:node-proxier",
            "system:node-proxier",
            &[Subject::group("system:nodes")],
        ),
        binding(
            NODE_NETWORK_ROLE,
            NODE_NETWORK_ROLE,
            &[Subject::group("system:nodes")],
        ),
    ]
}

/// The object reconciliation makes of `existing` given the default `wanted`, or `None`
/// when it is left as it is (not annotated for autoupdate, or already complete).
pub fn reconcile(existing: &Value, wanted: &Value) -> Option<Value> {
    let auto = existing
        .pointer(&format!(
            "/metadata/annotations/{}",
            AUTOUPDATE.replace('/', "~1")
        ))
        .and_then(Value::as_str);
    if auto != Some("true") {
        return None;
    }
    let mut out = existing.clone();
    for field in ["labels", "annotations"] {
        if let Some(want) = wanted["metadata"][field].as_object() {
            for (k, v) in want {
                if out["metadata"][field].get(k).is_none() {
                    if !out["metadata"][field].is_object() {
                        out["metadata"][field] = json!({});
                    }
                    out["metadata"][field][k] = v.clone();
                }
            }
        }
    }
    let union = |out: &mut Value, field: &str| {
        let want = wanted[field].as_array().cloned().unwrap_or_default();
        if want.is_empty() {
            return;
        }
        if !out[field].is_array() {
            out[field] = Value::Array(Vec::new());
        }
        if let Some(have) = out[field].as_array_mut() {
            for w in want {
                if !have.contains(&w) {
                    have.push(w);
                }
            }
        }
    };
    if wanted.get("aggregationRule").is_some() {
        // Aggregated roles' rules are the aggregation's; only the selectors are unioned.
        let add = wanted["aggregationRule"]["clusterRoleSelectors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !out["aggregationRule"].is_object() {
            out["aggregationRule"] = json!({});
        }
        if !out["aggregationRule"]["clusterRoleSelectors"].is_array() {
            out["aggregationRule"]["clusterRoleSelectors"] = json!([]);
        }
        if let Some(have) = out["aggregationRule"]["clusterRoleSelectors"].as_array_mut() {
            for a in add {
                if !have.contains(&a) {
                    have.push(a);
                }
            }
        }
    } else if wanted.get("rules").is_some() {
        // Rules compare by meaning: decode both sides.
        let have: Vec<Rule> = serde_json::from_value(out["rules"].clone()).unwrap_or_default();
        let want: Vec<Rule> = serde_json::from_value(wanted["rules"].clone()).unwrap_or_default();
        let mut merged = have.clone();
        for w in want {
            if !merged.contains(&w) {
                merged.push(w);
            }
        }
        if merged != have {
            out["rules"] = rules_json(&merged);
        }
    }
    if wanted.get("subjects").is_some() {
        union(&mut out, "subjects");
    }
    (out != *existing).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(list: &[Value], name: &str) -> Value {
        list.iter()
            .find(|r| r["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn the_defaults_are_there() {
        let roles = cluster_roles();
        for name in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:basic-user",
            "system:discovery",
            "system:public-info-viewer",
            "system:node",
            "system:node-proxier",
            "system:kube-scheduler",
            "system:volume-scheduler",
            "system:kube-controller-manager",
            "system:monitoring",
            CONTROLLERS_ROLE,
        ] {
            let r = find(&roles, name);
            assert_eq!(
                r["metadata"]["labels"]["kubernetes.io/bootstrapping"],
                "rbac-defaults"
            );
            assert_eq!(r["metadata"]["annotations"][AUTOUPDATE], "true");
        }
        let view = find(&roles, "view");
        assert_eq!(
            view["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"][TO_VIEW],
            "true"
        );
        let bindings = cluster_role_bindings();
        let admin = find(&bindings, "cluster-admin");
        assert_eq!(admin["subjects"][0]["name"], "system:masters");
        let piv = find(&bindings, "system:public-info-viewer");
        assert_eq!(piv["subjects"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn reconciliation_adds_what_is_missing_to_autoupdated_objects_only() {
        let wanted = find(&cluster_roles(), "system:basic-user");
        let mut trimmed = wanted.clone();
        trimmed["rules"] = json!([{"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
                                  {"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["extra"]}]);
        let fixed = reconcile(&trimmed, &wanted).expect("updated");
        let rules = fixed["rules"].as_array().unwrap();
        assert_eq!(
            rules.len(),
            3,
            "kept the extra rule and added the missing one"
        );
        assert_eq!(reconcile(&fixed, &wanted), None, "idempotent");
        let mut frozen = trimmed.clone();
        frozen["metadata"]["annotations"][AUTOUPDATE] = "false".into();
        assert_eq!(reconcile(&frozen, &wanted), None);

        let b = find(&cluster_role_bindings(), "cluster-admin");
        let mut no_subjects = b.clone();
        no_subjects["subjects"] = json!([{"kind": "User", "apiGroup": GROUP, "name": "me"}]);
        let fixed = reconcile(&no_subjects, &b).expect("updated");
        assert_eq!(fixed["subjects"].as_array().map(Vec::len), Some(2));
    }
}
