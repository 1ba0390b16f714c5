//! Training a small model of any SD 1.5-shaped description from pictures and captions, with
//! candle's autograd: the VAE first (reconstruction from the latent mean), then the text encoder
//! and UNet together (ε- or v-prediction, as the description says, on SD's noise schedule,
//! min-SNR weighting, caption dropout for classifier-free guidance, an exponential moving
//! average of the weights). The modules are the
//! ones `Engine::load` builds, so the saved files load through the normal path.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

use super::pipeline::gaussian;
use super::scheduler::alphas_cumprod;
use super::spec::{ModelSpec, Prediction};
use super::text::{ClipText, PromptTokenizer};
use super::tiny::seeded_init;
use super::unet::UNet;
use super::vae::Vae;

pub type Result<T> = candle_core::Result<T>;

/// Weights being trained, and the moving average that is saved.
struct Trained {
    map: VarMap,
    ema: Vec<(Var, Tensor)>,
}

impl Trained {
    fn new(map: VarMap) -> Self {
        Self {
            map,
            ema: Vec::new(),
        }
    }

    fn start_average(&mut self) -> Result<()> {
        let vars = self.map.all_vars();
        self.ema = vars
            .into_iter()
            .map(|v| {
                let copy = v.as_tensor().detach().copy()?;
                Ok((v, copy))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    fn update_average(&mut self, decay: f64) -> Result<()> {
        for (var, avg) in &mut self.ema {
            // Detached: a sum built from a variable records its ops, and each step's average
            // would keep every earlier one alive (24 GB after 1 250 steps).
            *avg = ((&*avg * decay)? + (var.as_tensor().detach() * (1.0 - decay))?)?.detach();
        }
        Ok(())
    }

    /// The averaged weights when averaging, else the weights, by name in `dtype`.
    fn tensors(&self, dtype: DType) -> Result<HashMap<String, Tensor>> {
        let data = self.map.data().lock().expect("var map lock");
        let mut out = HashMap::new();
        for (name, var) in data.iter() {
            let averaged = self
                .ema
                .iter()
                .find(|(v, _)| v.as_tensor().id() == var.as_tensor().id());
            let t = averaged.map_or_else(|| var.as_tensor().clone(), |(_, avg)| avg.clone());
            out.insert(name.clone(), t.to_dtype(dtype)?);
        }
        Ok(out)
    }
}

/// A model under training.
pub struct Trainer {
    spec: ModelSpec,
    dev: Device,
    tokenizer: PromptTokenizer,
    clip: (Trained, ClipText),
    unet: (Trained, UNet),
    vae: (Trained, Vae),
    alphas_cumprod: Vec<f64>,
    latent_scale: f64,
    steps: usize,
    /// A fixed random direction per vocabulary word and the weight of the loss that keeps each
    /// token's output near its word's direction (`keep_words_apart`).
    word_directions: Option<(Tensor, f64)>,
    /// The weight of the twin loss (`contrast_twins`): rows come in pairs.
    twin_weight: Option<f64>,
}

/// What one step reports.
pub struct StepReport {
    /// The picture's loss (the VAE's plain L1, or the weighted diffusion loss).
    pub loss: f32,
    /// The word loss beside it, unweighted, when [`Trainer::keep_words_apart`] is on.
    pub word_loss: Option<f32>,
    /// The twin loss, unweighted, when [`Trainer::contrast_twins`] is on.
    pub twin_loss: Option<f32>,
}

/// The parts of [`Trainer::diffusion_loss`]: the picture's, and with their weights the word
/// loss when [`Trainer::keep_words_apart`] is on and the twin loss when
/// [`Trainer::contrast_twins`] is.
pub struct DiffusionLoss {
    pub picture: Tensor,
    pub words: Option<(Tensor, f64)>,
    pub twins: Option<(Tensor, f64)>,
}

impl DiffusionLoss {
    /// What the gradients are taken of.
    pub fn total(&self) -> Result<Tensor> {
        let mut total = self.picture.clone();
        for (part, weight) in self.words.iter().chain(&self.twins) {
            total = (total + (part * *weight)?)?;
        }
        Ok(total)
    }
}

fn images_tensor(images: &[RgbImage], dev: &Device) -> Result<Tensor> {
    let (w, h) = images[0].dimensions();
    let mut data = Vec::with_capacity(images.len() * 3 * (w * h) as usize);
    for img in images {
        for c in 0..3 {
            data.extend(img.pixels().map(|p| p.0[c] as f32 / 127.5 - 1.0));
        }
    }
    Tensor::from_vec(data, (images.len(), 3, h as usize, w as usize), dev)
}

/// The gradients of a batch's loss, computed as two halves at once: `loss_of(start, len)` is
/// the mean loss of rows `start..start + len` (and a figure to report), and each half runs
/// forward and backward on its own rayon task. On 2 cores one batch's many small ops left a
/// core waiting a third of the time; two half-batches keep both busy (1.5x the rows per second).
/// Returns the gradients of the row-weighted mean of the halves' losses (the whole batch's
/// mean) and the reported figures' means.
fn in_halves<F, const N: usize>(rows: usize, loss_of: F) -> Result<(GradStore, [f32; N])>
where
    F: Fn(usize, usize) -> Result<(Tensor, [f32; N])> + Sync,
{
    let half = rows.div_ceil(2);
    let run = |start: usize, len: usize| -> Result<Option<(GradStore, [f32; N])>> {
        if len == 0 {
            return Ok(None);
        }
        let share = len as f64 / rows as f64;
        let (loss, report) = loss_of(start, len)?;
        Ok(Some((
            (loss * share)?.backward()?,
            report.map(|r| r * share as f32),
        )))
    };
    let (first, second) = rayon::join(|| run(0, half), || run(half, rows - half));
    let (mut grads, mut report) = first?
        .ok_or_else(|| candle_core::Error::Msg("a training step needs at least one row".into()))?;
    if let Some((more, r)) = second? {
        // Variables' gradients add up; each half's own intermediate tensors are distinct.
        grads.extend(more)?;
        for (sum, r) in report.iter_mut().zip(r) {
            *sum += r;
        }
    }
    Ok((grads, report))
}

impl Trainer {
    /// Fresh weights for `spec` from `seed`; `tokenizer` must fit the text encoder.
    pub fn new(
        spec: ModelSpec,
        tokenizer: Tokenizer,
        seed: u64,
    ) -> std::result::Result<Self, String> {
        let dev = Device::Cpu;
        let arch = spec.arch.clone();
        let tokenizer = PromptTokenizer::new(tokenizer, &arch.clip)?;
        let e = |e: candle_core::Error| e.to_string();
        let vb = |m: &VarMap| VarBuilder::from_varmap(m, DType::F32, &dev);
        let clip_map = VarMap::new();
        let clip = ClipText::new(vb(&clip_map), &arch.clip, false).map_err(e)?;
        let unet_map = VarMap::new();
        let unet = UNet::new(vb(&unet_map), &arch.unet, 0).map_err(e)?;
        let vae_map = VarMap::new();
        let vae = Vae::new(vb(&vae_map), &arch.vae, true).map_err(e)?;
        for (i, m) in [&clip_map, &unet_map, &vae_map].into_iter().enumerate() {
            seeded_init(m, seed.wrapping_add(i as u64)).map_err(e)?;
        }
        Ok(Self {
            spec,
            dev,
            tokenizer,
            clip: (Trained::new(clip_map), clip),
            unet: (Trained::new(unet_map), unet),
            vae: (Trained::new(vae_map), vae),
            alphas_cumprod: alphas_cumprod(),
            latent_scale: 1.0,
            steps: 0,
            word_directions: None,
            twin_weight: None,
        })
    }

    pub fn vae_optimizer(&self, lr: f64) -> Result<AdamW> {
        AdamW::new(self.vae.0.map.all_vars(), adamw(lr))
    }

    pub fn diffusion_optimizer(&self, lr: f64) -> Result<AdamW> {
        let mut vars = self.clip.0.map.all_vars();
        vars.extend(self.unet.0.map.all_vars());
        AdamW::new(vars, adamw(lr))
    }

    /// One VAE step on `images`: L1 reconstruction from the latent mean, plus `reg` x the mean
    /// square of the latents to keep them bounded. No sampling: the decoder learns faster from
    /// the mean, and the diffusion model is trained on means too.
    ///
    /// `pixel_weight` (`[n, 1, h, w]`, optional) weighs each pixel's error: unweighted, small
    /// objects came back in the wrong colour (a pink square as a bluish smudge) while the
    /// background was right. The reported loss is the plain L1.
    pub fn vae_step(
        &mut self,
        images: &[RgbImage],
        pixel_weight: Option<&Tensor>,
        reg: f64,
        opt: &mut AdamW,
    ) -> Result<StepReport> {
        let (grads, [l1]) = in_halves(images.len(), |start, len| {
            let x = images_tensor(&images[start..start + len], &self.dev)?;
            let (mean, _) = self.vae.1.encode(&x)?;
            let rec = self.vae.1.decode(&mean)?;
            let err = (rec - &x)?.abs()?;
            let l1 = err.mean_all()?;
            let weighted = match pixel_weight {
                Some(w) => err.broadcast_mul(&w.narrow(0, start, len)?)?.mean_all()?,
                None => l1.clone(),
            };
            let loss = (&weighted + (mean.sqr()?.mean_all()? * reg)?)?;
            Ok((loss, [l1.to_scalar::<f32>()?]))
        })?;
        opt.step(&grads)?;
        Ok(StepReport {
            loss: l1,
            word_loss: None,
            twin_loss: None,
        })
    }

    /// The clean latents of `images`, scaled: `[n, 4, side / 8, side / 8]`.
    pub fn latents(&self, images: &[RgbImage]) -> Result<Tensor> {
        let (mean, _) = self.vae.1.encode(&images_tensor(images, &self.dev)?)?;
        (mean.detach() * self.latent_scale)?.contiguous()
    }

    /// `images` encoded (latent mean) and decoded again: what the VAE keeps of them. With
    /// `noise` above 0, Gaussian noise of that standard deviation (in scaled latents' units, the
    /// diffusion model's) from `seed` is added before decoding: how much of a shape survives
    /// latents as far off as a diffusion model's.
    pub fn reconstruct(&self, images: &[RgbImage], noise: f64, seed: u64) -> Result<Vec<RgbImage>> {
        let (mean, _) = self.vae.1.encode(&images_tensor(images, &self.dev)?)?;
        let mean = match noise > 0.0 {
            true => {
                let n = gaussian(
                    &mut ChaCha8Rng::seed_from_u64(seed),
                    mean.dims4()?,
                    &self.dev,
                )?;
                (mean + (n * (noise / self.latent_scale))?)?
            }
            false => mean,
        };
        let x = ((self.vae.1.decode(&mean)?.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?.round()?;
        let (_, _, h, w) = x.dims4()?;
        let pixels = x
            .permute((0, 2, 3, 1))?
            .to_dtype(DType::U8)?
            .flatten_all()?
            .to_vec1::<u8>()?;
        let per = h * w * 3;
        Ok(pixels
            .chunks_exact(per)
            .map(|p| {
                RgbImage::from_raw(w as u32, h as u32, p.to_vec()).expect("one picture's bytes")
            })
            .collect())
    }

    /// Sets the latent scale so that the latents of `images` have standard deviation `std`;
    /// returns it. SD's 0.18215 made its 64² latents unit-variance; a model with smaller latents
    /// needs less than 1, or its noise schedule leaves the picture's colours readable through
    /// the noise even at the last timestep, and the model learns to ignore the prompt.
    pub fn fit_latent_scale(&mut self, images: &[RgbImage], std: f64) -> Result<f64> {
        self.latent_scale = 1.0;
        let z = self.latents(images)?;
        let measured = z.flatten_all()?.var(0)?.sqrt()?.to_scalar::<f32>()? as f64;
        self.latent_scale = std / measured;
        Ok(self.latent_scale)
    }

    /// Adds to the diffusion loss `weight` x the cross-entropy of reading each token's word back
    /// from the text encoder's output along fixed random directions (one per word, unit
    /// length). Learnt only through the UNet, the encoder gave "circle" and "square" nearly the
    /// same output (a fifth of the distance between other shape words), so the UNet could
    /// not tell them apart; the directions are fixed so that only the encoder's outputs, not a
    /// head's scale, can lower this loss.
    pub fn keep_words_apart(&mut self, weight: f64, seed: u64) -> Result<()> {
        let clip = &self.spec.arch.clip;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w = gaussian(&mut rng, (1, 1, clip.vocab_size, clip.embed_dim), &self.dev)?
            .reshape((clip.vocab_size, clip.embed_dim))?;
        let w = w.broadcast_div(&w.sqr()?.sum_keepdim(1)?.sqrt()?)?;
        self.word_directions = Some((w.t()?.contiguous()?, weight));
        Ok(())
    }

    /// Adds to the diffusion loss `weight` x the twin loss: rows come in pairs (0 and 1, 2 and
    /// 3, ...; a batch a multiple of four, so that each half-batch holds whole pairs) whose
    /// latents differ in one object's shape and whose captions differ in its word, noised alike
    /// (the same timestep and noise, the caption dropped for both or neither); the twin loss is
    /// the weighted squared difference of the pair's errors, which is the error in how the
    /// prediction changes with the word. In the plain loss that change is a small part (a
    /// square's corners) of a large error the pair shares (the noise it has not yet removed), and
    /// the model learnt to paint one blob for "circle" and "square".
    pub fn contrast_twins(&mut self, weight: f64) {
        self.twin_weight = Some(weight);
    }

    /// Starts the moving averages of the text encoder and UNet (call before diffusion steps).
    pub fn start_averaging(&mut self) -> Result<()> {
        self.clip.0.start_average()?;
        self.unet.0.start_average()
    }

    /// One denoising step: noise the latents at random timesteps and learn to predict that
    /// noise from the captions (an empty caption with probability `dropout`).
    /// `z0`: clean latents from [`Trainer::latents`], one row per caption.
    ///
    /// Timesteps are uniform: the objects' shapes and places are decided in the middle of the
    /// schedule, and a run that gave half its rows to the noisiest quarter (where only the
    /// background shows) learnt backgrounds and left objects at chance.
    pub fn diffusion_step(
        &mut self,
        z0: &Tensor,
        captions: &[String],
        where_weight: Option<&Tensor>,
        dropout: f64,
        opt: &mut AdamW,
        rng: &mut ChaCha8Rng,
    ) -> Result<StepReport> {
        let n = self.alphas_cumprod.len();
        let twins = self.twin_weight.is_some();
        if twins && !captions.len().is_multiple_of(4) {
            return Err(candle_core::Error::Msg(format!(
                "twins need a batch of whole pairs in each half (a multiple of 4), not {}",
                captions.len()
            )));
        }
        let mut ts: Vec<usize> = (0..captions.len())
            .map(|_| rng.random_range(0..n))
            .collect();
        let mut drop: Vec<bool> = (0..captions.len())
            .map(|_| rng.random_bool(dropout))
            .collect();
        if twins {
            for i in (1..captions.len()).step_by(2) {
                ts[i] = ts[i - 1];
                drop[i] = drop[i - 1];
            }
        }
        let dropped: Vec<&str> = captions
            .iter()
            .zip(&drop)
            .map(|(c, &d)| if d { "" } else { c.as_str() })
            .collect();
        // Each half draws its noise from its own seed, so the step does not depend on which
        // half finishes first.
        let seeds: [u64; 2] = [rng.random(), rng.random()];
        let (grads, [loss, word_loss, twin_loss]) = in_halves(captions.len(), |start, len| {
            let mut rng = ChaCha8Rng::seed_from_u64(seeds[usize::from(start > 0)]);
            let weight = where_weight.map(|w| w.narrow(0, start, len)).transpose()?;
            let loss = self.diffusion_loss(
                &z0.narrow(0, start, len)?,
                &dropped[start..start + len],
                &ts[start..start + len],
                weight.as_ref(),
                &mut rng,
            )?;
            let part = |p: &Option<(Tensor, f64)>| match p {
                Some((part, _)) => part.to_scalar::<f32>(),
                None => Ok(0.0),
            };
            let report = [
                loss.picture.to_scalar::<f32>()?,
                part(&loss.words)?,
                part(&loss.twins)?,
            ];
            Ok((loss.total()?, report))
        })?;
        opt.step(&grads)?;
        self.steps += 1;
        let decay = 0.999f64.min((1.0 + self.steps as f64) / (10.0 + self.steps as f64));
        self.clip.0.update_average(decay)?;
        self.unet.0.update_average(decay)?;
        Ok(StepReport {
            loss,
            word_loss: self.word_directions.is_some().then_some(word_loss),
            twin_loss: twins.then_some(twin_loss),
        })
    }

    /// The weighted ε-prediction loss of the current weights on `z0` noised at timesteps `ts`
    /// (noise from `rng`), conditioned on `captions` (one per row). Used by
    /// [`Trainer::diffusion_step`] and to check what the text is worth: the loss with the right
    /// captions against shuffled ones.
    ///
    /// Weights: min-SNR-5 (`min(snr, 5) / snr`) where the picture shows through the noise, and
    /// up to 10x the ε error where it does not (snr < 1: 1 / snr, the x0 error): there ε ≈ the
    /// noisy latents, so the error left is small yet it is all about what the prompt says.
    ///
    /// `where_weight` (`[b, 1, h, w]`, optional) weighs each latent pixel's error: small objects
    /// are a few percent of a picture, and unweighted their colour, shape and place were left at
    /// chance while the background was learnt.
    ///
    /// With [`Trainer::keep_words_apart`] the word loss comes beside it.
    pub fn diffusion_loss(
        &self,
        z0: &Tensor,
        captions: &[&str],
        ts: &[usize],
        where_weight: Option<&Tensor>,
        rng: &mut ChaCha8Rng,
    ) -> Result<DiffusionLoss> {
        let b = captions.len();
        let (_, channels, height, width) = z0.dims4()?;
        let noise = match self.twin_weight {
            // One noise per pair.
            Some(_) => gaussian(rng, (b / 2, channels, height, width), &self.dev)?
                .unsqueeze(1)?
                .broadcast_as((b / 2, 2, channels, height, width))?
                .reshape((b, channels, height, width))?,
            None => gaussian(rng, (b, channels, height, width), &self.dev)?,
        };
        let col = |f: &dyn Fn(f64) -> f64| -> Result<Tensor> {
            let v: Vec<f32> = ts
                .iter()
                .map(|&t| f(self.alphas_cumprod[t]) as f32)
                .collect();
            Tensor::from_vec(v, (b, 1, 1, 1), &self.dev)
        };
        let zt = (z0.broadcast_mul(&col(&|a| a.sqrt())?)?
            + noise.broadcast_mul(&col(&|a| (1.0 - a).sqrt())?)?)?;
        let (ids, context) = self.encode_batch(captions)?;
        let words = match &self.word_directions {
            Some((directions, weight)) => {
                Some((self.word_loss(&ids, &context, directions)?, *weight))
            }
            None => None,
        };
        let t = Tensor::from_vec(
            ts.iter().map(|&t| t as f32).collect::<Vec<_>>(),
            b,
            &self.dev,
        )?;
        let pred = self.unet.1.forward_at(&zt, &t, &context, None)?;
        let (target, weight) = match self.spec.prediction {
            Prediction::Epsilon => (
                noise,
                col(&|a| {
                    let snr = a / (1.0 - a);
                    if snr >= 1.0 {
                        snr.min(5.0) / snr
                    } else {
                        (1.0 / snr).min(10.0)
                    }
                })?,
            ),
            // v = √ᾱ·ε − √(1−ᾱ)·x0: at high noise the target is the picture itself, so the
            // loss there is all about what the prompt says. Its x0 error weighs snr + 1, capped
            // at 6 (min-SNR) where the picture already shows.
            Prediction::VPrediction => (
                (noise.broadcast_mul(&col(&|a| a.sqrt())?)?
                    - z0.broadcast_mul(&col(&|a| (1.0 - a).sqrt())?)?)?,
                col(&|a| {
                    let snr1 = 1.0 / (1.0 - a);
                    snr1.min(6.0) / snr1
                })?,
            ),
        };
        let weight = weight.flatten_all()?;
        let error = (pred - &target)?;
        let mut err = error.sqr()?;
        if let Some(w) = where_weight {
            err = err.broadcast_mul(w)?;
        }
        let per_row = err.flatten_from(1)?.mean(D::Minus1)?;
        let twins = match self.twin_weight {
            Some(twin_weight) => {
                let pairs = error.reshape((b / 2, 2, channels, height, width))?;
                let mut apart = (pairs.narrow(1, 0, 1)? - pairs.narrow(1, 1, 1)?)?
                    .squeeze(1)?
                    .sqr()?;
                if let Some(pixel_weight) = where_weight {
                    let pair_pixels = pixel_weight
                        .reshape((b / 2, 2, 1, height, width))?
                        .mean(1)?;
                    apart = apart.broadcast_mul(&pair_pixels)?;
                }
                let per_pair = apart.flatten_from(1)?.mean(D::Minus1)?;
                let pair_weight = weight.reshape((b / 2, 2))?.narrow(1, 0, 1)?.squeeze(1)?;
                Some(((per_pair * pair_weight)?.mean_all()?, twin_weight))
            }
            None => None,
        };
        Ok(DiffusionLoss {
            picture: (per_row * weight)?.mean_all()?,
            words,
            twins,
        })
    }

    /// The captions' token ids (one padded row each, flattened) and the text encoder's output
    /// for them: `[captions, tokens, dim]`.
    fn encode_batch(&self, captions: &[&str]) -> Result<(Vec<u32>, Tensor)> {
        let mut ids = Vec::with_capacity(captions.len());
        for caption in captions {
            ids.push(
                self.tokenizer
                    .encode(caption)
                    .map_err(candle_core::Error::Msg)?,
            );
        }
        let len = ids[0].len();
        let ids = ids.concat();
        let tensor = Tensor::from_vec(ids.clone(), (captions.len(), len), &self.dev)?;
        let context = self.clip.1.forward(&tensor, self.tokenizer.eos())?.last;
        Ok((ids, context))
    }

    /// The mean cross-entropy of reading each caption word back from `context` along its
    /// direction. The start token (the same output for every caption) and the padding (the end
    /// token repeated, most positions) are read back trivially: only the caption's own words
    /// count.
    fn word_loss(&self, ids: &[u32], context: &Tensor, directions: &Tensor) -> Result<Tensor> {
        let (b, len, dim) = context.dims3()?;
        let eos = self.tokenizer.eos();
        let counted: Vec<f32> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| f32::from(u8::from(i % len != 0 && id != eos)))
            .collect();
        let count = counted.iter().sum::<f32>().max(1.0);
        let counted = Tensor::from_vec(counted, b * len, &self.dev)?;
        let ids = Tensor::from_vec(ids.to_vec(), (b * len, 1), &self.dev)?;
        let logits = context.reshape((b * len, dim))?.matmul(directions)?;
        let read = candle_nn::ops::log_softmax(&logits, D::Minus1)?
            .gather(&ids, 1)?
            .squeeze(1)?;
        (read * counted)?.sum_all()? * (-1.0 / count as f64)
    }

    /// The text encoder's output for `caption`: `[1, tokens, dim]`.
    pub fn encode_caption(&self, caption: &str) -> Result<Tensor> {
        Ok(self.encode_batch(&[caption])?.1)
    }

    /// The text encoder's output at `word`'s first place in `caption`: `[dim]`.
    pub fn output_at_word(&self, caption: &str, word: &str) -> Result<Tensor> {
        let tokens = |text: &str| self.tokenizer.encode(text).map_err(candle_core::Error::Msg);
        // The word alone: <|startoftext|> WORD <|endoftext|>...
        let id = tokens(word)?[1];
        let at = tokens(caption)?
            .iter()
            .position(|&t| t == id)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("{word:?} is not a word of {caption:?}"))
            })?;
        self.encode_caption(caption)?
            .narrow(1, at, 1)?
            .flatten_all()
    }

    /// What the UNet makes of `z0` noised to timestep `t` (noise from `seed`) under `caption`:
    /// its estimate of the clean latents (`[1, 4, h, w]` each). For telling how much the
    /// picture follows a word at each stage of denoising.
    pub fn clean_estimate(
        &self,
        z0: &Tensor,
        t: usize,
        caption: &str,
        seed: u64,
    ) -> Result<Tensor> {
        let a = self.alphas_cumprod[t];
        let noise = gaussian(&mut ChaCha8Rng::seed_from_u64(seed), z0.dims4()?, &self.dev)?;
        let zt = ((z0 * a.sqrt())? + (noise * (1.0 - a).sqrt())?)?;
        let t = Tensor::new(&[t as f32], &self.dev)?;
        let pred = self
            .unet
            .1
            .forward_at(&zt, &t, &self.encode_caption(caption)?, None)?;
        match self.spec.prediction {
            Prediction::VPrediction => (zt * a.sqrt())? - (pred * (1.0 - a).sqrt())?,
            Prediction::Epsilon => (zt - (pred * (1.0 - a).sqrt())?)? / a.sqrt(),
        }
    }

    /// The scale the saved model.toml must carry (`vae_scale`).
    pub fn latent_scale(&self) -> f64 {
        self.latent_scale
    }

    /// Continues from a model this tool wrote (`save`'s files in `dir`, the latent scale of its
    /// model.toml): every variable takes the saved value, so training picks up where it ended.
    pub fn resume(&mut self, dir: &Path, latent_scale: f64) -> Result<()> {
        let files = &self.spec.files;
        for (map, file) in [
            (&self.clip.0.map, &files.clip.file),
            (&self.unet.0.map, &files.unet.file),
            (&self.vae.0.map, &files.vae.file),
        ] {
            load_into(map, &dir.join(file), &self.dev)?;
        }
        self.latent_scale = latent_scale;
        Ok(())
    }

    /// Takes the VAE of a model this tool wrote in `dir` (text encoder and UNet stay fresh):
    /// for trying diffusion recipes without retraining the VAE each time.
    pub fn reuse_vae(&mut self, dir: &Path) -> Result<()> {
        load_into(
            &self.vae.0.map,
            &dir.join(&self.spec.files.vae.file),
            &self.dev,
        )
    }

    /// Writes the three weight files of the spec into `dir` in `dtype` (averaged weights for
    /// the text encoder and UNet).
    pub fn save(&self, dir: &Path, dtype: DType) -> Result<()> {
        let files = &self.spec.files;
        candle_core::safetensors::save(&self.clip.0.tensors(dtype)?, dir.join(&files.clip.file))?;
        candle_core::safetensors::save(&self.unet.0.tensors(dtype)?, dir.join(&files.unet.file))?;
        candle_core::safetensors::save(&self.vae.0.tensors(dtype)?, dir.join(&files.vae.file))
    }

    /// Parameter counts: text encoder, UNet, VAE.
    pub fn parameter_counts(&self) -> [usize; 3] {
        let count = |m: &VarMap| m.all_vars().iter().map(|v| v.elem_count()).sum();
        [
            count(&self.clip.0.map),
            count(&self.unet.0.map),
            count(&self.vae.0.map),
        ]
    }
}

/// Sets every variable of `map` from the same-named tensor of the safetensors file at `path`.
fn load_into(map: &VarMap, path: &Path, dev: &Device) -> Result<()> {
    let saved = candle_core::safetensors::load(path, dev)?;
    for (name, var) in map.data().lock().expect("var map lock").iter() {
        // Older runs wrote the text encoder without its `text_model.` prefix.
        let t = saved
            .get(name)
            .or_else(|| saved.get(name.strip_prefix("text_model.")?))
            .ok_or_else(|| candle_core::Error::Msg(format!("{} has no {name}", path.display())))?;
        var.set(&t.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

fn adamw(lr: f64) -> ParamsAdamW {
    ParamsAdamW {
        lr,
        weight_decay: 0.0,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::max_abs;
    use crate::engine::spec::read_model_spec;

    /// A model built from trainable variables (plain-op layer norm and softmax, our convolution
    /// op) computes what the same weights compute when loaded (candle's fused kernels).
    #[test]
    fn trainable_modules_compute_what_loaded_ones_do() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let spec = read_model_spec(&dir, "shapes").unwrap();
        let dev = Device::Cpu;
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let trained = (
            UNet::new(vb.pp("unet"), &spec.arch.unet, 0).unwrap(),
            ClipText::new(vb.pp("clip"), &spec.arch.clip, false).unwrap(),
            Vae::new(vb.pp("vae"), &spec.arch.vae, true).unwrap(),
        );
        seeded_init(&map, 5).unwrap();
        let tensors: HashMap<String, Tensor> = map
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let loaded = (
            UNet::new(vb.pp("unet"), &spec.arch.unet, 0).unwrap(),
            ClipText::new(vb.pp("clip"), &spec.arch.clip, false).unwrap(),
            Vae::new(vb.pp("vae"), &spec.arch.vae, true).unwrap(),
        );
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let (d, m) = (max_abs(&(a - b).unwrap()), max_abs(b));
            assert!(d <= 1e-4 * m.max(1.0), "{what}: off by {d} (scale {m})");
        };
        let ids = Tensor::new(&[[1u32, 40, 41, 42, 2, 2, 2, 2]], &dev).unwrap();
        let (ct, cl) = (
            trained.1.forward(&ids, 2).unwrap().last,
            loaded.1.forward(&ids, 2).unwrap().last,
        );
        close(&ct, &cl, "text encoder");
        let ctx = Tensor::cat(&[&cl, &cl], 0)
            .unwrap()
            .pad_with_zeros(
                2,
                0,
                spec.arch.unet.cross_attention_dim - cl.dim(2).unwrap(),
            )
            .unwrap();
        let z = Tensor::randn(0f32, 1., (2, 4, 8, 8), &dev).unwrap();
        close(
            &trained.0.forward(&z, 500.0, &ctx, None).unwrap(),
            &loaded.0.forward(&z, 500.0, &ctx, None).unwrap(),
            "UNet",
        );
        let x = Tensor::randn(0f32, 1., (1, 3, 64, 64), &dev).unwrap();
        close(
            &trained.2.encode(&x).unwrap().0,
            &loaded.2.encode(&x).unwrap().0,
            "VAE encoder",
        );
        close(
            &trained.2.decode(&z).unwrap(),
            &loaded.2.decode(&z).unwrap(),
            "VAE decoder",
        );
    }

    /// The committed default model, held as the training tool holds it.
    fn committed_trainer() -> Trainer {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let spec = read_model_spec(&dir, "shapes").unwrap();
        let scale = spec.vae_scale;
        let tokenizer = Tokenizer::from_file(dir.join("shapes/tokenizer.json")).unwrap();
        let mut trainer = Trainer::new(spec, tokenizer, 0).unwrap();
        trainer.resume(&dir.join("shapes"), scale).unwrap();
        trainer
    }

    /// `reconstruct` gives back what the committed VAE keeps of a picture; seeded noise on the
    /// latents takes more of it away the more there is (`evaluate_shapes --vae --latent-noise`).
    #[test]
    fn reconstruction_loses_more_with_more_latent_noise() {
        let trainer = committed_trainer();
        let red_square_on_blue = RgbImage::from_fn(64, 64, |x, y| {
            let inside = (20..44).contains(&x) && (20..44).contains(&y);
            image::Rgb(if inside { [220, 30, 30] } else { [30, 50, 220] })
        });
        let images = [red_square_on_blue.clone()];
        let off = |out: &[RgbImage]| {
            let sum: u64 = out[0]
                .as_raw()
                .iter()
                .zip(red_square_on_blue.as_raw())
                .map(|(&a, &b)| a.abs_diff(b) as u64)
                .sum();
            sum as f64 / (255.0 * red_square_on_blue.as_raw().len() as f64)
        };
        let clean = trainer.reconstruct(&images, 0.0, 1).unwrap();
        assert_eq!(
            clean,
            trainer.reconstruct(&images, 0.0, 2).unwrap(),
            "no noise, no seed"
        );
        let noisy = [0.05, 0.3].map(|noise| trainer.reconstruct(&images, noise, 1).unwrap());
        assert_eq!(
            noisy[0],
            trainer.reconstruct(&images, 0.05, 1).unwrap(),
            "seeded"
        );
        let offs = [off(&clean), off(&noisy[0]), off(&noisy[1])];
        // Measured 0.059 (a flat mid-grey picture would be off by 0.35).
        assert!(
            offs[0] < 0.1,
            "the VAE keeps a plain square: off by {offs:?}"
        );
        assert!(
            offs[0] < offs[1] && offs[1] < offs[2],
            "more noise, more lost: {offs:?}"
        );
    }

    /// `output_at_word` finds the word wherever the caption has it (what `evaluate_shapes
    /// --words` compares), folding phrasing as the tokenizer does, and says so when it is absent.
    #[test]
    fn the_output_at_a_word_is_the_encoders_output_there() {
        let trainer = committed_trainer();
        let caption = "A large red Squares on a blue background";
        let whole = trainer.encode_caption(caption).unwrap();
        // <|startoftext|> a large red square
        let expected = whole.narrow(1, 4, 1).unwrap().flatten_all().unwrap();
        let found = trainer.output_at_word(caption, "square").unwrap();
        assert_eq!(max_abs(&(found - expected).unwrap()), 0.0);
        let blue = trainer.output_at_word(caption, "blue").unwrap();
        let at_blue = whole.narrow(1, 7, 1).unwrap().flatten_all().unwrap();
        assert_eq!(max_abs(&(blue - at_blue).unwrap()), 0.0);
        let absent = trainer.output_at_word(caption, "star").unwrap_err();
        assert!(
            absent.to_string().contains("\"star\" is not a word of"),
            "{absent}"
        );
    }

    /// The word loss parts the text encoder's outputs for two words it gives the same output
    /// ("square" made to embed as "circle", as a model trained without the loss nearly did:
    /// cosine 0.994 at the shape word), where the same steps without it leave them together.
    /// Measured: cosine -0.47 after 20 steps with it, 0.9999 without.
    #[test]
    fn the_word_loss_keeps_words_apart() {
        let captions = ["a red circle".to_string(), "a red square".to_string()];
        let cosine_after = |word_weight: f64| {
            let mut trainer = committed_trainer();
            let id = |word: &str| trainer.tokenizer.encode(word).unwrap()[1] as usize;
            {
                let vars = trainer.clip.0.map.data().lock().unwrap();
                let emb = &vars["text_model.embeddings.token_embedding.weight"];
                let rows: Vec<Tensor> = (0..emb.dim(0).unwrap())
                    .map(|i| {
                        emb.get(if i == id("square") { id("circle") } else { i })
                            .unwrap()
                    })
                    .collect();
                emb.set(&Tensor::stack(&rows, 0).unwrap()).unwrap();
            }
            if word_weight > 0.0 {
                trainer.keep_words_apart(word_weight, 1).unwrap();
            }
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            // The same latents for both captions: the diffusion loss has no reason to part them.
            let z0 = gaussian(&mut rng, (1, 4, 8, 8), &trainer.dev).unwrap();
            let z0 = Tensor::cat(&[&z0, &z0], 0).unwrap();
            let mut opt = trainer.diffusion_optimizer(1e-2).unwrap();
            for _ in 0..20 {
                trainer
                    .diffusion_step(&z0, &captions, None, 0.0, &mut opt, &mut rng)
                    .unwrap();
            }
            let (a, b) = (
                trainer.output_at_word(&captions[0], "circle").unwrap(),
                trainer.output_at_word(&captions[1], "square").unwrap(),
            );
            let dot = |x: &Tensor, y: &Tensor| {
                (x * y)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            dot(&a, &b) / (dot(&a, &a) * dot(&b, &b)).sqrt()
        };
        let (without, with) = (cosine_after(0.0), cosine_after(1.0));
        assert!(without > 0.99, "nothing else parts them: cosine {without}");
        assert!(
            with < 0.5,
            "the word loss parts them: cosine {with} against {without}"
        );
    }

    /// Twins are noised alike: a pair of the same latents and caption has no twin loss, whatever
    /// its plain loss; a circle's and a square's latents under their own words have one. A batch
    /// that would split a pair between its halves is refused.
    #[test]
    fn twins_share_their_noise_and_differ_in_their_word() {
        let mut trainer = committed_trainer();
        trainer.contrast_twins(1.0);
        let red_on_blue = |inside: &dyn Fn(f32, f32) -> bool| {
            RgbImage::from_fn(64, 64, |x, y| {
                let (u, v) = ((x as f32 - 31.5) / 16.0, (y as f32 - 31.5) / 16.0);
                image::Rgb(if inside(u, v) {
                    [220, 30, 30]
                } else {
                    [30, 50, 220]
                })
            })
        };
        let images = [
            red_on_blue(&|u, v| u * u + v * v <= 1.0),
            red_on_blue(&|u, v| u.abs() <= 0.85 && v.abs() <= 0.85),
        ];
        let z = trainer.latents(&images).unwrap();
        let (circle, square) = (z.narrow(0, 0, 1).unwrap(), z.narrow(0, 1, 1).unwrap());
        let twin_loss = |pair: [&Tensor; 2], captions: [&str; 2]| {
            let z0 = Tensor::cat(&pair, 0).unwrap();
            let loss = trainer
                .diffusion_loss(
                    &z0,
                    &captions,
                    &[500, 500],
                    None,
                    &mut ChaCha8Rng::seed_from_u64(2),
                )
                .unwrap();
            let twins = loss.twins.unwrap().0.to_scalar::<f32>().unwrap();
            (loss.picture.to_scalar::<f32>().unwrap(), twins)
        };
        let (plain, alike) = twin_loss([&circle, &circle], ["a red circle", "a red circle"]);
        assert!(plain > 0.0, "the pair has an error: {plain}");
        assert_eq!(alike, 0.0, "the same latents, noise and caption");
        let (_, apart) = twin_loss([&circle, &square], ["a red circle", "a red square"]);
        assert!(apart > 0.0, "a circle and a square: {apart}");
        let captions: Vec<String> = (0..6).map(|_| "a red circle".into()).collect();
        let z0 = Tensor::cat(&[&circle; 6], 0).unwrap();
        let mut opt = trainer.diffusion_optimizer(1e-4).unwrap();
        let refused = trainer.diffusion_step(
            &z0,
            &captions,
            None,
            0.0,
            &mut opt,
            &mut ChaCha8Rng::seed_from_u64(3),
        );
        assert!(refused.is_err_and(|e| e.to_string().contains("multiple of 4")));
    }

    /// Two half-batches' gradients, added, are the whole batch's (odd sizes too), and the
    /// reported figure is the whole batch's mean; an empty batch is an error, not a panic.
    #[test]
    fn halves_give_the_whole_batchs_gradients() {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[0.5f32, -1.0, 2.0], &dev).unwrap()).unwrap();
        for rows in [1usize, 2, 5, 16] {
            let x = Tensor::randn(0f32, 1., (rows, 3), &dev).unwrap();
            let loss_of = |start: usize, len: usize| -> Result<Tensor> {
                x.narrow(0, start, len)?
                    .broadcast_mul(w.as_tensor())?
                    .sum(1)?
                    .sqr()?
                    .mean_all()
            };
            let whole = loss_of(0, rows).unwrap();
            let expected = whole.backward().unwrap();
            let (grads, [report]) = in_halves(rows, |start, len| {
                let loss = loss_of(start, len)?;
                let r = loss.to_scalar::<f32>()?;
                Ok((loss, [r]))
            })
            .unwrap();
            let (g, e) = (
                grads.get(w.as_tensor()).unwrap(),
                expected.get(w.as_tensor()).unwrap(),
            );
            let off = max_abs(&(g - e).unwrap());
            assert!(off < 1e-5, "{rows} rows: gradients off by {off}");
            let mean = whole.to_scalar::<f32>().unwrap();
            assert!(
                (report - mean).abs() < 1e-5 * mean.max(1.0),
                "{rows} rows: {report} vs {mean}"
            );
        }
        let empty = in_halves(0, |_, _| -> Result<(Tensor, [f32; 1])> {
            unreachable!("no rows to run")
        });
        assert!(empty.is_err());
    }
}
