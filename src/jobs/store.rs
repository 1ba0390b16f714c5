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
