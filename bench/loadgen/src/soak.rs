//! `soak`: mixed use for a bounded time against a running gateway, sampled every few
//! seconds, for `bench/soak.sh`.
//!
//! - live views: WebSockets to `/view/<hash>/websockify` streaming VNC-sized frames (the
//!   runtime echoes them), reconnecting when cut;
//! - runs at a fixed rate to a few owners, and owners churning: a new one every few
//!   seconds, each with one run, left to expire through the gateway's short TTL;
//! - faults on a schedule: a runtime `docker kill`ed under its runs, and a viewer that
//!   vanishes (a handshake, then silence) for the gateway to find and close;
//! - every sample: the gateway's RSS and open file descriptors (from `/proc/<pid>`), its
//!   runtimes, holds and WebSockets (from `/metrics`), and the runs' statuses and latency
//!   percentiles in the window; one CSV line each.
//!
//! Every loop stops at the deadline; all traffic goes to the gateway and the containers
//! of the soak's scope.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::Error;

/// What to soak and for how long.
pub struct Soak {
    /// `host:port` of the gateway's listener and of its admin listener.
    pub gateway: String,
    pub admin: String,
    pub pid: u32,
    pub duration: Duration,
    pub token: String,
    pub view_secret: String,
    /// The gateway's `runtime.scope`, to find its runtimes for the faults and the leak count.
    pub scope: String,
    pub out: std::path::PathBuf,
}

/// Views open at once, the fixed rate of runs, the owners they go to, and the pace of the
/// churn and of the faults.
const VIEWS: usize = 2;
const FRAME: usize = 32 * 1024;
const FRAME_EVERY: Duration = Duration::from_millis(250);
const RUNS_PER_SECOND: u64 = 8;
const RUN_OWNERS: usize = 4;
const CHURN_EVERY: Duration = Duration::from_secs(5);
const KILL_EVERY: Duration = Duration::from_secs(180);
const VANISH_EVERY: Duration = Duration::from_secs(240);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// A 5xx this soon after an injected fault is the fault's.
const FAULT_WINDOW: Duration = Duration::from_secs(20);

/// What happened since the last sample.
#[derive(Default)]
struct Window {
    run_ms: Vec<f64>,
    ok: u64,
    /// 5xx or a cut connection, outside and inside fault windows.
    failed: u64,
    failed_in_fault: u64,
    /// 4xx (429 at the runtime cap, say).
    refused: u64,
    view_ms: Vec<f64>,
    view_cuts: u64,
    faults: Vec<&'static str>,
}

/// A failed run: when (seconds into the soak), whose, what came back, and whether a fault
/// had just been injected.
struct Failure {
    at: f64,
    owner: String,
    what: String,
    in_fault: bool,
}

struct Shared {
    window: Mutex<Window>,
    failures: Mutex<Vec<Failure>>,
    last_fault: Mutex<Option<Instant>>,
    started: Instant,
    deadline: Instant,
}

impl Shared {
    fn record_run(&self, owner: &str, outcome: Result<(u16, String), String>, took: Duration) {
        let in_fault = self
            .last_fault
            .lock()
            .unwrap()
            .is_some_and(|at| at.elapsed() < FAULT_WINDOW);
        let mut w = self.window.lock().unwrap();
        let what = match outcome {
            Ok((status, _)) if status < 400 => {
                w.ok += 1;
                w.run_ms.push(took.as_secs_f64() * 1000.0);
                return;
            }
            Ok((status, body)) if status < 500 => {
                w.refused += 1;
                format!("{status} {body}")
            }
            Ok((status, body)) => format!("{status} {body}"),
            Err(error) => format!("cut: {error}"),
        };
        if what.starts_with('4') {
            // Refusals are counted, not failures.
        } else if in_fault {
            w.failed_in_fault += 1;
        } else {
            w.failed += 1;
        }
        self.failures.lock().unwrap().push(Failure {
            at: self.started.elapsed().as_secs_f64(),
            owner: owner.to_owned(),
            what: what.chars().take(300).collect(),
            in_fault,
        });
    }

    fn fault(&self, what: &'static str) {
        *self.last_fault.lock().unwrap() = Some(Instant::now());
        self.window.lock().unwrap().faults.push(what);
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Runs the soak and writes its samples; prints a JSON summary line at the end.
pub async fn soak(soak: Soak) -> Result<(), Error> {
    let started = Instant::now();
    let shared = Arc::new(Shared {
        window: Mutex::new(Window::default()),
        failures: Mutex::new(Vec::new()),
        last_fault: Mutex::new(None),
        started,
        deadline: started + soak.duration,
    });
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let env = [
        ("LAZYGATE_VIEW_SECRET", soak.view_secret.as_str()),
        ("LAZYGATE_API_TOKENS", soak.token.as_str()),
    ];
    let settings = lazygate::config::Settings::load(None, &env)?;
    let auth = Arc::new(lazygate::auth::Auth::from_settings(&settings)?);
    let soak = Arc::new(soak);
    let mut tasks = Vec::new();
    for index in 0..VIEWS {
        tasks.push(tokio::spawn(view(
            soak.clone(),
            shared.clone(),
            auth.clone(),
            format!("soak-view-{index}"),
        )));
    }
    tasks.push(tokio::spawn(runs(soak.clone(), shared.clone(), client.clone())));
    tasks.push(tokio::spawn(churn(soak.clone(), shared.clone(), client.clone())));
    tasks.push(tokio::spawn(faults(soak.clone(), shared.clone(), auth.clone())));
    let sampler = tokio::spawn(sample(soak.clone(), shared.clone(), client.clone()));
    for task in tasks {
        task.await??;
    }
    let summary = sampler.await??;
    println!("{summary}");
    Ok(())
}

fn owner_hash(owner: &str) -> String {
    lazygate::owner::OwnerHash::of(owner).to_string()
}

/// A live view: frames out, echoes back, a reconnect after any cut.
async fn view(
    soak: Arc<Soak>,
    shared: Arc<Shared>,
    auth: Arc<lazygate::auth::Auth>,
    owner: String,
) -> Result<(), Error> {
    let hash = lazygate::owner::OwnerHash::of(&owner);
    let payload = Bytes::from(vec![0x5a; FRAME]);
    while Instant::now() < shared.deadline {
        let token = auth.sign_view(hash, None);
        let url = format!("ws://{}/view/{hash}/websockify?token={token}", soak.gateway);
        let mut socket = match tokio_tungstenite::connect_async(&url).await {
            Ok((socket, _)) => socket,
            Err(_) => {
                shared.window.lock().unwrap().view_cuts += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut tick = tokio::time::interval(FRAME_EVERY);
        'frames: while Instant::now() < shared.deadline {
            tick.tick().await;
            let sent = Instant::now();
            if socket.send(Message::Binary(payload.clone())).await.is_err() {
                break;
            }
            loop {
                match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
                    Ok(Some(Ok(Message::Binary(echo)))) if echo.len() == FRAME => {
                        shared
                            .window
                            .lock()
                            .unwrap()
                            .view_ms
                            .push(sent.elapsed().as_secs_f64() * 1000.0);
                        break;
                    }
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                    _ => break 'frames,
                }
            }
        }
        if Instant::now() < shared.deadline {
            shared.window.lock().unwrap().view_cuts += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        socket.close(None).await.ok();
    }
    Ok(())
}

/// One run: its status and body (or `Err` for a cut connection) and how long it took.
async fn run(client: &HttpClient, soak: &Soak, owner: &str) -> (Result<(u16, String), String>, Duration) {
    let started = Instant::now();
    let request = hyper::Request::post(format!("http://{}/rpc/{owner}", soak.gateway))
        .header("authorization", format!("Bearer {}", soak.token))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"actions":[{"action":"title"}]}"#)))
        .expect("a valid request");
    let outcome = match tokio::time::timeout(Duration::from_secs(60), client.request(request)).await {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            match response.into_body().collect().await {
                Ok(body) => Ok((status, String::from_utf8_lossy(&body.to_bytes()).into_owned())),
                Err(error) => Err(format!("the answer's body: {error}")),
            }
        }
        Ok(Err(error)) => Err(format!("{error:?}")),
        Err(_) => Err("no answer within 60 s".to_owned()),
    };
    (outcome, started.elapsed())
}

/// Runs at a fixed rate, round-robin over the steady owners.
async fn runs(soak: Arc<Soak>, shared: Arc<Shared>, client: HttpClient) -> Result<(), Error> {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RUNS_PER_SECOND));
    let mut turn = 0usize;
    let mut in_flight = tokio::task::JoinSet::new();
    while Instant::now() < shared.deadline {
        tick.tick().await;
        let owner = format!("soak-run-{}", turn % RUN_OWNERS);
        turn += 1;
        let (soak, shared, client) = (soak.clone(), shared.clone(), client.clone());
        in_flight.spawn(async move {
            let (outcome, took) = run(&client, &soak, &owner).await;
            shared.record_run(&owner, outcome, took);
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    Ok(())
}

/// A new owner every few seconds, one run each, left to expire.
async fn churn(soak: Arc<Soak>, shared: Arc<Shared>, client: HttpClient) -> Result<(), Error> {
    let mut tick = tokio::time::interval(CHURN_EVERY);
    let mut count = 0u64;
    while Instant::now() < shared.deadline {
        tick.tick().await;
        count += 1;
        let owner = format!("soak-churn-{count}");
        let (outcome, took) = run(&client, &soak, &owner).await;
        shared.record_run(&owner, outcome, took);
    }
    Ok(())
}

/// The faults, on their schedule.
async fn faults(soak: Arc<Soak>, shared: Arc<Shared>, auth: Arc<lazygate::auth::Auth>) -> Result<(), Error> {
    let mut next_kill = shared.started + KILL_EVERY / 2;
    let mut next_vanish = shared.started + VANISH_EVERY / 3;
    let mut kills = 0usize;
    // The vanished viewers' sockets: open, never read, until the end.
    let mut vanished = Vec::new();
    while Instant::now() < shared.deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = Instant::now();
        if now >= next_kill {
            next_kill += KILL_EVERY;
            let name = format!(
                "browser-use-browser-{}",
                owner_hash(&format!("soak-run-{}", kills % RUN_OWNERS))
            );
            kills += 1;
            // Marked before the kill: runs cut by it can be answered before `docker kill`
            // itself returns.
            shared.fault("kill");
            tokio::process::Command::new("docker")
                .args(["kill", &name])
                .output()
                .await?;
        }
        if now >= next_vanish {
            next_vanish += VANISH_EVERY;
            let owner = format!("soak-vanish-{}", vanished.len());
            let hash = lazygate::owner::OwnerHash::of(&owner);
            let token = auth.sign_view(hash, None);
            let mut socket = tokio::net::TcpStream::connect(&soak.gateway).await?;
            let handshake = format!(
                "GET /view/{hash}/websockify?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                soak.gateway
            );
            socket.write_all(handshake.as_bytes()).await?;
            vanished.push(socket);
            shared.fault("vanish");
        }
    }
    drop(vanished);
    Ok(())
}

/// Reads `/proc/<pid>`: RSS in KiB and open file descriptors.
fn process(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// Sums the samples of a metric on `/metrics` whose line starts with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// Every sample: one CSV line. Returns the summary (a JSON object).
async fn sample(soak: Arc<Soak>, shared: Arc<Shared>, client: HttpClient) -> Result<String, Error> {
    let mut out = std::fs::File::create(&soak.out)?;
    writeln!(
        out,
        "seconds,rss_kib,fds,runtimes,holds,websockets,runs_ok,runs_failed,runs_failed_in_fault,runs_refused,run_p50_ms,run_p99_ms,view_p99_ms,view_cuts,client_gone_closes,faults"
    )?;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let (mut ok, mut failed, mut failed_in_fault, mut refused) = (0, 0, 0, 0);
    while Instant::now() < shared.deadline + SAMPLE_EVERY {
        tick.tick().await;
        let (rss, fds) = process(soak.pid);
        let request = hyper::Request::get(format!("http://{}/metrics", soak.admin))
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let text = match client.request(request).await {
            Ok(response) => String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
        let mut w = std::mem::take(&mut *shared.window.lock().unwrap());
        ok += w.ok;
        failed += w.failed;
        failed_in_fault += w.failed_in_fault;
        refused += w.refused;
        writeln!(
            out,
            "{:.1},{rss},{fds},{},{},{},{},{},{},{},{:.2},{:.2},{:.2},{},{},{}",
            shared.started.elapsed().as_secs_f64(),
            metric(&text, "lazygate_runtimes{"),
            metric(&text, "lazygate_holds "),
            metric(&text, "lazygate_websockets_open "),
            w.ok,
            w.failed,
            w.failed_in_fault,
            w.refused,
            percentile(&mut w.run_ms, 0.5),
            percentile(&mut w.run_ms, 0.99),
            percentile(&mut w.view_ms, 0.99),
            w.view_cuts,
            metric(&text, "lazygate_websocket_closes_total{reason=\"client_gone\"}"),
            w.faults.join("+"),
        )?;
        out.flush()?;
    }
    let failures: Vec<serde_json::Value> = shared
        .failures
        .lock()
        .unwrap()
        .iter()
        .map(|f| serde_json::json!({"at": f.at, "owner": f.owner, "what": f.what, "in_fault_window": f.in_fault}))
        .collect();
    Ok(serde_json::json!({
        "failures": failures,
        "runs_ok": ok,
        "runs_failed_outside_faults": failed,
        "runs_failed_in_fault_windows": failed_in_fault,
        "runs_refused": refused,
        "scope": soak.scope,
    })
    .to_string())
}
