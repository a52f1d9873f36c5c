//! Static pods: pod manifests (YAML or JSON) in `<data-dir>/agent/pod-manifests/`,
//! which the node runs without anyone creating them through the API. As upstream, each
//! appears in the API as a mirror pod named `<name>-<node>`, bound to the node, owned by
//! the Node, and annotated `kubernetes.io/config.mirror`; the node then runs it like any
//! pod bound to it. A changed file replaces its mirror pod; a removed file deletes it.
//! The folder is looked at every [`RESCAN`].

use super::Kubelet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the manifests folder is read again.
pub const RESCAN: Duration = Duration::from_secs(5);
/// The annotation marking a mirror pod, with the manifest's hash.
pub const MIRROR: &str = "kubernetes.io/config.mirror";
/// Where the pod came from.
const SOURCE: &str = "kubernetes.io/config.source";

/// The mirror pods the manifests in `dir` describe, by name: (pod, hash).
pub fn read_manifests(dir: &Path, node: &str) -> BTreeMap<String, (Pod, String)> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if !matches!(ext, "yaml" | "yml" | "json") || !path.is_file() {
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "reading a static pod manifest");
                continue;
            }
        };
        let mut pod: Pod = match serde_yaml_ng::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "a static pod manifest that is not a Pod");
                continue;
            }
        };
        let Some(name) = pod.metadata.name.clone() else {
            tracing::warn!(file = %path.display(), "a static pod manifest without a name");
            continue;
        };
        let hash = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
        let mirror = format!("{name}-{node}");
        pod.metadata.name = Some(mirror.clone());
        pod.metadata.namespace = Some(
            pod.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        );
        let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(MIRROR.into(), hash.clone());
        annotations.insert(SOURCE.into(), "file".into());
        let spec = pod.spec.get_or_insert_with(Default::default);
        spec.node_name = Some(node.to_string());
        pod.status = None;
        out.insert(mirror, (pod, hash));
    }
    out
}

/// Keeps the mirror pods in step with the manifests until cancelled.
pub async fn run(k: Arc<Kubelet>, node_uid: String, cancel: CancellationToken) {
    let dir = k.config.data_dir.join("agent").join("pod-manifests");
    let node = k.config.node_name.clone();
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.clone(),
        uid: node_uid,
        controller: Some(true),
        ..OwnerReference::default()
    };
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let wanted = read_manifests(&dir, &node);
        // Every round looks each mirror pod up: one deleted through the API comes back.
        for (name, (mut pod, hash)) in wanted.clone() {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(k.client.clone(), &ns);
            pod.metadata.owner_references = Some(vec![owner.clone()]);
            // A mirror pod of another version of the file goes first.
            match api.get_opt(&name).await {
                Ok(Some(existing)) => {
                    let same = existing
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(MIRROR))
                        == Some(&hash);
                    if same {
                        known.insert(name, hash);
                        continue;
                    }
                    let _ = api.delete(&name, &DeleteParams::default()).await;
                    // Created again once the old one is gone, on a later round.
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "looking up a mirror pod");
                    continue;
                }
            }
            match api.create(&PostParams::default(), &pod).await {
                Ok(_) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), "static pod created");
                    known.insert(name, hash);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => tracing::warn!(pod = %name, error = %e, "creating a mirror pod"),
            }
        }
        let gone: Vec<String> = known
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let ns = known_namespace(&k, &name)
                .await
                .unwrap_or_else(|| "default".into());
            let api: Api<Pod> = Api::namespaced(k.client.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {
                    known.remove(&name);
                }
                Err(e) => tracing::warn!(pod = %name, error = %e, "deleting a mirror pod"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RESCAN) => {}
        }
    }
}

/// The namespace of the mirror pod `name` on this node, from the API.
async fn known_namespace(k: &Kubelet, name: &str) -> Option<String> {
    let api: Api<Pod> = Api::all(k.client.clone());
    let params = kube::api::ListParams::default().fields(&format!(
        "metadata.name={name},spec.nodeName={}",
        k.config.node_name
    ));
    api.list(&params)
        .await
        .ok()?
        .items
        .into_iter()
        .next()?
        .metadata
        .namespace
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_become_mirror_pods() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("web.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: kube-system\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: [").unwrap();
        let pods = read_manifests(dir.path(), "edge-1");
        assert_eq!(pods.len(), 1);
        let (pod, hash) = &pods["web-edge-1"];
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("edge-1")
        );
        assert_eq!(pod.metadata.annotations.as_ref().unwrap()[MIRROR], *hash);
    }
}
