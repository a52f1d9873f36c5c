//! kubectl against the server: the everyday commands, checked line by line against what
//! upstream Kubernetes prints. Each test runs once with each kubectl.

use crate::harness::{normalized_lines, wait_until, Cases, Kubectl, Output, Server};
use crate::with_each_kubectl;
use serde_json::{json, Value};
use std::time::Duration;

with_each_kubectl!(
    typed_create_get_describe_delete,
    create_from_file,
    apply_created_unchanged_configured,
    edit_with_kube_editor,
    label_annotate_patch_scale,
    get_watch_sees_changes,
    output_formats,
    discovery_and_explain,
    delete_all,
    get_all_shows_kubernetes_service,
    get_pods_columns,
);

const WAIT: Duration = Duration::from_secs(30);

/// Runs kubectl with `args`, split on whitespace (for arguments without spaces).
fn kc(s: &Server, k: Kubectl, args: &str) -> Output {
    let args: Vec<&str> = args.split_whitespace().collect();
    s.kubectl(k).run(&args)
}

/// Asserts a table's header and returns its rows (whitespace collapsed).
#[track_caller]
fn table(out: &Output, header: &str) -> Vec<String> {
    let lines = normalized_lines(out.ok());
    assert_eq!(
        lines.first().map(String::as_str),
        Some(header),
        "table header of {out:?}"
    );
    lines[1..].to_vec()
}

/// Asserts the single table row starts with `prefix` (the columns before AGE).
#[track_caller]
fn assert_row(out: &Output, header: &str, prefix: &str) {
    let rows = table(out, header);
    assert_eq!(rows.len(), 1, "one row expected in {out:?}");
    assert!(
        rows[0].starts_with(&format!("{prefix} ")),
        "row {:?} should start with {prefix:?}",
        rows[0]
    );
}

/// Runs `args` until its output has `line` (whitespace-normalized), as controllers
/// converge; returns that output.
#[track_caller]
fn wait_for_line(s: &Server, k: Kubectl, args: &str, line: &str) -> Output {
    wait_until(Duration::from_secs(30), line, || {
        let out = kc(s, k, args);
        if normalized_lines(out.ok()).iter().any(|l| l == line) {
            Ok(out)
        } else {
            Err(out.ok().to_string())
        }
    })
}

/// Asserts kubectl reported `<kind> "<name>" deleted` (1.37 appends the namespace).
#[track_caller]
fn assert_deleted(out: &Output, kind: &str, name: &str) {
    let lines = normalized_lines(out.ok());
    let want = format!("{kind} \"{name}\" deleted");
    assert!(
        lines.len() == 1 && (lines[0] == want || lines[0].starts_with(&format!("{want} from "))),
        "expected {want:?}: {out:?}"
    );
}

/// Asserts kubectl failed with the server's NotFound for `<resource> "<name>"`.
#[track_caller]
fn assert_not_found(out: &Output, resource: &str, name: &str) {
    let want = format!("Error from server (NotFound): {resource} \"{name}\" not found");
    assert!(
        out.err().lines().any(|l| l == want),
        "expected {want:?}: {out:?}"
    );
}

fn jsonpath(s: &Server, k: Kubectl, what: &str, path: &str) -> String {
    let mut args: Vec<&str> = what.split_whitespace().collect();
    let expr = format!("jsonpath={path}");
    args.extend(["-o", &expr]);
    s.kubectl(k).run(&args).ok().to_string()
}

fn get_json(s: &Server, k: Kubectl, what: &str) -> Value {
    let mut args: Vec<&str> = what.split_whitespace().collect();
    args.extend(["-o", "json"]);
    s.kubectl(k).run(&args).json()
}

/// `kubectl create <thing>` for each kind, then get, describe and delete. The kinds are
/// independent cases: one failing does not hide the others.
fn typed_create_get_describe_delete(k: Kubectl) {
    let s = Server::start();
    let mut cases = Cases::default();

    cases.case("namespace", || {
        kc(&s, k, "create namespace typed").assert_lines(&["namespace/typed created"]);
        assert_row(
            &kc(&s, k, "get namespace typed"),
            "NAME STATUS AGE",
            "typed Active",
        );
        let d = kc(&s, k, "describe namespace typed");
        d.assert_has_line("Name: typed");
        d.assert_has_line("Status: Active");
        assert_deleted(&kc(&s, k, "delete namespace typed"), "namespace", "typed");
        wait_until(WAIT, "the namespace to be gone", || {
            let out = kc(&s, k, "get namespace typed");
            if out.status.success() {
                return Err(out.stdout);
            }
            assert_not_found(&out, "namespaces", "typed");
            Ok(())
        });
    });

    cases.case("configmap", || {
        kc(
            &s,
            k,
            "create configmap settings --from-literal=color=blue --from-literal=size=10",
        )
        .assert_lines(&["configmap/settings created"]);
        assert_row(
            &kc(&s, k, "get configmap settings"),
            "NAME DATA AGE",
            "settings 2",
        );
        assert_eq!(
            get_json(&s, k, "get configmap settings")["data"],
            json!({"color": "blue", "size": "10"})
        );
        let d = kc(&s, k, "describe configmap settings");
        d.assert_has_line("Name: settings");
        d.assert_has_line("Namespace: default");
        d.assert_has_line("color:");
        d.assert_has_line("blue");
        assert_deleted(
            &kc(&s, k, "delete configmap settings"),
            "configmap",
            "settings",
        );
        assert_not_found(
            &kc(&s, k, "get configmap settings"),
            "configmaps",
            "settings",
        );
    });

    cases.case("secret", || {
        kc(
            &s,
            k,
            "create secret generic creds --from-literal=password=hunter2",
        )
        .assert_lines(&["secret/creds created"]);
        assert_row(
            &kc(&s, k, "get secret creds"),
            "NAME TYPE DATA AGE",
            "creds Opaque 1",
        );
        assert_eq!(
            jsonpath(&s, k, "get secret creds", "{.data.password}"),
            "aHVudGVyMg=="
        );
        let d = kc(&s, k, "describe secret creds");
        d.assert_has_line("Type: Opaque");
        d.assert_has_line("password: 7 bytes");
        assert_deleted(&kc(&s, k, "delete secret creds"), "secret", "creds");
        assert_not_found(&kc(&s, k, "get secret creds"), "secrets", "creds");
    });

    cases.case("deployment", || {
        kc(
            &s,
            k,
            "create deployment web --image=nginx:1.27 --replicas=2 --port=80",
        )
        .assert_lines(&["deployment.apps/web created"]);
        // The controllers create both pods; with no nodes none becomes available.
        let converged = "Replicas: 2 desired | 2 updated | 2 total | 0 available | 2 unavailable";
        let d = wait_for_line(&s, k, "describe deployment web", converged);
        d.assert_has_line("Name: web");
        d.assert_has_line("Selector: app=web");
        assert_row(
            &kc(&s, k, "get deployment web"),
            "NAME READY UP-TO-DATE AVAILABLE AGE",
            "web 0/2 2 0",
        );
        d.assert_has_line("StrategyType: RollingUpdate");
        d.assert_has_line("Image: nginx:1.27");
        d.assert_has_line("Port: 80/TCP");
        assert_deleted(
            &kc(&s, k, "delete deployment web"),
            "deployment.apps",
            "web",
        );
        assert_not_found(&kc(&s, k, "get deployment web"), "deployments.apps", "web");
    });

    cases.case("service", || {
        kc(&s, k, "create service clusterip web --tcp=80:8080")
            .assert_lines(&["service/web created"]);
        let rows = table(
            &kc(&s, k, "get service web"),
            "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE",
        );
        let cols: Vec<&str> = rows[0].split(' ').collect();
        assert_eq!(
            (cols[0], cols[1], cols[3], cols[4]),
            ("web", "ClusterIP", "<none>", "80/TCP"),
            "{rows:?}"
        );
        let ip: std::net::Ipv4Addr = cols[2].parse().expect("a cluster IP");
        assert_eq!(ip.octets()[..2], [10, 43], "in the service CIDR: {ip}");
        let d = kc(&s, k, "describe service web");
        d.assert_has_line("Type: ClusterIP");
        d.assert_has_line("Selector: app=web");
        d.assert_has_line(&format!("IP: {ip}"));
        d.assert_has_line("Port: 80-8080 80/TCP");
        d.assert_has_line("TargetPort: 8080/TCP");
        assert_deleted(&kc(&s, k, "delete service web"), "service", "web");
        assert_not_found(&kc(&s, k, "get service web"), "services", "web");
    });
    cases.finish();
}

const FILES_NS: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: files
";

const FILES_APP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: files
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: files
stringData:
  token: s3cr3t
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: files
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: files
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 80
";

/// `kubectl create -f` of single and multi-document files, get/describe `-f`, and
/// delete `-f`.
fn create_from_file(k: Kubectl) {
    let s = Server::start();
    s.write_file("ns.yaml", FILES_NS);
    s.write_file("app.yaml", FILES_APP);
    kc(&s, k, "create -f ns.yaml").assert_lines(&["namespace/files created"]);
    kc(&s, k, "create -f app.yaml").assert_lines(&[
        "configmap/settings created",
        "secret/creds created",
        "deployment.apps/web created",
        "service/web created",
    ]);
    kc(&s, k, "get -f app.yaml -o name").assert_lines(&[
        "configmap/settings",
        "secret/creds",
        "deployment.apps/web",
        "service/web",
    ]);
    let mut cases = Cases::default();
    cases.case("secret stringData becomes data", || {
        let secret = get_json(&s, k, "get secret creds -n files");
        assert_eq!(secret["data"], json!({"token": "czNjcjN0"}), "{secret}");
        assert_eq!(secret["type"], "Opaque", "{secret}");
        assert!(secret.get("stringData").is_none(), "{secret}");
    });
    cases.case("service defaults", || {
        let svc = get_json(&s, k, "get service web -n files");
        assert_eq!(svc["spec"]["type"], "ClusterIP", "{svc}");
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP", "{svc}");
        assert_eq!(svc["spec"]["sessionAffinity"], "None", "{svc}");
    });
    cases.case("describe -f", || {
        let d = wait_for_line(
            &s,
            k,
            "describe -f app.yaml",
            "Replicas: 2 desired | 2 updated | 2 total | 0 available | 2 unavailable",
        );
        d.assert_has_line("Name: settings");
        d.assert_has_line("Name: creds");
        d.assert_has_line("TargetPort: 80/TCP");
    });

    let again = kc(&s, k, "create -f app.yaml");
    let stderr = again.err();
    for (resource, name) in [
        ("configmaps", "settings"),
        ("secrets", "creds"),
        ("deployments.apps", "web"),
        ("services", "web"),
    ] {
        let want = format!(
            "Error from server (AlreadyExists): error when creating \"app.yaml\": {resource} \"{name}\" already exists"
        );
        assert!(
            stderr.lines().any(|l| l == want),
            "expected {want:?}: {again:?}"
        );
    }

    let out = kc(&s, k, "delete -f app.yaml");
    let lines = normalized_lines(out.ok());
    for (i, want) in [
        "configmap \"settings\" deleted",
        "secret \"creds\" deleted",
        "deployment.apps \"web\" deleted",
        "service \"web\" deleted",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            lines.get(i).is_some_and(|l| l.starts_with(want)),
            "line {i} should be {want:?}: {out:?}"
        );
    }
    let out = kc(&s, k, "get -f app.yaml");
    let gone = out.err().to_string();
    assert_deleted(&kc(&s, k, "delete -f ns.yaml"), "namespace", "files");
    wait_until(WAIT, "the namespace to be gone", || {
        let out = kc(&s, k, "get -f ns.yaml");
        if out.status.success() {
            return Err(out.stdout);
        }
        assert_not_found(&out, "namespaces", "files");
        Ok(())
    });
    assert!(
        gone.lines()
            .any(|l| l == "Error from server (NotFound): configmaps \"settings\" not found"),
        "{gone}"
    );
    cases.finish();
}

const APPLY_V1: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: applied
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
  namespace: applied
data:
  mode: fast
  retries: \"3\"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: applied
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
      - name: sidecar
        image: busybox:1.36
        args: [\"sleep\", \"infinity\"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: applied
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
";

/// `kubectl apply`: created, then unchanged, then configured, with three-way merges.
fn apply_created_unchanged_configured(k: Kubectl) {
    let s = Server::start();
    s.write_file("v1.yaml", APPLY_V1);
    kc(&s, k, "apply -f v1.yaml").assert_lines(&[
        "namespace/applied created",
        "configmap/app-config created",
        "deployment.apps/web created",
        "service/web created",
    ]);
    kc(&s, k, "apply -f v1.yaml").assert_lines(&[
        "namespace/applied unchanged",
        "configmap/app-config unchanged",
        "deployment.apps/web unchanged",
        "service/web unchanged",
    ]);
    // From stdin too.
    s.kubectl(k)
        .stdin(APPLY_V1)
        .run(&["apply", "-f", "-"])
        .assert_lines(&[
            "namespace/applied unchanged",
            "configmap/app-config unchanged",
            "deployment.apps/web unchanged",
            "service/web unchanged",
        ]);

    // A change made outside the manifest survives apply (it is not in last-applied).
    kc(&s, k, "label configmap app-config -n applied owner=ops")
        .assert_lines(&["configmap/app-config labeled"]);

    let v2 = APPLY_V1
        .replace("  retries: \"3\"\n", "")
        .replace("mode: fast", "mode: safe")
        .replace("replicas: 2", "replicas: 3")
        .replace("image: busybox:1.36", "image: busybox:1.37");
    s.write_file("v2.yaml", &v2);
    kc(&s, k, "apply -f v2.yaml").assert_lines(&[
        "namespace/applied unchanged",
        "configmap/app-config configured",
        "deployment.apps/web configured",
        "service/web unchanged",
    ]);
    let cm = get_json(&s, k, "get configmap app-config -n applied");
    assert_eq!(
        cm["data"],
        json!({"mode": "safe"}),
        "retries was removed: {cm}"
    );
    assert_eq!(cm["metadata"]["labels"]["owner"], "ops", "{cm}");
    let last: Value = serde_json::from_str(
        cm["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .expect("the last-applied annotation"),
    )
    .expect("last-applied is JSON");
    assert_eq!(last["data"], json!({"mode": "safe"}), "{last}");
    let deploy = get_json(&s, k, "get deployment web -n applied");
    assert_eq!(deploy["spec"]["replicas"], 3, "{deploy}");
    let containers = &deploy["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        (
            &containers[0]["name"],
            &containers[0]["image"],
            &containers[1]["name"],
            &containers[1]["image"]
        ),
        (
            &json!("web"),
            &json!("nginx:1.27"),
            &json!("sidecar"),
            &json!("busybox:1.37")
        ),
        "{containers}"
    );
    assert_eq!(
        containers[0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    kc(&s, k, "apply -f v2.yaml").assert_lines(&[
        "namespace/applied unchanged",
        "configmap/app-config unchanged",
        "deployment.apps/web unchanged",
        "service/web unchanged",
    ]);
}

/// `kubectl edit` with a scripted editor.
fn edit_with_kube_editor(k: Kubectl) {
    let s = Server::start();
    s.write_file(
        "objects.yaml",
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: edit-me
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
",
    );
    kc(&s, k, "create -f objects.yaml")
        .assert_lines(&["configmap/edit-me created", "deployment.apps/web created"]);
    let editor = s.write_file(
        "editor.sh",
        "#!/bin/sh\nset -e\nsed -i -e 's/color: blue/color: green/' -e 's/^  replicas: 2$/  replicas: 4/' \"$1\"\n",
    );
    make_executable(&editor);

    s.kubectl(k)
        .env("KUBE_EDITOR", &editor)
        .run(&["edit", "configmap", "edit-me"])
        .assert_lines(&["configmap/edit-me edited"]);
    assert_eq!(
        jsonpath(&s, k, "get configmap edit-me", "{.data.color}"),
        "green"
    );

    s.kubectl(k)
        .env("KUBE_EDITOR", &editor)
        .run(&["edit", "deployment/web"])
        .assert_lines(&["deployment.apps/web edited"]);
    assert_eq!(
        jsonpath(&s, k, "get deployment web", "{.spec.replicas}"),
        "4"
    );
    assert_eq!(
        jsonpath(
            &s,
            k,
            "get deployment web",
            "{.spec.template.spec.containers[0].image}"
        ),
        "nginx:1.27"
    );

    // An editor that changes nothing cancels the edit.
    let out = s
        .kubectl(k)
        .env("KUBE_EDITOR", "true")
        .run(&["edit", "configmap", "edit-me"]);
    out.ok();
    assert!(
        out.stderr.contains("Edit cancelled, no changes made."),
        "{out:?}"
    );
}

fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("making the editor executable");
}

const TWO_CONTAINERS: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: tags
data:
  a: \"1\"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: jp
data:
  b: \"2\"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
          name: http
      - name: side
        image: busybox:1.36
        ports:
        - containerPort: 9000
          name: metrics
";

fn container_summary(s: &Server, k: Kubectl) -> Vec<(String, String, Vec<i64>)> {
    let d = get_json(s, k, "get deployment web");
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("containers in {d}"))
        .iter()
        .map(|c| {
            let mut ports: Vec<i64> = c["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| p["containerPort"].as_i64().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            ports.sort();
            (
                c["name"].as_str().unwrap().to_string(),
                c["image"].as_str().unwrap().to_string(),
                ports,
            )
        })
        .collect()
}

fn summary(items: &[(&str, &str, &[i64])]) -> Vec<(String, String, Vec<i64>)> {
    items
        .iter()
        .map(|(n, i, p)| (n.to_string(), i.to_string(), p.to_vec()))
        .collect()
}

/// label, annotate, the three patch types, and scale.
fn label_annotate_patch_scale(k: Kubectl) {
    let s = Server::start();
    s.write_file("objects.yaml", TWO_CONTAINERS);
    kc(&s, k, "create -f objects.yaml").assert_lines(&[
        "configmap/tags created",
        "configmap/jp created",
        "deployment.apps/web created",
    ]);
    let mut cases = Cases::default();

    cases.case("label", || {
        kc(&s, k, "label configmap tags tier=backend").assert_lines(&["configmap/tags labeled"]);
        kc(&s, k, "get configmaps -l tier=backend -o name").assert_lines(&["configmap/tags"]);
        let out = kc(&s, k, "label configmap tags tier=frontend");
        assert!(
            out.err()
                .contains("'tier' already has a value (backend), and --overwrite is false"),
            "{out:?}"
        );
        kc(&s, k, "label configmap tags tier=frontend --overwrite")
            .assert_lines(&["configmap/tags labeled"]);
        let rows = table(
            &kc(&s, k, "get configmap tags --show-labels"),
            "NAME DATA AGE LABELS",
        );
        assert!(
            rows.len() == 1
                && rows[0].starts_with("tags 1 ")
                && rows[0].ends_with(" tier=frontend"),
            "{rows:?}"
        );
        kc(&s, k, "label configmap tags tier-").assert_lines(&["configmap/tags unlabeled"]);
        assert_eq!(
            jsonpath(&s, k, "get configmap tags", "{.metadata.labels.tier}"),
            ""
        );
        kc(&s, k, "get configmaps -l tier -o name").assert_lines(&[]);
    });

    cases.case("annotate", || {
        s.kubectl(k)
            .run(&["annotate", "configmap", "tags", "note=hello world"])
            .assert_lines(&["configmap/tags annotated"]);
        assert_eq!(
            jsonpath(&s, k, "get configmap tags", "{.metadata.annotations.note}"),
            "hello world"
        );
        kc(&s, k, "annotate configmap tags note-").assert_lines(&["configmap/tags annotated"]);
        assert_eq!(
            jsonpath(&s, k, "get configmap tags", "{.metadata.annotations.note}"),
            ""
        );
    });

    let patch = |name: &str, ty: &str, p: &str| {
        s.kubectl(k)
            .run(&["patch", "configmap", name, &format!("--type={ty}"), "-p", p])
    };
    cases.case("merge patch", || {
        patch("tags", "merge", r#"{"data":{"b":"2"}}"#).assert_lines(&["configmap/tags patched"]);
        assert_eq!(
            get_json(&s, k, "get configmap tags")["data"],
            json!({"a": "1", "b": "2"})
        );
        patch("tags", "merge", r#"{"data":{"b":"2"}}"#)
            .assert_lines(&["configmap/tags patched (no change)"]);
        patch("tags", "merge", r#"{"data":{"a":null}}"#).assert_lines(&["configmap/tags patched"]);
        assert_eq!(
            get_json(&s, k, "get configmap tags")["data"],
            json!({"b": "2"})
        );
    });

    cases.case("JSON patch", || {
        let ops = json!([
            {"op": "add", "path": "/data/c", "value": "3"},
            {"op": "replace", "path": "/data/b", "value": "20"},
        ]);
        patch("jp", "json", &ops.to_string()).assert_lines(&["configmap/jp patched"]);
        assert_eq!(
            get_json(&s, k, "get configmap jp")["data"],
            json!({"b": "20", "c": "3"})
        );
        let ops = json!([
            {"op": "test", "path": "/data/b", "value": "999"},
            {"op": "remove", "path": "/data/c"},
        ]);
        let failed = patch("jp", "json", &ops.to_string());
        // Upstream answers 422 Invalid; kubectl prints "The request is invalid: ...".
        assert!(
            failed.err().contains(" is invalid: "),
            "a failed test op is refused as invalid: {failed:?}"
        );
        assert_eq!(
            get_json(&s, k, "get configmap jp")["data"],
            json!({"b": "20", "c": "3"}),
            "a failed JSON patch changes nothing"
        );
    });

    // Strategic merge patch: containers merge by name, ports by containerPort.
    cases.case("strategic merge patch", || {
        let spatch = |containers: Value| {
            let p = json!({"spec": {"template": {"spec": {"containers": containers}}}});
            s.kubectl(k).run(&[
                "patch",
                "deployment",
                "web",
                "--type=strategic",
                "-p",
                &p.to_string(),
            ])
        };
        spatch(json!([{"name": "web", "image": "nginx:1.28"}]))
            .assert_lines(&["deployment.apps/web patched"]);
        assert_eq!(
            container_summary(&s, k),
            summary(&[
                ("web", "nginx:1.28", &[80]),
                ("side", "busybox:1.36", &[9000])
            ]),
            "a strategic patch of one container keeps the other and the ports"
        );
        spatch(json!([{"name": "web", "ports": [{"containerPort": 443, "name": "https"}]}]))
            .assert_lines(&["deployment.apps/web patched"]);
        assert_eq!(
            container_summary(&s, k),
            summary(&[
                ("web", "nginx:1.28", &[80, 443]),
                ("side", "busybox:1.36", &[9000])
            ]),
            "ports merge by containerPort"
        );
        spatch(json!([{"name": "side", "$patch": "delete"}]))
            .assert_lines(&["deployment.apps/web patched"]);
        assert_eq!(
            container_summary(&s, k),
            summary(&[("web", "nginx:1.28", &[80, 443])]),
            "$patch: delete removes the named container"
        );
        // kubectl's default patch type is strategic.
        let labels = json!({"metadata": {"labels": {"patched": "yes"}}}).to_string();
        s.kubectl(k)
            .run(&["patch", "deployment", "web", "-p", &labels])
            .assert_lines(&["deployment.apps/web patched"]);
        assert_eq!(
            jsonpath(&s, k, "get deployment web", "{.metadata.labels.patched}"),
            "yes"
        );
    });

    cases.case("scale", || {
        kc(&s, k, "scale deployment web --replicas=3")
            .assert_lines(&["deployment.apps/web scaled"]);
        assert_eq!(
            jsonpath(&s, k, "get deployment web", "{.spec.replicas}"),
            "3"
        );
        let out = kc(
            &s,
            k,
            "scale deployment web --current-replicas=2 --replicas=5",
        );
        assert!(
            out.err().contains("Expected replicas to be 2, was 3"),
            "{out:?}"
        );
        assert_eq!(
            jsonpath(&s, k, "get deployment web", "{.spec.replicas}"),
            "3"
        );
        kc(
            &s,
            k,
            "scale deployment web --current-replicas=3 --replicas=0",
        )
        .assert_lines(&["deployment.apps/web scaled"]);
        // The deployment controller catches up with the status on its own time.
        wait_until(WAIT, "web 0/0 0 0", || {
            let out = kc(&s, k, "get deployment web");
            let rows = table(&out, "NAME READY UP-TO-DATE AVAILABLE AGE");
            match rows.as_slice() {
                [row] if row.starts_with("web 0/0 0 0 ") => Ok(()),
                _ => Err(rows.join("; ")),
            }
        });
    });
    cases.finish();
}

/// `kubectl get -w` prints later changes.
fn get_watch_sees_changes(k: Kubectl) {
    let s = Server::start();
    s.write_file(
        "watched.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\n  labels:\n    test: watch\ndata:\n  a: \"1\"\n",
    );
    s.write_file(
        "later.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: later\n  labels:\n    test: watch\ndata:\n  x: \"1\"\n",
    );
    kc(&s, k, "create -f watched.yaml").assert_lines(&["configmap/watched created"]);

    // Selected by label: a cluster may keep other ConfigMaps here (kube-root-ca.crt).
    let mut plain = s
        .kubectl(k)
        .spawn(&["get", "configmaps", "-l", "test=watch", "-w"]);
    let mut events = s.kubectl(k).spawn(&[
        "get",
        "configmaps",
        "-l",
        "test=watch",
        "-w",
        "--output-watch-events",
    ]);
    plain.wait_for_line(WAIT, |l| l == "NAME DATA AGE");
    plain.wait_for_line(WAIT, |l| l.starts_with("watched 1 "));
    events.wait_for_line(WAIT, |l| l == "EVENT NAME DATA AGE");
    events.wait_for_line(WAIT, |l| l.starts_with("ADDED watched 1 "));

    kc(
        &s,
        k,
        "patch configmap watched --type=merge -p {\"data\":{\"b\":\"2\"}}",
    )
    .assert_lines(&["configmap/watched patched"]);
    plain.wait_for_line(WAIT, |l| l.starts_with("watched 2 "));
    events.wait_for_line(WAIT, |l| l.starts_with("MODIFIED watched 2 "));

    kc(&s, k, "create -f later.yaml").assert_lines(&["configmap/later created"]);
    plain.wait_for_line(WAIT, |l| l.starts_with("later 1 "));
    events.wait_for_line(WAIT, |l| l.starts_with("ADDED later 1 "));

    assert_deleted(
        &kc(&s, k, "delete configmap watched"),
        "configmap",
        "watched",
    );
    events.wait_for_line(WAIT, |l| l.starts_with("DELETED watched 2 "));
    let seen = events.seen().to_vec();
    assert_eq!(
        seen.iter()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>(),
        [
            "EVENT NAME",
            "ADDED watched",
            "MODIFIED watched",
            "ADDED later",
            "DELETED watched"
        ],
        "each change exactly once, in order: {seen:#?}"
    );
    plain.stop();
    events.stop();
}

const OUTPUTS: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: out-a
  labels:
    app: demo
    set: out
data:
  k: v1
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: out-b
  labels:
    set: out
data:
  k: v2
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
      - name: side
        image: busybox:1.36
";

/// `-o yaml|json|wide|name|jsonpath|custom-columns` and `--show-labels`.
fn output_formats(k: Kubectl) {
    let s = Server::start();
    s.write_file("objects.yaml", OUTPUTS);
    kc(&s, k, "create -f objects.yaml").assert_lines(&[
        "configmap/out-a created",
        "configmap/out-b created",
        "deployment.apps/web created",
    ]);

    let yaml = kc(&s, k, "get configmap out-a -o yaml");
    let from_yaml: Value = serde_yaml_ng::from_str(yaml.ok()).expect("-o yaml is YAML");
    let from_json = get_json(&s, k, "get configmap out-a");
    assert_eq!(from_yaml, from_json, "-o yaml and -o json agree");
    yaml.assert_has_line("apiVersion: v1");
    yaml.assert_has_line("kind: ConfigMap");
    assert_eq!(from_json["metadata"]["name"], "out-a");
    assert_eq!(from_json["metadata"]["namespace"], "default");
    assert_eq!(from_json["data"], json!({"k": "v1"}));
    for field in ["uid", "resourceVersion", "creationTimestamp"] {
        assert!(
            from_json["metadata"][field].is_string(),
            "metadata.{field} in {from_json}"
        );
    }

    let list = get_json(&s, k, "get configmaps -l set=out");
    assert_eq!(list["kind"], "List", "{list}");
    assert_eq!(list["apiVersion"], "v1", "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["out-a", "out-b"], "{list}");

    let rows = table(
        &kc(&s, k, "get deployment web -o wide"),
        "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let cols: Vec<&str> = rows[0].split(' ').collect();
    // UP-TO-DATE (cols[2]) follows the deployment controller's progress; AGE (cols[4])
    // the clock. With no nodes nothing becomes available.
    assert_eq!(
        [&cols[..2], &cols[3..4], &cols[5..]].concat(),
        [
            "web",
            "0/1",
            "0",
            "web,side",
            "nginx:1.27,busybox:1.36",
            "app=web"
        ],
        "{rows:?}"
    );

    kc(&s, k, "get configmaps -l set=out -o name")
        .assert_lines(&["configmap/out-a", "configmap/out-b"]);
    kc(&s, k, "get configmaps,deployments -l app -o name").assert_lines(&["configmap/out-a"]);
    kc(&s, k, "get configmap/out-b deployment/web -o name")
        .assert_lines(&["configmap/out-b", "deployment.apps/web"]);

    assert_eq!(
        jsonpath(
            &s,
            k,
            "get configmaps -l set=out",
            "{.items[*].metadata.name}"
        ),
        "out-a out-b"
    );
    s.kubectl(k)
        .run(&[
            "get",
            "configmaps",
            "-l",
            "set=out",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}={.data.k}{"\n"}{end}"#,
        ])
        .assert_lines(&["out-a=v1", "out-b=v2"]);
    kc(
        &s,
        k,
        "get configmaps -l set=out -o custom-columns=NAME:.metadata.name,VALUE:.data.k,APP:.metadata.labels.app",
    )
    .assert_lines(&["NAME VALUE APP", "out-a v1 demo", "out-b v2 <none>"]);
    let rows = table(
        &kc(&s, k, "get configmaps -l set=out --show-labels"),
        "NAME DATA AGE LABELS",
    );
    assert!(
        rows.len() == 2
            && rows[0].starts_with("out-a 1 ")
            && rows[0].ends_with(" app=demo,set=out")
            && rows[1].starts_with("out-b 1 ")
            && rows[1].ends_with(" set=out"),
        "{rows:?}"
    );
    kc(&s, k, "get configmaps -l set=out --sort-by=.data.k -o name")
        .assert_lines(&["configmap/out-a", "configmap/out-b"]);
    let rows = normalized_lines(kc(&s, k, "get configmaps -l set=out --no-headers").ok());
    assert!(
        rows.len() == 2 && rows[0].starts_with("out-a 1 "),
        "{rows:?}"
    );
}

/// `api-resources`, `api-versions`, `explain` and `version`.
fn discovery_and_explain(k: Kubectl) {
    let s = Server::start();
    let out = kc(&s, k, "api-resources");
    let lines = normalized_lines(out.ok());
    assert_eq!(
        lines[0], "NAME SHORTNAMES APIVERSION NAMESPACED KIND",
        "{out:?}"
    );
    for want in [
        "deployments deploy apps/v1 true Deployment",
        "configmaps cm v1 true ConfigMap",
        "namespaces ns v1 false Namespace",
        "services svc v1 true Service",
        "pods po v1 true Pod",
        "secrets v1 true Secret",
    ] {
        assert!(lines.iter().any(|l| l == want), "no {want:?} in {out:?}");
    }
    let out = kc(&s, k, "api-resources --api-group=apps -o name");
    assert!(
        normalized_lines(out.ok())
            .iter()
            .any(|l| l == "deployments.apps"),
        "{out:?}"
    );
    let versions = kc(&s, k, "api-versions");
    versions.assert_has_line("v1");
    versions.assert_has_line("apps/v1");

    let out = kc(&s, k, "explain deployment.spec.replicas");
    out.assert_has_line("KIND: Deployment");
    out.assert_has_line("VERSION: v1");
    out.assert_has_line("FIELD: replicas <integer>");
    assert!(out.stdout.contains("replicas"), "{out:?}");
    let out = kc(&s, k, "explain configmaps");
    out.assert_has_line("KIND: ConfigMap");
    out.assert_has_line("VERSION: v1");
    out.assert_has_line("data <map[string]string>");

    let out = kc(&s, k, "version");
    assert!(
        normalized_lines(out.ok())
            .iter()
            .any(|l| l.starts_with("Server Version: v1.")),
        "{out:?}"
    );
}

/// `kubectl delete --all` in one namespace leaves the others alone. Secrets, because a
/// cluster may keep ConfigMaps of its own in every namespace (kube-root-ca.crt).
fn delete_all(k: Kubectl) {
    let s = Server::start();
    let mut manifest = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bulk\n");
    for (ns, name) in [
        ("bulk", "one"),
        ("bulk", "two"),
        ("bulk", "three"),
        ("default", "keep"),
    ] {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\nstringData:\n  k: v\n"
        ));
    }
    s.write_file("bulk.yaml", &manifest);
    kc(&s, k, "create -f bulk.yaml").assert_lines(&[
        "namespace/bulk created",
        "secret/one created",
        "secret/two created",
        "secret/three created",
        "secret/keep created",
    ]);
    let out = kc(&s, k, "delete secrets --all -n bulk");
    let mut deleted: Vec<String> = normalized_lines(out.ok())
        .iter()
        .map(|l| {
            let name = l
                .strip_prefix("secret \"")
                .and_then(|r| r.split_once("\" deleted"))
                .unwrap_or_else(|| panic!("unexpected line {l:?} in {out:?}"));
            name.0.to_string()
        })
        .collect();
    deleted.sort();
    assert_eq!(deleted, ["one", "three", "two"], "{out:?}");
    let out = kc(&s, k, "get secrets -n bulk");
    assert_eq!(out.ok(), "", "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        "No resources found in bulk namespace.",
        "{out:?}"
    );
    kc(&s, k, "get secrets -n default -o name").assert_lines(&["secret/keep"]);
}

/// `kubectl get all -A` lists the `kubernetes` Service every cluster has.
fn get_all_shows_kubernetes_service(k: Kubectl) {
    let s = Server::start();
    let out = kc(&s, k, "get all -A");
    let lines = normalized_lines(out.ok());
    let header = lines
        .iter()
        .position(|l| l == "NAMESPACE NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE")
        .unwrap_or_else(|| panic!("no services table in {out:?}"));
    assert!(
        lines[header + 1..].iter().any(
            |l| l.starts_with("default service/kubernetes ClusterIP 10.43.0.1 <none> 443/TCP ")
        ),
        "{out:?}"
    );
    let svc = get_json(&s, k, "get service kubernetes -n default");
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.1", "{svc}");
    assert_eq!(
        svc["spec"]["ports"][0],
        json!({"name": "https", "port": 443, "protocol": "TCP", "targetPort": s.port()}),
        "{svc}"
    );
}

/// `kubectl get pods` prints upstream's columns; an unscheduled pod is Pending.
fn get_pods_columns(k: Kubectl) {
    let s = Server::start();
    let out = kc(&s, k, "get pods");
    assert_eq!(out.ok(), "", "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        "No resources found in default namespace."
    );
    s.write_file(
        "pod.yaml",
        "apiVersion: v1
kind: Pod
metadata:
  name: p1
spec:
  containers:
  - name: c
    image: nginx:1.27
  - name: d
    image: busybox:1.36
",
    );
    kc(&s, k, "create -f pod.yaml").assert_lines(&["pod/p1 created"]);
    assert_row(
        &kc(&s, k, "get pods"),
        "NAME READY STATUS RESTARTS AGE",
        "p1 0/2 Pending 0",
    );
    let rows = table(
        &kc(&s, k, "get pods -o wide"),
        "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES",
    );
    assert!(
        rows.len() == 1
            && rows[0].starts_with("p1 0/2 Pending 0 ")
            && rows[0].ends_with(" <none> <none> <none> <none>"),
        "{rows:?}"
    );
    let pod = get_json(&s, k, "get pod p1");
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    assert_eq!(pod["status"]["qosClass"], "BestEffort", "{pod}");
    let d = kc(&s, k, "describe pod p1");
    d.assert_has_line("Name: p1");
    d.assert_has_line("Status: Pending");
    d.assert_has_line("Image: nginx:1.27");
    assert_deleted(&kc(&s, k, "delete pod p1"), "pod", "p1");
}
