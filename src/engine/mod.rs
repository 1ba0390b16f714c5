//! The text-to-image engine: model descriptions (`models/<name>/model.toml`), loading a
//! Stable Diffusion model once (SD 1.5, 2.1, SD-Turbo, SDXL, SDXL-Turbo, and the committed tiny
//! test models) and generating images from it with step callbacks, previews and cancellation,
//! plus PNG encoding with A1111-style metadata. Pure model code: no HTTP, database or async
//! runtime in here.
//!
//! Determinism: all noise (initial latents and Euler Ancestral's per-step noise) comes from a
//! ChaCha8 RNG seeded with the request's seed, so a seed gives the same pixels on the same
//! device and build.
//!
//! Previews: [`Progress::preview`] is set on every [`PREVIEW_EVERY`]-th step and on the last
//! step ([`preview_due`]); it is the model's current estimate of the clean latents projected to
//! RGB by a fixed linear map, at latent resolution (`width / 8` x `height / 8`).

mod attention;
mod conv;
mod hub;
mod kernels;
mod pipeline;
mod png;
mod preview;
mod scheduler;
mod spec;
mod text;
mod tiny;
mod train;
mod unet;
mod vae;
mod weights;

#[cfg(feature = "hf-hub")]
mod fetch;

use std::path::Path;
use std::sync::atomic::AtomicBool;

pub use self::png::{encode_png, read_png_parameters, PngMetadata};
pub use self::pipeline::TextEncoding;
pub use self::preview::{preview_due, PREVIEW_EVERY};
pub use self::scheduler::{Schedule, StepOutput};
pub use self::spec::{
    list_models, parse_model_spec, read_model_spec, Activation, Architecture, ClipArch, ModelFile,
    ModelFiles, ModelKind, ModelSpec, Prediction, SchedulerKind, TimestepSpacing, UNetArch, UNetBlock, VaeArch,
    WeightDType, MIN_SIDE,
};
pub use self::tiny::{random_weights, WeightFile};
pub use self::train::{DiffusionLoss, StepReport, Trainer};

#[cfg(feature = "hf-hub")]
pub use self::fetch::fetch_model;

/// One image to make.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    /// Classifier-free guidance scale; at most 1.0 turns guidance off (Turbo models).
    pub guidance: f64,
    pub seed: u64,
}

/// Reported after every denoising step.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// 1-based step just finished.
    pub step: u32,
    pub total: u32,
    /// On the steps where [`preview_due`] holds: a latent-resolution RGB approximation.
    pub preview: Option<&'a image::RgbImage>,
}

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePreference {
    #[default]
    Cpu,
    /// CUDA or Metal when compiled in (`cuda` / `metal` features) and present; CPU otherwise.
    Gpu,
}

/// Everything that can go wrong, each with a stable machine-readable [`EngineError::kind`].
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("The prompt is empty: describe the picture you want.")]
    InvalidPrompt,
    #[error("{0}")]
    InvalidParams(String),
    #[error("There is no model named '{name}' (models available: {available}).")]
    UnknownModel { name: String, available: String },
    #[error("{0}")]
    ModelMissing(String),
    #[error("{0}")]
    ModelCorrupt(String),
    #[error("Image generation failed: {0}")]
    InferenceFailed(String),
    #[error("The generation was cancelled.")]
    Cancelled,
}

impl EngineError {
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::InvalidPrompt => "invalid_prompt",
            EngineError::InvalidParams(_) => "invalid_params",
            EngineError::UnknownModel { .. } => "unknown_model",
            EngineError::ModelMissing(_) => "model_missing",
            EngineError::ModelCorrupt(_) => "model_corrupt",
            EngineError::InferenceFailed(_) => "inference_failed",
            EngineError::Cancelled => "cancelled",
        }
    }
}

/// A loaded model, ready for any number of [`Engine::generate`] calls (`Send + Sync`: a worker
/// thread owns it and reuses it for every job).
pub struct Engine {
    inner: pipeline::Pipeline,
}

impl Engine {
    /// Reads `models_dir/<name>/model.toml` and loads the weights onto the chosen device.
    /// Never downloads: missing files give [`EngineError::ModelMissing`] saying what to put
    /// where (see `fetch_model` behind the `hf-hub` feature).
    pub fn load(
        models_dir: &Path,
        name: &str,
        device: DevicePreference,
    ) -> Result<Engine, EngineError> {
        let spec = read_model_spec(models_dir, name)?;
        Ok(Engine {
            inner: pipeline::Pipeline::load(spec, device)?,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.inner.spec
    }

    /// "cpu", "cuda:0" or "metal:0".
    pub fn device_name(&self) -> String {
        self.inner.device_name()
    }

    /// Runs one generation. `on_step` is called after each denoising step; `cancel` is checked
    /// before each step and before the final decode (so a cancel lands within one step).
    pub fn generate(
        &self,
        req: &GenerateRequest,
        on_step: &mut dyn FnMut(Progress<'_>),
        cancel: &AtomicBool,
    ) -> Result<image::RgbImage, EngineError> {
        self.inner.generate(req, on_step, cancel)
    }
}

/// The model's parts one by one (for parity checks against diffusers and for benches); the
/// tensors live on the engine's device.
impl Engine {
    pub fn tokenize(&self, second: bool, text: &str) -> Result<Vec<u32>, EngineError> {
        self.inner.tokenize(second, text)
    }

    pub fn encode_text(&self, second: bool, ids: &[u32]) -> Result<TextEncoding, EngineError> {
        self.inner.encode_text(second, ids)
    }

    pub fn predict(
        &self,
        latents: &candle_core::Tensor,
        timestep: f64,
        context: &candle_core::Tensor,
        xl: Option<(&candle_core::Tensor, &candle_core::Tensor)>,
    ) -> Result<candle_core::Tensor, EngineError> {
        self.inner.predict(latents, timestep, context, xl)
    }

    pub fn decode_latents(&self, latents: &candle_core::Tensor) -> Result<candle_core::Tensor, EngineError> {
        self.inner.decode_latents(latents)
    }

    /// The sampling schedule this model uses for `steps` steps.
    pub fn schedule(&self, steps: usize) -> Schedule {
        Schedule::for_model(&self.inner.spec, steps)
    }
}

#[allow(dead_code)]
fn _engine_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
}
