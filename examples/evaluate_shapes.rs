//! Judges the default model (`models/shapes`) on prompts it was not trained on: held-out
//! colour/shape/background combinations in free phrasing, painted at 128x128 and at the
//! model's default size, each picture checked by plain image analysis (`easel::scenes::score`).
//! Prints a table per size, the shapes right per shape asked for, the time per picture, and the
//! prompts it got wrong.
//!
//! Usage: `cargo run --release --features ssr --example evaluate_shapes -- [COUNT] [--save DIR]
//! [--guidance G] [--seed S]` (COUNT prompts per size, default 200; `--save` writes the pictures
//! as PNGs; `--guidance` tries another scale than the model's default; `--seed` draws another
//! set of prompts, e.g. to tune settings on prompts other than the reported ones; `--vae` judges
//! instead the scenes themselves rendered and passed through the VAE, encoded and decoded: the
//! most any diffusion model on that VAE can score; `--latent-noise N` adds Gaussian noise of
//! standard deviation N to the scaled latents before decoding, N = 0.05 being a fifth of theirs:
//! which shapes survive latents a little off; `--words` shows how far apart the model keeps
//! each shape word from "circle", in its text encoder's output, in the UNet's estimate and in
//! the pictures it paints from the same seeds (8 from `--seed`, default 1);
//! `--paint PROMPT` (repeatable) with `--save DIR` and `--seed S` only paints those prompts.)

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Tensor;
use easel::engine::{read_model_spec, DevicePreference, Engine, GenerateRequest, Trainer};
use easel::scenes::score::{evaluate, evaluate_scenes};
use easel::scenes::{Scene, Shape, Size};
use rand::SeedableRng;

/// Not the training seed: these prompts are drawn apart from training's.
const SEED: u64 = 777;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let save = flag("--save").map(PathBuf::from);
    let guidance: Option<f64> = flag("--guidance").map(|g| g.parse()).transpose()?;
    let given_seed: Option<u64> = flag("--seed").map(|s| s.parse()).transpose()?;
    let seed = given_seed.unwrap_or(SEED);
    let models = std::env::var("EASEL_MODELS_DIR").unwrap_or_else(|_| "models".into());
    if args.iter().any(|a| a == "--vae") {
        let latent_noise: f64 = flag("--latent-noise")
            .map(|n| n.parse())
            .transpose()?
            .unwrap_or(0.0);
        return judge_vae(
            Path::new(&models),
            count,
            seed,
            latent_noise,
            save.as_deref(),
        );
    }
    let engine = Engine::load(Path::new(&models), "shapes", DevicePreference::Cpu)
        .context("loading models/shapes")?;
    let spec = engine.spec().clone();
    let paint = |prompt: &str, side: u32, seed: u64| {
        let req = GenerateRequest {
            prompt: prompt.to_string(),
            negative_prompt: String::new(),
            width: side,
            height: side,
            steps: spec.default_steps,
            guidance: guidance.unwrap_or(spec.default_guidance),
            seed,
        };
        engine.generate(&req, &mut |_| {}, &AtomicBool::new(false))
    };
    if args.iter().any(|a| a == "--words") {
        return judge_words(
            Path::new(&models),
            given_seed.unwrap_or(1),
            |prompt, seed| Ok(paint(prompt, 128, seed)?),
        );
    }
    let prompts: Vec<&String> = args
        .windows(2)
        .filter(|w| w[0] == "--paint")
        .map(|w| &w[1])
        .collect();
    if !prompts.is_empty() {
        let dir = save
            .as_deref()
            .context("--paint writes its pictures to --save DIR")?;
        for prompt in prompts {
            let img = paint(prompt, spec.default_width, seed)?;
            save_picture(dir, &img, spec.default_width, seed, prompt);
        }
        return Ok(());
    }
    let mut sides = vec![128];
    if spec.default_width != 128 {
        sides.push(spec.default_width);
    }
    for side in sides {
        let mut times = Vec::new();
        let report = evaluate(count, side, seed, |prompt, side, seed| {
            let started = Instant::now();
            let img = paint(prompt, side, seed).expect("generation succeeds");
            times.push(started.elapsed().as_secs_f64());
            if let Some(dir) = &save {
                save_picture(dir, &img, side, seed, prompt);
            }
            img
        });
        times.sort_by(f64::total_cmp);
        println!("{}", report.table());
        println!(
            "time per picture ({} steps, guidance {}): median {:.3} s, max {:.3} s\n",
            spec.default_steps,
            guidance.unwrap_or(spec.default_guidance),
            times[times.len() / 2],
            times[times.len() - 1]
        );
        for miss in report.misses.iter().take(20) {
            println!("  miss: {miss}");
        }
        println!();
    }
    Ok(())
}

/// Renders the held-out scenes, passes them through the VAE (noise of `latent_noise` added to
/// the latents) and judges what comes back.
fn judge_vae(
    models: &Path,
    count: usize,
    seed: u64,
    latent_noise: f64,
    save: Option<&Path>,
) -> Result<()> {
    let trainer = load_trainer(models)?;
    let report = evaluate_scenes(count, 128, seed, |scene, prompt, side, seed| {
        let img = scene.render(side, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let back = trainer
            .reconstruct(&[img], latent_noise, seed)
            .expect("the VAE runs")
            .remove(0);
        if let Some(dir) = save {
            save_picture(dir, &back, side, seed, prompt);
        }
        back
    });
    println!(
        "the VAE alone (rendered scenes encoded and decoded):\n{}",
        report.table()
    );
    for miss in report.misses.iter().take(20) {
        println!("  miss: {miss}");
    }
    Ok(())
}

/// The model's parts as the training tool holds them (the whole model: the latent scale is
/// what `--latent-noise` is counted in).
fn load_trainer(models: &Path) -> Result<Trainer> {
    let spec = read_model_spec(models, "shapes")?;
    let dir = models.join("shapes");
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join(&spec.files.tokenizer.file))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let vae_scale = spec.vae_scale;
    let mut trainer = Trainer::new(spec, tokenizer, 0).map_err(|e| anyhow::anyhow!(e))?;
    trainer.resume(&dir, vae_scale)?;
    Ok(trainer)
}

/// How the model tells each shape word from "circle", for a large red shape on blue: the
/// cosine between the text encoder's outputs at the word, how far the UNet's estimate of
/// the picture moves from the circle's latents towards the shape's when only the word changes
/// (starting halfway between the two, at three noise levels; 1 = all the way, 0 = not at all),
/// and how many pixels of the pictures painted from the same seeds differ from the circle's,
/// against how many of the scenes drawn with the same jitter do.
fn judge_words(
    models: &Path,
    seed: u64,
    paint: impl Fn(&str, u64) -> Result<image::RgbImage>,
) -> Result<()> {
    let trainer = load_trainer(models)?;
    let caption = |shape: Shape| format!("a large red {} on a blue background", shape.name());
    let at_word = |shape: Shape| -> Result<Tensor> {
        Ok(trainer.output_at_word(&caption(shape), shape.name())?)
    };
    let dot = |a: &Tensor, b: &Tensor| -> Result<f32> { Ok((a * b)?.sum_all()?.to_scalar()?) };
    let latents = |shape: Shape| -> Result<Tensor> {
        let img = Scene::red_on_blue(shape, Some(Size::Large))
            .render(128, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        Ok(trainer.latents(&[img])?)
    };
    // Pixels where two pictures differ plainly (by more than a quarter of the range).
    let differ = |a: &image::RgbImage, b: &image::RgbImage| {
        a.pixels()
            .zip(b.pixels())
            .filter(|(p, q)| p.0.iter().zip(q.0).any(|(&x, y)| x.abs_diff(y) > 64))
            .count()
    };
    const SEEDS: u64 = 8;
    let seeds = seed..seed + SEEDS;
    let drawn = |shape: Shape, seed: u64| {
        Scene::red_on_blue(shape, Some(Size::Large))
            .render(128, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    };
    let painted_circles = seeds
        .clone()
        .map(|s| paint(&caption(Shape::Circle), s))
        .collect::<Result<Vec<_>>>()?;
    let (circle, circle_words) = (latents(Shape::Circle)?, at_word(Shape::Circle)?);
    println!(
        "shape word: cosine to \"circle\" at the word; picture follows the word at t = 800 / 400 / 100; \
         pixels unlike the circle's, painted from the same {SEEDS} seeds (drawn)"
    );
    for shape in &Shape::ALL[1..] {
        let words = at_word(*shape)?;
        let cosine = dot(&words, &circle_words)?
            / (dot(&words, &words)? * dot(&circle_words, &circle_words)?).sqrt();
        let apart = (latents(*shape)? - &circle)?;
        let halfway = (&circle + (&apart * 0.5)?)?;
        let mut follows = Vec::new();
        for t in [800, 400, 100] {
            let moved = (trainer.clean_estimate(&halfway, t, &caption(*shape), seed)?
                - trainer.clean_estimate(&halfway, t, &caption(Shape::Circle), seed)?)?;
            follows.push(format!(
                "{:.2}",
                dot(&moved, &apart)? / dot(&apart, &apart)?
            ));
        }
        let (mut painted, mut drawn_apart) = (0, 0);
        for (s, circle_picture) in seeds.clone().zip(&painted_circles) {
            painted += differ(&paint(&caption(*shape), s)?, circle_picture);
            drawn_apart += differ(&drawn(*shape, s), &drawn(Shape::Circle, s));
        }
        println!(
            "{:>9}: {cosine:.3}; {}; {} px ({} px)",
            shape.name(),
            follows.join(" / "),
            painted / SEEDS as usize,
            drawn_apart / SEEDS as usize
        );
    }
    Ok(())
}

/// Writes a painted picture as `DIR/<side>-<seed>-<prompt>.png`, for looking at by hand.
fn save_picture(dir: &Path, img: &image::RgbImage, side: u32, seed: u64, prompt: &str) {
    std::fs::create_dir_all(dir).expect("creating the save folder");
    let name: String = prompt
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    img.save(dir.join(format!("{side}-{seed}-{name}.png")))
        .expect("saving a picture");
}
