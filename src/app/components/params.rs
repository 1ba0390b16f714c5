//! Pure helpers about parameters: size presets with their aspect ratio, the download file name
//! and the A1111-style parameter text. No signals, no browser: unit-tested on the host.

use crate::api::{wire::decimal, ModelSummary, ResolvedParams};

/// Aspect ratios offered, in the order the menu shows them.
pub const RATIOS: [(u32, u32); 7] = [(1, 1), (4, 3), (3, 4), (3, 2), (2, 3), (16, 9), (9, 16)];

/// One entry of the size menu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizePreset {
    pub width: u32,
    pub height: u32,
}

impl SizePreset {
    pub fn value(self) -> String {
        format!("{}x{}", self.width, self.height)
    }

    pub fn parse(value: &str) -> Option<Self> {
        let (w, h) = value.split_once('x')?;
        Some(Self { width: w.trim().parse().ok()?, height: h.trim().parse().ok()? })
    }

    /// "4:3", reduced by the greatest common divisor.
    pub fn ratio(self) -> String {
        let g = gcd(self.width, self.height).max(1);
        format!("{}:{}", self.width / g, self.height / g)
    }

    pub fn label(self) -> String {
        format!("{} × {} ({})", self.width, self.height, self.ratio())
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The sizes a model allows for each ratio in [`RATIOS`]: exact ratios, both sides multiples
/// of 8 within the model's limits. Per ratio: the smallest, the one nearest the default area
/// and the largest. The model's default size is always offered.
pub fn size_presets(model: &ModelSummary) -> Vec<SizePreset> {
    let default = SizePreset { width: model.default_width, height: model.default_height };
    let default_area = u64::from(default.width) * u64::from(default.height);
    let fits = |p: &SizePreset| {
        p.width % 8 == 0
            && p.height % 8 == 0
            && p.width >= model.min_size
            && p.height >= model.min_size
            && p.width <= model.max_width
            && p.height <= model.max_height
    };
    let mut out: Vec<SizePreset> = Vec::new();
    for (a, b) in RATIOS {
        let candidates: Vec<SizePreset> = (1..=64u32)
            .map(|k| SizePreset { width: a * 8 * k, height: b * 8 * k })
            .filter(fits)
            .collect();
        let (Some(first), Some(last)) = (candidates.first().copied(), candidates.last().copied()) else {
            continue;
        };
        let near = candidates
            .iter()
            .copied()
            .min_by_key(|p| (u64::from(p.width) * u64::from(p.height)).abs_diff(default_area))
            .unwrap_or(first);
        for p in [first, near, last] {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    if fits(&default) && !out.contains(&default) {
        out.insert(0, default);
    }
    out
}

/// A file-name-safe slug of the prompt: lowercase ASCII letters and digits joined by dashes,
/// at most 48 characters; "easel" when nothing is left.
pub fn slug(prompt: &str) -> String {
    let mut out = String::new();
    for c in prompt.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 48 {
            break;
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "easel".to_string()
    } else {
        out
    }
}

/// The download name of an image: `<slug-of-prompt>-<seed>.png`.
pub fn download_name(params: &ResolvedParams) -> String {
    format!("{}-{}.png", slug(&params.prompt), params.seed)
}

/// A1111's "infotext": the prompt, an optional negative prompt line, then the settings line —
/// the same shape as the PNG's `parameters` chunk (less the sampler, which the browser does
/// not know).
pub fn a1111_text(params: &ResolvedParams) -> String {
    let mut s = params.prompt.clone();
    if !params.negative_prompt.is_empty() {
        s.push_str("\nNegative prompt: ");
        s.push_str(&params.negative_prompt);
    }
    s.push_str(&format!(
        "\nSteps: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {}",
        params.steps,
        decimal(params.guidance),
        params.seed,
        params.width,
        params.height,
        params.model
    ));
    s
}

/// "1.2 s" or "850 ms" (tenths rounded in integers: no float formatting in the WASM).
pub fn human_ms(ms: u64) -> String {
    if ms >= 1000 {
        let tenths = (ms + 50) / 100;
        format!("{}.{} s", tenths / 10, tenths % 10)
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelSummary {
        ModelSummary::tiny_for_tests()
    }

    #[test]
    fn presets_are_exact_ratios_within_limits() {
        let presets = size_presets(&tiny());
        assert_eq!(presets[0], SizePreset { width: 64, height: 64 });
        assert!(presets.contains(&SizePreset { width: 256, height: 256 }));
        assert!(presets.contains(&SizePreset { width: 128, height: 72 }));
        for p in &presets {
            assert_eq!(p.width % 8, 0);
            assert_eq!(p.height % 8, 0);
            assert!(p.width >= 64 && p.height >= 64 && p.width <= 256 && p.height <= 256, "{p:?}");
        }
        let ratios: Vec<String> = presets.iter().map(|p| p.ratio()).collect();
        for r in ["1:1", "4:3", "3:4", "16:9", "9:16"] {
            assert!(ratios.iter().any(|x| x == r), "{r} missing from {ratios:?}");
        }
        assert_eq!(SizePreset::parse("96x72"), Some(SizePreset { width: 96, height: 72 }));
        assert_eq!(SizePreset { width: 256, height: 144 }.label(), "256 × 144 (16:9)");
    }

    #[test]
    fn slugs_and_names() {
        assert_eq!(slug("A red fox, in the snow!"), "a-red-fox-in-the-snow");
        assert_eq!(slug("   ¿¡ "), "easel");
        assert!(slug(&"word ".repeat(40)).len() <= 48);
    }

    #[test]
    fn infotext_matches_a1111() {
        let p = ResolvedParams {
            prompt: "a fox".into(),
            negative_prompt: "blurry".into(),
            width: 64,
            height: 96,
            steps: 4,
            guidance: 7.5,
            seed: 42,
            model: "tiny".into(),
        };
        assert_eq!(a1111_text(&p), "a fox\nNegative prompt: blurry\nSteps: 4, CFG scale: 7.5, Seed: 42, Size: 64x96, Model: tiny");
        assert_eq!(download_name(&p), "a-fox-42.png");
        assert_eq!((human_ms(850), human_ms(1_249), human_ms(1_250), human_ms(61_000)), ("850 ms".into(), "1.2 s".into(), "1.3 s".into(), "61.0 s".into()));
    }
}
