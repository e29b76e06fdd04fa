//! Routing: a pure function from method and URI to a [`Route`].
//!
//! Everything a request names (owner, hash, path) is parsed and checked here, before
//! any other stage runs, so that malformed input can never reach the container engine.
//!
//! (Long because of its tests: the parser is under 210 lines, the table that pins every
//! route, refusal and invariant down is the rest.)

use std::borrow::Cow;

use http::{Method, Uri};

use crate::owner::{OwnerError, OwnerHash, decode_owner};

/// Where a request goes. What it names is borrowed from the request's URI where it needs no
/// decoding (most requests): routing allocates nothing then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/healthz`: the process is alive.
    Health,
    /// `/readyz`: the container engine answers and has the images a start needs.
    Ready,
    /// `/view/<hash>` without the trailing slash: redirect so noVNC's relative assets resolve.
    ViewRedirect { owner_hash: OwnerHash },
    /// `/view/<hash>/<rest>`: the owner's noVNC page and websockify.
    View { owner_hash: OwnerHash, rest: Cow<'a, str> },
    /// `/rpc/<owner>[/<rest>]`: the owner's RPC server; `/rpc/<owner>` alone is `/run`.
    Rpc {
        owner: Cow<'a, str>,
        owner_hash: OwnerHash,
        rest: Cow<'a, str>,
    },
    /// `/cdp/<owner>/<rest>`: the owner's Chrome DevTools Protocol endpoint (HTTP and WebSocket).
    Cdp {
        owner: Cow<'a, str>,
        owner_hash: OwnerHash,
        rest: Cow<'a, str>,
    },
    /// `DELETE /rpc/<owner>`: remove the owner's runtime now.
    Release { owner: Cow<'a, str>, owner_hash: OwnerHash },
    /// `GET /rpc/<owner>/runs/<id>`: an asynchronous run's state or answer ([`crate::runs`]).
    RunResult { owner_hash: OwnerHash, id: Cow<'a, str> },
    /// `POST /api/runtimes/ensure`: the seed's `ensure_browser_runtime`.
    ApiEnsure,
    /// `POST /api/runtimes/cleanup`: the seed's `cleanup_browser_runtime`.
    ApiCleanup,
    /// noVNC at the root (`/vnc.html`, its assets, `/websockify`): the seed's shared-mode
    /// view URL, `{base}/vnc.html?path=websockify`, served by the shared browser.
    SharedView { rest: Cow<'a, str> },
    /// Any other path: the default upstream's (`server.default_upstream`), else 404.
    Other,
}

/// The paths of noVNC's page, assets and WebSocket at the root, as websockify serves them
/// (Debian's `novnc`): the shared browser's view in shared mode.
const NOVNC_FILES: [&str; 7] = [
    "/vnc.html",
    "/vnc_lite.html",
    "/vnc_auto.html",
    "/websockify",
    "/package.json",
    "/defaults.json",
    "/mandatory.json",
];
const NOVNC_DIRS: [&str; 4] = ["/app/", "/core/", "/vendor/", "/include/"];

/// Is this one of noVNC's paths at the root?
fn is_novnc(path: &str) -> bool {
    NOVNC_FILES.contains(&path) || NOVNC_DIRS.iter().any(|dir| path.starts_with(dir))
}

impl Route<'_> {
    /// The same route, owning what it names (for a stage that outlives the request's head).
    pub fn into_owned(self) -> Route<'static> {
        let own = |text: Cow<'_, str>| Cow::Owned(text.into_owned());
        match self {
            Route::Health => Route::Health,
            Route::Ready => Route::Ready,
            Route::ViewRedirect { owner_hash } => Route::ViewRedirect { owner_hash },
            Route::View { owner_hash, rest } => Route::View {
                owner_hash,
                rest: own(rest),
            },
            Route::Rpc {
                owner,
                owner_hash,
                rest,
            } => Route::Rpc {
                owner: own(owner),
                owner_hash,
                rest: own(rest),
            },
            Route::Cdp {
                owner,
                owner_hash,
                rest,
            } => Route::Cdp {
                owner: own(owner),
                owner_hash,
                rest: own(rest),
            },
            Route::Release { owner, owner_hash } => Route::Release {
                owner: own(owner),
                owner_hash,
            },
            Route::RunResult { owner_hash, id } => Route::RunResult {
                owner_hash,
                id: own(id),
            },
            Route::ApiEnsure => Route::ApiEnsure,
            Route::ApiCleanup => Route::ApiCleanup,
            Route::SharedView { rest } => Route::SharedView { rest: own(rest) },
            Route::Other => Route::Other,
        }
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Health => "healthz",
            Route::Ready => "readyz",
            Route::ViewRedirect { .. } | Route::View { .. } => "view",
            Route::Rpc { .. } => "rpc",
            Route::Cdp { .. } => "cdp",
            Route::Release { .. } => "release",
            Route::RunResult { .. } => "run_result",
            Route::ApiEnsure => "api_ensure",
            Route::ApiCleanup => "api_cleanup",
            Route::SharedView { .. } => "shared_view",
            Route::Other => "other",
        }
    }

    /// The owner hash this route concerns, if any.
    pub fn owner_hash(&self) -> Option<OwnerHash> {
        match self {
            Route::ViewRedirect { owner_hash }
            | Route::View { owner_hash, .. }
            | Route::Rpc { owner_hash, .. }
            | Route::Cdp { owner_hash, .. }
            | Route::Release { owner_hash, .. }
            | Route::RunResult { owner_hash, .. } => Some(*owner_hash),
            _ => None,
        }
    }
}

/// Why a request could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no route for {0}")]
    NotFound(String),
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: Method, path: String },
    #[error("invalid owner: {0}")]
    Owner(OwnerError),
    #[error("invalid owner hash: {0}")]
    OwnerHash(OwnerError),
    #[error("invalid path: {0}")]
    Path(&'static str),
}

/// Parses a request's method and URI into a route.
pub fn parse<'a>(method: &Method, uri: &'a Uri) -> Result<Route<'a>, RouteError> {
    let path = uri.path();
    let query = uri.query();

    if let Some(after) = path.strip_prefix("/view/") {
        let (hash, rest) = split_first_segment(after);
        let owner_hash = OwnerHash::parse(hash).map_err(RouteError::OwnerHash)?;
        return match rest {
            None => Ok(Route::ViewRedirect { owner_hash }),
            Some(rest) => Ok(Route::View {
                owner_hash,
                rest: forward_path(rest, query)?,
            }),
        };
    }
    if let Some(after) = path.strip_prefix("/rpc/") {
        let (segment, rest) = split_first_segment(after);
        let owner = decode_owner(segment).map_err(RouteError::Owner)?;
        let owner_hash = OwnerHash::of(&owner);
        if method == Method::GET
            && let Some(id) = rest.and_then(|r| r.strip_prefix("/runs/"))
            && !id.contains('/')
        {
            return Ok(Route::RunResult {
                owner_hash,
                id: Cow::Borrowed(id),
            });
        }
        return match rest {
            None if method == Method::DELETE => Ok(Route::Release { owner, owner_hash }),
            None => Ok(Route::Rpc {
                owner,
                owner_hash,
                rest: forward_path("/run", query)?,
            }),
            Some(rest) => Ok(Route::Rpc {
                owner,
                owner_hash,
                rest: forward_path(rest, query)?,
            }),
        };
    }
    if let Some(after) = path.strip_prefix("/cdp/") {
        let (segment, rest) = split_first_segment(after);
        let owner = decode_owner(segment).map_err(RouteError::Owner)?;
        let owner_hash = OwnerHash::of(&owner);
        return Ok(Route::Cdp {
            owner,
            owner_hash,
            rest: forward_path(rest.unwrap_or("/"), query)?,
        });
    }
    if is_novnc(path) {
        return Ok(Route::SharedView {
            rest: forward_path(path, query)?,
        });
    }
    let route = match path {
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        "/api/runtimes/ensure" => Route::ApiEnsure,
        "/api/runtimes/cleanup" => Route::ApiCleanup,
        _ => return Ok(Route::Other),
    };
    let allowed = match route {
        Route::Health | Route::Ready => method == Method::GET || method == Method::HEAD,
        _ => method == Method::POST,
    };
    if !allowed {
        return Err(RouteError::MethodNotAllowed {
            method: method.clone(),
            path: path.to_owned(),
        });
    }
    Ok(route)
}

/// Splits `seg/rest...` into `seg` and `Some("/rest...")`; `seg` alone gives `None`.
fn split_first_segment(path: &str) -> (&str, Option<&str>) {
    // A byte search: `str::find` with a `char` costs several times more on these short paths.
    match path.bytes().position(|b| b == b'/') {
        Some(i) => (&path[..i], Some(&path[i..])),
        None => (path, None),
    }
}

/// Checks the path forwarded to a runtime and joins the query back on.
///
/// Every segment is percent-decoded once and refused when it is a dot segment, holds a
/// separator, a control byte, or a further percent-escape (double encoding): the runtime
/// must see exactly the path the gateway checked.
fn forward_path<'a>(rest: &'a str, query: Option<&str>) -> Result<Cow<'a, str>, RouteError> {
    // Over bytes: splitting and searching a `str` by `char` cost several times more here.
    for segment in rest.as_bytes().split(|&b| b == b'/') {
        if segment.contains(&b'\\') {
            return Err(RouteError::Path("backslash in path"));
        }
        if !segment.contains(&b'%') && segment.first() != Some(&b'.') {
            continue;
        }
        let decoded: Vec<u8> = percent_encoding::percent_decode(segment).collect();
        if decoded == b"." || decoded == b".." {
            return Err(RouteError::Path("dot segment in path"));
        }
        if decoded.iter().any(|b| matches!(b, b'/' | b'\\')) {
            return Err(RouteError::Path("encoded separator in path"));
        }
        if decoded.iter().any(|b| b.is_ascii_control()) {
            return Err(RouteError::Path("control character in path"));
        }
        if decoded.contains(&b'%') {
            return Err(RouteError::Path("double percent-encoding in path"));
        }
    }
    Ok(match query {
        Some(q) => Cow::Owned(format!("{rest}?{q}")),
        None => Cow::Borrowed(rest),
    })
}

impl RouteError {
    /// No route for this path (shortened for the answer and the log).
    pub fn not_found(path: &str) -> RouteError {
        RouteError::NotFound(truncate(path))
    }
}

fn truncate(path: &str) -> String {
    const MAX: usize = 128;
    if path.len() <= MAX {
        return path.to_owned();
    }
    let mut end = MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "2bd806c97f0e00af";

    fn route(method: Method, uri: &str) -> Result<Route<'static>, RouteError> {
        parse(&method, &uri.parse::<Uri>().unwrap()).map(Route::into_owned)
    }

    /// A request whose owner and path need no decoding is routed without a copy of either;
    /// an escaped owner and a query are decoded and joined into strings of their own.
    #[test]
    fn routing_borrows_what_needs_no_decoding() {
        let plain: Uri = "/rpc/alice/health".parse().unwrap();
        let Ok(Route::Rpc { owner, rest, .. }) = parse(&Method::GET, &plain) else {
            panic!("an RPC route");
        };
        assert!(matches!(
            (&owner, &rest),
            (Cow::Borrowed("alice"), Cow::Borrowed("/health"))
        ));
        let escaped: Uri = "/rpc/al%69ce/health?x=1".parse().unwrap();
        let Ok(Route::Rpc { owner, rest, .. }) = parse(&Method::GET, &escaped) else {
            panic!("an RPC route");
        };
        assert!(matches!((&owner, &rest), (Cow::Owned(o), Cow::Owned(r)) if o == "alice" && r == "/health?x=1"));
    }

    #[test]
    fn routes_table() {
        let h = OwnerHash::parse(HASH).unwrap();
        let alice = OwnerHash::of("alice");
        let cases: Vec<(Method, String, Result<Route, RouteError>)> = vec![
            (Method::GET, "/healthz".into(), Ok(Route::Health)),
            (Method::GET, "/readyz".into(), Ok(Route::Ready)),
            (
                Method::GET,
                format!("/view/{HASH}/vnc.html?path=view/{HASH}/websockify"),
                Ok(Route::View {
                    owner_hash: h,
                    rest: format!("/vnc.html?path=view/{HASH}/websockify").into(),
                }),
            ),
            (
                Method::GET,
                format!("/view/{HASH}/"),
                Ok(Route::View {
                    owner_hash: h,
                    rest: "/".into(),
                }),
            ),
            (
                Method::GET,
                format!("/view/{HASH}"),
                Ok(Route::ViewRedirect { owner_hash: h }),
            ),
            (
                Method::POST,
                "/rpc/alice".into(),
                Ok(Route::Rpc {
                    owner: "alice".into(),
                    owner_hash: alice,
                    rest: "/run".into(),
                }),
            ),
            (
                Method::GET,
                "/rpc/alice/health?x=1".into(),
                Ok(Route::Rpc {
                    owner: "alice".into(),
                    owner_hash: alice,
                    rest: "/health?x=1".into(),
                }),
            ),
            (
                Method::DELETE,
                "/rpc/alice".into(),
                Ok(Route::Release {
                    owner: "alice".into(),
                    owner_hash: alice,
                }),
            ),
            (
                Method::GET,
                "/cdp/alice/json/version".into(),
                Ok(Route::Cdp {
                    owner: "alice".into(),
                    owner_hash: alice,
                    rest: "/json/version".into(),
                }),
            ),
            (
                Method::GET,
                "/cdp/alice".into(),
                Ok(Route::Cdp {
                    owner: "alice".into(),
                    owner_hash: alice,
                    rest: "/".into(),
                }),
            ),
            (
                Method::GET,
                "/cdp/../json".into(),
                Err(RouteError::Owner(OwnerError::DotSegment)),
            ),
            (Method::POST, "/api/runtimes/ensure".into(), Ok(Route::ApiEnsure)),
            (Method::POST, "/api/runtimes/cleanup".into(), Ok(Route::ApiCleanup)),
            (Method::GET, "/".into(), Ok(Route::Other)),
            (
                Method::GET,
                "/rpc/alice/runs/abc123?x=1".into(),
                Ok(Route::RunResult {
                    owner_hash: alice,
                    id: "abc123".into(),
                }),
            ),
            (
                Method::POST,
                "/rpc/alice/runs/abc123".into(),
                Ok(Route::Rpc {
                    owner: "alice".into(),
                    owner_hash: alice,
                    rest: "/runs/abc123".into(),
                }),
            ),
            (Method::POST, "/api/login?next=/".into(), Ok(Route::Other)),
            (
                Method::GET,
                "/vnc.html?path=websockify".into(),
                Ok(Route::SharedView {
                    rest: "/vnc.html?path=websockify".into(),
                }),
            ),
            (
                Method::GET,
                "/app/ui.js".into(),
                Ok(Route::SharedView {
                    rest: "/app/ui.js".into(),
                }),
            ),
            (
                Method::GET,
                "/app/%2e%2e/secret".into(),
                Err(RouteError::Path("dot segment in path")),
            ),
            (
                Method::GET,
                "/view/".into(),
                Err(RouteError::OwnerHash(OwnerError::BadHash)),
            ),
            (
                Method::GET,
                "/view/ABCDEF0123456789/".into(),
                Err(RouteError::OwnerHash(OwnerError::BadHash)),
            ),
            (
                Method::GET,
                "/view/2bd806c97f0e00a/".into(),
                Err(RouteError::OwnerHash(OwnerError::BadHash)),
            ),
            (
                Method::GET,
                "/view/..%2f..%2fetc/".into(),
                Err(RouteError::OwnerHash(OwnerError::BadHash)),
            ),
            (
                Method::POST,
                "/rpc/..".into(),
                Err(RouteError::Owner(OwnerError::DotSegment)),
            ),
            (
                Method::POST,
                "/rpc/a%2Fb".into(),
                Err(RouteError::Owner(OwnerError::Slash)),
            ),
            (
                Method::POST,
                "/rpc/a%00".into(),
                Err(RouteError::Owner(OwnerError::ControlChar)),
            ),
            (Method::POST, "/rpc/".into(), Err(RouteError::Owner(OwnerError::Empty))),
            (
                Method::GET,
                format!("/view/{HASH}/../x"),
                Err(RouteError::Path("dot segment in path")),
            ),
            (
                Method::GET,
                format!("/view/{HASH}/%2e%2E/x"),
                Err(RouteError::Path("dot segment in path")),
            ),
            (
                Method::GET,
                format!("/view/{HASH}/a%2fb"),
                Err(RouteError::Path("encoded separator in path")),
            ),
            (
                Method::GET,
                format!("/view/{HASH}/a%5cb"),
                Err(RouteError::Path("encoded separator in path")),
            ),
            (
                Method::GET,
                format!("/view/{HASH}/%252e%252e/"),
                Err(RouteError::Path("double percent-encoding in path")),
            ),
            (
                Method::GET,
                format!("/view/{HASH}/a%00"),
                Err(RouteError::Path("control character in path")),
            ),
            (
                Method::GET,
                "/rpc/alice/a/../../x".into(),
                Err(RouteError::Path("dot segment in path")),
            ),
            (
                Method::GET,
                "/api/runtimes/ensure".into(),
                Err(RouteError::MethodNotAllowed {
                    method: Method::GET,
                    path: "/api/runtimes/ensure".into(),
                }),
            ),
        ];
        for (method, uri, want) in cases {
            assert_eq!(route(method.clone(), &uri), want, "{method} {uri}");
        }
    }

    #[test]
    fn long_owner_is_refused() {
        let uri = format!("/rpc/{}", "a".repeat(10_000));
        assert!(matches!(
            route(Method::POST, &uri),
            Err(RouteError::Owner(OwnerError::TooLong(_)))
        ));
    }
}

/// Panics unless `route` keeps the router's promises: forwarded paths start with `/` and
/// carry no dot segment or separator in any encoding; owners are well formed and hashed like
/// the seed. The fuzz target (fuzz/fuzz_targets/route.rs) and the unit sweep below call it.
pub fn assert_invariants(route: &Route) {
    let check_rest = |rest: &str| {
        assert!(rest.starts_with('/'), "{rest}");
        let path = rest.split('?').next().unwrap_or_default();
        for segment in path.split('/') {
            let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
            assert!(decoded != b"." && decoded != b"..", "dot segment forwarded: {rest}");
            assert!(
                !decoded.contains(&b'\\') && !decoded.contains(&b'/'),
                "separator forwarded: {rest}"
            );
        }
    };
    match route {
        Route::View { owner_hash, rest } => {
            assert!(OwnerHash::parse(owner_hash.as_str()).is_ok());
            check_rest(rest);
        }
        Route::Rpc {
            owner,
            owner_hash,
            rest,
        }
        | Route::Cdp {
            owner,
            owner_hash,
            rest,
        } => {
            assert_eq!(*owner_hash, OwnerHash::of(owner));
            assert!(!owner.contains(['/', '\\']) && !owner.chars().any(char::is_control));
            assert!(!owner.is_empty() && owner.len() <= crate::owner::MAX_OWNER_LEN);
            check_rest(rest);
        }
        _ => {}
    }
}

#[cfg(test)]
mod invariants {
    //! [`assert_invariants`] over a bounded, deterministic sweep of paths built from the
    //! characters traversal is made of (the fuzz target explores beyond it).

    use super::*;

    #[test]
    fn no_accepted_route_forwards_traversal() {
        const PIECES: [&str; 14] = [
            "/",
            ".",
            "..",
            "%2e",
            "%2E",
            "%2f",
            "%5c",
            "%25",
            "\\",
            "a",
            "view",
            "rpc",
            "cdp",
            "0123456789abcdef",
        ];
        // A linear congruential walk over sequences of pieces: deterministic and bounded.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut accepted = 0;
        for _ in 0..200_000 {
            let mut path = String::from("/");
            for _ in 0..(state % 9) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                path.push_str(PIECES[(state >> 33) as usize % PIECES.len()]);
            }
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let Ok(uri) = path.parse::<Uri>() else { continue };
            for method in [Method::GET, Method::POST, Method::DELETE] {
                if let Ok(route) = parse(&method, &uri) {
                    assert_invariants(&route);
                    accepted += 1;
                }
            }
        }
        assert!(accepted > 1000, "the sweep reached the routes ({accepted} accepted)");
    }
}
