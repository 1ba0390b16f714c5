//! A real easel server for tests: the release binary as a child process on an ephemeral port,
//! with the default model and a data directory of its own.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod redis;
pub mod webhooks;

pub struct Server {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    _data: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with a fresh data directory and `env` on top of the defaults.
    pub fn start(env: &[(&str, &str)]) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = data.path().to_path_buf();
        let mut server = Server::start_in(&dir, env);
        server._data = Some(data);
        server
    }

    /// Starts a server with a fresh data directory, not waiting for it to be ready.
    pub fn start_unready(env: &[(&str, &str)]) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = data.path().to_path_buf();
        let mut server = Server::launch(&dir, env);
        server._data = Some(data);
        server
    }

    /// Starts a server on an existing data directory (to test restarts).
    pub fn start_in(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let server = Server::launch(data_dir, env);
        server.wait_ready();
        server
    }

    /// Starts the process and waits for its address.
    fn launch(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
            .env("EASEL_DATA_DIR", data_dir)
            .env("RUST_LOG", "info")
            .env_remove("EASEL_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning the easel binary");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("easel listening on ").nth(1) {
                        let _ = tx.send(rest.trim().to_string());
                        sent = true;
                    }
                }
                // Keep draining so the server never blocks on a full pipe.
                if std::env::var_os("EASEL_TEST_LOGS").is_some() {
                    eprintln!("[server] {line}");
                }
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(60)).expect("the server did not start within 60 s");
        Server { child, base, data_dir: data_dir.to_path_buf(), _data: None }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::blocking::get(self.url("/readyz")) {
                if r.status() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server never became ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies mid-whatever, as in a crash or an OOM kill.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then wait for the process to exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "the server did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// POSTs /api/generate; returns (status, body).
pub fn submit(server: &Server, body: Value) -> (u16, Value) {
    submit_as(server, body, None)
}

/// As `submit`, with an `X-Forwarded-For` header.
pub fn submit_as(server: &Server, body: Value, forwarded_for: Option<&str>) -> (u16, Value) {
    let mut req = client().post(server.url("/api/generate")).json(&body);
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    let r = req.send().expect("submit");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

pub fn status(server: &Server, id: &str) -> Value {
    client().get(server.url(&format!("/api/status/{id}"))).send().expect("status").json().expect("status json")
}

/// Polls until the job's status satisfies `done`, or panics after `within`.
pub fn wait_for(server: &Server, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status(server, id);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "job {id} never reached the expected state; last: {s}");
        std::thread::sleep(Duration::from_millis(30));
    }
}

pub fn is_terminal(s: &Value) -> bool {
    matches!(s["status"].as_str(), Some("completed" | "failed" | "cancelled"))
}

pub fn job_id(body: &Value) -> String {
    body["jobId"].as_str().unwrap_or_else(|| panic!("no jobId in {body}")).to_string()
}
