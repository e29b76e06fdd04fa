//! Admission: every authorisation and request-shape check, as one stage right after routing.
//!
//! Nothing touches the engine before admission says yes, so a refused request never creates
//! anything. It checks the request's framing and header count (before routing too, so that
//! a request smuggled behind a malformed one is never read), bearer tokens for agents, signed
//! view URLs or their cookie for people, the declared size of a run, the origin and shape of
//! a WebSocket handshake, and the host CDP discovery answers will name.

use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};

use crate::auth::{self, Auth, ViewSubject};
use crate::config::{AnswerUrls, IsolationMode, Settings};
use crate::error::RequestError;
use crate::peer::Peer;
use crate::proxy::{cdp, headers};
use crate::route::Route;

/// The settings and credentials admission decides with.
pub struct Admission<'a> {
    pub settings: &'a Settings,
    pub auth: &'a Auth,
}

/// What admission hands on to the stages after it.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Path and query to forward when they differ from the route's (a view's token taken out).
    pub rest: Option<String>,
    /// The view cookie to set, when a signed view URL was used.
    pub view_cookie: Option<HeaderValue>,
    /// The host the client used, checked (a name or address and a port), for the routes
    /// whose answers name it: CDP discovery, and ensure answering gateway URLs.
    pub public_host: Option<String>,
    /// The client used HTTPS, to us or to a trusted proxy in front of us.
    pub secure: bool,
    /// A WebSocket handshake, checked: the stages after take the client's upgrade (told
    /// apart here, once a request).
    pub websocket: bool,
}

impl Admission<'_> {
    /// The checks that hold for every request, routed or not: framing and header count.
    pub fn check_shape(&self, headers: &HeaderMap) -> Result<(), RequestError> {
        headers::check_framing(headers).map_err(RequestError::Framing)?;
        // HTTP/1.1's parser stops at the limit already; HTTP/2 hands over whatever fits in
        // its header list size, so the count is checked here for every protocol.
        let limit = self.settings.limits.max_headers;
        if headers.len() > limit {
            return Err(RequestError::TooManyHeaders { limit });
        }
        Ok(())
    }

    /// Decides whether a routed request may go on, and what the later stages need of it.
    pub fn admit(&self, route: &Route, request: &Parts, peer: &Peer) -> Result<Admitted, RequestError> {
        let headers = &request.headers;
        let secure = peer.tls || (peer.trusted && headers::says_https(headers));
        let mut admitted = Admitted {
            secure,
            ..Admitted::default()
        };
        match route {
            Route::Health | Route::Ready | Route::ViewRedirect { .. } => return Ok(admitted),
            Route::ApiEnsure => {
                self.auth.check_api(headers)?;
                if self.settings.answer_urls == AnswerUrls::Gateway {
                    admitted.public_host = Some(checked_host(request)?);
                }
                return Ok(admitted);
            }
            Route::Release { .. } | Route::ApiCleanup | Route::RunResult { .. } => {
                self.auth.check_api(headers)?;
                return Ok(admitted);
            }
            Route::View { owner_hash, rest } => {
                self.admit_view(ViewSubject::Owner(*owner_hash), rest, headers, &mut admitted)?
            }
            Route::SharedView { rest } if self.settings.isolation_mode == IsolationMode::Shared => {
                self.admit_view(ViewSubject::Shared, rest, headers, &mut admitted)?
            }
            // The application behind the default upstream does its own authorisation; the
            // gateway only checks that a WebSocket handshake is one.
            Route::SharedView { .. } | Route::Other => {
                admitted.websocket = headers::is_websocket_upgrade(headers);
                if admitted.websocket {
                    headers::check_websocket_handshake(&request.method, headers).map_err(RequestError::BadWebSocket)?;
                }
                return Ok(admitted);
            }
            Route::Rpc { .. } => {
                self.auth.check_api(headers)?;
                let max = self.settings.limits.max_rpc_body_bytes;
                let declared = headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if declared.is_some_and(|length| length > max) {
                    return Err(RequestError::BodyTooLarge { limit: max as usize });
                }
            }
            Route::Cdp { rest, .. } => {
                self.auth.check_api(headers)?;
                if cdp::is_discovery(rest) {
                    admitted.public_host = Some(checked_host(request)?);
                }
            }
        }
        admitted.websocket = headers::is_websocket_upgrade(headers);
        if admitted.websocket {
            self.auth.check_origin(headers)?;
            headers::check_websocket_handshake(&request.method, headers).map_err(RequestError::BadWebSocket)?;
        }
        Ok(admitted)
    }
}

impl Admission<'_> {
    /// A view's signed URL (its `token`, which is taken out of what is forwarded) or the
    /// cookie an earlier one set.
    fn admit_view(
        &self,
        subject: ViewSubject,
        rest: &str,
        headers: &http::HeaderMap,
        admitted: &mut Admitted,
    ) -> Result<(), RequestError> {
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let (token, query) = query.map(auth::take_query_token).unwrap_or_default();
        if let Some((token, expires)) = self.auth.check_view_request(subject, token.as_deref(), headers)? {
            admitted.view_cookie = Some(auth::view_cookie(subject, &token, expires, admitted.secure));
        }
        admitted.rest = Some(if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        });
        Ok(())
    }
}

/// The host the client used (`Host`, else the URI's authority), if it is fit to go into a URL.
fn checked_host(request: &Parts) -> Result<String, RequestError> {
    let host = request
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    Ok(cdp::valid_public_host(host).ok_or(RequestError::BadHost)?.to_owned())
}
