//! Auth: who may reach — and so start — which runtime, decided before the engine is touched.
//!
//! - Agents and the API server send `Authorization: Bearer <token>` on `/rpc`, `/cdp` and
//!   `/api`. Tokens are kept as SHA-256 digests and compared in constant time.
//! - People get signed, expiring view URLs (`…/view/<hash>/vnc.html?…&token=<t>`): HMAC-SHA256
//!   of the owner hash and the expiry under the view secret. The first page load with a valid
//!   token sets an HttpOnly, SameSite=Strict cookie scoped to `/view/<hash>/`, so noVNC's
//!   assets and WebSocket need no token. A previous secret may be kept to rotate without
//!   breaking open views.
//! - WebSocket upgrades must come from the gateway's own origin or an allowed one.
//!
//! Without configured secrets the gateway generates them at start and keeps them in
//! `<state_dir>/lazygate-secrets.json` (mode 0600), so a restart does not invalidate them.
//!
//! (Long because it keeps every credential check in one place, tokens, view URLs, cookies
//! and origins, and tests them together; the code is under 390 lines.)

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Settings;
use crate::owner::OwnerHash;

/// Name of the cookie that carries a view token after the first page load.
pub const VIEW_COOKIE: &str = "lazygate_view";

/// Whose view a view token opens: one owner's, or (in shared mode) the shared browser's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewSubject {
    Owner(OwnerHash),
    Shared,
}

impl ViewSubject {
    /// Reads the first part of a token: an owner hash, or `shared` (never a hash: not hex).
    fn parse(text: &str) -> Option<ViewSubject> {
        match text {
            "shared" => Some(ViewSubject::Shared),
            hash => OwnerHash::parse(hash).ok().map(ViewSubject::Owner),
        }
    }
}

impl std::fmt::Display for ViewSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ViewSubject::Owner(owner_hash) => owner_hash.fmt(f),
            ViewSubject::Shared => f.write_str("shared"),
        }
    }
}

impl From<OwnerHash> for ViewSubject {
    fn from(owner_hash: OwnerHash) -> Self {
        ViewSubject::Owner(owner_hash)
    }
}

impl From<&OwnerHash> for ViewSubject {
    fn from(owner_hash: &OwnerHash) -> Self {
        ViewSubject::Owner(*owner_hash)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs an `Authorization: Bearer <token>` header")]
    MissingToken,
    #[error("the bearer token is not valid")]
    BadToken,
    #[error("this view needs a signed view URL (its `token` parameter) or the cookie it sets")]
    MissingViewToken,
    #[error("the view token is not valid")]
    BadViewToken,
    #[error("the view token expired; ask for a new view URL")]
    ExpiredViewToken,
    #[error("the view token was issued for another runtime")]
    WrongOwner,
    #[error("WebSocket from origin {0:?} is not allowed")]
    BadOrigin(String),
}

impl AuthError {
    /// 401 asks for credentials; 403 says the ones given do not reach this.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::WrongOwner | AuthError::BadOrigin(_))
    }

    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken | AuthError::MissingViewToken => "unauthorized",
            AuthError::BadToken | AuthError::BadViewToken => "invalid_token",
            AuthError::ExpiredViewToken => "expired_token",
            AuthError::WrongOwner => "wrong_owner",
            AuthError::BadOrigin(_) => "origin_not_allowed",
        }
    }
}

/// The secrets the gateway generated for itself, kept across restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct GeneratedSecrets {
    api_token: Option<String>,
    view_secret: Option<String>,
}

/// Decides who may do what.
pub struct Auth {
    /// Auth is off (`--insecure-dev`).
    insecure: bool,
    /// SHA-256 of each accepted API token: fixed-length, constant-time comparisons.
    api_token_digests: Vec<[u8; 32]>,
    /// The current view secret first, then the previous one (rotation).
    view_secrets: Vec<Vec<u8>>,
    view_token_ttl: Duration,
    allowed_origins: Vec<String>,
    /// Where the secrets above come from, for the log line that says which are in use.
    sources: SecretSources,
}

/// Where each secret in force comes from, with a short fingerprint of the view secrets so
/// that an operator can tell which one is in use (never the secrets themselves).
#[derive(Debug, Clone, Default)]
struct SecretSources {
    api_tokens: String,
    view_secret: String,
    view_secret_previous: String,
}

/// The first 8 hex digits of a secret's SHA-256: tells secrets apart, reveals nothing usable.
fn fingerprint(secret: &[u8]) -> String {
    Sha256::digest(secret)[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The auth stage in force. A reload (SIGHUP) replaces it whole: each request is admitted by
/// the one it found, and connections admitted already (open views, runs) are not touched.
pub struct AuthStore {
    current: RwLock<Arc<Auth>>,
}

impl AuthStore {
    pub fn new(auth: Auth) -> Self {
        AuthStore {
            current: RwLock::new(Arc::new(auth)),
        }
    }

    pub fn current(&self) -> Arc<Auth> {
        self.current.read().expect("auth lock").clone()
    }

    pub fn replace(&self, auth: Auth) {
        *self.current.write().expect("auth lock") = Arc::new(auth);
    }
}

/// 32 random bytes, URL-safe base64: generated secrets and runtimes' keys.
pub(crate) fn random_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The header the gateway sends a runtime's own key in (the runtime was given it in
/// [`crate::provision::backend::RUNTIME_KEY_ENV`]); never taken from a client.
pub const RUNTIME_KEY_HEADER: HeaderName = HeaderName::from_static("x-lazygate-runtime-key");

/// The header that tells a runtime whose it is (the owner hash), on every request the
/// gateway forwards to it: a warm-pool runtime was started before its owner was known, so
/// its environment cannot say. Never taken from a client.
pub const OWNER_HASH_HEADER: HeaderName = HeaderName::from_static("x-lazygate-owner-hash");

/// Where generated secrets are kept.
pub fn secrets_path(settings: &Settings) -> PathBuf {
    settings.state_dir.join("lazygate-secrets.json")
}

/// Why the generated secrets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The state directory or the file could have been planted or changed by someone else.
    #[error(transparent)]
    Unsafe(#[from] crate::state_dir::UnsafePath),
    #[error(
        "the secrets file {path} is not valid JSON ({message}); fix or remove it (removing it revokes every view URL handed out)"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot read or keep the generated secrets: {0}")]
    Io(#[from] std::io::Error),
    /// Signing only (`lazygate view-url`): nothing configured and nothing generated yet.
    #[error(
        "no view secret: none configured (auth.view_secret, LAZYGATE_VIEW_SECRET) and none generated in {path}; \
         run view-url with the gateway's configuration and state directory (BROWSER_RUNTIME_STATE_DIR), \
         or in the gateway's container: docker exec <gateway> lazygate view-url <owner>"
    )]
    Missing { path: PathBuf },
    /// The admin CLI: no API token configured, and none generated yet.
    #[error(
        "no API token: none configured (auth.api_tokens, LAZYGATE_API_TOKENS) and none generated in {path}; \
         run it with the gateway's configuration and state directory, or in the gateway's container: \
         docker exec <gateway> lazygate runtimes list"
    )]
    MissingToken { path: PathBuf },
}

/// The API token a client of this gateway (the admin CLI) sends: the first configured one,
/// else the generated one; never generates one.
pub fn client_token(settings: &Settings) -> Result<String, SecretsError> {
    if let Some(token) = settings.auth.api_tokens.first() {
        return Ok(token.clone());
    }
    let path = secrets_path(settings);
    generated(&path)?.api_token.ok_or(SecretsError::MissingToken { path })
}

/// The secrets the gateway generated, read without generating any (for the CLI): none when
/// its state directory does not even exist.
fn generated(path: &Path) -> Result<GeneratedSecrets, SecretsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        return Ok(GeneratedSecrets::default());
    }
    crate::state_dir::prepare(dir)?;
    load(path)
}

fn load_or_generate(path: &Path, need_token: bool, need_secret: bool) -> Result<GeneratedSecrets, SecretsError> {
    crate::state_dir::prepare(path.parent().unwrap_or(Path::new(".")))?;
    let mut secrets = load(path)?;
    let mut changed = false;
    if need_token && secrets.api_token.is_none() {
        secrets.api_token = Some(random_secret()?);
        changed = true;
    }
    if need_secret && secrets.view_secret.is_none() {
        secrets.view_secret = Some(random_secret()?);
        changed = true;
    }
    if changed {
        let bytes = serde_json::to_vec_pretty(&secrets).map_err(std::io::Error::other)?;
        crate::state_dir::write_atomically(path, &bytes)?;
    }
    Ok(secrets)
}

/// The generated secrets kept at `path` (none when there is no file), refusing a file others
/// could have planted or changed.
fn load(path: &Path) -> Result<GeneratedSecrets, SecretsError> {
    crate::state_dir::check_secrets_file(path)?;
    match std::fs::read(path) {
        // A corrupt file is never replaced: new secrets would revoke every view URL out there.
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| SecretsError::Corrupt {
            path: path.to_path_buf(),
            message: error.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GeneratedSecrets::default()),
        Err(e) => Err(e.into()),
    }
}

/// Whether two digests are equal, in constant time, a word at a time: `subtle`'s slice
/// comparison goes a byte at a time through an optimisation barrier each (about 500
/// instructions a request for one token, counted with callgrind).
fn digests_match(a: &[u8; 32], b: &[u8; 32]) -> subtle::Choice {
    let mut differ = 0u64;
    for (a, b) in a.as_chunks::<8>().0.iter().zip(b.as_chunks::<8>().0) {
        differ |= u64::from_ne_bytes(*a) ^ u64::from_ne_bytes(*b);
    }
    differ.ct_eq(&0)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    /// Builds the auth stage from settings, generating (and keeping) missing secrets.
    pub fn from_settings(settings: &Settings) -> Result<Auth, SecretsError> {
        let a = &settings.auth;
        if a.insecure_dev {
            return Ok(Auth {
                insecure: true,
                api_token_digests: Vec::new(),
                view_secrets: vec![b"insecure-dev".to_vec()],
                view_token_ttl: a.view_token_ttl,
                allowed_origins: a.allowed_origins.clone(),
                sources: SecretSources::default(),
            });
        }
        let need_token = a.api_tokens.is_empty();
        let need_secret = a.view_secret.is_none();
        let path = secrets_path(settings);
        let generated = if need_token || need_secret {
            load_or_generate(&path, need_token, need_secret)?
        } else {
            GeneratedSecrets::default()
        };
        let generated_in = format!("generated, kept in {}", path.display());
        let sources = SecretSources {
            api_tokens: if need_token {
                generated_in.clone()
            } else {
                format!("{} configured (auth.api_tokens)", a.api_tokens.len())
            },
            view_secret: if need_secret {
                generated_in
            } else {
                "configured (auth.view_secret)".to_owned()
            },
            view_secret_previous: String::new(),
        };
        let mut tokens = a.api_tokens.clone();
        tokens.extend(generated.api_token);
        let mut secrets: Vec<Vec<u8>> = a
            .view_secret
            .clone()
            .or(generated.view_secret)
            .into_iter()
            .map(String::into_bytes)
            .collect();
        secrets.extend(a.view_secret_previous.clone().map(String::into_bytes));
        let mut sources = sources;
        sources.view_secret = format!("{} id {}", sources.view_secret, fingerprint(&secrets[0]));
        sources.view_secret_previous = match secrets.get(1) {
            Some(previous) => format!(
                "configured (auth.view_secret_previous) id {}; still accepted: drop it {} s after the rotation",
                fingerprint(previous),
                a.view_token_ttl.as_secs()
            ),
            None => "none".to_owned(),
        };
        Ok(Auth {
            insecure: false,
            api_token_digests: tokens.iter().map(|t| digest(t)).collect(),
            view_secrets: secrets,
            view_token_ttl: a.view_token_ttl,
            allowed_origins: a.allowed_origins.clone(),
            sources,
        })
    }

    /// One log line saying which secrets are in force and where each comes from; a
    /// warning when any was generated (no one else knows it until they read the file).
    pub fn log_in_use(&self, what: &str) {
        if self.insecure {
            return;
        }
        let SecretSources {
            api_tokens,
            view_secret,
            view_secret_previous,
        } = &self.sources;
        tracing::info!(api_tokens, view_secret, view_secret_previous, "{what}");
        if api_tokens.starts_with("generated") || view_secret.starts_with("generated") {
            tracing::warn!(
                "an API token or view secret is generated, not configured: read it from the file named above"
            );
        }
    }

    /// The auth stage for signing view URLs outside the gateway (`lazygate view-url`): the
    /// configured secret, else the one the gateway generated; never generates one (a URL
    /// signed with a secret no gateway knows would be refused with no hint why).
    pub fn for_signing(settings: &Settings) -> Result<Auth, SecretsError> {
        let a = &settings.auth;
        if a.insecure_dev {
            return Auth::from_settings(settings);
        }
        let view_secret = match &a.view_secret {
            Some(configured) => configured.clone(),
            None => {
                let path = secrets_path(settings);
                generated(&path)?.view_secret.ok_or(SecretsError::Missing { path })?
            }
        };
        let mut secrets = vec![view_secret.into_bytes()];
        secrets.extend(a.view_secret_previous.clone().map(String::into_bytes));
        Ok(Auth {
            insecure: false,
            api_token_digests: Vec::new(),
            view_secrets: secrets,
            view_token_ttl: a.view_token_ttl,
            allowed_origins: a.allowed_origins.clone(),
            sources: SecretSources::default(),
        })
    }

    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Checks the bearer token of an API request.
    pub fn check_api(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if self.insecure {
            return Ok(());
        }
        let value = headers.get(header::AUTHORIZATION).ok_or(AuthError::MissingToken)?;
        let value = value.to_str().map_err(|_| AuthError::BadToken)?;
        // Auth schemes are case-insensitive (RFC 9110 §11.1).
        let value = value.trim_start();
        // A byte search (`split_once` with a `char` costs several times more); the space is
        // ASCII, so both sides are whole characters.
        let space = value.bytes().position(|b| b == b' ').ok_or(AuthError::BadToken)?;
        let (scheme, token) = (&value[..space], &value[space + 1..]);
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::BadToken);
        }
        let token = token.trim();
        let presented = digest(token);
        let mut ok = subtle::Choice::from(0);
        for known in &self.api_token_digests {
            ok |= digests_match(known, &presented);
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(AuthError::BadToken)
        }
    }

    fn mac(secret: &[u8], subject: &ViewSubject, expires: u64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(format!("lazygate-view:v1:{subject}:{expires}").as_bytes());
        mac
    }

    /// A view token for an owner's view (or the shared one), valid for `ttl` (the
    /// configured lifetime when `None`).
    pub fn sign_view(&self, subject: impl Into<ViewSubject>, ttl: Option<Duration>) -> String {
        let subject = subject.into();
        let expires = unix_now() + ttl.unwrap_or(self.view_token_ttl).as_secs();
        let tag = Self::mac(&self.view_secrets[0], &subject, expires)
            .finalize()
            .into_bytes();
        format!("{subject}.{expires}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Checks a view token for the view of `subject`; returns its expiry.
    pub fn check_view(&self, subject: impl Into<ViewSubject>, token: &str) -> Result<u64, AuthError> {
        let subject = subject.into();
        let mut parts = token.splitn(3, '.');
        let (Some(hash), Some(expires), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::BadViewToken);
        };
        let issued_for = ViewSubject::parse(hash).ok_or(AuthError::BadViewToken)?;
        // One spelling per expiry (the one `sign_view` writes): no sign, no leading zeros.
        let canonical = !expires.is_empty()
            && expires.bytes().all(|b| b.is_ascii_digit())
            && !(expires.len() > 1 && expires.starts_with('0'));
        if !canonical {
            return Err(AuthError::BadViewToken);
        }
        let expires: u64 = expires.parse().map_err(|_| AuthError::BadViewToken)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| AuthError::BadViewToken)?;
        let genuine = self
            .view_secrets
            .iter()
            .any(|secret| Self::mac(secret, &issued_for, expires).verify_slice(&tag).is_ok());
        if !genuine {
            return Err(AuthError::BadViewToken);
        }
        if issued_for != subject {
            return Err(AuthError::WrongOwner);
        }
        if expires <= unix_now() {
            return Err(AuthError::ExpiredViewToken);
        }
        Ok(expires)
    }

    /// Admits a request to `/view/<hash>/…` by its `token` parameter or its cookie. Returns
    /// the token to set as a cookie when it came in the URL.
    pub fn check_view_request(
        &self,
        subject: ViewSubject,
        query_token: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Option<(String, u64)>, AuthError> {
        if self.insecure {
            return Ok(None);
        }
        if let Some(token) = query_token {
            let expires = self.check_view(subject, token)?;
            return Ok(Some((token.to_owned(), expires)));
        }
        // The browser sends the cookies of every path that matches (an owner's view inside
        // the shared one's `/`): any one of them for this view will do.
        let mut last = AuthError::MissingViewToken;
        for cookie in cookie_values(headers, VIEW_COOKIE) {
            match self.check_view(subject, &cookie) {
                Ok(_) => return Ok(None),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// WebSocket upgrades only from the gateway's own origin (`Host`) or allowed ones; a
    /// client that sends no `Origin` (not a browser) is judged by its credentials alone.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or_default();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let own = [format!("http://{host}"), format!("https://{host}")];
        if own.iter().any(|o| o == origin) || self.allowed_origins.iter().any(|o| o == origin) {
            Ok(())
        } else {
            Err(AuthError::BadOrigin(origin.to_owned()))
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    cookie_values(headers, name).next()
}

/// Every value of cookie `name` the request carries (one per path it was set for).
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// What only the gateway sends a runtime: a client's are dropped from every forwarded
/// request, to a runtime or the default upstream (a `static`, as every list of names: a
/// `const` array of names is built and dropped at each use).
pub static GATEWAY_ONLY: [HeaderName; 2] = [RUNTIME_KEY_HEADER, OWNER_HASH_HEADER];

/// What a request to a runtime leaves at the gateway: the client's credentials (checked here;
/// a runtime trusts the gateway's key) and what only the gateway sends.
pub static CLIENT_CREDENTIALS: [HeaderName; 3] = [header::AUTHORIZATION, RUNTIME_KEY_HEADER, OWNER_HASH_HEADER];

/// The `Set-Cookie` for a view token: HttpOnly, SameSite=Strict, scoped to the owner's view
/// (the shared view's noVNC lives at the root: `/`), living as long as the token; Secure
/// when the client came over HTTPS.
pub fn view_cookie(subject: ViewSubject, token: &str, expires: u64, secure: bool) -> HeaderValue {
    let max_age = expires.saturating_sub(unix_now());
    let secure = if secure { "; Secure" } else { "" };
    let path = match subject {
        ViewSubject::Owner(owner_hash) => format!("/view/{owner_hash}/"),
        ViewSubject::Shared => "/".to_owned(),
    };
    let value = format!("{VIEW_COOKIE}={token}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::from_str(&value).expect("token and hash are URL-safe")
}

/// Takes `token=…` out of a query string: it authenticates the request and is not the
/// runtime's business. Returns the token and the query without it.
pub fn take_query_token(query: &str) -> (Option<String>, String) {
    let mut token = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("token=") {
            Some(value) => {
                token = Some(value.to_owned());
                false
            }
            None => true,
        })
        .collect();
    (token, rest.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthSettings, RawConfig};

    #[test]
    fn digests_match_only_when_every_byte_does() {
        let token = digest("handtokenhandtoken1234");
        assert!(bool::from(digests_match(&token, &digest("handtokenhandtoken1234"))));
        for byte in [0, 7, 8, 31] {
            let mut other = token;
            other[byte] ^= 1;
            assert!(!bool::from(digests_match(&token, &other)), "byte {byte}");
        }
    }

    fn auth(secret: &str, previous: Option<&str>) -> Auth {
        let mut settings = Settings::try_from(RawConfig::default()).unwrap();
        settings.auth = AuthSettings {
            api_tokens: vec!["agent-token-0123456789".into()],
            view_secret: Some(secret.into()),
            view_secret_previous: previous.map(Into::into),
            view_token_ttl: Duration::from_secs(60),
            allowed_origins: vec!["https://app.example".into()],
            insecure_dev: false,
        };
        Auth::from_settings(&settings).unwrap()
    }

    const SECRET: &str = "a-view-secret-of-at-least-32-characters";
    const OTHER: &str = "another-view-secret-of-32-characters!!";

    #[test]
    fn bearer_tokens() {
        let a = auth(SECRET, None);
        let mut h = HeaderMap::new();
        assert_eq!(a.check_api(&h), Err(AuthError::MissingToken));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer agent-token-0123456789"),
        );
        assert_eq!(a.check_api(&h), Ok(()));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer agent-token-012345678"),
        );
        assert_eq!(a.check_api(&h), Err(AuthError::BadToken));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic YWdlbnQ="));
        assert_eq!(a.check_api(&h), Err(AuthError::BadToken));
        // The scheme is case-insensitive; the token is not.
        for value in ["BEARER agent-token-0123456789", "bEaReR agent-token-0123456789"] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(a.check_api(&h), Ok(()), "{value}");
        }
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer AGENT-TOKEN-0123456789"),
        );
        assert_eq!(a.check_api(&h), Err(AuthError::BadToken));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearerless"));
        assert_eq!(a.check_api(&h), Err(AuthError::BadToken));
    }

    #[test]
    fn the_shared_view_and_an_owners_view_never_open_each_other() {
        let alice = OwnerHash::of("alice");
        let a = auth(SECRET, None);
        let shared = a.sign_view(ViewSubject::Shared, None);
        assert!(shared.starts_with("shared."));
        assert!(a.check_view(ViewSubject::Shared, &shared).is_ok());
        assert_eq!(a.check_view(alice, &shared), Err(AuthError::WrongOwner));
        let alices = a.sign_view(alice, None);
        assert_eq!(a.check_view(ViewSubject::Shared, &alices), Err(AuthError::WrongOwner));
        // The shared view's cookie covers noVNC at the root; an owner's only its view.
        let cookie = view_cookie(ViewSubject::Shared, &shared, unix_now() + 60, false);
        assert!(cookie.to_str().unwrap().contains("; Path=/;"));
        let cookie = view_cookie(ViewSubject::Owner(alice), &alices, unix_now() + 60, true);
        assert!(cookie.to_str().unwrap().contains(&format!("; Path=/view/{alice}/;")));
        assert!(cookie.to_str().unwrap().ends_with("; Secure"));
        // A request with both cookies (an owner's view inside the shared one's path) is
        // admitted by the one that fits.
        let mut h = HeaderMap::new();
        let both = format!("{VIEW_COOKIE}={alices}; {VIEW_COOKIE}={shared}");
        h.insert(header::COOKIE, HeaderValue::from_str(&both).unwrap());
        assert_eq!(a.check_view_request(ViewSubject::Shared, None, &h), Ok(None));
        assert_eq!(a.check_view_request(ViewSubject::Owner(alice), None, &h), Ok(None));
        let bob = OwnerHash::of("bob");
        assert_eq!(
            a.check_view_request(ViewSubject::Owner(bob), None, &h),
            Err(AuthError::WrongOwner)
        );
    }

    #[test]
    fn view_tokens_sign_verify_expire_and_rotate() {
        let alice = OwnerHash::of("alice");
        let bob = OwnerHash::of("bob");
        let a = auth(SECRET, None);
        let token = a.sign_view(alice, None);
        assert!(a.check_view(alice, &token).is_ok());
        assert_eq!(a.check_view(bob, &token), Err(AuthError::WrongOwner));
        let forged = token.replace(alice.as_str(), bob.as_str());
        assert_eq!(a.check_view(bob, &forged), Err(AuthError::BadViewToken));
        // A character in the middle of the tag (the last one may only carry padding bits).
        let mut tampered: Vec<char> = token.chars().collect();
        let middle = token.rfind('.').unwrap() + 10;
        tampered[middle] = if tampered[middle] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        assert_eq!(a.check_view(alice, &tampered), Err(AuthError::BadViewToken));
        assert_eq!(a.check_view(alice, "nonsense"), Err(AuthError::BadViewToken));
        // The MAC covers the number, not its spelling: other spellings of the same expiry
        // would verify, so they are refused before the MAC is checked.
        let (_, rest) = token.split_once('.').unwrap();
        let (expires, tag) = rest.split_once('.').unwrap();
        for spelling in [
            format!("+{expires}"),
            format!("0{expires}"),
            format!("00{expires}"),
            format!(" {expires}"),
        ] {
            let respelled = format!("{alice}.{spelling}.{tag}");
            assert_eq!(
                a.check_view(alice, &respelled),
                Err(AuthError::BadViewToken),
                "{spelling}"
            );
        }
        let expired = a.sign_view(alice, Some(Duration::ZERO));
        assert_eq!(a.check_view(alice, &expired), Err(AuthError::ExpiredViewToken));
        // Rotation: the old secret still admits open views; without it, they are revoked.
        let rotated = auth(OTHER, Some(SECRET));
        assert!(rotated.check_view(alice, &token).is_ok());
        assert_eq!(
            auth(OTHER, None).check_view(alice, &token),
            Err(AuthError::BadViewToken)
        );
    }

    #[test]
    fn origins_cookies_and_query_tokens() {
        let a = auth(SECRET, None);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("gw.example:8080"));
        assert!(a.check_origin(&h).is_ok(), "no Origin: not a browser");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://gw.example:8080"));
        assert!(a.check_origin(&h).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("https://app.example"));
        assert!(a.check_origin(&h).is_ok());
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(a.check_origin(&h).unwrap_err().is_forbidden());

        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; lazygate_view=t.1.x; b=2"),
        );
        assert_eq!(cookie_value(&h, VIEW_COOKIE).as_deref(), Some("t.1.x"));

        assert_eq!(
            take_query_token("path=view/x/websockify&token=abc&autoconnect=1"),
            (Some("abc".into()), "path=view/x/websockify&autoconnect=1".into())
        );
        assert_eq!(take_query_token("a=1"), (None, "a=1".into()));
    }
}
