//! ServiceAccount tokens: `kubectl create token` (the TokenRequest API) and the tokens
//! used as bearers by kubectl with a kubeconfig that holds only the server, the CA and
//! the token (so kubectl cannot fall back on a client certificate); bad, expired,
//! wrongly-addressed and orphaned tokens are 401; legacy token Secrets; the
//! `kube-root-ca.crt` ConfigMaps;
//! and, on the node, the token volume every pod gets, whose token works against the API.

use crate::harness::{wait_until, Kubectl, KubectlCommand, Output, Server};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(60);
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The decoded header (0) or payload (1) of a JWT.
fn part(token: &str, i: usize) -> Value {
    let p = token.split('.').nth(i).expect("a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON")
}

fn claims(token: &str) -> Value {
    part(token, 1)
}

/// The admin kubeconfig's server URL and CA (PEM).
fn server_and_ca(s: &Server) -> (String, String) {
    let text = std::fs::read_to_string(s.kubeconfig()).unwrap();
    let kc: Value = serde_yaml_ng::from_str(&text).unwrap();
    let cluster = &kc["clusters"][0]["cluster"];
    let ca = STANDARD
        .decode(cluster["certificate-authority-data"].as_str().unwrap())
        .unwrap();
    (
        cluster["server"].as_str().unwrap().to_string(),
        String::from_utf8(ca).unwrap(),
    )
}

/// kubectl with a kubeconfig that holds the server, the CA and `token`: nothing else
/// it could authenticate with.
fn with_token(s: &Server, k: Kubectl, token: &str) -> KubectlCommand {
    let (server, ca) = server_and_ca(s);
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": STANDARD.encode(ca)}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    });
    let digest = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes());
    let name = format!("token-{}.yaml", hex::encode(&digest[..8]));
    let path: PathBuf = s.write_file(&name, serde_yaml_ng::to_string(&kc).unwrap());
    KubectlCommand::new(k, path, s.home(), s.dir())
}

#[track_caller]
fn assert_unauthorized(out: &Output) {
    let err = out.err();
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "expected 401: {out:?}"
    );
}

/// Lets every ServiceAccount in `ns` read everything (the `view` ClusterRole), so that
/// these tests see authentication succeed rather than RBAC's 403.
fn grant_view(s: &Server, ns: &str) {
    s.kubectl(Kubectl::V132)
        .run(&[
            "create",
            "clusterrolebinding",
            &format!("view-{ns}"),
            "--clusterrole=view",
            &format!("--group=system:serviceaccounts:{ns}"),
        ])
        .ok();
}

fn create_token(s: &Server, k: Kubectl, args: &[&str]) -> String {
    let mut all = vec!["create", "token"];
    all.extend_from_slice(args);
    s.kubectl(k).run(&all).ok().trim().to_string()
}

fn wait_default_account(s: &Server, ns: &str) -> Value {
    wait_until(SOON, "the default ServiceAccount", || {
        let out = s
            .kubectl(Kubectl::V132)
            .run(&["get", "sa", "default", "-n", ns, "-o", "json"]);
        if out.status.success() {
            serde_json::from_str(&out.stdout).map_err(|e| e.to_string())
        } else {
            Err(out.stderr)
        }
    })
}

/// `kubectl create token` with its flags, and what the tokens let in.
fn create_token_and_use_it(k: Kubectl) {
    let s = Server::start();
    let sa = wait_default_account(&s, "default");
    grant_view(&s, "default");

    let token = create_token(&s, k, &["default"]);
    let c = claims(&token);
    assert_eq!(c["iss"], ISSUER, "{c}");
    assert_eq!(c["sub"], "system:serviceaccount:default:default");
    assert_eq!(c["aud"], json!([ISSUER, "skiff"]));
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(c["nbf"], c["iat"]);
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(c["kubernetes.io"]["namespace"], "default");
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "default");
    assert_eq!(
        c["kubernetes.io"]["serviceaccount"]["uid"],
        sa["metadata"]["uid"]
    );
    assert_eq!(part(&token, 0)["alg"], "ES256");
    with_token(&s, k, &token)
        .run(&["get", "pods", "-n", "kube-system"])
        .ok();

    // A lifetime and an audience.
    let short = create_token(
        &s,
        k,
        &["default", "--duration", "20m", "--audience", "skiff"],
    );
    let c = claims(&short);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        1200
    );
    assert_eq!(c["aud"], json!(["skiff"]));
    with_token(&s, k, &short).run(&["get", "ns"]).ok();
    let err = s
        .kubectl(k)
        .run(&["create", "token", "default", "--duration", "1m"])
        .err()
        .to_string();
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );

    // A token for another audience does not open the API.
    let vault = create_token(&s, k, &["default", "--audience", "vault"]);
    assert_unauthorized(&with_token(&s, k, &vault).run(&["get", "pods"]));

    // A changed payload breaks the signature.
    let mut forged = claims(&token);
    forged["sub"] = "system:serviceaccount:kube-system:default".into();
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged.to_string()),
        parts[2]
    );
    assert_unauthorized(&with_token(&s, k, &forged).run(&["get", "pods"]));

    // Unknown accounts and objects.
    let err = s
        .kubectl(k)
        .run(&["create", "token", "nobody"])
        .err()
        .to_string();
    assert!(
        err.contains("serviceaccounts \"nobody\" not found"),
        "{err}"
    );
    let err = s
        .kubectl(k)
        .run(&[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "nope",
        ])
        .err()
        .to_string();
    assert!(err.contains("pods \"nope\" not found"), "{err}");

    // A token bound to a pod dies with the pod.
    s.kubectl(k)
        .stdin(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder"},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
            .to_string(),
        )
        .run(&["create", "-f", "-"])
        .ok();
    let pod: Value = serde_json::from_str(
        s.kubectl(k)
            .run(&["get", "pod", "holder", "-o", "json"])
            .ok(),
    )
    .unwrap();
    let bound = create_token(
        &s,
        k,
        &[
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "holder",
        ],
    );
    let c = claims(&bound);
    assert_eq!(c["kubernetes.io"]["pod"]["name"], "holder");
    assert_eq!(c["kubernetes.io"]["pod"]["uid"], pod["metadata"]["uid"]);
    with_token(&s, k, &bound).run(&["get", "pods"]).ok();
    s.kubectl(k)
        .run(&["delete", "pod", "holder", "--wait=true"])
        .ok();
    assert_unauthorized(&with_token(&s, k, &bound).run(&["get", "pods"]));
    // The unbound token still works.
    with_token(&s, k, &token).run(&["get", "pods"]).ok();
}

crate::with_each_kubectl!(create_token_and_use_it);

/// ECDSA's DER signature (`SEQUENCE { INTEGER r, INTEGER s }`) as JWS's raw `r || s`.
fn der_to_raw(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    // SEQUENCE, length (short form for P-256), then two INTEGERs.
    let mut i = 2;
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "an INTEGER");
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

/// A token signed with the server's own key but expired is refused; the key set and
/// the OpenID configuration name the key and the issuer.
#[test]
fn expired_tokens_are_refused_and_the_key_set_is_served() {
    let s = Server::start();
    let sa = wait_default_account(&s, "default");
    grant_view(&s, "default");
    let good = create_token(&s, Kubectl::V132, &["default"]);
    let header = part(&good, 0);

    let jwks = s.raw("GET", "/openid/v1/jwks", None, Vec::new());
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.json()["keys"][0]["kid"], header["kid"]);
    let oidc = s.raw("GET", "/.well-known/openid-configuration", None, Vec::new());
    assert_eq!(oidc.json()["issuer"], ISSUER);

    // The same claims, expired an hour ago, signed with service.key by openssl.
    let mut c = claims(&good);
    let now = c["iat"].as_i64().unwrap();
    c["iat"] = (now - 7200).into();
    c["nbf"] = (now - 7200).into();
    c["exp"] = (now - 3600).into();
    assert_eq!(
        c["kubernetes.io"]["serviceaccount"]["uid"],
        sa["metadata"]["uid"]
    );
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(c.to_string())
    );
    let key = s.data_dir().join("server/tls/service.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the signing key is private");
    // openssl writes the DER signature to a file.
    let sig_path = s.dir().join("sig.der");
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .arg("-out")
        .arg(&sig_path)
        .arg(s.write_file("input.txt", &input))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let raw = der_to_raw(&std::fs::read(&sig_path).unwrap());
    let expired = format!("{input}.{}", URL_SAFE_NO_PAD.encode(raw));

    // The same recipe with the real times makes a token the server accepts, so the
    // refusal below is the expiry's.
    let mut fresh = c.clone();
    fresh["iat"] = now.into();
    fresh["nbf"] = now.into();
    fresh["exp"] = (now + 3600).into();
    let input2 = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(fresh.to_string())
    );
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .arg("-out")
        .arg(&sig_path)
        .arg(s.write_file("input2.txt", &input2))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let raw = der_to_raw(&std::fs::read(&sig_path).unwrap());
    let resigned = format!("{input2}.{}", URL_SAFE_NO_PAD.encode(raw));
    with_token(&s, Kubectl::V132, &resigned)
        .run(&["get", "pods"])
        .ok();
    assert_unauthorized(&with_token(&s, Kubectl::V132, &expired).run(&["get", "pods"]));
}

/// Every namespace gets `kube-root-ca.crt` with the cluster CA; deleted, it comes
/// back; edited, it is put back.
#[test]
fn kube_root_ca_is_in_every_namespace() {
    let s = Server::start();
    let (_, ca) = server_and_ca(&s);
    let k = Kubectl::V132;
    s.kubectl(k).run(&["create", "namespace", "fresh"]).ok();
    let get = || {
        let out = s
            .kubectl(k)
            .run(&["get", "cm", "kube-root-ca.crt", "-n", "fresh", "-o", "json"]);
        if out.status.success() {
            serde_json::from_str::<Value>(&out.stdout).map_err(|e| e.to_string())
        } else {
            Err(out.stderr)
        }
    };
    let cm = wait_until(SOON, "kube-root-ca.crt in a new namespace", get);
    assert_eq!(cm["data"]["ca.crt"], ca.as_str());
    assert!(cm["metadata"]["annotations"]["kubernetes.io/description"].is_string());
    for ns in ["default", "kube-system", "kube-public"] {
        wait_until(SOON, &format!("kube-root-ca.crt in {ns}"), || {
            let out = s
                .kubectl(k)
                .run(&["get", "cm", "kube-root-ca.crt", "-n", ns]);
            out.status.success().then_some(()).ok_or(out.stderr)
        });
    }

    s.kubectl(k)
        .run(&["delete", "cm", "kube-root-ca.crt", "-n", "fresh"])
        .ok();
    let uid = cm["metadata"]["uid"].clone();
    let again = wait_until(SOON, "kube-root-ca.crt made again", || {
        let cm = get()?;
        (cm["metadata"]["uid"] != uid)
            .then_some(cm)
            .ok_or_else(|| "still the old one".to_string())
    });
    assert_eq!(again["data"]["ca.crt"], ca.as_str());

    s.kubectl(k)
        .run(&[
            "patch",
            "cm",
            "kube-root-ca.crt",
            "-n",
            "fresh",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"ca.crt":"tampered","extra":"x"}}"#,
        ])
        .ok();
    wait_until(SOON, "kube-root-ca.crt put back", || {
        let cm = get()?;
        (cm["data"] == json!({"ca.crt": ca}))
            .then_some(())
            .ok_or_else(|| cm["data"].to_string())
    });
}

/// A `kubernetes.io/service-account-token` Secret is filled with a legacy token, the
/// CA and the namespace; the token works while the Secret holds it; a Secret for a
/// ServiceAccount that is deleted goes with it.
#[test]
fn legacy_token_secrets() {
    let s = Server::start();
    let k = Kubectl::V132;
    let (_, ca) = server_and_ca(&s);
    grant_view(&s, "default");
    s.kubectl(k).run(&["create", "sa", "robot"]).ok();
    let sa: Value =
        serde_json::from_str(s.kubectl(k).run(&["get", "sa", "robot", "-o", "json"]).ok()).unwrap();
    s.kubectl(k)
        .stdin(
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": "robot-token", "annotations": {"kubernetes.io/service-account.name": "robot"}}})
            .to_string(),
        )
        .run(&["create", "-f", "-"])
        .ok();
    let secret = wait_until(SOON, "the token Secret filled", || {
        let out = s
            .kubectl(k)
            .run(&["get", "secret", "robot-token", "-o", "json"]);
        let v: Value = serde_json::from_str(&out.stdout).map_err(|_| out.stderr.clone())?;
        if v["data"]["token"].is_string() {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    let decode = |f: &str| {
        String::from_utf8(
            STANDARD
                .decode(secret["data"][f].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(decode("ca.crt"), ca);
    assert_eq!(decode("namespace"), "default");
    assert_eq!(
        secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"],
        sa["metadata"]["uid"]
    );
    let token = decode("token");
    let c = claims(&token);
    assert_eq!(c["iss"], "kubernetes/serviceaccount");
    assert_eq!(c["sub"], "system:serviceaccount:default:robot");
    assert_eq!(c["kubernetes.io/serviceaccount/secret.name"], "robot-token");
    assert!(c.get("exp").is_none(), "legacy tokens do not expire");
    with_token(&s, k, &token).run(&["get", "pods"]).ok();

    // The account goes, so does its Secret, and the token with them.
    s.kubectl(k).run(&["delete", "sa", "robot"]).ok();
    wait_until(SOON, "the token Secret deleted", || {
        let out = s.kubectl(k).run(&["get", "secret", "robot-token"]);
        (!out.status.success())
            .then_some(())
            .ok_or_else(|| out.stdout.clone())
    });
    assert_unauthorized(&with_token(&s, k, &token).run(&["get", "pods"]));
}

/// `kubectl exec POD -- sh -c SCRIPT`, made again if kubectl 1.32 lost the first
/// output on a loaded machine ("Unknown stream id").
fn exec(s: &Server, pod: &str, script: &str) -> Output {
    let mut tries = 0;
    loop {
        let out = s
            .kubectl(Kubectl::V132)
            .run(&["exec", pod, "--", "sh", "-c", script]);
        tries += 1;
        if tries == 3 || !out.stderr.contains("Unknown stream id") {
            return out;
        }
    }
}

/// A real pod gets the token volume (token, CA, namespace) read-only at the
/// well-known path; its token, bound to the pod and its node, authenticates; a pod that
/// opts out gets nothing.
#[test]
fn a_pod_gets_a_working_token() {
    let s = Server::start_node(&[]);
    let (_, ca) = server_and_ca(&s);
    let k = Kubectl::V132;
    let manifest = |name: &str, automount: Option<bool>| {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "busybox",
                    "command": ["sh", "-c", "while true; do sleep 1; done"]}]
            }
        });
        if let Some(a) = automount {
            p["spec"]["automountServiceAccountToken"] = a.into();
        }
        p
    };
    for (name, automount) in [("with-token", None), ("without", Some(false))] {
        s.kubectl(k)
            .stdin(manifest(name, automount).to_string())
            .run(&["create", "-f", "-"])
            .ok();
    }
    let running = |name: &str| {
        wait_until(SOON, &format!("pod {name} running"), || {
            let out = s.kubectl(k).run(&["get", "pod", name, "-o", "json"]);
            let p: Value = serde_json::from_str(&out.stdout).map_err(|_| out.stderr.clone())?;
            if p["status"]["containerStatuses"][0]["state"]["running"].is_object() {
                Ok(p)
            } else {
                Err(p["status"].to_string())
            }
        })
    };
    let pod = running("with-token");
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .unwrap_or_else(|| panic!("no token volume: {spec}"));
    let mount = &spec["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"], MOUNT);
    assert_eq!(mount["readOnly"], true);
    assert_eq!(mount["name"], volume["name"]);

    let token = exec(&s, "with-token", &format!("cat {MOUNT}/token"))
        .ok()
        .to_string();
    exec(&s, "with-token", &format!("cat {MOUNT}/namespace; echo")).assert_lines(&["default"]);
    assert_eq!(
        exec(&s, "with-token", &format!("cat {MOUNT}/ca.crt")).ok(),
        ca
    );
    let out = exec(&s, "with-token", &format!("touch {MOUNT}/x"));
    assert!(!out.status.success(), "the volume is read-only: {out:?}");

    let c = claims(&token);
    assert_eq!(c["sub"], "system:serviceaccount:default:default");
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3607
    );
    assert_eq!(c["kubernetes.io"]["pod"]["name"], "with-token");
    assert_eq!(c["kubernetes.io"]["pod"]["uid"], pod["metadata"]["uid"]);
    assert_eq!(c["kubernetes.io"]["node"]["name"], s.node_name().as_str());
    // Its ServiceAccount, bound to a Role that reads pods, can do exactly that: list
    // pods in its namespace, and nothing more.
    let out = with_token(&s, k, &token).run(&["get", "pods"]);
    assert!(
        out.err().contains(r#"pods is forbidden: User "system:serviceaccount:default:default" cannot list resource "pods" in API group "" in the namespace "default""#),
        "{out:?}"
    );
    s.kubectl(k)
        .run(&[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list,watch",
            "--resource=pods",
        ])
        .ok();
    s.kubectl(k)
        .run(&[
            "create",
            "rolebinding",
            "pod-reader",
            "--role=pod-reader",
            "--serviceaccount=default:default",
        ])
        .ok();
    let as_sa = ["--as", "system:serviceaccount:default:default"];
    let can = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        all.extend_from_slice(&as_sa);
        s.kubectl(k).run(&all).stdout.trim().to_string()
    };
    assert_eq!(can(&["list", "pods"]), "yes");
    assert_eq!(can(&["get", "pods/with-token"]), "yes");
    assert_eq!(can(&["delete", "pods"]), "no");
    assert_eq!(can(&["list", "secrets"]), "no");
    assert_eq!(can(&["list", "pods", "-n", "kube-system"]), "no");
    let listed = wait_until(SOON, "the Role to take effect", || {
        let out = with_token(&s, k, &token).run(&["get", "pods", "-o", "name"]);
        out.status
            .success()
            .then(|| out.stdout.clone())
            .ok_or(out.stderr)
    });
    assert!(listed.lines().any(|l| l == "pod/with-token"), "{listed}");
    for denied in [
        vec!["get", "secrets"],
        vec!["get", "pods", "-n", "kube-system"],
        vec!["delete", "pod", "without"],
        vec!["get", "nodes"],
    ] {
        let out = with_token(&s, k, &token).run(&denied);
        assert!(
            out.err()
                .contains("is forbidden: User \"system:serviceaccount:default:default\""),
            "{out:?}"
        );
    }
    let whoami = with_token(&s, Kubectl::Current, &token).run(&["auth", "whoami", "-o", "json"]);
    let review: Value = serde_json::from_str(whoami.ok()).unwrap();
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(
        review["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["with-token"])
    );

    let without = running("without");
    assert!(without["spec"].get("volumes").is_none(), "{without}");
    let out = exec(&s, "without", &format!("ls {MOUNT}"));
    assert!(!out.status.success(), "{out:?}");

    // The token goes with its pod.
    s.kubectl(k)
        .run(&["delete", "pod", "with-token", "--wait=true"])
        .ok();
    wait_until(SOON, "the pod's token refused", || {
        let out = with_token(&s, k, &token).run(&["get", "pods"]);
        (!out.status.success() && out.stderr.contains("Unauthorized"))
            .then_some(())
            .ok_or_else(|| format!("{out:?}"))
    });
}
