//! The denoising UNet, composed from candle's public Stable Diffusion building blocks.
//!
//! candle's own `UNet2DConditionModel` has no addition embedding, so SDXL's pooled text
//! embedding and micro-conditioning (time ids) would be ignored. This composition follows the
//! same diffusers weight layout and adds `add_embedding` (diffusers' `addition_embed_type =
//! "text_time"`) when the architecture asks for it.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn as nn;
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    CrossAttnDownBlock2D, CrossAttnDownBlock2DConfig, CrossAttnUpBlock2D, CrossAttnUpBlock2DConfig,
    DownBlock2D, DownBlock2DConfig, UNetMidBlock2DCrossAttn, UNetMidBlock2DCrossAttnConfig,
    UpBlock2D, UpBlock2DConfig,
};

use super::spec::UNetArch;

const NORM_EPS: f64 = 1e-5;
// No flash-attn: the feature cannot be built here and passing `true` without it panics.
const USE_FLASH_ATTN: bool = false;

enum Down {
    Plain(DownBlock2D),
    Cross(CrossAttnDownBlock2D),
}

enum Up {
    Plain(UpBlock2D),
    Cross(CrossAttnUpBlock2D),
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
    conv_in: nn::Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    add_embedding: Option<AddEmbedding>,
    down: Vec<Down>,
    mid: UNetMidBlock2DCrossAttn,
    up: Vec<Up>,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2d,
}

impl UNet {
    /// `pooled_dim`: width of the pooled text embedding (SDXL only).
    pub fn new(vb: nn::VarBuilder, arch: &UNetArch, pooled_dim: usize) -> Result<Self> {
        let n = arch.blocks.len();
        let ch0 = arch.blocks[0].channels;
        let ch_last = arch.blocks[n - 1].channels;
        let temb = ch0 * 4;
        let conv3 = nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = nn::conv2d(4, ch0, 3, conv3, vb.pp("conv_in"))?;
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

        let mut down = Vec::with_capacity(n);
        for (i, b) in arch.blocks.iter().enumerate() {
            let vb = vb.pp(format!("down_blocks.{i}"));
            let in_ch = if i == 0 {
                ch0
            } else {
                arch.blocks[i - 1].channels
            };
            let cfg = DownBlock2DConfig {
                num_layers: arch.layers_per_block,
                resnet_eps: NORM_EPS,
                resnet_groups: arch.norm_num_groups,
                add_downsample: i + 1 < n,
                downsample_padding: 1,
                ..Default::default()
            };
            down.push(if b.transformer_layers > 0 {
                let cfg = CrossAttnDownBlock2DConfig {
                    downblock: cfg,
                    attn_num_head_channels: b.heads,
                    cross_attention_dim: arch.cross_attention_dim,
                    sliced_attention_size: None,
                    use_linear_projection: arch.use_linear_projection,
                    transformer_layers_per_block: b.transformer_layers,
                };
                Down::Cross(CrossAttnDownBlock2D::new(
                    vb,
                    in_ch,
                    b.channels,
                    Some(temb),
                    USE_FLASH_ATTN,
                    cfg,
                )?)
            } else {
                Down::Plain(DownBlock2D::new(vb, in_ch, b.channels, Some(temb), cfg)?)
            });
        }

        let last = arch.blocks[n - 1];
        let mid_cfg = UNetMidBlock2DCrossAttnConfig {
            resnet_eps: NORM_EPS,
            output_scale_factor: 1.0,
            cross_attn_dim: arch.cross_attention_dim,
            attn_num_head_channels: last.heads,
            resnet_groups: Some(arch.norm_num_groups),
            use_linear_projection: arch.use_linear_projection,
            transformer_layers_per_block: last.transformer_layers.max(1),
            ..Default::default()
        };
        let mid = UNetMidBlock2DCrossAttn::new(
            vb.pp("mid_block"),
            ch_last,
            Some(temb),
            USE_FLASH_ATTN,
            mid_cfg,
        )?;

        // Up blocks mirror the down blocks; each consumes layers_per_block + 1 skip connections.
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let b = arch.blocks[n - 1 - i];
            let vb = vb.pp(format!("up_blocks.{i}"));
            let prev_ch = if i == 0 {
                ch_last
            } else {
                arch.blocks[n - i].channels
            };
            let in_ch = arch.blocks[if i + 1 == n { 0 } else { n - i - 2 }].channels;
            let cfg = UpBlock2DConfig {
                num_layers: arch.layers_per_block + 1,
                resnet_eps: NORM_EPS,
                resnet_groups: arch.norm_num_groups,
                add_upsample: i + 1 < n,
                ..Default::default()
            };
            up.push(if b.transformer_layers > 0 {
                let cfg = CrossAttnUpBlock2DConfig {
                    upblock: cfg,
                    attn_num_head_channels: b.heads,
                    cross_attention_dim: arch.cross_attention_dim,
                    sliced_attention_size: None,
                    use_linear_projection: arch.use_linear_projection,
                    transformer_layers_per_block: b.transformer_layers,
                };
                Up::Cross(CrossAttnUpBlock2D::new(
                    vb,
                    in_ch,
                    prev_ch,
                    b.channels,
                    Some(temb),
                    USE_FLASH_ATTN,
                    cfg,
                )?)
            } else {
                Up::Plain(UpBlock2D::new(
                    vb,
                    in_ch,
                    prev_ch,
                    b.channels,
                    Some(temb),
                    cfg,
                )?)
            });
        }
        let norm_out = nn::group_norm(arch.norm_num_groups, ch0, NORM_EPS, vb.pp("conv_norm_out"))?;
        let conv_out = nn::conv2d(ch0, 4, 3, conv3, vb.pp("conv_out"))?;
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
        timestep: usize,
        context: &Tensor,
        xl: Option<&XlCond>,
    ) -> Result<Tensor> {
        let (batch, _, h, w) = xs.dims4()?;
        let dtype = xs.dtype();
        let t = Tensor::full(timestep as f32, batch, xs.device())?;
        let mut emb = self
            .time_embedding
            .forward(&self.time_proj.forward(&t)?.to_dtype(dtype)?)?;
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

        let xs = self.conv_in.forward(xs)?;
        let mut skips = vec![xs.clone()];
        let mut xs = xs;
        for block in &self.down {
            let (out, res) = match block {
                Down::Plain(b) => b.forward(&xs, Some(&emb))?,
                Down::Cross(b) => b.forward(&xs, Some(&emb), Some(context))?,
            };
            skips.extend(res);
            xs = out;
        }
        let mut xs = self.mid.forward(&xs, Some(&emb), Some(context))?;

        // Latent sides that are not multiples of 2^(n-1) need explicit upsample sizes.
        let factor = 1usize << (self.up.len() - 1);
        let odd = h % factor != 0 || w % factor != 0;
        let n = self.up.len();
        for (i, block) in self.up.iter().enumerate() {
            let n_res = match block {
                Up::Plain(b) => b.resnets.len(),
                Up::Cross(b) => b.upblock.resnets.len(),
            };
            let res = skips.split_off(skips.len() - n_res);
            let size = match (odd && i + 1 < n, skips.last()) {
                (true, Some(s)) => {
                    let (_, _, sh, sw) = s.dims4()?;
                    Some((sh, sw))
                }
                _ => None,
            };
            xs = match block {
                Up::Plain(b) => b.forward(&xs, &res, Some(&emb), size)?,
                Up::Cross(b) => b.forward(&xs, &res, Some(&emb), size, Some(context))?,
            };
        }
        let xs = nn::ops::silu(&self.norm_out.forward(&xs)?)?;
        self.conv_out.forward(&xs)
    }
}
