//! Authorization against a real server with real kubectl: RBAC through a ServiceAccount
//! bound to a Role (seen through impersonation), `kubectl auth can-i` (also `--list`)
//! and `kubectl auth whoami`, ClusterRole aggregation, the default roles and their
//! return after a restart, and the node authorizer with NodeRestriction for a node's
//! client certificate.

use crate::harness::{run_command, wait_until, Kubectl, KubectlCommand, Server};
use crate::with_each_kubectl;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

with_each_kubectl!(service_account_through_a_role);

const WAIT: Duration = Duration::from_secs(30);

const ROLE: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: team
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: reader
  namespace: team
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
  namespace: team
rules:
- apiGroups: [\"\"]
  resources: [\"pods\", \"pods/log\"]
  verbs: [\"get\", \"list\", \"watch\"]
- apiGroups: [\"\"]
  resources: [\"configmaps\"]
  resourceNames: [\"settings\"]
  verbs: [\"get\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: reader-reads-pods
  namespace: team
subjects:
- kind: ServiceAccount
  name: reader
  namespace: team
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pod-reader
";

const SA: &str = "system:serviceaccount:team:reader";

fn can_i(server: &Server, k: Kubectl, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = server.kubectl(k).run(&all);
    out.stdout.trim().to_string()
}

fn service_account_through_a_role(k: Kubectl) {
    let server = Server::start();
    server
        .kubectl(k)
        .stdin(ROLE)
        .run(&["apply", "-f", "-"])
        .ok();
    let as_sa = format!("--as={SA}");
    // The index follows the store's watch: wait until the binding is seen.
    wait_until(WAIT, "the RoleBinding to take effect", || {
        match can_i(&server, k, &[&as_sa, "list", "pods", "-n", "team"]).as_str() {
            "yes" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    for (args, want) in [
        (vec!["get", "pods", "-n", "team"], "yes"),
        (vec!["get", "pods/log", "-n", "team"], "yes"),
        (vec!["get", "pods", "-n", "default"], "no"),
        (vec!["delete", "pods", "-n", "team"], "no"),
        (vec!["get", "secrets", "-n", "team"], "no"),
        (vec!["get", "configmaps/settings", "-n", "team"], "yes"),
        (vec!["get", "configmaps/other", "-n", "team"], "no"),
        (vec!["list", "nodes"], "no"),
    ] {
        let mut a = vec![as_sa.as_str()];
        a.extend(args.iter().copied());
        assert_eq!(can_i(&server, k, &a), want, "can-i {args:?}");
    }
    // The admin may do anything; can-i without --as asks for the admin.
    assert_eq!(can_i(&server, k, &["delete", "nodes"]), "yes");

    // Real requests as the service account, through impersonation.
    server
        .kubectl(k)
        .run(&[&as_sa, "get", "pods", "-n", "team"])
        .ok();
    let denied = server
        .kubectl(k)
        .run(&[&as_sa, "get", "secrets", "-n", "team"]);
    assert_eq!(
        denied.err().trim(),
        "Error from server (Forbidden): secrets is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\"",
    );
    let denied = server
        .kubectl(k)
        .run(&[&as_sa, "get", "secret", "x", "-n", "team"]);
    assert_eq!(
        denied.err().trim(),
        "Error from server (Forbidden): secrets \"x\" is forbidden: User \"system:serviceaccount:team:reader\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team\"",
    );

    // can-i --list shows the Role's rules.
    let list = server
        .kubectl(k)
        .run(&["auth", "can-i", "--list", &as_sa, "-n", "team"]);
    let text = list.ok();
    assert!(
        text.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"pods") && l.contains("[get list watch]")
        }),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("configmaps") && l.contains("[settings]")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("selfsubjectaccessreviews.authorization.k8s.io")),
        "{text}"
    );

    // whoami, as the admin and as the service account.
    let me = server
        .kubectl(k)
        .run(&["auth", "whoami", "-o", "json"])
        .json();
    assert_eq!(me["kind"], "SelfSubjectReview");
    assert_eq!(me["status"]["userInfo"]["username"], "system:admin");
    let groups = me["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:masters"), "{groups}");
    let sa = server
        .kubectl(k)
        .run(&["auth", "whoami", &as_sa, "-o", "json"])
        .json();
    assert_eq!(sa["status"]["userInfo"]["username"], SA);
    assert_eq!(
        sa["status"]["userInfo"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team",
            "system:authenticated"
        ])
    );
    let plain = server.kubectl(k).run(&["auth", "whoami"]);
    assert!(plain.ok().contains("system:admin"), "{plain:?}");

    // Aggregation: a ClusterRole labelled for view shows up in view's rules.
    server
        .kubectl(k)
        .stdin(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: widgets-view
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: \"true\"
rules:
- apiGroups: [\"example.com\"]
  resources: [\"widgets\"]
  verbs: [\"get\", \"list\"]
",
        )
        .run(&["apply", "-f", "-"])
        .ok();
    for role in ["view", "edit", "admin"] {
        wait_until(WAIT, "view to aggregate widgets", || {
            let out = server
                .kubectl(k)
                .run(&["get", "clusterrole", role, "-o", "json"]);
            let v = out.json();
            let found = v["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["apiGroups"][0] == "example.com" && r["resources"][0] == "widgets");
            if found {
                Ok(())
            } else {
                Err(format!("{role}: {}", v["rules"]))
            }
        });
    }
}

/// The default roles exist, bindings grant what upstream's grant, and a deleted default
/// comes back at the next start.
#[test]
fn default_roles_are_reconciled_at_start() {
    let k = Kubectl::V132;
    let mut server = Server::start();
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
    ] {
        let out = server
            .kubectl(k)
            .run(&["get", "clusterrole", name, "-o", "json"]);
        let v = out.json();
        assert_eq!(
            v["metadata"]["labels"]["kubernetes.io/bootstrapping"], "rbac-defaults",
            "{name}"
        );
    }
    // The aggregated view has the rules of system:aggregate-to-view.
    let view = server
        .kubectl(k)
        .run(&["get", "clusterrole", "view", "-o", "json"])
        .json();
    assert!(
        view["rules"].as_array().is_some_and(|r| r.len() > 3),
        "{view}"
    );
    let admin = server
        .kubectl(k)
        .run(&["get", "clusterrolebinding", "cluster-admin", "-o", "json"])
        .json();
    assert_eq!(admin["subjects"][0]["name"], "system:masters");
    // Any authenticated user may use discovery and ask about themselves.
    assert_eq!(can_i(&server, k, &["--as=nobody", "get", "/api"]), "yes");
    assert_eq!(
        can_i(
            &server,
            k,
            &["--as=nobody", "create", "selfsubjectaccessreviews"]
        ),
        "yes"
    );
    assert_eq!(can_i(&server, k, &["--as=nobody", "get", "pods"]), "no");
    let out = server
        .kubectl(k)
        .run(&["--as=nobody", "get", "--raw", "/foo"]);
    assert!(
        out.err()
            .contains("forbidden: User \"nobody\" cannot get path \"/foo\""),
        "{out:?}"
    );

    server
        .kubectl(k)
        .run(&["delete", "clusterrole", "system:basic-user"])
        .ok();
    // Trimmed rules of an autoupdated default come back too.
    server
        .kubectl(k)
        .run(&[
            "patch",
            "clusterrole",
            "system:discovery",
            "--type=json",
            "-p",
            "[{\"op\": \"replace\", \"path\": \"/rules\", \"value\": []}]",
        ])
        .ok();
    server.restart();
    server
        .kubectl(k)
        .run(&["get", "clusterrole", "system:basic-user"])
        .ok();
    let discovery = server
        .kubectl(k)
        .run(&["get", "clusterrole", "system:discovery", "-o", "json"])
        .json();
    assert!(
        discovery["rules"].as_array().is_some_and(|r| !r.is_empty()),
        "{discovery}"
    );
}

/// Makes a client certificate for `user` in `group`, signed by the cluster CA, and a
/// kubeconfig using it.
fn client_kubeconfig(server: &Server, user: &str, group: &str, file: &str) -> PathBuf {
    let tls = server.data_dir().join("server").join("tls");
    let dir = server.dir();
    let key = dir.join(format!("{file}.key"));
    let csr = dir.join(format!("{file}.csr"));
    let crt = dir.join(format!("{file}.crt"));
    let ext = dir.join(format!("{file}.ext"));
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").unwrap();
    let openssl = |args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(args);
        let out = run_command(cmd, None, Duration::from_secs(30));
        assert!(out.status.success(), "{out:?}");
    };
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        p(&key),
        "-subj",
        &format!("/O={group}/CN={user}"),
        "-out",
        p(&csr),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        p(&csr),
        "-CA",
        p(&tls.join("ca.crt")),
        "-CAkey",
        p(&tls.join("ca.key")),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        p(&ext),
        "-out",
        p(&crt),
    ]);
    let kubeconfig = dir.join(format!("{file}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:{}
    certificate-authority: {}
users:
- name: u
  user:
    client-certificate: {}
    client-key: {}
contexts:
- name: c
  context: {{cluster: c, user: u}}
current-context: c
",
            server.port(),
            p(&tls.join("ca.crt")),
            p(&crt),
            p(&key)
        ),
    )
    .unwrap();
    kubeconfig
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const NODE_PODS: &str = "apiVersion: v1
kind: Secret
metadata:
  name: a-secret
stringData: {k: v}
---
apiVersion: v1
kind: Secret
metadata:
  name: b-secret
stringData: {k: v}
---
apiVersion: v1
kind: Node
metadata:
  name: node-b
---
apiVersion: v1
kind: Pod
metadata:
  name: on-a
spec:
  nodeName: node-a
  containers:
  - name: c
    image: busybox
    env:
    - name: X
      valueFrom: {secretKeyRef: {name: a-secret, key: k}}
---
apiVersion: v1
kind: Pod
metadata:
  name: on-b
spec:
  nodeName: node-b
  volumes:
  - name: s
    secret: {secretName: b-secret}
  containers:
  - name: c
    image: busybox
";

/// A node's certificate reads what its pods use and writes only its own Node.
#[test]
fn node_authorizer_and_node_restriction() {
    let k = Kubectl::V132;
    let server = Server::start_with(&["--disable-scheduler"]);
    server
        .kubectl(k)
        .stdin(NODE_PODS)
        .run(&["apply", "-f", "-"])
        .ok();
    let kubeconfig = client_kubeconfig(&server, "system:node:node-a", "system:nodes", "node-a");
    let node = || KubectlCommand::new(k, &kubeconfig, server.home(), server.dir());

    node()
        .run(&["get", "secret", "a-secret", "-o", "name"])
        .ok();
    let denied = node().run(&["get", "secret", "b-secret"]);
    assert_eq!(
        denied.err().trim(),
        "Error from server (Forbidden): secrets \"b-secret\" is forbidden: User \"system:node:node-a\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'node-a' and this object",
    );
    let listed = node().run(&["get", "secrets"]);
    assert!(
        listed.err().contains(
            "secrets is forbidden: User \"system:node:node-a\" cannot list resource \"secrets\""
        ),
        "{listed:?}"
    );
    node().run(&["get", "pods", "-o", "name"]).ok();
    node().run(&["get", "nodes", "-o", "name"]).ok();

    // Its own Node it may create and change; another node it may not.
    node()
        .stdin("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n")
        .run(&["create", "-f", "-"])
        .ok();
    node().run(&["label", "node", "node-a", "x=y"]).ok();
    let denied = node().run(&["label", "node", "node-b", "x=y"]);
    assert_eq!(
        denied.err().trim(),
        "Error from server (Forbidden): nodes \"node-b\" is forbidden: node \"node-a\" is not allowed to modify node \"node-b\"",
    );
    let denied = node().run(&["delete", "pod", "on-b", "--wait=false"]);
    assert!(
        denied
            .err()
            .contains("node \"node-a\" can only delete pods with spec.nodeName set to itself"),
        "{denied:?}"
    );
    let denied = node()
        .stdin("apiVersion: v1\nkind: Pod\nmetadata:\n  name: sneaky\nspec:\n  nodeName: node-a\n  containers:\n  - {name: c, image: busybox}\n")
        .run(&["create", "-f", "-"]);
    assert!(
        denied.err().contains("can only create mirror pods"),
        "{denied:?}"
    );
    let denied = node().run(&["get", "configmaps", "-n", "kube-system"]);
    denied.err();
    let denied = node().run(&["create", "namespace", "nope"]);
    assert!(
        denied.err().contains("namespaces is forbidden: User \"system:node:node-a\" cannot create resource \"namespaces\" in API group \"\" at the cluster scope"),
        "{denied:?}"
    );

    // The certificate of a user in no group with rights gets 403s from RBAC alone.
    let stranger = client_kubeconfig(&server, "alice", "devs", "alice");
    let alice = KubectlCommand::new(k, &stranger, server.home(), server.dir());
    let denied = alice.run(&["get", "pod", "on-a"]);
    assert_eq!(
        denied.err().trim(),
        "Error from server (Forbidden): pods \"on-a\" is forbidden: User \"alice\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\"",
    );
    // alice may not impersonate.
    let alice = KubectlCommand::new(k, &stranger, server.home(), server.dir());
    let denied = alice.run(&["--as=system:admin", "get", "pods"]);
    assert!(
        denied.err().contains("users \"system:admin\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{denied:?}"
    );
}
