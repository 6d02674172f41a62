//! Radial functions of e3nn: smooth bases for edge lengths, soft steps and cutoffs,
//! and the second-moment normalisation constants of activations.

use serde::{Deserialize, Serialize};

/// e3nn's `soft_one_hot_linspace` bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    Gaussian,
    Cosine,
    SmoothFinite,
    Fourier,
    Bessel,
}

impl std::str::FromStr for Basis {
    type Err = super::ParseError;

    fn from_str(s: &str) -> Result<Self, super::ParseError> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| super::ParseError {
            what: "radial basis",
            text: s.to_string(),
            expected: "one of gaussian, cosine, smooth_finite, fourier, bessel".into(),
        })
    }
}

/// exp(−1/x) for x > 0, else 0: a step that is smooth at 0.
pub fn soft_unit_step(x: f64) -> f64 {
    if x > 0.0 { (-1.0 / x).exp() } else { 0.0 }
}

/// The gate network's cutoff: 1 below 0.5, (1 − cos(π·2(x−1)))/2 between, 0 from 1 on.
pub fn smooth_cutoff(x: f64) -> f64 {
    let u = 2.0 * (x - 1.0);
    if u > 0.0 {
        0.0
    } else if u < -1.0 {
        1.0
    } else {
        (1.0 - (std::f64::consts::PI * u).cos()) / 2.0
    }
}

/// `number` smooth bumps of x over [start, end] (e3nn's `soft_one_hot_linspace`).
/// With `cutoff`, every basis function vanishes at and beyond both ends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SoftOneHotLinspace {
    pub start: f64,
    pub end: f64,
    pub number: usize,
    pub basis: Basis,
    pub cutoff: bool,
}

impl SoftOneHotLinspace {
    /// Centres of the bumps and the distance between them.
    pub fn centres(&self) -> (Vec<f64>, f64) {
        let points = if self.cutoff { self.number + 2 } else { self.number };
        let step = (self.end - self.start) / (points - 1) as f64;
        let all: Vec<f64> = (0..points).map(|i| self.start + step * i as f64).collect();
        let centres = if self.cutoff { all[1..points - 1].to_vec() } else { all };
        (centres, step)
    }

    pub fn eval(&self, x: f64) -> Vec<f64> {
        let (centres, step) = self.centres();
        let diffs = centres.iter().map(|c| (x - c) / step);
        let pi = std::f64::consts::PI;
        match self.basis {
            Basis::Gaussian => diffs.map(|d| (-d * d).exp() / 1.12).collect(),
            Basis::Cosine => diffs.map(|d| if d > -1.0 && d < 1.0 { (pi / 2.0 * d).cos() } else { 0.0 }).collect(),
            Basis::SmoothFinite => diffs.map(|d| 1.14136 * std::f64::consts::E.powi(2) * soft_unit_step(d + 1.0) * soft_unit_step(1.0 - d)).collect(),
            Basis::Fourier => {
                let t = (x - self.start) / (self.end - self.start);
                let scale = (0.25 + self.number as f64 / 2.0).sqrt();
                if self.cutoff {
                    let inside = if t > 0.0 && t < 1.0 { 1.0 } else { 0.0 };
                    (1..=self.number).map(|i| (pi * i as f64 * t).sin() / scale * inside).collect()
                } else {
                    (0..self.number).map(|i| (pi * i as f64 * t).cos() / scale).collect()
                }
            }
            Basis::Bessel => {
                let r = x - self.start;
                let c = self.end - self.start;
                let inside = if !self.cutoff || (r / c < 1.0 && r > 0.0) { 1.0 } else { 0.0 };
                (1..=self.number).map(|n| (2.0 / c).sqrt() * (n as f64 * pi * r / c).sin() / r * inside).collect()
            }
        }
    }
}

/// Activations e3nn normalises to unit second moment under a standard Gaussian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Silu,
    Tanh,
    Sigmoid,
    Gelu,
    Relu,
    Abs,
}

impl Activation {
    /// e3nn's `normalize2mom` constant. e3nn estimates it by Monte-Carlo (10⁶ samples,
    /// seed 0); these are its values, so imported weights reproduce e3nn exactly.
    pub fn second_moment_constant(self) -> f64 {
        match self {
            Activation::Silu => 1.6791767923989418,
            Activation::Tanh => 1.5937334472592695,
            Activation::Sigmoid => 1.8467055342154763,
            Activation::Gelu => 1.5360642850770578,
            Activation::Relu => 1.4163393446331365,
            Activation::Abs => 1.001110600838467,
        }
    }

    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
            Activation::Relu => x.max(0.0),
            Activation::Abs => x.abs(),
        }
    }

    /// cst · act(x), the normalised activation.
    pub fn apply_normalized(self, x: f64) -> f64 {
        self.second_moment_constant() * self.apply(x)
    }
}
