//! Times one model's parts the way `scripts/parity/bench.py` times them in PyTorch + diffusers,
//! for `scripts/bench-engine.sh` to print side by side: load, one UNet call with classifier-free
//! guidance (batch 2) at the given side, one VAE decode, and the process's peak memory. Each
//! figure is the median of the measured runs after one warm-up.
//!
//! `cargo run --release --features ssr --example component_bench -- MODELS_DIR NAME SIDE [RUNS]`
//! (NAME: a folder of MODELS_DIR, a hub download or one with a model.toml). Prints one
//! `RESULT key=value ...` line.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use easel::engine::{DevicePreference, Engine};

fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line["VmHWM:".len()..].trim().trim_end_matches("kB").trim().parse().ok()
        })
        .unwrap_or(0)
}

fn median_ms(runs: usize, mut f: impl FnMut() -> Result<(), Box<dyn std::error::Error>>) -> Result<f64, Box<dyn std::error::Error>> {
    f()?; // warm-up
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, name, side] = [0, 1, 2].map(|i| args.get(i).cloned());
    let (Some(dir), Some(name), Some(side)) = (dir, name, side) else {
        return Err("usage: component_bench MODELS_DIR NAME SIDE [RUNS]".into());
    };
    let side: usize = side.parse()?;
    let runs: usize = args.get(3).map_or(Ok(3), |r| r.parse())?;

    let t = Instant::now();
    let engine = Engine::load(Path::new(&dir), &name, DevicePreference::Cpu)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let spec = engine.spec().clone();

    // The same inputs for every run: conditioning from the real text encoder(s).
    let prompt = "a photo of a red fox in the snow, highly detailed";
    let encode = |second: bool, text: &str| -> Result<_, Box<dyn std::error::Error>> {
        let ids = engine.tokenize(second, text)?;
        Ok(engine.encode_text(second, &ids)?)
    };
    let (context, xl) = if spec.kind.is_xl() {
        let (a, b) = (encode(false, "")?, encode(true, "")?);
        let (c, d) = (encode(false, prompt)?, encode(true, prompt)?);
        let row = |x: &easel::engine::TextEncoding, y: &easel::engine::TextEncoding| Tensor::cat(&[&x.penultimate, &y.penultimate], 2);
        let context = Tensor::cat(&[row(&a, &b)?, row(&c, &d)?], 0)?;
        let pooled = Tensor::cat(&[&b.pooled, &d.pooled], 0)?;
        let s = side as f32;
        let ids = Tensor::new(&[[s, s, 0., 0., s, s], [s, s, 0., 0., s, s]], &Device::Cpu)?;
        (context, Some((pooled, ids)))
    } else {
        let context = Tensor::cat(&[encode(false, "")?.last, encode(false, prompt)?.last], 0)?;
        (context, None)
    };
    let latent = side / 8;
    let latents = Tensor::randn(0f32, 1.0, (2, 4, latent, latent), &Device::Cpu)?;
    let unet_ms = median_ms(runs, || {
        engine.predict(&latents, 500.0, &context, xl.as_ref().map(|(p, i)| (p, i)))?;
        Ok(())
    })?;
    let z = latents.narrow(0, 0, 1)?;
    let vae_ms = median_ms(runs, || {
        engine.decode_latents(&z)?;
        Ok(())
    })?;
    println!(
        "RESULT side={side} load_ms={load_ms:.0} unet_cfg_ms={unet_ms:.0} vae_decode_ms={vae_ms:.0} peak_mib={}",
        peak_kib() / 1024
    );
    Ok(())
}
