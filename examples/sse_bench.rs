//! Event streams at scale, on loopback: the release server as a child process, one running
//! job, N concurrent `/api/jobs/{id}/events` streams on it (default 10 000). Prints how long
//! they took to open, the server's memory per open stream, how many store watchers serve
//! them (one per job), and how many progress events reached every stream.
//!
//!     cargo leptos build --release   # or cargo build --release --features ssr
//!     cargo run --release --example sse_bench --features ssr [-- --streams 10000]
//!
//! Each stream is a socket in this process and one in the server: the open-file limit
//! (`ulimit -n`) must be above N for both.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading the server's memory")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb * 1024)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' '))).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// Opens one stream: sends the request, waits for the first event, then counts progress
/// events until the stream ends or `stop` is set.
async fn stream(addr: std::net::SocketAddr, id: String, opened: Arc<AtomicU64>, events: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.write_all(format!("GET /api/jobs/{id}/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n").as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let mut first = true;
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&buf[..n]);
        if first {
            if !text.starts_with("HTTP/1.1 200") {
                bail!("stream refused: {}", text.lines().next().unwrap_or(""));
            }
            first = false;
            opened.fetch_add(1, Ordering::Relaxed);
        }
        events.fetch_add(text.matches("event: progress").count() as u64, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = arg("--streams", 10_000);
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/easel");
    anyhow::ensure!(bin.exists(), "build the server first: cargo leptos build --release");
    let data = std::env::temp_dir().join(format!("easel-sse-bench-{}", std::process::id()));
    let mut child = Command::new(&bin)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("EASEL_DATA_DIR", &data)
        .env("EASEL_SSE_PER_CLIENT", (n + 100).to_string())
        .env("EASEL_SSE_TOTAL", (n + 100).to_string())
        .env("EASEL_MAX_CONNECTIONS", (n + 200).to_string())
        .env("EASEL_READS_PER_SECOND", "1000000")
        .env("EASEL_READ_BURST", "1000000")
        .env("RUST_LOG", "warn,easel=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the server")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("easel listening on http://").nth(1) {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    let addr: std::net::SocketAddr = rx.recv_timeout(Duration::from_secs(60)).context("the server did not start")?.parse()?;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    while http.get(format!("{base}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A job that runs for a while: its progress goes to every stream.
    let job: serde_json::Value = http
        .post(format!("{base}/api/generate"))
        .json(&serde_json::json!({"prompt": "a long one", "width": 256, "height": 256, "steps": 50}))
        .send()
        .await?
        .json()
        .await?;
    let id = job["jobId"].as_str().context("no job id")?.to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(child.id())?;

    let (opened, events) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        tasks.push(tokio::spawn(stream(addr, id.clone(), opened.clone(), events.clone())));
    }
    while opened.load(Ordering::Relaxed) < n && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_time = started.elapsed();
    let open = opened.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes(child.id())?;
    let metrics = http.get(format!("{base}/metrics")).send().await?.text().await?;
    let progress_before = events.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let progress = events.load(Ordering::Relaxed) - progress_before;

    println!("streams open          {open} of {n} in {:.2} s", open_time.as_secs_f64());
    println!("server RSS            {:.1} MB before, {:.1} MB with the streams open", before as f64 / 1e6, after as f64 / 1e6);
    println!("memory per stream     {:.0} bytes", (after.saturating_sub(before)) as f64 / open.max(1) as f64);
    println!(
        "store watchers        {} for {} streams (gauges easel_job_watchers, easel_event_streams)",
        metric(&metrics, "easel_job_watchers"),
        metric(&metrics, "easel_event_streams")
    );
    println!("progress events       {progress} delivered in 3 s ({:.1} per stream)", progress as f64 / open.max(1) as f64);
    let _ = child.kill();
    let _ = child.wait();
    for task in tasks {
        task.abort();
    }
    let _ = std::fs::remove_dir_all(&data);
    anyhow::ensure!(open == n, "only {open} of {n} streams opened");
    Ok(())
}
