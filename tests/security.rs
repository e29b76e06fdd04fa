//! Nobody reaches, watches or spawns a runtime that is not theirs: bearer tokens for agents,
//! signed expiring view URLs and their cookie for people, origin checks for WebSockets,
//! secrets generated when none are configured. Every refusal happens before the engine is
//! asked for anything, so none of them creates a container.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, Request};
use http_body_util::Full;

fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_need_a_valid_bearer_token() {
    let scope = Scope::new("auth-api");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("intruder");
    let endpoints = [
        (Method::POST, format!("/rpc/{owner}")),
        (Method::GET, format!("/rpc/{owner}/health")),
        (Method::DELETE, format!("/rpc/{owner}")),
        (Method::GET, format!("/cdp/{owner}/json/version")),
        (Method::POST, "/api/runtimes/ensure".to_owned()),
        (Method::POST, "/api/runtimes/cleanup".to_owned()),
    ];
    let wrong = format!("Bearer {TEST_API_TOKEN}x");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "unauthorized"),
        (&[("authorization", &wrong)], "invalid_token"),
        (&[("authorization", "Basic dGVzdDp0ZXN0")], "invalid_token"),
        (&[("authorization", "Bearer ")], "invalid_token"),
    ];
    for (method, path) in &endpoints {
        for (headers, code) in &cases {
            let reply = send_request(request(method.clone(), &gateway.url(path), headers)).await;
            assert_eq!(reply.status, 401, "{method} {path} {headers:?}: {}", reply.text());
            assert_eq!(&reply.error_code(), code, "{method} {path} {headers:?}");
            assert_eq!(reply.headers["www-authenticate"], "Bearer");
        }
    }
    assert!(scope.containers().is_empty(), "a refused request started a runtime");
    // The right token gets through.
    let reply = post(&gateway.url(&format!("/rpc/{owner}")), "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn views_need_a_signed_unexpired_url_for_that_owner() {
    let scope = Scope::new("auth-view");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("watched");
    let hash = seed_hash(&owner);
    let page = |query: String| gateway.url(&format!("/view/{hash}/vnc.html{query}"));

    let someone_else = view_token(&unique("someone-else"));
    let expired = expired_view_token(&owner);
    let forged = view_token_with(&owner, "a-different-secret-of-at-least-32-chars", &[]);
    let valid = view_token(&owner);
    let mut tampered = valid.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        (String::new(), 401, "unauthorized"),
        ("?token=".to_owned(), 401, "invalid_token"),
        ("?token=garbage".to_owned(), 401, "invalid_token"),
        (format!("?token={forged}"), 401, "invalid_token"),
        (format!("?token={tampered}"), 401, "invalid_token"),
        (format!("?token={expired}"), 401, "expired_token"),
        (format!("?token={someone_else}"), 403, "wrong_owner"),
    ];
    for (query, status, code) in &cases {
        let reply = get(&page(query.clone())).await;
        assert_eq!(reply.status.as_u16(), *status, "{query}: {}", reply.text());
        assert_eq!(&reply.error_code(), code, "{query}");
    }
    let ws = format!("ws://{}/view/{hash}/websockify", gateway.addr);
    assert!(
        tokio_tungstenite::connect_async(&ws).await.is_err(),
        "a WebSocket without a token is refused"
    );
    assert!(scope.containers().is_empty(), "a refused view started a runtime");

    // A valid URL opens the view and sets the cookie that noVNC's own requests then carry.
    let reply = get(&page(format!("?path=view/{hash}/websockify&token={valid}"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let cookie = reply.headers["set-cookie"].to_str().unwrap().to_owned();
    for part in [
        "lazygate_view=",
        &format!("Path=/view/{hash}/"),
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=",
    ] {
        assert!(cookie.contains(part), "{part} missing from {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP from an untrusted peer: no Secure flag"
    );
    let cookie_pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = send_request(request(
        Method::GET,
        &gateway.url(&format!("/view/{hash}/vnc.html")),
        &[("cookie", &cookie_pair)],
    ))
    .await;
    assert_eq!(with_cookie.status, 200, "{}", with_cookie.text());
    // The cookie of one owner's view opens no other view.
    let other_hash = seed_hash(&unique("neighbour"));
    let elsewhere = send_request(request(
        Method::GET,
        &gateway.url(&format!("/view/{other_hash}/vnc.html")),
        &[("cookie", &cookie_pair)],
    ))
    .await;
    assert_eq!(elsewhere.status, 403);
    assert_eq!(elsewhere.error_code(), "wrong_owner");
    assert_eq!(scope.containers().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_from_foreign_origins_are_refused() {
    let scope = Scope::new("auth-origin");
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_ALLOWED_ORIGINS", "https://app.example.test")
        .start();
    let owner = unique("origin");
    let hash = seed_hash(&owner);
    let url = format!(
        "ws://{}/view/{hash}/websockify?token={}",
        gateway.addr,
        view_token(&owner)
    );
    let handshake = |origin: &str| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert("origin", origin.parse().unwrap());
        request
    };
    let refused = tokio_tungstenite::connect_async(handshake("https://evil.example.test")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected a 403, got {other:?}"),
    }
    assert!(scope.containers().is_empty());
    let own = format!("http://{}", gateway.addr);
    assert!(
        tokio_tungstenite::connect_async(handshake(&own)).await.is_ok(),
        "the gateway's own origin"
    );
    assert!(
        tokio_tungstenite::connect_async(handshake("https://app.example.test"))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_view_secret_keeps_open_views_until_it_is_dropped() {
    let scope = Scope::new("auth-rotation");
    let new_secret = "the-new-view-secret-0123456789-abcdef";
    let owner = unique("rotated");
    let hash = seed_hash(&owner);
    let old_token = view_token(&owner);
    let url = |gateway: &Gateway| gateway.url(&format!("/view/{hash}/vnc.html?token={old_token}"));
    let rotating = GatewayConfig::new(&scope)
        .env("LAZYGATE_VIEW_SECRET", new_secret)
        .env("LAZYGATE_VIEW_SECRET_PREVIOUS", TEST_VIEW_SECRET)
        .start();
    assert_eq!(
        get(&url(&rotating)).await.status,
        200,
        "the previous secret still admits"
    );
    drop(rotating);
    let rotated = GatewayConfig::new(&scope)
        .env("LAZYGATE_VIEW_SECRET", new_secret)
        .start();
    let reply = get(&url(&rotated)).await;
    assert_eq!(reply.status, 401, "dropping the old secret revokes its URLs");
    assert_eq!(reply.error_code(), "invalid_token");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rotates_secrets_from_the_file_without_cutting_open_views() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let scope = Scope::new("auth-reload");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lazygate.toml");
    let (old_token, new_token) = ("agent-token-before-0123456789", "agent-token-after-0123456789");
    let new_secret = "the-reloaded-view-secret-0123456789-abcdef";
    let write = |text: String| std::fs::write(&file, text).unwrap();
    write(format!(
        "[auth]\napi_tokens = [\"{old_token}\"]\nview_secret = \"{TEST_VIEW_SECRET}\"\n"
    ));
    let gateway = GatewayConfig::new(&scope)
        .unset("LAZYGATE_API_TOKENS")
        .unset("LAZYGATE_VIEW_SECRET")
        .env("LAZYGATE_CONFIG", file.to_str().unwrap())
        .start();
    let in_use = gateway.log_lines("secrets in use");
    assert!(
        in_use.iter().any(|l| l.contains("1 configured (auth.api_tokens)")
            && l.contains("configured (auth.view_secret) id")
            && l.contains("view_secret_previous=\"none\"")),
        "{in_use:?}"
    );
    let cleanup = gateway.url("/api/runtimes/cleanup");
    let status_with = |token: &'static str| {
        let cleanup = cleanup.clone();
        async move {
            let bearer = format!("Bearer {token}");
            send_request(request(Method::POST, &cleanup, &[("authorization", &bearer)]))
                .await
                .status
        }
    };
    assert_eq!(status_with(old_token).await, 200);

    // A person watches, with a link signed by the secret about to be rotated.
    let owner = unique("watched-through-rotation");
    let hash = seed_hash(&owner);
    let old_link = view_token(&owner);
    let url = format!("ws://{}/view/{hash}/websockify?token={old_link}", gateway.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("the view opens");
    let echo = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, text: &str| {
        ws.send(Message::Text(text.into())).await.unwrap();
        ws.next().await.unwrap().unwrap() == Message::Text(text.into())
    };
    assert!(echo(&mut ws, "before").await);

    // Rotation: a new secret, the old one kept as previous; a new agent token.
    write(format!(
        "[auth]\napi_tokens = [\"{new_token}\"]\nview_secret = \"{new_secret}\"\nview_secret_previous = \"{TEST_VIEW_SECRET}\"\n"
    ));
    let hangup = |gateway: &Gateway| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &gateway.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let reloads = |gateway: &Gateway| gateway.log_lines("secrets reloaded").len();
    hangup(&gateway);
    eventually("the first reload", std::time::Duration::from_secs(10), || {
        reloads(&gateway) == 1
    })
    .await;
    assert!(echo(&mut ws, "during").await, "the open view was not cut");
    assert_eq!(status_with(old_token).await, 401, "the replaced agent token is refused");
    assert_eq!(status_with(new_token).await, 200);
    let page = |token: String| gateway.url(&format!("/view/{hash}/vnc.html?token={token}"));
    assert_eq!(
        get(&page(old_link.clone())).await.status,
        200,
        "the previous secret still admits"
    );
    let new_link = view_token_with(&owner, new_secret, &[]);
    assert_eq!(get(&page(new_link.clone())).await.status, 200);
    let reloaded = gateway.log_lines("secrets reloaded").join("\n");
    assert!(
        reloaded.contains("still accepted: drop it 43200 s after the rotation"),
        "{reloaded}"
    );

    // A file that no longer loads changes nothing.
    write("[auth]\nview_secret = 5\n".to_owned());
    hangup(&gateway);
    eventually("the refused reload", std::time::Duration::from_secs(10), || {
        !gateway.log_lines("cannot reload the secrets").is_empty()
    })
    .await;
    assert_eq!(status_with(new_token).await, 200);

    // The previous secret dropped: its links are refused; the open view still stays.
    write(format!(
        "[auth]\napi_tokens = [\"{new_token}\"]\nview_secret = \"{new_secret}\"\n"
    ));
    hangup(&gateway);
    eventually("the second reload", std::time::Duration::from_secs(10), || {
        reloads(&gateway) == 2
    })
    .await;
    let refused = get(&page(old_link)).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(get(&page(new_link)).await.status, 200);
    assert!(echo(&mut ws, "after").await, "the open view was not cut");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_configured_secrets_the_gateway_generates_and_keeps_them() {
    let scope = Scope::new("auth-generated");
    let config = GatewayConfig::new(&scope)
        .env("LAZYGATE_API_TOKENS", "")
        .env("LAZYGATE_VIEW_SECRET", "");
    let gateway = config.start();
    let path = config.state_dir.path().join("lazygate-secrets.json");
    assert!(
        !gateway.log_lines(&path.display().to_string()).is_empty(),
        "the log says where they are"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let secrets: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let token = secrets["api_token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 32);

    let cleanup = gateway.url("/api/runtimes/cleanup");
    let refused = post(&cleanup, "{}").await;
    assert_eq!(refused.status, 401, "the tests' token is not the generated one");
    let bearer = format!("Bearer {token}");
    let admitted = send_request(request(Method::POST, &cleanup, &[("authorization", &bearer)])).await;
    assert_eq!(admitted.status, 200, "{}", admitted.text());

    // A restart keeps them: the same token still works.
    drop(gateway);
    let again = config.start();
    let admitted = send_request(request(
        Method::POST,
        &again.url("/api/runtimes/cleanup"),
        &[("authorization", &bearer)],
    ))
    .await;
    assert_eq!(admitted.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_dev_mode_turns_auth_off_and_says_so() {
    let scope = Scope::new("auth-insecure");
    let gateway = GatewayConfig::new(&scope).env("LAZYGATE_INSECURE_DEV", "1").start();
    assert!(!gateway.log_lines("INSECURE DEVELOPMENT MODE").is_empty());
    let reply = send_request(request(Method::POST, &gateway.url("/api/runtimes/cleanup"), &[])).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_tunnel_saying_https_makes_view_cookies_secure() {
    let scope = Scope::new("auth-trusted-proxy");
    let owner = unique("tunnelled");
    let hash = seed_hash(&owner);
    let url = |gateway: &Gateway| gateway.url(&format!("/view/{hash}/vnc.html?token={}", view_token(&owner)));
    let says_https = [("x-forwarded-proto", "https")];
    let trusting = GatewayConfig::new(&scope)
        .env("LAZYGATE_TRUSTED_PROXIES", "127.0.0.1")
        .start();
    let reply = send_request(request(Method::GET, &url(&trusting), &says_https)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.headers["set-cookie"].to_str().unwrap().contains("; Secure"));
    // CDP discovery behind it names secure WebSockets; without the header, plain ones.
    let version = trusting.url(&format!("/cdp/{owner}/json/version"));
    let agent = [("authorization", bearer()), ("x-forwarded-proto", "https".to_owned())];
    let agent: Vec<(&str, &str)> = agent.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let secure = send_request(request(Method::GET, &version, &agent)).await;
    assert_eq!(secure.status, 200, "{}", secure.text());
    let expected = format!("wss://{}/cdp/{owner}/devtools/browser/stub", trusting.addr);
    assert_eq!(secure.json()["webSocketDebuggerUrl"], expected.as_str());
    let plain = send_request(request(Method::GET, &version, &agent[..1])).await;
    let expected = format!("ws://{}/cdp/{owner}/devtools/browser/stub", trusting.addr);
    assert_eq!(plain.json()["webSocketDebuggerUrl"], expected.as_str());
    drop(trusting);
    // The same header from a peer that is not a trusted proxy changes nothing.
    let untrusting = GatewayConfig::new(&scope).start();
    let reply = send_request(request(Method::GET, &url(&untrusting), &says_https)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!reply.headers["set-cookie"].to_str().unwrap().contains("Secure"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_directory_or_secrets_file_others_could_plant_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let scope = Scope::new("state-dir");
    let root = tempfile::tempdir().unwrap();
    let generating = |dir: &std::path::Path| {
        GatewayConfig::new(&scope)
            .env("LAZYGATE_API_TOKENS", "")
            .env("LAZYGATE_VIEW_SECRET", "")
            .env("BROWSER_RUNTIME_STATE_DIR", dir.to_str().unwrap())
    };
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };

    // A directory everyone may write to, as /tmp itself is.
    let open = root.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o1777);
    let (code, stderr) = generating(&open).run_to_exit();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(open.to_str().unwrap()) && stderr.contains("mode 1777"),
        "{stderr}"
    );

    // A secrets file planted by another user, with a token of the attacker's choosing.
    let planted = root.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    chmod(&planted, 0o700);
    let file = planted.join("lazygate-secrets.json");
    std::fs::write(
        &file,
        r#"{"api_token": "attacker-chosen-token-0123456789", "view_secret": "attacker-chosen-secret-0123456789-0123456789"}"#,
    )
    .unwrap();
    chmod(&file, 0o600);
    std::os::unix::fs::chown(&file, Some(12345), Some(12345)).expect("the tests run as root");
    let (code, stderr) = generating(&planted).run_to_exit();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(file.to_str().unwrap()) && stderr.contains("uid 12345"),
        "{stderr}"
    );
    // The CLI that signs view URLs with it refuses too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lazygate"))
        .args(["view-url", "alice"])
        .env_remove("LAZYGATE_VIEW_SECRET")
        .env_remove("LAZYGATE_CONFIG")
        .env("BROWSER_RUNTIME_STATE_DIR", &planted)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));

    // A state directory reached through a symbolic link.
    let real = root.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (code, stderr) = generating(&link).run_to_exit();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");

    // Our own secrets file that others could read is made private again and still used;
    // a missing state directory is made 0700.
    let mine = root.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    let file = mine.join("lazygate-secrets.json");
    std::fs::write(&file, r#"{"api_token": "my-own-token-0123456789-abcdef"}"#).unwrap();
    chmod(&file, 0o644);
    let gateway = generating(&mine).start();
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    let admitted = send_request(request(
        Method::POST,
        &gateway.url("/api/runtimes/cleanup"),
        &[("authorization", "Bearer my-own-token-0123456789-abcdef")],
    ))
    .await;
    assert_eq!(admitted.status, 200, "{}", admitted.text());
    drop(gateway);
    let fresh = root.path().join("fresh/state");
    let gateway = generating(&fresh).start();
    assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_host_or_a_respelled_token_gets_nowhere() {
    let scope = Scope::new("forged-input");
    let gateway = GatewayConfig::new(&scope).start();
    // A Host made to break out of the CDP discovery JSON: refused before anything starts.
    let owner = unique("cdp-host");
    let forged = send_request(request(
        Method::GET,
        &gateway.url(&format!("/cdp/{owner}/json/version")),
        &[("authorization", &bearer()), ("host", r#"evil.example","x":"y"#)],
    ))
    .await;
    assert_eq!(forged.status, 400, "{}", forged.text());
    assert_eq!(forged.error_code(), "invalid_host");
    assert!(scope.containers().is_empty(), "nothing was started");

    // A view token whose expiry is spelled another way (the MAC covers the number only).
    let viewer = unique("viewer");
    let hash = seed_hash(&viewer);
    let token = view_token(&viewer);
    let (_, rest) = token.split_once('.').unwrap();
    let (expires, tag) = rest.split_once('.').unwrap();
    for spelling in [format!("0{expires}"), format!("%2B{expires}")] {
        let respelled = format!("{hash}.{spelling}.{tag}");
        let page = get(&gateway.url(&format!("/view/{hash}/vnc.html?token={respelled}"))).await;
        assert_eq!(page.status, 401, "{spelling}: {}", page.text());
    }
    assert!(scope.containers().is_empty(), "nothing was started");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_secrets_file_stops_the_gateway_and_is_kept() {
    use std::os::unix::fs::PermissionsExt;
    let scope = Scope::new("secrets-corrupt");
    let config = GatewayConfig::new(&scope)
        .env("LAZYGATE_API_TOKENS", "")
        .env("LAZYGATE_VIEW_SECRET", "");
    let file = config.state_dir.path().join("lazygate-secrets.json");
    std::fs::write(&file, "{\"api_token\": \"half-writ").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stderr) = config.run_to_exit();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(file.to_str().unwrap()), "names the file: {stderr}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"api_token\": \"half-writ",
        "the file is left as it was, not replaced by new secrets"
    );
}
