//! A job record and its state machine. Pure: no I/O, no clocks (times are passed in).

use uuid::Uuid;

use crate::api::{
    image_url, preview_url, ErrorKind, JobFailure, JobState, JobView, ResolvedParams, Timings,
};

/// A job that is interrupted this many times (the server died under it) is given up.
pub const MAX_ATTEMPTS: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Queued,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] =
        [Self::Queued, Self::Processing, Self::Completed, Self::Failed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The transitions a job may take. Stores enforce them in their updates.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Queued, Processing)
                | (Queued, Cancelled)
                | (Processing, Completed)
                | (Processing, Failed)
                | (Processing, Cancelled)
                // Interrupted by a restart or a graceful shutdown: back in line.
                | (Processing, Queued)
        )
    }
}

/// How a processing job ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed { inference_ms: u64 },
    Failed(JobFailure),
    Cancelled,
    /// Put back in line at its old place (graceful shutdown); the attempt does not count.
    Requeue,
}

impl Outcome {
    pub fn status(&self) -> Status {
        match self {
            Self::Completed { .. } => Status::Completed,
            Self::Failed(_) => Status::Failed,
            Self::Cancelled => Status::Cancelled,
            Self::Requeue => Status::Queued,
        }
    }

    pub fn failed(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Failed(JobFailure { kind, message: message.into() })
    }

    /// What becomes of a job found processing when the server starts: the previous process
    /// died under it. It runs once more; a second death gives up.
    pub fn after_interruption(attempts: u32) -> Self {
        if attempts >= MAX_ATTEMPTS {
            Self::failed(
                ErrorKind::Interrupted,
                format!("The server stopped {attempts} times while painting this image; giving up."),
            )
        } else {
            Self::Requeue
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub params: ResolvedParams,
    /// The fairness key: the client's IP address.
    pub client: String,
    /// The browser's visitor cookie, for its history (and its cancels).
    pub visitor: Option<String>,
    /// The submitter's proof of ownership for a cancel without the cookie (API clients).
    pub cancel_token: Option<String>,
    /// Where the job's end is announced (checked at submit), if anywhere.
    pub webhook: Option<String>,
    pub status: Status,
    pub step: u32,
    pub preview_step: Option<u32>,
    pub attempts: u32,
    pub cancel_requested: bool,
    pub failure: Option<JobFailure>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub inference_ms: Option<u64>,
}

impl Job {
    pub fn new(params: ResolvedParams, client: String, visitor: Option<String>, now_ms: i64) -> Self {
        Self {
            id: Uuid::new_v4(),
            params,
            client,
            visitor,
            cancel_token: Some(Uuid::new_v4().simple().to_string()),
            webhook: None,
            status: Status::Queued,
            step: 0,
            preview_step: None,
            attempts: 0,
            cancel_requested: false,
            failure: None,
            created_at_ms: now_ms,
            started_at_ms: None,
            finished_at_ms: None,
            inference_ms: None,
        }
    }

    /// The job as clients see it. `queue` is where a queued job stands.
    /// Whether this visitor or token may cancel the job: its submitter's cookie or token.
    pub fn may_cancel(&self, visitor: Option<&str>, token: Option<&str>) -> bool {
        let same = |mine: &Option<String>, theirs: Option<&str>| mine.as_deref().zip(theirs).is_some_and(|(a, b)| a == b);
        same(&self.visitor, visitor) || same(&self.cancel_token, token)
    }

    pub fn view(&self, queue: Option<(u32, Option<u64>)>) -> JobView {
        let id = self.id.to_string();
        let state = match self.status {
            Status::Queued => {
                let (position, eta_ms) = queue.unwrap_or((0, None));
                JobState::Queued { position, eta_ms }
            }
            Status::Processing => JobState::Processing {
                step: self.step,
                total: self.params.steps,
                preview_url: self.preview_step.map(|s| preview_url(&id, s)),
            },
            Status::Completed => {
                let finished = self.finished_at_ms.unwrap_or(self.created_at_ms);
                let started = self.started_at_ms.unwrap_or(self.created_at_ms);
                JobState::Completed {
                    image_url: image_url(&id),
                    width: self.params.width,
                    height: self.params.height,
                    seed: self.params.seed,
                    timings: Timings {
                        queued_ms: (started - self.created_at_ms).max(0) as u64,
                        inference_ms: self.inference_ms.unwrap_or(0),
                        total_ms: (finished - self.created_at_ms).max(0) as u64,
                    },
                }
            }
            Status::Failed => JobState::Failed {
                error: self.failure.clone().unwrap_or(JobFailure {
                    kind: ErrorKind::InferenceFailed,
                    message: "The job failed.".into(),
                }),
            },
            Status::Cancelled => JobState::Cancelled,
        };
        JobView { job_id: id, cancel_token: None, state, params: self.params.clone(), created_at_ms: self.created_at_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn params() -> ResolvedParams {
        ResolvedParams {
            prompt: "a fox".into(),
            negative_prompt: String::new(),
            width: 64,
            height: 96,
            steps: 4,
            guidance: 7.5,
            seed: 3,
            model: "tiny".into(),
        }
    }

    #[test]
    fn terminal_states_go_nowhere() {
        for from in Status::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in Status::ALL {
                assert!(!from.can_become(to), "{from:?} -> {to:?}");
            }
        }
        assert!(Status::Queued.can_become(Status::Processing));
        assert!(!Status::Queued.can_become(Status::Completed));
    }

    #[test]
    fn an_interrupted_job_runs_once_more_then_gives_up() {
        assert_eq!(Outcome::after_interruption(1), Outcome::Requeue);
        match Outcome::after_interruption(MAX_ATTEMPTS) {
            Outcome::Failed(f) => assert_eq!(f.kind, ErrorKind::Interrupted),
            other => panic!("expected interrupted, got {other:?}"),
        }
    }

    #[test]
    fn views_carry_urls_and_timings() {
        let mut job = Job::new(params(), "1.2.3.4".into(), None, 1_000);
        assert_eq!(job.view(Some((2, Some(900)))).state, JobState::Queued { position: 2, eta_ms: Some(900) });
        job.status = Status::Processing;
        job.step = 2;
        job.preview_step = Some(2);
        let JobState::Processing { step, total, preview_url } = job.view(None).state else { panic!() };
        assert_eq!((step, total), (2, 4));
        assert!(preview_url.unwrap().contains(&job.id.to_string()));
        job.status = Status::Completed;
        job.started_at_ms = Some(1_500);
        job.finished_at_ms = Some(4_000);
        job.inference_ms = Some(2_400);
        let JobState::Completed { image_url, width, height, timings, .. } = job.view(None).state else { panic!() };
        assert_eq!(image_url, format!("/api/images/{}.png", job.id));
        assert_eq!((width, height), (64, 96));
        assert_eq!(timings, Timings { queued_ms: 500, inference_ms: 2_400, total_ms: 3_000 });
    }

    #[test]
    fn only_the_submitter_may_cancel() {
        let job = Job::new(params(), "c".into(), Some("v1".into()), 5);
        let token = job.cancel_token.clone().unwrap();
        assert!(job.may_cancel(Some("v1"), None));
        assert!(job.may_cancel(Some("v2"), Some(&token)));
        assert!(!job.may_cancel(Some("v2"), None));
        assert!(!job.may_cancel(None, Some("wrong")));
        let anonymous = Job { visitor: None, cancel_token: None, ..job };
        assert!(!anonymous.may_cancel(None, None), "no cookie and no token matches nothing");
    }

    #[test]
    fn the_wire_form_is_flat_camel_case() {
        let job = Job::new(params(), "c".into(), None, 5);
        let json = serde_json::to_value(job.view(Some((0, None)))).unwrap();
        assert_eq!(json["status"], "queued");
        assert_eq!(json["position"], 0);
        assert_eq!(json["jobId"], job.id.to_string());
        assert_eq!(json["params"]["negativePrompt"], "");
    }
}
