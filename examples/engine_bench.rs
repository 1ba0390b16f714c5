//! Times the engine on the default model (CPU unless `--gpu`): load, ms per UNet step (the time
//! between step callbacks, with classifier-free guidance, i.e. batch 2), VAE decode (last step
//! to returned image), end to end, and peak memory (VmHWM).
//!
//! `cargo run --release --example engine_bench [-- <model> [--gpu] [--out=PATH.png]]` (default
//! model: shapes); `--out` saves the 256x256 image with its metadata.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use easel::engine::{encode_png, DevicePreference, Engine, PngMetadata};

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "n/a".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "shapes".into());
    let device = if args.iter().any(|a| a == "--gpu") {
        DevicePreference::Gpu
    } else {
        DevicePreference::Cpu
    };
    let models = std::env::var("EASEL_MODELS_DIR").unwrap_or_else(|_| "models".into());

    let t = Instant::now();
    let engine = Engine::load(std::path::Path::new(&models), &model, device)?;
    println!(
        "model {model} on {}: load {:.1} ms",
        engine.device_name(),
        t.elapsed().as_secs_f64() * 1e3
    );

    let spec = engine.spec().clone();
    for side in [64u32, 256] {
        let mut req = spec.default_request("a photo of a red fox in the snow, highly detailed", 1);
        req.width = side;
        req.height = side;
        // One warm-up run, then the measured one.
        for round in 0..2 {
            let start = Instant::now();
            let mut marks = Vec::new();
            let img = engine.generate(
                &req,
                &mut |_| marks.push(Instant::now()),
                &AtomicBool::new(false),
            )?;
            let end = Instant::now();
            if round == 0 {
                continue;
            }
            let steps: Vec<f64> = marks
                .windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
                .collect();
            let per_step = if steps.is_empty() {
                f64::NAN
            } else {
                steps.iter().sum::<f64>() / steps.len() as f64
            };
            let decode = (end - *marks.last().unwrap()).as_secs_f64() * 1e3;
            println!(
                "{}x{}, {} steps, guidance {}: {:.1} ms/UNet step, text+first step {:.1} ms, VAE decode {:.1} ms, end-to-end {:.1} ms",
                img.width(),
                img.height(),
                req.steps,
                req.guidance,
                per_step,
                (marks[0] - start).as_secs_f64() * 1e3,
                decode,
                (end - start).as_secs_f64() * 1e3
            );
            if let Some(path) = args.iter().find_map(|a| a.strip_prefix("--out=")) {
                std::fs::write(path, encode_png(&img, &PngMetadata::new(&req, &spec))?)?;
            }
        }
    }
    println!("peak memory (VmHWM): {}", vm_hwm());
    Ok(())
}
