//! Trains the default model, `models/shapes`: an SD 1.5-shaped model at tiny size that paints
//! simple scenes ("a red circle in the top left corner on a blue background"). Pictures and
//! captions come from `easel::scenes`, rendered on the fly; prompts the evaluator uses are held
//! out. Seeded: the same command on the same machine writes the same files.
//!
//! Usage: `cargo run --release --features ssr --example train_shapes [-- <models dir>]` (steps
//! 1-3 of models/README.md; `scripts/train-shapes.sh` adds step 4's continuations on twins).
//! Steps can be set with EASEL_VAE_STEPS and EASEL_DIFFUSION_STEPS, the batch of diffusion steps
//! with EASEL_BATCH (for trying things out);
//! EASEL_RESUME_FROM=<models dir> continues the diffusion training of the model written there;
//! EASEL_VAE_FROM=<models dir> takes the VAE written there and trains the rest anew;
//! EASEL_SEED=<n> draws other scenes (a resumed run should not see the first run's again);
//! EASEL_VAE_CHANNELS="32,32,64,64" tries other VAE widths (`block_out_channels`);
//! EASEL_SHAPE_WEIGHT=<x> weighs the latent pixels where a shape differs from a circle up to x
//! more; EASEL_SHAPE_ODDS="square=3,star=2" draws diffusion scenes holding those shapes that
//! many times as often; EASEL_WORD_WEIGHT=<x> adds x times the word loss that keeps the text
//! encoder's outputs for different words apart (`Trainer::keep_words_apart`) from diffusion
//! step EASEL_WORD_FROM (its directions drawn from EASEL_WORD_SEED, default the seed);
//! EASEL_TWIN_WEIGHT=<x> trains on pairs of scenes that differ in one object's shape, adding x
//! times the twin loss (`Trainer::contrast_twins`) (models/README.md: step 4 uses the word
//! loss, the shape weight and twins; the other knobs were tried).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use candle_nn::Optimizer;
use easel::engine::{parse_model_spec, StepReport, Trainer};
use easel::scenes::{Colour, Rendered, Scene, Shape, SYNONYMS, VOCABULARY};
use image::imageops;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::{Lowercase, Replace, Sequence};
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{NormalizerWrapper, Tokenizer};

const NAME: &str = "shapes";
const SEED: u64 = 20261125;
const SIDE: u32 = 128;
const VAE_BATCH: usize = 12;
const VAE_CROP: u32 = 64;
const BATCH: usize = 16;
const POOL: usize = 2048;
const FRESH: usize = 4;
/// Standard deviation of the scaled latents: 16² latents at unit variance keep the background's
/// colour readable through SD's noise at t = 999, so the model learns to read colours from the
/// noise instead of the prompt (and paints whatever the starting noise suggests). A quarter of
/// unit variance divides the signal-to-noise ratio by 16: what 4x smaller latents than SD 1.5's
/// 64² need to see the noise SD 1.5 sees (Hoogeboom et al., "simple diffusion").
const LATENT_STD: f64 = 0.25;
/// How much more an error counts on the objects (for the diffusion model, also one latent pixel
/// around them) than on the background: they cover a few percent of a picture, and unweighted
/// the VAE lost small objects' colours and the diffusion model learnt the background's colour
/// and left the objects' colour, shape and place at chance.
const OBJECT_WEIGHT: f32 = 4.0;

const MODEL_TOML: &str = r#"# The default model: paints simple scenes of coloured shapes (see models/README.md).
# SD 1.5's architecture at tiny size, trained from scratch by `bash scripts/train-shapes.sh`
# (examples/train_shapes.rs, then three continuations on twins).
kind = "sd15"
description = "Shapes (in training): paints the background and object colours asked for, mostly in place; about six shapes in ten (rings, triangles and hearts best, stars often blobs)"
generated_by = "bash scripts/train-shapes.sh"
dtype = "f16"
scheduler = "ddim"
# v-prediction: at high noise the UNet predicts the picture itself, where only the prompt can
# say what it is; ε-prediction left the text unlearned (models/README.md).
prediction = "v_prediction"
vae_scale = VAE_SCALE
default_width = 128
default_height = 128
max_width = 256
max_height = 256
default_steps = 20
max_steps = 50
# Tuned on prompts apart from the reported ones (evaluate_shapes --seed 99): at 4 the
# colours oversaturate and the backgrounds go wrong; 2 and 2.5 scored best, 1 (no guidance) less.
default_guidance = 2.0
min_guidance = 1.0
max_guidance = 12.0

[files]
unet = "unet.safetensors"
vae = "vae.safetensors"
clip = "text_encoder.safetensors"
tokenizer = "tokenizer.json"

[clip]
vocab_size = 48
embed_dim = 64
intermediate_size = 128
num_hidden_layers = 2
num_attention_heads = 2
max_position_embeddings = 32
activation = "quick_gelu"
projection_dim = 64

[unet]
blocks = [
  { channels = 32, transformer_layers = 0, heads = 2 },
  { channels = 64, transformer_layers = 1, heads = 4 },
  { channels = 128, transformer_layers = 1, heads = 4 },
]
layers_per_block = 1
norm_num_groups = 32
cross_attention_dim = 64
use_linear_projection = false

[vae]
block_out_channels = [16, 32, 64, 64]
layers_per_block = 1
norm_num_groups = 8
latent_channels = 4
"#;

/// The description with its latent scale, and the VAE widths EASEL_VAE_CHANNELS asks for.
fn model_toml(vae_scale: f64) -> String {
    let toml = MODEL_TOML.replace("VAE_SCALE", &format!("{vae_scale:.5}"));
    match std::env::var("EASEL_VAE_CHANNELS") {
        Ok(channels) => toml.replace("block_out_channels = [16, 32, 64, 64]", &format!("block_out_channels = [{channels}]")),
        Err(_) => toml,
    }
}

/// The variable's value, or `default` when it is not set; an error when it does not parse.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(value) => value.trim().parse().map_err(|_| anyhow::anyhow!("{name}={value:?} is not a {}", std::any::type_name::<T>())),
        Err(_) => Ok(default),
    }
}

/// Word-level: the scene vocabulary, case and common variants folded in, anything else `<unk>`.
fn tokenizer() -> Result<Tokenizer> {
    let mut words: Vec<String> = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
        .map(String::from)
        .to_vec();
    words.extend(Colour::ALL.iter().map(|c| c.name().to_string()));
    words.extend(Shape::ALL.iter().map(|s| s.name().to_string()));
    words.extend(VOCABULARY.iter().map(|w| w.to_string()));
    let vocab = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), i as u32))
        .collect();
    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token("<unk>".into())
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut normalizers: Vec<NormalizerWrapper> = vec![Lowercase.into()];
    for (from, to) in SYNONYMS {
        normalizers.push(
            Replace::new(*from, *to)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .into(),
        );
    }
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(Sequence::new(normalizers)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tok.with_pre_tokenizer(Some(Whitespace {}));
    Ok(tok)
}

fn main() -> Result<()> {
    // candle asks the OS for the CPU count on every op unless this is set (10 % of the time).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    // Steps run as two half-batches on rayon's threads (`engine::train`); candle's own pool for
    // element-wise ops would only spin beside them (0.58 s a diffusion step with it, 0.34 s without).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let models = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "models".into()));
    let dir = models.join(NAME);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tok = tokenizer()?;
    tok.save(dir.join("tokenizer.json"), true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = parse_model_spec(&model_toml(1.0), NAME, &dir)?;
    let seed = env_or("EASEL_SEED", SEED)?;
    let mut trainer = Trainer::new(spec, tok, seed).map_err(|e| anyhow::anyhow!(e))?;
    let [c, u, v] = trainer.parameter_counts();
    println!("parameters: text encoder {c}, UNet {u}, VAE {v}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // The diffusion stage's settings, checked before an hour of VAE training.
    let steps = env_or("EASEL_DIFFUSION_STEPS", 9000)?;
    let batch = env_or("EASEL_BATCH", BATCH)?;
    let shape_weight = env_or("EASEL_SHAPE_WEIGHT", 0f32)?;
    let odds = shape_odds(&std::env::var("EASEL_SHAPE_ODDS").unwrap_or_default())?;
    let word_weight = env_or("EASEL_WORD_WEIGHT", 0f64)?;
    // From scratch the word loss held colours back (the UNet learns them early); it is
    // switched on once they are learnt.
    let word_from = env_or("EASEL_WORD_FROM", 0usize)?;
    // The words' directions must stay those a resumed run learnt them along, whatever its seed.
    let word_seed = env_or("EASEL_WORD_SEED", seed)?;
    if word_weight > 0.0 && word_from >= steps {
        anyhow::bail!("EASEL_WORD_FROM={word_from} is past the last of {steps} diffusion steps: the word loss would never be on");
    }
    let twin_weight = env_or("EASEL_TWIN_WEIGHT", 0f64)?;
    let twins = twin_weight > 0.0;
    if twins && !batch.is_multiple_of(4) {
        anyhow::bail!("EASEL_TWIN_WEIGHT needs EASEL_BATCH a multiple of 4 (whole pairs in each half-batch), not {batch}");
    }
    let started = Instant::now();

    // EASEL_RESUME_FROM=<models dir>: continue from the model written there (no VAE phase).
    let resume = std::env::var_os("EASEL_RESUME_FROM").map(PathBuf::from);
    if let Some(from) = &resume {
        let spec = easel::engine::read_model_spec(from, NAME)?;
        trainer.resume(&from.join(NAME), spec.vae_scale)?;
        println!(
            "resumed from {} (latent scale {:.5})",
            from.display(),
            spec.vae_scale
        );
    }
    let vae_from = std::env::var_os("EASEL_VAE_FROM").map(PathBuf::from);
    if let Some(from) = &vae_from {
        trainer.reuse_vae(&from.join(NAME))?;
        println!("VAE from {}", from.display());
    }
    let vae_steps = if resume.is_some() || vae_from.is_some() {
        0
    } else {
        env_or("EASEL_VAE_STEPS", 1900)?
    };
    let mut opt = trainer.vae_optimizer(1e-3)?;
    for step in 0..vae_steps {
        opt.set_learning_rate(lr(1e-3, step, vae_steps));
        let mut weights = Vec::with_capacity(VAE_BATCH * (VAE_CROP * VAE_CROP) as usize);
        let images: Vec<_> = (0..VAE_BATCH)
            .map(|_| {
                let Rendered { image: img, coverage, .. } = Scene::random(&mut rng, false).render_with_coverage(SIDE, &mut rng);
                let (x, y) = (
                    rng.random_range(0..=SIDE - VAE_CROP),
                    rng.random_range(0..=SIDE - VAE_CROP),
                );
                for row in y..y + VAE_CROP {
                    let at = (row * SIDE + x) as usize;
                    weights.extend(coverage[at..at + VAE_CROP as usize].iter().map(|c| 1.0 + OBJECT_WEIGHT * c));
                }
                imageops::crop_imm(&img, x, y, VAE_CROP, VAE_CROP).to_image()
            })
            .collect();
        let side = VAE_CROP as usize;
        let weights = Tensor::from_vec(weights, (VAE_BATCH, 1, side, side), &candle_core::Device::Cpu)?;
        let r = trainer.vae_step(&images, Some(&weights), 1e-4, &mut opt)?;
        report("vae", step, vae_steps, &r, started);
    }
    if resume.is_none() {
        let sample: Vec<_> = (0..64)
            .map(|_| Scene::random(&mut rng, false).render(SIDE, &mut rng))
            .collect();
        let scale = trainer.fit_latent_scale(&sample, LATENT_STD)?;
        println!("latent scale {scale:.5}");
    }

    if twins {
        trainer.contrast_twins(twin_weight);
    }
    let drawing = Drawing { shape_weight, odds, twins };
    trainer.start_averaging()?;
    // A resumed run starts lower: the weights are past the early, large steps.
    let peak = if resume.is_some() { 3e-4 } else { 1e-3 };
    let mut opt = trainer.diffusion_optimizer(peak)?;
    // Encoding is a third of a step's work, so scenes are encoded FRESH at a time into a pool
    // of recent ones and each batch is drawn from the pool (each caption phrased anew).
    let mut pool: VecDeque<Pooled> = VecDeque::with_capacity(POOL);
    while pool.len() < drawing.pool_size() / 4 {
        add_to_pool(&mut pool, &trainer, 32, &drawing, &mut rng)?;
    }
    for step in 0..steps {
        opt.set_learning_rate(lr(peak, step, steps));
        if step == word_from && word_weight > 0.0 {
            trainer.keep_words_apart(word_weight, word_seed)?;
        }
        add_to_pool(&mut pool, &trainer, FRESH, &drawing, &mut rng)?;
        // Twins follow their scene in the batch, phrased alike (the same random state).
        let picked: Vec<&Pooled> = (0..if twins { batch / 2 } else { batch })
            .map(|_| &pool[rng.random_range(0..pool.len())])
            .collect();
        let mut rows: Vec<&Pooled> = Vec::with_capacity(batch);
        let mut captions: Vec<String> = Vec::with_capacity(batch);
        for picked in picked {
            let phrasing = rng.clone();
            captions.push(picked.scene.caption(&mut rng));
            rows.push(picked);
            if let Some(twin) = &picked.twin {
                captions.push(twin.scene.caption(&mut phrasing.clone()));
                rows.push(twin);
            }
        }
        let z0 = Tensor::cat(&rows.iter().map(|p| &p.latent).collect::<Vec<_>>(), 0)?;
        let weight = Tensor::cat(&rows.iter().map(|p| &p.weight).collect::<Vec<_>>(), 0)?;
        let r = trainer.diffusion_step(&z0, &captions, Some(&weight), 0.1, &mut opt, &mut rng)?;
        report("diffusion", step, steps, &r, started);
        if (step + 1) % 300 == 0 && step + 1 < steps {
            write(&trainer, &dir)?;
        }
    }
    write(&trainer, &dir)?;
    println!(
        "trained in {:.1} min; wrote {}",
        started.elapsed().as_secs_f64() / 60.0,
        dir.display()
    );
    Ok(())
}

/// Warm-up over the first 5 % of steps, then linear decay to a tenth.
fn lr(peak: f64, step: usize, total: usize) -> f64 {
    let warm = (total / 20).max(1);
    if step < warm {
        peak * (step + 1) as f64 / warm as f64
    } else {
        peak * (1.0 - 0.9 * (step - warm) as f64 / (total - warm).max(1) as f64)
    }
}

fn report(phase: &str, step: usize, total: usize, r: &StepReport, started: Instant) {
    if step % 50 == 0 || step + 1 == total {
        let words = r.word_loss.map(|w| format!(" words {w:.4}")).unwrap_or_default();
        let twins = r.twin_loss.map(|t| format!(" twins {t:.4}")).unwrap_or_default();
        println!(
            "{phase} {}/{total} loss {:.4}{words}{twins} ({:.0} s)",
            step + 1,
            r.loss,
            started.elapsed().as_secs_f64()
        );
    }
}

fn write(trainer: &Trainer, dir: &Path) -> Result<()> {
    trainer.save(dir, DType::F16)?;
    let toml = model_toml(trainer.latent_scale());
    std::fs::write(dir.join("model.toml"), toml).context("writing model.toml")?;
    Ok(())
}

/// A training scene encoded: its latents, and the weight of each latent pixel's error; with
/// twins, its twin (`Scene::twin`) rendered with the same jitter.
struct Pooled {
    latent: Tensor,
    weight: Tensor,
    scene: Scene,
    twin: Option<Box<Pooled>>,
}

/// How diffusion scenes are drawn and weighed.
struct Drawing {
    shape_weight: f32,
    odds: [f32; Shape::ALL.len()],
    twins: bool,
}

impl Drawing {
    /// Scenes (with their twins) kept in the pool: twins hold two latents per scene, and half
    /// as many scenes keep each for as many steps as without.
    fn pool_size(&self) -> usize {
        if self.twins {
            POOL / 2
        } else {
            POOL
        }
    }
}

/// How often scenes holding each shape are drawn, in `Shape::ALL`'s order, from
/// "square=3,star=2" (shapes not named: 1).
fn shape_odds(spec: &str) -> Result<[f32; Shape::ALL.len()]> {
    let mut odds = [1f32; Shape::ALL.len()];
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').with_context(|| format!("EASEL_SHAPE_ODDS: {part:?} is not shape=number"))?;
        let kind = Shape::ALL.iter().position(|s| s.name() == name.trim()).with_context(|| format!("EASEL_SHAPE_ODDS: no shape {name:?}"))?;
        odds[kind] = value.trim().parse().with_context(|| format!("EASEL_SHAPE_ODDS: {value:?} is not a number"))?;
    }
    Ok(odds)
}

/// A training scene, those holding shapes with higher `odds` drawn that many times as often.
fn draw_scene(odds: &[f32; Shape::ALL.len()], rng: &mut ChaCha8Rng) -> Scene {
    let most = odds.iter().copied().fold(f32::MIN, f32::max);
    loop {
        let scene = Scene::random(rng, false);
        let kind = |s: Shape| Shape::ALL.iter().position(|&k| k == s).expect("every shape is in Shape::ALL");
        let best = scene.objects.iter().map(|o| odds[kind(o.shape)]).fold(f32::MIN, f32::max);
        if most <= 1.0 || rng.random::<f32>() * most < best {
            return scene;
        }
    }
}

/// Renders and encodes `n` new training scenes (with twins, `n / 2` and their twins) into the
/// pool, dropping the oldest beyond its size.
fn add_to_pool(pool: &mut VecDeque<Pooled>, trainer: &Trainer, n: usize, drawing: &Drawing, rng: &mut ChaCha8Rng) -> Result<()> {
    let mut scenes: Vec<Scene> = Vec::with_capacity(n);
    let (mut images, mut weights) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut render = |scene: Scene, rng: &mut ChaCha8Rng| {
        let rendered = scene.render_with_coverage(SIDE, rng);
        weights.push(latent_weight(&rendered, drawing.shape_weight));
        images.push(rendered.image);
        scenes.push(scene);
    };
    let drawn: Vec<Scene> = (0..if drawing.twins { n / 2 } else { n }).map(|_| draw_scene(&drawing.odds, rng)).collect();
    for scene in drawn {
        if drawing.twins {
            let twin = scene.twin(rng);
            let jitter = rng.clone();
            render(scene, rng);
            render(twin, &mut jitter.clone());
        } else {
            render(scene, rng);
        }
    }
    let z = trainer.latents(&images)?;
    let mut encoded = scenes.into_iter().zip(weights).enumerate().map(|(i, (scene, weight))| -> Result<Pooled> {
        Ok(Pooled { latent: z.narrow(0, i, 1)?.contiguous()?, weight: weight?, scene, twin: None })
    });
    while let Some(first) = encoded.next() {
        let mut pooled = first?;
        if drawing.twins {
            let twin = encoded.next().context("every scene has its twin")??;
            pooled.twin = Some(Box::new(twin));
        }
        pool.push_back(pooled);
        if pool.len() > drawing.pool_size() {
            pool.pop_front();
        }
    }
    Ok(())
}

/// `[1, 1, SIDE / 8, SIDE / 8]`: 1 on the background, up to 1 + OBJECT_WEIGHT on the objects
/// and the latent pixels next to them (the objects' share of each 8x8 cell, spread one cell),
/// plus up to `shape_weight` where a shape differs from a circle (that share of the cell).
fn latent_weight(rendered: &Rendered, shape_weight: f32) -> Result<Tensor> {
    let (side, cells) = (SIDE as usize, SIDE as usize / 8);
    let cell_shares = |map: &[f32]| {
        let mut share = vec![0f32; cells * cells];
        for (i, c) in map.iter().enumerate() {
            share[(i / side / 8) * cells + (i % side) / 8] += c / 64.0;
        }
        share
    };
    let share = cell_shares(&rendered.coverage);
    // Only painted when it counts: two more shapes' worth of coverage per object.
    let unlike = if shape_weight > 0.0 { cell_shares(&rendered.unlike_circle()) } else { vec![0.0; cells * cells] };
    let mut weight = vec![1f32; cells * cells];
    for (i, w) in weight.iter_mut().enumerate() {
        let (y, x) = ((i / cells) as isize, (i % cells) as isize);
        let mut near = 0f32;
        for (dy, dx) in (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| (dy, dx))) {
            let (ny, nx) = (y + dy, x + dx);
            if (0..cells as isize).contains(&ny) && (0..cells as isize).contains(&nx) {
                near = near.max(share[ny as usize * cells + nx as usize]);
            }
        }
        *w += OBJECT_WEIGHT * near + shape_weight * unlike[i];
    }
    Ok(Tensor::from_vec(weight, (1, 1, cells, cells), &candle_core::Device::Cpu)?)
}
