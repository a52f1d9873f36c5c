//! The review APIs: create-only, never stored. `authorization.k8s.io/v1`
//! SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview and
//! SelfSubjectRulesReview; `authentication.k8s.io/v1` SelfSubjectReview. They back
//! `kubectl auth can-i` (also `--list`) and `kubectl auth whoami`.

use super::authz::{self, Attributes, Decision};
use super::User;
use crate::api::status::ApiError;
use crate::api::Api;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// One review kind as discovery lists it.
#[derive(Debug)]
pub struct Review {
    /// The API group.
    pub group: &'static str,
    /// The version.
    pub version: &'static str,
    /// The resource (plural).
    pub plural: &'static str,
    /// The kind.
    pub kind: &'static str,
    /// Whether it is created in a namespace.
    pub namespaced: bool,
}

/// Every review resource skiff serves.
pub static REVIEWS: &[Review] = &[
    Review {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "selfsubjectreviews",
        kind: "SelfSubjectReview",
        namespaced: false,
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "localsubjectaccessreviews",
        kind: "LocalSubjectAccessReview",
        namespaced: true,
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectrulesreviews",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "subjectaccessreviews",
        kind: "SubjectAccessReview",
        namespaced: false,
    },
];

/// The review a path names: the review and the namespace in the path.
pub fn find(path: &str) -> Option<(&'static Review, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, ns, plural) = match segs.as_slice() {
        ["apis", g, v, p] => (*g, *v, None, *p),
        ["apis", g, v, "namespaces", ns, p] => (*g, *v, Some(ns.to_string()), *p),
        _ => return None,
    };
    REVIEWS
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .filter(|r| r.namespaced == ns.is_some())
        .map(|r| (r, ns))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

fn s(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// The attributes a review's spec asks about, for `user`.
fn attributes<'a>(user: &'a User, spec: &Value) -> Result<Attributes<'a>, String> {
    if let Some(ra) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        return Ok(Attributes {
            verb: s(ra, "verb"),
            resource_request: true,
            namespace: s(ra, "namespace"),
            api_group: s(ra, "group"),
            api_version: s(ra, "version"),
            resource: s(ra, "resource"),
            subresource: s(ra, "subresource"),
            name: s(ra, "name"),
            ..Attributes::new(user)
        });
    }
    if let Some(na) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        return Ok(Attributes::non_resource(
            user,
            &s(na, "verb"),
            &s(na, "path"),
        ));
    }
    Err("exactly one of nonResourceAttributes or resourceAttributes must be specified".into())
}

fn invalid(kind: &str, field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        match kind {
            "SelfSubjectReview" => "authentication.k8s.io",
            _ => "authorization.k8s.io",
        },
        kind,
        "",
        vec![crate::api::status::Cause {
            reason: "FieldValueRequired".into(),
            message: message.into(),
            field: field.into(),
        }],
    )
}

fn access_status(api: &Api, a: &Attributes) -> Value {
    let (d, reason) = authz::authorize(api, a);
    let mut status = json!({"allowed": d == Decision::Allow});
    if d == Decision::Deny {
        status["denied"] = true.into();
    }
    if !reason.is_empty() {
        status["reason"] = reason.into();
    }
    status
}

fn user_info(u: &User) -> Value {
    let mut info = json!({"username": u.name});
    if let Some(uid) = &u.uid {
        info["uid"] = uid.clone().into();
    }
    if !u.groups.is_empty() {
        info["groups"] = json!(u.groups);
    }
    if !u.extra.is_empty() {
        info["extra"] = json!(u.extra);
    }
    info
}

/// Answers a review created by `user` (after impersonation); `body` is the JSON object.
pub fn create(
    api: &Api,
    review: &Review,
    namespace: Option<&str>,
    user: &User,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Value, ApiError> {
    let mut obj: Value = crate::api::request::decode_object(body, content_type, review.kind)?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {})",
            review.kind
        )));
    }
    obj["apiVersion"] = format!("{}/{}", review.group, review.version).into();
    obj["kind"] = review.kind.into();
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match review.kind {
        "SelfSubjectReview" => json!({"userInfo": user_info(user)}),
        "SelfSubjectAccessReview" => {
            let a = attributes(user, &spec).map_err(|m| invalid(review.kind, "spec", &m))?;
            access_status(api, &a)
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let name = s(&spec, "user");
            let groups = strings(&spec["groups"]);
            if name.is_empty() && groups.is_empty() {
                return Err(invalid(
                    review.kind,
                    "spec.user",
                    "at least one of user or group must be specified",
                ));
            }
            let mut extra = BTreeMap::new();
            if let Some(m) = spec["extra"].as_object() {
                for (k, v) in m {
                    extra.insert(k.clone(), strings(v));
                }
            }
            let subject = User {
                name,
                uid: Some(s(&spec, "uid")).filter(|u| !u.is_empty()),
                groups,
                extra,
            };
            let mut a =
                attributes(&subject, &spec).map_err(|m| invalid(review.kind, "spec", &m))?;
            if let Some(ns) = namespace {
                if !a.resource_request {
                    return Err(invalid(
                        review.kind,
                        "spec.nonResourceAttributes",
                        "disallowed on this kind of request",
                    ));
                }
                if a.namespace.is_empty() {
                    a.namespace = ns.to_string();
                    obj["spec"]["resourceAttributes"]["namespace"] = ns.into();
                } else if a.namespace != ns {
                    return Err(ApiError::bad_request(format!(
                        "spec.resourceAttributes.namespace must match namespace: {ns}"
                    )));
                }
            }
            access_status(api, &a)
        }
        "SelfSubjectRulesReview" => {
            let ns = s(&spec, "namespace");
            rules_status(api, user, &ns)
        }
        _ => return Err(ApiError::no_route()),
    };
    obj["status"] = status;
    Ok(obj)
}

/// What `user` may do in `namespace`, as SelfSubjectRulesReview's status.
fn rules_status(api: &Api, user: &User, namespace: &str) -> Value {
    let (rules, incomplete) = api
        .rbac
        .snapshot()
        .rules_for(&user.name, &user.groups, namespace);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        if !r.resources.is_empty() {
            let mut m = Map::new();
            m.insert("verbs".into(), json!(r.verbs));
            m.insert("apiGroups".into(), json!(r.api_groups));
            m.insert("resources".into(), json!(r.resources));
            if !r.resource_names.is_empty() {
                m.insert("resourceNames".into(), json!(r.resource_names));
            }
            resource_rules.push(Value::Object(m));
        }
        if !r.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    // The node authorizer's share, as upstream's rules resolver reports it for nodes.
    if super::node::node_name(user).is_some() {
        for r in super::policy::node_role_rules() {
            resource_rules.push(
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources}),
            );
        }
    }
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": incomplete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_paths() {
        let (r, ns) = find("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").unwrap();
        assert_eq!((r.kind, ns), ("SelfSubjectAccessReview", None));
        let (r, ns) =
            find("/apis/authorization.k8s.io/v1/namespaces/x/localsubjectaccessreviews").unwrap();
        assert_eq!(
            (r.kind, ns.as_deref()),
            ("LocalSubjectAccessReview", Some("x"))
        );
        assert!(
            find("/apis/authorization.k8s.io/v1/namespaces/x/selfsubjectaccessreviews").is_none()
        );
        let (r, _) = find("/apis/authentication.k8s.io/v1/selfsubjectreviews").unwrap();
        assert_eq!(r.kind, "SelfSubjectReview");
    }

    #[test]
    fn spec_attributes() {
        let u = User::new("a", vec![]);
        let a = attributes(
            &u,
            &json!({"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "d", "subresource": "log"}}),
        )
        .unwrap();
        assert!(a.resource_request);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.subresource.as_str()),
            ("get", "pods", "log")
        );
        let n = attributes(
            &u,
            &json!({"nonResourceAttributes": {"verb": "get", "path": "/x"}}),
        )
        .unwrap();
        assert!(!n.resource_request);
        assert!(attributes(&u, &json!({})).is_err());
        assert_eq!(user_info(&u)["groups"], json!(["system:authenticated"]));
    }
}
