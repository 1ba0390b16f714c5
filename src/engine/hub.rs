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
    /// As the config gives it; `None`: diffusers' default for the sampler used.
    pub spacing: Option<TimestepSpacing>,
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

// Every field is optional: hub configs write `null` for defaults as often as they leave a field
// out, and serde's `default` covers only the latter.

#[derive(Deserialize)]
struct UNetConfig {
    in_channels: Option<usize>,
    out_channels: Option<usize>,
    block_out_channels: Vec<usize>,
    down_block_types: Vec<String>,
    up_block_types: Vec<String>,
    layers_per_block: Option<OneOrMany<usize>>,
    attention_head_dim: Option<OneOrMany<usize>>,
    num_attention_heads: Option<OneOrMany<usize>>,
    transformer_layers_per_block: Option<OneOrMany<usize>>,
    norm_num_groups: Option<usize>,
    norm_eps: Option<f64>,
    act_fn: Option<String>,
    cross_attention_dim: Option<OneOrMany<usize>>,
    use_linear_projection: Option<bool>,
    addition_embed_type: Option<String>,
    addition_time_embed_dim: Option<usize>,
    projection_class_embeddings_input_dim: Option<usize>,
    sample_size: Option<OneOrMany<u64>>,
    class_embed_type: Option<String>,
    num_class_embeds: Option<usize>,
    time_cond_proj_dim: Option<usize>,
    mid_block_type: Option<String>,
    reverse_transformer_layers_per_block: Option<serde_json::Value>,
    flip_sin_to_cos: Option<bool>,
    freq_shift: Option<i64>,
    only_cross_attention: Option<serde_json::Value>,
    dual_cross_attention: Option<bool>,
    resnet_time_scale_shift: Option<String>,
    resnet_skip_time_act: Option<bool>,
    resnet_out_scale_factor: Option<f64>,
    attention_type: Option<String>,
    time_embedding_type: Option<String>,
    encoder_hid_dim: Option<usize>,
    conv_in_kernel: Option<usize>,
    conv_out_kernel: Option<usize>,
    center_input_sample: Option<bool>,
    mid_block_only_cross_attention: Option<bool>,
    cross_attention_norm: Option<String>,
}

#[derive(Deserialize)]
struct VaeConfig {
    block_out_channels: Vec<usize>,
    layers_per_block: Option<usize>,
    norm_num_groups: Option<usize>,
    latent_channels: Option<usize>,
    scaling_factor: Option<f64>,
    shift_factor: Option<f64>,
    use_quant_conv: Option<bool>,
    use_post_quant_conv: Option<bool>,
    mid_block_add_attention: Option<bool>,
    act_fn: Option<String>,
}

#[derive(Deserialize)]
struct TextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    hidden_act: Option<String>,
    projection_dim: Option<usize>,
}

#[derive(Deserialize)]
struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    class: String,
    prediction_type: Option<String>,
    timestep_spacing: Option<String>,
    steps_offset: Option<u32>,
    beta_schedule: Option<String>,
    beta_start: Option<f64>,
    beta_end: Option<f64>,
    num_train_timesteps: Option<usize>,
    trained_betas: Option<serde_json::Value>,
    rescale_betas_zero_snr: Option<bool>,
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

/// The padding token: `special_tokens_map.json` wins over `tokenizer_config.json`, as in
/// transformers (SD 2.x keeps its "!" there). `None`: pad with the end token.
fn pad_token(dir: &Path, part: &str) -> Result<Option<String>, String> {
    for file in ["special_tokens_map.json", "tokenizer_config.json"] {
        if !dir.join(part).join(file).is_file() {
            continue;
        }
        let cfg: TokenizerConfig = read_json(dir, &format!("{part}/{file}"))?;
        // Either a plain string or an AddedToken object with a "content" field.
        let pad = match cfg.pad_token {
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Object(o)) => {
                o.get("content").and_then(|c| c.as_str()).map(str::to_string)
            }
            _ => None,
        };
        if let Some(pad) = pad {
            // Padding with the end token is what easel does when told nothing.
            return Ok(Some(pad).filter(|p| p != "<|endoftext|>"));
        }
    }
    Ok(None)
}

fn clip_arch(dir: &Path, part: &str, tokenizer: &str) -> Result<ClipArch, String> {
    let c: TextConfig = read_json(dir, &format!("{part}/config.json"))?;
    if c.num_hidden_layers < 2 || c.max_position_embeddings < 2 {
        return Err(format!("{part}/config.json: needs at least 2 layers and 2 positions"));
    }
    let activation = match c.hidden_act.as_deref().unwrap_or("quick_gelu") {
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
    if n == 0 {
        return bad("block_out_channels is empty".into());
    }
    if c.in_channels.unwrap_or(4) != 4 || c.out_channels.unwrap_or(4) != 4 {
        return bad("only 4 latent channels in and out are supported (no inpainting UNets)".into());
    }
    if c.class_embed_type.is_some() || c.num_class_embeds.is_some() || c.time_cond_proj_dim.is_some() {
        return bad("class embeddings and time-conditioning projections are not supported".into());
    }
    if c.mid_block_type.as_deref().is_some_and(|m| m != "UNetMidBlock2DCrossAttn") {
        return bad(format!("mid_block_type {:?} is not supported", c.mid_block_type));
    }
    if c.reverse_transformer_layers_per_block.as_ref().is_some_and(|v| !v.is_null()) {
        return bad("reverse_transformer_layers_per_block is not supported".into());
    }
    let only_cross = match &c.only_cross_attention {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::Array(v)) => v.iter().any(|b| b.as_bool() == Some(true)),
        _ => false,
    };
    let not = |v: Option<&str>, default: &str| v.is_some_and(|v| v != default);
    if only_cross
        || c.dual_cross_attention == Some(true)
        || c.encoder_hid_dim.is_some()
        || c.center_input_sample == Some(true)
        || c.resnet_skip_time_act == Some(true)
        || c.resnet_out_scale_factor.is_some_and(|f| f != 1.0)
        || c.mid_block_only_cross_attention == Some(true)
        || c.cross_attention_norm.is_some()
        || not(c.resnet_time_scale_shift.as_deref(), "default")
        || not(c.attention_type.as_deref(), "default")
        || not(c.time_embedding_type.as_deref(), "positional")
        || not(c.act_fn.as_deref(), "silu")
        || c.norm_eps.is_some_and(|e| (e - 1e-5).abs() > 1e-12)
        || c.conv_in_kernel.is_some_and(|k| k != 3)
        || c.conv_out_kernel.is_some_and(|k| k != 3)
    {
        return bad("only SD's own attention, time embedding, ResNet and convolution variants are supported".into());
    }
    // `upcast_attention` only changes half-precision rounding: easel's attention runs in f32.
    if c.flip_sin_to_cos == Some(false) || c.freq_shift.is_some_and(|f| f != 0) {
        return bad("only flip_sin_to_cos = true and freq_shift = 0 are supported".into());
    }
    if c.down_block_types.len() != n || c.up_block_types.len() != n {
        return bad("down_block_types and up_block_types need one entry per level".into());
    }
    let layers = c.layers_per_block.as_ref().unwrap_or(&OneOrMany::One(2)).per_level(n, "layers_per_block")?;
    if layers.iter().any(|&l| l != layers[0]) {
        return bad("layers_per_block must be the same on every level".into());
    }
    let cross = c.cross_attention_dim.as_ref().unwrap_or(&OneOrMany::One(1280)).per_level(n, "cross_attention_dim")?;
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
        .as_ref()
        .unwrap_or(&OneOrMany::One(1))
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
        norm_num_groups: c.norm_num_groups.unwrap_or(32),
        cross_attention_dim: cross[0],
        use_linear_projection: c.use_linear_projection.unwrap_or(false),
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
        || s.trained_betas.as_ref().is_some_and(|b| !b.is_null())
        || s.rescale_betas_zero_snr == Some(true)
    {
        return Err(
            "scheduler/scheduler_config.json: only SD's scaled_linear betas (0.00085 to 0.012, 1000 steps, no zero-terminal-SNR rescaling) are supported"
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
    if v.use_quant_conv == Some(false)
        || v.use_post_quant_conv == Some(false)
        || v.mid_block_add_attention == Some(false)
        || v.shift_factor.is_some_and(|f| f != 0.0)
        || v.act_fn.as_deref().is_some_and(|a| a != "silu")
    {
        return Err("vae/config.json: only SD's VAE (quant convolutions, mid-block attention, no shift) is supported".into());
    }
    let vae = VaeArch {
        block_out_channels: v.block_out_channels,
        layers_per_block: v.layers_per_block.unwrap_or(1),
        norm_num_groups: v.norm_num_groups.unwrap_or(32),
        latent_channels: v.latent_channels.unwrap_or(4),
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
    let prediction = match s.prediction_type.as_deref().unwrap_or("epsilon") {
        "epsilon" => Prediction::Epsilon,
        "v_prediction" => Prediction::VPrediction,
        other => {
            return Err(format!(
                "scheduler/scheduler_config.json: prediction_type {other:?} is not supported"
            ))
        }
    };
    let spacing = match s.timestep_spacing.as_deref() {
        None => None,
        Some("leading") => Some(TimestepSpacing::Leading),
        Some("trailing") => Some(TimestepSpacing::Trailing),
        Some("linspace") => Some(TimestepSpacing::Linspace),
        Some(other) => {
            return Err(format!(
                "scheduler/scheduler_config.json: timestep_spacing {other:?} is not supported"
            ))
        }
    };
    // The distilled few-step models: an Euler sampler with trailing spacing.
    let turbo = spacing == Some(TimestepSpacing::Trailing)
        && matches!(scheduler, Some(SchedulerKind::Euler | SchedulerKind::EulerAncestral));
    let sd2 = clip.activation == Activation::Gelu || unet.use_linear_projection;
    let kind = match (xl, sd2, turbo) {
        (true, _, false) => ModelKind::Sdxl,
        (true, _, true) => ModelKind::SdxlTurbo,
        (false, false, _) => ModelKind::Sd15,
        (false, true, false) => ModelKind::Sd21,
        (false, true, true) => ModelKind::SdTurbo,
    };
    let native_side = match &unet_cfg.sample_size {
        Some(OneOrMany::One(s)) => Some(*s),
        Some(OneOrMany::Many(v)) => v.first().copied(),
        None => None,
    }
    .and_then(|s| u32::try_from(s).ok()?.checked_mul(8));
    let vae_scale = v.scaling_factor.unwrap_or(if xl { 0.13025 } else { 0.18215 });
    Ok(HubModel {
        kind,
        arch: Architecture { unet, vae, clip, clip2 },
        scheduler,
        spacing,
        steps_offset: s.steps_offset.unwrap_or(0),
        prediction,
        vae_scale,
        native_side,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::spec::read_model_spec;

    fn write(dir: &Path, file: &str, json: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, json).unwrap();
    }

    fn clip(hidden: usize, layers: usize, heads: usize, act: &str, proj: usize) -> String {
        format!(
            r#"{{"architectures": ["CLIPTextModel"], "vocab_size": 49408, "hidden_size": {hidden},
            "intermediate_size": {}, "num_hidden_layers": {layers}, "num_attention_heads": {heads},
            "max_position_embeddings": 77, "hidden_act": "{act}", "projection_dim": {proj},
            "torch_dtype": "float16", "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}}"#,
            hidden * 4
        )
    }

    /// Configs as the hub's older repositories have them: `null` for defaults, no
    /// `timestep_spacing`, SD 1.5's PNDM sampler, SD 2.x's "!" only in special_tokens_map.json.
    #[test]
    fn real_repositories_configs_are_read_as_diffusers_reads_them() {
        let tmp = tempfile::tempdir().unwrap();
        let vae = r#"{"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
            "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "out_channels": 3, "sample_size": 768, "scaling_factor": 0.18215, "force_upcast": true}"#;

        let sd15 = tmp.path().join("sd-1.5");
        write(&sd15, "model_index.json", r#"{"_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "PNDMScheduler"]}"#);
        write(&sd15, "unet/config.json", r#"{"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
            "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false, "cross_attention_dim": 768,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
            "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}"#);
        write(&sd15, "vae/config.json", vae);
        write(&sd15, "text_encoder/config.json", &clip(768, 12, 12, "quick_gelu", 768));
        write(&sd15, "tokenizer/tokenizer_config.json", r#"{"pad_token": "<|endoftext|>", "model_max_length": 77}"#);
        write(&sd15, "scheduler/scheduler_config.json", r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null, "clip_sample": false}"#);
        let h = read_hub_folder(&sd15).unwrap();
        assert_eq!((h.kind, h.scheduler, h.spacing, h.steps_offset), (ModelKind::Sd15, None, None, 1));
        assert_eq!((h.arch.clip.pad_with.clone(), h.native_side), (None, Some(512)));
        assert!(h.arch.unet.blocks.iter().all(|b| b.heads == 8));
        let spec = read_model_spec(tmp.path(), "sd-1.5").unwrap();
        assert_eq!((spec.scheduler, spec.spacing, spec.steps_offset), (SchedulerKind::Ddim, TimestepSpacing::Leading, 1));
        assert_eq!(spec.files.unet.file, "unet/diffusion_pytorch_model.safetensors");
        assert_eq!(spec.files.tokenizer.file, "tokenizer/tokenizer.json", "nothing there yet: the first name is expected");

        let sd21 = tmp.path().join("sd-2.1");
        write(&sd21, "model_index.json", r#"{"_class_name": "StableDiffusionPipeline"}"#);
        write(&sd21, "unet/config.json", r#"{"_class_name": "UNet2DConditionModel", "attention_head_dim": [5, 10, 20, 20],
            "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 1024, "dual_cross_attention": false,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "layers_per_block": 2, "num_class_embeds": null, "only_cross_attention": false, "sample_size": 96,
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "upcast_attention": true, "use_linear_projection": true}"#);
        write(&sd21, "vae/config.json", vae);
        write(&sd21, "text_encoder/config.json", &clip(1024, 23, 16, "gelu", 512));
        write(&sd21, "tokenizer/vocab.json", "{}");
        write(&sd21, "tokenizer/special_tokens_map.json", r#"{"pad_token": "!", "eos_token": {"content": "<|endoftext|>"}}"#);
        write(&sd21, "tokenizer/tokenizer_config.json", r#"{"pad_token": "<|endoftext|>"}"#);
        write(&sd21, "scheduler/scheduler_config.json", r#"{"_class_name": "DDIMScheduler", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000,
            "prediction_type": "v_prediction", "set_alpha_to_one": false, "steps_offset": 1, "trained_betas": null}"#);
        let h = read_hub_folder(&sd21).unwrap();
        assert_eq!((h.kind, h.scheduler, h.prediction), (ModelKind::Sd21, Some(SchedulerKind::Ddim), Prediction::VPrediction));
        assert_eq!(h.arch.clip.pad_with.as_deref(), Some("!"), "special_tokens_map.json wins");
        let heads: Vec<usize> = h.arch.unet.blocks.iter().map(|b| b.heads).collect();
        assert_eq!(heads, [5, 10, 20, 20]);
        assert_eq!((h.native_side, h.files.tokenizer.as_str()), (Some(768), "tokenizer/vocab.json"));

        let xl = tmp.path().join("sdxl");
        write(&xl, "model_index.json", r#"{"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": true}"#);
        write(&xl, "unet/config.json", r#"{"_class_name": "UNet2DConditionModel", "addition_embed_type": "text_time",
            "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
            "block_out_channels": [320, 640, 1280], "class_embed_type": null, "conv_in_kernel": 3, "conv_out_kernel": 3,
            "cross_attention_dim": 2048, "cross_attention_norm": null,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "encoder_hid_dim": null, "layers_per_block": 2, "mid_block_only_cross_attention": null,
            "mid_block_type": "UNetMidBlock2DCrossAttn", "num_attention_heads": null,
            "projection_class_embeddings_input_dim": 2816, "resnet_time_scale_shift": "default", "sample_size": 128,
            "time_cond_proj_dim": null, "time_embedding_type": "positional", "transformer_layers_per_block": [1, 2, 10],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": null,
            "use_linear_projection": true}"#);
        write(&xl, "vae/config.json", &vae.replace("0.18215", "0.13025"));
        write(&xl, "text_encoder/config.json", &clip(768, 12, 12, "quick_gelu", 768));
        write(&xl, "text_encoder_2/config.json", &clip(1280, 32, 20, "gelu", 1280));
        write(&xl, "tokenizer_2/special_tokens_map.json", r#"{"pad_token": "!"}"#);
        write(&xl, "scheduler/scheduler_config.json", r#"{"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "interpolation_type": "linear",
            "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
            "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "timestep_spacing": "leading",
            "trained_betas": null, "use_karras_sigmas": false}"#);
        let h = read_hub_folder(&xl).unwrap();
        assert_eq!((h.kind, h.scheduler, h.spacing), (ModelKind::Sdxl, Some(SchedulerKind::Euler), Some(TimestepSpacing::Leading)));
        let depth: Vec<usize> = h.arch.unet.blocks.iter().map(|b| b.transformer_layers).collect();
        assert_eq!(depth, [0, 2, 10]);
        assert_eq!(h.arch.unet.addition_time_embed_dim, Some(256));
        assert_eq!((h.arch.clip2.unwrap().pad_with.as_deref(), h.vae_scale), (Some("!"), 0.13025));

        // The Turbo repositories: an Euler sampler with trailing spacing.
        let turbo = |class: &str| {
            write(&xl, "scheduler/scheduler_config.json", &format!(
                r#"{{"_class_name": "{class}", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                "timestep_spacing": "trailing", "steps_offset": 1, "prediction_type": "epsilon"}}"#));
            read_hub_folder(&xl).unwrap()
        };
        assert_eq!(turbo("EulerAncestralDiscreteScheduler").kind, ModelKind::SdxlTurbo);
        assert_eq!(turbo("DDIMScheduler").kind, ModelKind::Sdxl, "trailing DDIM is not a Turbo model");

        // What easel cannot run is refused with the file and the reason, never a panic.
        for (file, json, needle) in [
            ("scheduler/scheduler_config.json", r#"{"_class_name": "DDIMScheduler", "rescale_betas_zero_snr": true}"#, "zero-terminal-SNR"),
            ("scheduler/scheduler_config.json", r#"{"_class_name": "DDIMScheduler", "beta_schedule": "linear"}"#, "scaled_linear"),
            ("unet/config.json", r#"{"block_out_channels": [], "down_block_types": [], "up_block_types": []}"#, "empty"),
            ("unet/config.json", r#"{"block_out_channels": [320], "in_channels": 9, "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"]}"#, "inpainting"),
            ("model_index.json", r#"{"_class_name": "FluxPipeline"}"#, "FluxPipeline"),
            ("model_index.json", "not json", "model_index.json"),
        ] {
            let broken = tmp.path().join("broken");
            let _ = std::fs::remove_dir_all(&broken);
            for f in ["model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"] {
                std::fs::create_dir_all(broken.join(f).parent().unwrap()).unwrap();
                std::fs::copy(sd15.join(f), broken.join(f)).unwrap();
            }
            write(&broken, file, json);
            let err = read_hub_folder(&broken).unwrap_err();
            assert!(err.contains(needle), "{file}: {err}");
        }
    }
}
