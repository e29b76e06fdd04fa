//! Runtime lifecycle against the real engine: provisioning with the seed's names, reuse,
//! single-flight, parallel owners, expiry, holds, release, restarts and killed runtimes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::Method;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
async fn first_hit_provisions_like_the_seed_and_second_hit_reuses() {
    let scope = Scope::new("first-hit");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_VIEW_BASE_URL", "https://views.example.test/vnc.html")
        .env("OPENAI_API_KEY", "sk-test-passthrough")
        .env("MODEL_DEFAULT", "test-model")
        .start();
    let owner = unique("alice");
    let hash = seed_hash(&owner);
    let name = container_name(&hash);
    assert!(inspect(&name).is_none());

    let started = Instant::now();
    let first = post(&gateway.url(&format!("/rpc/{owner}")), "{\"task\":\"hello\"}").await;
    let cold = started.elapsed();
    assert_eq!(first.status, 200, "{}", first.text());
    let run = first.json();
    assert_eq!(run["method"], "POST");
    assert_eq!(run["uri"], "/run", "bare /rpc/<owner> goes to POST /run");
    assert_eq!(run["body"], "{\"task\":\"hello\"}");
    eprintln!("cold start through the gateway: {cold:?}");

    let c = inspect(&name).expect("container named like the seed's");
    assert_eq!(c["State"]["Running"], true);
    assert_eq!(c["Config"]["Image"], STUB_IMAGE);
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["browser_use.runtime"], "true");
    assert_eq!(labels["browser_use.owner_hash"], hash.as_str());
    assert_eq!(labels["browser_use.managed_by"], "browser_runtime_manager");
    let env: Vec<&str> = c["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // The seed's view URL, signed so that it opens (the seed's did not need a token).
    let view_url =
        format!("BROWSER_VIEW_URL=https://views.example.test/view/{hash}/vnc.html?path=view/{hash}/websockify&token=");
    let told = env
        .iter()
        .find_map(|e| e.strip_prefix(view_url.as_str()))
        .unwrap_or_else(|| panic!("{view_url}… missing from {env:?}"));
    let opened = get(&gateway.url(&format!("/view/{hash}/vnc.html?token={told}"))).await;
    assert_eq!(
        opened.status,
        200,
        "the runtime's own view URL opens: {}",
        opened.text()
    );
    for expected in [
        "BROWSER_ENABLE_UI=true",
        "BROWSER_DATA_DIR=/data",
        "BROWSER_USE_RPC_HOST=0.0.0.0",
        "BROWSER_USE_RPC_PORT=8787",
        "OPENAI_API_KEY=sk-test-passthrough",
        "MODEL_DEFAULT=test-model",
    ] {
        assert!(env.contains(&expected), "{expected} missing from {env:?}");
    }
    assert!(
        !env.iter().any(|e| e.starts_with("OPENAI_BASE_URL=")),
        "unset variables are not passed"
    );
    assert_eq!(c["HostConfig"]["ShmSize"], 2u64 * 1024 * 1024 * 1024);
    assert_eq!(
        c["HostConfig"]["NetworkMode"],
        format!("{TEST_NETWORK}-{hash}").as_str()
    );
    let mounts = c["Mounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["Name"] == volume_name(&hash).as_str() && m["Destination"] == "/data"),
        "{mounts:?}"
    );
    let volume = docker(&["volume", "inspect", &volume_name(&hash)]).expect("profile volume");
    assert!(volume.contains("browser_use.owner_hash"), "{volume}");

    let id = container_id(&name).unwrap();
    let second = post(&gateway.url(&format!("/rpc/{owner}")), "again").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.runtime_host(), first.runtime_host(), "the same runtime answers");
    assert_eq!(container_id(&name).unwrap(), id, "not recreated");
    assert_eq!(scope.containers().len(), 1);
    let cold_lines = gateway.log_lines("cold=true");
    assert_eq!(cold_lines.len(), 1, "one cold start logged: {cold_lines:?}");
    assert!(cold_lines[0].contains(&hash) && cold_lines[0].contains("status=200"));

    // Other paths reach the same runtime, with the prefix stripped.
    let env_reply = get(&gateway.url(&format!("/rpc/{owner}/env"))).await;
    assert_eq!(env_reply.json()["BROWSER_DATA_DIR"], "/data");
    let page = get(&gateway.url(&format!("/view/{hash}/vnc.html?token={}", view_token(&owner)))).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("stub noVNC"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_first_hits_create_one_container() {
    let scope = Scope::new("single-flight");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("crowd");
    let url = gateway.url(&format!("/rpc/{owner}"));
    let replies = futures_util::future::join_all((0..50).map(|i| {
        let url = url.clone();
        async move { post(&url, &format!("request {i}")).await }
    }))
    .await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let hosts: std::collections::HashSet<String> = replies.iter().map(Reply::runtime_host).collect();
    assert_eq!(hosts.len(), 1, "all served by one runtime: {hosts:?}");
    assert_eq!(scope.containers().len(), 1, "exactly one container created");
    assert_eq!(gateway.log_lines("runtime ready").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_owners_start_in_parallel() {
    let scope = Scope::new("parallel-owners");
    let gateway = GatewayConfig::new(&scope).start();
    let owners: Vec<String> = (0..10).map(|i| unique(&format!("owner{i}"))).collect();
    let started = Instant::now();
    let replies = futures_util::future::join_all(
        owners
            .iter()
            .map(|owner| post_owned(gateway.url(&format!("/rpc/{owner}")))),
    )
    .await;
    eprintln!("10 cold starts in parallel: {:?}", started.elapsed());
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let hosts: std::collections::HashSet<String> = replies.iter().map(Reply::runtime_host).collect();
    assert_eq!(hosts.len(), 10, "one runtime per owner");
    assert_eq!(scope.containers().len(), 10);
    for owner in &owners {
        assert!(inspect(&container_name(&seed_hash(owner))).is_some());
    }
}

async fn post_owned(url: String) -> Reply {
    post(&url, "").await
}

/// Waits for the reaper to remove `name`, returning how long after `since` it went.
async fn wait_removed(name: &str, since: Instant) -> Duration {
    eventually(&format!("{name} removed"), Duration::from_secs(60), || {
        inspect(name).is_none()
    })
    .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_runtime_expires_and_keeps_its_volume_per_principal() {
    let scope = Scope::new("expiry-principal");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_TTL_SECONDS", "2")
        .env("BROWSER_USE_ISOLATION_MODE", "docker-per-principal")
        .start();
    let owner = unique("idle");
    let hash = seed_hash(&owner);
    assert_eq!(post(&gateway.url(&format!("/rpc/{owner}")), "").await.status, 200);
    let last_use = Instant::now();
    let gone_after = wait_removed(&container_name(&hash), last_use).await;
    eprintln!("removed {gone_after:?} after last use (TTL 2 s, bound TTL*1.1+1 s = 3.2 s)");
    assert!(
        volume_exists(&volume_name(&hash)),
        "per-principal keeps the profile volume"
    );

    // The next request starts a fresh runtime on the same profile.
    let again = get(&gateway.url(&format!("/rpc/{owner}/boots"))).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.text().lines().count(),
        2,
        "the profile volume saw both boots: {}",
        again.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_runtime_expires_with_its_volume_per_task() {
    let scope = Scope::new("expiry-task");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_TTL_SECONDS", "2")
        .env("BROWSER_USE_ISOLATION_MODE", "docker-per-task")
        .start();
    let owner = unique("task");
    let hash = seed_hash(&owner);
    assert_eq!(post(&gateway.url(&format!("/rpc/{owner}")), "").await.status, 200);
    assert!(volume_exists(&volume_name(&hash)));
    let last_use = Instant::now();
    let gone_after = wait_removed(&container_name(&hash), last_use).await;
    eprintln!("per-task runtime removed {gone_after:?} after last use");
    eventually("volume removed", Duration::from_secs(10), || {
        !volume_exists(&volume_name(&hash))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_run_longer_than_the_ttl_holds_its_runtime() {
    let scope = Scope::new("hold-rpc");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_TTL_SECONDS", "1")
        .start();
    let owner = unique("slow");
    let name = container_name(&seed_hash(&owner));
    // A run that lasts four TTLs: the reaper runs many times while it is in flight.
    let reply = get(&gateway.url(&format!("/rpc/{owner}/sleep?ms=4000"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "slept 4000 ms");
    // Once the hold is gone, it expires: one removal in all, so none while it was held.
    wait_removed(&name, Instant::now()).await;
    eventually("the removal is logged", Duration::from_secs(10), || {
        !gateway.log_lines("removed idle runtime").is_empty()
    })
    .await;
    assert_eq!(
        gateway.log_lines("removed idle runtime").len(),
        1,
        "not reaped while held"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_websocket_holds_its_runtime() {
    let scope = Scope::new("hold-ws");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_TTL_SECONDS", "1")
        .start();
    let owner = unique("viewer");
    let hash = seed_hash(&owner);
    let url = format!(
        "ws://{}/view/{hash}/websockify?token={}",
        gateway.addr,
        view_token(&owner)
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("websocket through the gateway");
    assert_eq!(response.status(), 101);
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(vec![1, 2, 3].into()));

    // Quiet past the TTL: another owner's runtime, started now and never held, is reaped;
    // the open tunnel alone must keep this one.
    let other = unique("unheld");
    assert_eq!(post(&gateway.url(&format!("/rpc/{other}")), "").await.status, 200);
    wait_removed(&container_name(&seed_hash(&other)), Instant::now()).await;
    assert!(
        inspect(&container_name(&hash)).is_some(),
        "runtime kept while the view is open"
    );
    ws.send(Message::Text("still here".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("still here".into()));

    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    wait_removed(&container_name(&hash), Instant::now()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_releases_now_and_keeps_the_principal_volume() {
    let scope = Scope::new("release");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("leaving");
    let hash = seed_hash(&owner);
    assert_eq!(post(&gateway.url(&format!("/rpc/{owner}")), "").await.status, 200);
    let reply = send(Method::DELETE, &gateway.url(&format!("/rpc/{owner}")), "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["removed"], true);
    assert!(inspect(&container_name(&hash)).is_none(), "removed before the answer");
    assert!(volume_exists(&volume_name(&hash)));
    // And it comes back on the next request.
    assert_eq!(post(&gateway.url(&format!("/rpc/{owner}")), "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_gateway_restarts_and_adopts_its_runtimes() {
    let scope = Scope::new("restart");
    let config = GatewayConfig::new(&scope);
    let first = config.start();
    let owners: Vec<String> = (0..3).map(|i| unique(&format!("adopt{i}"))).collect();
    let mut ids = Vec::new();
    for owner in &owners {
        assert_eq!(post(&first.url(&format!("/rpc/{owner}")), "").await.status, 200);
        ids.push(container_id(&container_name(&seed_hash(owner))).unwrap());
    }
    let registry_path = config.state_dir.path().join("docker_runtimes.json");
    eventually("registry lists the runtimes", Duration::from_secs(10), || {
        std::fs::read_to_string(&registry_path).is_ok_and(|t| owners.iter().all(|o| t.contains(&seed_hash(o))))
    })
    .await;
    first.kill();

    for id in &ids {
        assert_eq!(
            inspect(id).unwrap()["State"]["Running"],
            true,
            "SIGKILL of the gateway stops no runtime"
        );
    }
    let second = config.start();
    assert_eq!(second.log_lines("adopted running runtime owner_hash=").len(), 3);
    for (owner, id) in owners.iter().zip(&ids) {
        let reply = post(&second.url(&format!("/rpc/{owner}")), "").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            &container_id(&container_name(&seed_hash(owner))).unwrap(),
            id,
            "adopted, not recreated"
        );
    }
    // Request lines are written before their answers leave; one more request's line marks
    // that every earlier one is in.
    assert_eq!(get(&second.url("/healthz")).await.status, 200);
    eventually("the marker request is logged", Duration::from_secs(10), || {
        !second.log_lines("route=\"healthz\"").is_empty()
    })
    .await;
    assert!(
        second.log_lines("cold=true").is_empty(),
        "no cold start after the restart"
    );

    // The registry is the seed's format.
    let registry: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&registry_path).unwrap()).unwrap();
    let hash = seed_hash(&owners[0]);
    let entry = &registry["runtimes"][format!("docker-per-principal:{hash}")];
    assert_eq!(entry["container_name"], container_name(&hash).as_str());
    assert_eq!(entry["volume_name"], volume_name(&hash).as_str());
    assert_eq!(entry["mode"], "docker-per-principal");
    assert_eq!(entry["owner_hash"], hash.as_str());
    assert!(entry["last_used"].as_f64().unwrap() > 1.7e9);

    // A graceful stop (SIGTERM) leaves runtimes running too.
    assert_eq!(second.terminate(), Some(0));
    assert_eq!(inspect(&ids[0]).unwrap()["State"]["Running"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_killed_behind_the_gateways_back_is_replaced() {
    let scope = Scope::new("killed-runtime");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("fragile");
    let name = container_name(&seed_hash(&owner));
    let first = post(&gateway.url(&format!("/rpc/{owner}")), "one").await;
    assert_eq!(first.status, 200);
    let old_id = container_id(&name).unwrap();

    docker(&["kill", &name]).expect("docker kill");
    // A POST with a body: it must reach the replacement whole.
    let second = post(&gateway.url(&format!("/rpc/{owner}")), "after the kill").await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.json()["body"], "after the kill");
    let new_id = container_id(&name).unwrap();
    assert_ne!(new_id, old_id, "a fresh runtime");
    assert_ne!(second.runtime_host(), first.runtime_host());

    // Removed outright (not only stopped): same story.
    docker(&["rm", "-f", &name]).expect("docker rm");
    let third = get(&gateway.url(&format!("/rpc/{owner}/boots"))).await;
    assert_eq!(third.status, 200);
    assert_eq!(third.text().lines().count(), 3, "three boots on one profile volume");
}

#[tokio::test(flavor = "multi_thread")]
async fn profiles_of_owners_not_seen_within_the_retention_are_removed_and_no_others() {
    let scope = Scope::new("retention");
    let config = GatewayConfig::new(&scope).env("LAZYGATE_PROFILE_RETENTION_DAYS", "7");
    let hash = |prefix: &str| seed_hash(&unique(prefix));
    // Last seen 10 days ago; yesterday; never (a profile the seed made); 10 days ago but
    // still used by a stopped runtime.
    let returning = unique("recent");
    let (gone, recent, unknown, in_use) = (hash("gone"), seed_hash(&returning), hash("seed-made"), hash("stopped"));
    for owner_hash in [&gone, &recent, &unknown, &in_use] {
        let (runtime, owner) = (
            "browser_use.runtime=true",
            format!("browser_use.owner_hash={owner_hash}"),
        );
        let scoped = format!("lazygate.scope={}", scope.name);
        let volume = volume_name(owner_hash);
        let args = [
            "volume", "create", "--label", runtime, "--label", &owner, "--label", &scoped, &volume,
        ];
        docker(&args).expect("volume created");
    }
    let scoped = format!("lazygate.scope={}", scope.name);
    let mount = format!("{}:/data", volume_name(&in_use));
    docker(&["create", "--label", &scoped, "-v", &mount, STUB_IMAGE]).expect("a stopped runtime");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let day = 86_400.0;
    let ledger = config.state_dir.path().join("lazygate-profiles.json");
    let seen = serde_json::json!({"last_seen": {
        gone.clone(): now - 10.0 * day,
        recent.clone(): now - day,
        in_use.clone(): now - 10.0 * day,
    }});
    std::fs::write(&ledger, seen.to_string()).unwrap();

    let gateway = config.start();
    // The first pass is over once the ledger is written with the profile it first saw.
    let written = || {
        let text = std::fs::read_to_string(&ledger).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()
    };
    eventually("the ledger after the first pass", Duration::from_secs(30), || {
        written()["last_seen"].get(&unknown).is_some()
    })
    .await;
    assert!(
        !volume_exists(&volume_name(&gone)),
        "10 days unseen, retention 7: removed"
    );
    assert!(volume_exists(&volume_name(&recent)), "seen yesterday: kept");
    assert!(
        volume_exists(&volume_name(&unknown)),
        "first seen now: its count starts"
    );
    assert!(volume_exists(&volume_name(&in_use)), "used by a container: kept");
    let seen = written();
    assert!(seen["last_seen"].get(&gone).is_none(), "{seen}");
    let removed = gateway.log_lines("removed a profile");
    assert!(
        removed.len() == 1 && removed[0].contains(&gone) && removed[0].contains("idle_days=10"),
        "{removed:?}"
    );

    // An owner who comes back is seen again: the count restarts from that request.
    let back = post(&gateway.url(&format!("/rpc/{returning}")), "").await;
    assert_eq!(back.status, 200, "{}", back.text());
    eventually("the new sighting in the ledger", Duration::from_secs(30), || {
        written()["last_seen"][&recent].as_f64().is_some_and(|t| t >= now)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_sharing_a_state_directory_never_cut_each_others_runs() {
    // Two replicas of the Docker backend on one engine, as `docker compose up --scale`
    // makes them (one state volume): a run held through the first outlives several TTLs of
    // the second's reaper, which knows the runtime (it adopted it), because a held
    // runtime's registry entry is rewritten as used.
    use http_body_util::BodyExt;
    let scope = Scope::new("two-replicas");
    let config = GatewayConfig::new(&scope).env("BROWSER_RUNTIME_TTL_SECONDS", "2");
    let first = config.start();
    let owner = unique("shared-run");
    let hash = seed_hash(&owner);
    assert_eq!(post(&first.url(&format!("/rpc/{owner}")), "").await.status, 200);
    let id = container_id(&container_name(&hash)).unwrap();
    let second = config.start();
    assert_eq!(second.log_lines("adopted running runtime owner_hash=").len(), 1);

    let (body, first_chunk) = start_held_run(&first.url(&format!("/rpc/{owner}/hold?id=long"))).await;

    // Three TTLs of the second gateway's reaper pass while the run is held: the shared
    // registry's last use for it keeps moving, and the runtime stays.
    let registry_path = config.state_dir.path().join("docker_runtimes.json");
    let last_used = || -> f64 {
        let text = std::fs::read_to_string(&registry_path).unwrap_or_default();
        let registry: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        registry["runtimes"][format!("docker-per-principal:{hash}")]["last_used"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let from = last_used();
    eventually(
        "the held run's last use moves past three TTLs",
        Duration::from_secs(20),
        || {
            assert_eq!(
                container_id(&container_name(&hash)).as_ref(),
                Some(&id),
                "the run's runtime was removed"
            );
            last_used() >= from + 6.0
        },
    )
    .await;
    assert!(
        second.log_lines("removed idle runtime").is_empty(),
        "the second gateway removed it"
    );

    // Released: the run completes, and then the runtime goes idle and is retired.
    assert_eq!(
        get(&first.url(&format!("/rpc/{owner}/release?id=long"))).await.status,
        200
    );
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the held run completes")
        .expect("uncut");
    assert!(!rest.to_bytes().is_empty() || !first_chunk.is_empty());
    eventually("retired once idle", Duration::from_secs(15), || {
        container_id(&container_name(&hash)).is_none()
    })
    .await;
}
