//! Simple captioned scenes: what the default model is trained on and judged by. A [`Scene`] is
//! one or two coloured shapes at named places on a coloured background; it renders itself
//! (anti-aliased, with jitter) and describes itself in free phrasing. [`score`] judges a picture
//! against the scene its prompt named, with plain image analysis.
//!
//! Pure image code (no candle): used by the training tool, the evaluator and the tests.

pub mod score;

use std::ops::RangeInclusive;

use image::{Rgb, RgbImage};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Colour {
    Red,
    Orange,
    Yellow,
    Green,
    Blue,
    Purple,
    Pink,
    White,
    Black,
    Gray,
    Brown,
}

impl Colour {
    pub const ALL: [Colour; 11] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Blue,
        Colour::Purple,
        Colour::Pink,
        Colour::White,
        Colour::Black,
        Colour::Gray,
        Colour::Brown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Orange => "orange",
            Colour::Yellow => "yellow",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Purple => "purple",
            Colour::Pink => "pink",
            Colour::White => "white",
            Colour::Black => "black",
            Colour::Gray => "gray",
            Colour::Brown => "brown",
        }
    }

    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [215, 35, 35],
            Colour::Orange => [245, 135, 20],
            Colour::Yellow => [245, 220, 35],
            Colour::Green => [40, 165, 60],
            Colour::Blue => [35, 80, 215],
            Colour::Purple => [125, 45, 175],
            Colour::Pink => [245, 140, 195],
            Colour::White => [245, 245, 245],
            Colour::Black => [20, 20, 20],
            Colour::Gray => [128, 128, 128],
            Colour::Brown => [125, 75, 35],
        }
    }

    /// The palette colour nearest to `rgb`.
    pub fn nearest(rgb: [f32; 3]) -> Colour {
        let dist = |c: Colour| {
            let p = c.rgb();
            (0..3).map(|i| (p[i] as f32 - rgb[i]).powi(2)).sum::<f32>()
        };
        Colour::ALL
            .into_iter()
            .min_by(|a, b| dist(*a).total_cmp(&dist(*b)))
            .expect("palette is not empty")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Heart,
    Ring,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Star,
        Shape::Heart,
        Shape::Ring,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Heart => "heart",
            Shape::Ring => "ring",
        }
    }

    /// Whether the point (u, v) of the shape's unit box (-1..1, v pointing down) is inside.
    pub fn contains(self, u: f32, v: f32) -> bool {
        match self {
            Shape::Circle => u * u + v * v <= 1.0,
            Shape::Square => u.abs() <= 0.85 && v.abs() <= 0.85,
            Shape::Ring => {
                let r2 = u * u + v * v;
                (0.36..=1.0).contains(&r2)
            }
            Shape::Triangle => in_polygon(u, v, &[(0.0, -0.95), (0.97, 0.8), (-0.97, 0.8)]),
            Shape::Star => {
                let mut pts = [(0.0f32, 0.0f32); 10];
                for (i, p) in pts.iter_mut().enumerate() {
                    let r = if i % 2 == 0 { 1.0 } else { 0.45 };
                    let a = -std::f32::consts::FRAC_PI_2 + i as f32 * std::f32::consts::PI / 5.0;
                    *p = (r * a.cos(), r * a.sin() + 0.08);
                }
                in_polygon(u, v, &pts)
            }
            Shape::Heart => {
                let lobe = |cx: f32| (u - cx).powi(2) + (v + 0.38).powi(2) <= 0.5f32.powi(2);
                lobe(-0.45) || lobe(0.45) || in_polygon(u, v, &[(-0.93, -0.2), (0.93, -0.2), (0.0, 0.92)])
            }
        }
    }
}

fn in_polygon(x: f32, y: f32, pts: &[(f32, f32)]) -> bool {
    let mut inside = false;
    let mut j = pts.len() - 1;
    for i in 0..pts.len() {
        let (xi, yi) = pts[i];
        let (xj, yj) = pts[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// A cell of the 3x3 grid: column and row, each 0, 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub col: u8,
    pub row: u8,
}

impl Position {
    pub const CENTER: Position = Position { col: 1, row: 1 };

    pub fn all() -> impl Iterator<Item = Position> {
        (0..3).flat_map(|row| (0..3).map(move |col| Position { col, row }))
    }

    /// Ways to say it (all understood by the default model's tokenizer).
    fn phrases(self) -> &'static [&'static str] {
        match (self.col, self.row) {
            (0, 0) => &["in the top left corner", "at the top left", "top left", "in the upper left corner", "top-left"],
            (1, 0) => &["at the top", "on top", "at the top center", "top"],
            (2, 0) => &["in the top right corner", "at the top right", "top right", "in the upper right corner", "top-right"],
            (0, 1) => &["on the left", "at the left", "left", "to the left"],
            (1, 1) => &["in the center", "centered", "in the middle", "at the center", "center"],
            (2, 1) => &["on the right", "at the right", "right", "to the right"],
            (0, 2) => &["in the bottom left corner", "at the bottom left", "bottom left", "in the lower left corner", "bottom-left"],
            (1, 2) => &["at the bottom", "at the bottom center", "bottom"],
            _ => &["in the bottom right corner", "at the bottom right", "bottom right", "in the lower right corner", "bottom-right"],
        }
    }

    /// The canonical name ("top left", "center", "bottom").
    pub fn name(self) -> &'static str {
        match (self.col, self.row) {
            (0, 0) => "top left",
            (1, 0) => "top",
            (2, 0) => "top right",
            (0, 1) => "left",
            (1, 1) => "center",
            (2, 1) => "right",
            (0, 2) => "bottom left",
            (1, 2) => "bottom",
            _ => "bottom right",
        }
    }

    /// Centre of the cell as a fraction of the picture's side.
    fn centre(self) -> (f32, f32) {
        let at = |i: u8| [0.23, 0.5, 0.77][i as usize];
        (at(self.col), at(self.row))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    Small,
    Medium,
    Large,
}

impl Size {
    /// Radius as a fraction of the picture's side.
    fn radius(self) -> f32 {
        match self {
            Size::Small => 0.1,
            Size::Medium => 0.15,
            Size::Large => 0.2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    pub colour: Colour,
    pub shape: Shape,
    /// `None`: the prompt does not say (centre for one object, left and right for two).
    pub position: Option<Position>,
    /// `None`: not said (medium).
    pub size: Option<Size>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// `None`: the prompt does not say (white, or gray when an object is white).
    pub background: Option<Colour>,
    pub objects: Vec<Object>,
}

/// Words the default model's tokenizer knows; any other word is one unknown token.
pub const VOCABULARY: &[&str] = &[
    "a", "an", "the", "one", "and", "with", "on", "in", "at", "of", "to", "background", "corner",
    "small", "large", "top", "bottom", "left", "right", "center", "-", ",",
];

/// Spellings the tokenizer folds into a vocabulary word before looking it up.
pub const SYNONYMS: &[(&str, &str)] = &[
    ("grey", "gray"),
    ("big", "large"),
    ("huge", "large"),
    ("little", "small"),
    ("tiny", "small"),
    ("centered", "center"),
    ("centre", "center"),
    ("middle", "center"),
    ("upper", "top"),
    ("lower", "bottom"),
    ("circles", "circle"),
    ("squares", "square"),
    ("triangles", "triangle"),
    ("stars", "star"),
    ("hearts", "heart"),
    ("rings", "ring"),
];

/// Words that mean nothing to the model, mixed into captions so it learns to ignore them.
const FILLER: &[&str] = &["please", "draw", "picture", "simple", "nice", "shape", "image", "of", "painted", "flat"];

/// Whether training must never see this object-on-background combination: the evaluator's
/// prompts are drawn from these only, so it judges prompts the model did not train on.
pub fn held_out(colour: Colour, shape: Shape, background: Option<Colour>) -> bool {
    let b = background.map_or(11, |b| b as usize);
    (colour as usize * 7 + shape as usize * 5 + b * 3) % 10 == 0
}

impl Scene {
    /// One red object of `shape` on a blue background, centred, `size` (medium when `None`).
    pub fn red_on_blue(shape: Shape, size: Option<Size>) -> Scene {
        Scene {
            background: Some(Colour::Blue),
            objects: vec![Object { colour: Colour::Red, shape, position: None, size }],
        }
    }

    /// A random scene; `held_out_only` picks among the combinations training never sees,
    /// otherwise those are avoided.
    pub fn random(rng: &mut impl Rng, held_out_only: bool) -> Scene {
        loop {
            let scene = Self::draw(rng);
            let first = scene.objects[0];
            if held_out(first.colour, first.shape, scene.background) == held_out_only {
                return scene;
            }
        }
    }

    fn draw(rng: &mut impl Rng) -> Scene {
        let background = rng.random_bool(0.75).then(|| *Colour::ALL.choose(rng).expect("colours"));
        let count = if rng.random_bool(0.35) { 2 } else { 1 };
        let mut objects: Vec<Object> = Vec::new();
        while objects.len() < count {
            let colour = *Colour::ALL.choose(rng).expect("colours");
            if Some(colour) == background || objects.iter().any(|o| o.colour == colour) {
                continue;
            }
            let size = match rng.random_range(0..4) {
                0 => Some(Size::Small),
                1 => Some(Size::Large),
                _ => None,
            };
            let position = rng.random_bool(0.8).then(|| Position::all().nth(rng.random_range(0..9)).expect("9 cells"));
            objects.push(Object {
                colour,
                shape: *Shape::ALL.choose(rng).expect("shapes"),
                position,
                size,
            });
        }
        if let [a, b] = objects.as_mut_slice() {
            // Two objects: both placed or neither, in cells apart, neither larger than medium.
            match (a.position, b.position) {
                (Some(pa), Some(pb)) if pa.col.abs_diff(pb.col) + pa.row.abs_diff(pb.row) >= 2 => {}
                _ => {
                    a.position = None;
                    b.position = None;
                }
            }
            for o in [a, b] {
                if o.size == Some(Size::Large) {
                    o.size = None;
                }
            }
        }
        let bg = background.unwrap_or_else(|| Self::default_background(&objects));
        if objects.iter().any(|o| o.colour == bg) {
            return Self::draw(rng);
        }
        Scene { background, objects }
    }

    fn default_background(objects: &[Object]) -> Colour {
        if objects.iter().any(|o| o.colour == Colour::White) {
            Colour::Gray
        } else {
            Colour::White
        }
    }

    /// The same scene with one object's shape changed, for training pairs that differ only in
    /// that word and its outline: a circle becomes a square and a square a circle (the pair a
    /// model learns apart last) unless that combination is held out, any other shape any other
    /// one that is not.
    pub fn twin(&self, rng: &mut impl Rng) -> Scene {
        let at = rng.random_range(0..self.objects.len());
        let shape = self.objects[at].shape;
        let mut others: Vec<Shape> = Shape::ALL.into_iter().filter(|&s| s != shape).collect();
        others.shuffle(rng);
        let partner = match shape {
            Shape::Circle => Some(Shape::Square),
            Shape::Square => Some(Shape::Circle),
            _ => None,
        };
        let twin_with = |other: Shape| {
            let mut twin = self.clone();
            twin.objects[at].shape = other;
            let first = twin.objects[0];
            (!held_out(first.colour, first.shape, twin.background)).then_some(twin)
        };
        // Held-out combinations of a colour and background are every other shape (even or odd
        // in Shape::ALL), so some other shape always trains.
        partner
            .into_iter()
            .chain(others)
            .find_map(twin_with)
            .expect("half the shapes train with any colour and background")
    }

    /// The background actually painted.
    pub fn painted_background(&self) -> Colour {
        self.background.unwrap_or_else(|| Self::default_background(&self.objects))
    }

    /// Where each object is painted (cell), filling in unsaid positions.
    pub fn painted_positions(&self) -> Vec<Position> {
        match self.objects.as_slice() {
            [o] => vec![o.position.unwrap_or(Position::CENTER)],
            [a, b] => match (a.position, b.position) {
                (Some(pa), Some(pb)) => vec![pa, pb],
                _ => vec![Position { col: 0, row: 1 }, Position { col: 2, row: 1 }],
            },
            _ => Vec::new(),
        }
    }

    /// The plain canonical prompt: "a small red circle in the top left corner on a blue background".
    pub fn prompt(&self) -> String {
        let objects: Vec<String> = self
            .objects
            .iter()
            .map(|o| {
                let mut s = String::from("a ");
                match o.size {
                    Some(Size::Small) => s.push_str("small "),
                    Some(Size::Large) => s.push_str("large "),
                    _ => {}
                }
                s.push_str(o.colour.name());
                s.push(' ');
                s.push_str(o.shape.name());
                if let Some(p) = o.position {
                    s.push(' ');
                    s.push_str(p.phrases()[0]);
                }
                s
            })
            .collect();
        let mut prompt = objects.join(" and ");
        if let Some(bg) = self.background {
            prompt.push_str(&format!(" on a {} background", bg.name()));
        }
        prompt
    }

    /// A caption in free phrasing: articles, synonyms, word order, case and filler words vary.
    pub fn caption(&self, rng: &mut impl Rng) -> String {
        let pick = |rng: &mut dyn rand::RngCore, options: &[&'static str]| *options.choose(rng).expect("options");
        let mut parts: Vec<String> = Vec::new();
        for o in &self.objects {
            let mut words: Vec<&str> = Vec::new();
            words.push(pick(rng, &["a", "a", "an", "one", "the", ""]));
            match o.size {
                Some(Size::Small) => words.push(pick(rng, &["small", "little", "tiny"])),
                Some(Size::Large) => words.push(pick(rng, &["large", "big", "huge"])),
                _ => {}
            }
            let colour = if o.colour == Colour::Gray { pick(rng, &["gray", "grey"]) } else { o.colour.name() };
            words.push(colour);
            let shape = o.shape.name();
            let plural = format!("{shape}s");
            let mut phrase = words.join(" ");
            phrase.push(' ');
            phrase.push_str(if rng.random_bool(0.1) { &plural } else { shape });
            if let Some(p) = o.position {
                let said = pick(rng, p.phrases());
                if rng.random_bool(0.25) {
                    phrase = format!("{said} {phrase}");
                } else {
                    phrase = format!("{phrase} {said}");
                }
            }
            parts.push(phrase);
        }
        let mut caption = parts.join(pick(rng, &[" and ", " and ", ", ", " with "]));
        if let Some(bg) = self.background {
            let name = if bg == Colour::Gray { pick(rng, &["gray", "grey"]) } else { bg.name() };
            caption = match rng.random_range(0..5) {
                0 => format!("{caption} with a {name} background"),
                1 => format!("{name} background, {caption}"),
                2 => format!("{caption}, {name} background"),
                _ => format!("{caption} on a {name} background"),
            };
        }
        if rng.random_bool(0.15) {
            caption = format!("{} {caption}", pick(rng, FILLER));
        }
        if rng.random_bool(0.2) {
            caption = caption.to_uppercase();
        } else if rng.random_bool(0.3) {
            let mut c = caption.chars();
            caption = c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default();
        }
        caption.trim().to_string()
    }

    /// Paints the scene at `side` x `side`, with jitter in colour, place and size from `rng`.
    pub fn render(&self, side: u32, rng: &mut impl Rng) -> RgbImage {
        self.render_with_coverage(side, rng).image
    }

    /// [`Scene::render`], with the maps training weighs the picture's parts by.
    pub fn render_with_coverage(&self, side: u32, rng: &mut impl Rng) -> Rendered {
        let jitter = |rng: &mut dyn rand::RngCore, c: [u8; 3]| -> [f32; 3] {
            c.map(|v| (v as f32 + rng.random_range(-12.0f32..12.0)).clamp(0.0, 255.0))
        };
        let bg = jitter(rng, self.painted_background().rgb());
        let mut canvas: Vec<[f32; 3]> = vec![bg; (side * side) as usize];
        let mut coverage = vec![0f32; (side * side) as usize];
        let mut placed = Vec::with_capacity(self.objects.len());
        let s = side as f32;
        for (o, cell) in self.objects.iter().zip(self.painted_positions()) {
            let colour = jitter(rng, o.colour.rgb());
            let r = o.size.unwrap_or(Size::Medium).radius() * rng.random_range(0.9f32..1.1) * s;
            let (cx, cy) = cell.centre();
            let cx = (cx + rng.random_range(-0.035f32..0.035)) * s;
            let cy = (cy + rng.random_range(-0.035f32..0.035)) * s;
            paint(&mut canvas, &mut coverage, side, o.shape, (cx, cy, r), colour);
            placed.push((o.shape, (cx, cy, r)));
        }
        let image = RgbImage::from_fn(side, side, |x, y| {
            Rgb(canvas[(y * side + x) as usize].map(|v| v.round() as u8))
        });
        Rendered { image, coverage, placed }
    }
}

/// A rendered scene and, per pixel (0..1, row by row), what training weighs its parts by.
pub struct Rendered {
    pub image: RgbImage,
    /// How much of the pixel the objects cover.
    pub coverage: Vec<f32>,
    /// Each object's shape and where it landed (centre and radius, jitter included).
    placed: Vec<(Shape, (f32, f32, f32))>,
}

impl Rendered {
    /// Per pixel, how much an object's shape differs there from a circle of its size and place
    /// (a square's corners, a star's points and the gaps between them, a ring's hole): what tells
    /// the shapes apart, and what a model that paints every object as a round blob gets wrong.
    pub fn unlike_circle(&self) -> Vec<f32> {
        let side = self.image.width();
        let mut unlike = vec![0f32; self.coverage.len()];
        for &(shape, disc) in &self.placed {
            let (xs, ys) = bounding_box(side, disc);
            for y in ys {
                for x in xs.clone() {
                    let u = &mut unlike[(y * side + x) as usize];
                    *u = u.max((covered(shape, x, y, disc) - covered(Shape::Circle, x, y, disc)).abs());
                }
            }
        }
        unlike
    }
}

/// The pixels a shape centred at (cx, cy) with radius r may touch, clipped to the picture.
fn bounding_box(side: u32, (cx, cy, r): (f32, f32, f32)) -> (RangeInclusive<u32>, RangeInclusive<u32>) {
    let clip = |lo: f32, hi: f32| (lo.floor().max(0.0) as u32)..=(hi.ceil().min(side as f32 - 1.0) as u32);
    (clip(cx - r - 1.0, cx + r + 1.0), clip(cy - r - 1.0, cy + r + 1.0))
}

/// The share of pixel (x, y) inside `shape` centred at (cx, cy) with radius r: 4x4 samples.
fn covered(shape: Shape, x: u32, y: u32, (cx, cy, r): (f32, f32, f32)) -> f32 {
    let mut hits = 0;
    for sy in 0..4 {
        for sx in 0..4 {
            let u = (x as f32 + (sx as f32 + 0.5) / 4.0 - cx) / r;
            let v = (y as f32 + (sy as f32 + 0.5) / 4.0 - cy) / r;
            if shape.contains(u, v) {
                hits += 1;
            }
        }
    }
    hits as f32 / 16.0
}

/// Blends `shape` centred at (cx, cy) with radius r into the canvas, 4x4 samples per pixel, and
/// records the share of each pixel it covers in `coverage`.
pub(crate) fn paint(
    canvas: &mut [[f32; 3]],
    coverage: &mut [f32],
    side: u32,
    shape: Shape,
    (cx, cy, r): (f32, f32, f32),
    colour: [f32; 3],
) {
    let (xs, ys) = bounding_box(side, (cx, cy, r));
    for y in ys {
        for x in xs.clone() {
            let a = covered(shape, x, y, (cx, cy, r));
            if a > 0.0 {
                let i = (y * side + x) as usize;
                coverage[i] = coverage[i].max(a);
                let px = &mut canvas[i];
                for c in 0..3 {
                    px[c] = px[c] * (1.0 - a) + colour[c] * a;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The coverage is where the objects were painted: none on the background, about the
    /// shape's area in all (a medium circle: π·(0.15·side)², size jitter ±10 %).
    #[test]
    fn coverage_marks_the_objects_pixels() {
        let scene = Scene::red_on_blue(Shape::Circle, None);
        let side = 128;
        let rendered = scene.render_with_coverage(side, &mut ChaCha8Rng::seed_from_u64(1));
        // A circle differs from a circle nowhere.
        assert!(rendered.unlike_circle().iter().all(|&u| u == 0.0));
        let Rendered { image: img, coverage, .. } = rendered;
        assert_eq!(coverage.len(), (side * side) as usize);
        let area: f32 = coverage.iter().sum();
        let expected = std::f32::consts::PI * (0.15 * side as f32).powi(2);
        assert!((area / expected - 1.0).abs() < 0.25, "covered {area} px, a circle has {expected}");
        // Edge pixels are a blend; the others are plainly the circle's or the background's.
        for (i, (&c, px)) in coverage.iter().zip(img.pixels()).enumerate() {
            if (0.25..=0.75).contains(&c) {
                continue;
            }
            let reddish = px.0[0] > px.0[2];
            assert_eq!(c > 0.5, reddish, "pixel {i}: coverage {c}, colour {:?}", px.0);
        }
        assert_eq!(coverage[0], 0.0);
    }

    /// A twin differs from its scene in one object's shape only, renders with the same jitter
    /// from the same random state (so a pair differs only in that outline), and trains: it is
    /// never a held-out combination.
    #[test]
    fn a_twin_differs_in_one_shape_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..200 {
            let scene = Scene::random(&mut rng, false);
            let twin = scene.twin(&mut rng);
            assert_eq!(twin.background, scene.background);
            let changed: Vec<_> = scene.objects.iter().zip(&twin.objects).filter(|(a, b)| a != b).collect();
            let [(a, b)] = changed.as_slice() else { panic!("{scene:?} -> {twin:?}") };
            assert_ne!(a.shape, b.shape);
            assert_eq!((a.colour, a.position, a.size), (b.colour, b.position, b.size));
            if a.shape == Shape::Circle && scene.objects.len() == 1 && !held_out(a.colour, Shape::Square, scene.background) {
                assert_eq!(b.shape, Shape::Square, "{twin:?}");
            }
            let first = twin.objects[0];
            assert!(!held_out(first.colour, first.shape, twin.background), "{twin:?}");
        }
        let (scene, twin) = (Scene::red_on_blue(Shape::Circle, None), Scene::red_on_blue(Shape::Square, None));
        let jitter = ChaCha8Rng::seed_from_u64(5);
        let (a, b) = (scene.render(128, &mut jitter.clone()), twin.render(128, &mut jitter.clone()));
        assert_eq!(a.get_pixel(0, 0), b.get_pixel(0, 0), "the same background");
        assert_eq!(a.get_pixel(64, 64), b.get_pixel(64, 64), "the same colour and place");
        let differ = a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count();
        assert!((100..1500).contains(&differ), "only the corners differ: {differ} px");
        let mut phrasing = ChaCha8Rng::seed_from_u64(6);
        let said = scene.caption(&mut phrasing.clone());
        assert_eq!(twin.caption(&mut phrasing).to_lowercase().replace("square", "circle"), said.to_lowercase());
    }

    /// Where a square differs from a circle in its place: the symmetric difference of the two,
    /// 0.604 r² for a square of half-side 0.85 r (corners out, four caps in), r from its area.
    #[test]
    fn a_square_is_unlike_a_circle_at_its_corners() {
        let scene = Scene::red_on_blue(Shape::Square, None);
        let side = 128;
        let rendered = scene.render_with_coverage(side, &mut ChaCha8Rng::seed_from_u64(2));
        let (coverage, unlike_circle) = (&rendered.coverage, rendered.unlike_circle());
        let r2 = coverage.iter().sum::<f32>() / (4.0 * 0.85 * 0.85);
        let caps = 4.0 * (0.85f32.acos() - 0.85 * (1.0 - 0.85f32 * 0.85).sqrt());
        let expected = (4.0 * 0.85 * 0.85 + std::f32::consts::PI - 2.0 * (std::f32::consts::PI - caps)) * r2;
        let unlike: f32 = unlike_circle.iter().sum();
        assert!((unlike / expected - 1.0).abs() < 0.1, "unlike a circle on {unlike} px, expected {expected}");
        // The square's centre and the background far from it are alike.
        let (c, far) = ((side / 2 * side + side / 2) as usize, 0);
        assert_eq!((unlike_circle[c], unlike_circle[far]), (0.0, 0.0));
    }
}
