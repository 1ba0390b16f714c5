//! PNG output with generation parameters in A1111's `parameters` text chunk.

use image::RgbImage;

use super::spec::ModelSpec;
use super::{EngineError, GenerateRequest};

/// What goes into the `parameters` chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct PngMetadata {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub steps: u32,
    pub guidance: f64,
    pub width: u32,
    pub height: u32,
    pub model: String,
    /// A1111's sampler name ("DDIM", "Euler a").
    pub sampler: String,
}

impl PngMetadata {
    pub fn new(req: &GenerateRequest, spec: &ModelSpec) -> Self {
        Self {
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone(),
            seed: req.seed,
            steps: req.steps,
            guidance: req.guidance,
            width: req.width,
            height: req.height,
            model: spec.name.clone(),
            sampler: spec.scheduler.a1111_name().to_string(),
        }
    }

    /// A1111's "infotext": prompt, optional negative prompt line, then the settings line.
    pub fn parameters(&self) -> String {
        let mut s = self.prompt.clone();
        if !self.negative_prompt.is_empty() {
            s.push_str("\nNegative prompt: ");
            s.push_str(&self.negative_prompt);
        }
        s.push_str(&format!(
            "\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {}, Version: easel {}",
            self.steps,
            self.sampler,
            self.guidance,
            self.seed,
            self.width,
            self.height,
            self.model,
            env!("CARGO_PKG_VERSION")
        ));
        s
    }
}

/// Encodes `img` as an 8-bit RGB PNG carrying `parameters`. Written with the `png` crate
/// because `image`'s encoder cannot add text chunks.
pub fn encode_png(img: &RgbImage, meta: &PngMetadata) -> Result<Vec<u8>, EngineError> {
    let fail =
        |e: png::EncodingError| EngineError::InferenceFailed(format!("PNG encoding failed: {e}"));
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let text = meta.parameters();
    // tEXt is Latin-1 only; anything else goes to an iTXt chunk (UTF-8), as A1111 does.
    if text.chars().all(|c| (c as u32) < 256) {
        enc.add_text_chunk("parameters".into(), text)
            .map_err(fail)?;
    } else {
        enc.add_itxt_chunk("parameters".into(), text)
            .map_err(fail)?;
    }
    let mut writer = enc.write_header().map_err(fail)?;
    writer.write_image_data(img.as_raw()).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

/// The `parameters` text of a PNG, if it has one (tEXt or iTXt).
pub fn read_png_parameters(png_bytes: &[u8]) -> Option<String> {
    let reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .ok()?;
    let info = reader.info();
    if let Some(t) = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "parameters")
    {
        return Some(t.text.clone());
    }
    info.utf8_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .and_then(|t| t.get_text().ok())
}
