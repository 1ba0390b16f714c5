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
//! which shapes survive latents a little off.)

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result};
use easel::engine::{read_model_spec, DevicePreference, Engine, GenerateRequest, Trainer};
use easel::scenes::score::{evaluate, evaluate_scenes};
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
    let seed: u64 = flag("--seed")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(SEED);
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
    let mut sides = vec![128];
    if spec.default_width != 128 {
        sides.push(spec.default_width);
    }
    for side in sides {
        let mut times = Vec::new();
        let report = evaluate(count, side, seed, |prompt, side, seed| {
            let req = GenerateRequest {
                prompt: prompt.to_string(),
                negative_prompt: String::new(),
                width: side,
                height: side,
                steps: spec.default_steps,
                guidance: guidance.unwrap_or(spec.default_guidance),
                seed,
            };
            let started = Instant::now();
            let img = engine
                .generate(&req, &mut |_| {}, &AtomicBool::new(false))
                .expect("generation succeeds");
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
    let spec = read_model_spec(models, "shapes")?;
    let dir = models.join("shapes");
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join(&spec.files.tokenizer.file))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let vae_scale = spec.vae_scale;
    let mut trainer = Trainer::new(spec, tokenizer, 0).map_err(|e| anyhow::anyhow!(e))?;
    // The whole model, for its latent scale (what `--latent-noise` is counted in).
    trainer.resume(&dir, vae_scale)?;
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
