//! Pure E(3) mathematics, independent of any training or inference framework:
//! irreps, Wigner 3j symbols, spherical harmonics, radial bases, rotations.

pub mod irreps;
pub mod radial;
pub mod rotation;
pub mod spherical_harmonics;
pub mod wigner;

pub use irreps::{Irrep, Irreps, MulIr};
pub use spherical_harmonics::{Normalization, SphericalHarmonics};
pub use wigner::wigner_3j;
