//! A real `redis-server` for tests, and easel processes in their split roles on one store:
//! web only (`easel --no-worker`) and worker only (`easel worker`).
//!
//! Everything listens on loopback only. Each `RedisServer` has a data directory of its own and
//! can be stopped (SIGTERM: a clean shutdown that writes the AOF), killed (SIGKILL) and started
//! again on the same port and directory, keeping its data.

use std::collections::hash_map::RandomState;
use std::fs::OpenOptions;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{client, is_terminal};

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

enum StartError {
    /// Something else holds the port: try another one (or wait, on a restart).
    PortTaken(String),
    Failed(String),
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port with a fresh data directory, and waits
    /// until it answers PING.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut last = String::new();
        for _ in 0..20 {
            let port = free_port();
            match spawn_redis(port, dir.path()) {
                Ok(child) => return RedisServer { child: Some(child), port, dir },
                Err(StartError::PortTaken(log)) => last = log,
                Err(StartError::Failed(why)) => panic!("redis-server did not start on port {port}: {why}"),
            }
        }
        panic!("redis-server found no free port in 20 tries; its last log:\n{last}");
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGTERM, then waits for the exit: Redis fsyncs the AOF and exits 0.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("redis-server is not running");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill -TERM");
        assert!(status.success(), "kill -TERM redis-server failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait redis-server") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server did not stop within 30 s of SIGTERM; log:\n{}", self.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "redis-server exited with {status} on SIGTERM; log:\n{}", self.log_tail(30));
    }

    /// SIGKILL: Redis dies without a chance to fsync.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port and directory (after `stop` or `kill`); it loads
    /// its AOF before answering PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: redis-server is still running; stop() or kill() it first");
        // The port was ours a moment ago; something else may hold it briefly (give it time).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn_redis(self.port, self.dir.path()) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(StartError::PortTaken(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(StartError::PortTaken(log)) => {
                    panic!("redis-server could not get its port {} back within 10 s; log:\n{log}", self.port)
                }
                Err(StartError::Failed(why)) => panic!("redis-server did not restart on port {}: {why}", self.port),
            }
        }
    }

    /// Sends one command and returns the reply as text (arrays one element a line, nil as
    /// `(nil)`); an error reply is `Err`. For looking inside Redis from a test.
    pub fn cmd(&self, args: &[&str]) -> Result<String, String> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        (&stream).write_all(request.as_bytes()).map_err(|e| format!("write: {e}"))?;
        read_reply(&mut BufReader::new(stream))
    }

    /// The last `n` lines of Redis's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        tail(text.lines(), n)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that is free on 127.0.0.1 now. It is picked at random *below* the kernel's
/// ephemeral range rather than by binding port 0: the tests restart Redis on the same port,
/// and a port from the ephemeral range may meanwhile be handed to an easel process binding
/// `127.0.0.1:0`, or to one of its outgoing connections (a client that keeps reconnecting to
/// a closed port in that range can even connect to itself). Redis's own bind is the real
/// check; a collision makes the caller try another port.
fn free_port() -> u16 {
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(12_000));
    loop {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        h.write_u32(std::process::id());
        let port = (low + (h.finish() % u64::from(high - low)) as u32) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn spawn_redis(port: u16, dir: &Path) -> Result<Child, StartError> {
    let log_path = dir.join("redis.log");
    let log = OpenOptions::new().create(true).append(true).open(&log_path).expect("redis log file");
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0) as usize;
    let new_log = || {
        let text = std::fs::read(&log_path).unwrap_or_default();
        String::from_utf8_lossy(&text[log_start.min(text.len())..]).into_owned()
    };
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""])
        .args(["--maxmemory-policy", "noeviction", "--daemonize", "no"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("redis log file"))
        .stderr(log)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`redis-server` is not on PATH: the Redis tests need it. `bash scripts/test.sh` installs it \
             (Debian's redis-server package), or run `apt-get install redis-server`."
        ),
        Err(e) => panic!("spawning redis-server: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait redis-server") {
            let log = new_log();
            return Err(if log.contains("Address already in use") {
                StartError::PortTaken(log)
            } else {
                StartError::Failed(format!("it exited with {status}; log:\n{log}"))
            });
        }
        match ping(port) {
            Some(pid) if pid == child.id() => return Ok(child),
            Some(_) => {
                // Another Redis answers on this port: ours cannot bind it.
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::PortTaken(new_log()));
            }
            None => {}
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StartError::Failed(format!("it did not answer PING within 20 s; log:\n{}", new_log())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `PING` must answer `+PONG` (not `-LOADING` while the AOF loads); then `INFO server` tells
/// whose process answered. Returns that process id.
fn ping(port: u16) -> Option<u32> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    (&stream).write_all(b"PING\r\nINFO server\r\n").ok()?;
    let mut reader = BufReader::new(stream);
    if read_reply(&mut reader).ok()? != "PONG" {
        return None;
    }
    let info = read_reply(&mut reader).ok()?;
    info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|pid| pid.trim().parse().ok())
}

/// Reads one RESP2 reply.
fn read_reply(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
    if line.is_empty() {
        return Err("connection closed".into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty() {
        return Err("empty reply line".into());
    }
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => Err(rest.to_string()),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| format!("bad bulk length {rest:?}"))?;
            if len < 0 {
                return Ok("(nil)".into());
            }
            let mut buf = vec![0; len as usize + 2];
            r.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
            buf.truncate(len as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| format!("bad array length {rest:?}"))?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(&mut *r).unwrap_or_else(|e| format!("(error) {e}")));
            }
            Ok(if n < 0 { "(nil)".into() } else { items.join("\n") })
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

fn tail<'a>(lines: impl Iterator<Item = &'a str>, n: usize) -> String {
    let all: Vec<&str> = lines.collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// easel processes
// ---------------------------------------------------------------------------------------------

/// The release binary as a child process, with command-line arguments, an ephemeral port, a
/// data directory of its own and its output kept (the last lines go into panic messages;
/// `EASEL_TEST_LOGS=1` prints all of it).
pub struct Easel {
    child: Child,
    pub name: String,
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
    _data: tempfile::TempDir,
}

const LOG_LINES: usize = 400;

impl Easel {
    /// `easel --no-worker --store REDIS_URL`: serves the app and the API, runs no jobs.
    pub fn web(name: &str, redis: &RedisServer, env: &[(&str, &str)]) -> Easel {
        let url = redis.url();
        Easel::start(name, &["--no-worker", "--store", &url], env, "easel listening on ")
    }

    /// `easel worker`, with the store and its address given by environment (`EASEL_STORE`,
    /// `EASEL_WORKER_ADDR=127.0.0.1:0`): claims jobs and serves health and metrics.
    pub fn worker(name: &str, redis: &RedisServer, env: &[(&str, &str)]) -> Easel {
        let url = redis.url();
        let mut all = vec![("EASEL_STORE", url.as_str()), ("EASEL_WORKER_ADDR", "127.0.0.1:0")];
        all.extend_from_slice(env);
        Easel::start(name, &["worker"], &all, "easel worker listening on ")
    }

    /// Starts the binary with `args` and `env` (later entries win), waits for the line
    /// `{marker}http://ADDR`, then for `/readyz` to answer 200.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)], marker: &str) -> Easel {
        let data = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        // Nothing from the caller's environment leaks in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("EASEL_") {
                cmd.env_remove(&k);
            }
        }
        cmd.args(args)
            .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
            .env("EASEL_DATA_DIR", data.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning the easel binary");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for pipe in [stdout, stderr] {
            let (tx, logs, marker, name) = (tx.clone(), logs.clone(), marker.to_string(), name.to_string());
            std::thread::spawn(move || {
                // Keep draining so the process never blocks on a full pipe.
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split(marker.as_str()).nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                    }
                    if std::env::var_os("EASEL_TEST_LOGS").is_some() {
                        eprintln!("[{name}] {line}");
                    }
                    let mut logs = logs.lock().unwrap();
                    if logs.len() >= LOG_LINES {
                        logs.remove(0);
                    }
                    logs.push(line);
                }
            });
        }
        drop(tx);
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(100));
                let log = tail(logs.lock().unwrap().iter().map(String::as_str), 60);
                panic!("{name} (easel {args:?}) never printed {marker:?} ({e}); exit: {status:?}; output:\n{log}");
            }
        };
        let easel = Easel { child, name: name.to_string(), base, logs, _data: data };
        easel.wait_ready(Duration::from_secs(60));
        easel
    }

    fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            match client().get(self.url("/readyz")).send() {
                Ok(r) if r.status() == 200 => return,
                Ok(r) => last = format!("{} {}", r.status(), r.text().unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} never became ready within {within:?}; last /readyz: {last}; output:\n{}", self.name, self.log_tail(40));
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `n` lines the process printed.
    pub fn log_tail(&self, n: usize) -> String {
        tail(self.logs.lock().unwrap().iter().map(String::as_str), n)
    }

    /// SIGKILL: the process dies mid-whatever, as in a crash or an OOM kill.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// The status of `/readyz` (0 when it did not answer within 5 s).
    pub fn readyz(&self) -> u16 {
        let quick = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        quick.get(self.url("/readyz")).send().map(|r| r.status().as_u16()).unwrap_or(0)
    }

    // --- the JSON API --------------------------------------------------------------------

    /// POSTs /api/generate; returns the whole response (for headers).
    pub fn submit_raw(&self, body: &Value) -> reqwest::blocking::Response {
        client().post(self.url("/api/generate")).json(body).send().unwrap_or_else(|e| panic!("{}: submit: {e}", self.name))
    }

    /// POSTs /api/generate; returns (status, body).
    pub fn submit(&self, body: &Value) -> (u16, Value) {
        let r = self.submit_raw(body);
        let code = r.status().as_u16();
        (code, r.json().unwrap_or(Value::Null))
    }

    /// POSTs /api/generate, insists on 202 and returns the job id.
    pub fn submit_ok(&self, body: &Value) -> String {
        let (code, view) = self.submit(body);
        assert_eq!(code, 202, "{}: submit {body} answered {code}: {view}", self.name);
        super::job_id(&view)
    }

    /// GET /api/status/{id}: (status, body), or the transport error.
    pub fn try_status(&self, id: &str) -> Result<(u16, Value), String> {
        let quick = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let r = quick.get(self.url(&format!("/api/status/{id}"))).send().map_err(|e| e.to_string())?;
        let code = r.status().as_u16();
        Ok((code, r.json().unwrap_or(Value::Null)))
    }

    /// GET /api/status/{id}, insisting on 200.
    pub fn status(&self, id: &str) -> Value {
        match self.try_status(id) {
            Ok((200, view)) => view,
            other => panic!("{}: GET /api/status/{id}: {other:?}", self.name),
        }
    }

    /// Polls the job's status until it satisfies `done`, or panics after `within`.
    pub fn wait_for(&self, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.status(id);
            if done(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{}: job {id} never reached the expected state within {within:?}; last: {s}", self.name);
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Reads /api/jobs/{id}/events until a terminal event (completed, failed, cancelled);
    /// returns every (event, data) seen. Panics after `within`.
    pub fn events_until_terminal(&self, id: &str, within: Duration) -> Vec<(String, Value)> {
        let started = Instant::now();
        let sse = reqwest::blocking::Client::builder().timeout(within).build().unwrap();
        let r = sse.get(self.url(&format!("/api/jobs/{id}/events"))).send().unwrap_or_else(|e| panic!("{}: events {id}: {e}", self.name));
        assert_eq!(r.status(), 200, "{}: events {id}", self.name);
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(content_type.starts_with("text/event-stream"), "{}: events {id}: content-type {content_type}", self.name);
        let mut events: Vec<(String, Value)> = Vec::new();
        let mut name = String::from("message");
        for line in BufReader::new(r).lines() {
            let line = line.unwrap_or_else(|e| {
                panic!("{}: events {id}: {e} after {:?}; events so far: {}", self.name, started.elapsed(), event_names(&events))
            });
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                let data = data.trim_start();
                let value =
                    serde_json::from_str(data).unwrap_or_else(|e| panic!("{}: event {name} data is not JSON ({e}): {data}", self.name));
                events.push((name.clone(), value));
                if matches!(name.as_str(), "completed" | "failed" | "cancelled") {
                    return events;
                }
            } else if line.is_empty() {
                name = String::from("message");
            }
            assert!(
                started.elapsed() < within,
                "{}: events {id}: no terminal event within {within:?}; events so far: {}",
                self.name,
                event_names(&events)
            );
        }
        panic!("{}: events {id}: the stream ended without a terminal event; events: {}", self.name, event_names(&events));
    }

    /// GET /api/images/{id}.png, insisting on 200 and a PNG; returns its bytes.
    pub fn png(&self, id: &str) -> Vec<u8> {
        let r =
            client().get(self.url(&format!("/api/images/{id}.png"))).send().unwrap_or_else(|e| panic!("{}: image {id}: {e}", self.name));
        let code = r.status().as_u16();
        let bytes = r.bytes().unwrap().to_vec();
        assert_eq!(code, 200, "{}: GET /api/images/{id}.png: {}", self.name, String::from_utf8_lossy(&bytes));
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{}: image {id} is not a PNG ({} bytes)", self.name, bytes.len());
        bytes
    }

    // --- metrics -------------------------------------------------------------------------

    pub fn metrics(&self) -> String {
        let r = client().get(self.url("/metrics")).send().unwrap_or_else(|e| panic!("{}: /metrics: {e}", self.name));
        assert_eq!(r.status(), 200, "{}: /metrics", self.name);
        r.text().unwrap()
    }

    /// Jobs this process ran to completion: `easel_jobs_finished_total{state="completed"}`.
    pub fn completed(&self) -> u64 {
        finished(&self.metrics(), "completed")
    }

    /// Denoising steps this process has timed (`easel_step_seconds_count`): above 0 once it
    /// has painted anything.
    pub fn steps_timed(&self) -> u64 {
        sample_sum(&self.metrics(), "easel_step_seconds_count", |_| true)
    }
}

impl Drop for Easel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn event_names(events: &[(String, Value)]) -> String {
    events.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
}

/// `easel_jobs_finished_total` with `state="{state}"` (labels in any order), summed.
pub fn finished(metrics: &str, state: &str) -> u64 {
    let want = format!("state=\"{state}\"");
    sample_sum(metrics, "easel_jobs_finished_total", |labels| labels.split(',').any(|l| l.trim() == want))
}

/// The sum of the samples of `name` whose label text (between the braces) passes `labels`.
fn sample_sum(metrics: &str, name: &str, labels: impl Fn(&str) -> bool) -> u64 {
    let mut sum = 0.0;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (label_text, value) = if let Some(inner) = rest.strip_prefix('{') {
            let Some((l, v)) = inner.split_once('}') else { continue };
            (l, v)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another metric whose name starts with `name`
        };
        if labels(label_text) {
            sum += value.trim().split_whitespace().next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        }
    }
    sum as u64
}

/// Polls until the workers' completed counters add up to `n`, then checks they stay there a
/// moment (a job that ran twice would push the sum past `n`). Returns each worker's count.
pub fn wait_completed_total(workers: &[&Easel], n: u64, within: Duration) -> Vec<u64> {
    let deadline = Instant::now() + within;
    let counts = |ws: &[&Easel]| ws.iter().map(|w| w.completed()).collect::<Vec<u64>>();
    let mut now = counts(workers);
    while now.iter().sum::<u64>() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now = counts(workers);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = counts(workers);
    let names: Vec<&str> = workers.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(after.iter().sum::<u64>(), n, "completed counters of {names:?}: {after:?}, expected {n} in all");
    after
}

/// The job is processing and has done at least one step.
pub fn processing(s: &Value) -> bool {
    s["status"] == "processing" && s["step"].as_u64().unwrap_or(0) >= 1
}

/// Waits for a terminal state and insists it is `completed`.
pub fn wait_completed(web: &Easel, id: &str, within: Duration) -> Value {
    let done = web.wait_for(id, within, is_terminal);
    assert_eq!(done["status"], "completed", "{}: job {id} did not complete: {done}", web.name);
    done
}

/// (width, height) from a PNG's IHDR.
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() >= 24, "PNG too short");
    (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()))
}
