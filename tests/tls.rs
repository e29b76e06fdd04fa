//! HTTPS on the listener, checked with curl: HTTP/2 and HTTP/1.1 by ALPN, nothing below
//! TLS 1.2, the Secure flag on view cookies, and a certificate reloaded on SIGHUP while a
//! request is in flight on the old one.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A self-signed certificate for localhost, written as PEM files.
fn write_certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// curl with `args`; returns (success, stdout).
fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_alpn_secure_cookies_and_certificate_reload() {
    let scope = Scope::new("tls");
    let dir = tempfile::tempdir().unwrap();
    let (first_cert, first_key) = write_certificate(dir.path(), "first");
    // The gateway reads the live files; the certificates stay apart as the clients' CAs.
    let (cert, key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&first_cert, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_TLS_CERT", cert.to_str().unwrap())
        .env("LAZYGATE_TLS_KEY", key.to_str().unwrap())
        .start();
    let port = gateway.addr.port();
    let listening = gateway.log_lines(" listening ");
    assert!(
        listening
            .iter()
            .any(|l| l.contains(&format!("url=https://127.0.0.1:{port}"))),
        "the listening line says it serves HTTPS: {listening:?}"
    );
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let cacert = first_cert.to_str().unwrap().to_owned();
    let with_ca = |ca: &str, extra: &[&str], path: &str| {
        let mut args = vec!["--resolve", &resolve, "--cacert", ca];
        args.extend_from_slice(extra);
        let target = url(path);
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.push(target);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        curl(&refs)
    };

    let (ok, out) = with_ca(
        &cacert,
        &["--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"],
        "/healthz",
    );
    assert!(ok && out == "2 200", "HTTP/2 by ALPN: {out}");
    let (ok, out) = with_ca(
        &cacert,
        &["--http1.1", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"],
        "/healthz",
    );
    assert!(ok && out == "1.1 200", "HTTP/1.1 by ALPN: {out}");
    let (ok, _) = with_ca(
        &cacert,
        &["--tlsv1.0", "--tls-max", "1.1", "-o", "/dev/null"],
        "/healthz",
    );
    assert!(!ok, "TLS 1.1 and below are refused");

    // A view opened over HTTPS gets a Secure cookie.
    let owner = unique("tls-viewer");
    let hash = seed_hash(&owner);
    let view = format!("/view/{hash}/vnc.html?token={}", view_token(&owner));
    let (ok, head) = with_ca(&cacert, &["-D", "-", "-o", "/dev/null"], &view);
    assert!(ok, "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie"))
        .unwrap_or_default();
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"), "{head}");

    // CDP discovery over HTTPS names secure WebSockets back through the gateway.
    let version = format!("/cdp/{owner}/json/version");
    let auth_header = format!("Authorization: Bearer {TEST_API_TOKEN}");
    let (ok, body) = with_ca(&cacert, &["-H", &auth_header], &version);
    assert!(ok, "{body}");
    let debugger: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        debugger["webSocketDebuggerUrl"],
        format!("wss://localhost:{port}/cdp/{owner}/devtools/browser/stub"),
        "{body}"
    );

    // A run in flight on the first certificate while the certificate is replaced.
    let auth = format!("Authorization: Bearer {TEST_API_TOKEN}");
    let slow_url = url(&format!("/rpc/{owner}/sleep?ms=3000"));
    let in_flight = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "60",
            "--resolve",
            &resolve,
            "--cacert",
            &cacert,
            "-H",
            &auth,
            "-w",
            " %{http_code}",
        ])
        .arg(&slow_url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The run has reached the runtime once the gateway logs nothing more than its start;
    // wait for the runtime so the request is surely in flight on the old connection.
    eventually("the slow run reached its runtime", Duration::from_secs(30), || {
        inspect(&container_name(&hash)).is_some_and(|c| c["State"]["Running"] == true)
    })
    .await;
    let (new_cert, new_key) = write_certificate(dir.path(), "second");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    Command::new("kill")
        .args(["-HUP", &gateway.pid().to_string()])
        .status()
        .unwrap();
    let new_ca = new_cert.to_str().unwrap().to_owned();
    eventually("the new certificate is served", Duration::from_secs(30), || {
        with_ca(&new_ca, &["-o", "/dev/null"], "/healthz").0
    })
    .await;
    assert!(
        !with_ca(&cacert, &["-o", "/dev/null"], "/healthz").0,
        "the old certificate is gone"
    );
    let finished = in_flight.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&finished.stdout);
    assert!(
        text.ends_with(" 200") && text.contains("slept 3000 ms"),
        "the in-flight run finished: {text}"
    );
    assert!(!gateway.log_lines("TLS certificate reloaded").is_empty());
}
