//! Signed bearer tokens (the Docker token-auth JWT format): access tokens carrying granted
//! `access` claims, and refresh tokens (docker's "identity token") that can be exchanged for
//! new access tokens. One key signs both: EC P-256 (ES256) or RSA (RS256), loaded from a PEM
//! file that is generated (P-256) on first start when absent.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::metadata::now;
use crate::oci::RepoName;

use super::perms::Perms;

/// Allowed clock difference when checking `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;
/// Verified access tokens remembered at most; past this the memory starts over.
const MAX_VERIFIED: usize = 20_000;

/// One `access` entry: a resource and the actions granted on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    Access,
    Refresh,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// See `Principal::subject`; empty for anonymous.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    /// `access` or `refresh`: a refresh token is never accepted as a bearer token.
    #[serde(rename = "use")]
    pub token_use: TokenUse,
    /// Fingerprint of the credential the subject proved (see `Identity::binding`).
    pub bnd: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<ClaimAccess>,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token is expired")]
    Expired,
    #[error("token is not for this registry")]
    WrongAudience,
    #[error("token is invalid: {0}")]
    Invalid(String),
}

/// What an access token grants, parsed once from its `access` claims.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub repositories: Vec<(RepoName, Perms)>,
    pub catalog: bool,
}

impl Grants {
    /// Unknown resource types, malformed names and unknown actions grant nothing.
    pub fn from_claims(access: &[ClaimAccess]) -> Grants {
        let mut g = Grants::default();
        for a in access {
            match a.kind.as_str() {
                "repository" => {
                    if let Ok(name) = a.name.parse::<RepoName>() {
                        let p = a
                            .actions
                            .iter()
                            .map(|x| Perms::from_action(x))
                            .fold(Perms::NONE, Perms::union);
                        g.repositories.push((name, p));
                    }
                }
                "registry" if a.name == "catalog" => g.catalog = true,
                _ => {}
            }
        }
        g
    }

    /// Everything granted on `repo`.
    pub fn on(&self, repo: &RepoName) -> Perms {
        self.repositories
            .iter()
            .filter(|(n, _)| n == repo)
            .fold(Perms::NONE, |acc, (_, p)| acc.union(*p))
    }
}

/// A verified access token.
#[derive(Debug)]
pub struct AccessToken {
    pub claims: Claims,
    pub grants: Grants,
}

/// A signed token and its lifetime.
pub struct Issued {
    pub token: String,
    pub issued_at: i64,
    pub expires_in: u64,
}

pub struct Signer {
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    issuer: String,
    service: String,
    ttl: Duration,
    refresh_ttl: Duration,
    /// Access tokens whose signature and claims were checked, by their text: a client sends
    /// the same token on every request for minutes, and checking an ES256 signature costs
    /// more than the rest of a manifest pull. Lifetimes are still checked on every use.
    verified: RwLock<HashMap<Box<str>, Arc<AccessToken>>>,
}

/// A private key in the forms the JWT library wants.
struct KeyMaterial {
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_der: Vec<u8>,
}

fn parse_key(pem: &str) -> anyhow::Result<KeyMaterial> {
    use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
    let ec = p256::SecretKey::from_pkcs8_pem(pem).or_else(|_| p256::SecretKey::from_sec1_pem(pem));
    if let Ok(sk) = ec {
        let private = sk.to_pkcs8_pem(Default::default())?;
        let public = sk.public_key();
        let public_pem = public.to_public_key_pem(Default::default())?;
        return Ok(KeyMaterial {
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(private.as_bytes())?,
            decoding: DecodingKey::from_ec_pem(public_pem.as_bytes())?,
            public_der: public.to_public_key_der()?.into_vec(),
        });
    }
    use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
    let sk = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| {
            anyhow::anyhow!("not a PEM EC P-256 or RSA private key (PKCS#8, SEC1 or PKCS#1)")
        })?;
    let private = sk.to_pkcs1_pem(Default::default())?;
    let public = sk.to_public_key();
    let public_pem = public.to_public_key_pem(Default::default())?;
    Ok(KeyMaterial {
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(private.as_bytes())?,
        decoding: DecodingKey::from_rsa_pem(public_pem.as_bytes())?,
        public_der: public.to_public_key_der()?.into_vec(),
    })
}

/// Reads the key at `path`, generating a P-256 key there (mode 0600) when it does not exist.
fn load_or_generate(path: &Path) -> anyhow::Result<(KeyMaterial, bool)> {
    match std::fs::read_to_string(path) {
        Ok(pem) => Ok((
            parse_key(&pem).with_context(|| format!("token key {}", path.display()))?,
            false,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pem = rcgen::KeyPair::generate()
                .context("cannot generate a token key")?
                .serialize_pem();
            write_private(path, pem.as_bytes())?;
            Ok((parse_key(&pem)?, true))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read token key {}", path.display())),
    }
}

/// Writes a secret file atomically with mode 0600, leaving no partial file on a crash.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS provides randomness");
    hex::encode(b)
}

/// A new signing key, PEM-encoded.
pub fn generate_key_pem() -> anyhow::Result<String> {
    Ok(rcgen::KeyPair::generate()
        .context("cannot generate a token key")?
        .serialize_pem())
}

impl Signer {
    /// Signs with the PEM-encoded key `pem` (kept in the database replicas share).
    pub fn from_pem(
        pem: &str,
        issuer: &str,
        service: &str,
        ttl: Duration,
        refresh_ttl: Duration,
    ) -> anyhow::Result<Signer> {
        Self::with_key(parse_key(pem)?, issuer, service, ttl, refresh_ttl)
    }

    /// Loads (or generates) the key and prepares signing for `service`.
    pub fn open(
        key_path: &Path,
        issuer: &str,
        service: &str,
        ttl: Duration,
        refresh_ttl: Duration,
    ) -> anyhow::Result<Signer> {
        let (key, generated) = load_or_generate(key_path)?;
        if generated {
            tracing::info!(path = %key_path.display(), "generated a token-signing key");
        }
        Self::with_key(key, issuer, service, ttl, refresh_ttl)
    }

    fn with_key(
        key: KeyMaterial,
        issuer: &str,
        service: &str,
        ttl: Duration,
        refresh_ttl: Duration,
    ) -> anyhow::Result<Signer> {
        let kid = hex::encode(&Sha256::digest(&key.public_der)[..12]);
        Ok(Signer {
            alg: key.alg,
            encoding: key.encoding,
            decoding: key.decoding,
            kid,
            issuer: issuer.to_string(),
            service: service.to_string(),
            ttl,
            refresh_ttl,
            verified: RwLock::new(HashMap::new()),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    fn sign(
        &self,
        sub: &str,
        binding: &str,
        token_use: TokenUse,
        access: Vec<ClaimAccess>,
    ) -> anyhow::Result<Issued> {
        let ttl = match token_use {
            TokenUse::Access => self.ttl,
            TokenUse::Refresh => self.refresh_ttl,
        };
        let t = now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_string(),
            aud: self.service.clone(),
            exp: t + ttl.as_secs() as i64,
            nbf: t - 1,
            iat: t,
            jti: random_id(),
            token_use,
            bnd: binding.to_string(),
            access,
        };
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .context("cannot sign a token")?;
        Ok(Issued {
            token,
            issued_at: t,
            expires_in: ttl.as_secs(),
        })
    }

    pub fn access_token(
        &self,
        sub: &str,
        binding: &str,
        access: Vec<ClaimAccess>,
    ) -> anyhow::Result<Issued> {
        self.sign(sub, binding, TokenUse::Access, access)
    }

    pub fn refresh_token(&self, sub: &str, binding: &str) -> anyhow::Result<Issued> {
        self.sign(sub, binding, TokenUse::Refresh, Vec::new())
    }

    /// Verifies an access token as [`Signer::verify`] does, remembering tokens that passed so
    /// that the next use only checks their lifetime.
    pub fn verify_access(&self, token: &str) -> Result<Arc<AccessToken>, JwtError> {
        let hit = self.verified.read().get(token).cloned();
        if let Some(t) = hit {
            let now = now();
            let leeway = LEEWAY_SECS as i64;
            if now > t.claims.exp + leeway {
                self.verified.write().remove(token);
                return Err(JwtError::Expired);
            }
            if now + leeway < t.claims.nbf {
                return Err(JwtError::Invalid("token is not valid yet".into()));
            }
            return Ok(t);
        }
        let claims = self.verify(token, TokenUse::Access)?;
        let t = Arc::new(AccessToken {
            grants: Grants::from_claims(&claims.access),
            claims,
        });
        let mut map = self.verified.write();
        if map.len() >= MAX_VERIFIED {
            let now = now();
            map.retain(|_, t| t.claims.exp + LEEWAY_SECS as i64 >= now);
            if map.len() >= MAX_VERIFIED {
                map.clear();
            }
        }
        map.insert(token.into(), t.clone());
        Ok(t)
    }

    /// Verifies signature, issuer, audience and lifetime, and that the token is of `want` use.
    pub fn verify(&self, token: &str, want: TokenUse) -> Result<Claims, JwtError> {
        use jsonwebtoken::errors::ErrorKind;
        let mut v = Validation::new(self.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_audience(&[&self.service]);
        v.set_issuer(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => JwtError::Expired,
                    ErrorKind::InvalidAudience => JwtError::WrongAudience,
                    _ => JwtError::Invalid(e.to_string()),
                }
            })?;
        if data.claims.token_use != want {
            return Err(JwtError::Invalid("wrong kind of token".into()));
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(dir: &Path, service: &str) -> Signer {
        Signer::open(
            &dir.join("token.key"),
            "berth",
            service,
            Duration::from_secs(300),
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    #[test]
    fn generates_once_then_reuses_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = signer(dir.path(), "berth");
        let pem = std::fs::read_to_string(dir.path().join("token.key")).unwrap();
        assert!(pem.contains("PRIVATE KEY"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("token.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = signer(dir.path(), "berth");
        let t = a.access_token("alice", "b1", vec![]).unwrap();
        assert_eq!(b.verify(&t.token, TokenUse::Access).unwrap().sub, "alice");
    }

    #[test]
    fn rejects_wrong_use_audience_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = signer(dir.path(), "berth");
        let r = a.refresh_token("alice", "b").unwrap();
        assert!(a.verify(&r.token, TokenUse::Access).is_err());
        assert!(a.verify(&r.token, TokenUse::Refresh).is_ok());
        let other_dir = tempfile::tempdir().unwrap();
        let other_service = Signer::open(
            &dir.path().join("token.key"),
            "berth",
            "elsewhere",
            Duration::from_secs(300),
            Duration::from_secs(300),
        )
        .unwrap();
        let t = other_service.access_token("alice", "b", vec![]).unwrap();
        assert!(matches!(
            a.verify(&t.token, TokenUse::Access),
            Err(JwtError::WrongAudience)
        ));
        let other_key = signer(other_dir.path(), "berth");
        let t = other_key.access_token("alice", "b", vec![]).unwrap();
        assert!(matches!(
            a.verify(&t.token, TokenUse::Access),
            Err(JwtError::Invalid(_))
        ));
        assert!(a.verify("not.a.jwt", TokenUse::Access).is_err());
    }

    #[test]
    fn remembered_tokens_still_expire_and_grants_parse_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Signer::open(
            &dir.path().join("token.key"),
            "berth",
            "berth",
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .unwrap();
        let access = vec![
            ClaimAccess {
                kind: "repository".into(),
                name: "team/app".into(),
                actions: vec!["pull".into(), "push".into()],
            },
            ClaimAccess {
                kind: "repository".into(),
                name: "Not A Name".into(),
                actions: vec!["pull".into()],
            },
            ClaimAccess {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            },
        ];
        let t = s.access_token("alice", "b", access).unwrap();
        let first = s.verify_access(&t.token).unwrap();
        let again = s.verify_access(&t.token).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second use is a lookup");
        let repo: RepoName = "team/app".parse().unwrap();
        assert_eq!(first.grants.on(&repo), Perms::PULL.union(Perms::PUSH));
        assert_eq!(first.grants.repositories.len(), 1);
        assert!(first.grants.catalog);
        // A tampered copy is not the remembered text: it is verified, and fails.
        let mut bad = t.token.clone();
        bad.pop();
        assert!(s.verify_access(&bad).is_err());
        // Past exp plus the leeway, the remembered token is refused too.
        let mut expired = Claims::clone(&first.claims);
        expired.exp = now() - LEEWAY_SECS as i64 - 1;
        s.verified.write().insert(
            "remembered".into(),
            Arc::new(AccessToken {
                claims: expired,
                grants: Grants::default(),
            }),
        );
        assert!(matches!(
            s.verify_access("remembered"),
            Err(JwtError::Expired)
        ));
    }

    #[test]
    fn accepts_rsa_keys() {
        let dir = tempfile::tempdir().unwrap();
        use rsa::pkcs8::EncodePrivateKey;
        let mut rng = rsa::rand_core::OsRng;
        let sk = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let pem = sk.to_pkcs8_pem(Default::default()).unwrap();
        std::fs::write(dir.path().join("token.key"), pem.as_bytes()).unwrap();
        let s = signer(dir.path(), "berth");
        assert_eq!(s.alg, Algorithm::RS256);
        let t = s.access_token("", "", vec![]).unwrap();
        assert!(s.verify(&t.token, TokenUse::Access).is_ok());
    }
}
