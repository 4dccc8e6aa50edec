//! The arithmetic of tensor formats: where a logical NCHW activation element or
//! an OIHW weight element is stored in each layout and weight format, on types
//! (shapes with symbolic dims) and on data (pure byte movement, every element type).
//!
//! Activations (logical `[N, C, H, W]`, block `P`):
//!
//! | layout | stored shape | element `(n, c, h, w)` at |
//! |---|---|---|
//! | `nchw` | `[N, C, H, W]` | `[n, c, h, w]` |
//! | `nhwc` | `[N, H, W, C]` | `[n, h, w, c]` |
//! | `nchw88`, `nchw44`, `nchw44_dot`, `nchw4`, `nchw32`, `nchw64` | `[N, C/P, H, W, P]` | `[n, c/P, h, w, c%P]` |
//! | `chwn4` | `[C/4, H, W, N, 4]` | `[c/4, h, w, n, c%4]` |
//! | `nhwcd4` | `[N, H, C/4, W, 4]` | `[n, h, c/4, w, c%4]` |
//!
//! Weights (logical `[OC, IC/G, FH, FW]`, `G` groups, `OCPG = OC/G`, `ICPG = IC/G`)
//! are described by [`WeightFormat`].

use strata_ir::{Dim, Layout, TensorData};

/// The stored position of the channel-block axis and of the in-block axis of a
/// blocked activation layout (`None` for `nchw` and `nhwc`).
pub fn channel_axes(l: Layout) -> Option<(usize, usize)> {
    match l {
        Layout::Nchw | Layout::Nhwc => None,
        Layout::Chwn4 => Some((0, 4)),
        Layout::Nhwcd4 => Some((2, 4)),
        _ => Some((1, 4)),
    }
}

/// The stored positions of the H and W axes of an activation layout.
pub fn spatial_axes(l: Layout) -> (usize, usize) {
    match l {
        Layout::Nhwc => (1, 2),
        Layout::Chwn4 => (1, 2),
        Layout::Nhwcd4 => (1, 3),
        _ => (2, 3),
    }
}

/// The stored shape of a logical `[N, C, H, W]` activation in layout `l`; the
/// channels must be fixed and divisible by the block.
pub fn pack_dims(l: Layout, [n, c, h, w]: [Dim; 4]) -> Result<Vec<Dim>, String> {
    let Some(p) = l.block() else {
        return Ok(match l {
            Layout::Nhwc => vec![n, h, w, c],
            _ => vec![n, c, h, w],
        });
    };
    let cf = c.fixed().ok_or_else(|| format!("the channels must have a fixed size to use #{l}"))?;
    if cf % p != 0 {
        return Err(format!(
            "the {cf} channels are not divisible by the block {p} of #{l} (pad them first, e.g. with `padding-channel`)"
        ));
    }
    let (cb, b) = (Dim::Fixed(cf / p), Dim::Fixed(p));
    Ok(match l {
        Layout::Chwn4 => vec![cb, h, w, n, b],
        Layout::Nhwcd4 => vec![n, h, cb, w, b],
        _ => vec![n, cb, h, w, b],
    })
}

/// The logical `[N, C, H, W]` of a tensor stored as `shape` in layout `l`.
pub fn unpack_dims(l: Layout, shape: &[Dim]) -> Result<[Dim; 4], String> {
    let rank = if l.block().is_some() { 5 } else { 4 };
    if shape.len() != rank {
        return Err(format!("a #{l} activation must have rank {rank}, has rank {}", shape.len()));
    }
    let s = shape;
    let Some(p) = l.block() else {
        return Ok(match l {
            Layout::Nhwc => [s[0], s[3], s[1], s[2]],
            _ => [s[0], s[1], s[2], s[3]],
        });
    };
    if s[4] != Dim::Fixed(p) {
        return Err(format!("the last (block) dim of a #{l} activation must be {p}"));
    }
    let (ci, _) = channel_axes(l).expect("invariant: blocked layout");
    let cb = s[ci].fixed().ok_or_else(|| format!("the channel-block dim {ci} of a #{l} activation must be fixed"))?;
    let c = Dim::Fixed(cb.checked_mul(p).ok_or("the channel count overflows")?);
    Ok(match l {
        Layout::Chwn4 => [s[3], c, s[1], s[2]],
        Layout::Nhwcd4 => [s[0], c, s[1], s[3]],
        _ => [s[0], c, s[2], s[3]],
    })
}

/// The stored multi-index of logical element `(n, c, h, w)` in layout `l`.
fn stored_index(l: Layout, [n, c, h, w]: [usize; 4]) -> Vec<usize> {
    let Some(p) = l.block() else {
        return match l {
            Layout::Nhwc => vec![n, h, w, c],
            _ => vec![n, c, h, w],
        };
    };
    let p = p as usize;
    match l {
        Layout::Chwn4 => vec![c / p, h, w, n, c % p],
        Layout::Nhwcd4 => vec![n, h, c / p, w, c % p],
        _ => vec![n, c / p, h, w, c % p],
    }
}

fn sizes(dims: &[Dim]) -> Result<Vec<usize>, String> {
    dims.iter()
        .map(|d| d.fixed().and_then(|v| usize::try_from(v).ok()).ok_or_else(|| "a size is not fixed".to_string()))
        .collect()
}

fn linear(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Moves bytes: element `i` (row-major over `logical`) of the logical tensor is
/// element `to_stored(index)` of the stored tensor. `pack` reads logical and
/// writes stored; otherwise the reverse.
fn permute(
    input: &TensorData,
    logical: &[usize],
    stored: &[usize],
    pack: bool,
    to_stored: impl Fn(&[usize]) -> Vec<usize>,
) -> Result<TensorData, String> {
    let want_in = if pack { logical } else { stored };
    if input.shape() != want_in {
        return Err(format!("expected data of shape {want_in:?}, got {:?}", input.shape()));
    }
    let size = input.elem().size_bytes();
    let src = input.bytes();
    let mut out = vec![0u8; src.len()];
    let mut i = 0usize;
    crate::graph::common::for_each_index(logical, |idx| {
        let j = linear(&to_stored(idx), stored);
        let (from, to) = if pack { (i, j) } else { (j, i) };
        out[to * size..(to + 1) * size].copy_from_slice(&src[from * size..(from + 1) * size]);
        i += 1;
    });
    let shape = if pack { stored } else { logical };
    TensorData::from_bytes(input.elem(), shape.to_vec(), out.into()).map_err(|e| e.to_string())
}

/// Packs a logical NCHW activation into layout `l`.
pub fn pack(l: Layout, x: &TensorData) -> Result<TensorData, String> {
    let [n, c, h, w]: [usize; 4] =
        x.shape().try_into().map_err(|_| format!("expected a rank-4 NCHW tensor, got shape {:?}", x.shape()))?;
    let logical = [n, c, h, w];
    let stored = sizes(&pack_dims(l, logical.map(|d| Dim::Fixed(d as u64)))?)?;
    permute(x, &logical, &stored, true, |i| stored_index(l, [i[0], i[1], i[2], i[3]]))
}

/// Unpacks an activation stored in layout `l` into logical NCHW.
pub fn unpack(l: Layout, x: &TensorData) -> Result<TensorData, String> {
    let dims: Vec<Dim> = x.shape().iter().map(|&d| Dim::Fixed(d as u64)).collect();
    let logical = sizes(&unpack_dims(l, &dims)?)?;
    permute(x, &logical, x.shape(), false, |i| stored_index(l, [i[0], i[1], i[2], i[3]]))
}

/// How an OIHW convolution weight is packed for a blocked convolution
/// (MegEngine's weight formats; `P` is the block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// `[OC/P, IC/P, FH, FW, P(ic), P(oc)]` (group 1).
    Dense,
    /// `[OC/P, IC/P, FH, FW, P(oc), P(ic)]`: int8 dot-product kernels (group 1).
    Dot,
    /// `[G, OCPG/P, ICPG/P, FH, FW, P(ic), P(oc)]`.
    Group,
    /// `[G, OCPG/P, ICPG/P, FH, FW, P(oc), P(ic)]`.
    GroupDot,
    /// `[G/P, 1, 1, FH, FW, P]` for `ICPG = OCPG = 1`.
    ChannelWise,
    /// `[OC/P, FH, FW, IC, P]`: the hybrid first layer (plain NCHW input, blocked output; group 1).
    Hybrid,
    /// `[OC, IC/4, FH, FW, 4(ic)]`: MegEngine's NCHW4 filter (group 1, block 4).
    Nchw4,
    /// `[OC, IC/32, FH, FW, 32(ic)]`: MegEngine's NCHW32 filter (group 1, block 32).
    Nchw32,
    /// `[IC/4, FH, FW, OC, 4(ic)]`: MegEngine's CHWN4 filter (group 1, block 4).
    Chwn4,
    /// `[G, OCPG, ICPG/4, FH, FW, 4(ic)]`: MegEngine's NCHW4 group filter (block 4, `OCPG % 4 == 0`).
    Nchw4Group,
    /// `[G/4, 1, 1, FH, FW, 4]` for `ICPG = OCPG = 1` in `#nchw4`: the channel-wise
    /// NCHW4 filter (the `channelwise` arrangement with block 4; strata's choice,
    /// the reference does not give MegEngine's).
    Nchw4ChannelWise,
    /// `[G, OCPG, ICPG/32, FH, FW, 32(ic)]`: strata's NCHW32 group filter (MegEngine
    /// keeps group convs in NCHW4); `ICPG % 32 == 0`, `OCPG % 32 == 0`.
    Nchw32Group,
    /// `[G, ICPG/4, FH, FW, OCPG, 4(ic)]`: strata's CHWN4 group filter (MegEngine
    /// keeps group convs in NCHW4); `ICPG % 4 == 0`, `OCPG % 4 == 0`.
    Chwn4Group,
    /// `[OC/4, FH, FW, IC, 4(oc)]`: strata's NHWCD4 dense filter (group 1, block 4;
    /// MegEngine's image filter layouts are not mirrored).
    Nhwcd4,
}

const FORMATS: &[(&str, WeightFormat)] = &[
    ("dense", WeightFormat::Dense),
    ("dot", WeightFormat::Dot),
    ("group", WeightFormat::Group),
    ("group_dot", WeightFormat::GroupDot),
    ("channelwise", WeightFormat::ChannelWise),
    ("hybrid", WeightFormat::Hybrid),
    ("nchw4", WeightFormat::Nchw4),
    ("nchw32", WeightFormat::Nchw32),
    ("chwn4", WeightFormat::Chwn4),
    ("nchw4_group", WeightFormat::Nchw4Group),
    ("nchw4_channelwise", WeightFormat::Nchw4ChannelWise),
    ("nchw32_group", WeightFormat::Nchw32Group),
    ("chwn4_group", WeightFormat::Chwn4Group),
    ("nhwcd4", WeightFormat::Nhwcd4),
];

impl WeightFormat {
    /// The format named `name`, or an error listing every one.
    pub fn parse(name: &str) -> Result<WeightFormat, String> {
        FORMATS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f).ok_or_else(|| {
            let all: Vec<_> = FORMATS.iter().map(|(n, _)| *n).collect();
            format!("unknown weight format `{name}` (expected one of {})", all.join(", "))
        })
    }

    /// The name in IR.
    pub fn name(self) -> &'static str {
        FORMATS.iter().find(|&&(_, f)| f == self).map(|&(n, _)| n).expect("invariant: every format is listed")
    }

    /// The shape text used in error messages.
    fn pattern(self) -> &'static str {
        match self {
            WeightFormat::Dense => "[OC/P, IC/P, FH, FW, P, P]",
            WeightFormat::Dot => "[OC/P, IC/P, FH, FW, P, P]",
            WeightFormat::Group | WeightFormat::GroupDot => "[G, OCPG/P, ICPG/P, FH, FW, P, P]",
            WeightFormat::ChannelWise | WeightFormat::Nchw4ChannelWise => "[G/P, 1, 1, FH, FW, P]",
            WeightFormat::Hybrid | WeightFormat::Nhwcd4 => "[OC/P, FH, FW, IC, P]",
            WeightFormat::Nchw4 | WeightFormat::Nchw32 => "[OC, IC/P, FH, FW, P]",
            WeightFormat::Chwn4 => "[IC/P, FH, FW, OC, P]",
            WeightFormat::Nchw4Group | WeightFormat::Nchw32Group => "[G, OCPG, ICPG/P, FH, FW, P]",
            WeightFormat::Chwn4Group => "[G, ICPG/P, FH, FW, OCPG, P]",
        }
    }

    /// The block this format requires (`None`: any block).
    pub fn required_block(self) -> Option<u64> {
        match self {
            WeightFormat::Dot | WeightFormat::GroupDot | WeightFormat::Nchw4 | WeightFormat::Chwn4 => Some(4),
            WeightFormat::Nchw4Group
            | WeightFormat::Nchw4ChannelWise
            | WeightFormat::Chwn4Group
            | WeightFormat::Nhwcd4 => Some(4),
            WeightFormat::Nchw32 | WeightFormat::Nchw32Group => Some(32),
            _ => None,
        }
    }

    fn check_group(self, group: u64) -> Result<(), String> {
        match self {
            WeightFormat::Dense
            | WeightFormat::Dot
            | WeightFormat::Hybrid
            | WeightFormat::Nchw4
            | WeightFormat::Nchw32
            | WeightFormat::Chwn4
            | WeightFormat::Nhwcd4
                if group != 1 =>
            {
                Err(format!("weight format `{}` needs group = 1, has group = {group}", self.name()))
            }
            _ if group == 0 => Err("group must be at least 1".into()),
            _ => Ok(()),
        }
    }

    /// The packed shape of an OIHW weight `[oc, icpg, fh, fw]` with `group` groups and block `p`.
    pub fn pack_dims(self, p: u64, group: u64, [oc, icpg, fh, fw]: [u64; 4]) -> Result<Vec<u64>, String> {
        self.check_group(group)?;
        let name = self.name();
        let div = |v: u64, what: &str| {
            if v.is_multiple_of(p) {
                Ok(v / p)
            } else {
                Err(format!("weight format `{name}` with block {p}: {what} = {v} is not divisible by {p}"))
            }
        };
        if oc % group != 0 {
            return Err(format!("the {oc} output channels are not divisible by group = {group}"));
        }
        let ocpg = oc / group;
        Ok(match self {
            WeightFormat::Dense | WeightFormat::Dot => vec![div(oc, "OC")?, div(icpg, "IC")?, fh, fw, p, p],
            WeightFormat::Group | WeightFormat::GroupDot => {
                vec![group, div(ocpg, "OC per group")?, div(icpg, "IC per group")?, fh, fw, p, p]
            }
            WeightFormat::ChannelWise | WeightFormat::Nchw4ChannelWise => {
                if icpg != 1 || ocpg != 1 {
                    return Err(format!(
                        "weight format `{name}` needs one input and one output channel per group, has {icpg} and {ocpg}"
                    ));
                }
                vec![div(group, "G")?, 1, 1, fh, fw, p]
            }
            WeightFormat::Hybrid => vec![div(oc, "OC")?, fh, fw, icpg, p],
            WeightFormat::Nhwcd4 => {
                div(icpg, "IC")?;
                vec![div(oc, "OC")?, fh, fw, icpg, p]
            }
            WeightFormat::Nchw4 | WeightFormat::Nchw32 => vec![oc, div(icpg, "IC")?, fh, fw, p],
            WeightFormat::Chwn4 => vec![div(icpg, "IC")?, fh, fw, oc, p],
            WeightFormat::Nchw4Group | WeightFormat::Nchw32Group => {
                div(ocpg, "OC per group")?;
                vec![group, ocpg, div(icpg, "IC per group")?, fh, fw, p]
            }
            WeightFormat::Chwn4Group => {
                div(ocpg, "OC per group")?;
                vec![group, div(icpg, "IC per group")?, fh, fw, ocpg, p]
            }
        })
    }

    /// The logical OIHW shape `[OC, IC/G, FH, FW]` of a weight packed as `shape`.
    pub fn unpack_dims(self, p: u64, group: u64, shape: &[Dim]) -> Result<[u64; 4], String> {
        self.check_group(group)?;
        let bad = || {
            let dims: Vec<String> = shape.iter().map(|d| d.fixed().map_or("?".into(), |v| v.to_string())).collect();
            format!(
                "a weight in format `{}` with block {p} must be {}, has shape [{}]",
                self.name(),
                self.pattern(),
                dims.join(", ")
            )
        };
        let s: Vec<u64> = shape.iter().map(|d| d.fixed()).collect::<Option<_>>().ok_or_else(bad)?;
        let mul = |a: u64, b: u64| a.checked_mul(b).ok_or_else(bad);
        let dims = match self {
            WeightFormat::Dense | WeightFormat::Dot if s.len() == 6 && s[4] == p && s[5] == p => {
                [mul(s[0], p)?, mul(s[1], p)?, s[2], s[3]]
            }
            WeightFormat::Group | WeightFormat::GroupDot if s.len() == 7 && s[5] == p && s[6] == p && s[0] == group => {
                [mul(mul(s[1], p)?, group)?, mul(s[2], p)?, s[3], s[4]]
            }
            WeightFormat::ChannelWise | WeightFormat::Nchw4ChannelWise
                if s.len() == 6 && s[1] == 1 && s[2] == 1 && s[5] == p =>
            {
                let g = mul(s[0], p)?;
                if g != group {
                    return Err(format!("a `{}` weight of {g} channels needs group = {g}, has {group}", self.name()));
                }
                [g, 1, s[3], s[4]]
            }
            WeightFormat::Hybrid if s.len() == 5 && s[4] == p => [mul(s[0], p)?, s[3], s[1], s[2]],
            WeightFormat::Nhwcd4 if s.len() == 5 && s[4] == p && s[3].is_multiple_of(p) => {
                [mul(s[0], p)?, s[3], s[1], s[2]]
            }
            WeightFormat::Nchw4 | WeightFormat::Nchw32 if s.len() == 5 && s[4] == p => {
                [s[0], mul(s[1], p)?, s[2], s[3]]
            }
            WeightFormat::Chwn4 if s.len() == 5 && s[4] == p => [s[3], mul(s[0], p)?, s[1], s[2]],
            WeightFormat::Nchw4Group | WeightFormat::Nchw32Group
                if s.len() == 6 && s[5] == p && s[0] == group && s[1].is_multiple_of(p) =>
            {
                [mul(s[1], group)?, mul(s[2], p)?, s[3], s[4]]
            }
            WeightFormat::Chwn4Group if s.len() == 6 && s[5] == p && s[0] == group && s[4].is_multiple_of(p) => {
                [mul(s[4], group)?, mul(s[1], p)?, s[2], s[3]]
            }
            _ => return Err(bad()),
        };
        Ok(dims)
    }

    /// The packed multi-index of logical weight element `(oc, ic, kh, kw)` (`ic` within its group).
    fn index(self, p: usize, ocpg: usize, [oc, ic, kh, kw]: [usize; 4]) -> Vec<usize> {
        match self {
            WeightFormat::Dense => vec![oc / p, ic / p, kh, kw, ic % p, oc % p],
            WeightFormat::Dot => vec![oc / p, ic / p, kh, kw, oc % p, ic % p],
            WeightFormat::Group | WeightFormat::GroupDot => {
                let (g, o) = (oc / ocpg, oc % ocpg);
                let (a, b) = if self == WeightFormat::Group { (ic % p, o % p) } else { (o % p, ic % p) };
                vec![g, o / p, ic / p, kh, kw, a, b]
            }
            WeightFormat::ChannelWise | WeightFormat::Nchw4ChannelWise => vec![oc / p, 0, 0, kh, kw, oc % p],
            WeightFormat::Hybrid | WeightFormat::Nhwcd4 => vec![oc / p, kh, kw, ic, oc % p],
            WeightFormat::Nchw4 | WeightFormat::Nchw32 => vec![oc, ic / p, kh, kw, ic % p],
            WeightFormat::Chwn4 => vec![ic / p, kh, kw, oc, ic % p],
            WeightFormat::Nchw4Group | WeightFormat::Nchw32Group => {
                vec![oc / ocpg, oc % ocpg, ic / p, kh, kw, ic % p]
            }
            WeightFormat::Chwn4Group => vec![oc / ocpg, ic / p, kh, kw, oc % ocpg, ic % p],
        }
    }

    /// Packs an OIHW weight.
    pub fn pack(self, p: u64, group: u64, w: &TensorData) -> Result<TensorData, String> {
        let logical: [usize; 4] =
            w.shape().try_into().map_err(|_| format!("expected a rank-4 OIHW weight, got shape {:?}", w.shape()))?;
        let stored = self.pack_dims(p, group, logical.map(|d| d as u64))?;
        let stored: Vec<usize> = stored.iter().map(|&d| d as usize).collect();
        let ocpg = logical[0] / group as usize;
        permute(w, &logical, &stored, true, |i| self.index(p as usize, ocpg, [i[0], i[1], i[2], i[3]]))
    }

    /// Unpacks a packed weight into OIHW.
    pub fn unpack(self, p: u64, group: u64, w: &TensorData) -> Result<TensorData, String> {
        let dims: Vec<Dim> = w.shape().iter().map(|&d| Dim::Fixed(d as u64)).collect();
        let logical = self.unpack_dims(p, group, &dims)?.map(|d| d as usize);
        let ocpg = logical[0] / group as usize;
        permute(w, &logical, w.shape(), false, |i| self.index(p as usize, ocpg, [i[0], i[1], i[2], i[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> TensorData {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
        TensorData::from_f32(shape.to_vec(), &v)
    }

    #[test]
    fn activation_round_trips_and_positions() {
        let x = iota(&[2, 64, 3, 2]);
        for l in Layout::ALL {
            let packed = pack(l, &x).unwrap();
            assert_eq!(unpack(l, &packed).unwrap(), x, "{l}");
        }
        // NCHW44: element (n=1, c=5, h=2, w=1) sits at [1, 1, 2, 1, 1].
        let p = pack(Layout::Nchw44, &x).unwrap();
        let lin = linear(&[1, 1, 2, 1, 1], p.shape());
        assert_eq!(p.get_f64(lin), (((64 + 5) * 3 + 2) * 2 + 1) as f64);
        assert!(pack(Layout::Nchw88, &iota(&[1, 6, 1, 1])).unwrap_err().contains("not divisible by the block 8"));
    }

    #[test]
    fn weight_round_trips_and_shapes() {
        let cases = [
            (WeightFormat::Dense, 1, [8, 16, 3, 3], vec![1, 2, 3, 3, 8, 8]),
            (WeightFormat::Dot, 1, [8, 16, 3, 3], vec![1, 2, 3, 3, 8, 8]),
            (WeightFormat::Group, 2, [16, 8, 1, 1], vec![2, 1, 1, 1, 1, 8, 8]),
            (WeightFormat::GroupDot, 2, [16, 8, 1, 1], vec![2, 1, 1, 1, 1, 8, 8]),
            (WeightFormat::ChannelWise, 16, [16, 1, 3, 3], vec![2, 1, 1, 3, 3, 8]),
            (WeightFormat::Hybrid, 1, [8, 3, 3, 3], vec![1, 3, 3, 3, 8]),
        ];
        for (f, g, logical, packed) in cases {
            let shape: Vec<usize> = logical.iter().map(|&d| d as usize).collect();
            let w = iota(&shape);
            let p = f.pack(8, g, &w).unwrap();
            assert_eq!(p.shape(), packed.iter().map(|&d| d as usize).collect::<Vec<_>>().as_slice(), "{f:?}");
            assert_eq!(f.unpack(8, g, &p).unwrap(), w, "{f:?}");
        }
        // Dense: w[oc=9, ic=2, 0, 0] of a [16, 8, 1, 1] weight sits at [1, 0, 0, 0, 2, 1].
        let w = iota(&[16, 8, 1, 1]);
        let p = WeightFormat::Dense.pack(8, 1, &w).unwrap();
        assert_eq!(p.get_f64(linear(&[1, 0, 0, 0, 2, 1], p.shape())), (9 * 8 + 2) as f64);
        let e = WeightFormat::Dense.pack_dims(8, 1, [6, 16, 3, 3]).unwrap_err();
        assert!(e.contains("OC = 6 is not divisible by 8"), "{e}");
        let e = WeightFormat::Hybrid.unpack_dims(8, 1, &[Dim::Fixed(1), Dim::Fixed(3)]).unwrap_err();
        assert!(e.contains("[OC/P, FH, FW, IC, P]"), "{e}");
    }

    /// The value of `w[oc, ic, kh, kw]` in an iota weight of logical shape `l`.
    fn at(l: [usize; 4], [oc, ic, kh, kw]: [usize; 4]) -> f64 {
        (((oc * l[1] + ic) * l[2] + kh) * l[3] + kw) as f64
    }

    #[test]
    fn gpu_int8_weight_formats() {
        // NCHW4: [OC, IC/4, FH, FW, 4]; w[oc=5, ic=6, kh=1, kw=2] of [6, 8, 3, 3] at [5, 1, 1, 2, 2].
        let l = [6, 8, 3, 3];
        let w = iota(&l);
        let p = WeightFormat::Nchw4.pack(4, 1, &w).unwrap();
        assert_eq!(p.shape(), &[6, 2, 3, 3, 4]);
        assert_eq!(p.get_f64(linear(&[5, 1, 1, 2, 2], p.shape())), at(l, [5, 6, 1, 2]));
        assert_eq!(WeightFormat::Nchw4.unpack(4, 1, &p).unwrap(), w);
        // NCHW32: [OC, IC/32, FH, FW, 32]; w[oc=2, ic=45, 0, 1] of [3, 64, 1, 2] at [2, 1, 0, 1, 13].
        let l = [3, 64, 1, 2];
        let w = iota(&l);
        let p = WeightFormat::Nchw32.pack(32, 1, &w).unwrap();
        assert_eq!(p.shape(), &[3, 2, 1, 2, 32]);
        assert_eq!(p.get_f64(linear(&[2, 1, 0, 1, 13], p.shape())), at(l, [2, 45, 0, 1]));
        assert_eq!(WeightFormat::Nchw32.unpack(32, 1, &p).unwrap(), w);
        // CHWN4: [IC/4, FH, FW, OC, 4]; w[oc=3, ic=7, kh=2, kw=0] of [5, 8, 3, 2] at [1, 2, 0, 3, 3].
        let l = [5, 8, 3, 2];
        let w = iota(&l);
        let p = WeightFormat::Chwn4.pack(4, 1, &w).unwrap();
        assert_eq!(p.shape(), &[2, 3, 2, 5, 4]);
        assert_eq!(p.get_f64(linear(&[1, 2, 0, 3, 3], p.shape())), at(l, [3, 7, 2, 0]));
        assert_eq!(WeightFormat::Chwn4.unpack(4, 1, &p).unwrap(), w);
        // NCHW4 group: [G, OCPG, ICPG/4, FH, FW, 4]; G = 2, OC = 8, ICPG = 8:
        // w[oc=6 (g 1, o 2), ic=5, kh=0, kw=1] of [8, 8, 1, 2] at [1, 2, 1, 0, 1, 1].
        let l = [8, 8, 1, 2];
        let w = iota(&l);
        let p = WeightFormat::Nchw4Group.pack(4, 2, &w).unwrap();
        assert_eq!(p.shape(), &[2, 4, 2, 1, 2, 4]);
        assert_eq!(p.get_f64(linear(&[1, 2, 1, 0, 1, 1], p.shape())), at(l, [6, 5, 0, 1]));
        assert_eq!(WeightFormat::Nchw4Group.unpack(4, 2, &p).unwrap(), w);
        // NCHW4 channel-wise: [G/4, 1, 1, FH, FW, 4]; w[oc=6, 0, kh=1, kw=2] of [8, 1, 3, 3] at [1, 0, 0, 1, 2, 2].
        let l = [8, 1, 3, 3];
        let w = iota(&l);
        let p = WeightFormat::Nchw4ChannelWise.pack(4, 8, &w).unwrap();
        assert_eq!(p.shape(), &[2, 1, 1, 3, 3, 4]);
        assert_eq!(p.get_f64(linear(&[1, 0, 0, 1, 2, 2], p.shape())), at(l, [6, 0, 1, 2]));
        assert_eq!(WeightFormat::Nchw4ChannelWise.unpack(4, 8, &p).unwrap(), w);
        // NCHW32 group: [G, OCPG, ICPG/32, FH, FW, 32]; G = 2, OCPG = 32, ICPG = 64:
        // w[oc=40 (g 1, o 8), ic=37, 0, 0] of [64, 64, 1, 1] at [1, 8, 1, 0, 0, 5].
        let l = [64, 64, 1, 1];
        let w = iota(&l);
        let p = WeightFormat::Nchw32Group.pack(32, 2, &w).unwrap();
        assert_eq!(p.shape(), &[2, 32, 2, 1, 1, 32]);
        assert_eq!(p.get_f64(linear(&[1, 8, 1, 0, 0, 5], p.shape())), at(l, [40, 37, 0, 0]));
        assert_eq!(WeightFormat::Nchw32Group.unpack(32, 2, &p).unwrap(), w);
        // CHWN4 group: [G, ICPG/4, FH, FW, OCPG, 4]; G = 2, OCPG = 4, ICPG = 8:
        // w[oc=6 (g 1, o 2), ic=5, kh=0, kw=1] of [8, 8, 1, 2] at [1, 1, 0, 1, 2, 1].
        let l = [8, 8, 1, 2];
        let w = iota(&l);
        let p = WeightFormat::Chwn4Group.pack(4, 2, &w).unwrap();
        assert_eq!(p.shape(), &[2, 2, 1, 2, 4, 4]);
        assert_eq!(p.get_f64(linear(&[1, 1, 0, 1, 2, 1], p.shape())), at(l, [6, 5, 0, 1]));
        assert_eq!(WeightFormat::Chwn4Group.unpack(4, 2, &p).unwrap(), w);
        // NHWCD4 (strata's): [OC/4, FH, FW, IC, 4]; w[oc=5, ic=7, kh=2, kw=0] of [8, 8, 3, 2] at [1, 2, 0, 7, 1].
        let l = [8, 8, 3, 2];
        let w = iota(&l);
        let p = WeightFormat::Nhwcd4.pack(4, 1, &w).unwrap();
        assert_eq!(p.shape(), &[2, 3, 2, 8, 4]);
        assert_eq!(p.get_f64(linear(&[1, 2, 0, 7, 1], p.shape())), at(l, [5, 7, 2, 0]));
        assert_eq!(WeightFormat::Nhwcd4.unpack(4, 1, &p).unwrap(), w);
        // Preconditions.
        let e = WeightFormat::Nchw32Group.pack_dims(32, 2, [64, 16, 1, 1]).unwrap_err();
        assert!(e.contains("IC per group = 16 is not divisible by 32"), "{e}");
        let e = WeightFormat::Nhwcd4.pack_dims(4, 1, [8, 6, 1, 1]).unwrap_err();
        assert!(e.contains("IC = 6 is not divisible by 4"), "{e}");
        let e = WeightFormat::Nchw4.pack_dims(4, 1, [8, 6, 3, 3]).unwrap_err();
        assert!(e.contains("IC = 6 is not divisible by 4"), "{e}");
        let e = WeightFormat::Nchw4Group.pack_dims(4, 2, [12, 8, 1, 1]).unwrap_err();
        assert!(e.contains("OC per group = 6 is not divisible by 4"), "{e}");
        assert!(WeightFormat::Chwn4.pack_dims(4, 2, [8, 4, 1, 1]).unwrap_err().contains("needs group = 1"));
        let e = WeightFormat::Chwn4.unpack_dims(4, 1, &[Dim::Fixed(2), Dim::Fixed(3)]).unwrap_err();
        assert!(e.contains("[IC/P, FH, FW, OC, P]"), "{e}");
    }
}
