//! Third-party API clients against a real server: the official OpenAI Python client drives
//! `POST /v1/images/generations` (tests/clients/openai_images.py has the checks), schemathesis
//! checks the OpenAPI document, and a receiver built on the Standard Webhooks reference library
//! verifies webhooks (tests/clients/webhook_receiver.py).
//!
//! The clients live in a venv of their own, `.tools/pyclients`, that `scripts/install.sh test`
//! (run by `scripts/test.sh`) creates with pinned packages from PyPI.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::webhooks::Receiver;
use common::Server;

/// Longest the Python run may take before it is killed (it needs seconds).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a command to the end or until `timeout`; returns (exit code or None if killed, stdout,
/// stderr). Both pipes are drained by threads so a chatty child never blocks.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().expect("waiting for the client") {
            break Some(status.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (code, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

#[test]
fn the_official_openai_client_generates_images() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".tools/pyclients/bin/python");
    let script = root.join("tests/clients/openai_images.py");
    if !python.exists() {
        panic!(
            "{} is missing: run `bash scripts/test.sh` (it installs the Python clients)",
            python.display()
        );
    }

    let server = Server::start(&[
        ("EASEL_API_KEYS", "test-key-1,test-key-2"),
        ("EASEL_SUBMITS_PER_MINUTE", "100"),
        ("EASEL_MAX_ACTIVE_PER_CLIENT", "4"),
    ]);

    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg(&server.base)
        .arg("test-key-2")
        .current_dir(root)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // Loopback only, whatever proxy the environment names; and no OpenAI settings from it.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_ORG_ID")
        .env_remove("OPENAI_PROJECT_ID");
    let started = Instant::now();
    let (code, stdout, stderr) = run_with_timeout(cmd, CLIENT_TIMEOUT);
    let took = started.elapsed();
    eprintln!("--- openai_images.py stdout ---\n{stdout}--- stderr ---\n{stderr}--- {took:.1?} ---");
    match code {
        Some(0) => {}
        Some(code) => panic!(
            "openai_images.py exited with {code} after {took:.1?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
        None => panic!(
            "openai_images.py did not finish within {CLIENT_TIMEOUT:?} and was killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
    drop(server);
}

/// schemathesis generates requests for every operation of `/api/openapi.json` and fails on any
/// 5xx, an undocumented status or content type, or an answer that does not match its schema.
#[test]
fn the_openapi_document_holds_for_every_operation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schemathesis = root.join(".tools/pyclients/bin/schemathesis");
    if !schemathesis.exists() {
        panic!("{} is missing: run `bash scripts/test.sh` (it installs the Python clients)", schemathesis.display());
    }
    // Rate limits high enough that generated requests reach the handlers, not only the limiter;
    // a short queue, so that a `/v1` request (which waits for its images) never waits long.
    let server = Server::start(&[
        ("EASEL_SUBMITS_PER_MINUTE", "100000"),
        ("EASEL_READS_PER_SECOND", "100000"),
        ("EASEL_READ_BURST", "100000"),
        ("EASEL_MAX_ACTIVE_PER_CLIENT", "2"),
        ("EASEL_MAX_ACTIVE_PER_VISITOR", "2"),
        ("EASEL_MAX_QUEUED", "2"),
    ]);
    // schemathesis keeps a cache in its working folder: not in the repository.
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&schemathesis);
    cmd.args(["--no-color", "run"])
        .arg(format!("{}/api/openapi.json", server.base))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            "--phases",
            "coverage,fuzzing",
            "--max-examples",
            "40",
            "--seed",
            "1",
            // `/v1` paints before it answers: up to 4 images of up to 50 steps.
            "--request-timeout",
            "240",
        ])
        .current_dir(scratch.path())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("SCHEMATHESIS_HOOKS", "");
    let (code, stdout, stderr) = run_with_timeout(cmd, CLIENT_TIMEOUT);
    eprintln!("--- schemathesis ---\n{stdout}\n{stderr}");
    assert_eq!(code, Some(0), "schemathesis found problems:\n{stdout}\n{stderr}");
    assert!(stdout.contains("11 passed"), "not every operation was tested:\n{stdout}");
}

/// Webhook attempts the server counted with this outcome (its /metrics).
fn webhook_attempts(server: &Server, outcome: &str) -> u64 {
    let text = common::client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    let series = format!("easel_webhook_attempts_total{{outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.trim().parse().unwrap())
}

fn assert_signed_job_end(delivery: &serde_json::Value, job: &str) {
    assert_eq!(delivery["verified"], true, "the reference library rejected the signature: {delivery}");
    assert_eq!(delivery["tamperedVerified"], false, "{delivery}");
    assert_eq!(delivery["path"], "/hook");
    assert_eq!(delivery["contentType"], "application/json");
    assert_eq!(delivery["type"], "job.completed");
    assert_eq!(delivery["data"]["jobId"], job);
    assert_eq!(delivery["data"]["status"], "completed");
    assert_eq!(delivery["data"]["imageUrl"], format!("/api/images/{job}.png"));
}

/// Refused targets answer 422 at submit; a delivery is signed per Standard Webhooks (checked by
/// its reference library), retried after a failure with the same id, and still made after the
/// server is killed and restarted while the receiver was down.
#[test]
fn webhooks_are_signed_retried_and_survive_a_restart() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let env = [
        ("EASEL_WEBHOOK_SECRET", secret),
        ("EASEL_WEBHOOK_ALLOW_HOSTS", "127.0.0.1"),
        ("EASEL_WEBHOOK_RETRY_SECS", "1,1,1,1,1,1,1,1,1,1,1,1"),
        // A killed attempt's lease (2 × timeout + 5 s) ends well within the test's waits.
        ("EASEL_WEBHOOK_TIMEOUT_SECS", "2"),
        ("EASEL_SUBMITS_PER_MINUTE", "100"),
    ];
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &env);

    // The SSRF guard: nothing is stored, nothing is sent.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://127.0.0.2:9/hook",
        "http://[::1]:9/hook",
        "http://localhost:9/hook",
        "ftp://127.0.0.1/hook",
        "http://user:pw@127.0.0.1/hook",
    ] {
        let (code, body) = common::submit(&server, serde_json::json!({ "prompt": "a fox", "webhook": url }));
        assert_eq!((code, body["kind"].as_str()), (422, Some("invalid_params")), "{url}: {body}");
        assert!(body["message"].as_str().unwrap().contains("webhook URL"), "{body}");
    }

    // Delivered on the second attempt, after a 500.
    let receiver = Receiver::start(0, secret, 1);
    let (code, body) = common::submit(&server, serde_json::json!({ "prompt": "a red fox", "steps": 2, "webhook": receiver.hook_url() }));
    assert_eq!(code, 202, "{body}");
    let first = common::job_id(&body);
    common::wait_for(&server, &first, Duration::from_secs(60), common::is_terminal);
    let log = receiver.wait_for(2, Duration::from_secs(30));
    assert_eq!((log[0]["answered"].as_u64(), log[1]["answered"].as_u64()), (Some(500), Some(204)));
    assert_eq!(log[0]["id"], log[1]["id"], "a retry keeps its webhook-id");
    for delivery in &log {
        assert_signed_job_end(delivery, &first);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(receiver.wait_for(2, Duration::ZERO).len(), 2, "delivered once, then never again");

    // Nobody listens yet: attempts fail; the server dies; its successor still delivers.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let retries_before = webhook_attempts(&server, "retry");
    let (code, body) = common::submit(
        &server,
        serde_json::json!({ "prompt": "a blue fox", "steps": 2, "webhook": format!("http://127.0.0.1:{port}/hook") }),
    );
    assert_eq!(code, 202, "{body}");
    let second = common::job_id(&body);
    common::wait_for(&server, &second, Duration::from_secs(60), common::is_terminal);
    let deadline = Instant::now() + Duration::from_secs(30);
    while webhook_attempts(&server, "retry") == retries_before {
        assert!(Instant::now() < deadline, "no failed webhook attempt was counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.kill();
    let late = Receiver::start(port, secret, 0);
    let restarted = Server::start_in(data.path(), &env);
    let log = late.wait_for(1, Duration::from_secs(30));
    assert_signed_job_end(&log[0], &second);
    assert!(webhook_attempts(&restarted, "delivered") >= 1);
}
