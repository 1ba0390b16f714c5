//! Rate limits, built once and applied as router layers: submits (JSON and server function
//! share one limiter) and reads (status, events, images) per client IP. In memory (governor)
//! for one process; in Redis when the store is shared, so that every web process counts
//! against the same limit: a GCRA in one Lua script per request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::IntoResponse;
use axum::Router;
use redis::aio::ConnectionManager;
use governor::middleware::NoOpMiddleware;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use crate::api::{ApiError, ErrorKind};
use crate::jobs::Client;

/// Keys requests by the client IP that `client::identify` resolved (trusted proxies applied).
#[derive(Clone, Copy, Debug)]
pub struct ClientIpKey;

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        req.extensions().get::<Client>().map(|c| c.ip).ok_or(GovernorError::UnableToExtractKey)
    }
}

type Config = GovernorConfig<ClientIpKey, NoOpMiddleware<governor::clock::QuantaInstant>>;
type Layer = GovernorLayer<ClientIpKey, NoOpMiddleware<governor::clock::QuantaInstant>, Body>;

/// One limit: a token back every `period`, `burst` at most saved up.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    name: &'static str,
    period: Duration,
    burst: u32,
    message: fn(&Rule, u64) -> String,
    per_minute: u32,
}

impl Rule {
    /// `per_minute` submits, all of which may come at once.
    pub fn submits(per_minute: u32) -> Self {
        Rule {
            name: "submit",
            period: replenish_every(Duration::from_secs(60), per_minute),
            burst: per_minute.max(1),
            per_minute,
            message: |rule, wait| {
                format!("Too many images requested: the limit is {} a minute. Try again in {wait} s.", rule.per_minute)
            },
        }
    }

    /// `per_second` reads sustained, `burst` at once.
    pub fn reads(per_second: u32, burst: u32) -> Self {
        Rule {
            name: "read",
            period: replenish_every(Duration::from_secs(1), per_second),
            burst: burst.max(1),
            per_minute: per_second.saturating_mul(60),
            message: |_, wait| format!("Too many requests; try again in {wait} s."),
        }
    }
}

/// Where the limits' counts live.
#[derive(Clone)]
pub enum Limits {
    /// This process's memory (one web process).
    Local,
    /// Redis, shared by every web process: `prefix` namespaces the keys.
    Shared { conn: ConnectionManager, prefix: &'static str },
}

impl Limits {
    /// Puts `router` behind `rule`.
    pub fn apply<S: Clone + Send + Sync + 'static>(&self, router: Router<S>, rule: Rule) -> Router<S> {
        match self {
            Limits::Local => {
                let config = GovernorConfigBuilder::default()
                    .period(rule.period)
                    .burst_size(rule.burst)
                    .key_extractor(ClientIpKey)
                    .finish()
                    .expect("a positive rate");
                let (layer, config) = layer(config, move |wait| (rule.message)(&rule, wait));
                spawn_cleanup(config);
                router.layer(layer)
            }
            Limits::Shared { conn, prefix } => {
                let limiter = SharedLimiter { conn: conn.clone(), prefix, rule };
                router.layer(from_fn_with_state(limiter, shared_limit))
            }
        }
    }
}

#[derive(Clone)]
struct SharedLimiter {
    conn: ConnectionManager,
    prefix: &'static str,
    rule: Rule,
}

/// GCRA: the key holds the "theoretical arrival time" of the next request, in microseconds of
/// Redis's own clock (one clock for every web process). ARGV: key, period µs, burst.
/// Answers {allowed, µs to wait}.
static GCRA: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', ARGV[1]) or '0'), now)
local allow_at = tat + period - period * burst
if now < allow_at then return {0, allow_at - now} end
local next_tat = tat + period
redis.call('SET', ARGV[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return {1, 0}
"#,
    )
});

async fn shared_limit(State(limiter): State<SharedLimiter>, req: Request<Body>, next: Next) -> Response<Body> {
    let Some(ip) = req.extensions().get::<Client>().map(|c| c.ip) else {
        return ApiError::internal().into_response();
    };
    let rule = &limiter.rule;
    let key = format!("{}rl:{}:{ip}", limiter.prefix, rule.name);
    let checked: redis::RedisResult<(i64, i64)> = GCRA
        .arg(key)
        .arg(rule.period.as_micros() as u64)
        .arg(rule.burst)
        .invoke_async(&mut limiter.conn.clone())
        .await;
    match checked {
        Ok((1, _)) => next.run(req).await,
        Ok((_, wait_us)) => {
            let wait = (wait_us as u64).div_ceil(1_000_000).max(1);
            metrics::counter!("easel_rate_limited_total").increment(1);
            ApiError::new(ErrorKind::RateLimited, (rule.message)(rule, wait)).retry_after(wait).into_response()
        }
        // Redis away: let the request through (it will meet the store's own error if it needs it).
        Err(e) => {
            tracing::warn!(error = %e, "the shared rate limit could not be checked");
            next.run(req).await
        }
    }
}

/// One token back every `window / count` (governor's "period"); never zero, which it rejects.
fn replenish_every(window: Duration, count: u32) -> Duration {
    (window / count.max(1)).max(Duration::from_nanos(1))
}

fn layer(config: Config, message: impl Fn(u64) -> String + Send + Sync + 'static) -> (Layer, Arc<Config>) {
    let config = Arc::new(config);
    let layer = GovernorLayer::new(config.clone()).error_handler(move |e| rejection(e, &message));
    (layer, config)
}

fn rejection(e: GovernorError, message: &impl Fn(u64) -> String) -> Response<Body> {
    match e {
        GovernorError::TooManyRequests { wait_time, headers } => {
            let wait = wait_time.max(1);
            metrics::counter!("easel_rate_limited_total").increment(1);
            let mut response = ApiError::new(ErrorKind::RateLimited, message(wait)).retry_after(wait).into_response();
            if let Some(headers) = headers {
                response.headers_mut().extend(headers);
            }
            response
        }
        GovernorError::UnableToExtractKey => ApiError::internal().into_response(),
        GovernorError::Other { code, msg, .. } => {
            tracing::warn!(%code, ?msg, "rate limiter error");
            ApiError::internal().into_response()
        }
    }
}

/// Forgets idle clients now and then, or the per-IP map grows without bound.
fn spawn_cleanup(config: Arc<Config>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            config.limiter().retain_recent();
        }
    });
}
