//! Cheap step previews: latents projected to RGB by a fixed 4x3 linear map (the community
//! "latent to RGB" approximation factors), at latent resolution. Never a VAE decode.

use candle_core::{Result, Tensor};
use image::RgbImage;

/// Previews come on every `PREVIEW_EVERY`-th step and on the last one.
pub const PREVIEW_EVERY: u32 = 4;

/// Whether step `step` (1-based) of `total` carries a preview.
pub fn preview_due(step: u32, total: u32) -> bool {
    step.is_multiple_of(PREVIEW_EVERY) || step == total
}

// Rows: latent channels; columns: R, G, B. Applied to the scaled latents the UNet works on.
const SD_FACTORS: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];
const SD_BIAS: [f32; 3] = [0.0; 3];
const XL_FACTORS: [[f32; 3]; 4] = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
];
const XL_BIAS: [f32; 3] = [0.1084, -0.0175, -0.0011];

/// `latents`: `[1, 4, h, w]` (any float dtype, any device). Returns a `w x h` image.
pub(super) fn latents_to_rgb(latents: &Tensor, xl: bool) -> Result<RgbImage> {
    let (factors, bias) = if xl {
        (&XL_FACTORS, &XL_BIAS)
    } else {
        (&SD_FACTORS, &SD_BIAS)
    };
    let l = latents
        .get(0)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec3::<f32>()?;
    let (h, w) = (l[0].len(), l[0][0].len());
    let mut img = RgbImage::new(w as u32, h as u32);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (x, y) = (x as usize, y as usize);
        for (c, out) in px.0.iter_mut().enumerate() {
            let v: f32 = bias[c] + (0..4).map(|k| l[k][y][x] * factors[k][c]).sum::<f32>();
            // The projection lands roughly in [-1, 1].
            *out = (((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    Ok(img)
}
