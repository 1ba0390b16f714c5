//! One webhook attempt over HTTP(S), behind the SSRF guard: the URL is checked again (settings
//! may have changed since the submit), a name is resolved by `GuardedResolver`, which hands
//! the client only addresses it checked (so the connection goes where the check looked), and
//! redirects are not followed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use super::{Secret, WebhookSettings};
use crate::api::{JobView, WebhookTargets};
use crate::jobs::{Job, Status};

/// How much of a receiver's answer is read (into the log): the rest is never downloaded.
const MAX_ANSWER_BYTES: usize = 512;

/// How one attempt went.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// A 2xx answer, with its status.
    Delivered(u16),
    /// 410 Gone: the receiver wants no more of these.
    Gone,
    /// The guard refused the target: never sent.
    Refused(String),
    /// No 2xx answer (another status, a timeout, a refused connection): worth retrying.
    Failed(String),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Delivered(status) => write!(f, "HTTP {status}"),
            Self::Gone => f.write_str("HTTP 410 Gone"),
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

/// The body: Standard Webhooks' envelope around the job's view.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    data: &'a JobView,
}

pub struct Sender {
    client: reqwest::Client,
    secret: Secret,
    targets: WebhookTargets,
}

impl Sender {
    pub fn new(settings: &WebhookSettings) -> anyhow::Result<Self> {
        Self::with_resolver(settings, GuardedResolver { targets: settings.targets.clone(), #[cfg(test)] names: Vec::new() })
    }

    fn with_resolver(settings: &WebhookSettings, resolver: GuardedResolver) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf to addresses the guard never saw.
            .no_proxy()
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .timeout(settings.timeout)
            .pool_max_idle_per_host(2)
            .user_agent(concat!("easel-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the webhook HTTP client")?;
        Ok(Self { client, secret: settings.secret.clone(), targets: settings.targets.clone() })
    }

    /// POSTs the ended job's view to its webhook, signed.
    pub async fn send(&self, job: &Job) -> Attempt {
        let Some(raw) = job.webhook.as_deref() else {
            return Attempt::Refused("the job has no webhook".into());
        };
        let url = match self.targets.check_url(raw) {
            Ok(url) => url,
            Err(e) => return Attempt::Refused(e.message),
        };
        let kind = match job.status {
            Status::Completed => "job.completed",
            Status::Failed => "job.failed",
            Status::Cancelled => "job.cancelled",
            Status::Queued | Status::Processing => return Attempt::Refused("the job has not ended".into()),
        };
        let now = time::OffsetDateTime::now_utc();
        let view = job.view(None);
        let envelope = Envelope { kind, timestamp: now.format(&Rfc3339).unwrap_or_default(), data: &view };
        let body = match serde_json::to_vec(&envelope) {
            Ok(body) => body,
            Err(e) => return Attempt::Refused(format!("encoding the payload: {e}")),
        };
        // The same id on every attempt: receivers drop repeats by it.
        let message_id = format!("msg_{}", job.id.simple());
        let timestamp = now.unix_timestamp();
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", self.secret.sign(&message_id, timestamp, &body))
            .body(body);
        match request.send().await {
            Ok(answer) if answer.status().is_success() => Attempt::Delivered(answer.status().as_u16()),
            Ok(answer) if answer.status() == reqwest::StatusCode::GONE => Attempt::Gone,
            Ok(answer) => {
                let status = answer.status();
                let start = read_start(answer).await;
                Attempt::Failed(format!("HTTP {status}: {start:?}"))
            }
            Err(e) => match refused_by_guard(&e) {
                Some(why) => Attempt::Refused(why),
                // Without the URL: its query may carry the receiver's token.
                None => Attempt::Failed(describe(&e.without_url())),
            },
        }
    }
}

/// The guard's refusal among a transport error's causes: resolution found a refused address.
fn refused_by_guard(error: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<GuardRefusal>() {
            return Some(refusal.0.clone());
        }
        source = cause.source();
    }
    None
}

/// The first bytes of an answer, for the log.
async fn read_start(mut answer: reqwest::Response) -> String {
    let mut start = Vec::new();
    while start.len() < MAX_ANSWER_BYTES {
        match answer.chunk().await {
            Ok(Some(chunk)) => start.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER_BYTES - start.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&start).into_owned()
}

/// A transport error with its causes.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The guard refused the addresses a name resolved to.
#[derive(Debug)]
struct GuardRefusal(String);

impl std::fmt::Display for GuardRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GuardRefusal {}

/// Resolves a webhook's host and hands back its addresses only if every one may be reached.
struct GuardedResolver {
    targets: WebhookTargets,
    /// Tests: names answered without DNS (as /etc/hosts would), so that a name resolving to a
    /// private address needs no outside resolver.
    #[cfg(test)]
    names: Vec<(String, std::net::IpAddr)>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let targets = self.targets.clone();
        #[cfg(test)]
        let fixed: Vec<SocketAddr> =
            self.names.iter().filter(|(n, _)| n == name.as_str()).map(|(_, ip)| SocketAddr::new(*ip, 0)).collect();
        #[cfg(not(test))]
        let fixed: Vec<SocketAddr> = Vec::new();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addresses: Vec<SocketAddr> =
                if fixed.is_empty() { tokio::net::lookup_host((host.as_str(), 0)).await?.collect() } else { fixed };
            let ips: Vec<_> = addresses.iter().map(SocketAddr::ip).collect();
            targets.check_addresses(&host, &ips).map_err(GuardRefusal)?;
            let addrs: Addrs = Box::new(addresses.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ResolvedParams;

    fn ended_job(webhook: &str) -> Job {
        let params = ResolvedParams::tiny_for_tests("a fox", 2);
        Job { webhook: Some(webhook.into()), status: Status::Cancelled, ..Job::new(params, "c".into(), None, 1) }
    }

    fn settings(allow: &[&str]) -> WebhookSettings {
        WebhookSettings {
            secret: Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            targets: WebhookTargets::new(allow),
            retry_after: vec![],
            timeout: Duration::from_secs(2),
        }
    }

    fn sender(allow: &[&str]) -> Sender {
        Sender::new(&settings(allow)).unwrap()
    }

    /// A public-looking name that resolves to a private or loopback address is refused after
    /// resolution, before any connection, and not retried.
    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_refused_before_connecting() {
        let names = vec![
            ("rebind.test".to_string(), "127.0.0.1".parse().unwrap()),
            ("metadata.test".to_string(), "169.254.169.254".parse().unwrap()),
        ];
        let targets = WebhookTargets::default();
        let settings = WebhookSettings { targets: targets.clone(), ..settings(&[]) };
        let sender = Sender::with_resolver(&settings, GuardedResolver { targets, names }).unwrap();
        for (url, range) in [("http://rebind.test:9/hook", "loopback"), ("https://metadata.test/", "metadata")] {
            let attempt = sender.send(&ended_job(url)).await;
            assert!(matches!(&attempt, Attempt::Refused(why) if why.contains(range)), "{url}: {attempt}");
        }
        // The real resolver, on a name every machine maps to loopback.
        let resolver = GuardedResolver { targets: WebhookTargets::default(), names: Vec::new() };
        let refused = resolver.resolve("localhost".parse().unwrap()).await.err().expect("refused");
        assert!(refused.to_string().contains("loopback"), "{refused}");
    }

    #[tokio::test]
    async fn literal_private_and_metadata_addresses_are_refused() {
        for url in ["http://169.254.169.254/latest/meta-data/", "http://[::1]:9/", "http://10.0.0.1/", "http://0x7f.1/"] {
            let attempt = sender(&[]).send(&ended_job(url)).await;
            assert!(matches!(attempt, Attempt::Refused(_)), "{url}: {attempt}");
        }
    }

    /// An allow-listed loopback port with nothing listening: the attempt fails (and would be retried).
    #[tokio::test]
    async fn an_allow_listed_host_is_tried() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let attempt = sender(&["127.0.0.1"]).send(&ended_job(&format!("http://127.0.0.1:{port}/hook"))).await;
        assert!(matches!(&attempt, Attempt::Failed(why) if why.contains("connect")), "{attempt}");
    }
}
