//! The warm pool on the real engine: a new owner is answered by a runtime started before
//! its request, the pool refills, an owner with a profile keeps it, pool runtimes are
//! nobody's (no route, no other runtime reaches them), a claimed profile goes back to the
//! seed's volume name at rest, and a restart keeps claims and pool apart.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use http::Method;
use serde_json::{Value, json};

/// Unclaimed pool runtimes of the scope: (short id, name), running ones only.
fn pool_runtimes(scope: &Scope) -> Vec<(String, String)> {
    let filter = format!("label=lazygate.scope={}", scope.name);
    docker(&[
        "ps",
        "--filter",
        &filter,
        "--filter",
        "label=lazygate.pool",
        "--format",
        "{{.ID}} {{.Names}}",
    ])
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.split_once(' '))
    .filter(|(_, name)| name.starts_with("lazygate-pool-"))
    .map(|(id, name)| (id[..12].to_owned(), name.to_owned()))
    .collect()
}

/// Waits until the gateway has `size` ready pool runtimes and the engine runs no other.
async fn pool_of(gateway: &Gateway, scope: &Scope, size: usize) -> Vec<(String, String)> {
    eventually_async(&format!("the pool holds {size} ready runtimes"), async || {
        metric(gateway, "lazygate_pool_ready").await == size as f64 && pool_runtimes(scope).len() == size
    })
    .await;
    pool_runtimes(scope)
}

fn registry(state_dir: &Path) -> Value {
    let text = std::fs::read_to_string(state_dir.join("docker_runtimes.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(json!({"runtimes": {}}))
}

/// A file in a volume, read through a throwaway container of the gateway's (Debian) image.
fn read_in_volume(volume: &str, file: &str) -> String {
    docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{volume}:/v:ro"),
        "--entrypoint",
        "cat",
        "lazygate:latest",
        &format!("/v/{file}"),
    ])
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_owner_gets_a_runtime_started_before_it_and_keeps_its_profile_under_the_seeds_name() {
    let scope = Scope::new("pool-claim");
    let config = GatewayConfig::new(&scope)
        .env("BROWSER_USE_ISOLATION_MODE", "docker-per-principal")
        .env("LAZYGATE_WARM_POOL", "2");
    let state_dir = config.state_dir.path().to_path_buf();
    let gateway = config.start();
    let before = pool_of(&gateway, &scope, 2).await;

    // Alice is new: a pool runtime, up before she asked, answers her first request.
    let alice = unique("alice");
    let hash = seed_hash(&alice);
    let reply = post(&gateway.url(&format!("/rpc/{alice}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let host = reply.runtime_host();
    assert!(
        before.iter().any(|(id, _)| *id == host),
        "answered by {host}, not one of the pool's {before:?}"
    );
    let claimed = inspect(&container_name(&hash)).expect("the runtime carries the seed's name now");
    assert!(claimed["Id"].as_str().unwrap().starts_with(&host));
    let pool_id = claimed["Config"]["Labels"]["lazygate.pool"]
        .as_str()
        .unwrap()
        .to_owned();
    let pool_volume = format!("lazygate-pool-{pool_id}");
    // It learns whose it is from the gateway, on every request.
    let headers = get(&gateway.url(&format!("/rpc/{alice}/headers"))).await.json();
    assert_eq!(headers["x-lazygate-owner-hash"], hash.as_str(), "{headers}");
    assert_eq!(metric(&gateway, "lazygate_pool_claims_total").await, 1.0);
    eventually("the registry names the pool volume", Duration::from_secs(10), || {
        registry(&state_dir)["runtimes"][format!("docker-per-principal:{hash}")]["volume_name"] == pool_volume.as_str()
    })
    .await;

    // The pool refills with a new runtime; the one left stays.
    let after = pool_of(&gateway, &scope, 2).await;
    assert!(after.iter().all(|(id, _)| *id != host), "{after:?}");
    let left = before.iter().find(|(id, _)| *id != host).unwrap();
    assert!(after.contains(left), "{after:?} keeps {left:?}");

    // No route reaches an unclaimed pool runtime: its names are no owner's, and an owner
    // hash made of its pool id is no hash.
    let (_, pool_name) = &after[0];
    let pool_short = pool_name.trim_start_matches("lazygate-pool-");
    for path in [
        format!("/view/{pool_short}/vnc.html"),
        format!("/view/{pool_short}0000/vnc.html"),
    ] {
        let reply = get(&gateway.url(&path)).await;
        assert!(
            reply.status.as_u16() >= 400 && reply.headers.get("x-runtime-host").is_none(),
            "{path}: {} {}",
            reply.status,
            reply.text()
        );
    }
    // Nor does another runtime: from alice's, the pool runtimes' addresses answer nothing.
    let addresses: Vec<String> = after
        .iter()
        .flat_map(|(_, name)| networks_of(name))
        .map(|(_, ip)| format!("{ip}:8787"))
        .collect();
    assert!(!addresses.is_empty());
    for (address, answer) in runtimes_answering_from(&container_name(&hash), &addresses) {
        assert!(
            answer.is_none(),
            "alice's runtime reached a pool runtime at {address}: {answer:?}"
        );
    }

    // At rest her profile goes where the seed looks: browser-use-profile-<hash>.
    let released = send(Method::DELETE, &gateway.url(&format!("/rpc/{alice}")), "").await;
    assert_eq!(released.status, 200, "{}", released.text());
    assert!(inspect(&container_name(&hash)).is_none());
    assert!(!volume_exists(&pool_volume), "the pool volume is gone");
    assert!(
        volume_exists(&volume_name(&hash)),
        "the profile is under the seed's name"
    );
    assert_eq!(read_in_volume(&volume_name(&hash), "boots").lines().count(), 1);

    // Back again: she has a profile now, so she gets it, not a pool runtime.
    let pool_now = pool_runtimes(&scope);
    let reply = get(&gateway.url(&format!("/rpc/{alice}/boots"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.text().lines().count(),
        2,
        "the profile survived: {}",
        reply.text()
    );
    assert!(pool_now.iter().all(|(id, _)| *id != reply.runtime_host()));
    assert_eq!(pool_runtimes(&scope), pool_now, "the pool was left alone");
    let labels = &inspect(&container_name(&hash)).unwrap()["Config"]["Labels"];
    assert_eq!(labels["browser_use.owner_hash"], hash.as_str());

    // A claimed runtime removed from outside (the seed's expiry of a stale entry, an
    // operator) leaves its profile in the pool volume; the owner's next start takes it back.
    pool_of(&gateway, &scope, 2).await;
    let carol = unique("carol");
    let carol_hash = seed_hash(&carol);
    assert_eq!(boots(&gateway, &carol).await, 1);
    let carol_pool = inspect(&container_name(&carol_hash)).unwrap()["Config"]["Labels"]["lazygate.pool"]
        .as_str()
        .unwrap()
        .to_owned();
    docker(&["rm", "-f", &container_name(&carol_hash)]).expect("removed from outside");
    assert!(volume_exists(&format!("lazygate-pool-{carol_pool}")));
    assert_eq!(
        boots(&gateway, &carol).await,
        2,
        "the profile came back from the pool volume"
    );
    assert!(!volume_exists(&format!("lazygate-pool-{carol_pool}")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_claims_and_pool_apart_and_the_seed_reuses_a_claimed_runtime() {
    ensure_test_network();
    let scope = Scope::new("pool-restart");
    let config = GatewayConfig::new(&scope)
        .env("BROWSER_USE_ISOLATION_MODE", "docker-per-task")
        .env("LAZYGATE_WARM_POOL", "1");
    let state_dir = config.state_dir.path().to_path_buf();
    let first = config.start();
    let before = pool_of(&first, &scope, 1).await;
    let task = unique("task");
    let hash = seed_hash(&task);
    let reply = post(&first.url(&format!("/rpc/{task}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.runtime_host(), before[0].0);
    let claimed = container_id(&container_name(&hash)).unwrap();
    let refilled = pool_of(&first, &scope, 1).await;
    eventually("the claim is in the registry file", Duration::from_secs(10), || {
        registry(&state_dir)["runtimes"][format!("docker-per-task:{hash}")].is_object()
    })
    .await;
    drop(first);

    let second = config.start();
    eventually(
        "the pool runtime is adopted as the pool",
        Duration::from_secs(20),
        || !second.log_lines("adopted a warm-pool runtime").is_empty(),
    )
    .await;
    let reply = post(&second.url(&format!("/rpc/{task}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        container_id(&container_name(&hash)).as_deref(),
        Some(claimed.as_str()),
        "the claim is the task's again, not started anew"
    );
    assert_eq!(
        pool_runtimes(&scope),
        refilled,
        "the pool is the one left, not refilled twice"
    );
    assert_eq!(metric(&second, "lazygate_pool_claims_total").await, 0.0);

    // The seed's ensure for the task reuses the runtime the pool gave it.
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/seed/harness.py"))
        .args(["ensure", &json!({"task_id": task}).to_string()])
        .env("BROWSER_USE_ISOLATION_MODE", "docker-per-task")
        .env("BROWSER_RUNTIME_IMAGE", STUB_IMAGE)
        .env("BROWSER_RUNTIME_NETWORK", TEST_NETWORK)
        .env("BROWSER_RUNTIME_STATE_DIR", &state_dir)
        .env("BROWSER_RUNTIME_START_TIMEOUT", "30")
        .env("BROWSER_VIEW_BASE_URL", "http://gateway.test")
        .env("HARNESS_SCOPE", &scope.name)
        .output()
        .expect("python3 runs the seed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["owner_hash"], hash.as_str());
    assert_eq!(
        container_id(&container_name(&hash)).as_deref(),
        Some(claimed.as_str()),
        "the seed reused it"
    );

    // Per-task: the end of the task takes the runtime, its network and its pool volume.
    let pool_id = inspect(&container_name(&hash)).unwrap()["Config"]["Labels"]["lazygate.pool"]
        .as_str()
        .unwrap()
        .to_owned();
    let released = send(Method::DELETE, &second.url(&format!("/rpc/{task}")), "").await;
    assert_eq!(released.status, 200, "{}", released.text());
    assert!(inspect(&container_name(&hash)).is_none());
    assert!(!volume_exists(&format!("lazygate-pool-{pool_id}")));
    let networks = docker(&["network", "ls", "--format", "{{.Name}}"]).unwrap_or_default();
    assert!(!networks.contains(&pool_id), "{networks}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_larger_than_the_runtime_cap_is_refused_naming_both_keys() {
    let scope = Scope::new("pool-config");
    let (status, output) = GatewayConfig::new(&scope)
        .env("LAZYGATE_WARM_POOL", "5")
        .env("LAZYGATE_MAX_RUNTIMES", "4")
        .run_to_exit();
    assert_eq!(status, Some(2), "{output}");
    assert!(
        output.contains("runtime.warm_pool") && output.contains("limits.max_runtimes"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pool_gives_way_to_owners_at_the_cap_and_never_hands_out_a_dead_runtime() {
    let scope = Scope::new("pool-cap");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_USE_ISOLATION_MODE", "docker-per-principal")
        .env("LAZYGATE_WARM_POOL", "1")
        .env("LAZYGATE_MAX_RUNTIMES", "2")
        .start();

    // A pool runtime that died is not handed out: the next new owner gets a fresh start,
    // and the pool is refilled.
    let dead = pool_of(&gateway, &scope, 1).await;
    docker(&["kill", &dead[0].0]).expect("the pool runtime is killed");
    let alice = unique("alice");
    let reply = post(&gateway.url(&format!("/rpc/{alice}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_ne!(
        reply.runtime_host(),
        dead[0].0,
        "the dead pool runtime was not handed out"
    );
    let refilled = pool_of(&gateway, &scope, 1).await;
    assert_ne!(refilled, dead);

    // Alice's runtime and the pool's fill the cap of 2. Bob has a profile, so he takes no
    // pool runtime: the pool makes room for his, not alice's runtime.
    let bob = unique("bob");
    let bob_hash = seed_hash(&bob);
    docker(&[
        "volume",
        "create",
        "--label",
        "browser_use.runtime=true",
        "--label",
        &format!("browser_use.owner_hash={bob_hash}"),
        "--label",
        &format!("lazygate.scope={}", scope.name),
        &volume_name(&bob_hash),
    ])
    .expect("bob's profile");
    let reply = post(&gateway.url(&format!("/rpc/{bob}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_ne!(reply.runtime_host(), refilled[0].0, "bob did not take the pool runtime");
    assert!(
        inspect(&container_name(&seed_hash(&alice))).is_some(),
        "alice's runtime stays"
    );
    assert!(pool_runtimes(&scope).is_empty(), "the pool runtime made room");
    assert_eq!(metric(&gateway, "lazygate_pool_ready").await, 0.0);
    assert!(metric(&gateway, "lazygate_pool_misses_total").await >= 1.0);
}
