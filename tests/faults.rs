//! Faults users meet in production: viewers that vanish without closing (a laptop lid shut),
//! the gateway shut down under a run and an open view, or killed in the middle of a start.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A gateway that pings a view's client after 1 s of silence and gives it 1 s to answer.
fn watchful(scope: &Scope) -> GatewayConfig {
    GatewayConfig::new(scope)
        .env("LAZYGATE_WS_PING_SECONDS", "1")
        .env("LAZYGATE_WS_PONG_TIMEOUT_SECONDS", "1")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_that_stops_answering_is_closed_with_1001_and_releases_its_runtime() {
    let scope = Scope::new("dead-viewer");
    let gateway = watchful(&scope).env("BROWSER_RUNTIME_TTL_SECONDS", "2").start();
    let owner = unique("lid-shut");
    let hash = seed_hash(&owner);
    // A client that completes the handshake and then neither reads nor answers anything, as
    // a machine that went to sleep.
    let mut socket = std::net::TcpStream::connect(gateway.addr).unwrap();
    let handshake = format!(
        "GET /view/{hash}/websockify?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        view_token(&owner),
        gateway.addr
    );
    socket.write_all(handshake.as_bytes()).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        socket.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let name = container_name(&hash);
    assert!(inspect(&name).is_some());

    eventually(
        "the gateway gives up on the silent client",
        Duration::from_secs(30),
        || {
            gateway
                .log_lines("closed a websocket (1001)")
                .iter()
                .any(|l| l.contains("client_gone") && l.contains(&hash))
        },
    )
    .await;
    // What the client would have read: a ping, then the close frame with 1001, then the end.
    let mut seen = Vec::new();
    socket.read_to_end(&mut seen).unwrap();
    assert_eq!(seen, [0x89, 0x00, 0x88, 0x02, 0x03, 0xe9]);
    assert_eq!(
        metric(&gateway, "lazygate_websocket_closes_total{reason=\"client_gone\"}").await,
        1.0
    );
    // The hold is gone with it: the runtime expires after its TTL like any idle one.
    eventually("the released runtime is reaped", Duration::from_secs(30), || {
        inspect(&name).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_viewer_that_answers_pings_keeps_its_view() {
    let scope = Scope::new("live-viewer");
    let gateway = watchful(&scope).start();
    let owner = unique("watching");
    let hash = seed_hash(&owner);
    let url = format!(
        "ws://{}/view/{hash}/websockify?token={}",
        gateway.addr,
        view_token(&owner)
    );
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.expect("a view");
    let (mut sink, mut stream) = ws.split();
    // The client reads all the time (so it answers each ping, as browsers do) and counts
    // the pings it got.
    let pings = Arc::new(AtomicUsize::new(0));
    let (echoes_tx, mut echoes) = tokio::sync::mpsc::unbounded_channel();
    let counted = pings.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Ping(_) => {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                other => {
                    let _ = echoes_tx.send(other);
                }
            }
        }
    });
    // tungstenite queues the pong; a flush sends it.
    let flusher = async {
        while pings.load(Ordering::SeqCst) < 3 {
            sink.flush().await.ok();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), flusher)
        .await
        .expect("three pings, each answered");
    sink.send(Message::text("still watching")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), echoes.recv())
        .await
        .expect("the view is still open")
        .unwrap();
    assert_eq!(echoed, Message::text("still watching"));
    assert!(gateway.log_lines("closed a websocket (1001)").is_empty());
    assert!(metric(&gateway, "lazygate_websocket_pings_total").await >= 3.0);
    sink.close().await.ok();
    reader.await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_run_finish_closes_a_view_with_1001_and_stops_no_runtime() {
    let scope = Scope::new("drain");
    let gateway = GatewayConfig::new(&scope).env("LAZYGATE_DRAIN_SECONDS", "3").start();
    let owner = unique("draining");
    let hash = seed_hash(&owner);
    let url = format!(
        "ws://{}/view/{hash}/websockify?token={}",
        gateway.addr,
        view_token(&owner)
    );
    let (mut view, _) = tokio_tungstenite::connect_async(&url).await.expect("a view");
    view.send(Message::text("before")).await.unwrap();
    assert_eq!(view.next().await.unwrap().unwrap(), Message::text("before"));
    // A run in flight: its first chunk has arrived, the rest waits for /release.
    let (body, _first) = start_held_run(&gateway.url(&format!("/rpc/{owner}/hold?id=drain"))).await;

    let addr = gateway.addr;
    let pid = gateway.pid();
    let exited = tokio::task::spawn_blocking(move || gateway.terminate());
    // No new connections once the drain has begun.
    eventually("the listener closes", Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    // The run finishes (released at the runtime itself: the gateway takes no new requests).
    let runtime = inspect(&container_name(&hash)).unwrap();
    let port = runtime["NetworkSettings"]["Ports"]["8787/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/release?id=drain")).await.status,
        200
    );
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the run completes during the drain")
        .unwrap()
        .to_bytes();
    assert!(!rest.is_empty(), "the run's answer arrives whole");
    // The view is closed with 1001 at the drain deadline, not cut.
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(15), view.next())
            .await
            .expect("a close frame by the deadline")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("the view ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    assert_eq!(exited.await.unwrap(), Some(0), "gateway {pid} exits 0");
    assert!(
        inspect(&container_name(&hash)).unwrap()["State"]["Running"] == true,
        "no runtime is stopped by a gateway's exit"
    );
}

/// A stand-in for a tunnel that cuts every connection `cut` after it opened (common tunnels
/// cut a response that takes longer than about 100 s): forwards to `target`; its address.
async fn cutting_proxy(target: std::net::SocketAddr, cut: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::time::timeout(cut, tokio::io::copy_bidirectional(&mut client, &mut upstream)).await;
            });
        }
    });
    address
}

/// Sends one request through `base` with the tests' bearer token and `prefer`; `Err` when
/// the connection was cut before the whole answer came.
async fn through(method: http::Method, url: &str, prefer: Option<&str>, body: &str) -> Result<Reply, String> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {TEST_API_TOKEN}"));
    if let Some(prefer) = prefer {
        request = request.header("prefer", prefer);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned())))
        .unwrap();
    let response = client().request(request).await.map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Asks an asynchronous run's location every `every` until it is no longer 202 (at most 60
/// times): the run's answer.
async fn run_answer(location: &str, every: Duration) -> Reply {
    for _ in 0..60 {
        let reply = through(http::Method::GET, location, None, "").await.unwrap();
        if reply.status != 202 {
            return reply;
        }
        tokio::time::sleep(every).await;
    }
    panic!("the run at {location} never finished");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_longer_than_the_tunnel_allows_is_answered_at_its_location() {
    let scope = Scope::new("async-runs");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_TTL_SECONDS", "2")
        .env("LAZYGATE_MAX_ASYNC_RUNS", "3")
        .env("LAZYGATE_MAX_ASYNC_RUN_BYTES", "1024")
        .start();
    let tunnel = cutting_proxy(gateway.addr, Duration::from_secs(2)).await;
    let base = format!("http://{tunnel}");
    let owner = unique("patient");
    let run = format!("{base}/rpc/{owner}/sleep?ms=4000");

    // Without the preference, the tunnel cuts the run's answer.
    let cut = through(http::Method::POST, &run, None, "").await;
    assert!(cut.is_err(), "the tunnel cut it: {cut:?}");

    // With it: 202 at once, and the answer at the location once the run is done.
    let accepted = through(http::Method::POST, &run, Some("respond-async"), "")
        .await
        .unwrap();
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    assert_eq!(accepted.headers["preference-applied"], "respond-async");
    let location = accepted.headers["location"].to_str().unwrap().to_owned();
    let id = accepted.json()["run"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/rpc/{owner}/runs/{id}"));
    let running = through(http::Method::GET, &format!("{base}{location}"), None, "")
        .await
        .unwrap();
    assert_eq!(running.status, 202);
    assert_eq!(running.headers["retry-after"], "1");
    // Another owner asking for it finds nothing, as for a run that never was.
    let foreign = through(
        http::Method::GET,
        &format!("{base}/rpc/someone-else/runs/{id}"),
        None,
        "",
    )
    .await
    .unwrap();
    assert_eq!(
        (foreign.status.as_u16(), foreign.error_code()),
        (404, "run_not_found".to_owned())
    );
    let unknown = through(http::Method::GET, &format!("{base}/rpc/{owner}/runs/nothing"), None, "")
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    // As the 202 says: Retry-After 1.
    let answer = run_answer(&format!("{base}{location}"), Duration::from_secs(1)).await;
    // The run held its runtime past the TTL of 2 s: the runtime's own answer.
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), "slept 4000 ms");
    assert!(!answer.runtime_host().is_empty());

    // Bounds: an answer larger than max_async_run_bytes is a 413; past max_async_runs, 429.
    let big = through(
        http::Method::POST,
        &format!("{base}/rpc/{owner}/echo"),
        Some("respond-async"),
        &"x".repeat(2000),
    )
    .await
    .unwrap();
    assert_eq!(big.status, 202);
    let big_location = big.headers["location"].to_str().unwrap().to_owned();
    let too_large = run_answer(&format!("{base}{big_location}"), Duration::from_millis(100)).await;
    assert_eq!(
        (too_large.status.as_u16(), too_large.error_code()),
        (413, "async_run_too_large".to_owned())
    );
    let third = through(http::Method::POST, &run, Some("respond-async"), "")
        .await
        .unwrap();
    assert_eq!(third.status, 202);
    let refused = through(http::Method::POST, &run, Some("respond-async"), "")
        .await
        .unwrap();
    assert_eq!(
        (refused.status.as_u16(), refused.error_code()),
        (429, "too_many_async_runs".to_owned())
    );
}

/// How a runtime dies in [`a_runtime_that_dies_under_a_view_and_a_run`].
enum Death {
    /// `docker kill`, as an operator or the engine's restart does.
    Killed,
    /// Over its memory limit (the kernel's OOM killer), as a page gone wild does.
    OutOfMemory,
}

/// A runtime dies while a view is open and a run is in flight: the view's WebSocket ends
/// promptly (a close or the connection's end, never a hang), the run gets a 502 JSON
/// promptly (it is not run a second time), and the next request heals with the same profile.
async fn a_runtime_that_dies_under_a_view_and_a_run(death: Death, test: &str) {
    let scope = Scope::new(test);
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_RUNTIME_MEMORY_BYTES", &(64u64 << 20).to_string())
        .start();
    let owner = unique("doomed");
    let hash = seed_hash(&owner);
    let name = container_name(&hash);
    let url = format!(
        "ws://{}/view/{hash}/websockify?token={}",
        gateway.addr,
        view_token(&owner)
    );
    let (mut view, _) = tokio_tungstenite::connect_async(&url).await.expect("a view");
    view.send(Message::text("hello")).await.unwrap();
    assert_eq!(view.next().await.unwrap().unwrap(), Message::text("hello"));
    let first = container_id(&name).unwrap();

    let run = match death {
        // A run waiting at the runtime for an answer that never comes.
        Death::Killed => {
            let run_url = gateway.url(&format!("/rpc/{owner}/wait?id=doomed"));
            let run = tokio::spawn(async move { post(&run_url, "{}").await });
            let held = gateway.url(&format!("/rpc/{owner}/held"));
            eventually_async("the run reaches the runtime", async || {
                get(&held).await.text().contains("doomed")
            })
            .await;
            docker(&["kill", &name]).expect("runtime killed");
            run
        }
        // The run itself takes the memory.
        Death::OutOfMemory => {
            let run_url = gateway.url(&format!("/rpc/{owner}/oom"));
            tokio::spawn(async move { post(&run_url, "{}").await })
        }
    };
    let run = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run is answered promptly")
        .unwrap();
    assert_eq!(run.status, 502, "{}", run.text());
    assert_eq!(run.error_code(), "runtime_connection_failed");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match view.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the view ended promptly, without hanging");
    if let Death::OutOfMemory = death {
        let state = inspect(&name).map(|c| c["State"].clone());
        assert!(
            state.as_ref().is_none_or(|s| s["OOMKilled"] == true),
            "killed by its memory limit: {state:?}"
        );
    }
    // The next request starts it again, on the same profile.
    assert_eq!(boots(&gateway, &owner).await, 2, "the profile survived");
    assert_ne!(container_id(&name).unwrap(), first);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_killed_under_a_view_and_a_run_ends_both_promptly_and_heals() {
    a_runtime_that_dies_under_a_view_and_a_run(Death::Killed, "killed-runtime").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_killed_by_its_memory_limit_ends_its_run_and_view_promptly_and_heals() {
    a_runtime_that_dies_under_a_view_and_a_run(Death::OutOfMemory, "oom-runtime").await;
}

/// Unmounts a filesystem the test mounted, whatever happens.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        std::process::Command::new("umount").arg(&self.0).status().ok();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_directory_is_a_warning_and_nothing_is_lost_once_there_is_room() {
    let scope = Scope::new("full-state");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    // A filesystem of its own for the state directory, small enough to fill.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "lazygate-test-state"])
        .arg(&state)
        .status()
        .expect("mount runs");
    assert!(mounted.success(), "mounting a tmpfs (the tests run as root)");
    let _unmount = Mounted(state.clone());
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_STATE_DIR", state.to_str().unwrap())
        .start();
    let filler = state.join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        while file.write_all(&[0u8; 4096]).is_ok() {}
    }
    let owner = unique("spaceless");
    let hash = seed_hash(&owner);
    // Serving goes on with the registry unwritable.
    let reply = post(&gateway.url(&format!("/rpc/{owner}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    eventually("a warning about the registry", Duration::from_secs(10), || {
        !gateway.log_lines("cannot sync the runtime registry").is_empty()
    })
    .await;
    let registry = state.join("docker_runtimes.json");
    let knows = || {
        std::fs::read_to_string(&registry)
            .map(|text| text.contains(&format!("docker-per-principal:{hash}")))
            .unwrap_or(false)
    };
    assert!(!knows());
    // Room again: the entry is written without anything else happening.
    std::fs::remove_file(&filler).unwrap();
    eventually("the registry catches up", Duration::from_secs(10), knows).await;
    assert_eq!(post(&gateway.url(&format!("/rpc/{owner}")), "{}").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reaper_racing_requests_at_the_ttl_boundary_for_a_minute_answers_no_5xx() {
    let scope = Scope::new("ttl-race");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_TTL_SECONDS", "1")
        .start();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    // Each owner comes back just before, at and just after its runtime's TTL, over and over,
    // so requests keep meeting the reaper mid-removal; one more owner never pauses.
    let mut owners = Vec::new();
    for (index, pauses) in [[900u64, 1000, 1100], [950, 1050, 1000], [1000, 1100, 900], [0, 0, 0]]
        .into_iter()
        .enumerate()
    {
        let url = gateway.url(&format!("/rpc/{}/health", unique(&format!("racer{index}"))));
        owners.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut turn = 0;
            while std::time::Instant::now() < until {
                statuses.push(get(&url).await.status.as_u16());
                tokio::time::sleep(Duration::from_millis(pauses[turn % 3] + 10 * (turn as u64 % 5))).await;
                turn += 1;
            }
            statuses
        }));
    }
    let mut total = 0;
    for owner in owners {
        let statuses = owner.await.unwrap();
        total += statuses.len();
        let failed: Vec<_> = statuses.iter().filter(|s| **s >= 500).collect();
        assert!(
            failed.is_empty(),
            "5xx at the TTL boundary: {failed:?} of {}",
            statuses.len()
        );
    }
    let removed = gateway.log_lines("removed idle runtime").len();
    eprintln!("{total} requests, {removed} idle removals raced");
    assert!(removed >= 10, "the reaper did race the requests ({removed} removals)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_in_the_middle_of_a_start_leaves_nothing_twice() {
    let scope = Scope::new("killed-mid-start");
    let config = GatewayConfig::new(&scope);
    let gateway = config.start();
    let owner = unique("half-made");
    let hash = seed_hash(&owner);
    let name = container_name(&hash);
    let url = gateway.url(&format!("/rpc/{owner}"));
    let request = tokio::spawn(async move {
        let request = http::Request::post(&url)
            .header("authorization", format!("Bearer {TEST_API_TOKEN}"))
            .body(Default::default())
            .unwrap();
        client().request(request).await.map(|r| r.status())
    });
    // SIGKILL as soon as the container exists: mid-start (created, starting, being fenced
    // or probed), before the gateway has answered.
    eventually("the start has begun", Duration::from_secs(30), || {
        inspect(&name).is_some()
    })
    .await;
    gateway.kill();
    assert!(request.await.unwrap().is_err(), "the killed gateway never answered");

    // The next gateway finds what the first left and makes it whole: one runtime, one
    // network, one volume, no helper left behind.
    let gateway = config.start();
    let reply = post(&gateway.url(&format!("/rpc/{owner}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // A fence helper the kill left running is taken once it has ended and is
    // `LEFTOVER_AGE` (10 s) old, by a sweep every 10 s.
    eventually("leftovers cleaned", Duration::from_secs(60), || {
        scope.containers().len() == 1
    })
    .await;
    assert_eq!(scope.networks().len(), 1, "{:?}", scope.networks());
    assert_eq!(scope.volumes().len(), 1, "{:?}", scope.volumes());
    assert!(boots(&gateway, &owner).await <= 2);
}

/// What a gateway killed mid-fence leaves: a fence helper still running (its `ip` not done)
/// and one made but never started. Nothing but the fence label says what they are.
#[tokio::test(flavor = "multi_thread")]
async fn fence_helpers_a_killed_gateway_left_are_removed_once_they_have_ended() {
    let scope = Scope::new("helper-leftovers");
    let labels = [
        "--label".to_owned(),
        "lazygate.fence=0123456789abcdef".to_owned(),
        "--label".to_owned(),
        format!("lazygate.scope={}", scope.name),
    ];
    let helper = |verb: &[&'static str], seconds: &'static str| {
        let mut args = verb.to_vec();
        args.extend(labels.iter().map(String::as_str));
        args.extend(["--entrypoint", "sleep", "lazygate:latest", seconds]);
        docker(&args).expect("a helper container").trim().to_owned()
    };
    let running = helper(&["run", "-d"], "30");
    let never_started = helper(&["create"], "0");
    let gateway = GatewayConfig::new(&scope).start();

    eventually("the helper that never started removed", Duration::from_secs(60), || {
        inspect(&never_started).is_none()
    })
    .await;
    // Still running: it could be some gateway's fence in progress, whatever its age.
    let state = inspect(&running).map(|c| c["State"]["Status"].clone());
    assert_eq!(
        state,
        Some(serde_json::json!("running")),
        "a running helper is left alone"
    );
    eventually("the helper removed once it ended", Duration::from_secs(60), || {
        inspect(&running).is_none()
    })
    .await;
    assert!(
        !gateway
            .log_lines("removed fence helpers a stopped gateway left")
            .is_empty(),
        "the gateway says what it removed"
    );
    assert!(scope.containers().is_empty(), "{:?}", scope.containers());
}
