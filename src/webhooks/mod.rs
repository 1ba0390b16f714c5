//! Webhooks: when a job that named one ends (completed, failed or cancelled), its view is POSTed
//! there, signed per Standard Webhooks (`sign`). Delivery is at least once: the store keeps
//! each webhook's attempts and next due time, so retries survive restarts, and a lease keeps
//! two processes from sending the same attempt. Receivers tell repeats apart by `webhook-id`.
//!
//! Every attempt re-checks the target (`send`): the URL, and the addresses its host resolves
//! to, which are the only ones the request may connect to. No redirects, short timeouts,
//! bounded reads.

mod send;
mod sign;

use std::sync::Arc;
use std::time::Duration;

use crate::api::WebhookTargets;
use crate::jobs::{now_ms, JobService, WebhookDue, WebhookOutcome};

pub use send::{Attempt, Sender};
pub use sign::Secret;

/// How this process sends webhooks.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub secret: Secret,
    pub targets: WebhookTargets,
    /// Waits before the second, third, ... attempt; after the last, the webhook is given up.
    pub retry_after: Vec<Duration>,
    /// One attempt's limit: connect, send, answer.
    pub timeout: Duration,
}

/// How often the store is asked for due webhooks.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Attempts under way at once (per process).
const CONCURRENCY: usize = 8;

/// Starts sending due webhooks in the background, for as long as the runtime runs.
pub fn spawn(jobs: JobService, settings: WebhookSettings) -> anyhow::Result<()> {
    let sender = Arc::new(Sender::new(&settings)?);
    // Long enough for an attempt to end before another process may take the webhook over.
    let lease = settings.timeout * 2 + Duration::from_secs(5);
    let retry_after = Arc::new(settings.retry_after);
    // Each attempt runs in a task of its own, so a slow receiver holds up only its slot (and a
    // panic ends only its attempt); no more are claimed than there are free slots, so none
    // waits past its lease.
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let free = slots.available_permits();
            if free == 0 {
                continue;
            }
            let due = match jobs.claim_webhooks(lease, free as u32).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "could not read due webhooks");
                    continue;
                }
            };
            for due in due {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let (jobs, sender, retry_after) = (jobs.clone(), sender.clone(), retry_after.clone());
                tokio::spawn(async move {
                    deliver(&jobs, &sender, &retry_after, due).await;
                    drop(slot);
                });
            }
        }
    });
    Ok(())
}

/// One attempt, and what the store should do next.
async fn deliver(jobs: &JobService, sender: &Sender, retry_after: &[Duration], due: WebhookDue) {
    let id = due.job.id;
    let attempt = sender.send(&due.job).await;
    let outcome = next_step(&attempt, due.attempt, retry_after, now_ms());
    let label = match outcome {
        WebhookOutcome::Delivered => "delivered",
        WebhookOutcome::RetryAt(_) => "retry",
        WebhookOutcome::GaveUp => "gave_up",
    };
    metrics::counter!("easel_webhook_attempts_total", "outcome" => label).increment(1);
    match (&attempt, outcome) {
        (Attempt::Delivered(_), _) => tracing::info!(job = %id, attempt = due.attempt, "webhook delivered"),
        (failure, WebhookOutcome::GaveUp) => {
            tracing::warn!(job = %id, attempt = due.attempt, why = %failure, "webhook given up")
        }
        (failure, _) => tracing::info!(job = %id, attempt = due.attempt, why = %failure, "webhook not delivered; will retry"),
    }
    if let Err(e) = jobs.webhook_attempted(id, outcome).await {
        // The lease runs out and the webhook is sent again: at least once.
        tracing::error!(job = %id, error = format!("{e:#}"), "could not record a webhook attempt");
    }
}

/// After attempt number `attempt` (1 first): done, again later, or given up. A receiver that
/// answers 410 Gone, or a target the guard refuses, is not tried again.
fn next_step(result: &Attempt, attempt: u32, retry_after: &[Duration], now_ms: i64) -> WebhookOutcome {
    match result {
        Attempt::Delivered(_) => WebhookOutcome::Delivered,
        Attempt::Gone | Attempt::Refused(_) => WebhookOutcome::GaveUp,
        Attempt::Failed(_) => match retry_after.get(attempt.saturating_sub(1) as usize) {
            Some(wait) => WebhookOutcome::RetryAt(now_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))),
            None => WebhookOutcome::GaveUp,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_schedule_then_give_up() {
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        let failed = Attempt::Failed("HTTP 500".into());
        assert_eq!(next_step(&failed, 1, &schedule, 1_000), WebhookOutcome::RetryAt(6_000));
        assert_eq!(next_step(&failed, 2, &schedule, 1_000), WebhookOutcome::RetryAt(301_000));
        assert_eq!(next_step(&failed, 3, &schedule, 1_000), WebhookOutcome::GaveUp);
        assert_eq!(next_step(&Attempt::Delivered(204), 3, &schedule, 0), WebhookOutcome::Delivered);
        assert_eq!(next_step(&Attempt::Gone, 1, &schedule, 0), WebhookOutcome::GaveUp);
        assert_eq!(next_step(&Attempt::Refused("private".into()), 1, &schedule, 0), WebhookOutcome::GaveUp);
    }
}
