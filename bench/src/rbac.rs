//! `--suite rbac`: what authorization costs. With 1,000 RoleBindings present, the
//! latency of a GET of one object as a user allowed through a RoleBinding, beside the
//! same GET as the admin (`system:masters`, allowed before RBAC is asked) and as a user
//! bound to `cluster-admin` through a ClusterRoleBinding (RBAC's index, the shortest
//! path through it).
//!
//! The users' client certificates are signed with `openssl` by the cluster CA in the
//! server's data dir. Rounds alternate between the users, so drift in the machine's
//! load falls on all of them alike.

use super::{ms, Conn, Server, Stats, Target};
use anyhow::{bail, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
pub struct Plan<'a> {
    /// The skiff binary.
    pub skiff: &'a Path,
    /// The server's port.
    pub port: u16,
    /// RoleBindings present.
    pub bindings: usize,
    /// GETs per user (spread over rounds).
    pub gets: usize,
}

const NS: &str = "bench-rbac";

/// A client certificate for `user` in `group` (none if empty), signed by the CA in
/// `tls`, as a [`Target`].
fn user_target(tls: &Path, work: &Path, user: &str, port: u16) -> Result<Target> {
    let key = work.join(format!("{user}.key"));
    let csr = work.join(format!("{user}.csr"));
    let crt = work.join(format!("{user}.crt"));
    let ext = work.join("client.ext");
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\n")?;
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .context("running openssl")?;
        if !out.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let p = |p: &Path| p.to_string_lossy().into_owned();
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&key),
        "-subj",
        &format!("/CN={user}"),
        "-out",
        &p(&csr),
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&tls.join("ca.crt")),
        "-CAkey",
        &p(&tls.join("ca.key")),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&crt),
    ])?;
    let ca = std::fs::read(tls.join("ca.crt"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c?)?;
    }
    let chain =
        CertificateDer::pem_slice_iter(&std::fs::read(&crt)?).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&std::fs::read(&key)?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Target {
        tls: Arc::new(config),
        addr: format!("127.0.0.1:{port}"),
    })
}

async fn create(c: &mut Conn, path: &str, body: &Value) -> Result<()> {
    let (code, resp) = c.call("POST", path, Some(body)).await?;
    if code != 201 && code != 409 {
        bail!(
            "POST {path} answered {code}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    Ok(())
}

fn binding(name: &str, user: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
           "metadata": {"name": name, "namespace": NS},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
           "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]})
}

/// Runs the suite and prints the figures.
pub async fn run(plan: Plan<'_>) -> Result<()> {
    let server = Server::start(plan.skiff, plan.port)?;
    let admin = super::target(&server.kubeconfig, plan.port)?;
    let mut c = Conn::open(&admin).await?;
    create(
        &mut c,
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .await?;
    create(
        &mut c,
        &format!("/api/v1/namespaces/{NS}/configmaps"),
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "target"}, "data": {"k": "v"}}),
    )
    .await?;
    create(
        &mut c,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles"),
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
    )
    .await?;
    // The other bindings name other users; the measured user's binding is the last.
    let started = Instant::now();
    let path = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings");
    for i in 0..plan.bindings.saturating_sub(1) {
        create(
            &mut c,
            &path,
            &binding(&format!("rb-{i:04}"), &format!("user-{i}")),
        )
        .await?;
    }
    create(&mut c, &path, &binding("rb-bench", "bench-reader")).await?;
    create(
        &mut c,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "bench-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bench-admin"}]}),
    )
    .await?;
    println!(
        "created {} RoleBindings in {:.1} s",
        plan.bindings,
        started.elapsed().as_secs_f64()
    );
    let tls = server.dir.path().join("data").join("server").join("tls");
    let work = server.dir.path();
    let users = [
        ("system:masters (admin)", admin.clone()),
        (
            "cluster-admin via ClusterRoleBinding",
            user_target(&tls, work, "bench-admin", plan.port)?,
        ),
        (
            "Role via RoleBinding",
            user_target(&tls, work, "bench-reader", plan.port)?,
        ),
    ];
    let get = format!("/api/v1/namespaces/{NS}/configmaps/target");
    let mut conns = Vec::new();
    for (name, t) in &users {
        let mut conn = Conn::open(t).await?;
        // The index follows the store's watch: wait until the binding is seen.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = conn.call("GET", &get, None).await?;
            if code == 200 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{name}: GET answered {code}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Warm up.
        for _ in 0..200 {
            conn.call("GET", &get, None).await?;
        }
        conns.push(conn);
    }
    let rounds = 20;
    let per_round = (plan.gets / rounds).max(1);
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); users.len()];
    for _ in 0..rounds {
        for (i, conn) in conns.iter_mut().enumerate() {
            for _ in 0..per_round {
                let s = Instant::now();
                let (code, _) = conn.call("GET", &get, None).await?;
                let took = s.elapsed();
                if code != 200 {
                    bail!("{}: GET answered {code}", users[i].0);
                }
                samples[i].push(took);
            }
        }
    }
    let stats: Vec<Stats> = samples.into_iter().map(Stats::new).collect();
    println!(
        "GET of one ConfigMap, {} sequential requests per user on one connection, {} RoleBindings present:",
        per_round * rounds,
        plan.bindings
    );
    for ((name, _), s) in users.iter().zip(&stats) {
        println!(
            "  {name:<38} p50 {} p99 {}",
            ms(s.pct(0.5)),
            ms(s.pct(0.99))
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let (masters, crb, rb) = (&stats[0], &stats[1], &stats[2]);
    println!(
        "RoleBinding user / system:masters: p50 {:.2}x, p99 {:.2}x (goal p99 <= 1.2x)",
        ratio(rb.pct(0.5), masters.pct(0.5)),
        ratio(rb.pct(0.99), masters.pct(0.99))
    );
    println!(
        "RoleBinding user / cluster-admin via ClusterRoleBinding: p50 {:.2}x, p99 {:.2}x (goal p99 <= 1.2x)",
        ratio(rb.pct(0.5), crb.pct(0.5)),
        ratio(rb.pct(0.99), crb.pct(0.99))
    );
    Ok(())
}
