//! The Swarm backend on a real swarm (the test command makes this engine a single-node swarm
//! and leaves it as it found it): runtimes as services, scaled to zero when idle and back,
//! served by two gateway replicas in containers whose only shared state is the engine — and
//! refused, with what to do, where a swarm cannot run it.

mod common;

use std::time::{Duration, Instant};

use common::swarm::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::Method;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_one_service_and_scale_it_to_zero_only_when_nobody_holds_it() {
    let scope = Scope::new("swarm-replicas");
    let a = Replica::start(&scope, &[]).await;
    let b = Replica::start(&scope, &[]).await;
    let owner = unique("swarmer");
    let hash = seed_hash(&owner);

    // 20 concurrent first hits, split across both replicas: one service, all answered.
    let hits = (0..20).map(|i| {
        let url = if i % 2 == 0 { &a } else { &b }.url(&format!("/rpc/{owner}/run"));
        async move { post(&url, &format!("{{\"hit\":{i}}}")).await }
    });
    let replies = futures_util::future::join_all(hits).await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(scope.services().len(), 1, "exactly one service for one owner");
    let service_json = service(&hash).expect("the owner's service");
    let labels = &service_json["Spec"]["Labels"];
    assert_eq!(labels["browser_use.owner_hash"], hash.as_str());
    assert_eq!(labels["browser_use.managed_by"], "browser_runtime_manager");
    let container_spec = &service_json["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(container_spec["Labels"]["browser_use.runtime"], "true");
    let env: Vec<&str> = container_spec["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"BROWSER_DATA_DIR=/data"), "{env:?}");
    let mounts = container_spec["Mounts"].to_string();
    assert!(
        mounts.contains(&volume_name(&hash)) && mounts.contains("/dev/shm"),
        "{mounts}"
    );
    assert_eq!(boots_via(&a, &owner).await, 1);
    let task = running_task(&hash);

    // A view held open on A keeps the runtime while B (which served half the burst, and
    // whose own last use is long past the TTL) runs its reaper: A's refreshes of the
    // last-use label win, and rewriting the label never restarts the task.
    let mut ws = open_view(&a, &owner).await;
    let held_from = last_used_label(&hash);
    let limit = Duration::from_secs(TTL_SECONDS * 6);
    eventually(
        "A refreshes last use past three TTLs while the view is open",
        limit,
        || {
            assert_eq!(replicas(&hash), 1, "scaled down while a view was open");
            last_used_label(&hash) >= held_from + 3.0 * TTL_SECONDS as f64
        },
    )
    .await;
    assert_eq!(running_task(&hash), task, "label updates left the task alone");
    ws.send(Message::Text("still here".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("still here".into()));

    // Closed: scaled to zero, by whichever replica gets there first; service and volume stay.
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let closed = Instant::now();
    let took = eventually("scaled to zero", Duration::from_secs(TTL_SECONDS * 3 + 5), || {
        replicas(&hash) == 0
    })
    .await;
    eprintln!(
        "scaled to zero {:.2} s after the view closed (TTL {TTL_SECONDS} s)",
        closed.elapsed().as_secs_f64().min(took.as_secs_f64())
    );
    assert!(service(&hash).is_some(), "the service stays");
    assert!(volume_exists(&volume_name(&hash)), "the profile stays");
    let pinned = service(&hash).unwrap()["Spec"]["TaskTemplate"]["Placement"]["Constraints"].to_string();
    assert!(pinned.contains("node.id=="), "pinned to its profile's node: {pinned}");

    // Once its task has stopped (a request racing the stop is answered by the old task)...
    eventually("the old task has stopped", Duration::from_secs(30), || {
        tasks(&hash)
            .iter()
            .all(|(_, _, current, _)| !current.starts_with("Running"))
    })
    .await;
    // ... the next request scales it back, on the profile written before: a second boot.
    let back = Instant::now();
    assert_eq!(boots_via(&b, &owner).await, 2, "the profile survived scale-to-zero");
    eprintln!("scaled back from zero and answered in {:?}", back.elapsed());
    assert_eq!(replicas(&hash), 1);
    assert_eq!(scope.services().len(), 1, "still one service");
    let logs = format!("{}\n{}", a.logs(), b.logs());
    assert!(logs.contains("scaled idle runtime to zero"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn per_task_runtimes_leave_no_service_volume_or_network_behind() {
    let scope = Scope::new("swarm-per-task");
    let gateway = Replica::start(&scope, &[("BROWSER_USE_ISOLATION_MODE", "docker-per-task")]).await;
    // Removed on request (the seed's cleanup) ...
    let owner = unique("task");
    let hash = seed_hash(&owner);
    assert_eq!(post(&gateway.url(&format!("/rpc/{owner}/run")), "{}").await.status, 200);
    assert!(volume_exists(&volume_name(&hash)));
    let reply = send(Method::DELETE, &gateway.url(&format!("/rpc/{owner}")), "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(service(&hash).is_none(), "service removed before the answer");
    assert!(
        !volume_exists(&volume_name(&hash)),
        "per-task volume removed before the answer"
    );
    eventually("its network is removed", Duration::from_secs(15), || {
        docker(&["network", "inspect", &format!("lgswarm-{hash}")]).is_none()
    })
    .await;
    // ... and when idle.
    let idle = unique("idle-task");
    let idle_hash = seed_hash(&idle);
    assert_eq!(post(&gateway.url(&format!("/rpc/{idle}/run")), "{}").await.status, 200);
    eventually(
        "the idle per-task runtime is gone with its volume",
        Duration::from_secs(TTL_SECONDS * 3 + 15),
        || service(&idle_hash).is_none() && !volume_exists(&volume_name(&idle_hash)),
    )
    .await;
    assert!(scope.services().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn runtimes_on_the_swarm_cannot_reach_each_other() {
    let scope = Scope::new("swarm-isolation");
    // Runtimes that outlive the probes however slow the machine is (the replicas' TTL of
    // 3 s scaled one to zero mid-test once, on a loaded machine).
    let gateway = Replica::start(&scope, &[("BROWSER_RUNTIME_TTL_SECONDS", "120")]).await;
    let (mallory, victim) = (unique("mallory"), unique("victim"));
    for owner in [&mallory, &victim] {
        assert_eq!(post(&gateway.url(&format!("/rpc/{owner}/run")), "{}").await.status, 200);
    }
    let (attacker, target) = (
        task_container(&seed_hash(&mallory)),
        task_container(&seed_hash(&victim)),
    );
    // Every address the victim has on this node: its overlay's and its docker_gwbridge's.
    let mut addresses: Vec<String> = networks_of(&target)
        .into_iter()
        .filter(|(_, ip)| !ip.is_empty())
        .map(|(_, ip)| format!("{ip}:8787"))
        .collect();
    let bridge = docker(&["network", "inspect", "docker_gwbridge", "-f", "{{json .Containers}}"]).unwrap_or_default();
    let bridge: Value = serde_json::from_str(&bridge).unwrap_or(Value::Null);
    let target_id = container_id(&target).unwrap();
    if let Some(entry) = bridge.get(&target_id) {
        let ip = entry["IPv4Address"]
            .as_str()
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default();
        addresses.push(format!("{ip}:8787"));
    }
    assert!(
        addresses.len() >= 2,
        "the victim's overlay and bridge addresses: {addresses:?}"
    );
    // The attack's control: the attacker's own runtime answers on its own overlay address.
    // (A bare TCP connect proves nothing here: traffic the host routes outward may be
    // accepted by whatever is on the path; only a runtime's own answer counts.)
    let own: Vec<String> = networks_of(&attacker)
        .into_iter()
        .filter(|(_, ip)| !ip.is_empty())
        .map(|(_, ip)| format!("{ip}:8787"))
        .collect();
    let answered = runtimes_answering_from(&attacker, &own);
    assert!(
        answered.iter().all(|(_, host)| host.is_some()),
        "the probe works: {answered:?}"
    );
    for (address, host) in runtimes_answering_from(&attacker, &addresses) {
        assert!(
            host.is_none(),
            "one runtime reached another's port at {address} (answered by {host:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_cannot_start_says_why_once_without_a_restart_storm() {
    let scope = Scope::new("swarm-bad-image");
    let gateway = Replica::start(&scope, &[("BROWSER_RUNTIME_IMAGE", "lazygate-no-such-image:none")]).await;
    let owner = unique("broken");
    let hash = seed_hash(&owner);
    let reply = post(&gateway.url(&format!("/rpc/{owner}/run")), "{}").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.error_code(), "runtime_failed");
    let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("task"), "names the task's own error: {message}");
    // Asked again at once: the same answer, and still the one task (no restarts).
    let again = post(&gateway.url(&format!("/rpc/{owner}/run")), "{}").await;
    assert_eq!(again.status, 502, "{}", again.text());
    assert_eq!(tasks(&hash).len(), 1, "no restart storm: {:?}", tasks(&hash));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_start_leaves_the_other_to_serve_without_a_duplicate() {
    let scope = Scope::new("swarm-kill");
    let a = Replica::start(&scope, &[]).await;
    let b = Replica::start(&scope, &[]).await;
    let owner = unique("orphan");
    let hash = seed_hash(&owner);
    let url = a.url(&format!("/rpc/{owner}/run"));
    // A's own request is cut when A dies: its answer does not matter.
    let first = tokio::spawn(async move {
        let request = http::Request::post(url)
            .header("authorization", format!("Bearer {TEST_API_TOKEN}"))
            .body(Default::default())
            .unwrap();
        client().request(request).await.map(|r| r.status())
    });
    eventually("A has created the service", Duration::from_secs(30), || {
        service(&hash).is_some()
    })
    .await;
    docker(&["kill", "-s", "KILL", &a.name]).expect("replica A killed");
    let _ = first.await;
    let reply = post(&b.url(&format!("/rpc/{owner}/run")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(scope.services().len(), 1, "no duplicate service");
    running_task(&hash);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_swarm_backend_refuses_a_gateway_outside_a_container() {
    // This engine is a manager (the test command made it one), but a gateway on the host
    // cannot join overlay networks: refused at start, naming the key and what to do.
    let scope = Scope::new("swarm-host");
    let (code, output) = GatewayConfig::new(&scope)
        .env("LAZYGATE_BACKEND", "swarm")
        .env("LAZYGATE_UPSTREAM", "network")
        .run_to_exit();
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("runtime.backend = swarm"), "{output}");
    assert!(output.contains("container"), "{output}");
    // And published upstreams make no sense on a swarm: a configuration error.
    let (code, output) = GatewayConfig::new(&scope)
        .env("LAZYGATE_BACKEND", "swarm")
        .run_to_exit();
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("runtime.upstream"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_volume_driver_profiles_use_it_and_nothing_is_pinned() {
    // The local driver with mount options stands in for NFS: the profile volume is made
    // with the configured driver options, and a service at rest keeps no node pin.
    let scope = Scope::new("swarm-driver");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[runtime]\nvolume_driver = \"local\"\nvolume_options = [\"type=tmpfs\", \"device=tmpfs\", \"o=size=64m\"]\n",
    )
    .unwrap();
    let mount = format!("{}:/etc/lazygate/driver.toml:ro", config.path().display());
    let gateway = Replica::start_with(
        &scope,
        &[("LAZYGATE_CONFIG", "/etc/lazygate/driver.toml")],
        &["-v", &mount],
    )
    .await;
    let owner = unique("driven");
    let hash = seed_hash(&owner);
    assert_eq!(post(&gateway.url(&format!("/rpc/{owner}/run")), "{}").await.status, 200);
    let volume = inspect_volume(&volume_name(&hash));
    assert_eq!(volume["Driver"], "local");
    assert_eq!(volume["Options"]["type"], "tmpfs", "{volume}");
    assert_eq!(volume["Options"]["o"], "size=64m", "{volume}");
    eventually("scaled to zero", Duration::from_secs(TTL_SECONDS * 3 + 10), || {
        replicas(&hash) == 0
    })
    .await;
    let constraints = service(&hash).unwrap()["Spec"]["TaskTemplate"]["Placement"].to_string();
    assert!(!constraints.contains("node.id"), "not pinned: {constraints}");
}

fn inspect_volume(name: &str) -> Value {
    let out = docker(&["volume", "inspect", name]).expect("the volume exists");
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

/// Pool services of the scope: (name, owner label or "") of those with a running task, and
/// the short id of that task's container (the stub's `x-runtime-host`).
fn pool_services(scope: &Scope) -> Vec<(String, String, String)> {
    let filter = format!("label=lazygate.scope={}", scope.name);
    let names = docker(&[
        "service",
        "ls",
        "--filter",
        &filter,
        "--filter",
        "label=lazygate.pool",
        "--format",
        "{{.Name}}",
    ])
    .unwrap_or_default();
    names
        .lines()
        .filter_map(|name| {
            let container_filter = format!("label=com.docker.swarm.service.name={name}");
            let container = docker(&["ps", "-q", "--filter", &container_filter])?;
            let container = container.lines().next()?.trim().to_owned();
            let inspected = docker(&["service", "inspect", name])?;
            let service: Value = serde_json::from_str::<Value>(&inspected)
                .ok()?
                .as_array()?
                .first()?
                .clone();
            let owner = service["Spec"]["Labels"]["browser_use.owner_hash"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Some((name.to_owned(), owner, container[..12].to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_pool_service_answers_a_new_owner_and_scales_to_zero_as_theirs() {
    let scope = Scope::new("swarm-pool");
    let replica = Replica::start(&scope, &[("LAZYGATE_WARM_POOL", "1")]).await;
    eventually("a pool service runs", Duration::from_secs(60), || {
        pool_services(&scope).len() == 1 && replica.logs().contains("warm-pool runtime ready")
    })
    .await;
    let (pool_name, unowned, pool_host) = pool_services(&scope).remove(0);
    assert_eq!(unowned, "", "a pool service belongs to nobody");

    // A new owner is answered by the pool's task, started before the request.
    let owner = unique("pooled");
    let hash = seed_hash(&owner);
    let reply = post(&replica.url(&format!("/rpc/{owner}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.runtime_host(), pool_host, "answered by the pool's task");
    assert!(
        pool_services(&scope).contains(&(pool_name.clone(), hash.clone(), pool_host.clone())),
        "the service's labels name its owner now"
    );
    assert!(service(&hash).is_none(), "no second service under the seed's name");
    // The pool refills with a service of its own.
    eventually("the pool refills", Duration::from_secs(60), || {
        pool_services(&scope).iter().any(|(_, owner, _)| owner.is_empty())
    })
    .await;

    // Idle, it is scaled to zero like any per-principal service, and comes back on its profile.
    eventually("the claimed service is scaled to zero", Duration::from_secs(30), || {
        docker(&[
            "service",
            "inspect",
            "-f",
            "{{.Spec.Mode.Replicated.Replicas}}",
            &pool_name,
        ])
        .is_some_and(|replicas| replicas.trim() == "0")
    })
    .await;
    assert_eq!(boots_via(&replica, &owner).await, 2, "back on the profile it had");
    assert!(service(&hash).is_none(), "still no service under the seed's name");
}
