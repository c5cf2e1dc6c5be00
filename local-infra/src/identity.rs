//! A local identity provider, for runs without a real one: a signing key
//! pair, the JWKS the services verify tokens against (`AUTH_JWKS_FILE`), and
//! tokens for any user, as Keycloak or Auth0 would issue them.
//!
//! devstack's `--auth` keeps one in `.devstack/auth/` ([`LocalIssuer::save`],
//! [`LocalIssuer::load`]) and `devstack token` prints its tokens; the system
//! tests make their own, with ES256 and RS256 keys, and sign tokens that are
//! wrong on purpose ([`LocalIssuer::sign`]).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, RSAKeyParameters, RSAKeyType,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The `iss` of local tokens (`AUTH_ISSUER`).
pub const LOCAL_ISSUER: &str = "ordersystem-local";
/// The `aud` of local tokens (`AUTH_AUDIENCE`).
pub const LOCAL_AUDIENCE: &str = "ordersystem";
/// The scope that makes an administrator (as the services read it).
pub const ADMIN_SCOPE: &str = "admin";

const SIGNING_KEY_FILE: &str = "signing-key.pem";
const JWKS_FILE: &str = "jwks.json";

/// A signing key and the JWKS that publishes its public half.
pub struct LocalIssuer {
    algorithm: Algorithm,
    kid: String,
    /// PKCS#8 PEM of the private key.
    private_pem: String,
    jwks: JwkSet,
}

impl LocalIssuer {
    /// A new P-256 key (tokens signed ES256).
    pub fn generate_es256(kid: &str) -> anyhow::Result<LocalIssuer> {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let secret = loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).context("reading random bytes")?;
            // Rarely (about 2^-32) the bytes exceed the curve's order; draw again.
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                break secret;
            }
        };
        let point = secret.public_key().to_sec1_bytes();
        ensure!(
            point.len() == 65 && point[0] == 4,
            "unexpected P-256 point encoding"
        );
        let jwk = Jwk {
            common: common(kid, KeyAlgorithm::ES256),
            algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x: URL_SAFE_NO_PAD.encode(&point[1..33]),
                y: URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        };
        let private_pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the P-256 key")?
            .to_string();
        Ok(LocalIssuer {
            algorithm: Algorithm::ES256,
            kid: kid.to_owned(),
            private_pem,
            jwks: JwkSet { keys: vec![jwk] },
        })
    }

    /// A new 2048-bit RSA key (tokens signed RS256).
    pub fn generate_rs256(kid: &str) -> anyhow::Result<LocalIssuer> {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let key =
            rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).context("generating an RSA key")?;
        let jwk = Jwk {
            common: common(kid, KeyAlgorithm::RS256),
            algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: URL_SAFE_NO_PAD.encode(key.n().to_be_bytes_trimmed_vartime()),
                e: URL_SAFE_NO_PAD.encode(key.e().to_be_bytes_trimmed_vartime()),
            }),
        };
        let private_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the RSA key")?
            .to_string();
        Ok(LocalIssuer {
            algorithm: Algorithm::RS256,
            kid: kid.to_owned(),
            private_pem,
            jwks: JwkSet { keys: vec![jwk] },
        })
    }

    /// Writes the private key (readable by its owner only) and the JWKS into `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key_path = dir.join(SIGNING_KEY_FILE);
        write_private(&key_path, self.private_pem.as_bytes())?;
        std::fs::write(self.jwks_path(dir), self.jwks_json())
            .with_context(|| format!("writing {}", self.jwks_path(dir).display()))?;
        Ok(())
    }

    /// The issuer [`LocalIssuer::save`] wrote into `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<LocalIssuer> {
        let key_path = dir.join(SIGNING_KEY_FILE);
        let private_pem = std::fs::read_to_string(&key_path).with_context(|| {
            format!(
                "reading {} (was the stack started with --auth?)",
                key_path.display()
            )
        })?;
        let jwks_path = dir.join(JWKS_FILE);
        let jwks: JwkSet = serde_json::from_str(
            &std::fs::read_to_string(&jwks_path)
                .with_context(|| format!("reading {}", jwks_path.display()))?,
        )
        .with_context(|| format!("{} is not a JWKS", jwks_path.display()))?;
        let jwk = jwks.keys.first().context("the JWKS holds no key")?;
        let algorithm = match jwk.common.key_algorithm {
            Some(KeyAlgorithm::ES256) => Algorithm::ES256,
            Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            other => anyhow::bail!("a local key signs ES256 or RS256, not {other:?}"),
        };
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        Ok(LocalIssuer {
            algorithm,
            kid,
            private_pem,
            jwks,
        })
    }

    /// Where [`LocalIssuer::save`] puts the JWKS in `dir` (`AUTH_JWKS_FILE`).
    pub fn jwks_path(&self, dir: &Path) -> std::path::PathBuf {
        dir.join(JWKS_FILE)
    }

    /// The public keys, as a JWKS document.
    pub fn jwks_json(&self) -> String {
        serde_json::to_string_pretty(&self.jwks).expect("a JWKS serialises")
    }

    /// One JWKS publishing the keys of all `issuers` (a provider in the middle
    /// of a key rotation publishes two).
    pub fn jwks_of(issuers: &[&LocalIssuer]) -> String {
        let keys = issuers
            .iter()
            .flat_map(|issuer| issuer.jwks.keys.iter().cloned())
            .collect();
        serde_json::to_string_pretty(&JwkSet { keys }).expect("a JWKS serialises")
    }

    /// This key's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A token for `user`, an administrator if `admin`, valid for `ttl`.
    pub fn token(&self, user: &str, admin: bool, ttl: Duration) -> anyhow::Result<String> {
        let now = now_secs();
        let mut claims = json!({
            "iss": LOCAL_ISSUER,
            "aud": LOCAL_AUDIENCE,
            "sub": user,
            "iat": now,
            "nbf": now,
            "exp": now + ttl.as_secs(),
        });
        if admin {
            claims["scope"] = json!(ADMIN_SCOPE);
        }
        self.sign(&claims)
    }

    /// `claims` signed with this key, exactly as given (tests sign expired or
    /// misaddressed tokens with it).
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let key = match self.algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(self.private_pem.as_bytes()),
            _ => EncodingKey::from_ec_pem(self.private_pem.as_bytes()),
        }
        .context("reading the signing key")?;
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &key).context("signing a token")
    }
}

/// Seconds since the Unix epoch, as `exp`, `nbf` and `iat` count.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn common(kid: &str, algorithm: KeyAlgorithm) -> CommonParameters {
    CommonParameters {
        public_key_use: Some(PublicKeyUse::Signature),
        key_algorithm: Some(algorithm),
        key_id: Some(kid.to_owned()),
        ..CommonParameters::default()
    }
}

/// Writes `contents` to `path`, readable and writable by its owner only.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_issuer_loads_back_and_signs_the_same_kind_of_token() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = LocalIssuer::generate_es256("k1").unwrap();
        issuer.save(dir.path()).unwrap();
        let loaded = LocalIssuer::load(dir.path()).unwrap();
        assert_eq!(loaded.kid(), "k1");
        assert_eq!(loaded.jwks_json(), issuer.jwks_json());
        let token = loaded
            .token("alice", true, Duration::from_secs(60))
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("k1"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(SIGNING_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the private key is its owner's only");
    }
}
