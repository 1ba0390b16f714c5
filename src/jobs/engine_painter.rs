//! The worker's painter backed by the Candle engine: keeps one model loaded, swapping it when
//! a job names another, and encodes the PNG with its parameters.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use super::worker::{OnStep, PaintError, Painter};
use crate::api::{ErrorKind, JobFailure, ModelSummary, ResolvedParams};
use crate::engine::{self, DevicePreference, Engine, EngineError, GenerateRequest, PngMetadata, Progress};

/// Smallest side the engine accepts (its latents are 1/8 of the image).
const MIN_SIDE: u32 = 64;

pub struct EnginePainter {
    models_dir: PathBuf,
    device: DevicePreference,
    loaded: Option<Engine>,
}

impl EnginePainter {
    pub fn new(models_dir: PathBuf, device: DevicePreference) -> Self {
        Self { models_dir, device, loaded: None }
    }
}

/// What a client is told. Missing or damaged model files and engine faults are told in general
/// words: their details (file paths, the server's layout) go to the log only.
fn failure(e: EngineError) -> JobFailure {
    let (kind, message) = match e.kind() {
        "invalid_prompt" => (ErrorKind::InvalidPrompt, e.to_string()),
        "invalid_params" | "unknown_model" => (ErrorKind::InvalidParams, e.to_string()),
        "cancelled" => (ErrorKind::Cancelled, e.to_string()),
        "model_missing" | "model_corrupt" => {
            tracing::error!(error = %e, "a model could not be loaded");
            (ErrorKind::InferenceFailed, "The model's files on the server are missing or damaged; the server's log says which.".into())
        }
        _ => {
            tracing::error!(error = %e, "the engine failed");
            (ErrorKind::InferenceFailed, "Something in the model failed while painting.".into())
        }
    };
    JobFailure { kind, message }
}

impl Painter for EnginePainter {
    fn prepare(&mut self, model: &str) -> Result<(), JobFailure> {
        if self.loaded.as_ref().is_some_and(|e| e.spec().name == model) {
            return Ok(());
        }
        // The loaded model stays until the new one has loaded: a model that fails to load leaves
        // the worker with the one it had. (Both are in memory for the moment of the swap.)
        let engine = Engine::load(&self.models_dir, model, self.device).map_err(failure)?;
        self.loaded = Some(engine);
        Ok(())
    }

    fn paint(&self, params: &ResolvedParams, on_step: &mut OnStep<'_>, cancel: &AtomicBool) -> Result<Vec<u8>, PaintError> {
        let engine = self.loaded.as_ref().ok_or_else(|| {
            PaintError::Failed(JobFailure { kind: ErrorKind::InferenceFailed, message: "No model is loaded.".into() })
        })?;
        let request = GenerateRequest {
            prompt: params.prompt.clone(),
            negative_prompt: params.negative_prompt.clone(),
            width: params.width,
            height: params.height,
            steps: params.steps,
            guidance: params.guidance,
            seed: params.seed as u64,
        };
        let mut forward = |p: Progress<'_>| on_step(p.step, p.total, p.preview);
        let image = engine.generate(&request, &mut forward, cancel).map_err(|e| match e {
            EngineError::Cancelled => PaintError::Cancelled,
            other => PaintError::Failed(failure(other)),
        })?;
        let metadata = PngMetadata::new(&request, engine.spec());
        engine::encode_png(&image, &metadata).map_err(|e| PaintError::Failed(failure(e)))
    }
}

/// The models to offer: `names`, or every model folder when empty. With `need_weights` (a
/// process that paints), only models whose files are all there; a web process alone reads the
/// descriptions only (its workers hold the weights).
pub fn offered_models(models_dir: &std::path::Path, names: &[String], need_weights: bool) -> anyhow::Result<Vec<ModelSummary>> {
    let specs: Vec<_> = if names.is_empty() {
        engine::list_models(models_dir)
            .into_iter()
            .filter_map(|spec| spec.map_err(|e| tracing::warn!("skipping a model: {e}")).ok())
            .filter(|spec| match spec.missing_files_message().filter(|_| need_weights) {
                Some(missing) => {
                    tracing::warn!("not offering model {:?}: {missing}", spec.name);
                    false
                }
                None => true,
            })
            .collect()
    } else {
        let specs = names
            .iter()
            .map(|name| engine::read_model_spec(models_dir, name).with_context(|| format!("reading model {name:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if need_weights {
            if let Some(missing) = specs.iter().find_map(|spec| spec.missing_files_message()) {
                anyhow::bail!("{missing}");
            }
        }
        specs
    };
    Ok(specs
        .into_iter()
        .map(|s| ModelSummary {
            name: s.name.clone(),
            kind: s.kind.as_str().to_string(),
            default_width: s.default_width,
            default_height: s.default_height,
            min_size: MIN_SIDE,
            max_width: s.max_width,
            max_height: s.max_height,
            default_steps: s.default_steps,
            max_steps: s.max_steps,
            default_guidance: s.default_guidance,
            min_guidance: s.min_guidance,
            max_guidance: s.max_guidance,
        })
        .collect())
}
