//! Authorization: what a request asks ([`Attributes`]), who decides ([`authorize`]:
//! `system:masters`, then the node authorizer, then RBAC, as upstream's
//! `--authorization-mode=Node,RBAC`), the 403 upstream answers, and impersonation.

use super::{node, User};
use crate::api::request::Target;
use crate::api::status::ApiError;
use crate::api::Api;
use http::{HeaderMap, Method};
use std::collections::{BTreeMap, HashMap};

/// The group whose members may do anything.
pub const MASTERS: &str = "system:masters";

/// An authorizer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied outright: no later authorizer is asked.
    Deny,
    /// This authorizer neither allows nor denies.
    NoOpinion,
}

/// What a request asks, as upstream's `authorizer.Attributes`.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// Who asks.
    pub user: &'a User,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// or another verb (`impersonate`, `bind`, `escalate`).
    pub verb: String,
    /// A resource request (else a non-resource path).
    pub resource_request: bool,
    /// The namespace; empty for cluster-scoped requests.
    pub namespace: String,
    /// The API group, `""` for core.
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The resource (plural).
    pub resource: String,
    /// The subresource, if any.
    pub subresource: String,
    /// The object's name, if the request names one.
    pub name: String,
    /// The path of a non-resource request.
    pub path: String,
}

impl<'a> Attributes<'a> {
    /// Empty attributes for `user`.
    pub fn new(user: &'a User) -> Attributes<'a> {
        Attributes {
            user,
            verb: String::new(),
            resource_request: false,
            namespace: String::new(),
            api_group: String::new(),
            api_version: String::new(),
            resource: String::new(),
            subresource: String::new(),
            name: String::new(),
            path: String::new(),
        }
    }

    /// A non-resource request for `path`.
    pub fn non_resource(user: &'a User, verb: &str, path: &str) -> Attributes<'a> {
        Attributes {
            verb: verb.into(),
            path: path.into(),
            ..Attributes::new(user)
        }
    }

    /// The attributes of a resource request.
    pub fn resource(
        user: &'a User,
        verb: &str,
        t: &Target,
        query: &HashMap<String, String>,
    ) -> Attributes<'a> {
        let mut name = t.name.clone().unwrap_or_default();
        // A list or watch narrowed to one name by `metadata.name=` is for that name, as
        // upstream's request info reads it.
        if name.is_empty() && matches!(verb, "list" | "watch") {
            if let Some(sel) = query.get("fieldSelector") {
                let parts: Vec<&str> = sel.split(',').collect();
                if let [one] = parts.as_slice() {
                    if let Some(n) = one
                        .strip_prefix("metadata.name==")
                        .or_else(|| one.strip_prefix("metadata.name="))
                    {
                        name = n.to_string();
                    }
                }
            }
        }
        let subresource = match t.subresource.as_deref() {
            Some(s) if s.starts_with("proxy") => "proxy".to_string(),
            Some(s) => s.to_string(),
            None => String::new(),
        };
        Attributes {
            user,
            verb: verb.into(),
            resource_request: true,
            namespace: t.namespace.clone().unwrap_or_default(),
            api_group: t.resource.group.into(),
            api_version: t.resource.version.into(),
            resource: t.resource.plural.into(),
            subresource,
            name,
            path: String::new(),
        }
    }

    /// The 403 upstream answers when this request is not allowed, with the authorizers'
    /// `reason` after the message when there is one.
    pub fn forbidden(&self, reason: &str) -> ApiError {
        let mut msg = if !self.resource_request {
            format!(
                "User {:?} cannot {} path {:?}",
                self.user.name, self.verb, self.path
            )
        } else {
            let resource = if self.subresource.is_empty() {
                self.resource.clone()
            } else {
                format!("{}/{}", self.resource, self.subresource)
            };
            if self.namespace.is_empty() {
                format!(
                    "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
                    self.user.name, self.verb, resource, self.api_group
                )
            } else {
                format!(
                    "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
                    self.user.name, self.verb, resource, self.api_group, self.namespace
                )
            }
        };
        if !reason.is_empty() {
            msg = format!("{msg}: {reason}");
        }
        ApiError::forbidden(&self.api_group, &self.resource, &self.name, msg)
    }
}

/// The verb of a resource request, from its method, whether it names an object, its
/// subresource and its query.
pub fn verb_of(
    method: &Method,
    t: &Target,
    query: &HashMap<String, String>,
    websocket: bool,
) -> String {
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let sub = t.subresource.as_deref().unwrap_or("");
    if matches!(sub, "exec" | "attach" | "portforward") && (websocket || *method == Method::POST) {
        // Upstream 1.31+ authorizes the WebSocket GET as `create`, like the POST.
        return "create".into();
    }
    let has_name = t.name.is_some();
    match *method {
        Method::GET | Method::HEAD if watching => "watch",
        Method::GET | Method::HEAD if has_name => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if has_name => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    }
    .to_string()
}

/// Decides one request: `system:masters` always, then the node authorizer, then RBAC.
/// Answers the decision and the reasons the authorizers gave (joined by newlines, as
/// upstream's union authorizer does).
pub fn authorize(api: &Api, a: &Attributes) -> (Decision, String) {
    if a.user.in_group(MASTERS) {
        return (Decision::Allow, String::new());
    }
    let mut reasons = Vec::new();
    let (d, r) = node::authorize(&api.store, a);
    if d != Decision::NoOpinion {
        return (d, r);
    }
    if !r.is_empty() {
        reasons.push(r);
    }
    let (d, r) = api.rbac.snapshot().authorize(a);
    if d != Decision::NoOpinion {
        return (d, r);
    }
    if !r.is_empty() {
        reasons.push(r);
    }
    (Decision::NoOpinion, reasons.join("\n"))
}

/// Authorizes `a`, or answers the 403.
pub fn check(api: &Api, a: &Attributes) -> Result<(), ApiError> {
    match authorize(api, a) {
        (Decision::Allow, _) => Ok(()),
        (_, reason) => {
            tracing::debug!(user = %a.user.name, verb = %a.verb, resource = %a.resource,
                subresource = %a.subresource, namespace = %a.namespace, name = %a.name,
                path = %a.path, %reason, "forbidden");
            Err(a.forbidden(&reason))
        }
    }
}

/// Go's `%q` of a list of strings, as upstream prints groups and rule fields.
fn go_quoted(list: &[String]) -> String {
    let inner: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", inner.join(" "))
}

/// RBAC's escalation check: a user may write a Role or ClusterRole only with rules they
/// hold themselves (or the `escalate` verb on it), and a binding only to a role whose
/// rules they hold (or the `bind` verb on that role). `obj` is the object as it would
/// be stored; `a` the write's attributes.
pub fn check_escalation(
    api: &Api,
    a: &Attributes,
    obj: &serde_json::Value,
) -> Result<(), ApiError> {
    use super::rbac::{self, Rule};
    if a.user.in_group(MASTERS) || a.api_group != rbac::GROUP {
        return Ok(());
    }
    let name = if a.name.is_empty() {
        obj.pointer("/metadata/name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    } else {
        a.name.clone()
    };
    let allowed = |verb: &str, resource: &str, target: &str, namespace: &str| {
        let check = Attributes {
            verb: verb.into(),
            resource: resource.into(),
            subresource: String::new(),
            name: target.into(),
            namespace: namespace.into(),
            ..a.clone()
        };
        authorize(api, &check).0 == Decision::Allow
    };
    let snapshot = api.rbac.snapshot();
    let wanted: Vec<Rule> = match a.resource.as_str() {
        "roles" | "clusterroles" => {
            if allowed("escalate", &a.resource, &name, &a.namespace) {
                return Ok(());
            }
            serde_json::from_value(obj.get("rules").cloned().unwrap_or_default())
                .unwrap_or_default()
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_ref: rbac::RoleRef =
                match serde_json::from_value(obj.get("roleRef").cloned().unwrap_or_default()) {
                    Ok(r) => r,
                    Err(_) => return Ok(()), // validation answers for a missing roleRef
                };
            let (resource, key) = if role_ref.kind == "Role" {
                ("roles", format!("{}/{}", a.namespace, role_ref.name))
            } else {
                ("clusterroles", role_ref.name.clone())
            };
            if allowed("bind", resource, &role_ref.name, &a.namespace) {
                return Ok(());
            }
            let role = if role_ref.kind == "Role" {
                snapshot.roles.get(&key)
            } else {
                snapshot.cluster_roles.get(&key)
            };
            match role {
                Some(r) => r.rules.to_vec(),
                None => {
                    return Err(ApiError::forbidden(
                        &a.api_group,
                        &a.resource,
                        &name,
                        format!(
                            "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held: {} {:?} not found",
                            a.user.name,
                            go_quoted(&a.user.groups),
                            if role_ref.kind == "Role" { "role.rbac.authorization.k8s.io" } else { "clusterrole.rbac.authorization.k8s.io" },
                            role_ref.name
                        ),
                    ))
                }
            }
        }
        _ => return Ok(()),
    };
    let (owner, _) = snapshot.rules_for(&a.user.name, &a.user.groups, &a.namespace);
    let missing: Vec<String> = wanted
        .iter()
        .flat_map(|r| rbac::uncovered(&owner, r))
        .map(|r| rbac::compact_string(&r))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::forbidden(
        &a.api_group,
        &a.resource,
        &name,
        format!(
            "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
            a.user.name,
            go_quoted(&a.user.groups),
            missing.join("\n")
        ),
    ))
}

/// The `Impersonate-*` headers of a request.
const IMPERSONATE_USER: &str = "impersonate-user";
const IMPERSONATE_UID: &str = "impersonate-uid";
const IMPERSONATE_GROUP: &str = "impersonate-group";
const IMPERSONATE_EXTRA: &str = "impersonate-extra-";

/// The prefix of service account user names.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The user a request acts as: `user`, or whom its `Impersonate-*` headers name once
/// `user` is allowed to impersonate each of them (upstream's impersonation filter).
pub fn impersonate(api: &Api, user: &User, headers: &HeaderMap) -> Result<Option<User>, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(String::from)
            .collect()
    };
    let names = values(IMPERSONATE_USER);
    let groups = values(IMPERSONATE_GROUP);
    let uids = values(IMPERSONATE_UID);
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix(IMPERSONATE_EXTRA) {
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .into_owned();
            if let Ok(v) = v.to_str() {
                extra.entry(key).or_default().push(v.to_string());
            }
        }
    }
    if names.is_empty() {
        if groups.is_empty() && uids.is_empty() && extra.is_empty() {
            return Ok(None);
        }
        return Err(ApiError::internal(
            "requested impersonation of groups, uid or extra without a user",
        ));
    }
    let name = names[0].clone();
    let check = |attrs: Attributes| -> Result<(), ApiError> {
        match authorize(api, &attrs) {
            (Decision::Allow, _) => Ok(()),
            (_, reason) => Err(impersonation_forbidden(&attrs, &reason)),
        }
    };
    let mut imp = Attributes::new(user);
    imp.verb = "impersonate".into();
    imp.resource_request = true;
    let mut impersonated_groups: Vec<String> = Vec::new();
    if let Some(rest) = name.strip_prefix(SERVICE_ACCOUNT_PREFIX) {
        let (ns, sa) = rest.split_once(':').unwrap_or(("", rest));
        check(Attributes {
            namespace: ns.into(),
            resource: "serviceaccounts".into(),
            name: sa.into(),
            ..imp.clone()
        })?;
        if groups.is_empty() {
            impersonated_groups.push("system:serviceaccounts".into());
            impersonated_groups.push(format!("system:serviceaccounts:{ns}"));
        }
    } else {
        check(Attributes {
            resource: "users".into(),
            name: name.clone(),
            ..imp.clone()
        })?;
    }
    for g in &groups {
        check(Attributes {
            resource: "groups".into(),
            name: g.clone(),
            ..imp.clone()
        })?;
        impersonated_groups.push(g.clone());
    }
    for uid in &uids {
        check(Attributes {
            api_group: "authentication.k8s.io".into(),
            resource: "uids".into(),
            name: uid.clone(),
            ..imp.clone()
        })?;
    }
    for (k, vs) in &extra {
        for v in vs {
            check(Attributes {
                api_group: "authentication.k8s.io".into(),
                resource: "userextras".into(),
                subresource: k.clone(),
                name: v.clone(),
                ..imp.clone()
            })?;
        }
    }
    // Upstream adds system:authenticated unless the impersonated user is anonymous.
    if name == "system:anonymous" {
        if !impersonated_groups
            .iter()
            .any(|g| g == "system:unauthenticated")
        {
            impersonated_groups.push("system:unauthenticated".into());
        }
    } else if !impersonated_groups
        .iter()
        .any(|g| g == super::AUTHENTICATED)
    {
        impersonated_groups.push(super::AUTHENTICATED.into());
    }
    Ok(Some(User {
        name,
        uid: uids.into_iter().next(),
        groups: impersonated_groups,
        extra,
    }))
}

/// Upstream's impersonation 403: `<resource> "<name>" is forbidden: User "<u>" cannot
/// impersonate resource "<resource>" in API group "<g>" ...`.
fn impersonation_forbidden(a: &Attributes, reason: &str) -> ApiError {
    a.forbidden(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    fn target(plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>) -> Target {
        Target {
            resource: registry::find("", "v1", plural).unwrap(),
            namespace: ns.map(String::from),
            name: name.map(String::from),
            subresource: sub.map(String::from),
        }
    }

    #[test]
    fn forbidden_messages_are_upstreams() {
        let alice = User::new("alice", vec![]);
        let q = HashMap::new();
        let t = target("pods", Some("default"), Some("x"), None);
        let a = Attributes::resource(&alice, "get", &t, &q);
        let e = a.forbidden("");
        assert_eq!(e.code, 403);
        assert_eq!(e.reason, "Forbidden");
        assert_eq!(
            e.message,
            "pods \"x\" is forbidden: User \"alice\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let status = e.to_status();
        assert_eq!(
            status["details"],
            serde_json::json!({"name": "x", "kind": "pods"})
        );
        let list = Attributes::resource(
            &alice,
            "list",
            &target("pods", Some("default"), None, None),
            &q,
        );
        assert_eq!(
            list.forbidden("").message,
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let exec = Attributes::resource(
            &alice,
            "create",
            &target("pods", Some("d"), Some("p"), Some("exec")),
            &q,
        );
        assert_eq!(
            exec.forbidden("").message,
            "pods \"p\" is forbidden: User \"alice\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"d\""
        );
        let nodes = Attributes::resource(&alice, "list", &target("nodes", None, None, None), &q);
        assert_eq!(
            nodes.forbidden("").message,
            "nodes is forbidden: User \"alice\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
        let path = Attributes::non_resource(&alice, "get", "/foo");
        let e = path.forbidden("");
        assert_eq!(
            e.message,
            "forbidden: User \"alice\" cannot get path \"/foo\""
        );
        let node = Attributes::resource(
            &alice,
            "get",
            &target("secrets", Some("d"), Some("s"), None),
            &q,
        );
        assert_eq!(
            node.forbidden("no relationship found between node 'a' and this object").message,
            "secrets \"s\" is forbidden: User \"alice\" cannot get resource \"secrets\" in API group \"\" in the namespace \"d\": no relationship found between node 'a' and this object"
        );
    }

    #[test]
    fn verbs_follow_the_method() {
        let q = HashMap::new();
        let one = target("pods", Some("d"), Some("p"), None);
        let all = target("pods", Some("d"), None, None);
        assert_eq!(verb_of(&Method::GET, &one, &q, false), "get");
        assert_eq!(verb_of(&Method::GET, &all, &q, false), "list");
        let w = HashMap::from([("watch".to_string(), "true".to_string())]);
        assert_eq!(verb_of(&Method::GET, &all, &w, false), "watch");
        assert_eq!(verb_of(&Method::GET, &one, &w, false), "watch");
        assert_eq!(verb_of(&Method::POST, &all, &q, false), "create");
        assert_eq!(verb_of(&Method::PUT, &one, &q, false), "update");
        assert_eq!(verb_of(&Method::PATCH, &one, &q, false), "patch");
        assert_eq!(verb_of(&Method::DELETE, &one, &q, false), "delete");
        assert_eq!(
            verb_of(&Method::DELETE, &all, &q, false),
            "deletecollection"
        );
        let exec = target("pods", Some("d"), Some("p"), Some("exec"));
        assert_eq!(verb_of(&Method::GET, &exec, &q, true), "create");
        assert_eq!(verb_of(&Method::POST, &exec, &q, false), "create");
        let log = target("pods", Some("d"), Some("p"), Some("log"));
        assert_eq!(verb_of(&Method::GET, &log, &q, false), "get");
    }

    #[test]
    fn a_list_by_metadata_name_is_for_that_name() {
        let alice = User::new("alice", vec![]);
        let q = HashMap::from([("fieldSelector".to_string(), "metadata.name=cm1".to_string())]);
        let a = Attributes::resource(
            &alice,
            "list",
            &target("configmaps", Some("d"), None, None),
            &q,
        );
        assert_eq!(a.name, "cm1");
    }
}
