//! The Redis job store with split roles: several web processes (`easel --no-worker`) and
//! several workers (`easel worker`) on one `redis-server`, each test with a Redis of its own.
//! Workers die mid-job, a web process dies with jobs queued, Redis restarts from its AOF; the
//! submit limit and the model routing hold across processes.
//!
//! Needs `redis-server` on PATH (`bash scripts/test.sh` installs it). `EASEL_TEST_LOGS=1`
//! prints every process's output.

mod common;

/// In a module so that every test's name contains "redis" (`cargo test redis`).
mod redis_store {
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use super::common::is_terminal;
    use super::common::redis::*;

    /// Every web process gets the same limits: room for many jobs from 127.0.0.1.
    const WEB: &[(&str, &str)] = &[
        ("EASEL_MAX_ACTIVE_PER_CLIENT", "100"),
        ("EASEL_MAX_QUEUED", "100"),
        ("EASEL_SUBMITS_PER_MINUTE", "1000"),
        ("EASEL_READS_PER_SECOND", "1000"),
        ("EASEL_READ_BURST", "10000"),
        ("EASEL_HEARTBEAT_SECS", "2"),
    ];
    const WORKER: &[(&str, &str)] = &[("EASEL_HEARTBEAT_SECS", "2")];

    const JOB: Duration = Duration::from_secs(60);

    fn quick(seed: u64) -> Value {
        json!({"prompt": format!("quick {seed}"), "width": 64, "height": 64, "steps": 2, "seed": seed})
    }

    fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        base.iter().chain(more).copied().collect()
    }

    /// Reads one finished job back from `web`: its events, status and PNG.
    fn check_completed_via(web: &Easel, id: &str, size: u32) {
        let events = web.events_until_terminal(id, JOB);
        let (name, last) = events.last().unwrap();
        assert_eq!(name, "completed", "{}: job {id}: {events:?}", web.name);
        assert_eq!(last["jobId"], id);
        let s = web.status(id);
        assert_eq!(s["status"], "completed", "{}: {s}", web.name);
        assert_eq!(s["imageUrl"], format!("/api/images/{id}.png"), "{s}");
        let png = web.png(id);
        assert_eq!(png_size(&png), (size, size), "{}: job {id}", web.name);
    }

    #[test]
    fn two_web_and_two_worker_processes_share_one_redis_queue() {
        let redis = RedisServer::start();
        let webs = [Easel::web("web1", &redis, WEB), Easel::web("web2", &redis, WEB)];
        let workers = [Easel::worker("worker1", &redis, WORKER), Easel::worker("worker2", &redis, WORKER)];

        // A job long enough that the other web process streams its progress live.
        let live = webs[0].submit_ok(&json!({"prompt": "live", "width": 128, "height": 128, "steps": 30, "seed": 1}));
        let events = webs[1].events_until_terminal(&live, JOB);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.last(), Some(&"completed"), "{names:?}");
        let steps: Vec<u64> = events.iter().filter(|(n, _)| n == "progress").filter_map(|(_, v)| v["step"].as_u64()).collect();
        assert!(!steps.is_empty(), "web2 streamed no progress of a job submitted to web1: {names:?}");
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "steps went backwards: {steps:?}");
        assert!(events.iter().all(|(_, v)| v["jobId"] == live.as_str()), "{events:?}");

        // Several quick jobs, alternately to each web process, each read back from the other.
        let ids: Vec<(usize, String)> = (0..6).map(|i| (i % 2, webs[i % 2].submit_ok(&quick(100 + i as u64)))).collect();
        for (to, id) in &ids {
            check_completed_via(&webs[1 - to], id, 64);
        }
        check_completed_via(&webs[0], &live, 128);

        // Each job ran to completion exactly once, on one worker or the other.
        let refs: Vec<&Easel> = workers.iter().collect();
        wait_completed_total(&refs, 1 + ids.len() as u64, Duration::from_secs(10));
    }

    /// Two web processes both send webhooks from the shared store: each ended job's webhook
    /// arrives once (the lease keeps the other sender off), signed, whichever process took
    /// the job, and a failed first attempt is retried by either.
    #[test]
    fn webhooks_from_a_shared_store_arrive_once_each() {
        let redis = RedisServer::start();
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let hooks = with(
            WEB,
            &[("EASEL_WEBHOOK_SECRET", secret), ("EASEL_WEBHOOK_ALLOW_HOSTS", "127.0.0.1"), ("EASEL_WEBHOOK_RETRY_SECS", "1,1,1,1")],
        );
        let webs = [Easel::web("web1", &redis, &hooks), Easel::web("web2", &redis, &hooks)];
        let _worker = Easel::worker("worker", &redis, WORKER);
        let receiver = super::common::webhooks::Receiver::start(0, secret, 1);

        let ids: Vec<String> = (0..4)
            .map(|i| {
                let body = json!({"prompt": format!("hooked {i}"), "width": 64, "height": 64, "steps": 2, "seed": i, "webhook": receiver.hook_url()});
                webs[i % 2].submit_ok(&body)
            })
            .collect();
        for id in &ids {
            webs[0].wait_for(id, JOB, is_terminal);
        }
        // One 500 (retried), then one delivery per job.
        let log = receiver.wait_for(ids.len() + 1, Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(3));
        let log = receiver.wait_for(log.len(), Duration::ZERO);
        let delivered: Vec<&Value> = log.iter().filter(|d| d["answered"] == 204).collect();
        assert_eq!(log.len(), ids.len() + 1, "a webhook was sent twice: {log:?}");
        let mut jobs: Vec<&str> = delivered.iter().map(|d| d["data"]["jobId"].as_str().unwrap()).collect();
        jobs.sort();
        let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(jobs, expected);
        assert!(log.iter().all(|d| d["verified"] == true && d["type"] == "job.completed"), "{log:?}");
    }

    #[test]
    fn a_worker_killed_mid_job_is_replaced_and_nothing_runs_twice() {
        let redis = RedisServer::start();
        let web = Easel::web("web", &redis, WEB);
        let mut workers = vec![Easel::worker("worker1", &redis, WORKER), Easel::worker("worker2", &redis, WORKER)];

        let slow = web.submit_ok(&json!({"prompt": "slow", "width": 256, "height": 256, "steps": 40, "seed": 7}));
        web.wait_for(&slow, JOB, |s| processing(s) || is_terminal(s));
        // Only the worker painting it has timed any steps.
        let deadline = Instant::now() + Duration::from_secs(10);
        let running = loop {
            let timed: Vec<u64> = workers.iter().map(|w| w.steps_timed()).collect();
            match timed.iter().filter(|&&n| n > 0).count() {
                1 => break timed.iter().position(|&n| n > 0).unwrap(),
                n => assert!(n == 0 && Instant::now() < deadline, "steps timed by the workers: {timed:?}; job: {}", web.status(&slow)),
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let victim = workers.remove(running);
        let victim_name = victim.name.clone();
        victim.kill();
        let at_kill = web.status(&slow);
        assert!(processing(&at_kill), "the job was not mid-way when {victim_name} was killed (make it slower?): {at_kill}");

        // The other worker reclaims it once the heartbeat is stale, runs it again, and it completes.
        let survivor = &workers[0];
        let done = web.wait_for(&slow, Duration::from_secs(120), is_terminal);
        assert_eq!(
            done["status"],
            "completed",
            "after {victim_name} was killed: {done}\n{} output:\n{}",
            survivor.name,
            survivor.log_tail(30)
        );
        assert_eq!(wait_completed_total(&[survivor], 1, Duration::from_secs(10)), vec![1]);
        let png = web.png(&slow);
        assert_eq!(png_size(&png), (256, 256));

        // The queue still works, and the slow job did not run a second time meanwhile.
        let next = web.submit_ok(&quick(8));
        wait_completed(&web, &next, JOB);
        assert_eq!(wait_completed_total(&[survivor], 2, Duration::from_secs(10)), vec![2]);
    }

    #[test]
    fn a_cancel_on_one_web_process_stops_a_job_running_on_a_worker_elsewhere() {
        let redis = RedisServer::start();
        let webs = [Easel::web("web1", &redis, WEB), Easel::web("web2", &redis, WEB)];
        let worker = Easel::worker("worker", &redis, WORKER);
        let (code, submitted) = webs[0].submit(&json!({"prompt": "slow", "width": 256, "height": 256, "steps": 40, "seed": 9}));
        assert_eq!(code, 202, "{submitted}");
        let slow = submitted["jobId"].as_str().unwrap().to_string();
        let queued = webs[0].submit_ok(&quick(500));
        webs[1].wait_for(&slow, JOB, |s| processing(s) || is_terminal(s));
        let r = super::common::client()
            .delete(webs[1].url(&format!("/api/jobs/{slow}")))
            .header("x-cancel-token", submitted["cancelToken"].as_str().unwrap())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let ended = webs[0].wait_for(&slow, Duration::from_secs(20), is_terminal);
        assert_eq!(ended["status"], "cancelled", "{ended}");
        // The worker moved on to the next job, and nothing was counted as completed twice.
        wait_completed(&webs[1], &queued, JOB);
        assert_eq!(wait_completed_total(&[&worker], 1, Duration::from_secs(10)), vec![1]);
        assert_eq!(finished(&worker.metrics(), "cancelled"), 1);
    }

    #[test]
    fn a_killed_web_process_loses_nothing() {
        let redis = RedisServer::start();
        let web1 = Easel::web("web1", &redis, WEB);
        let web2 = Easel::web("web2", &redis, WEB);

        // No worker yet: the jobs wait in Redis.
        let ids: Vec<String> = (0..3).map(|i| web1.submit_ok(&quick(200 + i))).collect();
        for id in &ids {
            let s = web2.status(id);
            assert_eq!(s["status"], "queued", "web2 does not see web1's job {id} queued: {s}");
        }
        web1.kill();

        let worker = Easel::worker("worker", &redis, WORKER);
        for id in &ids {
            check_completed_via(&web2, id, 64);
        }
        assert_eq!(wait_completed_total(&[&worker], 3, Duration::from_secs(10)), vec![3]);
    }

    #[test]
    fn redis_restart_with_aof_keeps_the_queue() {
        let mut redis = RedisServer::start();
        let web = Easel::web("web", &redis, WEB);
        let ids: Vec<String> = (0..3).map(|i| web.submit_ok(&quick(300 + i))).collect();
        for id in &ids {
            assert_eq!(web.status(id)["status"], "queued");
        }
        // appendfsync everysec: give the AOF its fsync (SIGTERM fsyncs too).
        std::thread::sleep(Duration::from_millis(1500));
        redis.stop();

        // Without its store the web process is not ready.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ready = web.readyz();
        while ready == 200 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            ready = web.readyz();
        }
        assert_ne!(ready, 200, "web still says ready 10 s after Redis stopped");

        redis.restart();
        // The web process reconnects by itself; the jobs are still there, still queued.
        for id in &ids {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let answer = web.try_status(id);
                if let Ok((200, s)) = &answer {
                    assert_eq!(s["status"], "queued", "after the Redis restart: {s}");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "web never read job {id} back within 15 s of the Redis restart; last: {answer:?}\nweb output:\n{}\nredis log:\n{}",
                    web.log_tail(20),
                    redis.log_tail(20)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        assert_eq!(web.readyz(), 200, "web is not ready again after the Redis restart");

        let worker = Easel::worker("worker", &redis, WORKER);
        for id in &ids {
            wait_completed(&web, id, JOB);
        }
        assert_eq!(wait_completed_total(&[&worker], 3, Duration::from_secs(10)), vec![3]);
    }

    #[test]
    fn the_submit_limit_holds_across_web_processes() {
        let redis = RedisServer::start();
        let env = with(WEB, &[("EASEL_SUBMITS_PER_MINUTE", "4")]);
        let webs = [Easel::web("web1", &redis, &env), Easel::web("web2", &redis, &env)];
        for i in 0..4 {
            webs[i % 2].submit_ok(&quick(400 + i as u64));
        }
        for i in 4..6 {
            let web = &webs[i % 2];
            let r = web.submit_raw(&quick(400 + i as u64));
            let code = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body: Value = r.json().unwrap_or(Value::Null);
            assert_eq!((code, body["kind"].as_str()), (429, Some("rate_limited")), "{}: submit {} of 6: {body}", web.name, i + 1);
            let wait: u64 = retry_after
                .unwrap_or_else(|| panic!("{}: a 429 without Retry-After: {body}", web.name))
                .parse()
                .expect("Retry-After in seconds");
            assert!((1..=60).contains(&wait), "Retry-After {wait}");
        }
    }

    #[test]
    fn workers_claim_only_models_they_offer() {
        let redis = RedisServer::start();
        let web = Easel::web("web", &redis, WEB);
        let sd15 = Easel::worker("worker-shapes", &redis, &with(WORKER, &[("EASEL_MODELS", "shapes"), ("EASEL_DEFAULT_MODEL", "shapes")]));
        let xl = Easel::worker("worker-tiny-xl", &redis, &with(WORKER, &[("EASEL_MODELS", "tiny-xl"), ("EASEL_DEFAULT_MODEL", "tiny-xl")]));

        let models: Value = super::common::client().get(web.url("/api/models")).send().unwrap().json().unwrap();
        let text = models.to_string();
        assert!(text.contains("\"shapes\"") && text.contains("\"tiny-xl\""), "web does not offer both models: {models}");

        let a = web.submit_ok(&json!({"prompt": "xl", "model": "tiny-xl", "width": 64, "height": 64, "steps": 2, "seed": 5}));
        let done = wait_completed(&web, &a, JOB);
        assert_eq!(done["params"]["model"], "tiny-xl", "{done}");
        assert_eq!(wait_completed_total(&[&sd15, &xl], 1, Duration::from_secs(10)), vec![0, 1], "the tiny-xl job ran on the wrong worker");

        let b = web.submit_ok(&json!({"prompt": "sd", "model": "shapes", "width": 64, "height": 64, "steps": 2, "seed": 6}));
        wait_completed(&web, &b, JOB);
        assert_eq!(wait_completed_total(&[&sd15, &xl], 2, Duration::from_secs(10)), vec![1, 1], "the shapes job ran on the wrong worker");
    }
}
