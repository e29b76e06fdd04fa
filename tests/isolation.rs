//! Isolation between runtimes, tried as an attacker inside one runtime would: every runtime
//! is on a network of its own, so nothing in alice's runtime can open a connection to any
//! port of bob's — neither at bob's address nor at his ports published on the host's
//! loopback — while both still answer through the gateway and still reach the outside.
//! (The gateway-in-a-container shape is tried in tests/container.rs.)

mod common;

use common::*;

/// Starts alice's and bob's runtimes through the gateway; returns their container names.
async fn two_runtimes(gateway: &Gateway, alice: &str, bob: &str) -> (String, String) {
    for owner in [alice, bob] {
        let reply = post(&gateway.url(&format!("/rpc/{owner}")), "{}").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    (container_name(&seed_hash(alice)), container_name(&seed_hash(bob)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_cannot_reach_another_runtimes_ports_but_reaches_the_outside() {
    let scope = Scope::new("isolation-published");
    let gateway = GatewayConfig::new(&scope).start();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let (a, b) = two_runtimes(&gateway, &alice, &bob).await;

    // Each runtime is on exactly one network, its own, on a subnet of the pool.
    let a_networks = networks_of(&a);
    let b_networks = networks_of(&b);
    assert_eq!(a_networks.len(), 1, "{a_networks:?}");
    assert_eq!(b_networks.len(), 1, "{b_networks:?}");
    let (a_network, _) = &a_networks[0];
    let (b_network, b_ip) = &b_networks[0];
    assert_eq!(a_network, &format!("{TEST_NETWORK}-{}", seed_hash(&alice)));
    assert_ne!(a_network, b_network);
    assert!(b_ip.starts_with("10.213."), "{b_ip}");

    // The outside: a server the test runs on the host, at alice's bridge address.
    let outside = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let outside_port = outside.local_addr().unwrap().port();
    let host = gateway_of(&a, a_network);
    assert!(!host.is_empty());
    // bob's ports as published for the gateway, on the host's loopback.
    let published = |port: &str| -> String {
        let text = docker(&["port", &b, port]).unwrap();
        text.lines()
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .trim()
            .to_owned()
    };
    let b_rpc_host_port = published("8787/tcp");

    let probes = [
        format!("{b_ip}:9222"),
        format!("{b_ip}:6080"),
        format!("{b_ip}:8787"),
        format!("{b_ip}:4444"),
        format!("{host}:{b_rpc_host_port}"),
        format!("{host}:{outside_port}"),
    ];
    let results = connects_from(&a, &probes);
    for (address, open) in &results[..5] {
        assert!(!open, "alice's runtime reached {address}, a port of bob's");
    }
    assert!(results[5].1, "alice's runtime keeps its way out ({})", results[5].0);

    // The same ports do listen: from bob's own runtime they open (so "closed" above is
    // the network's doing, not an idle port).
    let own = connects_from(&b, &[format!("{b_ip}:8787"), format!("{b_ip}:9222")]);
    assert!(own.iter().all(|(_, open)| *open), "{own:?}");

    // Through the gateway, both still work, each reaching its own runtime.
    for (owner, container) in [(&alice, &a), (&bob, &b)] {
        let reply = post(&gateway.url(&format!("/rpc/{owner}")), "{}").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let hostname = inspect(container).unwrap()["Config"]["Hostname"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(reply.runtime_host(), hostname);
    }

    // Releasing a runtime removes its network too.
    let released = send(http::Method::DELETE, &gateway.url(&format!("/rpc/{bob}")), "").await;
    assert_eq!(released.status, 200, "{}", released.text());
    assert!(
        docker(&["network", "inspect", b_network]).is_none(),
        "bob's network went with his runtime"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_found_on_a_shared_network_is_moved_onto_its_own() {
    let scope = Scope::new("isolation-adopt");
    ensure_test_network();
    // A runtime as the seed starts it: the seed's labels, on the one flat network.
    let owner = unique("seeded");
    let hash = seed_hash(&owner);
    let name = container_name(&hash);
    let labels = [
        "browser_use.runtime=true".to_owned(),
        format!("browser_use.owner_hash={hash}"),
        "browser_use.managed_by=browser_runtime_manager".to_owned(),
        format!("lazygate.scope={}", scope.name),
    ];
    let mut args = vec!["run", "-d", "--name", &name, "--network", TEST_NETWORK];
    for label in &labels {
        args.extend(["--label", label.as_str()]);
    }
    args.push(STUB_IMAGE);
    docker(&args).expect("a seed-style runtime starts");
    let id = container_id(&name).unwrap();
    assert_eq!(networks_of(&name).len(), 1);

    let gateway = GatewayConfig::new(&scope).start();
    let networks = networks_of(&name);
    assert_eq!(
        networks.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        vec![format!("{TEST_NETWORK}-{hash}")],
        "adopted onto a network of its own, off the flat one"
    );
    assert!(
        !gateway
            .log_lines("moved a runtime onto a network of its own")
            .is_empty()
    );
    // Still the same runtime, served through the gateway.
    let reply = post(&gateway.url(&format!("/rpc/{owner}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(container_id(&name).unwrap(), id, "moved, not recreated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_its_runtime_outlived_is_removed_at_start() {
    let scope = Scope::new("isolation-leftover");
    let other = Scope::new("isolation-leftover-other");
    let network_for = |scope: &Scope, owner: &str| {
        let hash = seed_hash(owner);
        let name = format!("{TEST_NETWORK}-{hash}");
        let owner_label = format!("browser_use.owner_hash={hash}");
        let scope_label = format!("lazygate.scope={}", scope.name);
        docker(&[
            "network",
            "create",
            "--label",
            "browser_use.managed_by=browser_runtime_manager",
            "--label",
            &owner_label,
            "--label",
            &scope_label,
            &name,
        ])
        .expect("network created");
        name
    };
    // A runtime that died while no gateway ran left its network; another scope has one too.
    let leftover = network_for(&scope, &unique("gone"));
    let theirs = network_for(&other, &unique("theirs"));
    let gateway = GatewayConfig::new(&scope).start();
    assert!(
        docker(&["network", "inspect", &leftover]).is_none(),
        "the leftover is gone"
    );
    assert!(
        docker(&["network", "inspect", &theirs]).is_some(),
        "another scope's stays"
    );
    // A running runtime's own network is left alone by the next gateway's start.
    let owner = unique("alive");
    assert_eq!(post(&gateway.url(&format!("/rpc/{owner}")), "").await.status, 200);
    drop(gateway);
    let _again = GatewayConfig::new(&scope).start();
    let alive = format!("{TEST_NETWORK}-{}", seed_hash(&owner));
    assert!(docker(&["network", "inspect", &alive]).is_some());
}

/// Lets traffic between the runtime subnet pool's addresses through the host's forwarding
/// rules while it lives (a rule at the top of Docker's DOCKER-USER chain): the host's wall
/// down, as during the moment the engine rewrites its rules.
struct HostWallDown {
    rule: Vec<&'static str>,
}

impl HostWallDown {
    fn new() -> HostWallDown {
        let rule = vec![
            "DOCKER-USER",
            "-s",
            "10.213.0.0/16",
            "-d",
            "10.213.0.0/16",
            "-m",
            "comment",
            "--comment",
            "lazygate-test: host wall down",
            "-j",
            "ACCEPT",
        ];
        let mut insert = vec!["-I"];
        insert.extend(&rule);
        let status = std::process::Command::new("iptables").args(&insert).status();
        assert!(status.is_ok_and(|s| s.success()), "iptables {insert:?}");
        HostWallDown { rule }
    }
}

impl Drop for HostWallDown {
    fn drop(&mut self) {
        let mut delete = vec!["-D"];
        delete.extend(&self.rule);
        let _ = std::process::Command::new("iptables").args(&delete).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fence_inside_each_runtime_holds_when_the_hosts_rules_let_everything_through() {
    let scope = Scope::new("isolation-fence");
    let gateway = GatewayConfig::new(&scope).start();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let (a, b) = two_runtimes(&gateway, &alice, &bob).await;
    let (_, b_ip) = networks_of(&b).pop().unwrap();

    // A control that is not a runtime of the gateway, so has no fence: a container on a
    // network of its own in the same pool.
    let scope_label = format!("lazygate.scope={}", scope.name);
    let control = format!("lgtest-fence-control-{}", std::process::id());
    docker(&[
        "network",
        "create",
        "--label",
        &scope_label,
        "--subnet",
        "10.213.255.240/28",
        &control,
    ])
    .expect("the control's network is created");
    docker(&[
        "run",
        "-d",
        "--name",
        &control,
        "--label",
        &scope_label,
        "--network",
        &control,
        STUB_IMAGE,
    ])
    .expect("the control starts");

    let bobs_ports = [format!("{b_ip}:8787"), format!("{b_ip}:9222"), format!("{b_ip}:6080")];
    {
        let _down = HostWallDown::new();
        // With the host's wall down, the unfenced control does reach bob: the host forwards.
        let from_control = connects_from(&control, &bobs_ports[..1]);
        assert!(from_control[0].1, "the host wall is down: {from_control:?}");
        // Alice's runtime still reaches none of bob's ports: its own fence refuses.
        for (address, open) in connects_from(&a, &bobs_ports) {
            assert!(
                !open,
                "alice's runtime reached {address}, a port of bob's, past its fence"
            );
        }
    }
    // And the fence leaves the way out and the gateway's way in.
    let reply = post(&gateway.url(&format!("/rpc/{alice}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        gateway.log_lines("fence").iter().all(|l| !l.contains("WARN")),
        "no fence failed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_that_cannot_be_fenced_is_not_served_nor_left_running() {
    let scope = Scope::new("isolation-unfenced");
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_FENCE_IMAGE", "lazygate-test-no-such-image:none")
        .start();
    let owner = unique("unfenced");
    let reply = post(&gateway.url(&format!("/rpc/{owner}")), "{}").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.error_code(), "runtime_failed");
    let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("fence image lazygate-test-no-such-image:none is missing"),
        "{message}"
    );
    let hash = seed_hash(&owner);
    assert!(
        inspect(&container_name(&hash)).is_none(),
        "the unfenced runtime was removed"
    );
    assert!(volume_exists(&volume_name(&hash)), "its profile volume stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_never_takes_waits_on_or_removes_another_scopes_runtime() {
    let (ours, theirs) = (Scope::new("scope-conflict-a"), Scope::new("scope-conflict-b"));
    let first = GatewayConfig::new(&ours).start();
    let second = GatewayConfig::new(&theirs).start();
    let owner = unique("shared-owner-id");
    let reply = post(&first.url(&format!("/rpc/{owner}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let name = container_name(&seed_hash(&owner));
    let id = container_id(&name).unwrap();

    // The second gateway meets the first's runtime under the same name: refused at once,
    // naming the container and the scope it belongs to (before: the start timeout spent
    // waiting on a runtime it cannot reach, a 503, and the first gateway's runtime removed).
    let reply = post(&second.url(&format!("/rpc/{owner}")), "{}").await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.error_code(), "name_taken");
    let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains(&name) && message.contains(&format!("scope {}", ours.name)),
        "{message}"
    );
    // Its release does not remove it either.
    let released = send(http::Method::DELETE, &second.url(&format!("/rpc/{owner}")), "").await;
    assert_eq!(released.status, 409, "{}", released.text());

    // The first gateway's runtime is untouched and still serves.
    assert_eq!(container_id(&name).as_deref(), Some(id.as_str()));
    let reply = post(&first.url(&format!("/rpc/{owner}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(theirs.containers().is_empty(), "the second gateway created nothing");
}
