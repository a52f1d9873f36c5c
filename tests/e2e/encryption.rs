//! Secrets encrypted at rest: `skiff server --secrets-encryption` and
//! `skiff secrets-encrypt status|rotate-keys`.
//!
//! The database files are searched byte for byte for a Secret's values (plain and
//! base64); a server without encryption is the control that shows the search finds them.

use crate::harness::{run_command, Kubectl, Output, Server};
use base64::Engine as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The SQLite files of a server's datastore.
const DB_FILES: [&str; 3] = ["state.db", "state.db-wal", "state.db-shm"];

/// Upstream's prefix of values sealed with the first key.
const FIRST_KEY_PREFIX: &str = "k8s:enc:aesgcm:v1:aesgcmkey:";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A Secret with `data.password` = `data` and `stringData.token` = `string`.
fn secret_yaml(name: &str, data: &str, string: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\n\
         data:\n  password: {}\nstringData:\n  token: {string}\n",
        b64(data)
    )
}

/// Every form of the two values that could land on disk.
fn traces(data: &str, string: &str) -> Vec<String> {
    vec![data.into(), b64(data), string.into(), b64(string)]
}

/// Which of `needles` the database files hold, as `file: needle`.
fn found_in_db(s: &Server, needles: &[String]) -> Vec<String> {
    let dir = s.data_dir().join("server/db");
    let mut found = Vec::new();
    for file in DB_FILES {
        let Ok(bytes) = std::fs::read(dir.join(file)) else {
            continue;
        };
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                found.push(format!("{file}: {n}"));
            }
        }
    }
    found
}

#[track_caller]
fn assert_not_on_disk(s: &Server, needles: &[String]) {
    let found = found_in_db(s, needles);
    assert!(found.is_empty(), "the database files hold {found:?}");
}

fn apply_secret(s: &Server, name: &str, data: &str, string: &str) {
    s.kubectl(Kubectl::V132)
        .stdin(secret_yaml(name, data, string))
        .run(&["apply", "-f", "-"])
        .ok();
}

/// The Secret as kubectl reads it holds both values.
#[track_caller]
fn assert_readable(s: &Server, name: &str, data: &str, string: &str) {
    let secret = s
        .kubectl(Kubectl::V132)
        .run(&["get", "secret", name, "-o", "json"])
        .json();
    assert_eq!(secret["data"]["password"], b64(data), "{secret}");
    assert_eq!(secret["data"]["token"], b64(string), "{secret}");
    let yaml = s
        .kubectl(Kubectl::V132)
        .run(&["get", "secret", name, "-o", "yaml"]);
    assert!(yaml.ok().contains(&b64(data)), "{yaml:?}");
}

fn secrets_encrypt(s: &Server, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.arg("secrets-encrypt")
        .args(args)
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .env_remove("SKIFF_WRITE_KUBECONFIG");
    run_command(cmd, None, Duration::from_secs(120))
}

/// `secrets-encrypt status -o json`.
fn status(s: &Server) -> serde_json::Value {
    secrets_encrypt(s, &["status", "-o", "json"]).json()
}

/// A one-line error and a non-zero exit, containing `want`.
#[track_caller]
fn assert_one_line_error(out: &Output, want: &str) {
    let err = out.err();
    assert_eq!(err.trim().lines().count(), 1, "{out:?}");
    assert!(err.starts_with("skiff: ") && err.contains(want), "{out:?}");
}

/// A client certificate from the cluster CA for `cn` in group `org`, as (cert, key).
fn client_cert(s: &Server, cn: &str, org: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let tls = s.data_dir().join("server/tls");
    let dir = s.dir();
    let (key, csr, crt) = (
        dir.join(format!("{cn}.key")),
        dir.join(format!("{cn}.csr")),
        dir.join(format!("{cn}.crt")),
    );
    let ext = s.write_file("client-ext.cnf", "extendedKeyUsage=clientAuth\n");
    let run = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut cmd = Command::new("openssl");
        for a in args {
            cmd.arg(a);
        }
        run_command(cmd, None, Duration::from_secs(30)).ok();
    };
    let subj = format!("/CN={cn}/O={org}");
    run(&[
        &"req",
        &"-new",
        &"-newkey",
        &"ec",
        &"-pkeyopt",
        &"ec_paramgen_curve:prime256v1",
        &"-nodes",
        &"-keyout",
        &key,
        &"-subj",
        &subj,
        &"-out",
        &csr,
    ]);
    run(&[
        &"x509",
        &"-req",
        &"-in",
        &csr,
        &"-CA",
        &tls.join("ca.crt"),
        &"-CAkey",
        &tls.join("ca.key"),
        &"-set_serial",
        &"4242",
        &"-days",
        &"1",
        &"-extfile",
        &ext,
        &"-out",
        &crt,
    ]);
    (crt, key)
}

/// The HTTP status of `GET path` with the client certificate `cert`, if any.
fn http_code(s: &Server, path: &str, cert: Option<(&Path, &Path)>) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"]);
    if let Some((crt, key)) = cert {
        cmd.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    cmd.arg(format!("https://127.0.0.1:{}{path}", s.port()));
    run_command(cmd, None, Duration::from_secs(30))
        .ok()
        .to_string()
}

#[test]
fn secrets_are_sealed_on_disk_survive_restarts_and_keys_rotate() {
    let mut s = Server::start_with(&["--secrets-encryption", "--log", "debug"]);
    let (data, string) = ("e2e-data-value-5f1c9a", "e2e-string-value-a83d27");
    let needles = traces(data, string);
    apply_secret(&s, "db", data, string);
    assert_readable(&s, "db", data, string);
    assert_not_on_disk(&s, &needles);
    assert!(
        !found_in_db(&s, &[FIRST_KEY_PREFIX.to_string()]).is_empty(),
        "the sealed Secret is on disk under the first key"
    );

    // The keys: upstream's EncryptionConfiguration, readable by root only.
    let config_path = s.data_dir().join("server/cred/encryption-config.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&config_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert_eq!(config["kind"], "EncryptionConfiguration");
    let providers = &config["resources"][0]["providers"];
    assert_eq!(providers[0]["aesgcm"]["keys"][0]["name"], "aesgcmkey");
    assert_eq!(providers[1]["identity"], serde_json::json!({}));

    s.restart();
    assert_readable(&s, "db", data, string);

    let out = secrets_encrypt(&s, &["status"]);
    for line in [
        "Encryption Status: Enabled",
        "Current Rotation Stage: start",
        "Encryption Keys: 1",
        "Active Key Type Name",
        "* AES-GCM aesgcmkey",
    ] {
        out.assert_has_line(line);
    }

    let out = secrets_encrypt(&s, &["rotate-keys"]);
    assert!(
        out.ok().starts_with("keys rotated, reencryption finished"),
        "{out:?}"
    );
    let after = status(&s);
    let new_key = after["activeKey"].as_str().unwrap().to_string();
    assert_ne!(new_key, "aesgcmkey");
    assert_eq!(after["enabled"], true);
    assert_eq!(after["stage"], "reencrypt_finished");
    assert_eq!(after["keys"].as_array().unwrap().len(), 1, "{after}");
    secrets_encrypt(&s, &["status"]).assert_has_line(&format!("* AES-GCM {new_key}"));
    assert_readable(&s, "db", data, string);
    // No row carries the old key any more; every one carries the new one.
    let old = found_in_db(&s, &[FIRST_KEY_PREFIX.to_string()]);
    assert!(
        old.is_empty(),
        "rows still sealed with the old key: {old:?}"
    );
    assert!(!found_in_db(&s, &[format!("k8s:enc:aesgcm:v1:{new_key}:")]).is_empty());
    assert_not_on_disk(&s, &needles);

    // The rotated keys still serve after a restart, and so do new writes.
    s.restart();
    assert_readable(&s, "db", data, string);
    let (data2, string2) = (
        "e2e-data-after-rotation-77c0",
        "e2e-string-after-rotation-91e4",
    );
    apply_secret(&s, "db2", data2, string2);
    assert_readable(&s, "db2", data2, string2);
    assert_not_on_disk(&s, &traces(data2, string2));

    // Only system:masters may ask; anonymous callers are not told anything.
    let (crt, key) = client_cert(&s, "jane", "developers");
    assert_eq!(
        http_code(&s, "/v1-skiff/secrets-encrypt/status", Some((&crt, &key))),
        "403"
    );
    assert_eq!(
        http_code(&s, "/v1-skiff/secrets-encrypt/status", None),
        "401"
    );

    // Nothing logged at debug level shows a value.
    let log = std::fs::read_to_string(s.dir().join("server.log")).unwrap();
    for n in needles.iter().chain(&traces(data2, string2)) {
        assert!(!log.contains(n.as_str()), "the server log shows {n}");
    }
}

#[test]
fn turning_encryption_on_seals_the_secrets_already_stored_and_it_stays_on() {
    let mut s = Server::start();
    let (data, string) = ("e2e-data-before-0b6e2f", "e2e-string-before-c4d19e");
    apply_secret(&s, "before", data, string);
    assert_readable(&s, "before", data, string);
    // The control: without encryption the values are in the files (`data` only ever
    // as base64), so the search below would find them.
    let stored = [b64(data), string.to_string(), b64(string)];
    let found = found_in_db(&s, &stored);
    for n in &stored {
        assert!(
            found.iter().any(|f| f.ends_with(n.as_str())),
            "the control should find {n} on disk; found {found:?}"
        );
    }
    assert_one_line_error(&secrets_encrypt(&s, &["status"]), "not enabled");
    assert_one_line_error(&secrets_encrypt(&s, &["rotate-keys"]), "not enabled");

    s.stop();
    s.extra_flags().push("--secrets-encryption".into());
    s.start_again();
    assert_not_on_disk(&s, &traces(data, string));
    assert!(!found_in_db(&s, &[FIRST_KEY_PREFIX.to_string()]).is_empty());
    assert_readable(&s, "before", data, string);
    assert_eq!(status(&s)["enabled"], true);

    // Without the flag, encryption stays on: old Secrets read, new ones are sealed.
    s.stop();
    s.extra_flags().retain(|f| f != "--secrets-encryption");
    s.start_again();
    assert_eq!(status(&s)["activeKey"], "aesgcmkey");
    assert_readable(&s, "before", data, string);
    let (data2, string2) = ("e2e-data-flagless-3a9d", "e2e-string-flagless-e61b");
    apply_secret(&s, "after", data2, string2);
    assert_readable(&s, "after", data2, string2);
    assert_not_on_disk(&s, &traces(data2, string2));
    assert_not_on_disk(&s, &traces(data, string));

    // A server that is down: one line, a non-zero exit.
    s.stop();
    assert_one_line_error(&secrets_encrypt(&s, &["status"]), "cannot reach the server");
}
