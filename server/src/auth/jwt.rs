//! ServiceAccount tokens as JSON Web Tokens: signing, the signature check and the
//! claims upstream's issuer writes.
//!
//! Tokens are ES256 (ECDSA P-256 with SHA-256), signed with `<data-dir>/server/tls/
//! service.key`, the same kind of key as the rest of skiff's PKI; upstream accepts RSA
//! and ECDSA keys alike. The key id (`kid`) is upstream's: the unpadded base64url of the
//! SHA-256 of the public key's PKIX (SubjectPublicKeyInfo) DER.
//!
//! [`Signer`] signs and checks the signature; [`check_claims`] is the pure part of the
//! validation (issuer, audience, time), so tests feed it plain values.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;

/// The issuer of skiff's tokens (`--service-account-issuer` as K3s sets it).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The issuer of legacy Secret-based tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// The API server's audiences (`--api-audiences`): the issuer, and `skiff` as K3s adds
/// `k3s`.
pub const API_AUDIENCES: [&str; 2] = [ISSUER, "skiff"];
/// How far clocks may disagree when times are checked, as upstream allows.
pub const LEEWAY_SECONDS: i64 = 60;

/// The DER prefix of a P-256 public key's SubjectPublicKeyInfo, before the 65-byte
/// uncompressed point (`id-ecPublicKey`, `prime256v1`, BIT STRING).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why a token was refused or could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The key is not a PKCS#8 ECDSA P-256 key.
    #[error("the signing key is not a PKCS#8 ECDSA P-256 key")]
    BadKey,
    /// Signing failed.
    #[error("signing failed")]
    Sign,
    /// The token is not three base64url parts with a JSON header and payload.
    #[error("malformed token")]
    Malformed,
    /// The header names another algorithm or key.
    #[error("unexpected token algorithm or key id")]
    Algorithm,
    /// The signature does not match.
    #[error("invalid signature")]
    Signature,
    /// The issuer is not ours.
    #[error("token issuer {0:?} is not accepted")]
    Issuer(String),
    /// None of the audiences is one of the API's.
    #[error("token audiences {0:?} are invalid for the target audiences")]
    Audience(Vec<String>),
    /// The token has expired.
    #[error("token has expired")]
    Expired,
    /// The token is not valid yet.
    #[error("token is not valid yet")]
    NotYetValid,
    /// A claim upstream requires is missing.
    #[error("token lacks the {0} claim")]
    Missing(&'static str),
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// The `aud` claim: one string or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    /// The audiences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(a) => a.clone(),
        }
    }
}

/// A name and uid, as the `kubernetes.io` claim refers to objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// The object's name.
    pub name: String,
    /// The object's uid.
    pub uid: String,
}

/// The private `kubernetes.io` claim of a bound token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: Ref,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    /// The Secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
    /// The node the token is bound to, or the node of the pod it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
}

/// The claims of a ServiceAccount token, as upstream writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer.
    pub iss: String,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub sub: String,
    /// The audiences.
    pub aud: Audience,
    /// Expiry (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The token's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// What the token is bound to.
    #[serde(
        rename = "kubernetes.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes: Option<KubernetesClaims>,
}

/// Signs tokens and checks their signatures with one key.
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a PKCS#8 DER ECDSA P-256 key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Signer> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|_| Error::BadKey)?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(spki));
        Ok(Signer { key, rng, kid })
    }

    /// The key id tokens carry in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A signed token carrying `claims`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let payload = serde_json::to_vec(claims).map_err(|_| Error::Sign)?;
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let sig = self
            .key
            .sign(&self.rng, out.as_bytes())
            .map_err(|_| Error::Sign)?;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        Ok(out)
    }

    /// The claims of `token` if this key signed it. Nothing else is checked here.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        serde_json::from_value(self.verify_value(token)?).map_err(|_| Error::Malformed)
    }

    /// The claims of `token`, as JSON, if this key signed it.
    pub fn verify_value(&self, token: &str) -> Result<Value> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Malformed);
        };
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| Error::Malformed);
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| Error::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(Error::Algorithm);
        }
        if let Some(kid) = header.get("kid").and_then(Value::as_str) {
            if kid != self.kid {
                return Err(Error::Algorithm);
            }
        }
        let signed_len = token.len() - sig.len() - 1;
        let sig = decode(sig)?;
        signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        )
        .verify(&token.as_bytes()[..signed_len], &sig)
        .map_err(|_| Error::Signature)?;
        serde_json::from_slice(&decode(payload)?).map_err(|_| Error::Malformed)
    }

    /// The public key as a JSON Web Key Set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        // An uncompressed point: 0x04, then x and y, 32 bytes each.
        let (x, y) = (&point[1..33], &point[33..65]);
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }
}

/// Checks what does not need the datastore: the issuer is ours, one audience is one of
/// `audiences`, and `now` (seconds since the epoch) is within the token's validity
/// (with [`LEEWAY_SECONDS`]).
pub fn check_claims(claims: &Claims, now: i64, audiences: &[String]) -> Result<()> {
    if claims.iss != ISSUER {
        return Err(Error::Issuer(claims.iss.clone()));
    }
    let aud = claims.aud.to_vec();
    if !aud.iter().any(|a| audiences.contains(a)) {
        return Err(Error::Audience(aud));
    }
    let exp = claims.exp.ok_or(Error::Missing("exp"))?;
    if now > exp + LEEWAY_SECONDS {
        return Err(Error::Expired);
    }
    if let Some(nbf) = claims.nbf {
        if now + LEEWAY_SECONDS < nbf {
            return Err(Error::NotYetValid);
        }
    }
    if claims.kubernetes.is_none() {
        return Err(Error::Missing("kubernetes.io"));
    }
    Ok(())
}

/// The OpenID discovery document (`/.well-known/openid-configuration`), as upstream
/// serves it for `--service-account-issuer`: the key set at the API server's external
/// address (`host:port`), as upstream's default `--service-account-jwks-uri`.
pub fn openid_configuration(server_address: &str) -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("https://{server_address}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        Signer::from_pkcs8(der.as_ref()).unwrap()
    }

    fn claims(now: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "system:serviceaccount:ns:default".into(),
            aud: Audience::Many(vec![ISSUER.into()]),
            exp: Some(now + 3600),
            iat: Some(now),
            nbf: Some(now),
            jti: Some("id".into()),
            kubernetes: Some(KubernetesClaims {
                namespace: "ns".into(),
                serviceaccount: Ref {
                    name: "default".into(),
                    uid: "u".into(),
                },
                ..KubernetesClaims::default()
            }),
        }
    }

    fn api() -> Vec<String> {
        API_AUDIENCES.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips_its_claims() {
        let s = signer();
        let c = claims(1000);
        let token = s.sign(&c).unwrap();
        assert_eq!(s.verify(&token).unwrap(), c);
        assert_eq!(check_claims(&c, 1000, &api()), Ok(()));
        // The claim names are upstream's.
        let payload = token.split('.').nth(1).unwrap();
        let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(v["kubernetes.io"]["serviceaccount"]["name"], "default");
        assert!(v["kubernetes.io"].get("pod").is_none());
    }

    #[test]
    fn another_key_or_a_changed_token_is_refused() {
        let (a, b) = (signer(), signer());
        let token = a.sign(&claims(1000)).unwrap();
        assert_eq!(b.verify(&token), Err(Error::Algorithm), "other kid");
        // The same header with another key's signature.
        let forged = format!(
            "{}.{}",
            token.rsplit_once('.').unwrap().0,
            b.sign(&claims(1000)).unwrap().rsplit_once('.').unwrap().1
        );
        assert_eq!(a.verify(&forged), Err(Error::Signature));
        // A changed payload.
        let mut c = claims(1000);
        c.sub = "system:serviceaccount:ns:admin".into();
        let other = a.sign(&c).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let swapped = format!(
            "{}.{}.{}",
            parts[0],
            other.split('.').nth(1).unwrap(),
            parts[2]
        );
        assert_eq!(a.verify(&swapped), Err(Error::Signature));
        assert_eq!(a.verify("a.b"), Err(Error::Malformed));
        assert_eq!(a.verify("not a token"), Err(Error::Malformed));
    }

    #[test]
    fn time_issuer_and_audience_are_checked() {
        let c = claims(1000);
        assert_eq!(
            check_claims(&c, 1000 + 3600 + LEEWAY_SECONDS + 1, &api()),
            Err(Error::Expired)
        );
        assert_eq!(check_claims(&c, 1000 + 3600 + 30, &api()), Ok(()));
        assert_eq!(
            check_claims(&c, 1000 - LEEWAY_SECONDS - 1, &api()),
            Err(Error::NotYetValid)
        );
        let mut wrong = c.clone();
        wrong.iss = "https://elsewhere".into();
        assert!(matches!(
            check_claims(&wrong, 1000, &api()),
            Err(Error::Issuer(_))
        ));
        let mut wrong = c.clone();
        wrong.aud = Audience::One("vault".into());
        assert!(matches!(
            check_claims(&wrong, 1000, &api()),
            Err(Error::Audience(_))
        ));
        let mut one = c.clone();
        one.aud = Audience::One("skiff".into());
        assert_eq!(check_claims(&one, 1000, &api()), Ok(()));
    }

    #[test]
    fn the_key_set_names_the_key_tokens_carry() {
        let s = signer();
        let jwks = s.jwks();
        assert_eq!(jwks["keys"][0]["kid"], s.kid());
        assert_eq!(jwks["keys"][0]["crv"], "P-256");
        assert_eq!(s.kid().len(), 43, "sha-256, unpadded base64url");
    }
}
