//! The VAE (diffusers' `AutoencoderKL`): the encoder (used to train) and the decoder (latents
//! to pixels). Same weight names and numbers as candle's, built on our convolution and resnet
//! (`conv.rs`) so that a VAE under training gets the fast backward pass.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn as nn;

use super::attention::attend;
use super::conv::{Conv2d, Resnet};
use super::kernels::{self, group_norm, softmax_last_dim, GroupNorm};
use super::spec::VaeArch;

const EPS: f64 = 1e-6;

/// The single-head self-attention in the VAE's middle block.
struct Attention {
    norm: GroupNorm,
    q: kernels::Linear,
    k: kernels::Linear,
    v: kernels::Linear,
    out: kernels::Linear,
    trainable: bool,
}

/// A channels x channels projection, stored either as a matrix or as a 1x1 convolution.
fn projection(vb: nn::VarBuilder, c: usize) -> Result<kernels::Linear> {
    match vb.get((c, c), "weight") {
        Ok(w) => Ok(kernels::Linear::new(w, Some(vb.get(c, "bias")?))),
        Err(_) => Ok(kernels::Linear::new(
            vb.get((c, c, 1, 1), "weight")?.reshape((c, c))?,
            Some(vb.get(c, "bias")?),
        )),
    }
}

impl Attention {
    fn new(vb: nn::VarBuilder, c: usize, groups: usize) -> Result<Self> {
        // Newer diffusers files name the projections like the UNet's.
        let (q, k, v, o) = if vb.contains_tensor("to_q.weight") {
            ("to_q", "to_k", "to_v", "to_out.0")
        } else {
            ("query", "key", "value", "proj_attn")
        };
        let q = projection(vb.pp(q), c)?;
        Ok(Self {
            norm: group_norm(groups, c, EPS, vb.pp("group_norm"))?,
            trainable: q.weight().is_variable(),
            q,
            k: projection(vb.pp(k), c)?,
            v: projection(vb.pp(v), c)?,
            out: projection(vb.pp(o), c)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let tokens = self.norm.forward(xs)?.reshape((b, c, h * w))?.transpose(1, 2)?;
        let in_dtype = xs.dtype();
        let f32 = |t: Tensor| t.unsqueeze(1)?.to_dtype(DType::F32);
        let q = f32(self.q.forward(&tokens)?)?;
        let k = f32(self.k.forward(&tokens)?)?;
        let v = f32(self.v.forward(&tokens)?)?;
        // The scale split over q and k, as in diffusers.
        let scale = (c as f64).powf(-0.25);
        let trainable = self.trainable;
        let softmax = |s: &Tensor| softmax_last_dim(s, trainable);
        let out = attend(&(q * scale)?.contiguous()?, &(k.t()? * scale)?, &v, trainable, softmax)?
            .to_dtype(in_dtype)?
            .transpose(1, 2)?
            .contiguous()?
            .flatten_from(D::Minus2)?;
        let out = self.out.forward(&out)?.t()?.reshape((b, c, h, w))?;
        out + xs
    }
}

struct Mid {
    first: Resnet,
    attention: Attention,
    second: Resnet,
}

impl Mid {
    fn new(vb: nn::VarBuilder, c: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            first: Resnet::new(vb.pp("resnets.0"), c, c, None, groups, EPS)?,
            attention: Attention::new(vb.pp("attentions.0"), c, groups)?,
            second: Resnet::new(vb.pp("resnets.1"), c, c, None, groups, EPS)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.first.forward(xs, None)?;
        let xs = self.attention.forward(&xs)?;
        self.second.forward(&xs, None)
    }
}

struct Level {
    resnets: Vec<Resnet>,
    resample: Option<Conv2d>,
}

pub(super) struct Vae {
    /// Only built for training (text-to-image never encodes).
    encoder: Option<Encoder>,
    post_quant_conv: Conv2d,
    conv_in: Conv2d,
    mid: Mid,
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

struct Encoder {
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Conv2d,
}

impl Encoder {
    fn new(vb: nn::VarBuilder, v: &VaeArch) -> Result<Self> {
        let enc = vb.pp("encoder");
        let ch = &v.block_out_channels;
        let g = v.norm_num_groups;
        let mut down = Vec::new();
        for (i, &c) in ch.iter().enumerate() {
            let from = if i == 0 { ch[0] } else { ch[i - 1] };
            let lvb = enc.pp(format!("down_blocks.{i}"));
            let resnets = (0..v.layers_per_block)
                .map(|j| Resnet::new(lvb.pp(format!("resnets.{j}")), if j == 0 { from } else { c }, c, None, g, EPS))
                .collect::<Result<Vec<_>>>()?;
            let resample = if i + 1 < ch.len() {
                Some(Conv2d::new(lvb.pp("downsamplers.0.conv"), c, c, 3, 0, 2)?)
            } else {
                None
            };
            down.push(Level { resnets, resample });
        }
        let last = *ch.last().expect("VAE has levels");
        let z2 = 2 * v.latent_channels;
        Ok(Self {
            conv_in: Conv2d::new(enc.pp("conv_in"), 3, ch[0], 3, 1, 1)?,
            down,
            mid: Mid::new(enc.pp("mid_block"), last, g)?,
            norm_out: group_norm(g, last, EPS, enc.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(enc.pp("conv_out"), last, z2, 3, 1, 1)?,
            quant_conv: Conv2d::new(vb.pp("quant_conv"), z2, z2, 1, 0, 1)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut xs = self.conv_in.forward(xs)?;
        for level in &self.down {
            for r in &level.resnets {
                xs = r.forward(&xs, None)?;
            }
            if let Some(d) = &level.resample {
                // diffusers pads right and bottom only before its stride-2 convolution.
                xs = d.forward(&xs.pad_with_zeros(D::Minus1, 0, 1)?.pad_with_zeros(D::Minus2, 0, 1)?)?;
            }
        }
        let xs = self.mid.forward(&xs)?;
        let xs = self.conv_out.forward(&self.norm_out.forward_silu(&xs)?)?;
        let params = self.quant_conv.forward(&xs)?;
        let halves = params.chunk(2, 1)?;
        Ok((halves[0].clone(), halves[1].clone()))
    }
}

impl Vae {
    pub fn new(vb: nn::VarBuilder, v: &VaeArch, with_encoder: bool) -> Result<Self> {
        let ch = &v.block_out_channels;
        let g = v.norm_num_groups;
        let last = *ch.last().expect("VAE has levels");
        let dec = vb.pp("decoder");
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::new();
        for (i, &c) in reversed.iter().enumerate() {
            let from = if i == 0 { reversed[0] } else { reversed[i - 1] };
            let lvb = dec.pp(format!("up_blocks.{i}"));
            let resnets = (0..v.layers_per_block + 1)
                .map(|j| Resnet::new(lvb.pp(format!("resnets.{j}")), if j == 0 { from } else { c }, c, None, g, EPS))
                .collect::<Result<Vec<_>>>()?;
            let resample = if i + 1 < reversed.len() {
                Some(Conv2d::new(lvb.pp("upsamplers.0.conv"), c, c, 3, 1, 1)?)
            } else {
                None
            };
            up.push(Level { resnets, resample });
        }
        let z = v.latent_channels;
        Ok(Self {
            encoder: if with_encoder { Some(Encoder::new(vb.clone(), v)?) } else { None },
            post_quant_conv: Conv2d::new(vb.pp("post_quant_conv"), z, z, 1, 0, 1)?,
            conv_in: Conv2d::new(dec.pp("conv_in"), z, last, 3, 1, 1)?,
            mid: Mid::new(dec.pp("mid_block"), last, g)?,
            up,
            norm_out: group_norm(g, ch[0], EPS, dec.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(dec.pp("conv_out"), ch[0], 3, 3, 1, 1)?,
        })
    }

    /// Mean and log-variance of the latents of `xs` (`[b, 3, h, w]` in -1..1).
    pub fn encode(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        match &self.encoder {
            Some(e) => e.forward(xs),
            None => candle_core::bail!("this VAE was loaded without its encoder"),
        }
    }

    /// [`Vae::decode`], in overlapping tiles blended across their seams once the latents exceed
    /// [`TILE`] on a side (as diffusers' `enable_tiling` does): memory then stays that of one
    /// tile (a 512² image) whatever the size. Smaller latents decode whole, unchanged.
    pub fn decode_tiled(&self, z: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = z.dims4()?;
        if h <= TILE && w <= TILE {
            return self.decode(z);
        }
        let stride = TILE - TILE_OVERLAP;
        let blend = TILE_OVERLAP * 8;
        // Tiles start every `stride` latents; each keeps `stride * 8` pixels (the last ones
        // what is left), so together they cover the whole image.
        let starts = |n: usize| -> Vec<usize> { (0..n).step_by(stride).collect() };
        let mut rows: Vec<Vec<Tensor>> = Vec::new();
        for &y in &starts(h) {
            let mut row = Vec::new();
            for &x in &starts(w) {
                let tile = z.narrow(2, y, TILE.min(h - y))?.narrow(3, x, TILE.min(w - x))?;
                row.push(self.decode(&tile)?);
            }
            rows.push(row);
        }
        // Each tile fades in over the one above and the one to its left, then keeps the part
        // up to the next tile's start.
        for i in 0..rows.len() {
            for j in 0..rows[i].len() {
                let mut tile = rows[i][j].clone();
                if i > 0 {
                    tile = blend_edge(&rows[i - 1][j], &tile, 2, blend)?;
                }
                if j > 0 {
                    tile = blend_edge(&rows[i][j - 1], &tile, 3, blend)?;
                }
                rows[i][j] = tile;
            }
        }
        let keep = stride * 8;
        let mut out_rows = Vec::with_capacity(rows.len());
        for row in &rows {
            let parts = row
                .iter()
                .map(|t| {
                    let (th, tw) = (t.dim(2)?, t.dim(3)?);
                    t.narrow(2, 0, keep.min(th))?.narrow(3, 0, keep.min(tw))
                })
                .collect::<Result<Vec<_>>>()?;
            out_rows.push(Tensor::cat(&parts, 3)?);
        }
        Tensor::cat(&out_rows, 2)?.narrow(2, 0, h * 8)?.narrow(3, 0, w * 8)
    }

    /// Pixels in about -1..1 from (unscaled) latents.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let xs = self.conv_in.forward(&self.post_quant_conv.forward(z)?)?;
        let mut xs = self.mid.forward(&xs)?;
        for level in &self.up {
            for r in &level.resnets {
                xs = r.forward(&xs, None)?;
            }
            if let Some(u) = &level.resample {
                let (_, _, h, w) = xs.dims4()?;
                xs = u.forward(&xs.upsample_nearest2d(2 * h, 2 * w)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&xs)?)
    }
}

/// Latent tile side for [`Vae::decode_tiled`] (a 512² image) and how much tiles overlap.
const TILE: usize = 64;
const TILE_OVERLAP: usize = 16;

/// `next` with its first `extent` pixels along `dim` faded in from the last `extent` of `prev`.
fn blend_edge(prev: &Tensor, next: &Tensor, dim: usize, extent: usize) -> Result<Tensor> {
    let extent = extent.min(prev.dim(dim)?).min(next.dim(dim)?);
    if extent == 0 {
        return Ok(next.clone());
    }
    let mut shape = vec![1usize; 4];
    shape[dim] = extent;
    let ramp: Vec<f32> = (0..extent).map(|i| i as f32 / extent as f32).collect();
    let ramp = Tensor::from_vec(ramp, shape, next.device())?.to_dtype(next.dtype())?;
    let p = prev.narrow(dim, prev.dim(dim)? - extent, extent)?;
    let n = next.narrow(dim, 0, extent)?;
    // Tiles at the edges may be narrower along the other axis: blend what they share.
    let other = if dim == 2 { 3 } else { 2 };
    let shared = p.dim(other)?.min(n.dim(other)?);
    let (p, n_shared) = (p.narrow(other, 0, shared)?, n.narrow(other, 0, shared)?);
    let mixed = (p.broadcast_mul(&ramp.affine(-1.0, 1.0)?)? + n_shared.broadcast_mul(&ramp)?)?;
    let mixed = if shared < n.dim(other)? {
        Tensor::cat(&[&mixed, &n.narrow(other, shared, n.dim(other)? - shared)?], other)?
    } else {
        mixed
    };
    let rest = next.dim(dim)? - extent;
    if rest == 0 {
        return Ok(mixed);
    }
    Tensor::cat(&[&mixed, &next.narrow(dim, extent, rest)?], dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    /// Up to one tile the decode is the whole one, bit for bit; beyond, the tiles cover the
    /// image and their seams are blended (no jump at a seam larger than elsewhere).
    #[test]
    fn large_latents_decode_in_blended_tiles() {
        let dev = Device::Cpu;
        let arch = VaeArch { block_out_channels: vec![8, 8, 8, 8], layers_per_block: 1, norm_num_groups: 4, latent_channels: 4 };
        let map = VarMap::new();
        let vae = Vae::new(VarBuilder::from_varmap(&map, DType::F32, &dev), &arch, false).unwrap();
        crate::engine::tiny::seeded_init(&map, 3).unwrap();
        // A smooth latent field, so the picture itself has no edges.
        let field = |h: usize, w: usize| {
            let v: Vec<f32> = (0..4 * h * w).map(|i| (((i % w) as f32 / 9.0).sin() + ((i / w % h) as f32 / 7.0).cos()) * 0.5).collect();
            Tensor::from_vec(v, (1, 4, h, w), &dev).unwrap()
        };
        let small = field(TILE, 40);
        let (a, b) = (vae.decode(&small).unwrap(), vae.decode_tiled(&small).unwrap());
        assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());

        let (h, w) = (TILE + 36, TILE + 8);
        let img = vae.decode_tiled(&field(h, w)).unwrap();
        assert_eq!(img.dims(), &[1, 3, h * 8, w * 8]);
        // Mean absolute change from one pixel row to the next, per row.
        let rows = img.get(0).unwrap().mean(0).unwrap(); // [H, W]
        let steps = (rows.narrow(0, 1, h * 8 - 1).unwrap() - rows.narrow(0, 0, h * 8 - 1).unwrap()).unwrap().abs().unwrap().mean(1).unwrap();
        let steps: Vec<f32> = steps.to_vec1().unwrap();
        assert!(steps.iter().all(|s| s.is_finite()));
        let seam = (TILE - TILE_OVERLAP) * 8; // where the second row of tiles takes over
        let typical = { let mut s = steps.clone(); s.sort_by(f32::total_cmp); s[s.len() * 9 / 10] };
        for y in [seam - 1, seam, seam + 1] {
            assert!(steps[y] <= typical * 3.0, "a jump at the seam (row {y}): {} vs {typical}", steps[y]);
        }
    }
}
