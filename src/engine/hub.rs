//! Folders downloaded from the Hugging Face hub as they are (diffusers' layout:
//! `model_index.json`, `unet/`, `vae/`, `text_encoder/`, `text_encoder_2/`, `tokenizer*/`,
//! `scheduler/`, fp32 or fp16 files). The kind, architecture, scheduler, prediction type and
//! file names are read from the folder's own configs, so no `model.toml` is needed; one beside
//! them still overrides any field.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::spec::{
    Activation, Architecture, ClipArch, ModelKind, Prediction, SchedulerKind, TimestepSpacing,
    UNetArch, UNetBlock, VaeArch,
};

/// What a hub folder says about itself.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct HubModel {
    pub kind: ModelKind,
    pub arch: Architecture,
    /// `None` when the folder's sampler is one easel does not have (e.g. SD 1.5's PNDM): the
    /// kind's own default is used, with the folder's spacing and prediction type.
    pub scheduler: Option<SchedulerKind>,
    pub spacing: TimestepSpacing,
    pub steps_offset: u32,
    pub prediction: Prediction,
    pub vae_scale: f64,
    /// `unet.sample_size * 8`: the side the model was trained at.
    pub native_side: Option<u32>,
    pub files: HubFiles,
}

/// Paths relative to the model folder.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct HubFiles {
    pub unet: String,
    pub vae: String,
    pub clip: String,
    pub clip2: Option<String>,
    pub tokenizer: String,
    pub tokenizer2: Option<String>,
}

pub(super) fn is_hub_folder(dir: &Path) -> bool {
    dir.join("model_index.json").is_file()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Copy> OneOrMany<T> {
    /// The value for each of `n` levels; a list of the wrong length is an error.
    fn per_level(&self, n: usize, what: &str) -> Result<Vec<T>, String> {
        match self {
            OneOrMany::One(v) => Ok(vec![*v; n]),
            OneOrMany::Many(v) if v.len() == n => Ok(v.clone()),
            OneOrMany::Many(v) => Err(format!("{what} has {} entries for {n} levels", v.len())),
        }
    }
}

#[derive(Deserialize)]
struct PipelineIndex {
    #[serde(rename = "_class_name")]
    class: String,
}

fn default_4() -> usize {
    4
}
fn default_32() -> usize {
    32
}
fn default_one() -> OneOrMany<usize> {
    OneOrMany::One(1)
}

#[derive(Deserialize)]
struct UNetConfig {
    #[serde(default = "default_4")]
    in_channels: usize,
    #[serde(default = "default_4")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    down_block_types: Vec<String>,
    up_block_types: Vec<String>,
    layers_per_block: OneOrMany<usize>,
    attention_head_dim: Option<OneOrMany<usize>>,
    num_attention_heads: Option<OneOrMany<usize>>,
    #[serde(default = "default_one")]
    transformer_layers_per_block: OneOrMany<usize>,
    #[serde(default = "default_32")]
    norm_num_groups: usize,
    cross_attention_dim: OneOrMany<usize>,
    #[serde(default)]
    use_linear_projection: bool,
    addition_embed_type: Option<String>,
    addition_time_embed_dim: Option<usize>,
    projection_class_embeddings_input_dim: Option<usize>,
    sample_size: Option<usize>,
    class_embed_type: Option<String>,
    time_cond_proj_dim: Option<usize>,
    mid_block_type: Option<String>,
    reverse_transformer_layers_per_block: Option<serde_json::Value>,
    #[serde(default = "yes")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: i64,
    #[serde(default)]
    only_cross_attention: serde_json::Value,
    #[serde(default)]
    dual_cross_attention: bool,
    #[serde(default)]
    upcast_attention: bool,
    resnet_time_scale_shift: Option<String>,
    attention_type: Option<String>,
    time_embedding_type: Option<String>,
    encoder_hid_dim: Option<usize>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct VaeConfig {
    block_out_channels: Vec<usize>,
    layers_per_block: usize,
    #[serde(default = "default_32")]
    norm_num_groups: usize,
    latent_channels: usize,
    scaling_factor: Option<f64>,
}

#[derive(Deserialize)]
struct TextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    hidden_act: String,
    projection_dim: Option<usize>,
}

#[derive(Deserialize)]
struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    class: String,
    #[serde(default = "epsilon")]
    prediction_type: String,
    timestep_spacing: Option<String>,
    #[serde(default)]
    steps_offset: u32,
    beta_schedule: Option<String>,
    beta_start: Option<f64>,
    beta_end: Option<f64>,
    num_train_timesteps: Option<usize>,
}

fn epsilon() -> String {
    "epsilon".into()
}

/// The parts of a tokenizer folder easel reads: its padding token.
#[derive(Deserialize)]
struct TokenizerConfig {
    pad_token: Option<serde_json::Value>,
}

fn read_json<T: DeserializeOwned>(dir: &Path, file: &str) -> Result<T, String> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))
}

/// The first of `names` present in `dir/part`, else the first name (reported as missing later).
fn weight_file(dir: &Path, part: &str, names: &[&str]) -> String {
    let found = names
        .iter()
        .find(|n| dir.join(part).join(n).is_file())
        .unwrap_or(&names[0]);
    format!("{part}/{found}")
}

fn unet_weights(dir: &Path, part: &str) -> String {
    weight_file(
        dir,
        part,
        &["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"],
    )
}

fn text_weights(dir: &Path, part: &str) -> String {
    weight_file(dir, part, &["model.safetensors", "model.fp16.safetensors"])
}

/// A tokenizer folder's `tokenizer.json` when it has one, else its `vocab.json` (read with the
/// `merges.txt` beside it, as CLIP's byte-level BPE).
fn tokenizer_file(dir: &Path, part: &str) -> String {
    weight_file(dir, part, &["tokenizer.json", "vocab.json"])
}

fn pad_token(dir: &Path, part: &str) -> Result<Option<String>, String> {
    if !dir.join(part).join("tokenizer_config.json").is_file() {
        return Ok(None);
    }
    let cfg: TokenizerConfig = read_json(dir, &format!("{part}/tokenizer_config.json"))?;
    // Either a plain string or an AddedToken object with a "content" field.
    let pad = match cfg.pad_token {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Object(o)) => {
            o.get("content").and_then(|c| c.as_str()).map(str::to_string)
        }
        _ => None,
    };
    // Padding with the end token is what easel does when told nothing.
    Ok(pad.filter(|p| p != "<|endoftext|>"))
}

fn clip_arch(dir: &Path, part: &str, tokenizer: &str) -> Result<ClipArch, String> {
    let c: TextConfig = read_json(dir, &format!("{part}/config.json"))?;
    let activation = match c.hidden_act.as_str() {
        "quick_gelu" => Activation::QuickGelu,
        "gelu" => Activation::Gelu,
        other => return Err(format!("{part}/config.json: hidden_act {other:?} is not supported")),
    };
    Ok(ClipArch {
        vocab_size: c.vocab_size,
        embed_dim: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        max_position_embeddings: c.max_position_embeddings,
        activation,
        projection_dim: c.projection_dim.unwrap_or(c.hidden_size),
        pad_with: pad_token(dir, tokenizer)?,
    })
}

fn unet_arch(c: &UNetConfig) -> Result<UNetArch, String> {
    let bad = |m: String| Err(format!("unet/config.json: {m}"));
    let n = c.block_out_channels.len();
    if c.in_channels != 4 || c.out_channels != 4 {
        return bad("only 4 latent channels in and out are supported (no inpainting UNets)".into());
    }
    if c.class_embed_type.is_some() || c.time_cond_proj_dim.is_some() {
        return bad("class embeddings and time-conditioning projections are not supported".into());
    }
    if c.mid_block_type.as_deref().is_some_and(|m| m != "UNetMidBlock2DCrossAttn") {
        return bad(format!("mid_block_type {:?} is not supported", c.mid_block_type));
    }
    if c.reverse_transformer_layers_per_block.as_ref().is_some_and(|v| !v.is_null()) {
        return bad("reverse_transformer_layers_per_block is not supported".into());
    }
    let only_cross = match &c.only_cross_attention {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Array(v) => v.iter().any(|b| b.as_bool() == Some(true)),
        _ => false,
    };
    if only_cross
        || c.dual_cross_attention
        || c.encoder_hid_dim.is_some()
        || c.resnet_time_scale_shift.as_deref().is_some_and(|s| s != "default")
        || c.attention_type.as_deref().is_some_and(|s| s != "default")
        || c.time_embedding_type.as_deref().is_some_and(|s| s != "positional")
    {
        return bad("only SD's own attention, time embedding and ResNet variants are supported".into());
    }
    // Upcasting only changes half-precision rounding: easel computes attention in f32 anyway.
    let _ = c.upcast_attention;
    if !c.flip_sin_to_cos || c.freq_shift != 0 {
        return bad("only flip_sin_to_cos = true and freq_shift = 0 are supported".into());
    }
    if c.down_block_types.len() != n || c.up_block_types.len() != n {
        return bad("down_block_types and up_block_types need one entry per level".into());
    }
    let layers = c.layers_per_block.per_level(n, "layers_per_block")?;
    if layers.iter().any(|&l| l != layers[0]) {
        return bad("layers_per_block must be the same on every level".into());
    }
    let cross = c.cross_attention_dim.per_level(n, "cross_attention_dim")?;
    if cross.iter().any(|&d| d != cross[0]) {
        return bad("cross_attention_dim must be the same on every level".into());
    }
    // diffusers' legacy naming: without num_attention_heads, attention_head_dim is the head count.
    let heads = match (&c.num_attention_heads, &c.attention_head_dim) {
        (Some(h), _) | (None, Some(h)) => h.per_level(n, "attention heads")?,
        (None, None) => vec![8; n],
    };
    let depth = c
        .transformer_layers_per_block
        .per_level(n, "transformer_layers_per_block")?;
    let mut blocks = Vec::with_capacity(n);
    for i in 0..n {
        let attends = match c.down_block_types[i].as_str() {
            "CrossAttnDownBlock2D" => true,
            "DownBlock2D" => false,
            other => return bad(format!("down block {other:?} is not supported")),
        };
        let up_wanted = if attends { "CrossAttnUpBlock2D" } else { "UpBlock2D" };
        if c.up_block_types[n - 1 - i] != up_wanted {
            return bad("up_block_types must mirror down_block_types".into());
        }
        blocks.push(UNetBlock {
            channels: c.block_out_channels[i],
            transformer_layers: if attends { depth[i] } else { 0 },
            heads: heads[i],
        });
    }
    let addition_time_embed_dim = match c.addition_embed_type.as_deref() {
        None => None,
        Some("text_time") => Some(
            c.addition_time_embed_dim
                .ok_or("unet/config.json: text_time needs addition_time_embed_dim")?,
        ),
        Some(other) => return bad(format!("addition_embed_type {other:?} is not supported")),
    };
    Ok(UNetArch {
        blocks,
        layers_per_block: layers[0],
        norm_num_groups: c.norm_num_groups,
        cross_attention_dim: cross[0],
        use_linear_projection: c.use_linear_projection,
        addition_time_embed_dim,
    })
}

/// SD's training schedule, which every supported kind shares ("scaled_linear", 0.00085..0.012,
/// 1000 steps): anything else would need a schedule easel does not compute.
fn check_betas(s: &SchedulerConfig) -> Result<(), String> {
    let close = |v: Option<f64>, want: f64| v.is_none_or(|v| (v - want).abs() < 1e-9);
    if s.beta_schedule.as_deref().is_some_and(|b| b != "scaled_linear")
        || !close(s.beta_start, 0.00085)
        || !close(s.beta_end, 0.012)
        || s.num_train_timesteps.is_some_and(|n| n != 1000)
    {
        return Err(
            "scheduler/scheduler_config.json: only SD's scaled_linear betas (0.00085 to 0.012, 1000 steps) are supported"
                .into(),
        );
    }
    Ok(())
}

/// Reads a hub folder's configs. Errors name the config file and what is wrong in it.
pub(super) fn read_hub_folder(dir: &Path) -> Result<HubModel, String> {
    let index: PipelineIndex = read_json(dir, "model_index.json")?;
    let xl = match index.class.as_str() {
        "StableDiffusionPipeline" => false,
        "StableDiffusionXLPipeline" => true,
        other => {
            return Err(format!(
                "model_index.json: {other} is not supported (StableDiffusionPipeline or StableDiffusionXLPipeline)"
            ))
        }
    };
    let unet_cfg: UNetConfig = read_json(dir, "unet/config.json")?;
    let unet = unet_arch(&unet_cfg)?;
    if xl != unet.addition_time_embed_dim.is_some() {
        return Err("unet/config.json: an SDXL pipeline needs the text_time addition embedding, and only SDXL has it".into());
    }
    let v: VaeConfig = read_json(dir, "vae/config.json")?;
    let vae = VaeArch {
        block_out_channels: v.block_out_channels,
        layers_per_block: v.layers_per_block,
        norm_num_groups: v.norm_num_groups,
        latent_channels: v.latent_channels,
    };
    let tokenizer = tokenizer_file(dir, "tokenizer");
    let clip = clip_arch(dir, "text_encoder", "tokenizer")?;
    let (clip2, clip2_file, tokenizer2) = if xl {
        let arch = clip_arch(dir, "text_encoder_2", "tokenizer_2")?;
        if let Some(pooled_in) = unet_cfg.projection_class_embeddings_input_dim {
            let want = arch.projection_dim + 6 * unet.addition_time_embed_dim.unwrap_or(0);
            if pooled_in != want {
                return Err(format!(
                    "unet/config.json: projection_class_embeddings_input_dim is {pooled_in}, but the second text encoder's projection and the time ids give {want}"
                ));
            }
        }
        (Some(arch), Some(text_weights(dir, "text_encoder_2")), Some(tokenizer_file(dir, "tokenizer_2")))
    } else {
        (None, None, None)
    };

    let s: SchedulerConfig = read_json(dir, "scheduler/scheduler_config.json")?;
    check_betas(&s)?;
    let scheduler = match s.class.as_str() {
        "DDIMScheduler" => Some(SchedulerKind::Ddim),
        "EulerDiscreteScheduler" => Some(SchedulerKind::Euler),
        "EulerAncestralDiscreteScheduler" => Some(SchedulerKind::EulerAncestral),
        _ => None,
    };
    let prediction = match s.prediction_type.as_str() {
        "epsilon" => Prediction::Epsilon,
        "v_prediction" => Prediction::VPrediction,
        other => {
            return Err(format!(
                "scheduler/scheduler_config.json: prediction_type {other:?} is not supported"
            ))
        }
    };
    // diffusers' own default spacing differs by sampler: linspace for Euler, leading otherwise.
    let default_spacing = match scheduler {
        Some(SchedulerKind::Euler | SchedulerKind::EulerAncestral) => "linspace",
        _ => "leading",
    };
    let spacing = match s.timestep_spacing.as_deref().unwrap_or(default_spacing) {
        "leading" => TimestepSpacing::Leading,
        "trailing" => TimestepSpacing::Trailing,
        "linspace" => TimestepSpacing::Linspace,
        other => {
            return Err(format!(
                "scheduler/scheduler_config.json: timestep_spacing {other:?} is not supported"
            ))
        }
    };
    // The distilled one-step models are the ones sampled with trailing spacing.
    let turbo = spacing == TimestepSpacing::Trailing;
    let sd2 = clip.activation == Activation::Gelu || unet.use_linear_projection;
    let kind = match (xl, sd2, turbo) {
        (true, _, false) => ModelKind::Sdxl,
        (true, _, true) => ModelKind::SdxlTurbo,
        (false, false, _) => ModelKind::Sd15,
        (false, true, false) => ModelKind::Sd21,
        (false, true, true) => ModelKind::SdTurbo,
    };
    let vae_scale = v.scaling_factor.unwrap_or(if xl { 0.13025 } else { 0.18215 });
    Ok(HubModel {
        kind,
        arch: Architecture { unet, vae, clip, clip2 },
        scheduler,
        spacing,
        steps_offset: s.steps_offset,
        prediction,
        vae_scale,
        native_side: unet_cfg.sample_size.map(|s| s as u32 * 8),
        files: HubFiles {
            unet: unet_weights(dir, "unet"),
            vae: unet_weights(dir, "vae"),
            clip: text_weights(dir, "text_encoder"),
            clip2: clip2_file,
            tokenizer,
            tokenizer2,
        },
    })
}
