//! Seeded random weights for any model description: how the committed tiny test models are
//! made (`examples/make_tiny_models.rs`). The modules are built exactly as `Engine::load`
//! builds them, so the tensor names and shapes always match the loading code.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::pipeline::vae_config;
use super::spec::ModelSpec;
use super::text::ClipText;
use super::unet::UNet;
use super::EngineError;

/// Weight file name (relative to the model folder) and its named tensors.
pub type WeightFile = (String, BTreeMap<String, Tensor>);

/// For each weight file of `spec` (file name relative to the model folder), its tensors in
/// `dtype`, with values drawn from a ChaCha8 RNG seeded by `seed`: norm scales 1, biases
/// small, other weights uniform with unit-variance-preserving bounds (sqrt(3 / fan_in)).
pub fn random_weights(
    spec: &ModelSpec,
    seed: u64,
    dtype: DType,
) -> Result<Vec<WeightFile>, EngineError> {
    let fail = |e: candle_core::Error| EngineError::InferenceFailed(e.to_string());
    let arch = &spec.arch;
    let mut parts: Vec<(String, VarMap)> = Vec::new();
    let dev = Device::Cpu;
    let new_vb = |m: &VarMap| VarBuilder::from_varmap(m, DType::F32, &dev);

    let m = VarMap::new();
    ClipText::new(new_vb(&m), &arch.clip, false).map_err(fail)?;
    parts.push((spec.files.clip.file.clone(), m));
    if let (Some(a), Some(f)) = (&arch.clip2, &spec.files.clip2) {
        let m = VarMap::new();
        ClipText::new(new_vb(&m), a, true).map_err(fail)?;
        parts.push((f.file.clone(), m));
    }
    let m = VarMap::new();
    let pooled = arch.clip2.as_ref().map_or(0, |c| c.projection_dim);
    UNet::new(new_vb(&m), &arch.unet, pooled).map_err(fail)?;
    parts.push((spec.files.unet.file.clone(), m));
    let m = VarMap::new();
    AutoEncoderKL::new(new_vb(&m), 3, 3, vae_config(&arch.vae)).map_err(fail)?;
    parts.push((spec.files.vae.file.clone(), m));

    let mut out = Vec::new();
    for (i, (file, map)) in parts.into_iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(i as u64));
        let vars = map.data().lock().expect("var map lock").clone();
        // Sorted, so the RNG stream is assigned to tensors in a fixed order.
        let sorted: BTreeMap<String, candle_core::Var> = vars.into_iter().collect();
        let mut tensors = BTreeMap::new();
        for (name, var) in sorted {
            let dims = var.dims().to_vec();
            let n: usize = dims.iter().product();
            let values: Vec<f32> = if dims.len() == 1 && name.ends_with(".weight") {
                vec![1.0; n]
            } else if dims.len() == 1 {
                (0..n).map(|_| rng.random_range(-0.05f32..0.05)).collect()
            } else {
                let fan_in: usize = dims[1..].iter().product();
                let b = (3.0f32 / fan_in as f32).sqrt();
                (0..n).map(|_| rng.random_range(-b..b)).collect()
            };
            let t = Tensor::from_vec(values, dims, &dev)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(fail)?;
            tensors.insert(name, t);
        }
        out.push((file, tensors));
    }
    Ok(out)
}
