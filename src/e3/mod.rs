//! Pure E(3) mathematics, independent of any training or inference framework.

pub mod rotation;
