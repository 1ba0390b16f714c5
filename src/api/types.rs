//! Wire types shared by the browser, the server functions and the JSON API (camelCase JSON).

use serde::{Deserialize, Deserializer, Serialize};

use super::ErrorKind;

/// What a visitor or script asks for. Everything but the prompt is optional and falls back to
/// the model's defaults; the seed is chosen when missing.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateParams {
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    #[serde(default, deserialize_with = "blank_as_none")]
    pub width: Option<u32>,
    #[serde(default, deserialize_with = "blank_as_none")]
    pub height: Option<u32>,
    #[serde(default, deserialize_with = "blank_as_none")]
    pub steps: Option<u32>,
    #[serde(default, deserialize_with = "blank_as_none")]
    pub guidance: Option<f64>,
    #[serde(default, deserialize_with = "blank_as_none")]
    pub seed: Option<u32>,
    #[serde(default, deserialize_with = "blank_string_as_none")]
    pub model: Option<String>,
    /// Called when the job ends (completed, failed or cancelled), with the job's view, signed
    /// per Standard Webhooks. API only.
    #[serde(default, deserialize_with = "blank_string_as_none", skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// Numbers arrive as JSON numbers from scripts and as strings from HTML forms, where an empty
/// field means "use the default".
fn blank_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr + Deserialize<'de>,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText<T> {
        Number(T),
        Text(String),
    }
    match Option::<NumberOrText<T>>::deserialize(d)? {
        None => Ok(None),
        Some(NumberOrText::Number(n)) => Ok(Some(n)),
        Some(NumberOrText::Text(s)) if s.trim().is_empty() => Ok(None),
        Some(NumberOrText::Text(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a valid number: {e}"))),
    }
}

fn blank_string_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.trim().is_empty()))
}

/// The parameters a job really runs with, after validation and defaults.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub guidance: f64,
    pub seed: u32,
    pub model: String,
}

/// A model the server offers, with the limits a request must respect.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSummary {
    pub name: String,
    pub kind: String,
    pub default_width: u32,
    pub default_height: u32,
    pub min_size: u32,
    pub max_width: u32,
    pub max_height: u32,
    pub default_steps: u32,
    pub max_steps: u32,
    pub default_guidance: f64,
    pub min_guidance: f64,
    pub max_guidance: f64,
}

#[cfg(test)]
impl ModelSummary {
    /// Limits like the tiny model's, for tests that need a model but not the engine.
    pub(crate) fn tiny_for_tests() -> Self {
        ModelSummary {
            name: "tiny".into(),
            kind: "sd15".into(),
            default_width: 64,
            default_height: 64,
            min_size: 64,
            max_width: 256,
            max_height: 256,
            default_steps: 4,
            max_steps: 50,
            default_guidance: 7.5,
            min_guidance: 0.0,
            max_guidance: 20.0,
        }
    }
}

#[cfg(test)]
impl ResolvedParams {
    /// A small job for the tiny model, for store and worker tests.
    pub(crate) fn tiny_for_tests(prompt: &str, steps: u32) -> Self {
        ResolvedParams {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            width: 64,
            height: 64,
            steps,
            guidance: 7.5,
            seed: 1,
            model: "tiny".into(),
        }
    }
}

/// Where the time went, in milliseconds.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    pub queued_ms: u64,
    pub inference_ms: u64,
    pub total_ms: u64,
}

/// A job's failure as the client sees it.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobFailure {
    pub kind: ErrorKind,
    pub message: String,
}

/// The life of a job: queued -> processing -> completed | failed | cancelled.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum JobState {
    #[serde(rename_all = "camelCase")]
    Queued {
        /// 0 means next in line.
        position: u32,
        eta_ms: Option<u64>,
    },
    #[serde(rename_all = "camelCase")]
    Processing {
        step: u32,
        total: u32,
        preview_url: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Completed {
        image_url: String,
        width: u32,
        height: u32,
        seed: u32,
        timings: Timings,
    },
    #[serde(rename_all = "camelCase")]
    Failed {
        error: JobFailure,
    },
    Cancelled,
}

impl JobState {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed { .. } | Self::Failed { .. } | Self::Cancelled)
    }

    /// The SSE event name for this state.
    pub fn event_name(&self) -> &'static str {
        match self {
            Self::Queued { .. } => "queued",
            Self::Processing { .. } => "progress",
            Self::Completed { .. } => "completed",
            Self::Failed { .. } => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One job as every reader sees it: `{"jobId": .., "status": .., ..state fields, "params": ..}`.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub job_id: String,
    /// Only in the answer to the submit: lets the submitter cancel the job without its cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_token: Option<String>,
    #[serde(flatten)]
    pub state: JobState,
    pub params: ResolvedParams,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// The image URL of a job (also the download).
pub fn image_url(job_id: &str) -> String {
    format!("/api/images/{job_id}.png")
}

/// The live preview URL of a running job; `step` makes each preview a distinct URL.
pub fn preview_url(job_id: &str, step: u32) -> String {
    format!("/api/images/{job_id}/preview.png?step={step}")
}

/// Read through [`super::wire::job_view`], the decoder the browser uses too (serde's `flatten`
/// with an internally tagged enum would buffer every field first).
impl<'de> Deserialize<'de> for JobView {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        super::wire::job_view(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: JobState) -> JobView {
        JobView {
            job_id: "j1".into(),
            cancel_token: None,
            state,
            params: ResolvedParams::tiny_for_tests("a red circle", 4),
            created_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn job_views_read_back_as_written_in_every_state() {
        let states = [
            JobState::Queued { position: 2, eta_ms: Some(1500) },
            JobState::Queued { position: 0, eta_ms: None },
            JobState::Processing { step: 3, total: 20, preview_url: Some("/api/jobs/j1/preview".into()) },
            JobState::Processing { step: 0, total: 20, preview_url: None },
            JobState::Completed {
                image_url: "/api/images/j1.png".into(),
                width: 128,
                height: 96,
                seed: 7,
                timings: Timings { queued_ms: 1, inference_ms: 2, total_ms: 3 },
            },
            JobState::Failed { error: JobFailure { kind: ErrorKind::Timeout, message: "too long".into() } },
            JobState::Cancelled,
        ];
        for state in states {
            let mut v = view(state);
            v.cancel_token = Some("t".into());
            let json = serde_json::to_string(&v).unwrap();
            let back: JobView = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(back, v, "{json}");
        }
    }

    #[test]
    fn job_views_with_a_wrong_status_or_missing_fields_are_refused() {
        let mut json = serde_json::to_value(view(JobState::Queued { position: 1, eta_ms: None })).unwrap();
        json["status"] = "paused".into();
        let e = serde_json::from_value::<JobView>(json.clone()).unwrap_err().to_string();
        assert!(e.contains("unknown status `paused`"), "{e}");
        json["status"] = "completed".into();
        let e = serde_json::from_value::<JobView>(json).unwrap_err().to_string();
        assert!(e.contains("missing field `imageUrl` for status `completed`"), "{e}");
    }

    #[test]
    fn error_kinds_read_by_name() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<ErrorKind>(&json).unwrap(), kind);
        }
        let e = serde_json::from_str::<ErrorKind>("\"oops\"").unwrap_err().to_string();
        assert!(e.contains("unknown error kind `oops`"), "{e}");
    }
}
