//! Rate limits, built once and applied as router layers: submits (JSON and server function
//! share one limiter) and reads (status, events, images) per client IP.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::response::IntoResponse;
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
pub type Layer = GovernorLayer<ClientIpKey, NoOpMiddleware<governor::clock::QuantaInstant>, Body>;

/// `per_minute` submits, all of which may come at once.
pub fn submits(per_minute: u32) -> (Layer, Arc<Config>) {
    let config = GovernorConfigBuilder::default()
        .period(replenish_every(Duration::from_secs(60), per_minute))
        .burst_size(per_minute)
        .key_extractor(ClientIpKey)
        .finish()
        .expect("a positive rate");
    layer(config, move |wait| {
        format!("Too many images requested: the limit is {per_minute} a minute. Try again in {wait} s.")
    })
}

/// `per_second` reads sustained, `burst` at once.
pub fn reads(per_second: u32, burst: u32) -> (Layer, Arc<Config>) {
    let config = GovernorConfigBuilder::default()
        .period(replenish_every(Duration::from_secs(1), per_second))
        .burst_size(burst.max(1))
        .key_extractor(ClientIpKey)
        .finish()
        .expect("a positive rate");
    layer(config, |wait| format!("Too many requests; try again in {wait} s."))
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
pub fn spawn_cleanup(configs: Vec<Arc<Config>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            for config in &configs {
                config.limiter().retain_recent();
            }
        }
    });
}
