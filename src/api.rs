//! The API handlers: the seed-compatible API for the API server that used to import the
//! Python module, `POST /api/runtimes/ensure` and `POST /api/runtimes/cleanup` (body
//! `{"task_id", "metadata", "thread_id"}`, all optional), and `DELETE /rpc/<owner>`.

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::body::{Body, ClientBody};
use crate::config::{AnswerUrls, IsolationMode};
use crate::error::{RequestError, json_response};
use crate::metrics::Removal;
use crate::owner::{OwnerHash, decode_owner, encode_owner, resolve_isolation_owner};
use std::sync::Arc;

use crate::auth::Auth;
use crate::config::Settings;
use crate::provision::Provisioner;
use crate::view_url::ViewUrls;

/// What the API handlers work with: the gateway's shared state, not its pipeline.
pub struct Api<'a> {
    pub settings: &'a Settings,
    pub provisioner: &'a Arc<Provisioner>,
    pub views: &'a ViewUrls,
    pub auth: &'a Auth,
}

/// Largest accepted API body.
const MAX_BODY: usize = 64 * 1024;

/// The arguments of the seed's `ensure_browser_runtime` / `cleanup_browser_runtime`.
#[derive(Debug, Default, Deserialize)]
struct RunIdentity {
    task_id: Option<String>,
    metadata: Option<Map<String, Value>>,
    thread_id: Option<String>,
}

async fn read_identity(request: Request<ClientBody>) -> Result<RunIdentity, RequestError> {
    let bytes = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                RequestError::BodyTooLarge { limit: MAX_BODY }
            } else {
                RequestError::BadBody(error.to_string())
            }
        })?
        .to_bytes();
    parse_identity(&bytes)
}

/// The run identity in an API body; an empty body (or only whitespace) is no identity.
fn parse_identity(bytes: &[u8]) -> Result<RunIdentity, RequestError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(RunIdentity::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        RequestError::BadBody(format!(
            "expected {{\"task_id\": string, \"metadata\": object, \"thread_id\": string}}, all optional: {e}"
        ))
    })
}

impl RunIdentity {
    /// The owner id, resolved like the seed's `resolve_isolation_owner`; a metadata id
    /// that cannot be resolved as the seed would is a 400 naming the field and why.
    fn owner(&self, mode: IsolationMode) -> Result<String, RequestError> {
        resolve_isolation_owner(
            mode,
            self.task_id.as_deref(),
            self.metadata.as_ref(),
            self.thread_id.as_deref(),
        )
        .map_err(|error| RequestError::BadBody(error.to_string()))
    }

    fn owner_hash(&self, mode: IsolationMode) -> Result<OwnerHash, RequestError> {
        Ok(OwnerHash::of(&self.owner(mode)?))
    }
}

/// The seed's `ensure_browser_runtime`: starts (or finds) the runtime and answers with its
/// `cdp_url`, `rpc_url`, `browser_view`, `isolation_mode` and `owner_hash`; the flag says
/// whether the runtime had to start (a cold request).
///
/// `public_host` and `secure` are what admission found of how the caller reached the
/// gateway: with gateway URLs, the answer points back the same way.
pub async fn ensure(
    api: &Api<'_>,
    request: Request<ClientBody>,
    public_host: Option<&str>,
    secure: bool,
) -> Result<(Response<Body>, bool), RequestError> {
    let scheme = if secure { "https" } else { "http" };
    let base = match api.settings.answer_urls {
        AnswerUrls::Gateway => Some(format!("{scheme}://{}", public_host.ok_or(RequestError::BadHost)?)),
        AnswerUrls::Direct => None,
    };
    let identity = read_identity(request).await?;
    let settings = api.settings;
    let mode = settings.isolation_mode;
    if mode == IsolationMode::Shared {
        // Through the gateway too: every /cdp/<owner> and /rpc/<owner> reaches the shared
        // browser in shared mode, so the answer names it under "shared".
        let (cdp_url, rpc_url) = match &base {
            Some(base) => (format!("{base}/cdp/shared"), format!("{base}/rpc/shared")),
            None => (settings.shared_cdp_url.clone(), settings.shared_rpc_url.clone()),
        };
        let answer = json!({
            "cdp_url": cdp_url,
            "rpc_url": rpc_url,
            "browser_view": shared_view_url(api).await,
            "isolation_mode": "shared",
            "owner_hash": "",
        });
        return Ok((json_response(StatusCode::OK, &answer), false));
    }
    let owner = identity.owner(mode)?;
    let owner_hash = OwnerHash::of(&owner);
    let provisioning = std::time::Instant::now();
    let lease = api.provisioner.acquire(owner_hash).await?;
    let direct = &lease.runtime().direct;
    // Through the gateway, where the owner id can be a path segment (as /rpc/<owner> needs).
    let segment = encode_owner(&owner);
    let (cdp_url, rpc_url) = match base {
        Some(base) if decode_owner(&segment).as_deref() == Ok(owner.as_str()) => {
            (format!("{base}/cdp/{segment}"), format!("{base}/rpc/{segment}"))
        }
        other => {
            if other.is_some() {
                tracing::warn!(%owner_hash, "owner id cannot be a URL path segment; answering the runtime's own URLs");
            }
            (format!("http://{}", direct.cdp), format!("http://{}/run", direct.rpc))
        }
    };
    let answer = json!({
        "cdp_url": cdp_url,
        "rpc_url": rpc_url,
        "browser_view": signed_view_url(api, owner_hash).await,
        "isolation_mode": mode.as_str(),
        "owner_hash": owner_hash.to_string(),
    });
    let mut response = json_response(StatusCode::OK, &answer);
    if lease.cold()
        && let Some(timing) = crate::metrics::server_timing(provisioning.elapsed(), &lease.runtime().phases)
    {
        response.headers_mut().insert(crate::metrics::SERVER_TIMING, timing);
    }
    Ok((response, lease.cold()))
}

/// The shared browser's view URL, as the seed gives it, with a view token for the shared
/// view appended when auth is on.
async fn shared_view_url(api: &Api<'_>) -> String {
    let url = api.views.view_url(IsolationMode::Shared, None).await;
    if url.is_empty() {
        api.views.warn_no_base_url(None);
    }
    if url.is_empty() || api.auth.is_insecure() {
        return url;
    }
    format!(
        "{url}&token={}",
        api.auth.sign_view(crate::auth::ViewSubject::Shared, None)
    )
}

/// The seed's view URL, with a view token appended when auth is on.
async fn signed_view_url(api: &Api<'_>, owner_hash: OwnerHash) -> String {
    let url = api.views.view_url(api.settings.isolation_mode, Some(owner_hash)).await;
    if url.is_empty() {
        api.views.warn_no_base_url(Some(owner_hash));
    }
    if url.is_empty() || api.auth.is_insecure() {
        return url;
    }
    format!("{url}&token={}", api.auth.sign_view(owner_hash, None))
}

/// The seed's `cleanup_browser_runtime`: in per-task mode, removes the task's container and
/// volume; in the other modes it does nothing, as the seed does.
pub async fn cleanup(api: &Api<'_>, request: Request<ClientBody>) -> Result<Response<Body>, RequestError> {
    let identity = read_identity(request).await?;
    let mode = api.settings.isolation_mode;
    if mode != IsolationMode::DockerPerTask {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"isolation_mode": mode.as_str(), "removed": false}),
        ));
    }
    let owner_hash = identity.owner_hash(mode)?;
    let removed = api.provisioner.release(owner_hash, Removal::Cleanup).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "isolation_mode": mode.as_str(),
            "owner_hash": owner_hash.to_string(),
            "removed": removed,
            "volume_removed": true,
        }),
    ))
}

/// `DELETE /rpc/<owner>`: removes the owner's runtime now (and its volume in per-task mode).
pub async fn release(api: &Api<'_>, owner_hash: OwnerHash) -> Result<Response<Body>, RequestError> {
    if api.settings.isolation_mode == IsolationMode::Shared {
        return Err(RequestError::SharedMode {
            owner_hash: owner_hash.to_string(),
        });
    }
    let removed = api.provisioner.release(owner_hash, Removal::Released).await?;
    let volume_removed = api.settings.isolation_mode == IsolationMode::DockerPerTask;
    Ok(json_response(
        StatusCode::OK,
        &json!({"owner_hash": owner_hash.to_string(), "removed": removed, "volume_removed": volume_removed}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_ids_keep_their_literal_numbers_and_order() {
        let identity =
            parse_identity(br#"{"metadata": {"user_id": {"b": 123456789012345678901234567890, "a": -0, "b": 1e400}}}"#)
                .unwrap();
        // python3 -c 'import json; print(str(json.loads(
        //     """{"metadata": {"user_id": {"b": 123456789012345678901234567890, "a": -0, "b": 1e400}}}"""
        // )["metadata"]["user_id"]))'
        assert_eq!(
            identity.owner(IsolationMode::DockerPerPrincipal).unwrap(),
            "{'b': inf, 'a': 0}"
        );
    }

    #[test]
    fn an_unresolvable_metadata_id_is_a_400_naming_the_field() {
        let body = format!(r#"{{"metadata": {{"user_id": {}}}}}"#, "7".repeat(4301));
        let identity = parse_identity(body.as_bytes()).unwrap();
        let error = identity.owner(IsolationMode::DockerPerPrincipal).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.code(), "invalid_body");
        let message = error.to_string();
        assert!(
            message.contains("metadata.user_id") && message.contains("4301 digits"),
            "{message}"
        );
        let nested = parse_identity(r#"{"metadata": {"session_id": ["\u200b"]}}"#.as_bytes()).unwrap();
        let error = nested.owner_hash(IsolationMode::DockerPerPrincipal).unwrap_err();
        assert_eq!(
            (error.status(), error.code()),
            (StatusCode::BAD_REQUEST, "invalid_body")
        );
        assert!(error.to_string().contains("metadata.session_id"), "{error}");
        // The task id alone keys a per-task runtime: the metadata is not read.
        assert!(nested.owner_hash(IsolationMode::DockerPerTask).is_ok());
    }
}
