//! Noise schedules: DDIM (eta = 0), Euler and Euler Ancestral. Written here rather than taken
//! from candle because candle's Euler Ancestral draws its per-step noise from the device RNG,
//! which cannot be seeded on CPU; ours takes that noise from the caller (our seeded RNG).

use candle_core::{Result, Tensor};

use super::spec::{ModelSpec, Prediction, SchedulerKind, TimestepSpacing};

const TRAIN_STEPS: usize = 1000;
// SD's "scaled_linear" betas, shared by every model kind we run.
const BETA_START: f64 = 0.00085;
const BETA_END: f64 = 0.012;

/// The timesteps and update rule of one sampling run.
pub struct Schedule {
    kind: SchedulerKind,
    prediction: Prediction,
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    /// Euler only: sigma per timestep, plus a final 0.
    sigmas: Vec<f64>,
    step_ratio: usize,
    /// Euler with leading spacing starts from sqrt(sigma_max² + 1), as diffusers does.
    leading: bool,
}

pub struct StepOutput {
    pub prev: Tensor,
    /// The model's current estimate of the clean latents (used for previews).
    pub pred_original: Tensor,
}

/// ᾱ_t for t in 0..1000: the share of signal left after t noising steps (training and sampling).
pub(super) fn alphas_cumprod() -> Vec<f64> {
    let (s0, s1) = (BETA_START.sqrt(), BETA_END.sqrt());
    let mut acc = 1.0;
    (0..TRAIN_STEPS)
        .map(|i| {
            let b = s0 + (s1 - s0) * i as f64 / (TRAIN_STEPS - 1) as f64;
            acc *= 1.0 - b * b;
            acc
        })
        .collect()
}

impl Schedule {
    pub fn new(
        kind: SchedulerKind,
        prediction: Prediction,
        spacing: TimestepSpacing,
        steps_offset: usize,
        steps: usize,
    ) -> Self {
        let alphas_cumprod = alphas_cumprod();
        let steps = steps.clamp(1, TRAIN_STEPS);
        let step_ratio = TRAIN_STEPS / steps;
        // As diffusers computes them (numpy rounds half to even). Only Euler's linspace spacing
        // leaves fractions: its sigmas are interpolated there, as diffusers' np.interp does.
        let timesteps: Vec<f64> = match spacing {
            TimestepSpacing::Leading => (0..steps)
                .rev()
                .map(|s| (s * step_ratio + steps_offset).min(TRAIN_STEPS - 1) as f64)
                .collect(),
            TimestepSpacing::Trailing => {
                let r = TRAIN_STEPS as f64 / steps as f64;
                (0..steps)
                    .map(|i| ((TRAIN_STEPS as f64 - i as f64 * r).round_ties_even() - 1.0).max(0.0))
                    .collect()
            }
            TimestepSpacing::Linspace => {
                let last = (TRAIN_STEPS - 1) as f64;
                let gap = if steps > 1 { last / (steps - 1) as f64 } else { 0.0 };
                (0..steps)
                    .map(|i| {
                        // diffusers computes these in f32.
                        let t = (last - i as f64 * gap) as f32 as f64;
                        if kind == SchedulerKind::Ddim {
                            t.round_ties_even()
                        } else {
                            t
                        }
                    })
                    .collect()
            }
        };
        let sigma_at = |t: usize| ((1.0 - alphas_cumprod[t]) / alphas_cumprod[t]).sqrt();
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| {
                let (lo, frac) = (t.floor() as usize, t.fract());
                if frac == 0.0 {
                    sigma_at(lo)
                } else {
                    sigma_at(lo) * (1.0 - frac) + sigma_at(lo + 1) * frac
                }
            })
            .collect();
        sigmas.push(0.0);
        Self {
            kind,
            prediction,
            timesteps,
            alphas_cumprod,
            sigmas,
            step_ratio,
            leading: spacing == TimestepSpacing::Leading,
        }
    }

    /// The schedule a model's own settings give for `steps` steps.
    pub fn for_model(spec: &ModelSpec, steps: usize) -> Self {
        Self::new(
            spec.scheduler,
            spec.prediction,
            spec.spacing,
            spec.steps_offset as usize,
            steps,
        )
    }

    /// Euler's noise levels, one per timestep and a final 0 (unused by DDIM).
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The UNet's timestep at each step (whole numbers but for Euler's linspace spacing).
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// Standard deviation of the initial noise.
    pub fn init_noise_sigma(&self) -> f64 {
        match self.kind {
            SchedulerKind::Ddim => 1.0,
            SchedulerKind::Euler | SchedulerKind::EulerAncestral if self.leading => {
                (self.sigmas[0] * self.sigmas[0] + 1.0).sqrt()
            }
            // Trailing and linspace spacing: the largest sigma itself.
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => self.sigmas[0],
        }
    }

    pub fn scale_model_input(&self, sample: &Tensor, index: usize) -> Result<Tensor> {
        match self.kind {
            SchedulerKind::Ddim => Ok(sample.clone()),
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => {
                let s = self.sigmas[index];
                sample / (s * s + 1.0).sqrt()
            }
        }
    }

    /// Whether step `index` adds fresh noise (so the caller knows to draw it).
    pub fn needs_noise(&self, index: usize) -> bool {
        self.kind == SchedulerKind::EulerAncestral && self.sigmas[index + 1] > 0.0
    }

    /// One denoising step. `noise` (same shape as `sample`, unit normal) is required exactly
    /// when [`Self::needs_noise`] says so.
    pub fn step(
        &self,
        index: usize,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        match self.kind {
            SchedulerKind::Ddim => {
                let t = self.timesteps[index] as usize;
                let prev_t = t.saturating_sub(self.step_ratio);
                let a_t = self.alphas_cumprod[t];
                // set_alpha_to_one = false: the last step lands on alphas_cumprod[0].
                let a_prev = self.alphas_cumprod[prev_t];
                let (x0, eps) = match self.prediction {
                    Prediction::Epsilon => {
                        let x0 = ((sample - (model_output * (1.0 - a_t).sqrt())?)? / a_t.sqrt())?;
                        (x0, model_output.clone())
                    }
                    Prediction::VPrediction => {
                        let x0 = ((sample * a_t.sqrt())? - (model_output * (1.0 - a_t).sqrt())?)?;
                        let eps = ((model_output * a_t.sqrt())? + (sample * (1.0 - a_t).sqrt())?)?;
                        (x0, eps)
                    }
                };
                let prev = ((&x0 * a_prev.sqrt())? + (eps * (1.0 - a_prev).sqrt())?)?;
                Ok(StepOutput {
                    prev,
                    pred_original: x0,
                })
            }
            SchedulerKind::Euler | SchedulerKind::EulerAncestral => {
                let (s_from, s_to) = (self.sigmas[index], self.sigmas[index + 1]);
                let x0 = match self.prediction {
                    Prediction::Epsilon => (sample - (model_output * s_from)?)?,
                    Prediction::VPrediction => {
                        let c = s_from * s_from + 1.0;
                        ((model_output * (-s_from / c.sqrt()))? + (sample / c)?)?
                    }
                };
                // Ancestral: part of the way down by the model, the rest as fresh noise.
                let s_up = if self.kind == SchedulerKind::EulerAncestral {
                    (s_to * s_to * (s_from * s_from - s_to * s_to) / (s_from * s_from)).sqrt()
                } else {
                    0.0
                };
                let s_down = (s_to * s_to - s_up * s_up).sqrt();
                let derivative = ((sample - &x0)? / s_from)?;
                let mut prev = (sample + (derivative * (s_down - s_from))?)?;
                if s_up > 0.0 {
                    let noise = noise
                        .ok_or_else(|| candle_core::Error::Msg("scheduler noise missing".into()))?;
                    prev = (prev + (noise * s_up)?)?;
                }
                Ok(StepOutput {
                    prev,
                    pred_original: x0,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_follow_the_diffusers_spacings() {
        let ddim = Schedule::new(SchedulerKind::Ddim, Prediction::Epsilon, TimestepSpacing::Leading, 1, 4);
        assert_eq!(ddim.timesteps(), &[751.0, 501.0, 251.0, 1.0]);
        let euler = Schedule::new(SchedulerKind::EulerAncestral, Prediction::Epsilon, TimestepSpacing::Trailing, 1, 4);
        assert_eq!(euler.timesteps(), &[999.0, 749.0, 499.0, 249.0]);
        let one = Schedule::new(SchedulerKind::EulerAncestral, Prediction::Epsilon, TimestepSpacing::Trailing, 1, 1);
        assert_eq!(one.timesteps(), &[999.0]);
        assert!(!one.needs_noise(0));
        let plain = Schedule::new(SchedulerKind::Euler, Prediction::Epsilon, TimestepSpacing::Trailing, 1, 4);
        assert_eq!(plain.timesteps(), euler.timesteps());
        assert!(
            (0..3).all(|i| !plain.needs_noise(i)) && euler.needs_noise(0),
            "only the ancestral one draws noise"
        );
        // sigma at t = 999 for SD's betas is about 14.6.
        assert!(
            (euler.init_noise_sigma() - 14.6).abs() < 0.1,
            "{}",
            euler.init_noise_sigma()
        );
    }

    /// Euler with linspace spacing keeps diffusers' fractional timesteps and interpolates the
    /// sigmas between the whole ones; DDIM rounds them.
    #[test]
    fn linspace_spacing_keeps_fractions_for_euler_only() {
        let euler = Schedule::new(SchedulerKind::Euler, Prediction::Epsilon, TimestepSpacing::Linspace, 0, 3);
        assert_eq!(euler.timesteps(), &[999.0, 499.5, 0.0]);
        let s = |t: usize| {
            let a = alphas_cumprod()[t];
            ((1.0 - a) / a).sqrt()
        };
        assert!((euler.sigmas()[1] - (s(499) + s(500)) / 2.0).abs() < 1e-12);
        // Linspace starts from the largest sigma itself, leading from sqrt(sigma² + 1).
        assert_eq!(euler.init_noise_sigma(), s(999));
        let leading = Schedule::new(SchedulerKind::Euler, Prediction::Epsilon, TimestepSpacing::Leading, 1, 4);
        assert_eq!(leading.timesteps(), &[751.0, 501.0, 251.0, 1.0]);
        assert!((leading.init_noise_sigma() - (s(751) * s(751) + 1.0).sqrt()).abs() < 1e-12);
        let ddim = Schedule::new(SchedulerKind::Ddim, Prediction::Epsilon, TimestepSpacing::Linspace, 0, 3);
        assert_eq!(ddim.timesteps(), &[999.0, 500.0, 0.0]);
        // No steps at all is one step, never a division by zero.
        assert_eq!(Schedule::new(SchedulerKind::Ddim, Prediction::Epsilon, TimestepSpacing::Leading, 1, 0).timesteps().len(), 1);
    }

    /// Plain Euler moves the sample along the model's direction to the next sigma and adds no
    /// noise: with eps predicted, x_next = x + (sigma_next - sigma) * eps.
    #[test]
    fn euler_steps_deterministically_to_the_next_sigma() {
        let device = candle_core::Device::Cpu;
        let schedule = Schedule::new(SchedulerKind::Euler, Prediction::Epsilon, TimestepSpacing::Trailing, 1, 2);
        let sample = Tensor::new(&[1.0f32, -2.0, 0.5], &device).unwrap();
        let eps = Tensor::new(&[0.1f32, 0.2, -0.3], &device).unwrap();
        let (s0, s1) = (schedule.sigmas[0], schedule.sigmas[1]);
        let out = schedule.step(0, &eps, &sample, None).unwrap();
        let got: Vec<f32> = out.prev.to_vec1().unwrap();
        let want: Vec<f32> = [1.0f64, -2.0, 0.5]
            .iter()
            .zip([0.1f64, 0.2, -0.3])
            .map(|(x, e)| (x + (s1 - s0) * e) as f32)
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
        }
        // The last step lands on sigma 0: the model's estimate of the clean latents.
        let last = schedule.step(1, &eps, &sample, None).unwrap();
        let x0: Vec<f32> = last.pred_original.to_vec1().unwrap();
        for (p, x) in last.prev.to_vec1::<f32>().unwrap().iter().zip(&x0) {
            assert!((p - x).abs() < 1e-4, "{p} vs {x}");
        }
    }
}
