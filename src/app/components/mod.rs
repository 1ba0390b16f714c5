//! The generator page's parts. They share one [`Studio`] (signals and actions, all `Copy`)
//! through context. Each part is a component the server renders and, in the browser, a `bind`
//! that keeps that markup current and wires its controls.

#[cfg(feature = "hydrate")]
pub mod dom;
pub mod errors;
pub mod form;
pub mod history;
pub mod live;
pub mod params;
pub mod result;

use leptos::prelude::*;
use crate::api::{wire, ApiError, ErrorKind, GenerateParams, JobView, ModelSummary, ModelsInfo, ResolvedParams};
use params::SizePreset;
use result::{ResultModel, Shown};

/// The id of the generate form: retry buttons elsewhere on the page submit it (`form=`).
pub const FORM_ID: &str = "generate-form";

/// The form's fields. Numbers are kept as text: blank means "the model's default".
#[derive(Clone, Copy)]
pub struct Fields {
    pub prompt: RwSignal<String>,
    pub negative_prompt: RwSignal<String>,
    pub width: RwSignal<u32>,
    pub height: RwSignal<u32>,
    pub steps: RwSignal<String>,
    pub guidance: RwSignal<String>,
    pub seed: RwSignal<String>,
    pub model: RwSignal<String>,
}

impl Fields {
    pub fn new(model: &ModelSummary) -> Self {
        Self {
            prompt: RwSignal::new(String::new()),
            negative_prompt: RwSignal::new(String::new()),
            width: RwSignal::new(model.default_width),
            height: RwSignal::new(model.default_height),
            steps: RwSignal::new(String::new()),
            guidance: RwSignal::new(String::new()),
            seed: RwSignal::new(String::new()),
            model: RwSignal::new(model.name.clone()),
        }
    }

    /// Puts a job's parameters back into the form.
    pub fn restore(&self, p: &ResolvedParams) {
        self.prompt.set(p.prompt.clone());
        self.negative_prompt.set(p.negative_prompt.clone());
        self.model.set(p.model.clone());
        self.width.set(p.width);
        self.height.set(p.height);
        self.steps.set(p.steps.to_string());
        self.guidance.set(wire::decimal(p.guidance));
        self.seed.set(p.seed.to_string());
    }

    /// Puts a refused form's fields (`params[prompt]=..&params[width]=..`, URL-encoded as the
    /// browser posted them) back into the form.
    pub fn restore_posted(&self, posted: &str) {
        for (key, value) in form_urlencoded::parse(posted.as_bytes()) {
            let value = value.into_owned();
            match key.as_ref() {
                "params[prompt]" => self.prompt.set(value),
                "params[negativePrompt]" => self.negative_prompt.set(value),
                "params[model]" if !value.is_empty() => self.model.set(value),
                "params[width]" => {
                    if let Ok(w) = value.parse() {
                        self.width.set(w)
                    }
                }
                "params[height]" => {
                    if let Ok(h) = value.parse() {
                        self.height.set(h)
                    }
                }
                "params[steps]" => self.steps.set(value),
                "params[guidance]" => self.guidance.set(value),
                "params[seed]" => self.seed.set(value),
                _ => {}
            }
        }
    }

    /// What the form asks for, as `submit_job` takes it (blank numbers: the model's default).
    /// Reads the fields directly instead of decoding the form's data.
    pub fn params(&self) -> Result<GenerateParams, ApiError> {
        fn number<T>(field: RwSignal<String>, label: &str, parse: fn(&str) -> Option<T>) -> Result<Option<T>, ApiError> {
            let text = field.get_untracked();
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            parse(text).map(Some).ok_or_else(|| {
                ApiError::new(ErrorKind::InvalidParams, format!("{label}: “{text}” is not a valid number."))
            })
        }
        Ok(GenerateParams {
            prompt: self.prompt.get_untracked(),
            negative_prompt: self.negative_prompt.get_untracked(),
            width: Some(self.width.get_untracked()),
            height: Some(self.height.get_untracked()),
            steps: number(self.steps, "Steps", |t| t.parse().ok())?,
            guidance: number(self.guidance, "Guidance", wire::parse_decimal)?,
            seed: number(self.seed, "Seed", |t| t.parse().ok())?,
            model: Some(self.model.get_untracked()).filter(|m| !m.is_empty()),
            webhook: None,
        })
    }

    pub fn size(&self) -> SizePreset {
        SizePreset { width: self.width.get(), height: self.height.get() }
    }
}

/// Sends a request to the server with `pending` set while it is in flight, then hands its
/// answer on. Browser only: on the server nothing is sent.
fn in_flight(
    pending: RwSignal<bool>,
    request: impl std::future::Future<Output = Result<JobView, ApiError>> + 'static,
    answer: impl FnOnce(Result<JobView, ApiError>) + 'static,
) {
    #[cfg(feature = "hydrate")]
    {
        pending.set(true);
        leptos::task::spawn_local(async move {
            let result = request.await;
            pending.set(false);
            answer(result);
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (pending, request, answer);
}

/// Everything the page's parts share.
#[derive(Clone, Copy)]
pub struct Studio {
    pub models: StoredValue<ModelsInfo>,
    pub fields: Fields,
    /// The job shown in the result area (the one being followed, or one picked from history).
    pub job: RwSignal<Option<JobView>>,
    /// The error shown in the result area, if any; it wins over the job.
    pub error: RwSignal<Option<ApiError>>,
    /// True while the submit request is in flight.
    pub submitting: RwSignal<bool>,
    /// True while a cancel request is in flight.
    pub cancelling: RwSignal<bool>,
    /// This visitor's recent jobs, newest first.
    pub history: RwSignal<Vec<JobView>>,
}

impl Studio {
    pub fn model(&self, name: &str) -> ModelSummary {
        self.models.with_value(|m| {
            m.models
                .iter()
                .find(|x| x.name == name)
                .or_else(|| m.models.iter().find(|x| x.name == m.default_model))
                .or(m.models.first())
                .cloned()
                .expect("the server offers at least one model")
        })
    }

    pub fn selected_model(&self) -> ModelSummary {
        self.model(&self.fields.model.get())
    }

    pub fn submitting(&self) -> bool {
        self.submitting.get()
    }

    /// Sends the form's parameters; the answer is shown (the new job, followed, or why it
    /// was refused).
    pub fn submit(&self, params: GenerateParams) {
        let studio = *self;
        in_flight(self.submitting, async move { crate::api::client::submit_job(&params).await }, move |answer| match answer {
            Ok(job) => {
                studio.show(job);
                studio.refresh_history();
            }
            Err(e) => {
                studio.job.set(None);
                studio.error.set(Some(e));
            }
        });
    }

    /// Cancels a job; the job as it now stands is shown if it still is the shown one.
    pub fn cancel(&self, job_id: String) {
        let studio = *self;
        in_flight(self.cancelling, async move { crate::api::client::cancel_job(&job_id).await }, move |answer| match answer {
            Ok(view) => {
                if studio.job.with_untracked(|j| j.as_ref().is_some_and(|j| j.job_id == view.job_id)) {
                    studio.show(view);
                }
            }
            Err(e) => studio.error.set(Some(e)),
        });
    }

    /// True while the shown job is queued or processing (and no error replaced it).
    pub fn job_active(&self) -> bool {
        self.error.with(Option::is_none)
            && self.job.with(|j| j.as_ref().is_some_and(|j| !j.state.is_terminal()))
    }

    /// Form and history are locked while this is true.
    pub fn busy(&self) -> bool {
        self.submitting() || self.job_active()
    }

    /// Shows a job and starts following it when it is still running.
    pub fn show(&self, view: JobView) {
        let running = !view.state.is_terminal();
        let id = view.job_id.clone();
        self.error.set(None);
        self.update(view);
        if running {
            live::follow(id, *self);
        } else {
            live::stop();
        }
    }

    /// The shown job's news; a job that just ended joins the history.
    pub fn update(&self, view: JobView) {
        let ended = view.state.is_terminal()
            && self.job.with_untracked(|j| j.as_ref().is_some_and(|j| j.job_id == view.job_id && !j.state.is_terminal()));
        self.job.set(Some(view));
        if ended {
            self.refresh_history();
        }
    }

    /// What the result area is about.
    pub fn shown(&self) -> Shown {
        if self.submitting() {
            Shown::Submitting
        } else if let Some(e) = self.error.get() {
            Shown::Error(e)
        } else if let Some(j) = self.job.get() {
            Shown::Job(j)
        } else {
            Shown::Idle
        }
    }

    /// What the result area shows (tracked: for the browser's effect).
    pub fn result_model(&self) -> ResultModel {
        let running = self.job.with(|j| j.as_ref().is_some_and(|j| !j.state.is_terminal()));
        ResultModel::new(&self.shown(), (self.fields.width.get(), self.fields.height.get()), running)
    }

    /// The same, read once (the server's render).
    pub fn result_model_untracked(&self) -> ResultModel {
        untrack(|| self.result_model())
    }

    /// Submits the form as if its button was pressed (keyboard shortcut).
    #[cfg(feature = "hydrate")]
    pub fn request_submit(&self) {
        use wasm_bindgen::JsCast;
        if let Ok(form) = dom::by_id(FORM_ID).dyn_into::<web_sys::HtmlFormElement>() {
            let _ = form.request_submit();
        }
    }

    /// Reloads the history from the server (browser only).
    pub fn refresh_history(&self) {
        #[cfg(feature = "hydrate")]
        {
            let history = self.history;
            leptos::task::spawn_local(async move {
                if let Ok(jobs) = crate::api::client::recent_jobs().await {
                    let _ = history.try_set(jobs);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_reads_blank_numbers_as_defaults_and_refuses_unreadable_ones() {
        // Signals live in a reactive owner, as they do on a page.
        Owner::new().with(|| {
            let f = Fields::new(&ModelSummary::tiny_for_tests());
            f.prompt.set("a red circle".into());
            f.steps.set("  ".into());
            f.guidance.set(" 7.5 ".into());
            let p = f.params().unwrap();
            assert_eq!((p.prompt.as_str(), p.width, p.height), ("a red circle", Some(64), Some(64)));
            assert_eq!((p.steps, p.guidance, p.seed), (None, Some(7.5), None));
            assert_eq!(p.model.as_deref(), Some("tiny"));

            f.seed.set("12x".into());
            let e = f.params().unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidParams);
            assert!(e.message.contains("Seed: “12x”"), "{}", e.message);
            f.seed.set(String::new());
            f.steps.set("-3".into());
            assert_eq!(f.params().unwrap_err().kind, ErrorKind::InvalidParams);
        });
    }
}
