//! A webhook receiver on loopback (tests/clients/webhook_receiver.py, from the venv that
//! `scripts/install.sh test` makes) that verifies each delivery with the Standard Webhooks
//! reference library, independently of easel's own signing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Receiver {
    child: std::process::Child,
    port: u16,
}

impl Receiver {
    /// Listens on `port` (0: any); answers 500 to the first `fail_first` deliveries.
    pub fn start(port: u16, secret: &str, fail_first: u32) -> Receiver {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".tools/pyclients/bin/python");
        assert!(python.exists(), "{} is missing: run `bash scripts/test.sh`", python.display());
        let mut child = Command::new(python)
            .arg(root.join("tests/clients/webhook_receiver.py"))
            .args([port.to_string(), secret.to_string(), fail_first.to_string()])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the webhook receiver");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port = line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("receiver said {line:?}"));
        Receiver { child, port }
    }

    pub fn hook_url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Waits until `n` deliveries have arrived; answers them all.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let log: Vec<serde_json::Value> =
                super::client().get(format!("http://127.0.0.1:{}/log", self.port)).send().unwrap().json().unwrap();
            if log.len() >= n {
                return log;
            }
            assert!(Instant::now() < deadline, "{} of {n} webhook deliveries arrived: {log:?}", log.len());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

