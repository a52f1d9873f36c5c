//! `skiff secrets-encrypt status|rotate-keys`: asks the running server, with its admin
//! kubeconfig, and prints the answer as K3s does.

use crate::cli::{OutputFormat, SecretsEncryptArgs, SecretsEncryptCommand};
use anyhow::{bail, Context, Result};
use skiff_server::encryption::{request_rotate_keys, request_status, Status};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs one `skiff secrets-encrypt` subcommand.
pub fn run(args: SecretsEncryptArgs) -> Result<ExitCode> {
    let kubeconfig = args
        .kubeconfig
        .unwrap_or_else(|| PathBuf::from(skiff_core::defaults::KUBECONFIG_PATH));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let command = args.command;
    let status = runtime.block_on(async {
        let client = skiff_core::client::from_file(&kubeconfig)
            .await
            .with_context(|| format!("kubeconfig {}", kubeconfig.display()))?;
        let answer = match command {
            SecretsEncryptCommand::Status => request_status(&client).await,
            SecretsEncryptCommand::RotateKeys => request_rotate_keys(&client).await,
        };
        answer.with_context(|| format!("asking the server of {}", kubeconfig.display()))
    })?;
    if !status.enabled && status.keys.is_empty() {
        bail!(
            "secrets encryption is not enabled on this server (start it with --secrets-encryption)"
        );
    }
    match (command, args.output) {
        (_, OutputFormat::Json) => {
            let text = serde_json::to_string_pretty(&status).context("encoding the status")?;
            println!("{text}");
        }
        (SecretsEncryptCommand::Status, OutputFormat::Text) => print!("{}", render(&status)),
        (SecretsEncryptCommand::RotateKeys, OutputFormat::Text) => println!(
            "keys rotated, reencryption finished: active key {}",
            status.active_key.as_deref().unwrap_or("none")
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The status as K3s prints it: state, stage, then a table of the keys.
fn render(status: &Status) -> String {
    let mut out = String::new();
    let state = if status.enabled {
        "Enabled"
    } else {
        "Disabled"
    };
    let _ = writeln!(out, "Encryption Status: {state}");
    let _ = writeln!(out, "Current Rotation Stage: {}", status.stage);
    let _ = writeln!(out, "Encryption Keys: {}", status.keys.len());
    let _ = writeln!(out);
    let width = status
        .keys
        .iter()
        .map(|k| k.key_type.len())
        .chain(std::iter::once("Key Type".len()))
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "Active  {:<width$}  Name", "Key Type");
    let _ = writeln!(out, "------  {:<width$}  ----", "--------");
    for k in &status.keys {
        let mark = if k.active { " *" } else { "" };
        let _ = writeln!(out, "{mark:<6}  {:<width$}  {}", k.key_type, k.name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_server::encryption::KeyStatus;

    #[test]
    fn status_prints_as_k3s_does() {
        let status = Status {
            enabled: true,
            stage: "reencrypt_finished".into(),
            active_key: Some("aesgcmkey-20261203T170629Z".into()),
            keys: vec![
                KeyStatus {
                    name: "aesgcmkey-20261203T170629Z".into(),
                    key_type: "AES-GCM".into(),
                    active: true,
                },
                KeyStatus {
                    name: "aesgcmkey".into(),
                    key_type: "AES-GCM".into(),
                    active: false,
                },
            ],
        };
        assert_eq!(
            render(&status),
            "Encryption Status: Enabled\n\
             Current Rotation Stage: reencrypt_finished\n\
             Encryption Keys: 2\n\
             \n\
             Active  Key Type  Name\n\
             ------  --------  ----\n \
             *      AES-GCM   aesgcmkey-20261203T170629Z\n        \
             AES-GCM   aesgcmkey\n"
        );
    }
}
