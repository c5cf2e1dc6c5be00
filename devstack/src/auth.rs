//! `--auth` and `devstack token`: the stack's own identity provider.
//!
//! With `--auth` every service runs `AUTH_MODE=jwt` against the JWKS of a
//! signing key kept in `DIR/auth/` (made on first use, then kept, so tokens
//! printed earlier stay valid across restarts); `devstack token --user alice`
//! signs a token with that key for curl, and `devstack --auth bench` signs
//! its customers' tokens with it ([`BenchTokens`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use local_infra::identity::{LocalIssuer, LOCAL_AUDIENCE, LOCAL_ISSUER};
use service_kit::config::{AuthMode, CommonConfig};

use crate::cli::TokenArgs;

/// Directory of the signing key and JWKS, inside devstack's state directory.
const AUTH_DIR: &str = "auth";
/// The `kid` of devstack's key.
const KEY_ID: &str = "devstack-1";

/// Where the key of the stack kept in `state_dir` lives.
pub fn auth_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(AUTH_DIR)
}

/// The issuer in `dir`, made now if there is none yet.
pub fn load_or_create(dir: &Path) -> anyhow::Result<LocalIssuer> {
    if let Ok(issuer) = LocalIssuer::load(dir) {
        return Ok(issuer);
    }
    let issuer = LocalIssuer::generate_es256(KEY_ID)?;
    issuer
        .save(dir)
        .with_context(|| format!("keeping the signing key in {}", dir.display()))?;
    Ok(issuer)
}

/// What every service is given to check tokens signed by `issuer`, whose
/// files are in `dir`.
pub fn service_env(issuer: &LocalIssuer, dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let config = CommonConfig {
        auth_mode: AuthMode::Jwt,
        auth_jwks_file: issuer.jwks_path(dir).display().to_string(),
        auth_issuer: LOCAL_ISSUER.to_owned(),
        auth_audience: LOCAL_AUDIENCE.to_owned(),
        ..CommonConfig::defaults("", 0, "")
    };
    service_kit::config::env_of(
        &config,
        &[
            "AUTH_MODE",
            "AUTH_JWKS_FILE",
            "AUTH_ISSUER",
            "AUTH_AUDIENCE",
        ],
    )
}

/// How long the benchmark's tokens are valid: longer than any run, soak
/// included.
const BENCH_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// The benchmark's tokens, signed by the stack's own key.
pub struct BenchTokens(pub LocalIssuer);

impl std::fmt::Debug for BenchTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key stays out of any debug output.
        f.write_str("BenchTokens(devstack's key)")
    }
}

impl bench::load::TokenSource for BenchTokens {
    fn token(&self, user: &str, admin: bool) -> anyhow::Result<String> {
        self.0.token(user, admin, BENCH_TOKEN_TTL)
    }
}

/// `devstack token`: prints a token of the key in `state_dir`.
pub fn print_token(state_dir: &Path, args: &TokenArgs) -> anyhow::Result<()> {
    let dir = auth_dir(&std::path::absolute(state_dir)?);
    let issuer =
        LocalIssuer::load(&dir).context("no signing key yet: start the stack with --auth first")?;
    println!("{}", issuer.token(&args.user, args.admin, args.ttl)?);
    Ok(())
}

/// A duration written `90s`, `30m`, `1h`, `2d` or plain seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}`: expected a number with s, m, h or d, e.g. 1h"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(format!("`{text}`: the unit is s, m, h or d")),
    };
    match count.checked_mul(seconds) {
        Some(0) => Err("a token valid for no time is useless".to_owned()),
        Some(total) => Ok(Duration::from_secs(total)),
        None => Err(format!("`{text}` is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_in_the_unit_they_name() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(first.jwks_json(), again.jwks_json());
        let env = service_env(&again, dir.path()).unwrap();
        assert_eq!(env["AUTH_MODE"], "jwt");
        assert!(Path::new(&env["AUTH_JWKS_FILE"]).exists());
    }
}
