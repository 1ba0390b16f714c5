//! Optional download of a model's missing files from the Hugging Face Hub (`hf-hub` feature).
//! `Engine::load` never calls this: fetching is the caller's explicit choice.

use std::path::Path;

use super::{read_model_spec, EngineError, ModelSpec};

/// Downloads every missing file of `models_dir/<name>` that has a source in its description
/// (the kind's preset or `[sources]`) into the model folder. Blocking; files can be GBs.
pub fn fetch_model(models_dir: &Path, name: &str) -> Result<ModelSpec, EngineError> {
    let spec = read_model_spec(models_dir, name)?;
    let missing: Vec<_> = spec.missing_files().into_iter().cloned().collect();
    if missing.is_empty() {
        return Ok(spec);
    }
    let api = hf_hub::api::sync::Api::new().map_err(|e| {
        EngineError::ModelMissing(format!("Cannot reach the Hugging Face Hub: {e}"))
    })?;
    for f in missing {
        let Some((repo, path)) = &f.source else {
            return Err(EngineError::ModelMissing(
                spec.missing_files_message().unwrap_or_default(),
            ));
        };
        let cached = api.model(repo.clone()).get(path).map_err(|e| {
            EngineError::ModelMissing(format!(
                "Downloading `{path}` from https://huggingface.co/{repo} failed: {e}"
            ))
        })?;
        let dest = spec.dir.join(&f.file);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| EngineError::ModelMissing(format!("{}: {e}", parent.display())))?;
        }
        std::fs::copy(&cached, &dest).map_err(|e| {
            EngineError::ModelMissing(format!(
                "Copying {} to {} failed: {e}",
                cached.display(),
                dest.display()
            ))
        })?;
    }
    Ok(spec)
}
