//! Makes the committed tiny test model `models/tiny-xl` (SDXL-shaped: two text encoders, pooled
//! embedding, time ids), the second kind tests need beside the default `models/shapes` (SD 1.5's
//! architecture, trained by `train_shapes`): model.toml, a small byte-level
//! BPE tokenizer.json and seeded random weights stored as f16 safetensors. Reproducible byte
//! for byte: running it twice gives identical files.
//!
//! Usage: `cargo run --release --example make_tiny_models [-- <models dir>]` (default `models`).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::DType;
use easel::engine::{random_weights, read_model_spec};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

const TOOL: &str = "cargo run --release --example make_tiny_models";

/// Words that get their own token; everything else falls back to byte tokens.
const WORDS: &str = "a an the of in on at with and or by to from for is are this that \
    photo picture painting drawing portrait landscape sketch illustration render art style \
    cat dog bird horse fish lion tiger fox wolf bear rabbit robot dragon astronaut cosmonaut \
    man woman girl boy child person people face eyes hair hand \
    red green blue yellow orange purple pink black white gray grey brown gold silver \
    sky sun moon star stars cloud clouds sea ocean river lake mountain mountains forest tree \
    trees flower flowers garden city street house castle road bridge beach desert snow rain \
    night day sunset sunrise light dark fire water space planet galaxy \
    big small tall old new young beautiful cute happy sad detailed realistic abstract \
    high quality highly hd 4k 8k cinematic dramatic soft sharp oil watercolor digital \
    riding holding sitting standing flying running wearing";

fn bytes_to_unicode() -> Vec<(u8, char)> {
    // GPT-2's reversible byte -> printable character table (what ByteLevel expects).
    let mut printable: Vec<u32> = ('!' as u32..='~' as u32).collect();
    printable.extend('¡' as u32..='¬' as u32);
    printable.extend('®' as u32..='ÿ' as u32);
    let mut n = 0;
    (0u32..256)
        .map(|b| {
            let c = if printable.contains(&b) {
                b
            } else {
                n += 1;
                255 + n
            };
            (b as u8, char::from_u32(c).expect("valid char"))
        })
        .collect()
}

fn make_tokenizer() -> Tokenizer {
    let table = bytes_to_unicode();
    let mut vocab: HashMap<String, u32> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut add = |tok: String, vocab: &mut HashMap<String, u32>| {
        if !vocab.contains_key(&tok) {
            vocab.insert(tok.clone(), order.len() as u32);
            order.push(tok);
        }
    };
    for (_, c) in &table {
        add(c.to_string(), &mut vocab);
    }
    let space = table[b' ' as usize].1;
    let mut merges: Vec<(String, String)> = Vec::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for word in WORDS.split_whitespace() {
        // Words after a space carry the byte-level space marker, as GPT-2/CLIP-style BPEs do.
        let mut chars = vec![space.to_string()];
        chars.extend(word.chars().map(|c| c.to_string()));
        let mut cur = chars[0].clone();
        for next in &chars[1..] {
            let pair = (cur.clone(), next.clone());
            let merged = format!("{cur}{next}");
            if seen.insert(pair.clone()) {
                merges.push(pair);
            }
            add(merged.clone(), &mut vocab);
            cur = merged;
        }
    }
    add("<|startoftext|>".into(), &mut vocab);
    add("<|endoftext|>".into(), &mut vocab);
    let bos = vocab["<|startoftext|>"];
    let eos = vocab["<|endoftext|>"];

    let vocab: Vocab = vocab.into_iter().collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .expect("valid BPE");
    let mut tok = Tokenizer::new(bpe);
    tok.with_normalizer(Some(Lowercase)).expect("normalizer");
    tok.with_pre_tokenizer(Some(ByteLevel::default()));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    tok.with_post_processor(Some(
        TemplateProcessing::builder()
            .try_single("<|startoftext|> $A <|endoftext|>")
            .expect("template")
            .special_tokens(vec![("<|startoftext|>", bos), ("<|endoftext|>", eos)])
            .build()
            .expect("post processor"),
    ));
    tok.add_special_tokens([
        AddedToken::from("<|startoftext|>", true),
        AddedToken::from("<|endoftext|>", true),
    ])
    .expect("special tokens");
    tok
}

fn tiny_xl_toml(vocab: usize) -> String {
    format!(
        r#"# Tiny random-weight SDXL-shaped test model, made by `{TOOL}`.
# Two text encoders (penultimate hidden states concatenated, pooled + projected output of the
# second), the UNet's text_time addition embedding with the 6 micro-conditioning time ids, a /8
# VAE, and Euler Ancestral (so the per-step noise path runs in tests too). Abstract patterns.
kind = "sdxl"
description = "Tiny SDXL-shaped test model (random weights: abstract patterns)"
generated_by = "{TOOL}"
dtype = "f32"
scheduler = "euler_ancestral"
prediction = "epsilon"
vae_scale = 0.13025
default_width = 256
default_height = 256
max_width = 512
max_height = 512
default_steps = 4
max_steps = 50
default_guidance = 5.0
min_guidance = 0.0
max_guidance = 20.0

[files]
unet = "unet.safetensors"
vae = "vae.safetensors"
clip = "text_encoder.safetensors"
clip2 = "text_encoder_2.safetensors"
tokenizer = "tokenizer.json"
tokenizer2 = "tokenizer_2.json"

[clip]
vocab_size = {vocab}
embed_dim = 32
intermediate_size = 64
num_hidden_layers = 2
num_attention_heads = 2
max_position_embeddings = 77
activation = "quick_gelu"
projection_dim = 32

[clip2]
vocab_size = {vocab}
embed_dim = 64
intermediate_size = 128
num_hidden_layers = 2
num_attention_heads = 2
max_position_embeddings = 77
activation = "gelu"
projection_dim = 32
pad_with = "!"

[unet]
blocks = [
  {{ channels = 32, transformer_layers = 0, heads = 2 }},
  {{ channels = 32, transformer_layers = 2, heads = 2 }},
  {{ channels = 64, transformer_layers = 1, heads = 4 }},
]
layers_per_block = 1
norm_num_groups = 32
cross_attention_dim = 96
use_linear_projection = true
addition_time_embed_dim = 16

[vae]
block_out_channels = [16, 16, 32, 32]
layers_per_block = 1
norm_num_groups = 8
latent_channels = 4
"#
    )
}

fn write_model(
    models: &Path,
    name: &str,
    toml: &str,
    tokenizer: &Tokenizer,
    seed: u64,
) -> anyhow_free::Result {
    let dir = models.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("model.toml"), toml)?;
    let spec = read_model_spec(models, name)?;
    for f in std::iter::once(&spec.files.tokenizer).chain(spec.files.tokenizer2.as_ref()) {
        tokenizer
            .save(dir.join(&f.file), false)
            .map_err(|e| e.to_string())?;
    }
    for (file, tensors) in random_weights(&spec, seed, DType::F16)? {
        let map: HashMap<String, candle_core::Tensor> = tensors.into_iter().collect();
        candle_core::safetensors::save(&map, dir.join(&file))?;
    }
    let mut total = 0;
    for f in spec.files.all() {
        total += std::fs::metadata(dir.join(&f.file))?.len();
    }
    println!(
        "{}: {} files, {:.2} MB",
        dir.display(),
        spec.files.all().len() + 1,
        total as f64 / 1e6
    );
    Ok(())
}

/// Box<dyn Error> without pulling anyhow into the crate for one example.
mod anyhow_free {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}

fn main() -> anyhow_free::Result {
    let models = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "models".to_string());
    let models = Path::new(&models);
    let tokenizer = make_tokenizer();
    let vocab = tokenizer.get_vocab_size(true);
    write_model(
        models,
        "tiny-xl",
        &tiny_xl_toml(vocab),
        &tokenizer,
        0x5eed_0002,
    )?;
    Ok(())
}
