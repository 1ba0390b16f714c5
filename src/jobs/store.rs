//! The job-store seam: what the web side and the worker need from wherever jobs live. SQLite
//! with a local image directory fills it today; a Redis store (many web instances, separate GPU
//! workers) fills the same trait later and must pass the same tests.

use async_trait::async_trait;
use uuid::Uuid;

use super::{Job, Outcome};

/// The answer to an enqueue: the checks and the insert happen atomically.
#[derive(Clone, Debug, PartialEq)]
pub enum Enqueued {
    Accepted,
    /// The queue holds its maximum of waiting jobs.
    QueueFull,
    /// The client already has its maximum of active (queued or processing) jobs.
    Busy,
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

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Adds a queued job unless the queue is full or the client has too many active jobs.
    async fn enqueue(&self, job: &Job, max_queued: u32, max_active_per_client: u32) -> anyhow::Result<Enqueued>;
    async fn get(&self, id: Uuid) -> anyhow::Result<Option<Job>>;
    async fn queue_ahead(&self, job: &Job) -> anyhow::Result<QueueAhead>;
    /// Takes the oldest queued job (FIFO) and marks it processing, counting an attempt.
    async fn claim_next(&self, now_ms: i64) -> anyhow::Result<Option<Job>>;
    /// Records progress; answers whether a cancel was requested meanwhile (from any instance).
    async fn set_step(&self, id: Uuid, step: u32) -> anyhow::Result<bool>;
    /// Ends a processing job (or puts it back in line with `Outcome::Requeue`).
    async fn finish(&self, id: Uuid, outcome: &Outcome, now_ms: i64) -> anyhow::Result<()>;
    /// Cancels a queued job at once; marks a processing one for its worker to stop.
    /// `None` when no such job exists.
    async fn request_cancel(&self, id: Uuid, now_ms: i64) -> anyhow::Result<Option<Job>>;
    /// Start-up: jobs left processing by a dead process run once more or end `interrupted`.
    async fn recover_interrupted(&self, now_ms: i64) -> anyhow::Result<Recovery>;
    async fn recent_for_visitor(&self, visitor: &str, limit: u32) -> anyhow::Result<Vec<Job>>;
    async fn counts(&self) -> anyhow::Result<JobCounts>;

    async fn put_image(&self, id: Uuid, png: Vec<u8>) -> anyhow::Result<()>;
    async fn image(&self, id: Uuid) -> anyhow::Result<Option<Vec<u8>>>;
    async fn put_preview(&self, id: Uuid, step: u32, png: Vec<u8>) -> anyhow::Result<()>;
    async fn preview(&self, id: Uuid) -> anyhow::Result<Option<Vec<u8>>>;
}

/// Checks any `JobStore` against the behaviour the service and worker rely on. The SQLite
/// store runs it; a Redis store must pass it too.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;
    use crate::api::{ErrorKind, ResolvedParams};
    use crate::jobs::{Status, MAX_ATTEMPTS};

    fn job(client: &str, steps: u32) -> Job {
        let params = ResolvedParams {
            prompt: "a fox".into(),
            negative_prompt: String::new(),
            width: 64,
            height: 64,
            steps,
            guidance: 7.5,
            seed: 1,
            model: "tiny".into(),
        };
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
        let claimed = store.claim_next(2_000).await.unwrap().unwrap();
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
        let b_claimed = store.claim_next(4_000).await.unwrap().unwrap();
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
        store.claim_next(7_000).await.unwrap().unwrap();
        store.finish(e.id, &Outcome::failed(ErrorKind::Timeout, "too slow"), 8_000).await.unwrap();
        let failed = store.get(e.id).await.unwrap().unwrap();
        assert_eq!(failed.status, Status::Failed);
        assert_eq!(failed.failure.unwrap().kind, ErrorKind::Timeout);

        // Requeue (graceful shutdown) does not count the attempt and keeps the job's place.
        let f = job("f", 4);
        let g = job("g", 4);
        store.enqueue(&f, 5, 1).await.unwrap();
        store.enqueue(&g, 5, 1).await.unwrap();
        store.claim_next(9_000).await.unwrap().unwrap();
        store.finish(f.id, &Outcome::Requeue, 9_500).await.unwrap();
        let requeued = store.get(f.id).await.unwrap().unwrap();
        assert_eq!((requeued.status, requeued.attempts), (Status::Queued, 0));
        assert_eq!(store.claim_next(10_000).await.unwrap().unwrap().id, f.id, "back at the front");

        // Recovery after a crash: once more, then interrupted.
        assert_eq!(store.recover_interrupted(11_000).await.unwrap(), Recovery { requeued: 1, failed: 0, cancelled: 0 });
        assert_eq!(store.get(f.id).await.unwrap().unwrap().status, Status::Queued);
        for _ in 1..MAX_ATTEMPTS {
            assert_eq!(store.claim_next(12_000).await.unwrap().unwrap().id, f.id);
        }
        assert_eq!(store.recover_interrupted(13_000).await.unwrap(), Recovery { requeued: 0, failed: 1, cancelled: 0 });
        let gave_up = store.get(f.id).await.unwrap().unwrap();
        assert_eq!(gave_up.failure.unwrap().kind, ErrorKind::Interrupted);

        // A cancel is never undone: not by a graceful requeue, not by crash recovery.
        let h = job("h", 4);
        let k = job("k", 4);
        store.enqueue(&h, 5, 1).await.unwrap();
        store.enqueue(&k, 5, 1).await.unwrap();
        assert_eq!(store.claim_next(14_000).await.unwrap().unwrap().id, g.id);
        store.finish(g.id, &Outcome::Cancelled, 14_100).await.unwrap();
        store.claim_next(14_200).await.unwrap().unwrap();
        store.request_cancel(h.id, 14_300).await.unwrap();
        store.finish(h.id, &Outcome::Requeue, 14_400).await.unwrap();
        assert_eq!(store.get(h.id).await.unwrap().unwrap().status, Status::Cancelled);
        store.claim_next(14_500).await.unwrap().unwrap();
        store.request_cancel(k.id, 14_600).await.unwrap();
        assert_eq!(store.recover_interrupted(15_000).await.unwrap(), Recovery { requeued: 0, failed: 0, cancelled: 1 });
        assert_eq!(store.get(k.id).await.unwrap().unwrap().status, Status::Cancelled);

        // History per visitor, newest first; counts by status.
        let history = store.recent_for_visitor("visitor-a", 10).await.unwrap();
        assert_eq!(history.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a.id]);
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.queued, counts.processing, counts.completed, counts.failed, counts.cancelled), (0, 0, 1, 2, 5));
    }
}
