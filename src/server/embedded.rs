//! What the binary carries so that a copy of it runs alone: the built site (WASM, JS, CSS and
//! the files from `public/`) and the default model. Files on disk win when present (a
//! `target/site` next to the binary, a `models/shapes` folder), so development and operators'
//! own files keep working.
//!
//! The site is embedded from `target/site` as it was when the server was compiled; the build
//! scripts compile the server once more after `cargo leptos build` so it is the current one.

use std::path::Path;

use anyhow::Context;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "target/site"]
#[allow_missing = true]
struct Site;

#[derive(Embed)]
#[folder = "models/shapes"]
struct DefaultModel;

/// The folder name of the model the binary carries.
pub const DEFAULT_MODEL: &str = "shapes";

/// Writes the carried model to `models_dir/shapes` when no model of that name is there.
/// Returns whether it wrote it.
pub fn install_default_model(models_dir: &Path) -> anyhow::Result<bool> {
    let dir = models_dir.join(DEFAULT_MODEL);
    if dir.join("model.toml").exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in DefaultModel::iter() {
        let file = DefaultModel::get(&name).expect("listed files exist");
        // model.toml last: a half-written folder is never taken for a model.
        if name != "model.toml" {
            let path = dir.join(name.as_ref());
            std::fs::write(&path, &file.data).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    let toml = DefaultModel::get("model.toml").context("the carried model has a model.toml")?;
    std::fs::write(dir.join("model.toml"), &toml.data).with_context(|| format!("writing {}", dir.display()))?;
    Ok(true)
}

/// Whether the binary carries a built site (false when it was compiled before the first
/// `cargo leptos build`).
pub fn has_site() -> bool {
    Site::iter().next().is_some()
}

/// The carried copy of the site file at `path` (no leading slash), with its type and an ETag;
/// `None` when the binary carries no such file.
pub fn site_file(path: &str, headers: &HeaderMap) -> Option<Response> {
    let file = Site::get(path)?;
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    if fresh {
        return Some((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let mime = HeaderValue::from_str(file.metadata.mimetype()).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Some(
        (
            [(header::CONTENT_TYPE, mime), (header::ETAG, etag)],
            Body::from(file.data.into_owned()),
        )
            .into_response(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
