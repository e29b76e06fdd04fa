//! The production shape: the gateway itself in a container, with the engine's socket mounted,
//! joining each runtime's own network and dialling the runtime there
//! (`LAZYGATE_UPSTREAM=network`), checked from the host through its published port as a
//! person and an agent would — and, from inside one runtime, as an attacker would.

mod common;

use std::time::Duration;

use common::browser::live_view_shows_agent_page;
use common::*;
use serde_json::json;

/// The gateway image, built by scripts/build-gateway-image.sh.
const GATEWAY_IMAGE: &str = "lazygate:latest";

/// A gateway container for `scope`, running `image` for runtimes, with the engine's socket
/// mounted and its port published on the host's loopback; answers once it serves.
struct GatewayContainer {
    name: String,
    addr: String,
}

impl GatewayContainer {
    async fn start(scope: &Scope, image: &str) -> GatewayContainer {
        ensure_test_network();
        let name = format!("lazygate-{}", unique("gw"));
        let scope_label = format!("lazygate.scope={}", scope.name);
        let scope_env = format!("LAZYGATE_SCOPE={}", scope.name);
        let image_env = format!("BROWSER_RUNTIME_IMAGE={image}");
        let network_env = format!("BROWSER_RUNTIME_NETWORK={TEST_NETWORK}");
        let token_env = format!("LAZYGATE_API_TOKENS={TEST_API_TOKEN}");
        let secret_env = format!("LAZYGATE_VIEW_SECRET={TEST_VIEW_SECRET}");
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &scope_label,
            "--network",
            TEST_NETWORK,
            // The gateway joins every runtime's network: it must not route between them.
            "--sysctl",
            "net.ipv4.ip_forward=0",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-p",
            "127.0.0.1::8080",
            "-e",
            "LAZYGATE_UPSTREAM=network",
            "-e",
            &scope_env,
            "-e",
            &image_env,
            "-e",
            &network_env,
            "-e",
            "BROWSER_RUNTIME_START_TIMEOUT=60",
            "-e",
            &token_env,
            "-e",
            &secret_env,
            GATEWAY_IMAGE,
        ])
        .expect("gateway container starts");
        let port = docker(&["port", &name, "8080/tcp"]).expect("published port");
        let addr = port.lines().next().unwrap().trim().to_owned();
        let base = format!("http://{addr}");
        // Wait for the gateway to answer (the published port accepts before the process listens).
        let client = client();
        let mut answered = false;
        for _ in 0..300 {
            let request = http::Request::get(format!("{base}/healthz"))
                .body(Default::default())
                .unwrap();
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(1), client.request(request)).await
                && response.status() == 200
            {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(answered, "gateway container never answered: {}", container_logs(&name));
        assert_eq!(
            get(&format!("{base}/readyz")).await.status,
            200,
            "the mounted socket reaches the engine"
        );
        GatewayContainer { name, addr }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_runs_in_a_container_and_reaches_runtimes_on_their_networks() {
    let scope = Scope::new("gateway-container");
    let gateway = GatewayContainer::start(&scope, BROWSER_IMAGE).await;
    let (name, addr, base) = (gateway.name.clone(), gateway.addr.clone(), gateway.base());

    // A person's live view and an agent's run, through the containerised gateway.
    let owner = unique("boxed");
    let report = live_view_shows_agent_page(&base, &owner).await;
    eprintln!("gateway in a container: {report}");

    // It dialled the runtime on the runtime's own network, not a published port.
    let runtime = inspect(&container_name(&seed_hash(&owner))).unwrap();
    let bindings = &runtime["HostConfig"]["PortBindings"];
    assert!(
        bindings.is_null() || bindings == &json!({}),
        "nothing published in network mode: {bindings}"
    );
    let logs = container_logs(&name);
    eprintln!("gateway container log:\n{logs}");
    assert!(logs.contains("runtime ready"), "{logs}");

    // CDP too: Chrome only answers when the gateway sends Host: localhost and no Origin.
    let version = get(&format!("{base}/cdp/{owner}/json/version")).await;
    assert_eq!(version.status, 200, "{}", version.text());
    assert!(
        version.json()["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ws://{addr}/cdp/"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn in_network_mode_runtimes_still_cannot_reach_each_other() {
    let scope = Scope::new("gateway-container-isolation");
    let gateway = GatewayContainer::start(&scope, STUB_IMAGE).await;
    let base = gateway.base();
    let (alice, bob) = (unique("alice"), unique("bob"));
    for owner in [&alice, &bob] {
        let reply = post(&format!("{base}/rpc/{owner}"), "{}").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let (a, b) = (container_name(&seed_hash(&alice)), container_name(&seed_hash(&bob)));
    let a_networks = networks_of(&a);
    let b_networks = networks_of(&b);
    assert_eq!(
        (a_networks.len(), b_networks.len()),
        (1, 1),
        "{a_networks:?} {b_networks:?}"
    );
    let (a_network, _) = &a_networks[0];
    let (b_network, b_ip) = &b_networks[0];

    // The gateway joined both networks; each runtime's network holds it and the runtime only.
    let gateway_networks: Vec<String> = networks_of(&gateway.name).into_iter().map(|(n, _)| n).collect();
    assert!(
        gateway_networks.contains(a_network) && gateway_networks.contains(b_network),
        "{gateway_networks:?}"
    );
    let members = docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.Name}} {{end}}",
        b_network,
    ])
    .unwrap();
    let mut members: Vec<&str> = members.split_whitespace().collect();
    members.sort();
    let mut expected = vec![b.as_str(), gateway.name.as_str()];
    expected.sort();
    assert_eq!(members, expected);

    // From alice's runtime: bob's ports at his address fail, and so does the gateway's own
    // address on bob's network (it does not route between the runtimes it joins).
    let gateway_on_b = networks_of(&gateway.name)
        .into_iter()
        .find(|(n, _)| n == b_network)
        .unwrap()
        .1;
    let probes = [
        format!("{b_ip}:9222"),
        format!("{b_ip}:6080"),
        format!("{b_ip}:8787"),
        format!("{b_ip}:4444"),
        format!("{gateway_on_b}:8080"),
    ];
    for (address, open) in connects_from(&a, &probes) {
        assert!(!open, "alice's runtime reached {address}");
    }
    // Through the gateway both answer, each from its own runtime.
    for owner in [&alice, &bob] {
        let reply = post(&format!("{base}/rpc/{owner}"), "{}").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // Releasing bob takes the gateway off his network and removes it.
    let released = send(http::Method::DELETE, &format!("{base}/rpc/{bob}"), "").await;
    assert_eq!(released.status, 200, "{}", released.text());
    assert!(
        docker(&["network", "inspect", b_network]).is_none(),
        "bob's network is gone"
    );
}
