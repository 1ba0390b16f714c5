//! 2-D convolution and the resnet block built on it.
//!
//! Loaded weights run our CPU kernel (`kernels::ConvOp`), or candle's convolution on a GPU or in
//! half precision. Weights being trained run the same
//! convolution as a custom op whose backward pass is made of forward convolutions (flipped
//! kernel, dilated gradient): candle's own backward goes through its direct-loop transposed
//! convolution, which made training several times slower on CPU.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor, D};
use candle_nn as nn;

use super::kernels::{self, group_norm, GroupNorm};

pub(super) struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
    stride: usize,
    trainable: bool,
    /// Loaded f32 weights on the CPU: our inference kernel, its bias read once here.
    cpu_kernel: Option<kernels::ConvOp>,
}

impl Conv2d {
    pub fn new(
        vb: nn::VarBuilder,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        padding: usize,
        stride: usize,
    ) -> Result<Self> {
        let cfg = nn::Conv2dConfig {
            padding,
            stride,
            ..Default::default()
        };
        let conv = nn::conv2d(in_ch, out_ch, kernel, cfg, vb)?;
        let weight = conv.weight().contiguous()?;
        let bias = conv.bias().cloned();
        let trainable = weight.is_variable();
        let on_cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        let cpu_kernel = if !trainable && on_cpu_f32(&weight) && bias.as_ref().is_none_or(on_cpu_f32) {
            Some(kernels::ConvOp {
                padding,
                stride,
                bias: bias.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?,
            })
        } else {
            None
        };
        Ok(Self {
            trainable,
            cpu_kernel,
            bias,
            weight,
            padding,
            stride,
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if let Some(op) = self.cpu_kernel.as_ref().filter(|_| xs.device().is_cpu() && xs.dtype() == DType::F32) {
            return xs.contiguous()?.apply_op2_no_bwd(&self.weight, op);
        }
        let out = if self.trainable {
            let op = ConvOp {
                padding: self.padding,
                stride: self.stride,
            };
            xs.contiguous()?.apply_op2(&self.weight, op)?
        } else {
            xs.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
        };
        match &self.bias {
            Some(b) if self.trainable => kernels::trainable_add_bias(&out, b, 1),
            Some(b) => out.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(out),
        }
    }
}

/// A convolution (no groups, no dilation) with a backward pass made of forward convolutions.
struct ConvOp {
    padding: usize,
    stride: usize,
}

impl ConvOp {
    /// Our CPU convolution kernel (no bias: candle adds it, so that its gradient is candle's).
    fn kernel(&self, padding: usize, stride: usize) -> kernels::ConvOp {
        kernels::ConvOp {
            padding,
            stride,
            bias: None,
        }
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "easel-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.kernel(self.padding, self.stride).cpu_fwd(s1, l1, s2, l2)
    }

    fn bwd(&self, arg: &Tensor, kernel: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, in_h, in_w) = arg.dims4()?;
        let (_, _, k_h, k_w) = kernel.dims4()?;
        let (s, p) = (self.stride, self.padding);
        // Input gradient: the gradient spread back over the stride (zeros between), padded, and
        // convolved with the kernel flipped and its in/out channels swapped.
        let flipped = swapped_and_flipped(kernel)?;
        let grad_arg = if s == 1 && in_h + 2 * p + 1 == grad.dim(2)? + k_h && in_w + 2 * p + 1 == grad.dim(3)? + k_w {
            grad.contiguous()?
                .apply_op2_no_bwd(&flipped, &self.kernel(k_h - 1 - p, 1))?
        } else {
            let mut g = grad.contiguous()?;
            if s > 1 {
                g = dilate(&g, s)?;
            }
            let (_, _, g_h, g_w) = g.dims4()?;
            let pad_h = k_h - 1 - p;
            let pad_w = k_w - 1 - p;
            let extra_h = in_h + k_h - 1 - (g_h + 2 * pad_h);
            let extra_w = in_w + k_w - 1 - (g_w + 2 * pad_w);
            g.pad_with_zeros(2, pad_h, pad_h + extra_h)?
                .pad_with_zeros(3, pad_w, pad_w + extra_w)?
                .contiguous()?
                .apply_op2_no_bwd(&flipped, &self.kernel(0, 1))?
        };
        let grad_kernel = arg.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &kernels::ConvKernelGrad {
                kernel: (k_h, k_w),
                padding: p,
                stride: s,
            },
        )?;
        Ok((Some(grad_arg), Some(grad_kernel)))
    }
}

/// `[o, c, kh, kw]` -> `[c, o, kh, kw]`, each kh x kw window turned half round: one pass (two
/// index_selects and a transposed copy were a twentieth of a training step).
fn swapped_and_flipped(kernel: &Tensor) -> Result<Tensor> {
    let (o, c, kh, kw) = kernel.dims4()?;
    let window = kh * kw;
    let w = kernel.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; w.len()];
    for (i, dst) in out.chunks_exact_mut(window).enumerate() {
        let (ci, oi) = (i / o, i % o);
        let src = &w[(oi * c + ci) * window..][..window];
        for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
            *d = *s;
        }
    }
    Tensor::from_vec(out, (c, o, kh, kw), kernel.device())
}

/// `[b, c, h, w]` -> `[b, c, (h - 1) * s + 1, (w - 1) * s + 1]` with zeros between.
fn dilate(t: &Tensor, s: usize) -> Result<Tensor> {
    let (b, c, h, w) = t.dims4()?;
    let zeros = Tensor::zeros((b, c, h, w, s - 1), t.dtype(), t.device())?;
    let t = Tensor::cat(&[&t.unsqueeze(4)?, &zeros], 4)?.reshape((b, c, h, w * s))?;
    let t = t.narrow(3, 0, (w - 1) * s + 1)?;
    let w2 = (w - 1) * s + 1;
    let zeros = Tensor::zeros((b, c, h, s - 1, w2), t.dtype(), t.device())?;
    let t = Tensor::cat(&[&t.unsqueeze(3)?, &zeros], 3)?.reshape((b, c, h * s, w2))?;
    t.narrow(2, 0, (h - 1) * s + 1)
}

/// diffusers' `ResnetBlock2D`: norm, SiLU, conv, plus the time embedding, norm, SiLU, conv,
/// added to the input (through a 1x1 convolution when the channel count changes).
pub(super) struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    time_emb_proj: Option<kernels::Linear>,
    shortcut: Option<Conv2d>,
}

impl Resnet {
    /// `temb`: width of the time embedding, if the block takes one.
    pub fn new(
        vb: nn::VarBuilder,
        in_ch: usize,
        out_ch: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(groups, in_ch, eps, vb.pp("norm1"))?,
            conv1: Conv2d::new(vb.pp("conv1"), in_ch, out_ch, 3, 1, 1)?,
            norm2: group_norm(groups, out_ch, eps, vb.pp("norm2"))?,
            conv2: Conv2d::new(vb.pp("conv2"), out_ch, out_ch, 3, 1, 1)?,
            time_emb_proj: match temb {
                Some(t) => Some(kernels::linear(t, out_ch, vb.pp("time_emb_proj"))?),
                None => None,
            },
            shortcut: if in_ch != out_ch {
                Some(Conv2d::new(vb.pp("conv_shortcut"), in_ch, out_ch, 1, 0, 1)?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, xs: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let skip = match &self.shortcut {
            Some(c) => c.forward(xs)?,
            None => xs.clone(),
        };
        let h = self.conv1.forward(&self.norm1.forward_silu(xs)?)?;
        let h = match (temb, &self.time_emb_proj) {
            (Some(t), Some(proj)) => proj
                .forward(&nn::ops::silu(t)?)?
                .unsqueeze(D::Minus1)?
                .unsqueeze(D::Minus1)?
                .broadcast_add(&h)?,
            _ => h,
        };
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        skip + h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The custom op's gradients equal candle's own convolution gradients, for the strides and
    /// paddings the models use (five items: the kernel gradient splits them over the threads).
    #[test]
    fn conv_gradients_match_candles() {
        let dev = Device::Cpu;
        for (k, p, s, side) in [(3, 1, 1, 9), (3, 1, 2, 8), (3, 0, 2, 9), (1, 0, 1, 5)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (5, 3, side, side), &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::randn(0f32, 1., (4, 3, k, k), &dev).unwrap()).unwrap();
            let target = |out: &Tensor| out.sqr().unwrap().sum_all().unwrap();
            let close = |a: &Tensor, b: &Tensor| {
                let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                let m = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(d <= 1e-4 * m.max(1.0), "k{k} p{p} s{s}: off by {d} (scale {m})");
            };
            let theirs = target(&x.as_tensor().conv2d(w.as_tensor(), p, s, 1, 1).unwrap());
            let ours = target(&x.as_tensor().apply_op2(w.as_tensor(), ConvOp { padding: p, stride: s }).unwrap());
            close(&ours, &theirs);
            let (go, gt) = (ours.backward().unwrap(), theirs.backward().unwrap());
            for v in [&x, &w] {
                close(go.get(v.as_tensor()).unwrap(), gt.get(v.as_tensor()).unwrap());
            }
            assert_eq!(ours.dtype(), DType::F32);
        }
    }
}
