//! The Swarm backend across two machines for real: a second engine, with its own data root,
//! exec root and socket, in the network namespace scripts/swarm.sh made, joined to this
//! manager's swarm as a worker. Runtimes placed on it are reached by name over the overlay
//! through the gateway, come back on it with their profile after scale-to-zero, and leave no
//! volume on it when their owner is cleaned up; a runtime pinned to it while it is gone
//! answers 503 instead of starting empty elsewhere. The test takes the second engine down
//! and leaves the machine as it found it.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::swarm::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::Method;
use tokio_tungstenite::tungstenite::Message;

/// The second engine: a `dockerd` in the namespace, joined as a worker.
struct SecondNode {
    dir: tempfile::TempDir,
    daemon: Child,
    socket: String,
    id: String,
}

impl SecondNode {
    fn start() -> SecondNode {
        let netns = std::env::var("LAZYGATE_TEST_NODE2_NETNS").expect(
            "LAZYGATE_TEST_NODE2_NETNS: run the tests through scripts/test.sh, which makes the swarm \
             on a veth pair the second engine can reach",
        );
        let address = std::env::var("LAZYGATE_TEST_NODE2_ADDR").unwrap();
        let manager = std::env::var("LAZYGATE_TEST_MANAGER_ADDR").unwrap();
        let dir = tempfile::Builder::new().prefix("lazygate-node2-").tempdir().unwrap();
        let root = dir.path().display().to_string();
        let socket = format!("unix://{root}/docker.sock");
        // Not `ip netns exec`: it hides the cgroup filesystem and dockerd exits.
        let daemon = Command::new("unshare")
            .args(["--uts", "sh", "-c"])
            .arg(format!(
                "hostname lazygate-node2; exec nsenter --net=/run/netns/{netns} dockerd \
                 --data-root {root}/data --exec-root {root}/exec --pidfile {root}/docker.pid \
                 -H {socket} > {root}/dockerd.log 2>&1"
            ))
            .spawn()
            .expect("the second dockerd starts");
        let mut node = SecondNode {
            dir,
            daemon,
            socket,
            id: String::new(),
        };
        let started = std::time::Instant::now();
        while node.docker(&["info", "-f", "{{.ID}}"]).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "second engine never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // No registry here: the images come from this engine.
        for image in [STUB_IMAGE, GATEWAY_IMAGE] {
            let loaded = Command::new("sh")
                .arg("-c")
                .arg(format!("docker save {image} | docker -H {} load -q", node.socket))
                .status()
                .unwrap();
            assert!(loaded.success(), "{image} loaded into the second engine");
        }
        let token = docker(&["swarm", "join-token", "-q", "worker"]).unwrap();
        node.docker(&[
            "swarm",
            "join",
            "--token",
            token.trim(),
            "--advertise-addr",
            &address,
            "--listen-addr",
            &format!("{address}:2377"),
            &format!("{manager}:2377"),
        ])
        .expect("the second engine joins the swarm");
        node.id = node
            .docker(&["info", "-f", "{{.Swarm.NodeID}}"])
            .unwrap()
            .trim()
            .to_owned();
        node
    }

    fn docker(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("docker")
            .arg("-H")
            .arg(&self.socket)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn has_volume(&self, name: &str) -> bool {
        self.docker(&["volume", "inspect", name]).is_some()
    }
}

impl Drop for SecondNode {
    fn drop(&mut self) {
        self.docker(&["swarm", "leave", "--force"]);
        if !self.id.is_empty() {
            docker(&["node", "rm", "--force", &self.id]);
        }
        // SIGTERM by its pid (ours), then wait for it.
        let pid = std::fs::read_to_string(self.dir.path().join("docker.pid")).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.daemon.wait();
        // What it left mounted under its roots goes before the directory does.
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&root))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").arg("-l").arg(point).status();
        }
    }
}

/// The node of the owner's running task.
fn node_of(hash: &str) -> String {
    let task = running_task(hash);
    docker(&["inspect", "-f", "{{.NodeID}}", &task])
        .unwrap()
        .trim()
        .to_owned()
}

/// Makes this manager the busier node, so that Swarm's spread puts new runtimes on the
/// second one: three tasks of a filler service pinned here. (Draining the manager instead
/// would also stop the gateway's own container from joining runtime networks: attaching a
/// container to an overlay is a task on its node.)
fn fill_manager(scope: &Scope) {
    let manager = docker(&["info", "-f", "{{.Swarm.NodeID}}"]).unwrap().trim().to_owned();
    docker(&[
        "service",
        "create",
        "-d",
        "--name",
        &format!("lazygate-filler-{}", std::process::id()),
        "--label",
        &format!("lazygate.scope={}", scope.name),
        "--container-label",
        &format!("lazygate.scope={}", scope.name),
        "--replicas",
        "3",
        "--constraint",
        &format!("node.id=={manager}"),
        STUB_IMAGE,
    ])
    .expect("filler service");
}

#[tokio::test(flavor = "multi_thread")]
async fn runtimes_on_a_second_node_are_reached_kept_and_cleaned_up_there() {
    let scope = Scope::new("swarm-nodes");
    let node = SecondNode::start();
    let principal = Replica::start(&scope, &[]).await;
    // The second engine's socket is not at the usual path (it shares this machine's files).
    let node_socket = format!("{}/docker.sock", node.dir.path().display());
    // Its own scope: gateways of two isolation modes must not share runtimes.
    let task_scope = Scope::new("swarm-nodes-task");
    let per_task = Replica::start(
        &task_scope,
        &[
            ("BROWSER_USE_ISOLATION_MODE", "docker-per-task"),
            ("LAZYGATE_NODE_SOCKET", node_socket.as_str()),
        ],
    )
    .await;
    fill_manager(&scope);
    let filler = format!(
        "label=com.docker.swarm.service.name=lazygate-filler-{}",
        std::process::id()
    );
    eventually("the filler runs", Duration::from_secs(30), || {
        docker(&["ps", "-q", "--filter", &filler]).is_some_and(|ids| ids.lines().count() == 3)
    })
    .await;

    // A worker is no place for the Swarm backend: refused at start, saying what to do.
    let (code, output) = GatewayConfig::new(&scope)
        .env("LAZYGATE_BACKEND", "swarm")
        .env("LAZYGATE_UPSTREAM", "network")
        .env("DOCKER_HOST", &node.socket)
        .run_to_exit();
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("a worker, not a manager") && output.contains("docker swarm init"),
        "{output}"
    );

    // Placed on the second node, reached by name over the overlay: a run and a view.
    let owner = unique("remote");
    let hash = seed_hash(&owner);
    let started = std::time::Instant::now();
    let run = post(&principal.url(&format!("/rpc/{owner}/run")), "{}").await;
    assert_eq!(run.status, 200, "{}", run.text());
    eprintln!("first run on the second node answered in {:?}", started.elapsed());
    assert_eq!(node_of(&hash), node.id, "placed on the second node");
    assert!(
        node.has_volume(&volume_name(&hash)),
        "its profile is on the second node"
    );
    let mut ws = open_view(&principal, &owner).await;
    ws.send(Message::Text("over the overlay".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("over the overlay".into())
    );
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);

    // Scaled to zero, pinned to the second node; back there with its profile.
    eventually("scaled to zero", Duration::from_secs(TTL_SECONDS * 3 + 10), || {
        replicas(&hash) == 0
    })
    .await;
    let constraints = service(&hash).unwrap()["Spec"]["TaskTemplate"]["Placement"]["Constraints"].to_string();
    assert!(
        constraints.contains(&node.id),
        "pinned to the second node: {constraints}"
    );
    eventually("the old task has stopped", Duration::from_secs(30), || {
        tasks(&hash)
            .iter()
            .all(|(_, _, current, _)| !current.starts_with("Running"))
    })
    .await;
    assert_eq!(boots_via(&principal, &owner).await, 2, "its profile, on its node");
    assert_eq!(node_of(&hash), node.id);

    // A per-task runtime on the second node: cleaned up, no volume left there.
    let task_owner = unique("remote-task");
    let task_hash = seed_hash(&task_owner);
    assert_eq!(
        post(&per_task.url(&format!("/rpc/{task_owner}/run")), "{}")
            .await
            .status,
        200
    );
    assert_eq!(node_of(&task_hash), node.id);
    assert!(node.has_volume(&volume_name(&task_hash)));
    let reply = send(Method::DELETE, &per_task.url(&format!("/rpc/{task_owner}")), "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(service(&task_hash).is_none());
    assert!(
        !node.has_volume(&volume_name(&task_hash)),
        "the volume on the second node is gone"
    );

    // The pinned node gone from scheduling: 503 with the scheduler's reason, and nothing
    // started elsewhere with an empty profile.
    eventually(
        "scaled to zero again",
        Duration::from_secs(TTL_SECONDS * 3 + 10),
        || replicas(&hash) == 0,
    )
    .await;
    docker(&["node", "update", "--availability", "drain", &node.id]).unwrap();
    // (The second node leaves the swarm when the test ends; nothing to undo.)
    let refused = post(&principal.url(&format!("/rpc/{owner}/run")), "{}").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.error_code(), "runtime_unplaceable");
    eprintln!("pinned node drained: {}", refused.text());
    let volumes = docker(&["volume", "ls", "-q"]).unwrap_or_default();
    assert!(
        !volumes.contains(&volume_name(&hash)),
        "no empty profile made on this node"
    );
}
