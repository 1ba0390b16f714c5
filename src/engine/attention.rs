//! The UNet's transformer (diffusers' `Transformer2DModel`): group norm, projection in, blocks of
//! self-attention, cross-attention to the text and a GEGLU feed-forward, projection out.
//!
//! Same weight names and numbers as candle's `SpatialTransformer`, but ours, because candle's
//! fast layer norm and last-dim softmax have no backward pass: a model built from trainable
//! variables (the tiny model's training tool) takes the differentiable formulas instead, while
//! loaded weights keep the fast kernels.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn as nn;

use super::conv::Conv2d;
use super::kernels::{self, group_norm, GroupNorm};

/// candle's fused layer norm for loaded weights, the same formula in plain ops for variables.
pub(super) struct LayerNorm {
    inner: nn::LayerNorm,
    eps: f64,
    trainable: bool,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: nn::VarBuilder) -> Result<Self> {
        let inner = nn::layer_norm(dim, eps, vb)?;
        let trainable = inner.weight().is_variable();
        Ok(Self {
            inner,
            eps,
            trainable,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if !self.trainable {
            return self.inner.forward(xs);
        }
        let bias = self.inner.bias().expect("layer norms here have a bias");
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centred = xs.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(self.inner.weight())?
            .broadcast_add(bias)
    }
}

/// Most bytes one attention score matrix may take before queries are sliced (1 GiB: SD 1.5 at
/// 512² fits whole, larger sizes are sliced).
const ATTENTION_BUDGET: usize = 1 << 30;

/// `softmax(q · kt) · v` for `q` `[.., n, d]`, `kt` `[.., d, m]`, `v` `[.., m, d]`, all f32. The
/// score matrix is `[.., n, m]`: at large sizes (SD 1.5 at 768², SDXL's and the VAE's big grids)
/// it alone would take gigabytes, so queries go in slices that keep it within
/// [`ATTENTION_BUDGET`]. Each query row's softmax is its own, so the result is the same. Not for
/// training (`whole`): autograd wants one graph. On the CPU, loaded weights take the blocked
/// kernel (`kernels::attention`), which never holds more than a block of scores.
pub(super) fn attend(
    q: &Tensor,
    kt: &Tensor,
    v: &Tensor,
    whole: bool,
    softmax: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let row_dim = q.rank() - 2;
    let n = q.dim(row_dim)?;
    let per_row = q.elem_count() / q.dim(q.rank() - 1)? / n * kt.dim(D::Minus1)? * 4;
    let rows = (ATTENTION_BUDGET / per_row.max(1)).max(1);
    if !whole {
        if let Some(out) = kernels::attention(q, kt, v)? {
            return Ok(out);
        }
    }
    if whole || rows >= n {
        return softmax(&q.matmul(kt)?)?.matmul(v);
    }
    let slices = (0..n)
        .step_by(rows)
        .map(|start| softmax(&q.narrow(row_dim, start, rows.min(n - start))?.matmul(kt)?)?.matmul(v))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&slices, row_dim)
}

struct CrossAttention {
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: kernels::Linear,
    heads: usize,
    scale: f64,
    trainable: bool,
}

impl CrossAttention {
    fn new(
        vb: nn::VarBuilder,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let inner = head_dim * heads;
        let to_q = nn::linear_no_bias(query_dim, inner, vb.pp("to_q"))?;
        let trainable = to_q.weight().is_variable();
        Ok(Self {
            to_q,
            to_k: nn::linear_no_bias(context_dim, inner, vb.pp("to_k"))?,
            to_v: nn::linear_no_bias(context_dim, inner, vb.pp("to_v"))?,
            to_out: kernels::linear(inner, query_dim, vb.pp("to_out.0"))?,
            heads,
            scale: 1.0 / (head_dim as f64).sqrt(),
            trainable,
        })
    }

    /// `[b, n, heads * d]` -> `[b * heads, n, d]`.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, dim) = xs.dims3()?;
        xs.reshape((b, n, self.heads, dim / self.heads))?
            .transpose(1, 2)?
            .reshape((b * self.heads, n, dim / self.heads))
    }

    fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let context = context.unwrap_or(xs).contiguous()?;
        let in_dtype = xs.dtype();
        let q = self
            .split_heads(&self.to_q.forward(xs)?)?
            .to_dtype(DType::F32)?;
        let k = self
            .split_heads(&self.to_k.forward(&context)?)?
            .to_dtype(DType::F32)?;
        let v = self
            .split_heads(&self.to_v.forward(&context)?)?
            .to_dtype(DType::F32)?;
        let kt = (k.t()? * self.scale)?;
        let trainable = self.trainable;
        let out = attend(&q, &kt, &v, trainable, |s| kernels::softmax_last_dim(s, trainable))?;
        let out = out.to_dtype(in_dtype)?;
        let (bh, n, d) = out.dims3()?;
        let out = out
            .reshape((bh / self.heads, self.heads, n, d))?
            .transpose(1, 2)?
            .reshape((bh / self.heads, n, d * self.heads))?;
        self.to_out.forward(&out)
    }
}

struct Block {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff_in: kernels::Linear,
    ff_out: kernels::Linear,
}

impl Block {
    fn new(vb: nn::VarBuilder, dim: usize, heads: usize, context_dim: usize) -> Result<Self> {
        let head_dim = dim / heads;
        let inner = dim * 4;
        Ok(Self {
            norm1: LayerNorm::new(dim, 1e-5, vb.pp("norm1"))?,
            attn1: CrossAttention::new(vb.pp("attn1"), dim, dim, heads, head_dim)?,
            norm2: LayerNorm::new(dim, 1e-5, vb.pp("norm2"))?,
            attn2: CrossAttention::new(vb.pp("attn2"), dim, context_dim, heads, head_dim)?,
            norm3: LayerNorm::new(dim, 1e-5, vb.pp("norm3"))?,
            ff_in: kernels::linear(dim, inner * 2, vb.pp("ff.net.0.proj"))?,
            ff_out: kernels::linear(inner, dim, vb.pp("ff.net.2"))?,
        })
    }

    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let xs = (self.attn1.forward(&self.norm1.forward(xs)?, None)? + xs)?;
        let xs = (self
            .attn2
            .forward(&self.norm2.forward(&xs)?, Some(context))?
            + xs)?;
        // GEGLU: half the projection gates the other half.
        let h = self.ff_in.forward(&self.norm3.forward(&xs)?)?;
        let gated = match kernels::geglu(&h, self.ff_in.weight().is_variable())? {
            Some(gated) => gated,
            None => {
                let h = h.chunk(2, D::Minus1)?;
                (&h[0] * h[1].gelu()?)?
            }
        };
        self.ff_out.forward(&gated)? + xs
    }
}

enum Proj {
    Conv(Conv2d),
    Linear(kernels::Linear),
}

pub(super) struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<Block>,
    proj_out: Proj,
}

pub(super) struct TransformerConfig {
    pub heads: usize,
    pub depth: usize,
    pub groups: usize,
    pub context_dim: usize,
    pub linear_projection: bool,
}

impl SpatialTransformer {
    pub fn new(vb: nn::VarBuilder, channels: usize, cfg: &TransformerConfig) -> Result<Self> {
        let norm = group_norm(cfg.groups, channels, 1e-6, vb.pp("norm"))?;
        let proj = |name: &str| -> Result<Proj> {
            Ok(if cfg.linear_projection {
                Proj::Linear(kernels::linear(channels, channels, vb.pp(name))?)
            } else {
                Proj::Conv(Conv2d::new(vb.pp(name), channels, channels, 1, 0, 1)?)
            })
        };
        let blocks = (0..cfg.depth)
            .map(|i| {
                Block::new(
                    vb.pp(format!("transformer_blocks.{i}")),
                    channels,
                    cfg.heads,
                    cfg.context_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm,
            proj_in: proj("proj_in")?,
            blocks,
            proj_out: proj("proj_out")?,
        })
    }

    pub fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let to_tokens = |t: &Tensor| t.permute((0, 2, 3, 1))?.reshape((b, h * w, c));
        let to_map = |t: &Tensor| t.reshape((b, h, w, c))?.permute((0, 3, 1, 2));
        let normed = self.norm.forward(xs)?;
        let mut tokens = match &self.proj_in {
            Proj::Conv(p) => to_tokens(&p.forward(&normed)?)?,
            Proj::Linear(p) => p.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let out = match &self.proj_out {
            Proj::Conv(p) => p.forward(&to_map(&tokens)?.contiguous()?)?,
            Proj::Linear(p) => to_map(&p.forward(&tokens)?)?,
        };
        out + xs
    }
}
