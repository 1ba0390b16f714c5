//! Prompt -> text embeddings: the CLIP tokenizer and CLIP text transformer.
//!
//! The transformer is written here (from candle-nn layers, Hugging Face weight names) because
//! candle's configurable CLIP (`models::clip::text_model`) only knows QuickGELU and hides the
//! intermediate layers, while SD 2.x and SDXL need GELU, SDXL needs the penultimate layer's
//! hidden states and the projected pooled output, and candle's Stable Diffusion CLIP keeps its
//! config fields private (no tiny dims).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn as nn;
use tokenizers::Tokenizer;

use super::attention::LayerNorm;
use super::kernels::{self, softmax_last_dim};
use super::spec::{Activation, ClipArch};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// CLIP's pre-tokenizer pattern (openai/CLIP `simple_tokenizer.py`, as in the hub's
/// tokenizer.json files).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Loads a tokenizer: a `tokenizer.json`, or a hub tokenizer folder's `vocab.json` with the
/// `merges.txt` beside it, built as CLIP's byte-level BPE (what the slow `CLIPTokenizer` reads).
pub(super) fn load_tokenizer(path: &std::path::Path) -> std::result::Result<Tokenizer, String> {
    if path.file_name().is_none_or(|n| n != "vocab.json") {
        return Tokenizer::from_file(path).map_err(|e| e.to_string());
    }
    use tokenizers::models::bpe::BPE;
    use tokenizers::normalizers::replace::ReplacePattern;
    use tokenizers::normalizers::{Lowercase, Replace, Sequence, NFC};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{AddedToken, SplitDelimiterBehavior};
    let merges = path.with_file_name("merges.txt");
    let text = |p: &std::path::Path| p.to_str().map(str::to_string).ok_or("a path that is not UTF-8");
    let bpe = BPE::from_file(&text(path)?, &text(&merges)?)
        .end_of_word_suffix("</w>".into())
        .unk_token(EOS.into())
        .build()
        .map_err(|e| format!("{} with {}: {e}", path.display(), merges.display()))?;
    let err = |e: tokenizers::Error| e.to_string();
    let mut tok = Tokenizer::new(bpe);
    tok.with_normalizer(Some(Sequence::new(vec![
        NFC.into(),
        Replace::new(ReplacePattern::Regex(r"\s+".into()), " ").map_err(err)?.into(),
        Lowercase.into(),
    ])))
    .map_err(err)?;
    tok.with_pre_tokenizer(Some(PreSequence::new(vec![
        Split::new(SplitPattern::Regex(CLIP_PATTERN.into()), SplitDelimiterBehavior::Removed, true)
            .map_err(err)?
            .into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.add_special_tokens([AddedToken::from(BOS, true), AddedToken::from(EOS, true)])
        .map_err(err)?;
    Ok(tok)
}

/// Turns a prompt into exactly `max_len` token ids: BOS, tokens, EOS, padding.
pub(super) struct PromptTokenizer {
    tokenizer: Tokenizer,
    max_len: usize,
    bos: u32,
    eos: u32,
    pad: u32,
}

impl PromptTokenizer {
    pub fn new(mut tokenizer: Tokenizer, arch: &ClipArch) -> std::result::Result<Self, String> {
        // Some tokenizer.json files pad or truncate on their own (to 77, say, with their own pad
        // token): easel adds BOS/EOS, cuts and pads itself, so those settings must not act first.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| format!("its truncation cannot be turned off: {e}"))?;
        if let Some(p) = &arch.pad_with {
            // transformers registers the pad token as a special token, so a "!" typed in the
            // prompt is that token too (not "!</w>"): do the same to get the same ids.
            tokenizer
                .add_special_tokens([tokenizers::AddedToken::from(p.clone(), true)])
                .map_err(|e| format!("its pad token {p:?} cannot be added: {e}"))?;
        }
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| format!("it has no {t} token"))
        };
        let bos = id(BOS)?;
        let eos = id(EOS)?;
        let pad = match &arch.pad_with {
            Some(p) => id(p)?,
            None => eos,
        };
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > arch.vocab_size {
            return Err(format!(
                "its vocabulary ({vocab}) is larger than the text encoder's ({})",
                arch.vocab_size
            ));
        }
        Ok(Self {
            tokenizer,
            max_len: arch.max_position_embeddings,
            bos,
            eos,
            pad,
        })
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    pub fn encode(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| e.to_string())?;
        let mut ids: Vec<u32> = enc.get_ids().to_vec();
        // Not every tokenizer.json carries a post-processor adding BOS/EOS: make sure of both.
        if ids.first() != Some(&self.bos) {
            ids.insert(0, self.bos);
        }
        if ids.last() != Some(&self.eos) {
            ids.push(self.eos);
        }
        // Long prompts are cut, as every SD front end does, keeping the closing EOS.
        if ids.len() > self.max_len {
            ids.truncate(self.max_len - 1);
            ids.push(self.eos);
        }
        ids.resize(self.max_len, self.pad);
        Ok(ids)
    }
}

struct Layer {
    ln1: LayerNorm,
    q: kernels::Linear,
    k: kernels::Linear,
    v: kernels::Linear,
    out: kernels::Linear,
    ln2: LayerNorm,
    fc1: kernels::Linear,
    fc2: kernels::Linear,
}

pub(super) struct ClipText {
    token_embedding: nn::Embedding,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    projection: Option<nn::Linear>,
    heads: usize,
    activation: Activation,
    trainable: bool,
}

/// What one encoder pass gives.
pub(super) struct TextOutput {
    /// Last layer, after the final layer norm: `[batch, tokens, dim]` (SD 1.x / 2.x context).
    pub last: Tensor,
    /// Output of the penultimate layer, no final norm (SDXL's `hidden_states[-2]`).
    pub penultimate: Tensor,
    /// `text_projection(final_norm(last)[eos])`: `[batch, projection_dim]`, when loaded with one.
    pub pooled: Option<Tensor>,
}

impl ClipText {
    /// `with_projection`: load `text_projection` (SDXL's second encoder,
    /// `CLIPTextModelWithProjection`).
    pub fn new(vb: nn::VarBuilder, c: &ClipArch, with_projection: bool) -> Result<Self> {
        let projection = if with_projection {
            Some(nn::linear_no_bias(
                c.embed_dim,
                c.projection_dim,
                vb.pp("text_projection"),
            )?)
        } else {
            None
        };
        // Hub files name everything under `text_model.`; transformers 5 saves it without (and
        // a builder over new variables has nothing yet: it gets the hub's names).
        let vb = if !vb.contains_tensor("text_model.embeddings.token_embedding.weight")
            && vb.contains_tensor("embeddings.token_embedding.weight")
        {
            vb
        } else {
            vb.pp("text_model")
        };
        let emb = vb.pp("embeddings");
        let token_embedding = nn::embedding(c.vocab_size, c.embed_dim, emb.pp("token_embedding"))?;
        let position_embedding = emb
            .pp("position_embedding")
            .get((c.max_position_embeddings, c.embed_dim), "weight")?;
        // Built from variables (the training tool): gradients need the plain-op kernels.
        let trainable = position_embedding.is_variable();
        let d = c.embed_dim;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp(format!("encoder.layers.{i}"));
                let att = vb.pp("self_attn");
                Ok(Layer {
                    ln1: LayerNorm::new(d, 1e-5, vb.pp("layer_norm1"))?,
                    q: kernels::linear(d, d, att.pp("q_proj"))?,
                    k: kernels::linear(d, d, att.pp("k_proj"))?,
                    v: kernels::linear(d, d, att.pp("v_proj"))?,
                    out: kernels::linear(d, d, att.pp("out_proj"))?,
                    ln2: LayerNorm::new(d, 1e-5, vb.pp("layer_norm2"))?,
                    fc1: kernels::linear(d, c.intermediate_size, vb.pp("mlp.fc1"))?,
                    fc2: kernels::linear(c.intermediate_size, d, vb.pp("mlp.fc2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_ln = LayerNorm::new(d, 1e-5, vb.pp("final_layer_norm"))?;
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_ln,
            projection,
            heads: c.num_attention_heads,
            activation: c.activation,
            trainable,
        })
    }

    fn attention(&self, l: &Layer, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, n, d) = xs.dims3()?;
        let hd = d / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            // Attention in f32: half-precision softmax over 77 tokens loses too much.
            t.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?
                .to_dtype(DType::F32)
        };
        let q = split((l.q.forward(xs)? * (hd as f64).powf(-0.5))?)?;
        let k = split(l.k.forward(xs)?)?;
        let v = split(l.v.forward(xs)?)?;
        let att = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let att = softmax_last_dim(&att, self.trainable)?;
        let out = att
            .matmul(&v)?
            .to_dtype(xs.dtype())?
            .transpose(1, 2)?
            .reshape((b, n, d))?;
        l.out.forward(&out)
    }

    fn mlp(&self, l: &Layer, xs: &Tensor) -> Result<Tensor> {
        let h = l.fc1.forward(xs)?;
        let h = match self.activation {
            Activation::QuickGelu => (&h * nn::ops::sigmoid(&(&h * 1.702)?)?)?,
            // Hugging Face's "gelu" is the exact (erf) form.
            Activation::Gelu => h.gelu_erf()?,
        };
        l.fc2.forward(&h)
    }

    /// `ids`: `[batch, tokens]` u32. `eos`: the end-of-text id (its first occurrence is pooled).
    pub fn forward(&self, ids: &Tensor, eos: u32) -> Result<TextOutput> {
        let (b, n) = ids.dims2()?;
        let dev = ids.device();
        let pos = self.position_embedding.narrow(0, 0, n)?;
        let mut xs = self.token_embedding.forward(ids)?.broadcast_add(&pos)?;
        let mask = causal_mask(n, dev)?;
        let mut penultimate = xs.clone();
        let count = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            let h = self.attention(l, &l.ln1.forward(&xs)?, &mask)?;
            xs = (xs + h)?;
            let h = self.mlp(l, &l.ln2.forward(&xs)?)?;
            xs = (xs + h)?;
            if i + 2 == count {
                penultimate = xs.clone();
            }
        }
        let last = self.final_ln.forward(&xs)?;
        let pooled = match &self.projection {
            Some(proj) => {
                let rows = ids.to_vec2::<u32>()?;
                let mut picked = Vec::with_capacity(b);
                for (bi, row) in rows.iter().enumerate() {
                    let at = row.iter().position(|&t| t == eos).unwrap_or(n - 1);
                    picked.push(last.get(bi)?.get(at)?.unsqueeze(0)?);
                }
                Some(proj.forward(&Tensor::cat(&picked, 0)?)?)
            }
            None => None,
        };
        Ok(TextOutput {
            last,
            penultimate,
            pooled,
        })
    }
}

fn causal_mask(n: usize, dev: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (1, 1, n, n), dev)
}

/// Builds `[1, tokens]` ids on `dev`.
pub(super) fn ids_tensor(ids: Vec<u32>, dev: &Device) -> Result<Tensor> {
    let n = ids.len();
    Tensor::from_vec(ids, (1, n), dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{PaddingParams, PaddingStrategy, TruncationParams};

    fn arch() -> ClipArch {
        ClipArch {
            vocab_size: 757,
            embed_dim: 32,
            intermediate_size: 64,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            max_position_embeddings: 77,
            activation: Activation::QuickGelu,
            projection_dim: 32,
            pad_with: None,
        }
    }

    fn tiny_tokenizer() -> Tokenizer {
        Tokenizer::from_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/tiny-xl/tokenizer.json"
        ))
        .unwrap()
    }

    /// A tokenizer.json that pads (with another token) and truncates on its own gives the same
    /// ids as one that does not: easel's BOS, tokens, EOS and padding, and its own cut.
    #[test]
    fn the_tokenizer_files_own_padding_and_truncation_are_ignored() {
        let plain = PromptTokenizer::new(tiny_tokenizer(), &arch()).unwrap();
        let mut configured = tiny_tokenizer();
        configured.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(90),
            pad_id: 3,
            ..Default::default()
        }));
        configured
            .with_truncation(Some(TruncationParams {
                max_length: 5,
                ..Default::default()
            }))
            .unwrap();
        let configured = PromptTokenizer::new(configured, &arch()).unwrap();
        let long = "a red fox in a green field under a blue sky ".repeat(10);
        for prompt in ["a red fox", long.as_str()] {
            let ids = plain.encode(prompt).unwrap();
            assert_eq!(ids.len(), 77);
            assert_eq!(configured.encode(prompt).unwrap(), ids, "{prompt:?}");
        }
        let short = plain.encode("a red fox").unwrap();
        assert_eq!(
            (short[0], *short.last().unwrap()),
            (plain.bos, plain.eos),
            "BOS first, EOS padding last"
        );
    }
}
