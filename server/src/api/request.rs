//! Reading a request: which resource, namespace and name a path names, the query, and
//! the body with its size limit and format.

use super::status::{ApiError, ApiResult};
use crate::registry::{self, Resource};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::HashMap;

/// What a resource path names.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub resource: &'static Resource,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    /// The object name, if the path names one.
    pub name: Option<String>,
    /// The subresource (`status`, `scale`, ...), if any.
    pub subresource: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/<group>/<version>/...` resource paths. `Ok(None)` means
/// the path is not a resource path (discovery and the like); `Err` a resource path that
/// names nothing served.
pub fn parse_path(path: &str) -> ApiResult<Option<Target>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
        _ => return Ok(None),
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| ApiError::bad_request(format!("invalid path segment {s:?}")))
    };
    let lookup =
        |plural: &str| registry::find(group, version, plural).ok_or_else(ApiError::no_route);
    let namespaces_served = group.is_empty();
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(namespaces_served
                && (*plural == "status" || *plural == "finalize")
                && tail.is_empty()) =>
        {
            let resource = lookup(plural)?;
            if !resource.namespaced {
                return Err(ApiError::no_route());
            }
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(decode(name)?), None),
                [name, sub] => (Some(decode(name)?), Some(sub.to_string())),
                _ => return Err(ApiError::no_route()),
            };
            Target {
                resource,
                namespace: Some(decode(ns)?),
                name,
                subresource: sub,
            }
        }
        [plural, tail @ ..] => {
            let resource = lookup(plural)?;
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(decode(name)?), None),
                [name, sub] => (Some(decode(name)?), Some(sub.to_string())),
                // `nodes/NAME/proxy/PATH…`: the path on the node's API rides along.
                [name, "proxy", path @ ..] if *plural == "nodes" => (
                    Some(decode(name)?),
                    Some(format!("proxy/{}", path.join("/"))),
                ),
                _ => return Err(ApiError::no_route()),
            };
            if resource.namespaced && name.is_some() {
                // A namespaced object must be addressed through its namespace.
                return Err(ApiError::no_route());
            }
            Target {
                resource,
                namespace: None,
                name,
                subresource: sub,
            }
        }
        [] => return Ok(None),
    };
    if let Some(sub) = &target.subresource {
        let known = match sub.as_str() {
            "status" => target.resource.status,
            "scale" => target.resource.scale,
            "finalize" => target.resource.kind == "Namespace",
            "token" => target.resource.kind == "ServiceAccount" && target.resource.group.is_empty(),
            s if s == "proxy" || s.starts_with("proxy/") => target.resource.kind == "Node",
            "binding" | "eviction" | "log" | "exec" | "attach" | "portforward" => {
                target.resource.kind == "Pod" && target.resource.group.is_empty()
            }
            _ => false,
        };
        if !known {
            return Err(ApiError::no_route());
        }
    }
    Ok(Some(target))
}

/// The query string as a map (the last of repeated keys wins).
pub fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Reads a body of at most `limit` bytes.
pub async fn read_body(body: hyper::body::Incoming, limit: usize) -> ApiResult<Bytes> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(format!("reading request body: {e}"))),
    }
}

/// The media type of a Content-Type header, without parameters, lowercased.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes an object body (JSON, YAML or Kubernetes protobuf) for a resource of `kind`
/// into a JSON object. Errors read as upstream's decoder's.
pub fn decode_object(body: &[u8], content_type: Option<&str>, kind: &str) -> ApiResult<Value> {
    let media = media_type(content_type);
    let unrecognized = |detail: String| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {kind}): couldn't get version/kind; json parse error: {detail}"
        ))
    };
    let value: Value = match media.as_str() {
        "application/json" | "" | "*/*" => {
            serde_json::from_slice(body).map_err(|e| unrecognized(e.to_string()))?
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml_ng::from_slice(body)
            .map_err(|e| {
                ApiError::bad_request(format!("error converting YAML to JSON: yaml: {e}"))
            })?,
        "application/vnd.kubernetes.protobuf" => super::protobuf::decode(body)
            .map_err(|e| ApiError::bad_request(format!("decoding protobuf body: {e}")))?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !value.is_object() {
        return Err(unrecognized("the body is not a JSON object".into()));
    }
    Ok(value)
}

/// Checks the object's apiVersion and kind against the resource it is sent to.
/// Empty ones are filled in, as upstream's decoder defaults them.
pub fn check_type(resource: &Resource, obj: &mut Value) -> ApiResult<()> {
    let want_version = resource.api_version();
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !api_version.is_empty() && api_version != want_version {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({want_version})"
        )));
    }
    if !kind.is_empty() && kind != resource.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    obj["apiVersion"] = Value::String(want_version);
    obj["kind"] = Value::String(resource.kind.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_resources() {
        let t = parse_path("/api/v1/namespaces/default/configmaps/x")
            .unwrap()
            .unwrap();
        assert_eq!(t.resource.plural, "configmaps");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("x"));
        let t = parse_path("/api/v1/namespaces/kube-system")
            .unwrap()
            .unwrap();
        assert_eq!(t.resource.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        let t = parse_path("/api/v1/namespaces/kube-system/status")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.name.as_deref(), t.subresource.as_deref()),
            (Some("kube-system"), Some("status"))
        );
        let t = parse_path("/apis/apps/v1/namespaces/a/deployments/d/scale")
            .unwrap()
            .unwrap();
        assert_eq!(t.subresource.as_deref(), Some("scale"));
        let t = parse_path("/apis/apps/v1/deployments").unwrap().unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        assert!(parse_path("/api/v1/nothings").is_err());
        assert!(parse_path("/api/v1/namespaces/a/configmaps/x/scale").is_err());
        assert!(parse_path("/api/v1").unwrap().is_none());
        assert!(parse_path("/apis/apps/v1").unwrap().is_none());
    }
}
