//! `serviceaccounts/token`: the TokenRequest API (`authentication.k8s.io/v1`).
//!
//! As upstream's token REST storage: the request is defaulted (`expirationSeconds`
//! 3600, the API audiences) and validated (10 minutes to 2^32 seconds, 422 otherwise),
//! the ServiceAccount must exist (404), a `boundObjectRef` must be a Pod, Secret or Node
//! that exists (404) with the uid it names, if it names one (409), and the answer is the
//! request with `status.token` and `status.expirationTimestamp`.

use super::objects::{format_time, meta_str};
use super::request::{decode_object, Target};
use super::status::{ApiError, ApiResult, Cause};
use super::{Api, Reply};
use crate::auth::authn::Issue;
use crate::auth::jwt::Ref;
use serde_json::{json, Value};

/// The group of TokenRequest.
const GROUP: &str = "authentication.k8s.io";
/// The lifetime of a token whose request names none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a token may be asked for.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest.
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// What a TokenRequest asks for, defaulted and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The audiences.
    pub audiences: Vec<String>,
    /// The lifetime.
    pub expiration_seconds: i64,
    /// `spec.boundObjectRef`: apiVersion, kind, name, uid.
    pub bound: Option<BoundRef>,
}

/// `spec.boundObjectRef`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundRef {
    /// The apiVersion (`v1` when empty).
    pub api_version: String,
    /// Pod, Secret or Node.
    pub kind: String,
    /// The name.
    pub name: String,
    /// The uid, if the request names one.
    pub uid: String,
}

/// Reads, defaults and validates a TokenRequest's spec. `api_audiences` are the default.
pub fn spec(req: &mut Value, api_audiences: &[String]) -> ApiResult<Spec> {
    let s = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    let audiences: Vec<String> = s
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| api_audiences.to_vec());
    let expiration_seconds = match s.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: spec.expirationSeconds: expected an integer, got {v}"
            ))
        })?,
    };
    let mut causes = Vec::new();
    if expiration_seconds < MIN_EXPIRATION_SECONDS {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {expiration_seconds}: may not specify a duration less than 10 minutes"
            ),
            field: "spec.expirationSeconds".into(),
        });
    }
    if expiration_seconds > MAX_EXPIRATION_SECONDS {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {expiration_seconds}: may not specify a duration larger than 2^32 seconds"
            ),
            field: "spec.expirationSeconds".into(),
        });
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(GROUP, "TokenRequest", "", causes));
    }
    let bound = s.get("boundObjectRef").filter(|b| b.is_object()).map(|b| {
        let field = |f: &str| b.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        BoundRef {
            api_version: field("apiVersion"),
            kind: field("kind"),
            name: field("name"),
            uid: field("uid"),
        }
    });
    // The answer carries the spec as it was used.
    req["spec"] = s;
    req["spec"]["audiences"] = json!(audiences);
    req["spec"]["expirationSeconds"] = json!(expiration_seconds);
    if req["spec"].get("boundObjectRef").is_none() {
        req["spec"]["boundObjectRef"] = Value::Null;
    }
    Ok(Spec {
        audiences,
        expiration_seconds,
        bound,
    })
}

fn stored(api: &Api, kind: &str, ns: Option<&str>, name: &str) -> ApiResult<Option<Value>> {
    let r = crate::registry::find_kind("", kind)
        .ok_or_else(|| ApiError::internal(format!("no resource for kind {kind}")))?;
    let Some(entry) = api.store.get(&r.key(ns, name)) else {
        return Ok(None);
    };
    serde_json::from_slice(&entry.value)
        .map(Some)
        .map_err(|e| ApiError::internal(format!("stored {kind} {name} is not JSON: {e}")))
}

fn reference(obj: &Value) -> Ref {
    Ref {
        name: meta_str(obj, "name").to_string(),
        uid: meta_str(obj, "uid").to_string(),
    }
}

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`.
pub fn create(api: &Api, t: &Target, body: &[u8], content_type: Option<&str>) -> ApiResult<Reply> {
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let mut req = decode_object(body, content_type, "TokenRequest")?;
    let api_version = req.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = req.get("kind").and_then(Value::as_str).unwrap_or("");
    if !matches!(api_version, "" | "authentication.k8s.io/v1")
        || !matches!(kind, "" | "TokenRequest")
    {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type TokenRequest): {api_version}, Kind={kind}"
        )));
    }
    req["apiVersion"] = "authentication.k8s.io/v1".into();
    req["kind"] = "TokenRequest".into();
    let req_name = meta_str(&req, "name").to_string();
    if !req_name.is_empty() && req_name != name {
        return Err(ApiError::bad_request(format!(
            "serviceaccount name {name:?} does not match tokenrequest name {req_name:?}"
        )));
    }
    let req_ns = meta_str(&req, "namespace").to_string();
    if !req_ns.is_empty() && req_ns != ns {
        return Err(ApiError::bad_request(format!(
            "serviceaccount namespace {ns:?} does not match tokenrequest namespace {req_ns:?}"
        )));
    }
    let spec = spec(&mut req, api.sa_tokens.audiences())?;
    let sa = stored(api, "ServiceAccount", Some(&ns), &name)?
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", &name))?;
    let mut issue = Issue {
        namespace: ns.clone(),
        service_account: reference(&sa),
        audiences: spec.audiences.clone(),
        expiration_seconds: spec.expiration_seconds,
        pod: None,
        secret: None,
        node: None,
    };
    if let Some(b) = &spec.bound {
        let group = b.api_version.split_once('/').map_or("", |(g, _)| g);
        let (plural, scoped) = match (group, b.kind.as_str()) {
            ("", "Pod") => ("pods", true),
            ("", "Secret") => ("secrets", true),
            ("", "Node") => ("nodes", false),
            _ => {
                let gvk = if b.api_version.is_empty() {
                    format!(", Kind={}", b.kind)
                } else {
                    format!("{}, Kind={}", b.api_version, b.kind)
                };
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {name:?} to object of type {gvk}"
                )));
            }
        };
        let obj = stored(api, &b.kind, scoped.then_some(ns.as_str()), &b.name)?
            .ok_or_else(|| ApiError::not_found("", plural, &b.name))?;
        let found = reference(&obj);
        if !b.uid.is_empty() && b.uid != found.uid {
            return Err(ApiError::conflict(
                "",
                &b.kind,
                &b.name,
                &format!(
                    "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                    b.uid
                ),
            ));
        }
        match b.kind.as_str() {
            "Pod" => {
                let node = obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !node.is_empty() {
                    // The pod's node rides along for information, when it exists.
                    if let Some(n) = stored(api, "Node", None, node)? {
                        issue.node = Some(reference(&n));
                    }
                }
                issue.pod = Some(found);
            }
            "Secret" => issue.secret = Some(found),
            _ => issue.node = Some(found),
        }
    }
    let now = jiff::Timestamp::now().as_second();
    let (token, exp) = api
        .sa_tokens
        .issue(&issue, now)
        .map_err(|e| ApiError::internal(format!("signing the token: {e}")))?;
    let expires = jiff::Timestamp::from_second(exp)
        .map_err(|e| ApiError::internal(format!("token expiry: {e}")))?;
    if !req.get("metadata").is_some_and(Value::is_object) {
        req["metadata"] = json!({});
    }
    if req["metadata"].get("creationTimestamp").is_none() {
        req["metadata"]["creationTimestamp"] = Value::Null;
    }
    req["status"] = json!({"token": token, "expirationTimestamp": format_time(expires)});
    tracing::debug!(namespace = %ns, serviceaccount = %name, bound = ?spec.bound.as_ref().map(|b| (&b.kind, &b.name)), "issued a service account token");
    Ok(Reply::json(201, &req))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_audiences() -> Vec<String> {
        vec![
            "https://kubernetes.default.svc.cluster.local".into(),
            "skiff".into(),
        ]
    }

    #[test]
    fn an_empty_request_gets_upstreams_defaults() {
        let mut req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"});
        let s = spec(&mut req, &api_audiences()).unwrap();
        assert_eq!(s.expiration_seconds, 3600);
        assert_eq!(s.audiences, api_audiences());
        assert_eq!(s.bound, None);
        assert_eq!(req["spec"]["expirationSeconds"], 3600);
        assert_eq!(req["spec"]["audiences"][1], "skiff");
    }

    #[test]
    fn lifetimes_outside_ten_minutes_to_two_to_the_32_are_invalid() {
        let mut req = json!({"spec": {"expirationSeconds": 599}});
        let e = spec(&mut req, &api_audiences()).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
        );
        let mut req = json!({"spec": {"expirationSeconds": (1i64 << 32) + 1}});
        assert_eq!(spec(&mut req, &api_audiences()).unwrap_err().code, 422);
        let mut req = json!({"spec": {"expirationSeconds": 600, "audiences": ["vault"],
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u"}}});
        let s = spec(&mut req, &api_audiences()).unwrap();
        assert_eq!(s.expiration_seconds, 600);
        assert_eq!(s.audiences, ["vault"]);
        assert_eq!(
            s.bound,
            Some(BoundRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "p".into(),
                uid: "u".into()
            })
        );
    }
}
