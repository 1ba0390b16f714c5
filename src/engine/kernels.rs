//! CPU kernels for loaded (inference) weights where candle's own are far from the machine's
//! limit: group norm with the SiLU that usually follows it fused in (candle composes it from
//! seven whole-tensor ops, 31x PyTorch's time), and a 2-D convolution whose im2col copies
//! whole input rows into an L2-sized tile and hands it to one GEMM (candle's tiled im2col
//! scatters element by element). Both run f32 on the CPU only; anything else (GPU tensors,
//! half precision, variables being trained) takes candle's path, so the numbers stay the same
//! function of the weights and the backward pass stays candle's.
//!
//! Deterministic: every output element is computed by one thread in a fixed order, whatever
//! the thread count.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn as nn;
use rayon::prelude::*;

/// diffusers' `GroupNorm`, optionally followed by SiLU, as one pass over the tensor.
pub(super) struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    fallback: nn::GroupNorm,
    trainable: bool,
}

/// Same weight names and initial values as `candle_nn::group_norm`.
pub(super) fn group_norm(
    groups: usize,
    channels: usize,
    eps: f64,
    vb: nn::VarBuilder,
) -> Result<GroupNorm> {
    let weight = vb.get_with_hints(channels, "weight", nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", nn::Init::Const(0.))?;
    let fallback = nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
    Ok(GroupNorm {
        trainable: weight.is_variable(),
        weight,
        bias,
        groups,
        eps,
        fallback,
    })
}

/// Whether `xs` can take this module's CPU kernels (the weights must be constants).
fn cpu_f32(xs: &Tensor, trainable: bool) -> bool {
    !trainable && xs.device().is_cpu() && xs.dtype() == DType::F32
}

impl GroupNorm {
    /// `silu(group_norm(xs))`.
    pub fn forward_silu(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(xs, true)
    }

    fn run(&self, xs: &Tensor, silu: bool) -> Result<Tensor> {
        if self.trainable && xs.device().is_cpu() && xs.dtype() == DType::F32 && xs.rank() >= 3 {
            // Training: the same kernel with a backward pass of its own (candle's composed
            // group norm is seven ops forward and more backward, each a pass over the tensor,
            // and its SiLU's gradient another eight).
            let op = GroupNormOp {
                groups: self.groups,
                eps: self.eps,
                silu,
            };
            return xs.contiguous()?.apply_op3(&self.weight, &self.bias, op);
        }
        if !cpu_f32(xs, self.trainable) || xs.rank() < 3 {
            let out = self.fallback.forward(xs)?;
            return if silu { nn::ops::silu(&out) } else { Ok(out) };
        }
        let op = GroupNormOp {
            groups: self.groups,
            eps: self.eps,
            silu,
        };
        xs.contiguous()?
            .apply_op3_no_bwd(&self.weight, &self.bias, &op)
    }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(xs, false)
    }
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("kernel wants contiguous inputs".into()))?;
    Ok(&s.as_slice::<f32>()?[start..end])
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "easel-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let (channels, plane) = group_dims(l1, self.groups, [gamma.len(), beta.len()])?;
        let per_group = channels / self.groups * plane;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(per_group)
            .zip(x.par_chunks(per_group))
            .enumerate()
            .for_each(|(i, (out, x))| {
                let first = (i % self.groups) * (channels / self.groups);
                let (gamma, beta) = (&gamma[first..], &beta[first..]);
                vectorized(|| normalize_group(x, out, plane, gamma, beta, self.eps, self.silu));
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = GroupNormGradOp {
            groups: self.groups,
            eps: self.eps,
            silu: self.silu,
        };
        // The SiLU's gradient needs the norm's output, so beta too.
        let params = match self.silu {
            true => Tensor::cat(&[gamma, beta], 0)?,
            false => gamma.contiguous()?,
        };
        let all = x
            .contiguous()?
            .apply_op3_no_bwd(&params, &grad.contiguous()?, &op)?;
        let (n, c) = (x.elem_count(), gamma.elem_count());
        Ok((
            Some(all.narrow(0, 0, n)?.reshape(x.shape())?),
            Some(all.narrow(0, n, c)?),
            Some(all.narrow(0, n + c, c)?),
        ))
    }
}

/// The gradients of [`GroupNormOp`] from `(x, gamma, grad of the output)` (`gamma` followed by
/// beta with SiLU fused in), as one flat tensor: the input's gradient, then gamma's, then
/// beta's. With `x̂` the normalized input, `d` the gradient reaching `y = x̂ · gamma + beta`
/// (`grad`, or `grad · silu'(y)`) and `g = d · gamma`: `dx = rstd · (g − mean(g) − x̂ ·
/// mean(g · x̂))` per group, `dgamma = Σ d · x̂`, `dbeta = Σ d` per channel.
struct GroupNormGradOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl CustomOp3 for GroupNormGradOp {
    fn name(&self) -> &'static str {
        "easel-group-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, params, grad) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let (gamma, beta) = match self.silu {
            true => {
                let (gamma, beta) = params.split_at(params.len() / 2);
                (gamma, Some(beta))
            }
            false => (params, None),
        };
        let (channels, plane) = group_dims(
            l1,
            self.groups,
            [gamma.len(), beta.map_or(gamma.len(), <[f32]>::len)],
        )?;
        if grad.len() != x.len() {
            candle_core::bail!(
                "group norm gradient: {} gradients for {} inputs",
                grad.len(),
                x.len()
            )
        }
        let per_channel = channels / self.groups;
        let per_group = per_channel * plane;
        let mut dx = vec![0f32; x.len()];
        // Per (item, group): its channels' partial dgamma and dbeta, summed over items below.
        let mut partial = vec![0f64; x.len() / plane * 2];
        dx.par_chunks_mut(per_group)
            .zip(partial.par_chunks_mut(per_channel * 2))
            .enumerate()
            .for_each(|(i, (dx, partial))| {
                let (x, grad) = (
                    &x[i * per_group..][..per_group],
                    &grad[i * per_group..][..per_group],
                );
                let first = (i % self.groups) * per_channel;
                let gamma = &gamma[first..][..per_channel];
                let beta = beta.map(|b| &b[first..][..per_channel]);
                vectorized(|| group_grad(x, grad, (gamma, beta), dx, partial, plane, self.eps));
            });
        let mut out = dx;
        let mut dgamma = vec![0f64; channels];
        let mut dbeta = vec![0f64; channels];
        for (row, pair) in partial.chunks_exact(2).enumerate() {
            dgamma[row % channels] += pair[0];
            dbeta[row % channels] += pair[1];
        }
        out.extend(dgamma.iter().chain(&dbeta).map(|&v| v as f32));
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// One group's input gradient into `dx`, and per channel `[Σ d · x̂, Σ d]` into `partial`
/// (`d`: the gradient reaching the norm's output; with beta, through the SiLU after it).
#[inline(always)]
fn group_grad(
    x: &[f32],
    grad: &[f32],
    (gamma, beta): (&[f32], Option<&[f32]>),
    dx: &mut [f32],
    partial: &mut [f64],
    plane: usize,
    eps: f64,
) {
    const LANES: usize = 16;
    let n = x.len() as f64;
    let mean = (lane_sum::<LANES>(x, |v| v) / n) as f32;
    let var = lane_sum::<LANES>(x, |v| (v - mean) * (v - mean)) / n;
    let rstd = (1.0 / (var + eps).sqrt()) as f32;
    // `dx` holds `d` until the last loop turns it into the input's gradient in place.
    match beta {
        Some(beta) => {
            for (c, (d, (x, grad))) in dx
                .chunks_exact_mut(plane)
                .zip(x.chunks_exact(plane).zip(grad.chunks_exact(plane)))
                .enumerate()
            {
                let scale = gamma[c] * rstd;
                let shift = beta[c] - mean * scale;
                for ((d, &v), &g) in d.iter_mut().zip(x).zip(grad) {
                    // silu'(y) = s · (1 + y · (1 − s)), s = σ(y).
                    let y = v * scale + shift;
                    let s = 1.0 / (1.0 + exp(-y));
                    *d = g * s * (1.0 + y * (1.0 - s));
                }
            }
        }
        None => dx.copy_from_slice(grad),
    }
    let (mut sum_g, mut sum_gx) = (0f64, 0f64);
    for (c, (x, grad)) in x
        .chunks_exact(plane)
        .zip(dx.chunks_exact(plane))
        .enumerate()
    {
        let mut acc = [0f32; LANES];
        let mut acc_x = [0f32; LANES];
        let (xc, gc) = (x.chunks_exact(LANES), grad.chunks_exact(LANES));
        let (mut tail, mut tail_x) = (0f64, 0f64);
        for (&v, &g) in xc.remainder().iter().zip(gc.remainder()) {
            tail += g as f64;
            tail_x += (g * (v - mean) * rstd) as f64;
        }
        for (x, g) in xc.zip(gc) {
            for j in 0..LANES {
                acc[j] += g[j];
                acc_x[j] += g[j] * (x[j] - mean) * rstd;
            }
        }
        let dbeta = acc.iter().map(|&a| a as f64).sum::<f64>() + tail;
        let dgamma = acc_x.iter().map(|&a| a as f64).sum::<f64>() + tail_x;
        partial[2 * c] = dgamma;
        partial[2 * c + 1] = dbeta;
        sum_g += gamma[c] as f64 * dbeta;
        sum_gx += gamma[c] as f64 * dgamma;
    }
    let (mean_g, mean_gx) = ((sum_g / n) as f32, (sum_gx / n) as f32);
    for (c, (dx, x)) in dx
        .chunks_exact_mut(plane)
        .zip(x.chunks_exact(plane))
        .enumerate()
    {
        let gm = gamma[c];
        for (d, &v) in dx.iter_mut().zip(x) {
            let xhat = (v - mean) * rstd;
            *d = rstd * (*d * gm - mean_g - xhat * mean_gx);
        }
    }
}

/// Channels and plane size of a group norm's input `[b, c, ...]`, checked against the group
/// count and the lengths of the per-channel weights.
fn group_dims(input: &Layout, groups: usize, weights: [usize; 2]) -> Result<(usize, usize)> {
    let dims = input.dims();
    let channels = dims[1];
    if channels % groups != 0 || weights.iter().any(|&w| w != channels) {
        candle_core::bail!("group norm: {channels} channels, {groups} groups, {weights:?} weights")
    }
    Ok((channels, dims[2..].iter().product()))
}

/// One group: `x` holds its channels' planes one after another.
/// Mean, then variance around it (two passes, as candle and PyTorch), in 16 f32 lanes summed
/// in f64; then one scale-and-shift per channel, SiLU in the same pass.
#[inline(always)]
fn normalize_group(
    x: &[f32],
    out: &mut [f32],
    plane: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    silu: bool,
) {
    const LANES: usize = 16;
    let n = x.len() as f64;
    let mean = (lane_sum::<LANES>(x, |v| v) / n) as f32;
    let var = lane_sum::<LANES>(x, |v| (v - mean) * (v - mean)) / n;
    let rstd = (1.0 / (var + eps).sqrt()) as f32;
    for (c, (out, x)) in out
        .chunks_exact_mut(plane)
        .zip(x.chunks_exact(plane))
        .enumerate()
    {
        let scale = gamma[c] * rstd;
        let shift = beta[c] - mean * scale;
        if silu {
            for (o, &v) in out.iter_mut().zip(x) {
                let y = v * scale + shift;
                *o = y / (1.0 + exp(-y));
            }
        } else {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * scale + shift;
            }
        }
    }
}

/// The sum of `f` over `x` in `L` f32 lanes (so it vectorizes), the lanes added in f64.
#[inline(always)]
fn lane_sum<const L: usize>(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0f32; L];
    let chunks = x.chunks_exact(L);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v) as f64).sum();
    for c in chunks {
        for j in 0..L {
            acc[j] += f(c[j]);
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + tail
}

/// `softmax(q · kt) · v` for loaded weights on the CPU, `q` `[.., n, d]`, `kt` `[.., d, m]`, `v`
/// `[.., m, d]`: a block of query rows at a time, its scores (a few hundred kB, in cache)
/// computed, normalized and multiplied by `v` before the next block, instead of the whole
/// `[b, n, m]` score matrix (a gigabyte at 512²) written and read three times. `None` where the
/// tensors are not f32 on the CPU (the caller then takes candle's ops).
pub(super) fn attention(q: &Tensor, kt: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    if ![q, kt, v].iter().all(|t| cpu_f32(t, false)) || q.rank() < 3 || q.rank() != kt.rank() {
        return Ok(None);
    }
    // Leading dimensions (batch, heads) as one.
    let (n, d) = (q.dim(q.rank() - 2)?, q.dim(q.rank() - 1)?);
    let m = kt.dim(kt.rank() - 1)?;
    let b = q.elem_count() / (n * d).max(1);
    let lead = &q.dims()[..q.rank() - 2];
    if kt.dims() != [lead, &[d, m]].concat() || v.dims() != [lead, &[m, d]].concat() {
        candle_core::bail!(
            "attention: q {:?}, kt {:?}, v {:?}",
            q.dims(),
            kt.dims(),
            v.dims()
        )
    }
    let (q3, kt, v) = (
        q.reshape((b, n, d))?,
        kt.reshape((b, d, m))?,
        v.reshape((b, m, d))?,
    );
    let op = AttentionOp { b, n, m, d };
    let out = q3
        .contiguous()?
        .apply_op3_no_bwd(&kt.contiguous()?, &v.contiguous()?, &op)?;
    Ok(Some(out.reshape(q.shape())?))
}

struct AttentionOp {
    b: usize,
    n: usize,
    m: usize,
    d: usize,
}

/// Bytes of one block's scores: within L2 beside the GEMM's packed panels.
const SCORE_BLOCK_BYTES: usize = 1 << 19;

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "easel-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, kt, v) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let Self { b, n, m, d } = *self;
        let rows = (SCORE_BLOCK_BYTES / (4 * m.max(1))).clamp(1, n.max(1));
        let mut out = vec![0f32; b * n * d];
        let blocks = out
            .par_chunks_mut(n * d)
            .enumerate()
            .flat_map(|(item, out)| {
                out.par_chunks_mut(rows * d)
                    .enumerate()
                    .map(move |(block, out)| (item, block, out))
            });
        blocks.for_each(|(item, block, out)| {
            let r = out.len() / d;
            let q = &q[(item * n + block * rows) * d..][..r * d];
            let (kt, v) = (&kt[item * d * m..][..d * m], &v[item * m * d..][..m * d]);
            let mut scores = vec![0f32; r * m];
            // SAFETY: each pointer and stride pair spans exactly its slice.
            unsafe {
                gemm::gemm(
                    r,
                    m,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    m as isize,
                    false,
                    q.as_ptr(),
                    1,
                    d as isize,
                    kt.as_ptr(),
                    1,
                    m as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            // A `for` loop, not `for_each`: an iterator's fold is a function of its own, compiled
            // without the AVX2 features `vectorized` gives its closure's inlined body.
            vectorized(|| {
                for row in scores.chunks_exact_mut(m) {
                    softmax_in_place(row)
                }
            });
            // SAFETY: as above.
            unsafe {
                gemm::gemm(
                    r,
                    d,
                    m,
                    out.as_mut_ptr(),
                    1,
                    d as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    m as isize,
                    v.as_ptr(),
                    1,
                    d as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, n, d))))
    }
}

/// Softmax over the last dimension of a contiguous f32 CPU tensor, one row per task: max, then
/// `exp(x - max)` with the vectorized [`exp`], then the division by the sum (in f64 lanes).
/// candle's kernel calls libm's `expf` per element, the larger part of attention's time.
/// `trainable`: with a backward pass of its own (candle's fused softmax has none; its composed
/// one is five passes over the score matrix forward and about ten backward).
pub(super) fn softmax_last_dim(xs: &Tensor, trainable: bool) -> Result<Tensor> {
    if !(xs.device().is_cpu() && xs.dtype() == DType::F32) {
        return match trainable {
            true => nn::ops::softmax(xs, candle_core::D::Minus1),
            false => nn::ops::softmax_last_dim(xs),
        };
    }
    match trainable {
        true => xs.contiguous()?.apply_op1(SoftmaxOp),
        false => xs.contiguous()?.apply_op1_no_bwd(&SoftmaxOp),
    }
}

struct SoftmaxOp;

impl candle_core::CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "easel-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let row = l.dims().last().copied().unwrap_or(1);
        let out = map_rows(x, row, row, softmax_row);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        RowGradOp::Softmax.of(res, grad)
    }
}

#[inline(always)]
fn softmax_grad_row(s: &[f32], g: &[f32], out: &mut [f32]) {
    let dot = dot16(s, g);
    for ((o, s), g) in out.iter_mut().zip(s).zip(g) {
        *o = s * (g - dot);
    }
}

/// `Σ a·b` in 16 lanes (a plain iterator sum stays serial: float addition does not reorder).
#[inline(always)]
fn dot16(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for (a, b) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for j in 0..16 {
            lanes[j] += a[j] * b[j];
        }
    }
    let tail = a.len() / 16 * 16;
    let rest: f32 = a[tail..].iter().zip(&b[tail..]).map(|(a, b)| a * b).sum();
    lanes.iter().sum::<f32>() + rest
}

#[inline(always)]
fn softmax_row(x: &[f32], out: &mut [f32]) {
    out.copy_from_slice(x);
    softmax_in_place(out)
}

/// `out`'s rows from `x`'s (`in_row` elements each to `out_row`), rows in batches of a few
/// thousand elements per task (short rows do not each pay for one), each batch run in
/// [`vectorized`] with `row_fn` inlined (a named `#[inline(always)]` function).
fn map_rows(
    x: &[f32],
    in_row: usize,
    out_row: usize,
    row_fn: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    if x.is_empty() || in_row == 0 {
        return Vec::new();
    }
    let rows_per_task = (8192 / in_row).max(1);
    let mut out = vec![0f32; x.len() / in_row * out_row];
    out.par_chunks_mut(out_row * rows_per_task)
        .zip(x.par_chunks(in_row * rows_per_task))
        .for_each(|(out, x)| {
            vectorized(|| {
                for (out, x) in out.chunks_exact_mut(out_row).zip(x.chunks_exact(in_row)) {
                    row_fn(x, out)
                }
            })
        });
    out
}

/// [`map_rows`] over two inputs row by row (`x_row` and `y_row` elements to `out_row`).
fn map_row_pairs(
    x: &[f32],
    y: &[f32],
    x_row: usize,
    y_row: usize,
    out_row: usize,
    row_fn: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    if x.is_empty() || x_row == 0 || y_row == 0 {
        return Vec::new();
    }
    let rows_per_task = (8192 / x_row.max(y_row)).max(1);
    let mut out = vec![0f32; x.len() / x_row * out_row];
    out.par_chunks_mut(out_row * rows_per_task)
        .zip(
            x.par_chunks(x_row * rows_per_task)
                .zip(y.par_chunks(y_row * rows_per_task)),
        )
        .for_each(|(out, (x, y))| {
            vectorized(|| {
                for (out, (x, y)) in out
                    .chunks_exact_mut(out_row)
                    .zip(x.chunks_exact(x_row).zip(y.chunks_exact(y_row)))
                {
                    row_fn(x, y, out)
                }
            })
        });
    out
}

#[inline(always)]
fn softmax_in_place(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for j in 0..16 {
            lanes[j] = lanes[j].max(c[j]);
        }
    }
    let max = lanes.into_iter().fold(tail, f32::max);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = (1.0 / lane_sum::<16>(row, |v| v)) as f32;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// GEGLU's gating for loaded weights on the CPU: `h = [a, g]` along the last dimension gives
/// `a · gelu(g)` with candle's tanh-form GELU, in one pass over `h` (candle takes the halves as
/// strided views, then a GELU and a product, each a whole-tensor pass with libm's `tanhf`).
/// `None` where the kernel does not apply (not f32 on the CPU). `trainable`: with a backward
/// pass of its own (candle's GELU gradient is a dozen whole-tensor ops with libm's `tanhf` and
/// `powf`, a fifth of a diffusion step).
pub(super) fn geglu(h: &Tensor, trainable: bool) -> Result<Option<Tensor>> {
    if !(h.device().is_cpu() && h.dtype() == DType::F32) {
        return Ok(None);
    }
    let h = h.contiguous()?;
    match trainable {
        true => h.apply_op1(GegluOp).map(Some),
        false => h.apply_op1_no_bwd(&GegluOp).map(Some),
    }
}

struct GegluOp;

impl candle_core::CustomOp1 for GegluOp {
    fn name(&self) -> &'static str {
        "easel-geglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let mut dims = l.dims().to_vec();
        let row = dims.last().copied().unwrap_or(0);
        if row % 2 != 0 {
            candle_core::bail!("GEGLU needs an even last dimension, got {row}")
        }
        let half = row / 2;
        let out = map_rows(x, row, half, geglu_row);
        if let Some(last) = dims.last_mut() {
            *last = half;
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(&self, h: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        RowGradOp::Geglu.of(h, grad)
    }
}

/// The input gradient of a row-wise op from `(x, the output's gradient)`, one pass per row:
/// the softmax's from its output `s` and gradient `g`, `s · (g − Σ g·s)`; GEGLU's from its input
/// `h = [a, g]` and gradient `d`, `[d · gelu(g), d · a · gelu'(g)]`.
enum RowGradOp {
    Softmax,
    Geglu,
}

impl RowGradOp {
    fn of(self, x: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        x.contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &self)
            .map(Some)
    }
}

impl CustomOp2 for RowGradOp {
    fn name(&self) -> &'static str {
        match self {
            Self::Softmax => "easel-softmax-last-dim-grad",
            Self::Geglu => "easel-geglu-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, grad) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let row = l1.dims().last().copied().unwrap_or(0);
        let out = match self {
            Self::Softmax if x.len() == grad.len() => {
                map_row_pairs(x, grad, row, row, row, softmax_grad_row)
            }
            Self::Geglu if row % 2 == 0 && x.len() == 2 * grad.len() => {
                map_row_pairs(x, grad, row, row / 2, row, geglu_grad_row)
            }
            _ => candle_core::bail!("{}: input and gradient do not match", self.name()),
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[inline(always)]
fn geglu_grad_row(h: &[f32], d: &[f32], out: &mut [f32]) {
    let (a, g) = h.split_at(d.len());
    let (out_a, out_g) = out.split_at_mut(d.len());
    for ((((oa, og), &a), &g), &d) in out_a.iter_mut().zip(out_g).zip(a).zip(g).zip(d) {
        let (value, slope) = gelu_tanh_with_slope(g);
        *oa = d * value;
        *og = d * a * slope;
    }
}

/// [`gelu_tanh`] and its derivative: with `s = σ(2u)`, `gelu = v s` and
/// `gelu' = s + 2 v s (1 − s) u'`.
#[inline(always)]
fn gelu_tanh_with_slope(v: f32) -> (f32, f32) {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_TWO_OVER_PI * v * (1.0 + 0.044_715 * v * v);
    let du = SQRT_TWO_OVER_PI * (1.0 + 3.0 * 0.044_715 * v * v);
    let s = 1.0 / (1.0 + exp(-2.0 * u));
    (v * s, s + 2.0 * v * s * (1.0 - s) * du)
}

/// `a · gelu(g)` for one row `[a, g]`.
#[inline(always)]
fn geglu_row(x: &[f32], out: &mut [f32]) {
    let (a, g) = x.split_at(out.len());
    for ((o, &a), &g) in out.iter_mut().zip(a).zip(g) {
        *o = a * gelu_tanh(g);
    }
}

/// candle's GELU, `0.5 v (1 + tanh(√(2/π) (v + 0.044715 v³)))`, written as `v · σ(2u)` so that
/// it takes one vectorized [`exp`].
#[inline(always)]
fn gelu_tanh(v: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_TWO_OVER_PI * v * (1.0 + 0.044_715 * v * v);
    v / (1.0 + exp(-2.0 * u))
}

/// `xs + bias` along dimension `dim` (`bias` holds `xs.dim(dim)` values) with a backward pass,
/// for biases being trained: the bias's gradient is the output's summed per channel in one pass,
/// where candle's broadcast add sums over the leading dimensions on its generic reduction path
/// (index arithmetic per element; a tenth of a diffusion step over all convolutions and linear
/// layers). The same values as `broadcast_add`.
pub(super) fn trainable_add_bias(xs: &Tensor, bias: &Tensor, dim: usize) -> Result<Tensor> {
    if !(xs.device().is_cpu() && xs.dtype() == DType::F32 && bias.dtype() == DType::F32) {
        let mut shape = vec![1; xs.rank()];
        shape[dim] = bias.elem_count();
        return xs.broadcast_add(&bias.reshape(shape)?);
    }
    xs.contiguous()?
        .apply_op2(&bias.contiguous()?, AddBiasOp { dim })
}

/// The element counts before, along and after `dim`.
fn around(dims: &[usize], dim: usize) -> Result<(usize, usize, usize)> {
    if dim >= dims.len() {
        candle_core::bail!("no dimension {dim} in {dims:?}")
    }
    Ok((
        dims[..dim].iter().product(),
        dims[dim],
        dims[dim + 1..].iter().product(),
    ))
}

struct AddBiasOp {
    dim: usize,
}

impl CustomOp2 for AddBiasOp {
    fn name(&self) -> &'static str {
        "easel-add-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, bias) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (_, channels, inner) = around(l1.dims(), self.dim)?;
        if bias.len() != channels {
            candle_core::bail!(
                "{}: {} bias values for {channels} channels",
                self.name(),
                bias.len()
            )
        }
        let mut out = x.to_vec();
        for block in out.chunks_exact_mut(channels * inner) {
            if inner == 1 {
                for (v, b) in block.iter_mut().zip(bias) {
                    *v += b;
                }
            } else {
                for (run, b) in block.chunks_exact_mut(inner).zip(bias) {
                    for v in run {
                        *v += b;
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _xs: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let bias_grad = grad
            .contiguous()?
            .apply_op1_no_bwd(&ChannelSumOp { dim: self.dim })?;
        Ok((Some(grad.clone()), Some(bias_grad)))
    }
}

/// Sums a tensor over every dimension but `dim` (in f64, in a fixed order).
struct ChannelSumOp {
    dim: usize,
}

impl candle_core::CustomOp1 for ChannelSumOp {
    fn name(&self) -> &'static str {
        "easel-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let (_, channels, inner) = around(l.dims(), self.dim)?;
        let mut sums = vec![0f64; channels];
        for block in x.chunks_exact(channels * inner) {
            if inner == 1 {
                for (s, &v) in sums.iter_mut().zip(block) {
                    *s += v as f64;
                }
            } else {
                for (s, run) in sums.iter_mut().zip(block.chunks_exact(inner)) {
                    *s += lane_sum::<8>(run, |v| v);
                }
            }
        }
        let out = sums.into_iter().map(|s| s as f32).collect();
        Ok((CpuStorage::F32(out), Shape::from(channels)))
    }
}

/// candle's linear layer; for weights being trained its bias goes through [`trainable_add_bias`].
pub(super) struct Linear {
    inner: nn::Linear,
    /// The weight alone, for training (the bias is added by `trainable_add_bias`).
    unbiased: Option<nn::Linear>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        let unbiased =
            (weight.is_variable() && bias.is_some()).then(|| nn::Linear::new(weight.clone(), None));
        Self {
            inner: nn::Linear::new(weight, bias),
            unbiased,
        }
    }

    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
}

/// `candle_nn::linear`'s weights (names, shapes, initial values) in our [`Linear`].
pub(super) fn linear(in_dim: usize, out_dim: usize, vb: nn::VarBuilder) -> Result<Linear> {
    let l = nn::linear(in_dim, out_dim, vb)?;
    Ok(Linear::new(l.weight().clone(), l.bias().cloned()))
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match (&self.unbiased, self.inner.bias()) {
            (Some(unbiased), Some(bias)) => {
                trainable_add_bias(&unbiased.forward(xs)?, bias, xs.rank() - 1)
            }
            _ => self.inner.forward(xs),
        }
    }
}

/// Runs `f` compiled for AVX2 and FMA where the CPU has them (the crate is built for plain
/// x86-64, whose loops vectorize only 4 wide): `f`'s body, `#[inline(always)]` helpers included,
/// is inlined into the feature-enabled function. Loops in `f` should be plain `for` loops: an
/// iterator adaptor's `fold` is a function of its own, compiled without the features. (An
/// AVX-512 tier measured no faster.)
#[inline(always)]
fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the features the function is compiled for were just detected.
        return unsafe { with_avx2(f) };
    }
    f()
}

/// `e^x` for f32 in straight-line code the compiler vectorizes (libm's `expf` is a call per
/// element): 2^n · p(r) with r = x − n·ln 2, |r| ≤ ln 2 / 2, p a degree-6 Taylor polynomial
/// (relative error below 2e-7; x is clamped to ±87, where f32 ends).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and removing 1.5 · 2^23 rounds to the nearest integer without a rounding instruction.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // SAFETY: |n| ≤ 126 after the clamp, so it is an exact i32 (no saturating conversion, which
    // does not vectorize).
    let n = unsafe { n.to_int_unchecked::<i32>() };
    f32::from_bits(p.to_bits().wrapping_add((n << 23) as u32))
}

/// A 2-D convolution of loaded f32 weights on the CPU, bias added by the GEMM itself.
pub(super) struct ConvOp {
    pub padding: usize,
    pub stride: usize,
    /// Per output channel, or none.
    pub bias: Option<Vec<f32>>,
}

/// Bytes of input patches one GEMM call takes at most (a few output rows: fits L2 beside the
/// kernel's packed panels).
const TILE_BYTES: usize = 1 << 20;
const MIN_TILE_PIXELS: usize = 256;

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

impl OutPtr {
    /// A method, so that closures capture the whole (Sync) wrapper, not its raw field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}
// SAFETY: tasks write disjoint (batch item, output rows) blocks of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "easel-conv2d-inference"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (b, c, h, wd) = l1.shape().dims4()?;
        let (o, c2, kh, kw) = l2.shape().dims4()?;
        if c != c2 {
            candle_core::bail!("conv2d: input has {c} channels, kernel wants {c2}")
        }
        let (p, s) = (self.padding, self.stride);
        if h + 2 * p < kh || wd + 2 * p < kw {
            candle_core::bail!("conv2d: {h}x{wd} input is smaller than the {kh}x{kw} kernel")
        }
        let (oh, ow) = ((h + 2 * p - kh) / s + 1, (wd + 2 * p - kw) / s + 1);
        let k = c * kh * kw;
        let mut out = vec![0f32; b * o * oh * ow];
        if let Some(bias) = &self.bias {
            for (channel, &v) in out.chunks_exact_mut(oh * ow).zip(bias.iter().cycle()) {
                channel.fill(v);
            }
        }
        let direct = kh == 1 && kw == 1 && s == 1 && p == 0;
        // Output rows per GEMM call: as many as keep its patch matrix within TILE_BYTES, but
        // at least MIN_TILE_PIXELS (a GEMM a few pixels wide runs the narrow, slow kernels).
        let rows = (TILE_BYTES / (4 * k * ow).max(1))
            .max(MIN_TILE_PIXELS.div_ceil(ow))
            .clamp(1, oh);
        let tiles_per_item = oh.div_ceil(rows);
        let tasks = b * tiles_per_item;
        let threads = rayon::current_num_threads();
        // Enough tiles: one thread per tile. Few (a small picture): the threads share each GEMM.
        let inner = if tasks >= 2 * threads || threads == 1 {
            gemm::Parallelism::None
        } else {
            gemm::Parallelism::Rayon(threads)
        };
        let dst = OutPtr(out.as_mut_ptr());
        let run = |task: usize| {
            let (item, tile) = (task / tiles_per_item, task % tiles_per_item);
            let y0 = tile * rows;
            let y1 = (y0 + rows).min(oh);
            let n = (y1 - y0) * ow;
            let input = &x[item * c * h * wd..(item + 1) * c * h * wd];
            let patches = (!direct).then(|| {
                PATCHES.with_borrow_mut(|buffer| {
                    let mut cols = std::mem::take(buffer);
                    im2col(input, (c, h, wd), (kh, kw), (p, s), (y0, y1, ow), &mut cols);
                    cols
                })
            });
            let (rhs, rhs_rs) = match &patches {
                None => (input[y0 * ow..].as_ptr(), (h * wd) as isize),
                Some(cols) => (cols.as_ptr(), n as isize),
            };
            // SAFETY: `dst` block [item, all channels, rows y0..y1] belongs to this task only;
            // every pointer/stride pair stays inside its buffer (shapes checked above).
            let dst = dst.at(item * o * oh * ow + y0 * ow);
            unsafe {
                gemm::gemm(
                    o,
                    n,
                    k,
                    dst,
                    1,
                    (oh * ow) as isize,
                    self.bias.is_some(),
                    w.as_ptr(),
                    1,
                    k as isize,
                    rhs,
                    1,
                    rhs_rs,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    inner,
                )
            };
            if let Some(cols) = patches {
                PATCHES.with_borrow_mut(|buffer| *buffer = cols);
            }
        };
        if matches!(inner, gemm::Parallelism::None) {
            (0..tasks).into_par_iter().for_each(run);
        } else {
            (0..tasks).for_each(run);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, o, oh, ow))))
    }
}

/// The gradient of a convolution's kernel, `[o, c, kh, kw]`, from its input `[b, c, h, w]` and
/// the gradient of its output `[b, o, oh, ow]`: per batch item, the output gradient times the
/// transposed patch matrix (one GEMM), summed over items. Training only: candle computes it as
/// a convolution of the input by the gradient, whose element-by-element im2col was a third of a
/// training step.
pub(super) struct ConvKernelGrad {
    pub kernel: (usize, usize),
    pub padding: usize,
    pub stride: usize,
}

impl CustomOp2 for ConvKernelGrad {
    fn name(&self) -> &'static str {
        "easel-conv2d-kernel-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let (b, c, h, w) = l1.shape().dims4()?;
        let (b2, o, oh, ow) = l2.shape().dims4()?;
        let ((kh, kw), p, s) = (self.kernel, self.padding, self.stride);
        if b != b2
            || h + 2 * p < kh
            || (h + 2 * p - kh) / s + 1 != oh
            || (w + 2 * p - kw) / s + 1 != ow
        {
            candle_core::bail!(
                "conv2d kernel gradient: input {:?} does not fit gradient {:?}",
                l1.shape(),
                l2.shape()
            )
        }
        let (k, n) = (c * kh * kw, oh * ow);
        // Items are split over the threads, each summing into its own gradient; the sums are
        // then added in a fixed order, so the result does not depend on the thread count.
        let threads = rayon::current_num_threads().min(b).max(1);
        let partials: Vec<Vec<f32>> = (0..threads)
            .into_par_iter()
            .map(|t| {
                let mut acc = vec![0f32; o * k];
                for item in (t * b / threads)..((t + 1) * b / threads) {
                    let input = &x[item * c * h * w..(item + 1) * c * h * w];
                    let grad = &g[item * o * n..(item + 1) * o * n];
                    PATCHES.with_borrow_mut(|cols| {
                        im2col(input, (c, h, w), (kh, kw), (p, s), (0, oh, ow), cols);
                        // SAFETY: acc is o x k, grad o x n, cols k x n (read transposed).
                        unsafe {
                            gemm::gemm(
                                o,
                                k,
                                n,
                                acc.as_mut_ptr(),
                                1,
                                k as isize,
                                true,
                                grad.as_ptr(),
                                1,
                                n as isize,
                                cols.as_ptr(),
                                n as isize,
                                1,
                                1.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            )
                        }
                    });
                }
                acc
            })
            .collect();
        let mut out = partials[0].clone();
        for part in &partials[1..] {
            for (a, v) in out.iter_mut().zip(part) {
                *a += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((o, c, kh, kw))))
    }
}

thread_local! {
    /// Each thread's patch matrix, kept from one tile to the next (a fresh megabyte per tile was
    /// a zero-filled, page-faulted mapping every time).
    static PATCHES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The patch matrix of output rows `y0..y1` into `cols`: one row per (channel, ky, kx), one
/// column per output pixel; zeros where the kernel overlaps the padding. Every element is
/// written (the buffer is reused), stride 1 copies whole row runs.
fn im2col(
    input: &[f32],
    (c, h, w): (usize, usize, usize),
    (kh, kw): (usize, usize),
    (p, s): (usize, usize),
    (y0, y1, ow): (usize, usize, usize),
    cols: &mut Vec<f32>,
) {
    let n = (y1 - y0) * ow;
    cols.resize(c * kh * kw * n, 0.0);
    for (row, dst) in cols.chunks_exact_mut(n).enumerate() {
        let (ch, ky, kx) = (row / (kh * kw), row / kw % kh, row % kw);
        let plane = &input[ch * h * w..(ch + 1) * h * w];
        // Output columns whose input column kx + ox·s − p falls inside 0..w.
        let first = (p.saturating_sub(kx)).div_ceil(s).min(ow);
        let last = ((w + p).saturating_sub(kx)).div_ceil(s).min(ow).max(first);
        if s == 1 && ow == w {
            same_size_rows(plane, (h, w), (ky, kx, p), (first, last), y0, dst);
            continue;
        }
        for oy in y0..y1 {
            let out = &mut dst[(oy - y0) * ow..(oy - y0 + 1) * ow];
            let iy = (oy * s + ky) as isize - p as isize;
            if iy < 0 || iy as usize >= h || first == last {
                out.fill(0.0);
                continue;
            }
            out[..first].fill(0.0);
            out[last..].fill(0.0);
            let src = &plane[iy as usize * w..(iy as usize + 1) * w];
            let ix0 = first * s + kx - p;
            if s == 1 {
                out[first..last].copy_from_slice(&src[ix0..ix0 + (last - first)]);
            } else {
                for (j, o) in out[first..last].iter_mut().enumerate() {
                    *o = src[ix0 + j * s];
                }
            }
        }
    }
}

/// One patch-matrix row of a stride-1 convolution whose output is as wide as its input: output
/// pixel i of the tile reads the input plane at i plus one fixed offset, so the rows that fall
/// inside the input are one block copy (not one short copy per row, most of im2col's time on
/// 16-pixel-wide latents), then the columns that wrapped round from a neighbouring row are
/// zeroed. `first..last`: the output columns whose input column lies inside.
fn same_size_rows(
    plane: &[f32],
    (h, w): (usize, usize),
    (ky, kx, p): (usize, usize, usize),
    (first, last): (usize, usize),
    y0: usize,
    dst: &mut [f32],
) {
    let y1 = y0 + dst.len() / w;
    // Output rows whose input row oy + ky - p lies inside 0..h.
    let inside_from = p.saturating_sub(ky).clamp(y0, y1);
    let inside_to = (h + p).saturating_sub(ky).clamp(inside_from, y1);
    let (above, rest) = dst.split_at_mut((inside_from - y0) * w);
    let (block, below) = rest.split_at_mut((inside_to - inside_from) * w);
    above.fill(0.0);
    below.fill(0.0);
    if block.is_empty() {
        return;
    }
    // The block's first pixel reads the plane here; shifted by kx - p it may start before the
    // plane or end after it (only in columns zeroed below).
    let start = ((inside_from + ky - p) * w) as isize + kx as isize - p as isize;
    let from = start.max(0);
    let to = (start + block.len() as isize).min(plane.len() as isize);
    if from < to {
        let lead = (from - start) as usize;
        let end = lead + (to - from) as usize;
        block[lead..end].copy_from_slice(&plane[from as usize..to as usize]);
        block[..lead].fill(0.0);
        block[end..].fill(0.0);
    } else {
        // A plane narrower than the padding: nothing of it lies in this kernel row's reach.
        block.fill(0.0);
    }
    if first > 0 || last < w {
        for row in block.chunks_exact_mut(w) {
            row[..first].fill(0.0);
            row[last..].fill(0.0);
        }
    }
}

/// The largest magnitude in `t`: tests compare tensors by it.
#[cfg(test)]
pub(crate) fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .and_then(|a| a.max_all())
        .and_then(|m| m.to_scalar::<f32>())
        .expect("an f32 tensor")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `ours` equals `want` to a relative 1e-5 of its largest magnitude.
    fn assert_close(ours: &Tensor, want: &Tensor, what: impl std::fmt::Debug) {
        let rel = max_abs(&(ours - want).unwrap()) / max_abs(want).max(1e-6);
        assert!(rel < 1e-5, "{what:?}: off by {rel}");
    }

    /// The trainable group norm's output and gradients (input, gamma, beta) are candle's
    /// composed group norm's (with and without the SiLU after it), on an input far from zero
    /// mean and unit variance.
    #[test]
    fn trainable_group_norm_matches_candles_gradients() {
        let dev = Device::Cpu;
        let map = nn::VarMap::new();
        let vb = nn::VarBuilder::from_varmap(&map, DType::F32, &dev);
        let norm = group_norm(4, 16, 1e-5, vb).unwrap();
        for var in map.all_vars() {
            let n = var.elem_count();
            var.set(&Tensor::randn(1f32, 0.5, n, &dev).unwrap())
                .unwrap();
        }
        let x = candle_core::Var::from_tensor(
            &(Tensor::randn(0f32, 3., (3, 16, 5, 7), &dev).unwrap() + 2.).unwrap(),
        )
        .unwrap();
        let target = Tensor::randn(0f32, 1., (3, 16, 5, 7), &dev).unwrap();
        let loss = |out: Tensor| (out * &target).unwrap().sqr().unwrap().sum_all().unwrap();
        for silu in [false, true] {
            let ours = norm.run(x.as_tensor(), silu).unwrap();
            let want = norm.fallback.forward(x.as_tensor()).unwrap();
            let want = if silu { want.silu().unwrap() } else { want };
            assert_close(&ours, &want, ("output", silu));
            let (g_ours, g_want) = (
                loss(ours).backward().unwrap(),
                loss(want).backward().unwrap(),
            );
            for (name, t) in [
                ("input", x.as_tensor()),
                ("gamma", &norm.weight),
                ("beta", &norm.bias),
            ] {
                assert_close(g_ours.get(t).unwrap(), g_want.get(t).unwrap(), (name, silu));
            }
        }
    }

    /// `ours` and `want` (the op and candle's composition of it) give the same values and the
    /// same gradients for an input of `shape`.
    fn assert_same_gradients(
        shape: &[usize],
        ours: impl Fn(&Tensor) -> Tensor,
        want: impl Fn(&Tensor) -> Tensor,
    ) {
        let dev = Device::Cpu;
        let x =
            candle_core::Var::from_tensor(&Tensor::randn(0f32, 3., shape, &dev).unwrap()).unwrap();
        let (ours, want) = (ours(x.as_tensor()), want(x.as_tensor()));
        assert_close(&ours, &want, "output");
        let target = Tensor::randn(0f32, 1., want.shape(), &dev).unwrap();
        let loss = |out: Tensor| (out * &target).unwrap().sqr().unwrap().sum_all().unwrap();
        let (g_ours, g_want) = (
            loss(ours).backward().unwrap(),
            loss(want).backward().unwrap(),
        );
        assert_close(
            g_ours.get(x.as_tensor()).unwrap(),
            g_want.get(x.as_tensor()).unwrap(),
            "input",
        );
    }

    /// The trainable softmax gives candle's composed softmax's values and input gradients.
    #[test]
    fn trainable_softmax_matches_candles_gradients() {
        assert_same_gradients(
            &[2, 3, 5, 37],
            |x| softmax_last_dim(x, true).unwrap(),
            |x| nn::ops::softmax(x, candle_core::D::Minus1).unwrap(),
        );
    }

    /// The trainable GEGLU gives candle's chunk, GELU and product's values and input gradients.
    #[test]
    fn trainable_geglu_matches_candles_gradients() {
        assert_same_gradients(
            &[2, 7, 2 * 37],
            |h| geglu(h, true).unwrap().unwrap(),
            |h| {
                let halves = h.chunk(2, candle_core::D::Minus1).unwrap();
                (&halves[0] * halves[1].gelu().unwrap()).unwrap()
            },
        );
    }

    /// The trainable bias gives candle's broadcast add's values and gradients (input and bias),
    /// along a middle dimension (convolutions) and the last (linear layers).
    #[test]
    fn trainable_bias_matches_candles_gradients() {
        let dev = Device::Cpu;
        for (shape, dim) in [(&[3usize, 5, 7, 9][..], 1), (&[2, 11, 37][..], 2)] {
            let var = |shape: &[usize]| {
                candle_core::Var::from_tensor(&Tensor::randn(0f32, 3., shape, &dev).unwrap())
                    .unwrap()
            };
            let (x, bias) = (var(shape), var(&[shape[dim]]));
            let mut view = vec![1; shape.len()];
            view[dim] = shape[dim];
            let ours = trainable_add_bias(x.as_tensor(), bias.as_tensor(), dim).unwrap();
            let want = x.broadcast_add(&bias.reshape(view).unwrap()).unwrap();
            assert_close(&ours, &want, "output");
            let target = Tensor::randn(0f32, 1., shape, &dev).unwrap();
            let loss = |out: Tensor| (out * &target).unwrap().sqr().unwrap().sum_all().unwrap();
            let (g_ours, g_want) = (
                loss(ours).backward().unwrap(),
                loss(want).backward().unwrap(),
            );
            for (v, what) in [(&x, "input"), (&bias, "bias")] {
                assert_close(
                    g_ours.get(v.as_tensor()).unwrap(),
                    g_want.get(v.as_tensor()).unwrap(),
                    what,
                );
            }
        }
    }

    /// Same numbers as candle's convolution for every kernel, stride and padding the models use,
    /// odd sizes, one and several tiles, with and without bias.
    #[test]
    fn conv_matches_candle() {
        let dev = Device::Cpu;
        for (b, c, o, side, k, p, s) in [
            (2, 5, 7, 9, 3, 1, 1),
            (1, 4, 6, 8, 3, 1, 2),
            (2, 3, 4, 9, 3, 0, 2),
            (2, 6, 3, 7, 1, 0, 1),
            (1, 3, 2, 5, 3, 2, 1),
            (1, 3, 2, 6, 5, 2, 1),
            (1, 2, 3, 1, 5, 2, 1),
            (2, 64, 32, 300, 3, 1, 1),
        ] {
            let x = Tensor::randn(0f32, 1., (b, c, side, side + 1), &dev).unwrap();
            let w = Tensor::randn(0f32, 1., (o, c, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1., o, &dev).unwrap();
            let theirs = x.conv2d(&w, p, s, 1, 1).unwrap();
            let plain = ConvOp {
                padding: p,
                stride: s,
                bias: None,
            };
            let ours = x.apply_op2_no_bwd(&w, &plain).unwrap();
            assert_close(&ours, &theirs, ("no bias", b, c, o, side, k, p, s));
            let with_bias = ConvOp {
                padding: p,
                stride: s,
                bias: Some(bias.to_vec1::<f32>().unwrap().into()),
            };
            let ours = x.apply_op2_no_bwd(&w, &with_bias).unwrap();
            let theirs = theirs
                .broadcast_add(&bias.reshape((1, o, 1, 1)).unwrap())
                .unwrap();
            assert_close(&ours, &theirs, ("bias", b, c, o, side, k, p, s));
        }
    }

    /// Same numbers as candle's group norm (and SiLU) on inputs far from zero mean.
    #[test]
    fn group_norm_matches_candle() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3., (2, 64, 13, 11), &dev).unwrap() + 5.0).unwrap();
        let gamma = Tensor::randn(1f32, 0.5, 64, &dev).unwrap();
        let beta = Tensor::randn(0f32, 0.5, 64, &dev).unwrap();
        let theirs = nn::GroupNorm::new(gamma.clone(), beta.clone(), 64, 32, 1e-6)
            .unwrap()
            .forward(&x)
            .unwrap();
        for silu in [false, true] {
            let op = GroupNormOp {
                groups: 32,
                eps: 1e-6,
                silu,
            };
            let ours = x.apply_op3_no_bwd(&gamma, &beta, &op).unwrap();
            let want = if silu {
                nn::ops::silu(&theirs).unwrap()
            } else {
                theirs.clone()
            };
            assert_close(&ours, &want, ("silu", silu));
        }
    }

    /// Same numbers as candle's softmax, long and short rows, large and negative logits.
    #[test]
    fn softmax_matches_candle() {
        let dev = Device::Cpu;
        for shape in [(3, 5, 77), (2, 4, 1031), (1, 1, 3)] {
            let x = (Tensor::randn(0f32, 4., shape, &dev).unwrap() - 20.0).unwrap();
            let ours = softmax_last_dim(&x, false).unwrap();
            let theirs = nn::ops::softmax_last_dim(&x).unwrap();
            assert_close(&ours, &theirs, shape);
        }
    }

    /// Blocked attention equals softmax(q · kt) · v computed whole by candle, for block counts
    /// that do and do not divide the rows, and several batch items.
    #[test]
    fn attention_matches_candle() {
        let dev = Device::Cpu;
        for (b, n, m, d) in [(3, 77, 77, 8), (2, 5000, 300, 16), (1, 7, 1, 3)] {
            let q = Tensor::randn(0f32, 1., (b, n, d), &dev).unwrap();
            let kt = Tensor::randn(0f32, 0.3, (b, d, m), &dev).unwrap();
            let v = Tensor::randn(0f32, 1., (b, m, d), &dev).unwrap();
            let ours = attention(&q, &kt, &v).unwrap().expect("f32 on the CPU");
            let scores = nn::ops::softmax_last_dim(&q.matmul(&kt).unwrap()).unwrap();
            assert_close(&ours, &scores.matmul(&v).unwrap(), (b, n, m, d));
        }
    }

    /// Same numbers as candle's GEGLU (halves, tanh-form GELU, product), small and large inputs.
    #[test]
    fn geglu_matches_candle() {
        let dev = Device::Cpu;
        for (shape, scale) in [
            ((2, 77, 2 * 1280), 1.0),
            ((1, 3, 2 * 5), 6.0),
            ((1, 4, 2 * 320), 0.01),
        ] {
            let h = Tensor::randn(0f32, scale, shape, &dev).unwrap();
            let ours = geglu(&h, false).unwrap().expect("f32 on the CPU");
            let halves = h.chunk(2, candle_core::D::Minus1).unwrap();
            assert_close(
                &ours,
                &(&halves[0] * halves[1].gelu().unwrap()).unwrap(),
                shape,
            );
        }
    }

    #[test]
    fn exp_is_close_to_libm() {
        let mut worst = 0f32;
        for i in -8700..=8700 {
            let x = i as f32 / 100.0;
            worst = worst.max((exp(x) - x.exp()).abs() / x.exp());
        }
        assert!(worst < 5e-7, "{worst}");
    }
}
