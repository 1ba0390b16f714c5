//! Jobs: the queue between the web and the engine. A job is stored (`store`: `sqlite` embedded,
//! or `redis` shared by many processes), claimed by the worker thread that owns the loaded model
//! (`worker`), and read back by status requests and event streams (`service`). The job record
//! and its state machine (`job`) are pure.
//!
//! Jobs speak `api`'s wire types (ResolvedParams, JobView, ErrorKind) rather than copies of
//! them, so that a kind is the same string in the database, JSON, server functions and SSE.

mod engine_painter;
mod hot;
mod job;
mod redis;
mod service;
mod sqlite;
mod store;
mod worker;

pub use engine_painter::{offered_models, EnginePainter};
pub use job::{Job, Outcome, Status, MAX_ATTEMPTS};
pub use service::{now_ms, Client, JobService, QueueLimits};
pub use redis::{RedisSettings, RedisStore};
pub use sqlite::SqliteStore;
pub use store::{EnqueueLimits, Enqueued, Idempotency, JobCounts, JobStore, QueueAhead, Recovery, Sharing, WebhookDue, WebhookOutcome};
pub use worker::{OnStep, PaintError, Painter, Worker, WorkerHandle};
