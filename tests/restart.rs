//! Nothing is lost across a restart: SIGKILL with jobs queued and one processing, and SIGTERM.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Several clients through a trusted proxy, so several jobs can wait at once.
const ENV: &[(&str, &str)] = &[("EASEL_TRUSTED_PROXIES", "127.0.0.1")];

fn submit_from(server: &Server, client: u8, body: Value) -> String {
    let (code, view) = submit_as(server, body, Some(&format!("198.51.100.{client}")));
    assert_eq!(code, 202, "{view}");
    job_id(&view)
}

fn processing(s: &Value) -> bool {
    s["status"] == "processing" && s["step"].as_u64().unwrap_or(0) >= 1
}

#[test]
fn sigkill_requeues_the_running_job_once_then_gives_up_and_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let slow = json!({"prompt": "slow", "width": 256, "height": 256, "steps": 40});
    let quick = json!({"prompt": "quick", "steps": 2});

    let server = Server::start_in(data.path(), ENV);
    let running = submit_from(&server, 1, slow);
    wait_for(&server, &running, Duration::from_secs(60), processing);
    let queued: Vec<String> = (2..=3).map(|c| submit_from(&server, c, quick.clone())).collect();
    for id in &queued {
        assert_eq!(status(&server, id)["status"], "queued");
    }
    server.kill();

    // First restart: the interrupted job runs again (it was first in line), then the others.
    let server = Server::start_in(data.path(), ENV);
    let again = wait_for(&server, &running, Duration::from_secs(60), |s| processing(s) || is_terminal(s));
    assert_eq!(again["status"], "processing", "the interrupted job did not run again: {again}");
    server.kill();

    // Second restart: interrupted twice, it gives up; the queued ones still complete.
    let server = Server::start_in(data.path(), ENV);
    let gave_up = wait_for(&server, &running, Duration::from_secs(30), is_terminal);
    assert_eq!((gave_up["status"].as_str(), gave_up["error"]["kind"].as_str()), (Some("failed"), Some("interrupted")), "{gave_up}");
    for id in &queued {
        let done = wait_for(&server, id, Duration::from_secs(60), is_terminal);
        assert_eq!(done["status"], "completed", "{done}");
    }
}

#[test]
fn sigterm_finishes_the_running_job_and_keeps_the_queue() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), ENV);
    let running = submit_from(&server, 1, json!({"prompt": "a", "width": 128, "height": 128, "steps": 30}));
    wait_for(&server, &running, Duration::from_secs(60), processing);
    let queued = submit_from(&server, 2, json!({"prompt": "b", "steps": 2}));
    assert_eq!(status(&server, &queued)["status"], "queued", "the test needs a job still waiting at SIGTERM");
    assert_eq!(status(&server, &running)["status"], "processing");
    assert!(server.terminate(), "the server did not exit cleanly on SIGTERM");

    let server = Server::start_in(data.path(), ENV);
    // The running job finished within the grace period; the queued one was kept and runs now.
    assert_eq!(status(&server, &running)["status"], "completed");
    let done = wait_for(&server, &queued, Duration::from_secs(60), is_terminal);
    assert_eq!(done["status"], "completed", "{done}");
}

#[test]
fn sigterm_requeues_a_job_that_outlasts_the_grace_period() {
    let data = tempfile::tempdir().unwrap();
    let env = [ENV[0], ("EASEL_SHUTDOWN_GRACE_SECS", "0")];
    let server = Server::start_in(data.path(), &env);
    let running = submit_from(&server, 1, json!({"prompt": "slow", "width": 256, "height": 256, "steps": 40}));
    wait_for(&server, &running, Duration::from_secs(60), processing);
    assert!(server.terminate());

    let server = Server::start_in(data.path(), &env);
    let again = wait_for(&server, &running, Duration::from_secs(60), |s| processing(s) || is_terminal(s));
    assert_eq!(again["status"], "processing", "{again}");
    // The graceful stop did not count as an attempt: a crash now is the job's first, so it
    // runs once more instead of ending `interrupted`.
    server.kill();
    let server = Server::start_in(data.path(), &env);
    let after_crash = wait_for(&server, &running, Duration::from_secs(60), |s| processing(s) || is_terminal(s));
    assert_eq!(after_crash["status"], "processing", "{after_crash}");
    client().delete(server.url(&format!("/api/jobs/{running}"))).send().unwrap();
}
