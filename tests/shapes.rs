//! The default model (models/shapes) paints what it is asked: the committed evaluator on a small
//! set of prompts it was not trained on, its tokenizer's tolerance of phrasing, and one picture
//! looked at pixel by pixel. Run in release: `cargo test --release --test shapes`.
//! (`cargo run --release --features ssr --example evaluate_shapes` runs the full evaluation.)

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use easel::engine::{DevicePreference, Engine, GenerateRequest};
use easel::scenes::score::{evaluate, median_rgb, Report};
use easel::scenes::Colour;
use tokenizers::Tokenizer;

fn models_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models"))
}

fn shapes() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::load(&models_dir(), "shapes", DevicePreference::Cpu).expect("the default model loads"))
}

fn paint(prompt: &str, side: u32, seed: u64) -> image::RgbImage {
    let spec = shapes().spec();
    let req = GenerateRequest {
        prompt: prompt.into(),
        negative_prompt: String::new(),
        width: side,
        height: side,
        steps: spec.default_steps,
        guidance: spec.default_guidance,
        seed,
    };
    shapes().generate(&req, &mut |_| {}, &AtomicBool::new(false)).expect("generation succeeds")
}

/// The evaluator on 40 held-out prompts at 128x128 (the model's default size), painted once for
/// the floor tests below; the table and the misses are printed for whoever reads the log.
fn forty_held_out() -> &'static Report {
    static R: OnceLock<Report> = OnceLock::new();
    R.get_or_init(|| {
        let report = evaluate(40, 128, 4242, paint);
        println!("{}", report.table());
        for miss in &report.misses {
            println!("  miss: {miss}");
        }
        report
    })
}

/// The floors are the bar (colour and background 90 %, shape and position 75 %), less
/// what 40 prompts can miss by chance; `evaluate_shapes` measures the full set.
#[test]
fn the_default_model_paints_the_colours_and_places_asked_for() {
    let report = forty_held_out();
    let table = report.table();
    assert!(report.background.named >= 10 && report.position.named >= 10, "{table}");
    assert!(report.colour.share() >= 0.85, "{table}");
    assert!(report.background.share() >= 0.85, "{table}");
    assert!(report.position.share() >= 0.65, "{table}");
}

/// The floor the committed model meets by one object only: it still paints many stars as blobs.
#[test]
#[ignore = "issue 10's goal, not met yet: on these 40 prompts the committed model paints colours (96 %), backgrounds (100 %) and places (88 %), and 67 % of shapes, one object above this floor (too thin a margin for CI: a last-digit change in the maths can move it), and 60 % of the shapes of the 200 report prompts, against the goal of 75 %; see models/README.md; run with --ignored"]
fn the_default_model_paints_the_shapes_asked_for() {
    let report = forty_held_out();
    assert!(report.shape.share() >= 0.65, "{}", report.table());
}

/// The issue's own example, looked at directly: the centre is red and each side of the border
/// blue (the palette colour nearest to the median of the centre's 8x8 pixels and of each side's
/// outer 4 rows or columns, as the evaluator reads a background).
#[test]
fn a_red_circle_on_a_blue_background() {
    let median = |img: &image::RgbImage, xs: std::ops::Range<u32>, ys: std::ops::Range<u32>| {
        median_rgb(img, ys.flat_map(move |y| xs.clone().map(move |x| (x, y))))
    };
    for seed in [1, 2, 3] {
        let img = paint("a red circle on a blue background", 128, seed);
        let centre = median(&img, 60..68, 60..68);
        assert_eq!(Colour::nearest(centre), Colour::Red, "seed {seed}: centre {centre:?}");
        for (side, xs, ys) in [("top", 0..128, 0..4), ("bottom", 0..128, 124..128), ("left", 0..4, 0..128), ("right", 124..128, 0..128)] {
            let border = median(&img, xs, ys);
            assert_eq!(Colour::nearest(border), Colour::Blue, "seed {seed}: {side} border {border:?}");
        }
    }
}

/// The evaluator judges every held-out prompt it paints with the real model: each picture gets a
/// verdict on every attribute its prompt names, and the table counts them all.
#[test]
fn the_evaluator_judges_every_attribute_a_prompt_names() {
    let report = evaluate(6, 128, 4242, paint);
    let table = report.table();
    println!("{table}");
    assert!(report.colour.named >= 6 && report.shape.named >= 6, "{table}");
    assert!(report.background.named + report.position.named > 0, "{table}");
    assert!(report.colour.right <= report.colour.named && report.position.right <= report.position.named, "{table}");
}

/// Case, synonyms, plurals, punctuation and unknown words: the same tokens as the plain prompt,
/// with unknown words as one unknown token and never an error.
#[test]
fn free_phrasing_reaches_the_same_words() {
    let tok = Tokenizer::from_file(Path::new(&models_dir()).join("shapes/tokenizer.json")).unwrap();
    let ids = |s: &str| tok.encode(s, false).unwrap().get_ids().to_vec();
    assert_eq!(ids("A BIG Grey Circle, top-left"), ids("a large gray circle , top - left"));
    assert_eq!(ids("two hearts centered"), ids("two heart center"));
    assert_eq!(ids("small stars in the upper right corner"), ids("small star in the top right corner"));
    let unk = tok.token_to_id("<unk>").unwrap();
    let odd = ids("a zebra-striped circle");
    assert_eq!(odd.iter().filter(|&&i| i == unk).count(), 2, "{odd:?}");
    assert!(!ids("a circle").contains(&unk));
}
