//! The JSON API, server functions, SSE, rate limits and backpressure, over real HTTP against
//! the real server binary running the default model.

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn png_size(png: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png).expect("a valid PNG");
    (img.width(), img.height())
}

#[test]
fn a_job_is_accepted_at_once_then_completes_with_a_cacheable_png() {
    let server = Server::start(&[]);
    let started = Instant::now();
    let (code, body) = submit(&server, json!({"prompt": "  a lighthouse at dusk ", "width": 64, "height": 96, "steps": 3, "seed": 42}));
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["params"]["prompt"], "a lighthouse at dusk");
    assert_eq!(body["params"]["seed"], 42);
    let id = job_id(&body);
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    let done = wait_for(&server, &id, Duration::from_secs(60), is_terminal);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!((done["width"].as_u64(), done["height"].as_u64(), done["seed"].as_u64()), (Some(64), Some(96), Some(42)));
    assert!(done["timings"]["totalMs"].as_u64().unwrap() <= started.elapsed().as_millis() as u64 + 1000);

    let url = server.url(done["imageUrl"].as_str().unwrap());
    let r = client().get(&url).send().unwrap();
    assert_eq!(r.status(), 200);
    // A new visitor's image answer carries no cookie: a shared cache must be able to keep it.
    assert!(r.headers().get("set-cookie").is_none(), "{:?}", r.headers());
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let png = r.bytes().unwrap();
    assert_eq!(png_size(&png), (64, 96));
    let params = easel::engine::read_png_parameters(&png).expect("a parameters chunk");
    assert!(params.starts_with("a lighthouse at dusk"), "{params}");
    assert!(params.contains("Seed: 42"), "{params}");

    let again = client().get(&url).header("if-none-match", etag).send().unwrap();
    assert_eq!(again.status(), 304);
}

#[test]
fn the_same_seed_paints_the_same_pixels() {
    let server = Server::start(&[("EASEL_MAX_ACTIVE_PER_CLIENT", "4")]);
    let mut pngs = Vec::new();
    for seed in [7, 7, 8] {
        let (_, body) = submit(&server, json!({"prompt": "a fox", "steps": 2, "seed": seed}));
        let done = wait_for(&server, &job_id(&body), Duration::from_secs(60), is_terminal);
        let png = client().get(server.url(done["imageUrl"].as_str().unwrap())).send().unwrap().bytes().unwrap();
        pngs.push(image::load_from_memory(&png).unwrap().to_rgb8().into_raw());
    }
    assert_eq!(pngs[0], pngs[1]);
    assert_ne!(pngs[0], pngs[2]);
}

#[test]
fn events_stream_progress_then_completion() {
    let server = Server::start(&[]);
    // Long enough that the stream opens while the job still runs, even on a fast machine.
    let (_, body) = submit(&server, json!({"prompt": "a fox", "width": 128, "height": 128, "steps": 30}));
    let id = job_id(&body);
    let r = client().get(server.url(&format!("/api/jobs/{id}/events"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut name = String::new();
    for line in BufReader::new(r).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            events.push((name.clone(), serde_json::from_str(data).unwrap()));
        }
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.last(), Some(&"completed"), "{names:?}");
    let steps: Vec<u64> = events.iter().filter(|(n, _)| n == "progress").map(|(_, v)| v["step"].as_u64().unwrap()).collect();
    assert!(!steps.is_empty(), "no progress events: {names:?}");
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "steps went backwards: {steps:?}");
    assert!(events.iter().all(|(_, v)| v["jobId"] == id.as_str()));
    let (_, last) = events.last().unwrap();
    assert_eq!(last["imageUrl"], format!("/api/images/{id}.png"));
}

#[test]
fn a_running_job_has_a_preview() {
    let server = Server::start(&[]);
    let (_, body) = submit(&server, json!({"prompt": "a fox", "width": 256, "height": 256, "steps": 30}));
    let id = job_id(&body);
    let running = wait_for(&server, &id, Duration::from_secs(60), |s| s["previewUrl"].is_string() || is_terminal(s));
    assert_eq!(running["status"], "processing", "finished before a preview was seen: {running}");
    let r = client().get(server.url(running["previewUrl"].as_str().unwrap())).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(png_size(&r.bytes().unwrap()), (32, 32), "previews are latent-sized");
    cancel(&server, &body);
}

#[test]
fn every_bad_request_gets_its_kind_and_nothing_is_stored() {
    // More submits than the default 8 a minute: this test is about validation, not limits.
    let server = Server::start(&[("EASEL_SUBMITS_PER_MINUTE", "1000")]);
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"prompt": "   "}), 422, "invalid_prompt"),
        (json!({"prompt": "x".repeat(1001)}), 422, "invalid_prompt"),
        (json!({"prompt": "a", "width": 100}), 422, "invalid_params"),
        (json!({"prompt": "a", "width": 4096}), 422, "invalid_params"),
        (json!({"prompt": "a", "steps": 0}), 422, "invalid_params"),
        (json!({"prompt": "a", "steps": 1000}), 422, "invalid_params"),
        (json!({"prompt": "a", "guidance": 1e9}), 422, "invalid_params"),
        (json!({"prompt": "a", "model": "nope"}), 422, "invalid_params"),
        (json!({"width": 64}), 422, "invalid_params"),
        (json!({"prompt": "a", "width": "wide"}), 422, "invalid_params"),
    ];
    for (body, code, kind) in cases {
        let (got, answer) = submit(&server, body.clone());
        assert_eq!((got, answer["kind"].as_str()), (code, Some(kind)), "{body} -> {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| m.len() > 10), "{answer}");
    }

    let r = client().post(server.url("/api/generate")).header("content-type", "application/json").body("{not json").send().unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().unwrap()["kind"], "bad_request");

    let r = client().post(server.url("/api/generate")).json(&json!({"prompt": "a".repeat(40_000)})).send().unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().unwrap()["kind"], "payload_too_large");

    let unknown = uuid::Uuid::new_v4();
    for (method, path) in [
        ("GET", format!("/api/status/{unknown}")),
        ("GET", "/api/status/not-a-uuid".to_string()),
        ("DELETE", format!("/api/jobs/{unknown}")),
        ("GET", format!("/api/jobs/{unknown}/events")),
        ("GET", format!("/api/images/{unknown}.png")),
        ("GET", "/api/images/..%2F..%2FCargo.toml".to_string()),
        ("GET", "/api/images/..%2Feasel.db.png".to_string()),
        ("GET", format!("/api/images/{unknown}/preview.png")),
    ] {
        let r = client().request(method.parse().unwrap(), server.url(&path)).send().unwrap();
        assert_eq!(r.status(), 404, "{method} {path}");
        assert_eq!(r.json::<Value>().unwrap()["kind"], "not_found", "{method} {path}");
    }

    // Nothing was stored and the server is still fine.
    let metrics = client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    for state in ["queued", "processing", "completed", "failed", "cancelled"] {
        assert_eq!(metric(&metrics, &format!("easel_jobs{{state=\"{state}\"}}")), Some(0.0), "{metrics}");
    }
    assert_eq!(metric(&metrics, "easel_jobs_submitted_total"), None, "a rejected request was counted as submitted");
    let (code, _) = submit(&server, json!({"prompt": "still working"}));
    assert_eq!(code, 202);
}

/// A sample's value, or None when the metric is absent.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).map(|v| v.trim().parse::<f64>().unwrap()))
}

/// Distinct clients come through a trusted proxy on 127.0.0.1 with their own X-Forwarded-For.
#[test]
fn one_active_job_per_client_and_a_bounded_queue() {
    // Scripts without a cookie are one visitor per request: the address's ceiling is what binds.
    let server = Server::start(&[("EASEL_TRUSTED_PROXIES", "127.0.0.1"), ("EASEL_MAX_QUEUED", "1"), ("EASEL_MAX_ACTIVE_PER_CLIENT", "1")]);
    let long = json!({"prompt": "slow", "width": 256, "height": 256, "steps": 50});
    let (code, a_body) = submit_as(&server, long.clone(), Some("198.51.100.1"));
    assert_eq!(code, 202);
    let a = job_id(&a_body);
    wait_for(&server, &a, Duration::from_secs(30), |s| s["status"] == "processing");

    let (code, busy) = submit_as(&server, json!({"prompt": "again"}), Some("198.51.100.1"));
    assert_eq!((code, busy["kind"].as_str()), (429, Some("busy")), "{busy}");

    let (code, b) = submit_as(&server, json!({"prompt": "second"}), Some("198.51.100.2"));
    assert_eq!(code, 202, "{b}");
    assert_eq!((b["status"].as_str(), b["position"].as_u64()), (Some("queued"), Some(0)));

    let r = client()
        .post(server.url("/api/generate"))
        .header("x-forwarded-for", "198.51.100.3")
        .json(&json!({"prompt": "third"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(r.json::<Value>().unwrap()["kind"], "queue_full");

    // Cancel the queued one at once, the running one within a step.
    let cancelled = cancel(&server, &b);
    assert_eq!(cancelled["status"], "cancelled");
    let asked = Instant::now();
    cancel(&server, &a_body);
    let done = wait_for(&server, &a, Duration::from_secs(30), is_terminal);
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(asked.elapsed() < Duration::from_secs(10), "cancel took {:?}", asked.elapsed());

    // With both gone the client may submit again.
    let (code, _) = submit_as(&server, json!({"prompt": "after"}), Some("198.51.100.1"));
    assert_eq!(code, 202);
}

#[test]
fn a_job_over_its_time_limit_fails_with_timeout() {
    let server = Server::start(&[("EASEL_JOB_TIMEOUT_SECS", "1")]);
    let (_, body) = submit(&server, json!({"prompt": "slow", "width": 256, "height": 256, "steps": 50}));
    let done = wait_for(&server, &job_id(&body), Duration::from_secs(60), is_terminal);
    assert_eq!((done["status"].as_str(), done["error"]["kind"].as_str()), (Some("failed"), Some("timeout")), "{done}");
}

#[test]
fn submits_are_rate_limited_per_ip_and_a_forged_header_does_not_help() {
    let server = Server::start(&[]);
    // Invalid prompts still spend the budget: the limiter runs before validation.
    for i in 0..8 {
        let (code, body) = submit(&server, json!({"prompt": ""}));
        assert_eq!(code, 422, "submit {i}: {body}");
    }
    let r = client().post(server.url("/api/generate")).json(&json!({"prompt": "a"})).send().unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "retry-after {wait}");
    let body: Value = r.json().unwrap();
    assert_eq!(body["kind"], "rate_limited");
    assert!(body["message"].as_str().unwrap().contains("8 a minute"), "{body}");

    // 127.0.0.1 is not a trusted proxy here, so X-Forwarded-For is ignored.
    let (code, body) = submit_as(&server, json!({"prompt": "a"}), Some("203.0.113.77"));
    assert_eq!((code, body["kind"].as_str()), (429, Some("rate_limited")));

    // The server function shares the same budget.
    let r = client().post(server.url("/sfn/submit")).form(&[("params[prompt]", "a")]).send().unwrap();
    assert_eq!(r.status(), 429);

    // A browser's plain form post is sent back to its page with the error in the URL.
    let no_redirects = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects
        .post(server.url("/sfn/submit"))
        .header("accept", "text/html")
        .header("referer", server.url("/?x=1"))
        .form(&[("params[prompt]", "a")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(&server.url("/?x=1&__path=%2Fsfn%2Fsubmit&__err=")), "{location}");
    let url = url::Url::parse(location).unwrap();
    let posted = url.query_pairs().find(|(k, _)| k == "__form").map(|(_, v)| v.into_owned());
    assert_eq!(posted.as_deref(), Some("params%5Bprompt%5D=a"), "the typed fields come back as posted");

    // Reads have their own, generous limit.
    let r = client().get(server.url("/api/models")).send().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn reads_are_limited_through_server_functions_too() {
    let server = Server::start(&[("EASEL_READS_PER_SECOND", "1"), ("EASEL_READ_BURST", "3")]);
    let codes: Vec<u16> = (0..4).map(|_| client().post(server.url("/sfn/models")).send().unwrap().status().as_u16()).collect();
    assert_eq!(codes, vec![200, 200, 200, 429]);
    let r = client().post(server.url("/sfn/recent")).send().unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.json::<Value>().unwrap()["kind"], "rate_limited");
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let server = Server::start(&[("EASEL_TRUSTED_PROXIES", "127.0.0.1/32"), ("EASEL_SUBMITS_PER_MINUTE", "2")]);
    for _ in 0..2 {
        assert_eq!(submit_as(&server, json!({"prompt": ""}), Some("198.51.100.10")).0, 422);
    }
    assert_eq!(submit_as(&server, json!({"prompt": ""}), Some("198.51.100.10")).0, 429);
    // A client cannot escape by prepending a fake hop: the proxy's own entry is rightmost.
    assert_eq!(submit_as(&server, json!({"prompt": ""}), Some("1.1.1.1, 198.51.100.10")).0, 429);
    // Nor by sending a line of its own before the one the proxy adds.
    let r = client()
        .post(server.url("/api/generate"))
        .header("x-forwarded-for", "1.1.1.2")
        .header("x-forwarded-for", "198.51.100.10")
        .json(&json!({"prompt": ""}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(submit_as(&server, json!({"prompt": ""}), Some("198.51.100.11")).0, 422);
}

#[test]
fn server_functions_answer_with_the_same_types_and_kinds() {
    let server = Server::start(&[]);
    let models: Value = client().post(server.url("/sfn/models")).send().unwrap().json().unwrap();
    assert_eq!(models["defaultModel"], "shapes");
    let names: Vec<&str> = models["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"shapes") && names.contains(&"tiny-xl"), "{names:?}");

    let r = client().post(server.url("/sfn/submit")).form(&[("params[prompt]", "   ")]).send().unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().unwrap()["kind"], "invalid_prompt");

    let r = client()
        .post(server.url("/sfn/submit"))
        .form(&[("params[prompt]", "a fox"), ("params[width]", ""), ("params[steps]", "2"), ("params[model]", "tiny-xl")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let view: Value = r.json().unwrap();
    assert_eq!((view["params"]["steps"].as_u64(), view["params"]["model"].as_str()), (Some(2), Some("tiny-xl")));
    let id = job_id(&view);
    let done = wait_for(&server, &id, Duration::from_secs(60), is_terminal);
    assert_eq!(done["status"], "completed", "{done}");

    let status: Value = client().post(server.url("/sfn/status")).form(&[("job_id", id.as_str())]).send().unwrap().json().unwrap();
    assert_eq!(status["status"], "completed");
    let r = client().post(server.url("/sfn/status")).form(&[("job_id", "nope")]).send().unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().unwrap()["kind"], "not_found");
    // A field of the wrong type: 422 invalid_params, as from /api/generate.
    let r = client().post(server.url("/sfn/submit")).form(&[("params[prompt]", "a"), ("params[width]", "wide")]).send().unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().unwrap()["kind"], "invalid_params");
}

#[test]
fn history_follows_the_visitor_cookie() {
    let server = Server::start(&[("EASEL_MAX_ACTIVE_PER_CLIENT", "4"), ("EASEL_MAX_ACTIVE_PER_VISITOR", "4")]);
    let browser = reqwest::blocking::Client::builder().cookie_store(true).build().unwrap();
    // The first page view sets the cookie.
    let page = browser.get(server.url("/")).send().unwrap();
    assert!(page.headers().get("set-cookie").is_some_and(|c| c.to_str().unwrap().starts_with("easel_visitor=")));
    let mut ids = Vec::new();
    for prompt in ["first", "second"] {
        let view: Value = browser.post(server.url("/sfn/submit")).form(&[("params[prompt]", prompt), ("params[steps]", "1")]).send().unwrap().json().unwrap();
        ids.push(job_id(&view));
    }
    let mine: Value = browser.post(server.url("/sfn/recent")).send().unwrap().json().unwrap();
    let got: Vec<&str> = mine.as_array().unwrap().iter().map(|j| j["jobId"].as_str().unwrap()).collect();
    assert_eq!(got, vec![ids[1].as_str(), ids[0].as_str()], "newest first");
    // Someone else's history is their own.
    let theirs: Value = client().post(server.url("/sfn/recent")).send().unwrap().json().unwrap();
    assert_eq!(theirs.as_array().unwrap().len(), 0);

    // The page itself: the returning visitor's shows its history; first visits (served from
    // memory after the first) show none, each with a cookie of its own.
    // (Both the gallery and the "nothing yet" note are always in the page; one is hidden.)
    let empty_note_shown = |page: &str| {
        let at = page.find(r#"data-testid="history-empty""#).expect("the note is in the page");
        let tag = &page[page[..at].rfind('<').unwrap()..at + page[at..].find('>').unwrap()];
        !tag.contains(" hidden")
    };
    let returning = browser.get(server.url("/")).send().unwrap().text().unwrap();
    assert!(!empty_note_shown(&returning) && returning.contains(ids[1].as_str()), "{returning}");
    let firsts: Vec<(String, String)> = (0..3)
        .map(|_| {
            let page = client().get(server.url("/")).send().unwrap();
            assert_eq!(page.status(), 200);
            let cookie = page.headers().get("set-cookie").expect("a first visit gets a cookie").to_str().unwrap().to_string();
            (cookie, page.text().unwrap())
        })
        .collect();
    for (cookie, page) in &firsts {
        assert!(page.contains("<form") && empty_note_shown(page) && !page.contains(ids[0].as_str()), "{page}");
        assert_eq!(page.len(), firsts[0].1.len(), "every first visit gets the same page");
        assert!(cookie.starts_with("easel_visitor="));
    }
    assert_ne!(firsts[1].0, firsts[2].0, "each first visit is a visitor of its own");
}

#[test]
fn health_readiness_and_metrics() {
    let server = Server::start(&[]);
    assert_eq!(client().get(server.url("/healthz")).send().unwrap().text().unwrap(), "ok");
    let ready: Value = client().get(server.url("/readyz")).send().unwrap().json().unwrap();
    assert_eq!(ready["ready"], true);
    let (_, body) = submit(&server, json!({"prompt": "a fox", "steps": 2}));
    wait_for(&server, &job_id(&body), Duration::from_secs(60), is_terminal);
    let text = client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    for name in ["easel_queue_depth", "easel_jobs{state=\"completed\"}", "easel_step_seconds_bucket", "easel_http_responses_total", "easel_jobs_finished_total"] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    assert_eq!(metric(&text, "easel_jobs{state=\"completed\"}"), Some(1.0));
    assert_eq!(metric(&text, "easel_jobs_submitted_total"), Some(1.0));
}

#[test]
fn help_lists_the_settings_and_their_variables() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_easel")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for var in ["EASEL_DATA_DIR", "EASEL_MAX_QUEUED", "EASEL_TRUSTED_PROXIES", "EASEL_SUBMITS_PER_MINUTE", "EASEL_CONFIG"] {
        assert!(text.contains(var), "--help lacks {var}:\n{text}");
    }
}

#[test]
fn junk_methods_do_not_make_new_metric_series() {
    let server = Server::start(&[]);
    let series = |text: &str| text.lines().filter(|l| l.starts_with("easel_http_responses_total{")).count();
    let before = series(&client().get(server.url("/metrics")).send().unwrap().text().unwrap());
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("JUNK{i}").as_bytes()).unwrap();
        client().request(method, server.url("/healthz")).send().unwrap();
    }
    let text = client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    assert!(series(&text) <= before + 2, "50 junk methods made {} new series:\n{text}", series(&text) - before);
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(!text.contains("JUNK"), "{text}");
}

#[test]
fn ipv6_clients_are_counted_by_their_64() {
    let server = Server::start(&[
        ("EASEL_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("EASEL_SUBMITS_PER_MINUTE", "3"),
        ("EASEL_MAX_ACTIVE_PER_CLIENT", "1"),
    ]);
    // Busy: one active job per client, and two addresses of one /64 are one client.
    let slow = json!({"prompt": "slow", "width": 256, "height": 256, "steps": 40});
    let (code, body) = submit_as(&server, slow.clone(), Some("2001:db8:1:2::1"));
    assert_eq!(code, 202, "{body}");
    let (code, body) = submit_as(&server, slow, Some("2001:db8:1:2:ffff:ffff:ffff:ffff"));
    assert_eq!((code, body["kind"].as_str()), (429, Some("busy")), "{body}");
    // The submit limit (3 a minute) is the /64's too; another /64 has its own.
    assert_eq!(submit_as(&server, json!({"prompt": ""}), Some("2001:db8:1:2::3")).0, 422);
    let (code, body) = submit_as(&server, json!({"prompt": ""}), Some("2001:db8:1:2::4"));
    assert_eq!((code, body["kind"].as_str()), (429, Some("rate_limited")), "{body}");
    assert_eq!(submit_as(&server, json!({"prompt": ""}), Some("2001:db8:1:3::1")).0, 422);
}

#[test]
fn the_visitor_cookie_is_secure_behind_an_https_proxy() {
    let cookie_of = |server: &Server, proto: Option<&str>| {
        let mut req = client().get(server.url("/"));
        if let Some(proto) = proto {
            req = req.header("x-forwarded-proto", proto);
        }
        let r = req.send().unwrap();
        r.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_string()).expect("a new visitor gets a cookie")
    };
    let proxied = Server::start(&[("EASEL_TRUSTED_PROXIES", "127.0.0.1/32")]);
    assert!(cookie_of(&proxied, Some("https")).contains("Secure"));
    assert!(!cookie_of(&proxied, Some("http")).contains("Secure"));
    assert!(!cookie_of(&proxied, None).contains("Secure"));
    // Only a trusted proxy is believed.
    let direct = Server::start(&[]);
    assert!(!cookie_of(&direct, Some("https")).contains("Secure"));
}

/// Cancels the job a submit answered with, by the token it carried.
fn cancel(server: &Server, submitted: &Value) -> Value {
    let token = submitted["cancelToken"].as_str().unwrap_or_else(|| panic!("no cancelToken in {submitted}"));
    let r = client().delete(server.url(&format!("/api/jobs/{}", job_id(submitted)))).header("x-cancel-token", token).send().unwrap();
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

#[test]
fn only_the_submitter_cancels_by_cookie_or_token() {
    let server = Server::start(&[("EASEL_TRUSTED_PROXIES", "127.0.0.1")]);
    let slow = json!({"prompt": "slow", "width": 256, "height": 256, "steps": 40});
    let (_, body) = submit_as(&server, slow.clone(), Some("198.51.100.1"));
    let id = job_id(&body);
    let token = body["cancelToken"].as_str().expect("the submitter gets a cancelToken").to_string();
    assert!(status(&server, &id).get("cancelToken").is_none(), "reads must not hand the token out");
    // Anyone can read the job, nobody else can cancel it.
    for r in [
        client().delete(server.url(&format!("/api/jobs/{id}"))).send().unwrap(),
        client().delete(server.url(&format!("/api/jobs/{id}"))).header("x-cancel-token", "not-it").send().unwrap(),
        client().post(server.url("/sfn/cancel")).form(&[("job_id", id.as_str())]).header("accept", "application/json").send().unwrap(),
    ] {
        assert_eq!(r.status(), 403);
        assert_eq!(r.json::<Value>().unwrap()["kind"], "forbidden");
    }
    assert_ne!(status(&server, &id)["status"], "cancelled");
    let r = client().delete(server.url(&format!("/api/jobs/{id}?cancelToken={token}"))).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(wait_for(&server, &id, Duration::from_secs(30), is_terminal)["status"], "cancelled");

    // A browser cancels its own job by its visitor cookie, through the page's server function.
    let browser = reqwest::blocking::Client::builder().cookie_store(true).build().unwrap();
    browser.get(server.url("/")).send().unwrap();
    let r = browser.post(server.url("/api/generate")).header("x-forwarded-for", "198.51.100.2").json(&slow).send().unwrap();
    let mine = job_id(&r.json::<Value>().unwrap());
    let r = browser.post(server.url("/sfn/cancel")).form(&[("job_id", mine.as_str())]).header("accept", "application/json").send().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    assert_eq!(wait_for(&server, &mine, Duration::from_secs(30), is_terminal)["status"], "cancelled");
}

#[test]
fn pages_and_metrics_count_as_reads_health_checks_do_not() {
    let server = Server::start(&[("EASEL_READS_PER_SECOND", "1"), ("EASEL_READ_BURST", "3")]);
    for path in ["/", "/metrics"] {
        for _ in 0..3 {
            assert_eq!(client().get(server.url(path)).send().unwrap().status(), 200, "{path}");
        }
        let r = client().get(server.url(path)).send().unwrap();
        assert_eq!(r.status(), 429, "{path}");
        assert!(r.headers().get("retry-after").is_some());
        assert_eq!(r.json::<Value>().unwrap()["kind"], "rate_limited");
    }
    for _ in 0..10 {
        assert_eq!(client().get(server.url("/healthz")).send().unwrap().status(), 200);
        assert_eq!(client().get(server.url("/readyz")).send().unwrap().status(), 200);
    }
}

#[test]
fn server_functions_refuse_cross_site_requests() {
    let server = Server::start(&[]);
    let post = |headers: &[(&str, &str)]| {
        let mut req = client().post(server.url("/sfn/recent")).header("accept", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().unwrap()
    };
    for headers in [&[("origin", "https://evil.example")][..], &[("sec-fetch-site", "cross-site")], &[("origin", "null")]] {
        let r = post(headers);
        assert_eq!(r.status(), 403, "{headers:?}");
        assert_eq!(r.json::<Value>().unwrap()["kind"], "forbidden");
    }
    // The refused submit queued nothing; the site's own page and scripts are served.
    let r = client()
        .post(server.url("/sfn/submit"))
        .header("origin", "https://evil.example")
        .form(&[("params[prompt]", "a fox")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let metrics = client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    assert_eq!(metric(&metrics, "easel_jobs_submitted_total"), None, "a refused cross-site submit was queued");
    assert_eq!(post(&[("origin", &server.base), ("sec-fetch-site", "same-origin")]).status(), 200);
    assert_eq!(post(&[]).status(), 200, "a script without browser headers");
}

#[test]
fn a_huge_refused_form_goes_back_without_its_fields() {
    let server = Server::start(&[]);
    let no_redirects = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let back = |prompt: &str| {
        let r = no_redirects
            .post(server.url("/sfn/submit"))
            .header("accept", "text/html")
            .header("referer", server.url("/"))
            .form(&[("params[prompt]", prompt)])
            .send()
            .unwrap();
        assert!(r.status().is_redirection(), "{}", r.status());
        url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap()
    };
    let fields = |url: &url::Url| url.query_pairs().find(|(k, _)| k == "__form").map(|(_, v)| v.into_owned());
    // Too long a prompt (over 1 000 characters) is refused; a short form comes back whole, ...
    let short = back(&"x".repeat(1_001));
    assert!(fields(&short).is_some(), "{short}");
    // ... one of 12 KB comes back with its error only.
    let huge = back(&"x".repeat(12_000));
    assert!(huge.query_pairs().any(|(k, _)| k == "__err"), "{huge}");
    assert_eq!(fields(&huge), None, "a 12 KB form was put in the redirect URL");
    assert!(huge.as_str().len() < 2_000, "{}", huge.as_str().len());
}

/// A models folder with a copy of the default model (under another name), a copy missing its
/// UNet and a copy with a damaged one.
fn models_with_broken_copies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/shapes");
    for name in ["mine", "incomplete", "damaged"] {
        let target = dir.path().join(name);
        std::fs::create_dir_all(&target).unwrap();
        for entry in std::fs::read_dir(&source).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
    }
    std::fs::remove_file(dir.path().join("incomplete/unet.safetensors")).unwrap();
    std::fs::write(dir.path().join("damaged/unet.safetensors"), b"not a safetensors file").unwrap();
    dir
}

#[test]
fn only_complete_models_are_offered_and_failures_never_show_paths() {
    let models = models_with_broken_copies();
    let server = Server::start(&[("EASEL_MODELS_DIR", models.path().to_str().unwrap()), ("EASEL_TRUSTED_PROXIES", "127.0.0.1")]);
    let offered: Value = client().get(server.url("/api/models")).send().unwrap().json().unwrap();
    let mut names: Vec<&str> = offered.as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    names.sort();
    // The default model the binary carries is written into a models folder that lacks it.
    assert_eq!(names, ["damaged", "mine", "shapes"], "a model with missing files was offered");
    assert!(models.path().join("shapes/model.toml").is_file());

    let (code, body) = submit_as(&server, json!({"prompt": "a fox", "model": "damaged", "steps": 2}), Some("198.51.100.1"));
    assert_eq!(code, 202, "{body}");
    let failed = wait_for(&server, &job_id(&body), Duration::from_secs(60), is_terminal);
    assert_eq!((failed["status"].as_str(), failed["error"]["kind"].as_str()), (Some("failed"), Some("inference_failed")), "{failed}");
    let text = failed.to_string();
    assert!(!text.contains(models.path().to_str().unwrap()) && !text.contains("safetensors"), "a file path reached the client: {text}");

    // The model that was loaded is still there and paints.
    let (_, body) = submit_as(&server, json!({"prompt": "a fox", "steps": 2}), Some("198.51.100.2"));
    let done = wait_for(&server, &job_id(&body), Duration::from_secs(60), is_terminal);
    assert_eq!(done["status"], "completed", "{done}");
}

#[test]
fn an_idempotency_key_makes_a_retry_answer_the_same_job() {
    let server = Server::start(&[("EASEL_TRUSTED_PROXIES", "127.0.0.1")]);
    let post = |key: &str, body: Value, from: &str| {
        let r = client()
            .post(server.url("/api/generate"))
            .header("idempotency-key", key)
            .header("x-forwarded-for", from)
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let body = json!({"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64});
    let (code, first) = post("order-17", body.clone(), "198.51.100.1");
    assert_eq!(code, 202, "{first}");
    // A retry (the answer was lost, say) gets the same job, not a second one, and not `busy`.
    let (code, again) = post("order-17", body.clone(), "198.51.100.1");
    assert_eq!(code, 202, "{again}");
    assert_eq!((&again["jobId"], &again["cancelToken"]), (&first["jobId"], &first["cancelToken"]));
    let (code, other) = post("order-17", json!({"prompt": "a lighthouse at night", "steps": 2}), "198.51.100.1");
    assert_eq!((code, other["kind"].as_str()), (422, Some("idempotency_mismatch")), "{other}");
    // Keys belong to their client.
    let (code, theirs) = post("order-17", body.clone(), "198.51.100.2");
    assert_eq!(code, 202);
    assert_ne!(theirs["jobId"], first["jobId"]);
    let (code, bad) = post(&"k".repeat(300), body, "198.51.100.3");
    assert_eq!((code, bad["kind"].as_str()), (400, Some("bad_request")), "{bad}");
    // After the job ends, the key still names it.
    wait_for(&server, &job_id(&first), Duration::from_secs(60), is_terminal);
    let (code, after) = post("order-17", json!({"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64}), "198.51.100.1");
    assert_eq!((code, after["jobId"].clone(), after["status"].as_str()), (202, first["jobId"].clone(), Some("completed")));
}

#[test]
fn finished_jobs_expire_after_the_retention_time_and_answer_410() {
    let server = Server::start(&[("EASEL_RETENTION_SECS", "1")]);
    let (_, body) = submit(&server, json!({"prompt": "brief", "steps": 2, "width": 64, "height": 64}));
    let id = job_id(&body);
    let done = wait_for(&server, &id, Duration::from_secs(60), is_terminal);
    assert_eq!(done["status"], "completed", "{done}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client().get(server.url(&format!("/api/status/{id}"))).send().unwrap();
        if r.status() == 410 {
            assert_eq!(r.json::<Value>().unwrap()["kind"], "expired");
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(Instant::now() < deadline, "the job was never deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let image = client().get(server.url(&format!("/api/images/{id}.png"))).send().unwrap();
    assert_eq!(image.status(), 410);
    assert_eq!(image.json::<Value>().unwrap()["kind"], "expired");
    assert!(!server.data_dir.join(format!("images/{id}.png")).exists(), "the image file is still on disk");
    let unknown = client().get(server.url(&format!("/api/status/{}", uuid::Uuid::new_v4()))).send().unwrap();
    assert_eq!(unknown.status(), 404);
}

#[test]
fn readiness_fails_when_the_data_disk_is_nearly_full() {
    // No disk here has 100 TB free.
    let server = Server::start_unready(&[("EASEL_MIN_FREE_DISK_MB", "100000000")]);
    let r = client().get(server.url("/readyz")).send().unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().unwrap();
    assert_eq!(body["kind"], "not_ready");
    assert!(body["message"].as_str().unwrap().contains("disk"), "{body}");
}

fn addr_of(server: &Server) -> std::net::SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let server = Server::start(&[("EASEL_HEADER_READ_TIMEOUT_SECS", "1")]);
    let mut slow = std::net::TcpStream::connect(addr_of(&server)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // Closed (0 bytes, or a reset), not left hanging until our own 5 s timeout.
    let closed = match slow.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => String::from_utf8_lossy(&buf[..n]).contains("408"),
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    };
    assert!(closed && started.elapsed() < Duration::from_secs(4), "the half-sent request was kept for {:?}", started.elapsed());
    assert_eq!(client().get(server.url("/healthz")).send().unwrap().status(), 200);
}

#[test]
fn connections_beyond_the_cap_wait_until_one_closes() {
    let server = Server::start(&[("EASEL_MAX_CONNECTIONS", "2")]);
    let idle: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(addr_of(&server)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let quick = reqwest::blocking::Client::builder().timeout(Duration::from_millis(800)).build().unwrap();
    assert!(quick.get(server.url("/healthz")).send().is_err(), "a third connection was served while two were open");
    drop(idle);
    let r = client().get(server.url("/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_stop_does_not_wait_for_a_request_that_never_ends() {
    use std::io::Write;
    let server = Server::start(&[("EASEL_SHUTDOWN_DEADLINE_SECS", "1")]);
    let mut stuck = std::net::TcpStream::connect(addr_of(&server)).unwrap();
    // Announces a body it never sends in full: the handler waits on it.
    stuck
        .write_all(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"prompt\":")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert!(server.terminate(), "the server did not exit cleanly");
    assert!(started.elapsed() < Duration::from_secs(10), "the stop waited {:?} for a request that never ends", started.elapsed());
    drop(stuck);
}

#[test]
fn visitors_behind_one_address_each_get_a_job_up_to_its_ceiling() {
    let server = Server::start(&[("EASEL_MAX_ACTIVE_PER_CLIENT", "2"), ("EASEL_MAX_ACTIVE_PER_VISITOR", "1")]);
    let slow = json!({"prompt": "slow", "width": 256, "height": 256, "steps": 40});
    // Three browsers on one address (all of them 127.0.0.1), each with its own cookie.
    let browsers: Vec<_> = (0..3)
        .map(|_| {
            let b = reqwest::blocking::Client::builder().cookie_store(true).build().unwrap();
            b.get(server.url("/")).send().unwrap();
            b
        })
        .collect();
    let submit_from = |b: &reqwest::blocking::Client| {
        let r = b.post(server.url("/api/generate")).json(&slow).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (code, first) = submit_from(&browsers[0]);
    assert_eq!(code, 202, "{first}");
    let (code, again) = submit_from(&browsers[0]);
    assert_eq!((code, again["kind"].as_str()), (429, Some("busy")), "one active job per visitor: {again}");
    let (code, second) = submit_from(&browsers[1]);
    assert_eq!(code, 202, "another visitor behind the same address: {second}");
    let (code, third) = submit_from(&browsers[2]);
    assert_eq!((code, third["kind"].as_str()), (429, Some("busy")), "the address's ceiling of 2: {third}");
    for submitted in [&first, &second] {
        cancel(&server, submitted);
    }
}

/// Opens the job's event stream and reads until its first event; the stream stays open.
fn open_stream(server: &Server, id: &str, forwarded_for: Option<&str>) -> reqwest::blocking::Response {
    let mut req = client().get(server.url(&format!("/api/jobs/{id}/events")));
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().unwrap()
}

#[test]
fn event_streams_are_capped_per_client_and_share_one_watcher_per_job() {
    let server = Server::start(&[("EASEL_TRUSTED_PROXIES", "127.0.0.1"), ("EASEL_SSE_PER_CLIENT", "3")]);
    let (_, body) = submit_as(&server, json!({"prompt": "slow", "width": 256, "height": 256, "steps": 40}), Some("198.51.100.9"));
    let id = job_id(&body);
    let mine: Vec<_> = (0..3).map(|_| open_stream(&server, &id, Some("198.51.100.1"))).collect();
    assert!(mine.iter().all(|r| r.status() == 200));
    let refused = open_stream(&server, &id, Some("198.51.100.1"));
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    assert_eq!(refused.json::<Value>().unwrap()["kind"], "rate_limited");
    let theirs: Vec<_> = (0..2).map(|_| open_stream(&server, &id, Some("198.51.100.2"))).collect();
    assert!(theirs.iter().all(|r| r.status() == 200), "another client has its own streams");
    // Five streams of one job, one watcher reading the store for all of them.
    let metrics = client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    assert_eq!(metric(&metrics, "easel_event_streams"), Some(5.0), "{metrics}");
    assert_eq!(metric(&metrics, "easel_job_watchers"), Some(1.0), "{metrics}");
    // A closed stream frees its place.
    drop(mine);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(open_stream(&server, &id, Some("198.51.100.1")).status(), 200);
    cancel(&server, &body);
}

#[test]
fn an_event_stream_ends_after_its_lifetime() {
    let server = Server::start(&[("EASEL_SSE_LIFETIME_SECS", "1")]);
    let (_, body) = submit(&server, json!({"prompt": "slow", "width": 256, "height": 256, "steps": 40}));
    let started = Instant::now();
    let stream = open_stream(&server, &job_id(&body), None);
    assert_eq!(stream.status(), 200);
    let text = stream.text().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "the stream lasted {:?}", started.elapsed());
    assert!(text.contains("event:"), "{text}");
    assert_ne!(status(&server, &job_id(&body))["status"], "completed", "the job ended before the stream's lifetime did");
    cancel(&server, &body);
}

#[test]
fn a_request_whose_body_never_arrives_gets_408() {
    use std::io::{Read, Write};
    let server = Server::start(&[("EASEL_REQUEST_TIMEOUT_SECS", "1")]);
    let mut slow = std::net::TcpStream::connect(addr_of(&server)).unwrap();
    slow.write_all(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"prompt\":")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = slow.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(17).any(|w| w == b"request_timeout\"") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"kind\":\"request_timeout\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(4), "answered after {:?}", started.elapsed());
}

#[test]
fn error_text_in_a_crafted_url_never_reaches_the_page() {
    let server = Server::start(&[]);
    // A genuine refused form post, to learn the URL shape the page reads its error from.
    let no_redirects = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects
        .post(server.url("/sfn/submit"))
        .header("accept", "text/html")
        .header("referer", server.url("/"))
        .form(&[("params[prompt]", "   ")])
        .send()
        .unwrap();
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    let genuine = pairs.iter().find(|(k, _)| k == "__err").map(|(_, v)| v.clone()).expect("an __err parameter");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let decoded = String::from_utf8(b64.decode(&genuine).expect("base64 JSON")).unwrap();
    assert!(decoded.contains("The prompt is empty"), "{decoded}");
    // The same URL with words of an attacker's choosing.
    let crafted_err = b64.encode(decoded.replace("The prompt is empty", "Your account is locked: call 555-0100"));
    let mut crafted = location.clone();
    crafted.query_pairs_mut().clear();
    for (k, v) in &pairs {
        crafted.query_pairs_mut().append_pair(k, if k == "__err" { &crafted_err } else { v });
    }
    let page = client().get(crafted.as_str()).header("accept", "text/html").send().unwrap().text().unwrap();
    assert!(page.contains("data-error-kind=\"invalid_prompt\""), "the page did not show the error at all");
    assert!(!page.contains("555-0100"), "attacker-chosen text was rendered");
}

#[test]
fn the_openai_endpoint_needs_a_key_when_keys_are_set_and_none_otherwise() {
    let body = json!({"prompt": "a fox", "size": "64x64", "steps": 2});
    let locked = Server::start(&[("EASEL_API_KEYS", "k-1,")]);
    for auth in [None, Some("Bearer "), Some("Bearer k-2"), Some("Basic k-1")] {
        let mut req = client().post(locked.url("/v1/images/generations")).json(&body);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert!(r.headers().get("www-authenticate").is_some());
        assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "invalid_api_key", "{auth:?}");
    }
    let r = client().post(locked.url("/v1/images/generations")).header("authorization", "Bearer k-1").json(&body).send().unwrap();
    assert_eq!(r.status(), 200);
    let open = Server::start(&[]);
    let r = client().post(open.url("/v1/images/generations")).json(&body).send().unwrap();
    assert_eq!(r.status(), 200, "no keys set: open");
    assert_eq!(r.json::<Value>().unwrap()["data"].as_array().unwrap().len(), 1);
}

#[test]
fn a_script_without_a_cookie_is_bounded_by_its_address_ceiling() {
    let server = Server::start(&[]);
    let slow = json!({"prompt": "slow", "width": 256, "height": 256, "steps": 40});
    let mut accepted = Vec::new();
    for _ in 0..4 {
        let (code, body) = submit(&server, slow.clone());
        assert_eq!(code, 202, "{body}");
        accepted.push(body);
    }
    let (code, body) = submit(&server, slow);
    assert_eq!((code, body["kind"].as_str()), (429, Some("busy")), "the default ceiling is 4 a client address: {body}");
    for submitted in &accepted {
        cancel(&server, submitted);
    }
}
