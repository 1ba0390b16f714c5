//! Seeded random weights for any model description: how the committed tiny test models are
//! made (`examples/make_tiny_models.rs`). The modules are built exactly as `Engine::load`
//! builds them, so the tensor names and shapes always match the loading code.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::spec::ModelSpec;
use super::text::ClipText;
use super::unet::UNet;
use super::vae::Vae;
use super::EngineError;

/// Weight file name (relative to the model folder) and its named tensors.
pub type WeightFile = (String, BTreeMap<String, Tensor>);

/// For each weight file of `spec` (file name relative to the model folder), its tensors in
/// `dtype`, set by [`seeded_init`] from `seed`.
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
    Vae::new(new_vb(&m), &arch.vae, true).map_err(fail)?;
    parts.push((spec.files.vae.file.clone(), m));

    let mut out = Vec::new();
    for (i, (file, map)) in parts.into_iter().enumerate() {
        seeded_init(&map, seed.wrapping_add(i as u64)).map_err(fail)?;
        let vars = map.data().lock().expect("var map lock").clone();
        let mut tensors = BTreeMap::new();
        for (name, var) in vars {
            tensors.insert(name, var.as_tensor().to_dtype(dtype).map_err(fail)?);
        }
        out.push((file, tensors));
    }
    Ok(out)
}

/// Sets every variable of `map` from a ChaCha8 RNG seeded by `seed`: norm scales 1, biases
/// small, other weights uniform with unit-variance-preserving bounds (sqrt(3 / fan_in)).
/// candle's own initialisers draw from an unseedable RNG on CPU.
pub(super) fn seeded_init(map: &VarMap, seed: u64) -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vars = map.data().lock().expect("var map lock").clone();
    // Sorted, so the RNG stream is assigned to tensors in a fixed order.
    let sorted: BTreeMap<String, candle_core::Var> = vars.into_iter().collect();
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
        var.set(&Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}
