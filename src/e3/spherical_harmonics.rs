//! Real spherical harmonics in e3nn's conventions, as polynomials of (x, y, z).
//!
//! Built by the recurrence Y^{l+1}_i = c_l Σ_jk C_ijk Y^l_j x_k with the Wigner 3j
//! symbols C of [`super::wigner_3j`], which is how e3nn characterises them; so they
//! are equivariant in exactly e3nn's basis (l = 1 is √3·(x, y, z)) for every l.
//! The recurrence matrices are also what the models evaluate in their graphs.

use ndarray::Array2;

use super::wigner::wigner_3j;

/// How each degree l is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// |Y^l(x̂)|² = 2l + 1.
    Component,
    /// |Y^l(x̂)| = 1.
    Norm,
    /// ∫ Y^l_m(x̂)² dx̂ = 1 over the sphere.
    Integral,
}

impl Normalization {
    /// Factor from component normalization to this one, for degree l.
    pub fn factor(self, l: u32) -> f64 {
        match self {
            Normalization::Component => 1.0,
            Normalization::Norm => 1.0 / f64::from(2 * l + 1).sqrt(),
            Normalization::Integral => 1.0 / (4.0 * std::f64::consts::PI).sqrt(),
        }
    }
}

/// C_ijk of Wigner 3j (l, 1) → l+1 laid out as a matrix [(2l+1)·3, 2l+3]
/// (row j·3 + k for Y^l_j x_k), before normalisation.
fn coupling_matrix(l: u32) -> Array2<f64> {
    let c = wigner_3j(l, 1, l + 1);
    let (n_in, n_out) = (2 * l as usize + 1, 2 * l as usize + 3);
    Array2::from_shape_fn((n_in * 3, n_out), |(row, i)| c[[row / 3, row % 3, i]])
}

fn apply_recurrence(y: &[f64], x: [f64; 3], m: &Array2<f64>) -> Vec<f64> {
    let mut out = vec![0.0; m.ncols()];
    for (j, yj) in y.iter().enumerate() {
        for (k, xk) in x.iter().enumerate() {
            let factor = yj * xk;
            for (o, mi) in out.iter_mut().zip(m.row(j * 3 + k)) {
                *o += factor * mi;
            }
        }
    }
    out
}

/// The harmonics of degrees 0..=lmax, concatenated (length (lmax+1)²), for many vectors.
#[derive(Debug, Clone)]
pub struct SphericalHarmonics {
    lmax: u32,
    matrices: Vec<Array2<f64>>,
}

impl SphericalHarmonics {
    pub fn new(lmax: u32) -> Self {
        // The norm of an equivariant polynomial is the same everywhere on the sphere:
        // measure each new degree at one point and rescale it to 2l + 3.
        let probe = [0.0, 0.0, 1.0];
        let mut matrices = Vec::new();
        let mut y = vec![1.0];
        for l in 0..lmax {
            let m = coupling_matrix(l);
            let next = apply_recurrence(&y, probe, &m);
            let scale = f64::from(2 * l + 3).sqrt() / next.iter().map(|v| v * v).sum::<f64>().sqrt();
            y = next.iter().map(|v| v * scale).collect();
            matrices.push(m * scale);
        }
        Self { lmax, matrices }
    }

    pub fn lmax(&self) -> u32 {
        self.lmax
    }

    /// M_l of shape [(2l+1)·3, 2l+3] with Y^{l+1} = vec(Y^l ⊗ x) · M_l in component
    /// normalization, for l = 0 .. lmax−1.
    pub fn matrices(&self) -> &[Array2<f64>] {
        &self.matrices
    }

    /// Y^0(x) … Y^lmax(x). With `normalize`, x is first scaled to unit length
    /// (the zero vector stays zero, as in e3nn).
    pub fn eval(&self, x: [f64; 3], normalize: bool, normalization: Normalization) -> Vec<f64> {
        let x = if normalize {
            let r = x.iter().map(|v| v * v).sum::<f64>().sqrt();
            if r > 0.0 { x.map(|v| v / r) } else { [0.0; 3] }
        } else {
            x
        };
        let mut out = Vec::with_capacity(((self.lmax + 1) * (self.lmax + 1)) as usize);
        let mut y = vec![1.0];
        for l in 0..=self.lmax {
            out.extend(y.iter().map(|v| v * normalization.factor(l)));
            if l < self.lmax {
                y = apply_recurrence(&y, x, &self.matrices[l as usize]);
            }
        }
        out
    }
}
