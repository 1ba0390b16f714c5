//! Parity with diffusers for every model kind. `tests/parity/<kind>/` holds a reduced-size
//! checkpoint with the kind's real structure, written by diffusers' own `save_pretrained` (the
//! hub's folder layout, real tensor names), and `golden.safetensors`: what PyTorch + diffusers
//! computed from it (tokens, text encoder outputs, UNet with and without guidance at two
//! timesteps, VAE decode, scheduler trajectories). Each folder is loaded as a user's model is,
//! from a folder with no `model.toml`, and compared within the tolerances below.
//! `scripts/parity/make_parity.py` regenerates everything (by hand, never in CI).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use easel::engine::{
    parse_model_spec, read_model_spec, DevicePreference, Engine, ModelKind, Prediction, Schedule,
    SchedulerKind, TimestepSpacing,
};

/// Largest difference allowed, relative to the largest magnitude of the expected tensor, per
/// part. Measured: text encoders ~5e-7, schedulers ~5e-7, VAE ~3e-6, UNet 1e-5 to 6e-5 (fp32
/// sums in another order through ~30 layers, as on SD 1.5's full architecture: 2.9e-5).
const TEXT: f32 = 1e-5;
const UNET: f32 = 2e-4;
const VAE: f32 = 5e-5;
const SCHEDULER: f32 = 1e-5;

/// Guidance adds g times the difference of two predictions: their errors grow up to (1 + 2g)
/// times while the result is only about twice as large.
fn guided_tolerance(g: f64) -> f32 {
    UNET * (1.0 + 2.0 * g as f32) / 2.0
}

fn parity_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parity"))
}

struct Golden {
    kind: &'static str,
    tensors: HashMap<String, Tensor>,
}

impl Golden {
    fn load(kind: &'static str) -> Self {
        let path = parity_dir().join(kind).join("golden.safetensors");
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        Self { kind, tensors }
    }

    fn get(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}: golden.safetensors has no {name}", self.kind))
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn ids(&self, name: &str) -> Vec<u32> {
        let t = self.get(name).to_dtype(DType::I64).unwrap().flatten_all().unwrap();
        t.to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect()
    }

    fn scalar(&self, name: &str) -> f64 {
        self.get(name).flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64
    }
}

/// Max |got - want| / max |want|, with the shapes checked first.
fn relative_error(got: &Tensor, want: &Tensor, what: &str) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let got = got.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
    let diff = (&got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    let (d, s) = (diff.to_scalar::<f32>().unwrap(), scale.to_scalar::<f32>().unwrap());
    assert!(s > 1e-3, "{what}: the expected tensor is ~0 ({s}), a useless golden");
    d / s
}

fn assert_close(got: &Tensor, want: &Tensor, tolerance: f32, what: &str) {
    let err = relative_error(got, want, what);
    println!("{what}: relative error {err:.2e}");
    assert!(err <= tolerance, "{what}: relative error {err:.3e} > {tolerance:e}");
}

fn load(kind: &str) -> Engine {
    // A hub folder as downloaded: no model.toml, everything from its own configs.
    assert!(!parity_dir().join(kind).join("model.toml").exists());
    Engine::load(&parity_dir(), kind, DevicePreference::Cpu)
        .unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// Tokens, text encoder(s), UNet and VAE of one kind against diffusers.
fn check_components(kind: &'static str) {
    let g = Golden::load(kind);
    let engine = load(kind);
    let xl = engine.spec().kind.is_xl();
    let p = |name: &str| format!("{kind} {name}");

    let encoders: &[(bool, &str, &str)] = if xl {
        &[(false, "tokens", "text"), (true, "tokens2", "text2")]
    } else {
        &[(false, "tokens", "text")]
    };
    let prompt = "a red fox jumping over a lazy dog, oil painting!";
    for &(second, tokens, text) in encoders {
        for (which, words) in [("prompt", prompt), ("negative", "")] {
            let want = g.ids(&format!("{tokens}.{which}"));
            let got = engine.tokenize(second, words).unwrap();
            assert_eq!(got, want, "{}", p(&format!("{tokens}.{which}")));
            let out = engine.encode_text(second, &want).unwrap();
            for (part, t) in [("last", &out.last), ("penultimate", &out.penultimate), ("pooled", &out.pooled)] {
                let name = format!("{text}.{which}.{part}");
                assert_close(t, g.get(&name), TEXT, &p(&name));
            }
        }
    }

    let latents = g.get("unet.latents");
    let context = g.get("unet.context");
    let xl_rows = xl.then(|| (g.get("unet.text_embeds"), g.get("unet.time_ids")));
    let guidance = g.scalar("unet.guidance");
    for i in 0..2 {
        let t = g.scalar(&format!("unet.t{i}.timestep"));
        let row = |x: &Tensor| x.narrow(0, 1, 1).unwrap();
        let single_xl = xl_rows.map(|(a, b)| (row(a), row(b)));
        let single = engine
            .predict(latents, t, &row(context), single_xl.as_ref().map(|(a, b)| (a, b)))
            .unwrap();
        assert_close(&single, g.get(&format!("unet.t{i}.single")), UNET, &p(&format!("unet t={t} single")));

        let both = Tensor::cat(&[latents, latents], 0).unwrap();
        let batch = engine.predict(&both, t, context, xl_rows).unwrap();
        assert_close(&batch, g.get(&format!("unet.t{i}.batch")), UNET, &p(&format!("unet t={t} batch of 2")));
        let (u, c) = (batch.get(0).unwrap(), batch.get(1).unwrap());
        let guided = (&u + ((c - &u).unwrap() * guidance).unwrap()).unwrap().unsqueeze(0).unwrap();
        assert_close(&guided, g.get(&format!("unet.t{i}.cfg")), guided_tolerance(guidance), &p(&format!("unet t={t} guided")));
    }

    let image = engine.decode_latents(g.get("vae.latents")).unwrap();
    assert_close(&image, g.get("vae.image"), VAE, &p("vae decode"));
}

/// Runs a schedule over the stored model outputs and noise, step by step against diffusers.
fn check_trajectory(g: &Golden, name: &str, schedule: &Schedule) {
    let key = |k: &str| format!("sched.{name}.{k}");
    let what = format!("{} scheduler {name}", g.kind);
    let want_t: Vec<f32> = g.get(&key("timesteps")).to_dtype(DType::F32).unwrap().to_vec1().unwrap();
    let got_t: Vec<f32> = schedule.timesteps().iter().map(|&t| t as f32).collect();
    assert_eq!(got_t, want_t, "{what}: timesteps");
    if g.has(&key("sigmas")) {
        let want: Vec<f32> = g.get(&key("sigmas")).to_vec1().unwrap();
        let got: Vec<f32> = schedule.sigmas().iter().map(|&s| s as f32).collect();
        assert_eq!(got.len(), want.len(), "{what}: sigmas");
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{what}: sigmas {got:?} vs {want:?}");
        }
    }
    let mut sample = g.get(&key("init")).clone();
    for k in 0..want_t.len() {
        let input = schedule.scale_model_input(&sample, k).unwrap();
        assert_close(&input, g.get(&key(&format!("model_input.{k}"))), SCHEDULER, &format!("{what} model input {k}"));
        let noise = schedule.needs_noise(k).then(|| g.get(&key(&format!("noise.{k}"))));
        let out = schedule
            .step(k, g.get(&key(&format!("model_output.{k}"))), &sample, noise)
            .unwrap();
        if g.has(&key(&format!("pred_original.{k}"))) {
            assert_close(&out.pred_original, g.get(&key(&format!("pred_original.{k}"))), SCHEDULER, &format!("{what} x0 {k}"));
        }
        assert_close(&out.prev, g.get(&key(&format!("sample.{k}"))), SCHEDULER, &format!("{what} sample {k}"));
        sample = out.prev;
    }
}

fn check_kind(kind: &'static str, want: ModelKind) {
    let spec = read_model_spec(&parity_dir(), kind).unwrap();
    assert_eq!(spec.kind, want, "{kind}: the kind read from the folder's configs");
    check_components(kind);
    let g = Golden::load(kind);
    check_trajectory(&g, "own", &load(kind).schedule(4));
}

#[test]
fn sd15_parity() {
    check_kind("sd15", ModelKind::Sd15);
    // SD 1.5's config drives all three samplers (diffusers' from_config: leading, offset 1).
    let g = Golden::load("sd15");
    for (name, kind) in [
        ("ddim", SchedulerKind::Ddim),
        ("euler", SchedulerKind::Euler),
        ("euler_a", SchedulerKind::EulerAncestral),
    ] {
        let schedule = Schedule::new(kind, Prediction::Epsilon, TimestepSpacing::Leading, 1, 4);
        check_trajectory(&g, name, &schedule);
    }
}

#[test]
fn sd21_v_prediction_parity() {
    check_kind("sd21", ModelKind::Sd21);
    let spec = read_model_spec(&parity_dir(), "sd21").unwrap();
    assert_eq!(spec.prediction, Prediction::VPrediction);
}

#[test]
fn sd_turbo_parity() {
    check_kind("sd_turbo", ModelKind::SdTurbo);
    let spec = read_model_spec(&parity_dir(), "sd_turbo").unwrap();
    assert_eq!((spec.scheduler, spec.spacing), (SchedulerKind::Euler, TimestepSpacing::Trailing));
}

#[test]
fn sdxl_parity() {
    check_kind("sdxl", ModelKind::Sdxl);
}

#[test]
fn sdxl_turbo_parity() {
    check_kind("sdxl_turbo", ModelKind::SdxlTurbo);
    let spec = read_model_spec(&parity_dir(), "sdxl_turbo").unwrap();
    assert_eq!(spec.scheduler, SchedulerKind::EulerAncestral);
}

/// Copies a parity folder (hard links where possible) so a test can change it.
fn copy_model(kind: &str, to: &Path) -> PathBuf {
    let from = parity_dir().join(kind);
    let dest = to.join(kind);
    for entry in walk(&from) {
        let rel = entry.strip_prefix(&from).unwrap();
        let target = dest.join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
    dest
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A tensor under a wrong name or with a wrong shape is caught at load, with the file named.
#[test]
fn parity_checkpoints_with_a_misnamed_or_misshaped_tensor_fail_to_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_model("sd15", tmp.path());
    let unet = dir.join("unet/diffusion_pytorch_model.safetensors");
    let original = candle_core::safetensors::load(&unet, &Device::Cpu).unwrap();
    let victim = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    assert!(original.contains_key(victim), "the UNet has {victim}");

    let mut renamed = original.clone();
    let t = renamed.remove(victim).unwrap();
    renamed.insert(victim.replace("to_k", "to_key"), t.clone());
    candle_core::safetensors::save(&renamed, &unet).unwrap();
    let err = Engine::load(tmp.path(), "sd15", DevicePreference::Cpu).err().expect("a misnamed tensor fails");
    assert_eq!(err.kind(), "model_corrupt", "{err}");
    assert!(err.to_string().contains("UNet"), "{err}");

    let mut reshaped = original.clone();
    reshaped.insert(victim.to_string(), t.narrow(1, 0, t.dim(1).unwrap() / 2).unwrap());
    candle_core::safetensors::save(&reshaped, &unet).unwrap();
    let err = Engine::load(tmp.path(), "sd15", DevicePreference::Cpu).err().expect("a misshaped tensor fails");
    assert_eq!(err.kind(), "model_corrupt", "{err}");
}

/// A `model.toml` beside a hub folder overrides what the folder's configs say, and the folder
/// needs nothing else: the same weights load and paint.
#[test]
fn a_model_toml_beside_a_hub_folder_overrides_its_configs_parity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_model("sd15", tmp.path());
    let plain = read_model_spec(tmp.path(), "sd15").unwrap();
    assert_eq!((plain.scheduler, plain.default_width), (SchedulerKind::Ddim, 64));
    std::fs::write(
        dir.join("model.toml"),
        "description = \"mine\"\nscheduler = \"euler_ancestral\"\ntimestep_spacing = \"trailing\"\ndefault_steps = 3\n",
    )
    .unwrap();
    let spec = read_model_spec(tmp.path(), "sd15").unwrap();
    assert_eq!(spec.description, "mine");
    assert_eq!((spec.scheduler, spec.spacing, spec.default_steps), (SchedulerKind::EulerAncestral, TimestepSpacing::Trailing, 3));
    assert_eq!(spec.arch, plain.arch, "the architecture still comes from the folder");
    let engine = Engine::load(tmp.path(), "sd15", DevicePreference::Cpu).unwrap();
    let req = engine.spec().default_request("a fox", 1);
    let img = engine.generate(&req, &mut |_| {}, &Default::default()).unwrap();
    assert_eq!(img.dimensions(), (64, 64));
    // The same description text, parsed directly, refuses a folder-less description without a kind.
    let err = parse_model_spec("description = \"x\"\n", "x", tmp.path()).unwrap_err();
    assert!(err.to_string().contains("kind"), "{err}");
}

/// Hub repositories ship `vocab.json` + `merges.txt` (not always a `tokenizer.json`): read as
/// CLIP's BPE they give diffusers' token ids, "!" padding and a typed "!" included.
#[test]
fn hub_tokenizers_from_vocab_and_merges_parity() {
    for kind in ["sd21", "sdxl"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = copy_model(kind, tmp.path());
        for part in ["tokenizer", "tokenizer_2"] {
            let _ = std::fs::remove_file(dir.join(part).join("tokenizer.json"));
        }
        let spec = read_model_spec(tmp.path(), kind).unwrap();
        assert!(spec.files.tokenizer.file.ends_with("vocab.json"), "{:?}", spec.files.tokenizer);
        let engine = Engine::load(tmp.path(), kind, DevicePreference::Cpu).unwrap();
        let g = Golden::load(kind);
        let tokenizers: &[(bool, &str)] = if kind == "sdxl" { &[(false, "tokens"), (true, "tokens2")] } else { &[(false, "tokens")] };
        for &(second, name) in tokenizers {
            for (which, text) in [("prompt", "a red fox jumping over a lazy dog, oil painting!"), ("negative", "")] {
                let got = engine.tokenize(second, text).unwrap();
                assert_eq!(got, g.ids(&format!("{name}.{which}")), "{kind} {name}.{which}");
            }
        }
    }
}
