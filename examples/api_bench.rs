//! Loopback benchmark of the job API with the real server and the tiny model:
//! status polling by 1 000 concurrent pollers (closed loop: as fast as they can), then the
//! same pollers as browsers poll (open loop: each on its own connection, once every 2 s, so
//! 500 req/s in all), then submits (jobs accepted per second).
//! Prints requests/s and p50/p99 latency. Bounded: a few seconds per phase.
//!
//!     cargo run --release --example api_bench --features ssr [-- --pollers 1000 --secs 5]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use easel::server::Config;
use serde_json::{json, Value};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut latencies: Vec<Duration>, errors: u64, elapsed: Duration) {
    latencies.sort();
    println!(
        "{what:<28} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} ok, {errors} errors in {:.1} s)",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.len(),
        elapsed.as_secs_f64()
    );
}

/// Every task's latencies and error count together, and the time since `started`.
async fn gather(tasks: Vec<tokio::task::JoinHandle<(Vec<Duration>, u64)>>, started: Instant) -> (Vec<Duration>, u64, Duration) {
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (ok, e) = task.await.expect("bench task");
        all.extend(ok);
        errors += e;
    }
    (all, errors, started.elapsed())
}

/// Runs `workers` tasks that each repeat `request` until `secs` pass; collects latencies.
async fn hammer<F, Fut>(workers: u64, secs: u64, request: F) -> (Vec<Duration>, u64, Duration)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (stop, request) = (stop.clone(), request.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors) = (Vec::new(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if request(w).await {
                        ok.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    gather(tasks, started).await
}

/// `pollers` tasks, each with a connection of its own, each sending `request` once every
/// `period` (staggered), for `secs`: a fixed offered load whatever the latency (open loop).
async fn open_loop(pollers: u64, period: Duration, secs: u64, url: Arc<String>) -> (Vec<Duration>, u64, Duration) {
    let started = Instant::now();
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..pollers)
        .map(|w| {
            let url = url.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
                let mut next = tokio::time::Instant::now() + period.mul_f64(w as f64 / pollers as f64);
                let (mut ok, mut errors) = (Vec::new(), 0u64);
                while next < end {
                    tokio::time::sleep_until(next).await;
                    next += period;
                    let t = Instant::now();
                    let answered = match http.get(url.as_str()).send().await {
                        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    if answered {
                        ok.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    gather(tasks, started).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pollers = arg("--pollers", 1000);
    let secs = arg("--secs", 5);
    let data = tempfile::tempdir()?;
    let config = Config {
        data_dir: data.path().to_path_buf(),
        max_queued: 1_000_000,
        max_active_per_client: 1_000_000,
        submits_per_minute: 100_000_000,
        reads_per_second: 100_000_000,
        read_burst: 100_000_000,
        ..Config::default()
    };
    let options = leptos::prelude::get_configuration(Some("Leptos.toml")).context("run from the repository root")?.leptos_options;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let models = easel::jobs::offered_models(&config.models_dir, &[], true)?;
    let painter = Box::new(easel::jobs::EnginePainter::new(config.models_dir.clone(), config.device()?));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(easel::server::run(config, options, listener, models, painter, async {
        let _ = stop_rx.await;
    }));

    let http = reqwest::Client::builder().pool_max_idle_per_host(2000).build()?;
    while http.get(format!("{base}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A finished job to poll, as most polls in a real queue find.
    let view: Value = http.post(format!("{base}/api/generate")).json(&json!({"prompt": "bench", "steps": 1})).send().await?.json().await?;
    let id = view["jobId"].as_str().context("no job id")?.to_string();
    loop {
        let s: Value = http.get(format!("{base}/api/status/{id}")).send().await?.json().await?;
        if s["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    println!("easel API bench on {base} ({} CPUs)", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let url = Arc::new(format!("{base}/api/status/{id}"));
    let (lat, errors, elapsed) = hammer(pollers, secs, {
        let (http, url) = (http.clone(), url.clone());
        move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                match http.get(url.as_str()).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        }
    })
    .await;
    report(&format!("status, {pollers} pollers"), lat, errors, elapsed);

    let (lat, errors, elapsed) = open_loop(pollers, Duration::from_secs(2), secs.max(6), url.clone()).await;
    report(&format!("status, {pollers} x 1 per 2 s"), lat, errors, elapsed);

    let submitters = 50;
    let (lat, errors, elapsed) = hammer(submitters, secs, {
        let http = http.clone();
        let url = Arc::new(format!("{base}/api/generate"));
        move |w| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let body = json!({"prompt": format!("bench {w}"), "steps": 1});
                matches!(http.post(url.as_str()).json(&body).send().await, Ok(r) if r.status() == 202)
            }
        }
    })
    .await;
    report(&format!("submit, {submitters} clients"), lat, errors, elapsed);

    let _ = stop_tx.send(());
    drop(server);
    // The worker would go on through the queued jobs (and find the runtime gone): the bench
    // is done, the process ends here.
    std::process::exit(0)
}
