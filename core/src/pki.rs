//! The cluster's certificate authority and the certificates it signs.
//!
//! One CA per cluster signs the API server's serving certificate and every client
//! certificate (admin, nodes, control-plane components). Keys are ECDSA P-256: small,
//! fast to generate on a Raspberry Pi, and accepted by every Kubernetes client.
//! Files are PEM, private keys mode 0600, and a restart reuses what is on disk.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a leaf certificate is valid.
const LEAF_VALIDITY: Duration = Duration::days(365);
/// A leaf certificate this close to expiry is re-issued on start.
const RENEW_BEFORE: Duration = Duration::days(90);

/// Errors of the PKI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// rcgen refused to build or sign a certificate.
    #[error("{what}")]
    Cert {
        /// What was being built.
        what: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate on disk is not a certificate.
    #[error("parsing certificate {path}")]
    Parse {
        /// The file.
        path: String,
    },
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertPair {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PEM, PKCS#8).
    pub key_pem: String,
}

/// The cluster CA, loaded from or created in a folder.
pub struct Ca {
    /// The CA certificate and key.
    pub pair: CertPair,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone)]
pub enum Usage {
    /// A TLS server with these subject alternative names (DNS names or IP addresses).
    Server {
        /// The SANs.
        sans: Vec<String>,
    },
    /// A TLS client: Kubernetes reads the user from the CN and the groups from O.
    Client {
        /// The user name.
        user: String,
        /// The groups.
        groups: Vec<String>,
    },
}

impl Ca {
    /// Loads the CA from `dir/ca.crt` and `dir/ca.key`, or creates both.
    pub fn load_or_create(dir: &Path) -> Result<Ca> {
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if crt.exists() && key.exists() {
            let pair = CertPair {
                cert_pem: read(&crt)?,
                key_pem: read(&key)?,
            };
            let kp = KeyPair::from_pem(&pair.key_pem).map_err(|source| Error::Cert {
                what: format!("loading CA key {}", key.display()),
                source,
            })?;
            let issuer =
                Issuer::from_ca_cert_pem(&pair.cert_pem, kp).map_err(|source| Error::Cert {
                    what: format!("loading CA certificate {}", crt.display()),
                    source,
                })?;
            return Ok(Ca { pair, issuer });
        }
        let kp = KeyPair::generate().map_err(cert_err("generating CA key"))?;
        let mut params = CertificateParams::default();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + CA_VALIDITY;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("skiff-ca@{}", now.unix_timestamp()),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&kp)
            .map_err(cert_err("self-signing CA"))?;
        let pair = CertPair {
            cert_pem: cert.pem(),
            key_pem: kp.serialize_pem(),
        };
        write_file_atomic(&key, pair.key_pem.as_bytes(), 0o600).map_err(io_err("writing", &key))?;
        write_file_atomic(&crt, pair.cert_pem.as_bytes(), 0o644)
            .map_err(io_err("writing", &crt))?;
        tracing::info!(path = %crt.display(), "created cluster CA");
        let issuer = Issuer::new(params, kp);
        Ok(Ca { pair, issuer })
    }

    /// The SHA-256 of the CA certificate's PEM, hex: the hash a join token pins.
    pub fn hash(&self) -> String {
        crate::token::ca_hash(&self.pair.cert_pem)
    }

    /// Signs a new leaf certificate for `usage`.
    pub fn issue(&self, usage: &Usage) -> Result<CertPair> {
        let kp = KeyPair::generate().map_err(cert_err("generating key"))?;
        let mut params = CertificateParams::default();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + LEAF_VALIDITY;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let mut dn = DistinguishedName::new();
        match usage {
            Usage::Server { sans } => {
                dn.push(DnType::CommonName, "skiff");
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.subject_alt_names = sans
                    .iter()
                    .map(|s| match s.parse::<IpAddr>() {
                        Ok(ip) => Ok(SanType::IpAddress(ip)),
                        Err(_) => s
                            .clone()
                            .try_into()
                            .map(SanType::DnsName)
                            .map_err(cert_err(&format!("subject alternative name {s:?}"))),
                    })
                    .collect::<Result<_>>()?;
            }
            Usage::Client { user, groups } => {
                dn.push(DnType::CommonName, user.as_str());
                for g in groups {
                    dn.push(DnType::OrganizationName, g.as_str());
                }
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        params.distinguished_name = dn;
        let cert = params
            .signed_by(&kp, &self.issuer)
            .map_err(cert_err("signing certificate"))?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: kp.serialize_pem(),
        })
    }

    /// Loads `dir/<name>.crt` and `.key` if they exist, were signed for the same usage
    /// (same SANs, same subject) and are not close to expiry; otherwise issues new ones.
    pub fn load_or_issue(&self, dir: &Path, name: &str, usage: &Usage) -> Result<CertPair> {
        let (crt, key) = leaf_paths(dir, name);
        if crt.exists() && key.exists() {
            let pair = CertPair {
                cert_pem: read(&crt)?,
                key_pem: read(&key)?,
            };
            if still_fits(&pair.cert_pem, usage, &crt)? {
                return Ok(pair);
            }
            tracing::info!(
                cert = name,
                "re-issuing certificate (subject, SANs or expiry changed)"
            );
        }
        let pair = self.issue(usage)?;
        write_file_atomic(&key, pair.key_pem.as_bytes(), 0o600).map_err(io_err("writing", &key))?;
        write_file_atomic(&crt, pair.cert_pem.as_bytes(), 0o644)
            .map_err(io_err("writing", &crt))?;
        Ok(pair)
    }
}

/// Whether `cert_pem` was signed for `usage` (same subject, SANs covering them) and
/// has more than 90 days left.
pub fn fits(cert_pem: &str, usage: &Usage) -> bool {
    still_fits(cert_pem, usage, Path::new("<memory>")).unwrap_or(false)
}

/// When `cert_pem` expires (Unix seconds).
pub fn expires_at(cert_pem: &str) -> Option<i64> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// How long before expiry a leaf certificate is renewed.
pub const RENEW_BEFORE_SECS: i64 = RENEW_BEFORE.whole_seconds();

/// Loads the private key at `path` (PEM, PKCS#8), or makes an ECDSA P-256 key there
/// (mode 0600) on first use; returns it as PKCS#8 DER. The ServiceAccount token
/// signing key (`service.key`) lives this way: made once, kept across restarts, so
/// tokens handed out before a restart stay valid.
pub fn load_or_create_key(path: &Path) -> Result<Vec<u8>> {
    let what = || format!("loading key {}", path.display());
    if path.exists() {
        let pem = read(path)?;
        let kp = KeyPair::from_pem(&pem).map_err(|source| Error::Cert {
            what: what(),
            source,
        })?;
        return Ok(kp.serialize_der());
    }
    let kp = KeyPair::generate().map_err(cert_err("generating a signing key"))?;
    write_file_atomic(path, kp.serialize_pem().as_bytes(), 0o600)
        .map_err(io_err("writing", path))?;
    Ok(kp.serialize_der())
}

/// The certificate and key paths of a leaf named `name` in `dir`.
pub fn leaf_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    )
}

fn still_fits(cert_pem: &str, usage: &Usage, path: &Path) -> Result<bool> {
    let parse_err = || Error::Parse {
        path: path.display().to_string(),
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|_| parse_err())?;
    let cert = pem.parse_x509().map_err(|_| parse_err())?;
    let expires = cert.validity().not_after.timestamp();
    if expires - OffsetDateTime::now_utc().unix_timestamp() < RENEW_BEFORE.whole_seconds() {
        return Ok(false);
    }
    match usage {
        Usage::Server { sans } => {
            let mut have: Vec<String> = Vec::new();
            if let Ok(Some(ext)) = cert.subject_alternative_name() {
                for n in &ext.value.general_names {
                    match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => {
                            have.push(d.to_string())
                        }
                        x509_parser::extensions::GeneralName::IPAddress(b) => {
                            let ip: Option<IpAddr> = match b.len() {
                                4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                                16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                                _ => None,
                            };
                            if let Some(ip) = ip {
                                have.push(ip.to_string());
                            }
                        }
                        _ => {}
                    }
                }
            }
            let want: Vec<String> = sans
                .iter()
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map(|ip| ip.to_string())
                        .unwrap_or(s.clone())
                })
                .collect();
            Ok(want.iter().all(|w| have.contains(w)))
        }
        Usage::Client { user, groups } => {
            let cn: Vec<&str> = cert
                .subject()
                .iter_common_name()
                .filter_map(|a| a.as_str().ok())
                .collect();
            let orgs: Vec<&str> = cert
                .subject()
                .iter_organization()
                .filter_map(|a| a.as_str().ok())
                .collect();
            Ok(cn == [user.as_str()] && orgs.iter().copied().eq(groups.iter().map(String::as_str)))
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_err("reading", path))
}

fn cert_err(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |source| Error::Cert {
        what: what.to_string(),
        source,
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// Writes `data` to `path` with `mode`: to a temporary file first, synced, then renamed,
/// so a crash never leaves half a key or certificate behind. Parent folders are created.
pub fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    // The mode given to open() is filtered by the umask; set it exactly.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ca_is_reused_and_leaf_reissued_only_when_sans_change() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.hash(), again.hash());
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let usage = Usage::Server {
            sans: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        };
        let a = ca.load_or_issue(dir.path(), "serving", &usage).unwrap();
        let b = ca.load_or_issue(dir.path(), "serving", &usage).unwrap();
        assert_eq!(a.cert_pem, b.cert_pem, "same SANs: reused");
        let more = Usage::Server {
            sans: vec!["localhost".into(), "10.0.0.9".into()],
        };
        let c = ca.load_or_issue(dir.path(), "serving", &more).unwrap();
        assert_ne!(a.cert_pem, c.cert_pem, "new SAN: re-issued");

        let admin = Usage::Client {
            user: "system:admin".into(),
            groups: vec!["system:masters".into()],
        };
        let d = ca.load_or_issue(dir.path(), "admin", &admin).unwrap();
        let e = ca.load_or_issue(dir.path(), "admin", &admin).unwrap();
        assert_eq!(d.cert_pem, e.cert_pem);
    }

    #[test]
    fn a_signing_key_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls").join("service.key");
        let a = load_or_create_key(&path).unwrap();
        let b = load_or_create_key(&path).unwrap();
        assert_eq!(a, b, "kept across loads");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
