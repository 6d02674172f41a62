//! Pure E(3) mathematics, independent of any training or inference framework:
//! irreps, Wigner 3j symbols, spherical harmonics, radial bases, rotations.

pub mod irreps;
pub mod radial;
pub mod rotation;
pub mod spherical_harmonics;
pub mod wigner;

pub use irreps::{Irrep, Irreps, MulIr};

/// Text that does not name what it should (an irrep, irreps, a radial basis).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {what} '{text}': {expected}")]
pub struct ParseError {
    pub what: &'static str,
    pub text: String,
    pub expected: String,
}
pub use spherical_harmonics::{Normalization, SphericalHarmonics};
pub use wigner::wigner_3j;
