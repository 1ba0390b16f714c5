//! The job-store seam: what the web side and the worker need from wherever jobs live. SQLite
//! with a local image directory (one process) and Redis (many web processes, separate GPU
//! workers) fill it, and both pass the same contract below.
//!
//! Both serve the queue round-robin across clients ("fair share"): a job's place is its client's
//! round, then its arrival. A client's next job joins the round after its previous one, but
//! never a round already served, so one busy client cannot starve the others.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Job, Outcome};

/// The answer to an enqueue: the checks and the insert happen atomically.
#[derive(Clone, Debug, PartialEq)]
pub enum Enqueued {
    Accepted,
    /// The client's idempotency key already names this job (same body, within its time).
    Existing(Uuid),
    /// The client's idempotency key names a job made from another body.
    IdempotencyMismatch,
    /// The queue holds its maximum of waiting jobs.
    QueueFull,
    /// The client already has its maximum of active (queued or processing) jobs.
    Busy,
}

/// The checks an enqueue makes, atomically with the insert.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EnqueueLimits {
    /// Waiting jobs at most (all clients).
    pub max_queued: u32,
    /// Active (queued or running) jobs per client address: a ceiling for everyone behind it.
    pub per_client: u32,
    /// Active jobs per visitor (browser cookie), under the client's ceiling.
    pub per_visitor: u32,
}

/// An `Idempotency-Key` with the request it came with: per client, kept for `ttl_ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct Idempotency {
    pub key: String,
    /// The request as parsed (canonical JSON): a replay must match it.
    pub body: String,
    pub ttl_ms: i64,
}

/// Where a queued job stands: jobs ahead of it, and steps still to run before it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QueueAhead {
    pub position: u32,
    pub steps_ahead: u64,
}

/// Jobs by status, for metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobCounts {
    pub queued: u64,
    pub processing: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// What start-up recovery did with the jobs a dead process left processing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovery {
    pub requeued: u64,
    pub failed: u64,
    /// Cancelled while the dead process ran them: they stay cancelled.
    pub cancelled: u64,
}

/// A webhook whose time has come: the ended job it announces, and which attempt this is (1 first).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookDue {
    pub job: Job,
    pub attempt: u32,
}

/// What became of a webhook attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WebhookOutcome {
    Delivered,
    /// Not delivered; try again at this time (ms since the epoch).
    RetryAt(i64),
    /// Not delivered, and no attempts are left (or the receiver said 410 Gone).
    GaveUp,
}

/// How a store shared by several processes behaves (Redis). A store only one process uses
/// (SQLite) has none of this.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sharing {
    /// How often a worker looks for jobs whose worker went silent (`recover_interrupted`).
    pub reclaim_every: Duration,
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Adds a queued job unless the queue is full or the client has too many active jobs.
    async fn enqueue(&self, job: &Job, max_queued: u32, max_active_per_client: u32) -> anyhow::Result<Enqueued> {
        let limits = EnqueueLimits { max_queued, per_client: max_active_per_client, per_visitor: max_active_per_client };
        self.enqueue_with(job, &limits, None).await
    }

    /// `enqueue`, but first: a key the client used before answers its job (or a mismatch).
    async fn enqueue_with(&self, job: &Job, limits: &EnqueueLimits, idempotency: Option<&Idempotency>) -> anyhow::Result<Enqueued>;
    async fn get(&self, id: Uuid) -> anyhow::Result<Option<Job>>;
    async fn queue_ahead(&self, job: &Job) -> anyhow::Result<QueueAhead>;
    /// Takes the next queued job for one of `models` (round-robin across clients) and marks it
    /// processing, counting an attempt. A shared store may wait a moment for one to arrive.
    async fn claim_next(&self, now_ms: i64, models: &[String]) -> anyhow::Result<Option<Job>>;
    /// Records progress; answers whether a cancel was requested meanwhile (from any instance).
    async fn set_step(&self, id: Uuid, step: u32) -> anyhow::Result<bool>;
    /// Ends a processing job (or puts it back in line with `Outcome::Requeue`).
    async fn finish(&self, id: Uuid, outcome: &Outcome, now_ms: i64) -> anyhow::Result<()>;
    /// Cancels a queued job at once; marks a processing one for its worker to stop.
    /// `None` when no such job exists.
    async fn request_cancel(&self, id: Uuid, now_ms: i64) -> anyhow::Result<Option<Job>>;
    /// Jobs left processing by a dead worker run once more or end `interrupted`. SQLite: every
    /// processing job at start-up. Redis: those whose worker is silent past the heartbeat.
    async fn recover_interrupted(&self, now_ms: i64) -> anyhow::Result<Recovery>;
    async fn recent_for_visitor(&self, visitor: &str, limit: u32) -> anyhow::Result<Vec<Job>>;
    /// Up to `limit` webhooks of ended jobs that are due at `now_ms`. Each is leased until
    /// `now_ms + lease_ms` (no other sender takes it meanwhile) and its attempt is counted, in
    /// the store: a process that dies while sending leaves it due again when the lease ends.
    async fn claim_webhooks(&self, now_ms: i64, lease_ms: i64, limit: u32) -> anyhow::Result<Vec<WebhookDue>>;
    /// Records how a claimed webhook's attempt went.
    async fn webhook_attempted(&self, id: Uuid, outcome: WebhookOutcome) -> anyhow::Result<()>;
    async fn counts(&self) -> anyhow::Result<JobCounts>;

    async fn put_image(&self, id: Uuid, png: Vec<u8>) -> anyhow::Result<()>;
    async fn image(&self, id: Uuid) -> anyhow::Result<Option<Vec<u8>>>;
    async fn put_preview(&self, id: Uuid, step: u32, png: Vec<u8>) -> anyhow::Result<()>;
    async fn preview(&self, id: Uuid) -> anyhow::Result<Option<Vec<u8>>>;

    /// Whether the store answers (readiness).
    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Retention: deletes the jobs (rows and images) that ended before `cutoff_ms`, keeping
    /// their ids a while so that they answer `expired`. Answers how many went. A store whose
    /// records expire by themselves (Redis) does nothing here.
    async fn purge_finished(&self, _cutoff_ms: i64) -> anyhow::Result<u64> {
        Ok(0)
    }

    /// Whether a job with this id existed and was deleted by retention.
    async fn expired(&self, _id: Uuid) -> anyhow::Result<bool> {
        Ok(false)
    }

    /// Free bytes on the disk that holds the store's data; `None`: not on this machine.
    fn free_disk_bytes(&self) -> Option<u64> {
        None
    }

    /// `Some` when several processes share this store.
    fn sharing(&self) -> Option<Sharing> {
        None
    }

    /// A shared store announces every job change to every process: it forwards them into
    /// `changes` (in the background) and answers true. False: this process sees all changes.
    fn follow_changes(&self, _changes: broadcast::Sender<Uuid>) -> bool {
        false
    }

    /// Shares the workers' measured time per step, for ETAs on processes without a worker.
    async fn share_step_ms(&self, _ms: f64) -> anyhow::Result<()> {
        Ok(())
    }

    async fn shared_step_ms(&self) -> anyhow::Result<Option<f64>> {
        Ok(None)
    }
}

/// Checks any `JobStore` against the behaviour the service and worker rely on. The SQLite
/// store runs it; a Redis store must pass it too.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;
    use crate::api::{ErrorKind, ResolvedParams};
    use crate::jobs::{Status, MAX_ATTEMPTS};

    fn tiny() -> Vec<String> {
        vec!["tiny".into()]
    }

    fn job(client: &str, steps: u32) -> Job {
        job_for(client, steps, "tiny")
    }

    fn job_for(client: &str, steps: u32, model: &str) -> Job {
        let params = ResolvedParams { model: model.into(), ..ResolvedParams::tiny_for_tests("a fox", steps) };
        Job::new(params, client.into(), Some(format!("visitor-{client}")), 1_000)
    }

    pub async fn check(store: &dyn JobStore) {
        // Enqueue: busy per client, full queue, FIFO positions.
        let a = job("a", 10);
        assert_eq!(store.enqueue(&a, 2, 1).await.unwrap(), Enqueued::Accepted);
        assert_eq!(store.enqueue(&job("a", 4), 2, 1).await.unwrap(), Enqueued::Busy);
        let b = job("b", 4);
        assert_eq!(store.enqueue(&b, 2, 1).await.unwrap(), Enqueued::Accepted);
        assert_eq!(store.enqueue(&job("c", 4), 2, 1).await.unwrap(), Enqueued::QueueFull);
        assert_eq!(store.get(a.id).await.unwrap().unwrap(), a);
        assert!(store.get(uuid::Uuid::new_v4()).await.unwrap().is_none());
        assert_eq!(store.queue_ahead(&b).await.unwrap(), QueueAhead { position: 1, steps_ahead: 10 });

        // Claim in order; progress; the queue moves.
        let claimed = store.claim_next(2_000, &tiny()).await.unwrap().unwrap();
        assert_eq!((claimed.id, claimed.status, claimed.attempts), (a.id, Status::Processing, 1));
        assert!(!store.set_step(a.id, 3).await.unwrap());
        assert_eq!(store.queue_ahead(&b).await.unwrap(), QueueAhead { position: 0, steps_ahead: 7 });
        store.put_preview(a.id, 3, vec![1, 2, 3]).await.unwrap();
        assert_eq!(store.get(a.id).await.unwrap().unwrap().preview_step, Some(3));
        assert_eq!(store.preview(a.id).await.unwrap(), Some(vec![1, 2, 3]));

        // Cancel: a processing job is flagged for its worker, a queued one ends at once.
        let flagged = store.request_cancel(a.id, 2_500).await.unwrap().unwrap();
        assert_eq!((flagged.status, flagged.cancel_requested), (Status::Processing, true));
        assert!(store.set_step(a.id, 4).await.unwrap(), "the worker learns of the cancel");
        store.finish(a.id, &Outcome::Cancelled, 3_000).await.unwrap();
        assert_eq!(store.get(a.id).await.unwrap().unwrap().status, Status::Cancelled);
        assert_eq!(store.preview(a.id).await.unwrap(), None, "previews go when a job ends");
        let d = job("d", 4);
        assert_eq!(store.enqueue(&d, 5, 1).await.unwrap(), Enqueued::Accepted);
        assert_eq!(store.request_cancel(d.id, 3_100).await.unwrap().unwrap().status, Status::Cancelled);
        assert!(store.request_cancel(uuid::Uuid::new_v4(), 0).await.unwrap().is_none());

        // Completion with an image; a terminal job does not change again.
        let b_claimed = store.claim_next(4_000, &tiny()).await.unwrap().unwrap();
        assert_eq!(b_claimed.id, b.id);
        store.put_image(b.id, vec![9; 10]).await.unwrap();
        store.finish(b.id, &Outcome::Completed { inference_ms: 500 }, 5_000).await.unwrap();
        store.finish(b.id, &Outcome::Cancelled, 6_000).await.unwrap();
        let done = store.get(b.id).await.unwrap().unwrap();
        assert_eq!((done.status, done.step, done.inference_ms, done.finished_at_ms), (Status::Completed, 4, Some(500), Some(5_000)));
        assert_eq!(store.image(b.id).await.unwrap(), Some(vec![9; 10]));
        assert_eq!(store.image(a.id).await.unwrap(), None);

        // Failure keeps its kind and message.
        let e = job("e", 4);
        store.enqueue(&e, 5, 1).await.unwrap();
        store.claim_next(7_000, &tiny()).await.unwrap().unwrap();
        store.finish(e.id, &Outcome::failed(ErrorKind::Timeout, "too slow"), 8_000).await.unwrap();
        let failed = store.get(e.id).await.unwrap().unwrap();
        assert_eq!(failed.status, Status::Failed);
        assert_eq!(failed.failure.unwrap().kind, ErrorKind::Timeout);

        // Requeue (graceful shutdown) does not count the attempt and keeps the job's place.
        let f = job("f", 4);
        let g = job("g", 4);
        store.enqueue(&f, 5, 1).await.unwrap();
        store.enqueue(&g, 5, 1).await.unwrap();
        store.claim_next(9_000, &tiny()).await.unwrap().unwrap();
        store.finish(f.id, &Outcome::Requeue, 9_500).await.unwrap();
        let requeued = store.get(f.id).await.unwrap().unwrap();
        assert_eq!((requeued.status, requeued.attempts), (Status::Queued, 0));
        assert_eq!(store.claim_next(10_000, &tiny()).await.unwrap().unwrap().id, f.id, "back at the front");

        // Recovery after a crash: once more, then interrupted.
        assert_eq!(store.recover_interrupted(11_000).await.unwrap(), Recovery { requeued: 1, failed: 0, cancelled: 0 });
        assert_eq!(store.get(f.id).await.unwrap().unwrap().status, Status::Queued);
        for _ in 1..MAX_ATTEMPTS {
            assert_eq!(store.claim_next(12_000, &tiny()).await.unwrap().unwrap().id, f.id);
        }
        assert_eq!(store.recover_interrupted(13_000).await.unwrap(), Recovery { requeued: 0, failed: 1, cancelled: 0 });
        let gave_up = store.get(f.id).await.unwrap().unwrap();
        assert_eq!(gave_up.failure.unwrap().kind, ErrorKind::Interrupted);

        // A cancel is never undone: not by a graceful requeue, not by crash recovery.
        let h = job("h", 4);
        let k = job("k", 4);
        store.enqueue(&h, 5, 1).await.unwrap();
        store.enqueue(&k, 5, 1).await.unwrap();
        assert_eq!(store.claim_next(14_000, &tiny()).await.unwrap().unwrap().id, g.id);
        store.finish(g.id, &Outcome::Cancelled, 14_100).await.unwrap();
        store.claim_next(14_200, &tiny()).await.unwrap().unwrap();
        store.request_cancel(h.id, 14_300).await.unwrap();
        store.finish(h.id, &Outcome::Requeue, 14_400).await.unwrap();
        assert_eq!(store.get(h.id).await.unwrap().unwrap().status, Status::Cancelled);
        store.claim_next(14_500, &tiny()).await.unwrap().unwrap();
        store.request_cancel(k.id, 14_600).await.unwrap();
        assert_eq!(store.recover_interrupted(15_000).await.unwrap(), Recovery { requeued: 0, failed: 0, cancelled: 1 });
        assert_eq!(store.get(k.id).await.unwrap().unwrap().status, Status::Cancelled);

        // History per visitor, newest first; counts by status.
        let history = store.recent_for_visitor("visitor-a", 10).await.unwrap();
        assert_eq!(history.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a.id]);
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.queued, counts.processing, counts.completed, counts.failed, counts.cancelled), (0, 0, 1, 2, 5));

        fair_share(store).await;
        idempotency(store).await;
        visitors_behind_one_address(store).await;
        webhooks(store).await;
    }

    /// Ended jobs with a webhook come due; a claim leases them; retries wait for their time;
    /// delivered and given-up ones are done.
    async fn webhooks(store: &dyn JobStore) {
        let hooked = |client: &str| Job { webhook: Some(format!("https://hooks.example/{client}")), ..job(client, 2) };
        let (done, cancelled, plain) = (hooked("wh1"), hooked("wh2"), job("wh3", 2));
        for j in [&done, &cancelled, &plain] {
            assert_eq!(store.enqueue(j, 20, 5).await.unwrap(), Enqueued::Accepted);
        }
        let now = 40_000;
        assert!(store.claim_webhooks(now, 1_000, 10).await.unwrap().is_empty(), "nothing before a job ends");
        assert_eq!(store.get(done.id).await.unwrap().unwrap().webhook, done.webhook);
        assert_eq!(store.claim_next(now, &tiny()).await.unwrap().unwrap().id, done.id);
        store.finish(done.id, &Outcome::Completed { inference_ms: 3 }, now + 10).await.unwrap();
        store.request_cancel(cancelled.id, now + 20).await.unwrap();
        store.request_cancel(plain.id, now + 30).await.unwrap();

        let mut due = store.claim_webhooks(now + 100, 1_000, 10).await.unwrap();
        due.sort_by_key(|d| d.job.client.clone());
        let seen: Vec<_> = due.iter().map(|d| (d.job.id, d.job.status, d.attempt)).collect();
        assert_eq!(seen, vec![(done.id, Status::Completed, 1), (cancelled.id, Status::Cancelled, 1)]);
        assert!(store.claim_webhooks(now + 200, 1_000, 10).await.unwrap().is_empty(), "leased to the first sender");

        // The first attempt failed: it is due again at its time, not before.
        store.webhook_attempted(done.id, WebhookOutcome::RetryAt(now + 5_000)).await.unwrap();
        store.webhook_attempted(cancelled.id, WebhookOutcome::Delivered).await.unwrap();
        assert!(store.claim_webhooks(now + 4_999, 1_000, 10).await.unwrap().is_empty());
        let again = store.claim_webhooks(now + 5_000, 1_000, 10).await.unwrap();
        assert_eq!(again.iter().map(|d| (d.job.id, d.attempt)).collect::<Vec<_>>(), vec![(done.id, 2)]);
        // A sender that died mid-attempt: the lease ends and the webhook is due once more.
        let after_lease = store.claim_webhooks(now + 6_000, 1_000, 10).await.unwrap();
        assert_eq!(after_lease.iter().map(|d| (d.job.id, d.attempt)).collect::<Vec<_>>(), vec![(done.id, 3)]);
        store.webhook_attempted(done.id, WebhookOutcome::GaveUp).await.unwrap();
        assert!(store.claim_webhooks(now + 1_000_000, 1_000, 10).await.unwrap().is_empty(), "all done");
    }

    fn limits(max_queued: u32, per_client: u32) -> EnqueueLimits {
        EnqueueLimits { max_queued, per_client, per_visitor: per_client }
    }

    /// Behind one address (a NAT), each visitor has its own active job, up to the address's ceiling.
    async fn visitors_behind_one_address(store: &dyn JobStore) {
        let nat = EnqueueLimits { max_queued: 20, per_client: 3, per_visitor: 1 };
        let as_visitor = |v: &str| Job { visitor: Some(v.into()), ..job("nat", 2) };
        let a = as_visitor("va");
        assert_eq!(store.enqueue_with(&a, &nat, None).await.unwrap(), Enqueued::Accepted);
        assert_eq!(store.enqueue_with(&as_visitor("va"), &nat, None).await.unwrap(), Enqueued::Busy, "one active job per visitor");
        let (b, c) = (as_visitor("vb"), as_visitor("vc"));
        assert_eq!(store.enqueue_with(&b, &nat, None).await.unwrap(), Enqueued::Accepted);
        assert_eq!(store.enqueue_with(&c, &nat, None).await.unwrap(), Enqueued::Accepted);
        assert_eq!(store.enqueue_with(&as_visitor("vd"), &nat, None).await.unwrap(), Enqueued::Busy, "the address's ceiling");
        store.request_cancel(a.id, 31_000).await.unwrap();
        let again = as_visitor("va");
        assert_eq!(store.enqueue_with(&again, &nat, None).await.unwrap(), Enqueued::Accepted, "a visitor's slot frees when its job ends");
        for j in [&again, &b, &c] {
            store.request_cancel(j.id, 31_100).await.unwrap();
        }
    }

    /// A client's key names its first job; another body is a mismatch; keys are per client and expire.
    async fn idempotency(store: &dyn JobStore) {
        let key = |body: &str, ttl_ms| Idempotency { key: "k-1".into(), body: body.into(), ttl_ms };
        let first = job("p", 2);
        assert_eq!(store.enqueue_with(&first, &limits(20, 5), Some(&key("A", 60_000))).await.unwrap(), Enqueued::Accepted);
        let again = job("p", 2);
        assert_eq!(store.enqueue_with(&again, &limits(20, 5), Some(&key("A", 60_000))).await.unwrap(), Enqueued::Existing(first.id));
        assert!(store.get(again.id).await.unwrap().is_none(), "a replay stores nothing");
        assert_eq!(store.enqueue_with(&job("p", 2), &limits(20, 5), Some(&key("B", 60_000))).await.unwrap(), Enqueued::IdempotencyMismatch);
        // Another client's key of the same name is its own.
        let other = job("q", 2);
        assert_eq!(store.enqueue_with(&other, &limits(20, 5), Some(&key("B", 60_000))).await.unwrap(), Enqueued::Accepted);
        // A refused request keeps no key: the same key works once the client may submit.
        assert_eq!(store.enqueue_with(&job("q", 2), &limits(20, 1), Some(&Idempotency { key: "k-2".into(), ..key("C", 60_000) })).await.unwrap(), Enqueued::Busy);
        for j in [&first, &other] {
            store.request_cancel(j.id, 30_000).await.unwrap();
        }
        let later = job("q", 2);
        assert_eq!(store.enqueue_with(&later, &limits(20, 1), Some(&Idempotency { key: "k-2".into(), ..key("C", 60_000) })).await.unwrap(), Enqueued::Accepted);
        store.request_cancel(later.id, 30_100).await.unwrap();
        // An expired key names nothing.
        let short = Idempotency { key: "k-3".into(), ..key("D", 1) };
        let once = job("r", 2);
        assert_eq!(store.enqueue_with(&once, &limits(20, 5), Some(&short)).await.unwrap(), Enqueued::Accepted);
        store.request_cancel(once.id, 30_200).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let twice = job("r", 2);
        assert_eq!(store.enqueue_with(&twice, &limits(20, 5), Some(&short)).await.unwrap(), Enqueued::Accepted);
        store.request_cancel(twice.id, 30_300).await.unwrap();
    }

    /// Round-robin across clients, positions that say so, and workers that take only their models.
    async fn fair_share(store: &dyn JobStore) {
        let x: Vec<Job> = (0..3).map(|_| job("x", 5)).collect();
        for j in &x {
            assert_eq!(store.enqueue(j, 20, 5).await.unwrap(), Enqueued::Accepted);
        }
        let y = job("y", 7);
        store.enqueue(&y, 20, 5).await.unwrap();
        // y arrived last but is served in the first round, right after x's first job.
        assert_eq!(store.queue_ahead(&y).await.unwrap(), QueueAhead { position: 1, steps_ahead: 5 });
        assert_eq!(store.queue_ahead(&x[2]).await.unwrap(), QueueAhead { position: 3, steps_ahead: 17 });
        let xl = job_for("z", 3, "tiny-xl");
        store.enqueue(&xl, 20, 5).await.unwrap();
        assert!(store.claim_next(20_000, &["other".into()]).await.unwrap().is_none(), "nobody else's models");
        let mut order = Vec::new();
        while let Some(claimed) = store.claim_next(21_000, &tiny()).await.unwrap() {
            order.push(claimed.id);
            store.finish(claimed.id, &Outcome::Completed { inference_ms: 1 }, 21_500).await.unwrap();
        }
        assert_eq!(order, vec![x[0].id, y.id, x[1].id, x[2].id]);
        // A client that comes back joins the current round, not the rounds it missed.
        let w = job("w", 5);
        let y_again = job("y", 5);
        store.enqueue(&w, 20, 5).await.unwrap();
        store.enqueue(&y_again, 20, 5).await.unwrap();
        assert_eq!(store.claim_next(22_000, &["tiny-xl".into()]).await.unwrap().unwrap().id, xl.id);
        store.finish(xl.id, &Outcome::Completed { inference_ms: 1 }, 22_100).await.unwrap();
        assert_eq!(store.queue_ahead(&y_again).await.unwrap(), QueueAhead { position: 1, steps_ahead: 5 });
        assert_eq!(store.claim_next(22_200, &tiny()).await.unwrap().unwrap().id, w.id);
        store.finish(w.id, &Outcome::Completed { inference_ms: 1 }, 22_300).await.unwrap();
        assert_eq!(store.claim_next(22_400, &tiny()).await.unwrap().unwrap().id, y_again.id);
        store.finish(y_again.id, &Outcome::Completed { inference_ms: 1 }, 22_500).await.unwrap();

        // A worker offering several models takes each one's jobs, none left waiting.
        let both: Vec<String> = vec!["tiny".into(), "tiny-xl".into()];
        let (m, n) = (job_for("m", 2, "tiny"), job_for("n", 2, "tiny-xl"));
        store.enqueue(&m, 20, 5).await.unwrap();
        store.enqueue(&n, 20, 5).await.unwrap();
        let mut taken = Vec::new();
        for now in [23_000, 23_100] {
            let claimed = store.claim_next(now, &both).await.unwrap().expect("a job for one of the two models");
            store.finish(claimed.id, &Outcome::Completed { inference_ms: 1 }, now + 50).await.unwrap();
            taken.push(claimed.id);
        }
        taken.sort();
        let mut expected = vec![m.id, n.id];
        expected.sort();
        assert_eq!(taken, expected);
        assert_eq!(store.counts().await.unwrap().queued, 0);
    }
}
