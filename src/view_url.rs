//! Public live-view URLs, built like the seed's `get_browser_view_url`.
//!
//! The base URL comes from configuration (BROWSER_VIEW_BASE_URL / BROWSER_VIEW_URL); without
//! one it is discovered from the tunnel container's logs (the last `https://…` they print),
//! cached 60 s when found and 10 s when not, so a burst of cold starts reads the logs once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use crate::config::{IsolationMode, normalize_view_base_url};
use crate::owner::OwnerHash;
use crate::provision::backend::TunnelLogs;

const FOUND_TTL: Duration = Duration::from_secs(60);
const MISSING_TTL: Duration = Duration::from_secs(10);

/// Builds view URLs; owns the cache of the discovered base URL.
pub struct ViewUrls {
    /// The configured base URL; when set, nothing is discovered.
    configured: Option<String>,
    tunnel_container: String,
    /// Where the tunnel container's output is read.
    logs: Arc<dyn TunnelLogs>,
    /// The discovered base URL (empty when none was found), expiring per [`BaseExpiry`].
    discovered: Cache<(), String>,
}

/// 60 s for a found URL, 10 s for none, as in the seed.
struct BaseExpiry;

impl Expiry<(), String> for BaseExpiry {
    fn expire_after_create(&self, _key: &(), value: &String, _now: Instant) -> Option<Duration> {
        Some(if value.is_empty() { MISSING_TTL } else { FOUND_TTL })
    }
}

impl ViewUrls {
    pub fn new(configured: Option<String>, tunnel_container: String, logs: Arc<dyn TunnelLogs>) -> Self {
        ViewUrls {
            configured,
            tunnel_container,
            logs,
            discovered: Cache::builder().max_capacity(1).expire_after(BaseExpiry).build(),
        }
    }

    /// The public base URL, or `""` when none is configured or discoverable.
    pub async fn base_url(&self) -> String {
        if let Some(url) = &self.configured {
            return url.clone();
        }
        self.discovered
            .get_with((), async {
                match self.logs.tail(&self.tunnel_container, 200).await {
                    Ok(logs) => last_https_url(&logs).map(normalize_view_base_url).unwrap_or_default(),
                    Err(error) => {
                        tracing::debug!(%error, "no view base URL from the tunnel's logs");
                        String::new()
                    }
                }
            })
            .await
    }

    /// Says that an answer goes out without a view URL, and how to give it one.
    pub fn warn_no_base_url(&self, owner_hash: Option<OwnerHash>) {
        tracing::warn!(
            owner_hash = %owner_hash.map(|h| h.to_string()).unwrap_or_default(),
            tunnel_container = %self.tunnel_container,
            "no public view base URL: answering browser_view \"\"; set view.base_url (BROWSER_VIEW_BASE_URL), \
             or run the tunnel container, whose logs name its public https:// URL"
        );
    }

    /// The seed's view URL for an owner hash, or `""` without a base URL.
    pub async fn view_url(&self, mode: IsolationMode, owner_hash: Option<OwnerHash>) -> String {
        let base = self.base_url().await;
        if base.is_empty() {
            return base;
        }
        match (mode, owner_hash) {
            (IsolationMode::Shared, _) | (_, None) => format!("{base}/vnc.html?path=websockify"),
            (_, Some(hash)) => format!("{base}/view/{hash}/vnc.html?path=view/{hash}/websockify"),
        }
    }
}

/// The last `https://…` in `text`, up to whitespace or a quote or angle bracket (the seed's
/// `https://[^\s"'<>]+`).
fn last_https_url(text: &str) -> Option<&str> {
    let start = text.rfind("https://")?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_tunnel_url() {
        let logs = "INF Requesting new quick Tunnel\n\
                    INF |  https://old-name.trycloudflare.com  |\n\
                    INF |  https://fresh-name.trycloudflare.com/vnc.html  |\n\
                    INF Registered tunnel connection";
        assert_eq!(
            last_https_url(logs),
            Some("https://fresh-name.trycloudflare.com/vnc.html")
        );
        assert_eq!(
            normalize_view_base_url(last_https_url(logs).unwrap()),
            "https://fresh-name.trycloudflare.com"
        );
        assert_eq!(last_https_url("url=\"https://a.b\""), Some("https://a.b"));
        assert_eq!(last_https_url("nothing here http://a.b"), None);
    }
}
