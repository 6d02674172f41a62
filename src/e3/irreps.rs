//! Irreducible representations of O(3) in e3nn's notation: `"8x0e + 8x0o + 16x1e"`.

use std::{fmt, ops::Range, str::FromStr};

use super::ParseError;

/// An irrep of O(3): degree `l` (dimension 2l + 1) and parity `p` = ±1.
/// Ordered as e3nn orders them: by `l`, then odd before even.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Irrep {
    pub l: u32,
    pub p: i8,
}

impl Irrep {
    pub const fn new(l: u32, p: i8) -> Self {
        assert!(p == 1 || p == -1, "parity must be 1 or -1");
        Self { l, p }
    }

    pub const fn dim(self) -> usize {
        2 * self.l as usize + 1
    }

    /// The irreps in the product of two: |l1 − l2| ..= l1 + l2, parity p1·p2.
    pub fn product(self, other: Irrep) -> impl Iterator<Item = Irrep> {
        let p = self.p * other.p;
        (self.l.abs_diff(other.l)..=self.l + other.l).map(move |l| Irrep::new(l, p))
    }

    /// Whether `self` appears in `a ⊗ b`.
    pub fn in_product(self, a: Irrep, b: Irrep) -> bool {
        self.p == a.p * b.p && a.l.abs_diff(b.l) <= self.l && self.l <= a.l + b.l
    }
}

impl fmt::Display for Irrep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.l, if self.p == 1 { 'e' } else { 'o' })
    }
}

impl FromStr for Irrep {
    type Err = ParseError;

    /// `"1o"`, `"2e"`, or `"3y"` (the spherical harmonics' parity, (−1)^l).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let error = || ParseError { what: "irrep", text: s.to_string(), expected: "expected e.g. 0e, 1o, 2y".into() };
        let (digits, parity) = s.split_at(s.len().checked_sub(1).ok_or_else(error)?);
        let l: u32 = digits.parse().map_err(|_| error())?;
        let p = match parity {
            "e" => 1,
            "o" => -1,
            "y" => {
                if l.is_multiple_of(2) {
                    1
                } else {
                    -1
                }
            }
            _ => return Err(error()),
        };
        Ok(Irrep::new(l, p))
    }
}

/// `mul` copies of one irrep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MulIr {
    pub mul: usize,
    pub ir: Irrep,
}

impl MulIr {
    pub const fn dim(self) -> usize {
        self.mul * self.ir.dim()
    }
}

/// A direct sum of irreps with multiplicities, in order (e3nn's `Irreps`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Irreps(pub Vec<MulIr>);

impl Irreps {
    pub fn new(items: impl IntoIterator<Item = (usize, Irrep)>) -> Self {
        Irreps(items.into_iter().map(|(mul, ir)| MulIr { mul, ir }).collect())
    }

    /// 1x0e + 1x1o + … + 1x(lmax) with parity p^l (e3nn's default p = −1).
    pub fn spherical_harmonics(lmax: u32, p: i8) -> Self {
        Irreps::new((0..=lmax).map(|l| (1, Irrep::new(l, if l % 2 == 0 { 1 } else { p }))))
    }

    pub fn dim(&self) -> usize {
        self.0.iter().map(|m| m.dim()).sum()
    }

    /// Total number of irreps, counting multiplicities.
    pub fn num_irreps(&self) -> usize {
        self.0.iter().map(|m| m.mul).sum()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &MulIr> {
        self.0.iter()
    }

    pub fn lmax(&self) -> Option<u32> {
        self.0.iter().map(|m| m.ir.l).max()
    }

    pub fn contains(&self, ir: Irrep) -> bool {
        self.0.iter().any(|m| m.ir == ir)
    }

    /// The index range of each entry in a feature vector.
    pub fn slices(&self) -> Vec<Range<usize>> {
        let mut start = 0;
        self.0
            .iter()
            .map(|m| {
                let range = start..start + m.dim();
                start = range.end;
                range
            })
            .collect()
    }

    /// Merges neighbouring equal irreps and drops zero multiplicities (no sorting).
    pub fn simplify(&self) -> Self {
        let mut out: Vec<MulIr> = Vec::new();
        for m in &self.0 {
            match out.last_mut() {
                Some(last) if last.ir == m.ir => last.mul += m.mul,
                _ if m.mul > 0 => out.push(*m),
                _ => {}
            }
        }
        Irreps(out)
    }

    /// Stable sort by irrep; `perm[i]` is where entry `i` went (e3nn's `p`).
    pub fn sort(&self) -> (Self, Vec<usize>) {
        let mut order: Vec<usize> = (0..self.0.len()).collect();
        order.sort_by_key(|&i| (self.0[i].ir, i));
        let mut perm = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            perm[old] = new;
        }
        (Irreps(order.iter().map(|&i| self.0[i]).collect()), perm)
    }

    /// Sort, then simplify.
    pub fn regroup(&self) -> Self {
        self.sort().0.simplify()
    }

    pub fn concat(&self, other: &Irreps) -> Self {
        Irreps(self.0.iter().chain(&other.0).copied().collect())
    }
}

impl fmt::Display for Irreps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|m| format!("{}x{}", m.mul, m.ir)).collect();
        f.write_str(&parts.join("+"))
    }
}

impl FromStr for Irreps {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.trim().is_empty() {
            return Ok(Irreps::default());
        }
        s.split('+')
            .map(|term| {
                let term = term.trim();
                match term.split_once('x') {
                    Some((mul, ir)) => {
                        let mul = mul.trim().parse().map_err(|_| format!("cannot read the multiplicity in '{term}'"))?;
                        Ok(MulIr { mul, ir: ir.parse().map_err(|e: ParseError| e.to_string())? })
                    }
                    None => Ok(MulIr { mul: 1, ir: term.parse().map_err(|e: ParseError| e.to_string())? }),
                }
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Irreps)
            .map_err(|expected| ParseError { what: "irreps", text: s.to_string(), expected })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn irreps(s: &str) -> Irreps {
        s.parse().expect("valid irreps")
    }

    #[test]
    fn parses_and_prints_e3nn_notation() {
        let x = irreps("8x0e + 8x0o + 16x1e+16x1o + 8x2e + 1o");
        assert_eq!(x.to_string(), "8x0e+8x0o+16x1e+16x1o+8x2e+1x1o");
        assert_eq!(x.dim(), 8 + 8 + 48 + 48 + 40 + 3);
        assert_eq!(x.num_irreps(), 57);
        assert_eq!(irreps("2y + 3y").to_string(), "1x2e+1x3o");
        assert_eq!(irreps(""), Irreps::default());
        for bad in ["8x", "x0e", "1q", "ax1e", "8x0e +"] {
            assert!(bad.parse::<Irreps>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn simplify_sort_and_regroup_follow_e3nn() {
        assert_eq!(irreps("1e + 1e + 0e").simplify().to_string(), "2x1e+1x0e");
        assert_eq!(irreps("1e + 0e + 1e").simplify().to_string(), "1x1e+1x0e+1x1e");
        assert_eq!(irreps("0x1e + 2x0e").simplify().to_string(), "2x0e");
        // e3nn: Irreps("1e + 0e + 1e + 0o").sort() → 1x0o+1x0e+1x1e+1x1e, p = (2, 1, 3, 0).
        let (sorted, perm) = irreps("1e + 0e + 1e + 0o").sort();
        assert_eq!(sorted.to_string(), "1x0o+1x0e+1x1e+1x1e");
        assert_eq!(perm, vec![2, 1, 3, 0]);
        assert_eq!(irreps("1e + 0e + 1e").regroup().to_string(), "1x0e+2x1e");
    }

    #[test]
    fn products_and_spherical_harmonics() {
        let products: Vec<String> = Irrep::new(1, -1).product(Irrep::new(2, 1)).map(|i| i.to_string()).collect();
        assert_eq!(products, ["1o", "2o", "3o"]);
        assert!(Irrep::new(0, 1).in_product(Irrep::new(1, -1), Irrep::new(1, -1)));
        assert!(!Irrep::new(0, -1).in_product(Irrep::new(1, -1), Irrep::new(1, -1)));
        assert_eq!(Irreps::spherical_harmonics(3, -1).to_string(), "1x0e+1x1o+1x2e+1x3o");
        assert_eq!(irreps("2x0e+1x1o").slices(), vec![0..2, 2..5]);
    }
}
