//! Bad requests get upstream's `Status` (code, reason and message), through kubectl and
//! as raw HTTPS, and the server keeps serving afterwards.

use crate::harness::{Cases, Kubectl, Output, Server};
use crate::with_each_kubectl;
use serde_json::json;

with_each_kubectl!(bad_input_through_kubectl);

/// The request body limit (etcd's default request size, as upstream).
const LIMIT: usize = 3 * 1024 * 1024;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// How upstream's decoder reports a body that is not JSON, sent as JSON to `configmaps`.
const UNRECOGNIZED: &str =
    "the object provided is unrecognized (must be of type ConfigMap): couldn't get version/kind; json parse error: ";

fn configmap_json(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
        .to_string()
}

const NEGATIVE_REPLICAS: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: d
spec:
  replicas: -1
  selector:
    matchLabels:
      app: d
  template:
    metadata:
      labels:
        app: d
    spec:
      containers:
      - name: c
        image: nginx
";

/// A ConfigMap whose body is over the limit.
fn oversized_configmap() -> String {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "huge"},
        "data": {"blob": "x".repeat(LIMIT + 64 * 1024)},
    })
    .to_string()
}

#[track_caller]
fn assert_stderr_line(out: &Output, want: &str) {
    assert!(
        out.err().lines().any(|l| l == want),
        "expected the line {want:?}: {out:?}"
    );
}

#[track_caller]
fn assert_stderr_contains(out: &Output, want: &str) {
    assert!(out.err().contains(want), "expected {want:?}: {out:?}");
}

#[track_caller]
fn assert_still_serves(s: &Server, k: Kubectl) {
    let out = s
        .kubectl(k)
        .run(&["get", "namespace", "default", "-o", "name"]);
    assert_eq!(out.ok().trim(), "namespace/default", "{out:?}");
}

fn bad_input_through_kubectl(k: Kubectl) {
    let s = Server::start();
    let run = |args: &[&str]| s.kubectl(k).run(args);
    let mut cases = Cases::default();

    cases.case("malformed JSON sent as it is", || {
        s.write_file(
            "bad.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x""#,
        );
        let out = run(&["create", "--raw", CONFIGMAPS, "-f", "bad.json"]);
        assert_stderr_contains(
            &out,
            &format!("Error from server (BadRequest): {UNRECOGNIZED}"),
        );
        assert_still_serves(&s, k);
    });

    cases.case("malformed YAML", || {
        s.write_file(
            "bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n  labels: [a\n",
        );
        // kubectl refuses it before sending; sent raw (as JSON) the server refuses it.
        let out = run(&["create", "-f", "bad.yaml"]);
        assert_stderr_contains(&out, "error converting YAML to JSON");
        let out = run(&["create", "--raw", CONFIGMAPS, "-f", "bad.yaml"]);
        assert_stderr_contains(
            &out,
            &format!("Error from server (BadRequest): {UNRECOGNIZED}"),
        );
        assert_still_serves(&s, k);
    });

    cases.case("unknown kind", || {
        s.write_file(
            "unknown.yaml",
            "apiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: f\n",
        );
        let out = run(&["create", "-f", "unknown.yaml"]);
        assert_stderr_contains(&out, r#"no matches for kind "Frobnicator" in version "v1""#);
        let out = run(&["get", "--raw", "/api/v1/frobnicators"]);
        assert_stderr_line(
            &out,
            "Error from server (NotFound): the server could not find the requested resource",
        );
        let out = run(&["get", "frobnicators"]);
        assert_stderr_contains(
            &out,
            r#"the server doesn't have a resource type "frobnicators""#,
        );
    });

    cases.case("wrong apiVersion", || {
        s.write_file(
            "old.yaml",
            "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata:\n  name: d\nspec: {}\n",
        );
        let out = run(&["create", "-f", "old.yaml"]);
        assert_stderr_contains(
            &out,
            r#"no matches for kind "Deployment" in version "apps/v1beta1""#,
        );
    });

    cases.case("missing namespace", || {
        s.write_file(
            "nowhere.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: nope\n",
        );
        let out = run(&["create", "-f", "nowhere.yaml"]);
        assert_stderr_line(
            &out,
            r#"Error from server (NotFound): error when creating "nowhere.yaml": namespaces "nope" not found"#,
        );
        let out = run(&["get", "--raw", "/api/v1/namespaces/nope"]);
        assert_stderr_line(&out, r#"Error from server (NotFound): namespaces "nope" not found"#);
        // The server says the object is missing; kubectl itself then looks the
        // namespace up and reports that instead, against upstream too.
        let out = run(&["get", "--raw", "/api/v1/namespaces/nope/configmaps/c"]);
        assert_stderr_line(&out, r#"Error from server (NotFound): configmaps "c" not found"#);
        let out = run(&["get", "configmap", "c", "-n", "nope"]);
        assert_stderr_line(&out, r#"Error from server (NotFound): namespaces "nope" not found"#);
    });

    cases.case("invalid name", || {
        s.write_file(
            "badname.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
        );
        let out = run(&["create", "-f", "badname.yaml"]);
        assert_stderr_contains(
            &out,
            r#"The ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"#,
        );
    });

    cases.case("invalid field value", || {
        s.write_file(
            "badreplicas.yaml",
            NEGATIVE_REPLICAS,
        );
        let out = run(&["create", "-f", "badreplicas.yaml"]);
        assert_stderr_contains(
            &out,
            r#"The Deployment "d" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"#,
        );
        assert_still_serves(&s, k);
    });

    cases.case("a source range that is not a CIDR", || {
        s.write_file(
            "badrange.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: lb\nspec:\n  type: LoadBalancer\n  ports: [{port: 80}]\n  loadBalancerSourceRanges: [\"192.0.2.1\"]\n",
        );
        let out = run(&["create", "-f", "badrange.yaml"]);
        assert_stderr_contains(
            &out,
            r#"The Service "lb" is invalid: spec.loadBalancerSourceRanges[0]: Invalid value: "192.0.2.1": must be a valid CIDR value"#,
        );
        let out = run(&["get", "service", "lb"]);
        assert_stderr_line(&out, r#"Error from server (NotFound): services "lb" not found"#);
    });

    cases.case("body over the limit", || {
        s.write_file("huge.json", oversized_configmap());
        let out = run(&["create", "-f", "huge.json"]);
        assert_stderr_contains(&out, "Error from server (RequestEntityTooLarge): ");
        assert_stderr_contains(&out, &format!("Request entity too large: limit is {LIMIT}"));
        let out = run(&["create", "--raw", CONFIGMAPS, "-f", "huge.json"]);
        assert_stderr_contains(&out, "Error from server (RequestEntityTooLarge): ");
        assert_still_serves(&s, k);
    });

    cases.case("a good object still goes in", || {
        s.write_file("good.json", configmap_json("fine"));
        let out = run(&["create", "-f", "good.json"]);
        assert_eq!(out.ok().trim(), "configmap/fine created", "{out:?}");
    });
    cases.finish();
}

/// The same failures as raw HTTPS, checking the whole `Status`.
#[test]
fn bad_input_over_https() {
    let s = Server::start();
    let post = |path: &str, ct: &str, body: &str| s.raw("POST", path, Some(ct), body);
    let still_serves = || {
        let r = s.raw("GET", "/api/v1/namespaces/default", None, Vec::new());
        assert_eq!(r.status, 200, "{r:?}");
    };
    let mut cases = Cases::default();

    cases.case("malformed JSON", || {
        let r = post(
            CONFIGMAPS,
            "application/json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x""#,
        );
        let msg = r.assert_status(400, "BadRequest");
        assert!(msg.starts_with(UNRECOGNIZED), "{msg}");
        still_serves();
    });

    cases.case("JSON that is not an object", || {
        post(CONFIGMAPS, "application/json", "[1, 2]").assert_status(400, "BadRequest");
        still_serves();
    });

    cases.case("malformed YAML", || {
        let r = post(
            CONFIGMAPS,
            "application/yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n  labels: [a\n",
        );
        let msg = r.assert_status(400, "BadRequest");
        assert!(msg.contains("error converting YAML to JSON"), "{msg}");
        still_serves();
    });

    cases.case("well-formed YAML is accepted", || {
        let r = post(
            CONFIGMAPS,
            "application/yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n",
        );
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.json()["metadata"]["name"], "from-yaml");
    });

    cases.case("unknown resource", || {
        let r = post(
            "/api/v1/namespaces/default/frobnicators",
            "application/json",
            &configmap_json("f"),
        );
        let msg = r.assert_status(404, "NotFound");
        assert_eq!(msg, "the server could not find the requested resource");
    });

    cases.case("group version not served", || {
        post(
            "/apis/apps/v1beta1/namespaces/default/deployments",
            "application/json",
            "{}",
        )
        .assert_status(404, "NotFound");
    });

    cases.case("apiVersion in the body does not match the endpoint", || {
        let body = json!({"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "v2"}});
        post(CONFIGMAPS, "application/json", &body.to_string()).assert_status(400, "BadRequest");
        still_serves();
    });

    cases.case("missing namespace", || {
        let r = post(
            "/api/v1/namespaces/nope/configmaps",
            "application/json",
            &configmap_json("c"),
        );
        let msg = r.assert_status(404, "NotFound");
        assert_eq!(msg, r#"namespaces "nope" not found"#);
        let status = r.json();
        assert_eq!(status["details"]["name"], "nope", "{status}");
        assert_eq!(status["details"]["kind"], "namespaces", "{status}");
    });

    cases.case("invalid name", || {
        let r = post(CONFIGMAPS, "application/json", &configmap_json("Bad_Name"));
        let msg = r.assert_status(422, "Invalid");
        assert!(
            msg.starts_with(
                r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": "#
            ),
            "{msg}"
        );
        let status = r.json();
        assert_eq!(status["details"]["kind"], "ConfigMap", "{status}");
        assert_eq!(status["details"]["name"], "Bad_Name", "{status}");
        assert_eq!(
            status["details"]["causes"][0]["reason"], "FieldValueInvalid",
            "{status}"
        );
        assert_eq!(
            status["details"]["causes"][0]["field"], "metadata.name",
            "{status}"
        );
        still_serves();
    });

    cases.case("body over the limit", || {
        let r = post(CONFIGMAPS, "application/json", &oversized_configmap());
        let msg = r.assert_status(413, "RequestEntityTooLarge");
        assert_eq!(msg, format!("Request entity too large: limit is {LIMIT}"));
        still_serves();
    });

    cases.case("unsupported content type", || {
        let r = post(CONFIGMAPS, "text/plain", &configmap_json("t"));
        let msg = r.assert_status(415, "UnsupportedMediaType");
        assert!(
            msg.starts_with(
                "the body of the request was in an unknown format - accepted media types include: application/json"
            ),
            "{msg}"
        );
        still_serves();
    });

    cases.case("patch content types", || {
        let r = post(CONFIGMAPS, "application/json", &configmap_json("patchme"));
        assert_eq!(r.status, 201, "{r:?}");
        let path = format!("{CONFIGMAPS}/patchme");
        let body = r#"{"data":{"k":"w"}}"#;
        let r = s.raw("PATCH", &path, Some("application/json"), body);
        r.assert_status(415, "UnsupportedMediaType");
        let r = s.raw("PATCH", &path, Some("application/merge-patch+json"), body);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["data"]["k"], "w");
    });

    cases.case("still serving reads and writes", || {
        still_serves();
        let r = post(CONFIGMAPS, "application/json", &configmap_json("after"));
        assert_eq!(r.status, 201, "{r:?}");
        let r = s.raw("GET", &format!("{CONFIGMAPS}/after"), None, Vec::new());
        assert_eq!(r.status, 200, "{r:?}");
        let r = s.raw("GET", &format!("{CONFIGMAPS}/missing"), None, Vec::new());
        let msg = r.assert_status(404, "NotFound");
        assert_eq!(msg, r#"configmaps "missing" not found"#);
    });
    cases.finish();
}
