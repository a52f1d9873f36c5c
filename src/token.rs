//! `skiff token create|list|delete|rotate`: bootstrap tokens, kept as upstream keeps
//! them (Secrets `bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` in
//! kube-system, expiring), and the server token's rotation. Each talks to the running
//! server with the admin kubeconfig.

use crate::cli::{TokenArgs, TokenCommand};
use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use skiff_core::token::{self, Token};
use std::collections::BTreeMap;
use std::path::Path;

/// Where bootstrap tokens live.
const NAMESPACE: &str = "kube-system";
/// The group nodes joining with a bootstrap token would be in (as K3s names its).
const EXTRA_GROUPS: &str = "system:bootstrappers:skiff:default-node-token";

/// Runs a `skiff token` subcommand.
pub async fn run(args: TokenArgs) -> Result<()> {
    let kubeconfig = args.kubeconfig.unwrap_or_else(|| {
        std::env::var_os("SKIFF_WRITE_KUBECONFIG")
            .map(Into::into)
            .unwrap_or_else(|| skiff_core::defaults::KUBECONFIG_PATH.into())
    });
    let client = skiff_core::client::from_file(&kubeconfig)
        .await
        .with_context(|| format!("reading the kubeconfig {}", kubeconfig.display()))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    match args.command {
        TokenCommand::Create {
            ttl,
            description,
            token,
        } => {
            let ttl = parse_ttl(&ttl)?;
            let (id, secret) = match token {
                Some(t) => {
                    if !token::is_bootstrap(&t) {
                        bail!(
                            "--token {t:?} is not a bootstrap token: [a-z0-9]{{6}}.[a-z0-9]{{16}}"
                        );
                    }
                    let (id, secret) = t.split_once('.').unwrap_or_default();
                    (id.to_string(), secret.to_string())
                }
                None => token::new_bootstrap(),
            };
            let obj = bootstrap_secret(&id, &secret, ttl, description.as_deref())?;
            secrets
                .create(&PostParams::default(), &obj)
                .await
                .map_err(|e| match e {
                    kube::Error::Api(s) if s.code == 409 => anyhow!("token {id} already exists"),
                    e => anyhow!(e).context("creating the token"),
                })?;
            let hash = token::ca_hash(&ca_pem(&kubeconfig)?);
            println!("{}", Token::bootstrap(Some(hash), &id, &secret).render());
        }
        TokenCommand::List => {
            let list = secrets
                .list(&ListParams::default().fields("type=bootstrap.kubernetes.io/token"))
                .await
                .context("listing the tokens")?;
            println!(
                "{:<8} {:<10} {:<22} {:<42} DESCRIPTION",
                "TOKEN", "TTL", "EXPIRES", "USAGES"
            );
            let now = jiff::Timestamp::now();
            for s in list.items {
                let field = |k: &str| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(k))
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                };
                let Some(id) = field("token-id") else {
                    continue;
                };
                let expires = field("expiration");
                let ttl = match expires.as_deref().map(str::parse::<jiff::Timestamp>) {
                    None => "<forever>".to_string(),
                    Some(Ok(t)) if t <= now => "<expired>".to_string(),
                    Some(Ok(t)) => human(t.as_second() - now.as_second()),
                    Some(Err(_)) => "<invalid>".to_string(),
                };
                let usages: Vec<String> = s
                    .data
                    .iter()
                    .flat_map(|d| d.keys())
                    .filter_map(|k| k.strip_prefix("usage-bootstrap-"))
                    .filter(|u| field(&format!("usage-bootstrap-{u}")).as_deref() == Some("true"))
                    .map(String::from)
                    .collect();
                println!(
                    "{:<8} {:<10} {:<22} {:<42} {}",
                    id,
                    ttl,
                    expires.unwrap_or_else(|| "<never>".into()),
                    usages.join(","),
                    field("description").unwrap_or_default()
                );
            }
        }
        TokenCommand::Delete { ids } => {
            let mut missing = Vec::new();
            for t in ids {
                // A whole token, or the id alone.
                let id = t
                    .rsplit("::")
                    .next()
                    .unwrap_or(&t)
                    .split('.')
                    .next()
                    .unwrap_or(&t)
                    .to_string();
                match secrets
                    .delete(&format!("bootstrap-token-{id}"), &DeleteParams::default())
                    .await
                {
                    Ok(_) => println!("deleted token {id}"),
                    Err(kube::Error::Api(s)) if s.code == 404 => missing.push(id),
                    Err(e) => return Err(anyhow!(e).context(format!("deleting token {id}"))),
                }
            }
            if !missing.is_empty() {
                bail!("no such token: {}", missing.join(", "));
            }
        }
        TokenCommand::Rotate { new_token } => {
            let body = serde_json::json!({ "token": new_token });
            let req = http::Request::post(skiff_core::join::TOKEN_ROTATE_PATH)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.to_string().into_bytes())
                .context("building the request")?;
            let answer: serde_json::Value = client.request(req).await.map_err(|e| match e {
                kube::Error::Api(s) => anyhow!("the server refused: {}", s.message),
                e => anyhow!(e).context("rotating the server token"),
            })?;
            let token = answer
                .get("token")
                .and_then(|t| t.as_str())
                .ok_or_else(|| anyhow!("the server's answer has no token"))?;
            println!("{token}");
        }
    }
    Ok(())
}

/// `--ttl`: seconds with a unit (`30m`, `24h`, `7d`), or `0` for a token that never
/// expires.
fn parse_ttl(text: &str) -> Result<Option<i64>> {
    let bad =
        || anyhow!("--ttl {text:?} is not a duration such as 30m, 24h or 7d (0: never expires)");
    let t = text.trim();
    if t == "0" {
        return Ok(None);
    }
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(bad()),
    };
    if secs <= 0 {
        return Err(bad());
    }
    Ok(Some(secs))
}

fn human(secs: i64) -> String {
    match secs {
        s if s >= 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn bootstrap_secret(
    id: &str,
    secret: &str,
    ttl: Option<i64>,
    description: Option<&str>,
) -> Result<Secret> {
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    data.insert("token-id".into(), id.into());
    data.insert("token-secret".into(), secret.into());
    data.insert("usage-bootstrap-authentication".into(), "true".into());
    data.insert("usage-bootstrap-signing".into(), "true".into());
    data.insert("auth-extra-groups".into(), EXTRA_GROUPS.into());
    if let Some(secs) = ttl {
        let at = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .context("--ttl is too long")?;
        data.insert(
            "expiration".into(),
            at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
    }
    if let Some(d) = description {
        data.insert("description".into(), d.into());
    }
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": NAMESPACE},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": data,
    }))?)
}

/// The cluster CA from the kubeconfig, for the token's hash.
fn ca_pem(kubeconfig: &Path) -> Result<String> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let data = config
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .ok_or_else(|| anyhow!("{} has no CA data", kubeconfig.display()))?;
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .context("the kubeconfig's CA data is not base64")?;
    String::from_utf8(pem).context("the kubeconfig's CA is not text")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("0").unwrap(), None);
        assert_eq!(parse_ttl("90s").unwrap(), Some(90));
        assert_eq!(parse_ttl("24h").unwrap(), Some(86400));
        assert_eq!(parse_ttl("2d").unwrap(), Some(172800));
        for bad in ["", "h", "5", "-1h", "3w", "0h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
