//! The denoising UNet in diffusers' weight layout, composed from candle's resnet and embedding
//! blocks and our own transformer (`attention.rs`, trainable).
//!
//! candle's own `UNet2DConditionModel` has no addition embedding, so SDXL's pooled text
//! embedding and micro-conditioning (time ids) would be ignored; this composition adds
//! `add_embedding` (diffusers' `addition_embed_type = "text_time"`) when the architecture asks
//! for it, and uses the model's `norm_num_groups` everywhere, as diffusers does.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn as nn;
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};

use super::attention::{SpatialTransformer, TransformerConfig};
use super::conv::{Conv2d, Resnet};
use super::kernels::{group_norm, GroupNorm};
use super::spec::UNetArch;

const NORM_EPS: f64 = 1e-5;

/// A level going down: resnets, each followed by a transformer when the level has attention,
/// then a stride-2 convolution except at the bottom.
struct Down {
    resnets: Vec<Resnet>,
    attentions: Vec<SpatialTransformer>,
    downsample: Option<Conv2d>,
}

/// A level going up: resnets over the skip connections, transformers, then nearest 2x + conv.
struct Up {
    resnets: Vec<Resnet>,
    attentions: Vec<SpatialTransformer>,
    upsample: Option<Conv2d>,
}

struct Mid {
    first: Resnet,
    attention: SpatialTransformer,
    second: Resnet,
}

fn resnet(vb: nn::VarBuilder, in_ch: usize, out_ch: usize, temb: usize, groups: usize) -> Result<Resnet> {
    Resnet::new(vb, in_ch, out_ch, Some(temb), groups, NORM_EPS)
}

fn conv3(vb: nn::VarBuilder, in_ch: usize, out_ch: usize, stride: usize) -> Result<Conv2d> {
    Conv2d::new(vb, in_ch, out_ch, 3, 1, stride)
}

/// SDXL's "text_time" addition embedding.
struct AddEmbedding {
    time_proj: Timesteps,
    embedding: TimestepEmbedding,
}

/// Extra conditioning of SDXL-shaped models.
pub(super) struct XlCond {
    /// Pooled, projected output of the second text encoder: `[batch, projection_dim]`.
    pub pooled: Tensor,
    /// The 6 micro-conditioning ids per batch row: `[batch, 6]`
    /// (original h, w, crop top, crop left, target h, target w).
    pub time_ids: Tensor,
}

pub(super) struct UNet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    add_embedding: Option<AddEmbedding>,
    down: Vec<Down>,
    mid: Mid,
    up: Vec<Up>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// `pooled_dim`: width of the pooled text embedding (SDXL only).
    pub fn new(vb: nn::VarBuilder, arch: &UNetArch, pooled_dim: usize) -> Result<Self> {
        let n = arch.blocks.len();
        let ch0 = arch.blocks[0].channels;
        let ch_last = arch.blocks[n - 1].channels;
        let temb = ch0 * 4;
        let conv_in = conv3(vb.pp("conv_in"), 4, ch0, 1)?;
        let time_proj = Timesteps::new(ch0, true, 0.0);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), ch0, temb)?;
        let add_embedding = match arch.addition_time_embed_dim {
            Some(d) => Some(AddEmbedding {
                time_proj: Timesteps::new(d, true, 0.0),
                embedding: TimestepEmbedding::new(
                    vb.pp("add_embedding"),
                    pooled_dim + 6 * d,
                    temb,
                )?,
            }),
            None => None,
        };

        let groups = arch.norm_num_groups;
        let transformer = |heads: usize, depth: usize| TransformerConfig {
            heads,
            depth,
            groups,
            context_dim: arch.cross_attention_dim,
            linear_projection: arch.use_linear_projection,
        };
        let mut down = Vec::with_capacity(n);
        for (i, b) in arch.blocks.iter().enumerate() {
            let vb = vb.pp(format!("down_blocks.{i}"));
            let mut in_ch = if i == 0 {
                ch0
            } else {
                arch.blocks[i - 1].channels
            };
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..arch.layers_per_block {
                resnets.push(resnet(
                    vb.pp(format!("resnets.{j}")),
                    in_ch,
                    b.channels,
                    temb,
                    groups,
                )?);
                if b.transformer_layers > 0 {
                    attentions.push(SpatialTransformer::new(
                        vb.pp(format!("attentions.{j}")),
                        b.channels,
                        &transformer(b.heads, b.transformer_layers),
                    )?);
                }
                in_ch = b.channels;
            }
            let downsample = if i + 1 < n {
                Some(conv3(
                    vb.pp("downsamplers.0.conv"),
                    b.channels,
                    b.channels,
                    2,
                )?)
            } else {
                None
            };
            down.push(Down {
                resnets,
                attentions,
                downsample,
            });
        }

        let last = arch.blocks[n - 1];
        let mid_vb = vb.pp("mid_block");
        let mid = Mid {
            first: resnet(mid_vb.pp("resnets.0"), ch_last, ch_last, temb, groups)?,
            attention: SpatialTransformer::new(
                mid_vb.pp("attentions.0"),
                ch_last,
                &transformer(last.heads, last.transformer_layers.max(1)),
            )?,
            second: resnet(mid_vb.pp("resnets.1"), ch_last, ch_last, temb, groups)?,
        };

        // Up levels mirror the down levels; each consumes layers_per_block + 1 skip connections.
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let b = arch.blocks[n - 1 - i];
            let vb = vb.pp(format!("up_blocks.{i}"));
            let prev_ch = if i == 0 {
                ch_last
            } else {
                arch.blocks[n - i].channels
            };
            let skip_last = arch.blocks[if i + 1 == n { 0 } else { n - i - 2 }].channels;
            let layers = arch.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j + 1 == layers {
                    skip_last
                } else {
                    b.channels
                };
                let from = if j == 0 { prev_ch } else { b.channels };
                resnets.push(resnet(
                    vb.pp(format!("resnets.{j}")),
                    from + skip,
                    b.channels,
                    temb,
                    groups,
                )?);
                if b.transformer_layers > 0 {
                    attentions.push(SpatialTransformer::new(
                        vb.pp(format!("attentions.{j}")),
                        b.channels,
                        &transformer(b.heads, b.transformer_layers),
                    )?);
                }
            }
            let upsample = if i + 1 < n {
                Some(conv3(
                    vb.pp("upsamplers.0.conv"),
                    b.channels,
                    b.channels,
                    1,
                )?)
            } else {
                None
            };
            up.push(Up {
                resnets,
                attentions,
                upsample,
            });
        }
        let norm_out = group_norm(arch.norm_num_groups, ch0, NORM_EPS, vb.pp("conv_norm_out"))?;
        let conv_out = conv3(vb.pp("conv_out"), ch0, 4, 1)?;
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            add_embedding,
            down,
            mid,
            up,
            norm_out,
            conv_out,
        })
    }

    /// Predicts noise (or v) for `xs` `[batch, 4, h, w]` at `timestep`, conditioned on the text
    /// hidden states `[batch, tokens, cross_attention_dim]` (and, for SDXL, `xl`).
    pub fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        xl: Option<&XlCond>,
    ) -> Result<Tensor> {
        let t = Tensor::full(timestep as f32, xs.dim(0)?, xs.device())?;
        self.forward_at(xs, &t, context, xl)
    }

    /// [`UNet::forward`] with one timestep per batch row (`t`: `[batch]`, f32), for training.
    pub fn forward_at(
        &self,
        xs: &Tensor,
        t: &Tensor,
        context: &Tensor,
        xl: Option<&XlCond>,
    ) -> Result<Tensor> {
        let batch = xs.dim(0)?;
        let dtype = xs.dtype();
        let mut emb = self
            .time_embedding
            .forward(&self.time_proj.forward(t)?.to_dtype(dtype)?)?;
        match (&self.add_embedding, xl) {
            (Some(add), Some(xl)) => {
                let ids = xl.time_ids.flatten_all()?.to_dtype(DType::F32)?;
                let time_embeds = add
                    .time_proj
                    .forward(&ids)?
                    .reshape((batch, ()))?
                    .to_dtype(dtype)?;
                let add_in = Tensor::cat(&[&xl.pooled.to_dtype(dtype)?, &time_embeds], 1)?;
                emb = (emb + add.embedding.forward(&add_in)?)?;
            }
            (None, None) => {}
            _ => candle_core::bail!(
                "SDXL conditioning given to a non-SDXL UNet or missing for an SDXL one"
            ),
        }

        let mut xs = self.conv_in.forward(xs)?;
        let mut skips = vec![xs.clone()];
        for level in &self.down {
            for (j, r) in level.resnets.iter().enumerate() {
                xs = r.forward(&xs, Some(&emb))?;
                if let Some(a) = level.attentions.get(j) {
                    xs = a.forward(&xs, context)?;
                }
                skips.push(xs.clone());
            }
            if let Some(d) = &level.downsample {
                xs = d.forward(&xs)?;
                skips.push(xs.clone());
            }
        }
        xs = self.mid.first.forward(&xs, Some(&emb))?;
        xs = self.mid.attention.forward(&xs, context)?;
        xs = self.mid.second.forward(&xs, Some(&emb))?;

        for level in &self.up {
            for (j, r) in level.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip connection per up resnet");
                xs = r.forward(&Tensor::cat(&[&xs, &skip], 1)?.contiguous()?, Some(&emb))?;
                if let Some(a) = level.attentions.get(j) {
                    xs = a.forward(&xs, context)?;
                }
            }
            if let Some(u) = &level.upsample {
                // Latent sides that are not multiples of 2^(levels-1) upsample to the skip's size.
                let (th, tw) = match skips.last() {
                    Some(s) => {
                        let (_, _, sh, sw) = s.dims4()?;
                        (sh, sw)
                    }
                    None => (2 * xs.dim(2)?, 2 * xs.dim(3)?),
                };
                xs = u.forward(&xs.upsample_nearest2d(th, tw)?)?;
            }
        }
        let xs = self.norm_out.forward_silu(&xs)?;
        self.conv_out.forward(&xs)
    }
}
