//! Loading the parts of a model and running text -> latents -> image.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::preview::{latents_to_rgb, preview_due};
use super::scheduler::Schedule;
use super::spec::{ModelFile, ModelSpec, WeightDType};
use super::text::{ids_tensor, load_tokenizer, ClipText, PromptTokenizer};
use super::unet::{UNet, XlCond};
use super::vae::Vae;
use super::{DevicePreference, EngineError, GenerateRequest, Progress};

struct Encoder {
    tokenizer: PromptTokenizer,
    model: ClipText,
}

pub(super) struct Pipeline {
    pub spec: ModelSpec,
    device: Device,
    dtype: DType,
    clip: Encoder,
    clip2: Option<Encoder>,
    unet: UNet,
    vae: Vae,
}

fn pick_device(pref: DevicePreference) -> Device {
    match pref {
        DevicePreference::Cpu => Device::Cpu,
        DevicePreference::Gpu => gpu_device().unwrap_or(Device::Cpu),
    }
}

#[cfg(feature = "cuda")]
fn gpu_device() -> Option<Device> {
    Device::new_cuda(0).ok()
}

#[cfg(all(feature = "metal", not(feature = "cuda")))]
fn gpu_device() -> Option<Device> {
    Device::new_metal(0).ok()
}

#[cfg(not(any(feature = "cuda", feature = "metal")))]
fn gpu_device() -> Option<Device> {
    None
}

fn corrupt(spec: &ModelSpec, f: &ModelFile, e: impl std::fmt::Display) -> EngineError {
    EngineError::ModelCorrupt(format!(
        "The {} of model '{}' ({}) cannot be loaded: {e}",
        f.role,
        spec.name,
        spec.dir.join(&f.file).display()
    ))
}

fn weights<'a>(
    spec: &ModelSpec,
    f: &ModelFile,
    dtype: DType,
    dev: &Device,
) -> Result<VarBuilder<'a>, EngineError> {
    let path = spec.dir.join(&f.file);
    // Safety: the file is mapped read-only; model files are not modified while the server runs.
    unsafe { super::weights::from_file(&path, dtype, dev) }
        .map_err(|e| corrupt(spec, f, e))
}

fn tokenizer(
    spec: &ModelSpec,
    f: &ModelFile,
    arch: &super::spec::ClipArch,
) -> Result<PromptTokenizer, EngineError> {
    let path = spec.dir.join(&f.file);
    let tok = load_tokenizer(&path).map_err(|e| corrupt(spec, f, e))?;
    PromptTokenizer::new(tok, arch).map_err(|e| corrupt(spec, f, e))
}

impl Pipeline {
    pub fn load(spec: ModelSpec, pref: DevicePreference) -> Result<Self, EngineError> {
        if let Some(msg) = spec.missing_files_message() {
            return Err(EngineError::ModelMissing(msg));
        }
        let device = pick_device(pref);
        let dtype = match (&device, spec.dtype) {
            // Half precision on CPU is slow and poorly supported: always f32 there.
            _ if device.is_cpu() => DType::F32,
            (_, WeightDType::F32) => DType::F32,
            (_, WeightDType::F16) => DType::F16,
            (_, WeightDType::Bf16) => DType::BF16,
        };
        let arch = &spec.arch;
        let files = &spec.files;
        let clip = Encoder {
            tokenizer: tokenizer(&spec, &files.tokenizer, &arch.clip)?,
            model: ClipText::new(
                weights(&spec, &files.clip, dtype, &device)?,
                &arch.clip,
                false,
            )
            .map_err(|e| corrupt(&spec, &files.clip, e))?,
        };
        let clip2 = match (&arch.clip2, &files.clip2, &files.tokenizer2) {
            (Some(a), Some(wf), Some(tf)) => Some(Encoder {
                tokenizer: tokenizer(&spec, tf, a)?,
                model: ClipText::new(weights(&spec, wf, dtype, &device)?, a, true)
                    .map_err(|e| corrupt(&spec, wf, e))?,
            }),
            _ => None,
        };
        let pooled_dim = arch.clip2.as_ref().map_or(0, |c| c.projection_dim);
        let unet = UNet::new(
            weights(&spec, &files.unet, dtype, &device)?,
            &arch.unet,
            pooled_dim,
        )
        .map_err(|e| corrupt(&spec, &files.unet, e))?;
        // The VAE always runs in f32: SDXL's VAE overflows in f16, and it runs once per image.
        let vae = Vae::new(weights(&spec, &files.vae, DType::F32, &device)?, &arch.vae, false)
        .map_err(|e| corrupt(&spec, &files.vae, e))?;
        Ok(Self {
            spec,
            device,
            dtype,
            clip,
            clip2,
            unet,
            vae,
        })
    }

    pub fn device_name(&self) -> String {
        if self.device.is_cuda() {
            "cuda:0".to_string()
        } else if self.device.is_metal() {
            "metal:0".to_string()
        } else {
            "cpu".to_string()
        }
    }

    /// Text conditioning for the batch: `[uncond, cond]` with guidance, `[cond]` without.
    fn encode(&self, req: &GenerateRequest, cfg: bool) -> Result<(Tensor, Option<XlCond>), String> {
        let texts: Vec<&str> = if cfg {
            vec![&req.negative_prompt, &req.prompt]
        } else {
            vec![&req.prompt]
        };
        let run = |enc: &Encoder, text: &str| -> Result<super::text::TextOutput, String> {
            let ids = enc.tokenizer.encode(text)?;
            let ids = ids_tensor(ids, &self.device).map_err(|e| e.to_string())?;
            enc.model
                .forward(&ids, enc.tokenizer.eos())
                .map_err(|e| e.to_string())
        };
        let e = |e: candle_core::Error| e.to_string();
        let Some(clip2) = &self.clip2 else {
            let rows = texts
                .iter()
                .map(|t| Ok(run(&self.clip, t)?.last))
                .collect::<Result<Vec<_>, String>>()?;
            return Ok((Tensor::cat(&rows, 0).map_err(e)?, None));
        };
        // SDXL: penultimate layers of both encoders side by side, pooled from the second.
        let mut ctx = Vec::new();
        let mut pooled = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let a = run(&self.clip, t)?;
            let b = run(clip2, t)?;
            let c = Tensor::cat(&[&a.penultimate, &b.penultimate], D::Minus1).map_err(e)?;
            let p = b.pooled.ok_or("second text encoder has no projection")?;
            // diffusers' SDXL pipelines use zeros for an empty negative prompt
            // (force_zeros_for_empty_prompt).
            if cfg && i == 0 && t.trim().is_empty() {
                ctx.push(c.zeros_like().map_err(e)?);
                pooled.push(p.zeros_like().map_err(e)?);
            } else {
                ctx.push(c);
                pooled.push(p);
            }
        }
        let batch = texts.len();
        let (h, w) = (req.height as f32, req.width as f32);
        // Micro-conditioning: original size = target size = requested size, no crop.
        let ids: Vec<f32> = (0..batch).flat_map(|_| [h, w, 0.0, 0.0, h, w]).collect();
        let time_ids = Tensor::from_vec(ids, (batch, 6), &self.device).map_err(e)?;
        let cond = XlCond {
            pooled: Tensor::cat(&pooled, 0).map_err(e)?,
            time_ids,
        };
        Ok((Tensor::cat(&ctx, 0).map_err(e)?, Some(cond)))
    }

    pub fn generate(
        &self,
        req: &GenerateRequest,
        on_step: &mut dyn FnMut(Progress<'_>),
        cancel: &AtomicBool,
    ) -> Result<image::RgbImage, EngineError> {
        self.spec.validate(req)?;
        let cancelled = || cancel.load(Ordering::Relaxed);
        if cancelled() {
            return Err(EngineError::Cancelled);
        }
        let cfg = req.guidance > 1.0;
        let (context, xl) = self
            .encode(req, cfg)
            .map_err(EngineError::InferenceFailed)?;
        let context = context.to_dtype(self.dtype).map_err(failed)?;
        let schedule = Schedule::for_model(&self.spec, req.steps as usize);
        let (lh, lw) = (req.height as usize / 8, req.width as usize / 8);
        let mut rng = ChaCha8Rng::seed_from_u64(req.seed);
        let shape = (1, 4, lh, lw);
        let mut latents = (gaussian(&mut rng, shape, &self.device).map_err(failed)?
            * schedule.init_noise_sigma())
        .map_err(failed)?;
        let total = req.steps;
        let is_xl = self.spec.kind.is_xl();
        for (i, &t) in schedule.timesteps().iter().enumerate() {
            if cancelled() {
                return Err(EngineError::Cancelled);
            }
            let step = (|| -> candle_core::Result<_> {
                let input = if cfg {
                    Tensor::cat(&[&latents, &latents], 0)?
                } else {
                    latents.clone()
                };
                let input = schedule
                    .scale_model_input(&input, i)?
                    .to_dtype(self.dtype)?;
                let out = self
                    .unet
                    .forward(&input, t, &context, xl.as_ref())?
                    .to_dtype(DType::F32)?;
                let guided = if cfg {
                    let (u, c) = (out.get(0)?, out.get(1)?);
                    (&u + ((c - &u)? * req.guidance)?)?.unsqueeze(0)?
                } else {
                    out
                };
                // Drawn in order from the same RNG, so Euler Ancestral stays seed-determined.
                let noise = if schedule.needs_noise(i) {
                    Some(gaussian(&mut rng, shape, &self.device)?)
                } else {
                    None
                };
                schedule.step(i, &guided, &latents, noise.as_ref())
            })()
            .map_err(failed)?;
            latents = step.prev;
            let n = i as u32 + 1;
            let preview = if preview_due(n, total) {
                Some(latents_to_rgb(&step.pred_original, is_xl).map_err(failed)?)
            } else {
                None
            };
            on_step(Progress {
                step: n,
                total,
                preview: preview.as_ref(),
            });
        }
        if cancelled() {
            return Err(EngineError::Cancelled);
        }
        self.decode(&latents).map_err(failed)
    }

    fn decode(&self, latents: &Tensor) -> candle_core::Result<image::RgbImage> {
        let img = self.vae.decode_tiled(&(latents / self.spec.vae_scale)?)?;
        let img = ((img.get(0)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
        let img = (img * 255.0)?
            .round()?
            .to_dtype(DType::U8)?
            .permute((1, 2, 0))?;
        let (h, w, _) = img.dims3()?;
        let raw = img.flatten_all()?.to_vec1::<u8>()?;
        image::RgbImage::from_raw(w as u32, h as u32, raw)
            .ok_or_else(|| candle_core::Error::Msg("decoded image has the wrong size".into()))
    }
}

/// What a text encoder gives for one prompt (see [`Pipeline::encode_text`]).
pub struct TextEncoding {
    /// Last layer after the final layer norm: `[1, tokens, dim]`.
    pub last: Tensor,
    /// The penultimate layer's output: `[1, tokens, dim]`.
    pub penultimate: Tensor,
    /// `text_projection` of the end token's state for an encoder with a projection, else the
    /// end token's state itself (diffusers' `text_embeds` / `pooler_output`).
    pub pooled: Tensor,
}

/// The model's parts one by one, for parity checks against diffusers and for benches.
impl Pipeline {
    fn encoder(&self, second: bool) -> Result<&Encoder, EngineError> {
        match second {
            false => Ok(&self.clip),
            true => self.clip2.as_ref().ok_or_else(|| {
                EngineError::InvalidParams(format!("model '{}' has one text encoder", self.spec.name))
            }),
        }
    }

    /// The padded token ids of the first (or, for SDXL, `second`) tokenizer.
    pub fn tokenize(&self, second: bool, text: &str) -> Result<Vec<u32>, EngineError> {
        self.encoder(second)?.tokenizer.encode(text).map_err(EngineError::InferenceFailed)
    }

    pub fn encode_text(&self, second: bool, ids: &[u32]) -> Result<TextEncoding, EngineError> {
        let enc = self.encoder(second)?;
        let ids = ids_tensor(ids.to_vec(), &self.device).map_err(failed)?;
        let out = enc.model.forward(&ids, enc.tokenizer.eos()).map_err(failed)?;
        let pooled = match out.pooled {
            Some(p) => p,
            None => {
                let at = ids.to_vec2::<u32>().map_err(failed)?[0]
                    .iter()
                    .position(|&t| t == enc.tokenizer.eos())
                    .unwrap_or(0);
                out.last.get(0).and_then(|r| r.get(at)).and_then(|r| r.unsqueeze(0)).map_err(failed)?
            }
        };
        Ok(TextEncoding { last: out.last, penultimate: out.penultimate, pooled })
    }

    /// One UNet call: `latents` `[batch, 4, h, w]`, `context` `[batch, tokens, dim]`; for SDXL
    /// `xl` = (pooled `[batch, dim]`, time ids `[batch, 6]`).
    pub fn predict(
        &self,
        latents: &Tensor,
        timestep: f64,
        context: &Tensor,
        xl: Option<(&Tensor, &Tensor)>,
    ) -> Result<Tensor, EngineError> {
        let cond = xl.map(|(pooled, time_ids)| XlCond {
            pooled: pooled.clone(),
            time_ids: time_ids.clone(),
        });
        let cast = |t: &Tensor| t.to_device(&self.device)?.to_dtype(self.dtype);
        let (x, c) = (cast(latents).map_err(failed)?, cast(context).map_err(failed)?);
        self.unet
            .forward(&x, timestep, &c, cond.as_ref())
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(failed)
    }

    /// The VAE's decode of latents already divided by the scale: `[batch, 3, 8h, 8w]` in about
    /// -1..1, unclamped.
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor, EngineError> {
        let z = latents.to_device(&self.device).map_err(failed)?;
        self.vae.decode(&z).map_err(failed)
    }
}

fn failed(e: candle_core::Error) -> EngineError {
    EngineError::InferenceFailed(e.to_string())
}

/// Unit normal noise from our RNG (Box-Muller), built on the host then moved to `dev`.
pub(super) fn gaussian(
    rng: &mut ChaCha8Rng,
    shape: (usize, usize, usize, usize),
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln stays finite
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        v.push((r * a.cos()) as f32);
        v.push((r * a.sin()) as f32);
    }
    v.truncate(n);
    Tensor::from_vec(v, shape, dev)
}
