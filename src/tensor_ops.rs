//! One method per graph op (see `docs/graph-dialect.md`), plus conveniences.

use crate::error::Result;
use crate::tensor::{AttrVal as A, Tensor};
use std::panic::Location;
use strata_ir::ElemType;

/// Convolution parameters: `[height, width]` pairs and the group count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    /// Stride.
    pub stride: [usize; 2],
    /// Symmetric zero padding.
    pub pad: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Groups (`C` for depthwise).
    pub group: usize,
}

impl Default for ConvParams {
    fn default() -> Self {
        ConvParams { stride: [1, 1], pad: [0, 0], dilation: [1, 1], group: 1 }
    }
}

impl ConvParams {
    /// Stride `s` and padding `p` on both axes.
    pub fn new(stride: usize, pad: usize) -> Self {
        ConvParams { stride: [stride, stride], pad: [pad, pad], ..ConvParams::default() }
    }

    /// With `group` groups.
    pub fn group(mut self, group: usize) -> Self {
        self.group = group;
        self
    }

    /// With dilation `d` on both axes.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }

    fn attrs(&self) -> Vec<(&'static str, A)> {
        let pair = |p: [usize; 2]| A::Ints(vec![p[0] as i64, p[1] as i64]);
        vec![
            ("dilation", pair(self.dilation)),
            ("group", A::Int(self.group as i64)),
            ("pad", pair(self.pad)),
            ("stride", pair(self.stride)),
        ]
    }
}

/// The nonlinearity fused into `conv_bias`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Nonlinearity {
    /// None.
    #[default]
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `x · relu6(x + 3) / 6`.
    HSwish,
}

impl Nonlinearity {
    /// The attribute text.
    pub fn name(self) -> &'static str {
        match self {
            Nonlinearity::Identity => "identity",
            Nonlinearity::Relu => "relu",
            Nonlinearity::Sigmoid => "sigmoid",
            Nonlinearity::HSwish => "h_swish",
        }
    }
}

fn ints(v: &[i64]) -> A {
    A::Ints(v.to_vec())
}

fn uints(v: &[usize]) -> A {
    A::Ints(v.iter().map(|&x| x as i64).collect())
}

macro_rules! unary {
    ($($(#[$m:meta])* $fn:ident => $mode:literal),* $(,)?) => {
        impl Tensor {
            $(
                $(#[$m])*
                #[track_caller]
                pub fn $fn(&self) -> Result<Tensor> {
                    self.elemwise($mode, &[])
                }
            )*
        }
    };
}

macro_rules! binary {
    ($($(#[$m:meta])* $fn:ident => $mode:literal),* $(,)?) => {
        impl Tensor {
            $(
                $(#[$m])*
                #[track_caller]
                pub fn $fn(&self, other: &Tensor) -> Result<Tensor> {
                    self.elemwise($mode, &[other])
                }
            )*
        }
    };
}

unary! {
    /// `max(x, 0)`.
    relu => "relu",
    /// Logistic sigmoid.
    sigmoid => "sigmoid",
    /// Hyperbolic tangent.
    tanh => "tanh",
    /// `e^x`.
    exp => "exp",
    /// Natural logarithm.
    log => "log",
    /// `ln(1 + x)`.
    log1p => "log1p",
    /// `e^x - 1`.
    expm1 => "expm1",
    /// `|x|`.
    abs => "abs",
    /// `-x`.
    neg => "neg",
    /// Square root.
    sqrt => "sqrt",
    /// Round down.
    floor => "floor",
    /// Round up.
    ceil => "ceil",
    /// Round half away from zero.
    round => "round",
    /// `x · relu6(x + 3) / 6`.
    h_swish => "h_swish",
    /// Gaussian error linear unit (erf form).
    gelu => "gelu",
}

binary! {
    /// `a + b` (broadcasting).
    add => "add",
    /// `a - b`.
    sub => "sub",
    /// `a · b`.
    mul => "mul",
    /// `a / b`.
    div => "div",
    /// `floor(a / b)`.
    floor_div => "floor_div",
    /// Elementwise maximum.
    maximum => "max",
    /// Elementwise minimum.
    minimum => "min",
    /// `a ^ b`.
    pow => "pow",
    /// `relu(a + b)`.
    fuse_add_relu => "fuse_add_relu",
    /// `sigmoid(a + b)`.
    fuse_add_sigmoid => "fuse_add_sigmoid",
    /// `h_swish(a + b)`.
    fuse_add_h_swish => "fuse_add_h_swish",
    /// `log(e^a + e^b)`.
    log_sum_exp => "log_sum_exp",
}

impl Tensor {
    /// `graph.elemwise` with `mode` over `self` and `others`.
    #[track_caller]
    pub fn elemwise(&self, mode: &str, others: &[&Tensor]) -> Result<Tensor> {
        let mut inputs = vec![self];
        inputs.extend_from_slice(others);
        Tensor::apply1("graph.elemwise", &inputs, vec![("mode", A::Str(mode.to_string()))], Location::caller())
    }

    /// `self · b + c`.
    #[track_caller]
    pub fn fma3(&self, b: &Tensor, c: &Tensor) -> Result<Tensor> {
        self.elemwise("fma3", &[b, c])
    }

    /// A scalar of this tensor's element type (recorded as a constant in a trace).
    #[track_caller]
    pub fn scalar_like(&self, v: f64) -> Result<Tensor> {
        Tensor::full(&[], v, self.elem())
    }

    /// `self + v`.
    #[track_caller]
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        let s = self.scalar_like(v)?;
        self.elemwise("add", &[&s])
    }

    /// `self · v`.
    #[track_caller]
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        let s = self.scalar_like(v)?;
        self.elemwise("mul", &[&s])
    }

    /// `self - v`.
    #[track_caller]
    pub fn sub_scalar(&self, v: f64) -> Result<Tensor> {
        let s = self.scalar_like(v)?;
        self.elemwise("sub", &[&s])
    }

    /// `self / v`.
    #[track_caller]
    pub fn div_scalar(&self, v: f64) -> Result<Tensor> {
        let s = self.scalar_like(v)?;
        self.elemwise("div", &[&s])
    }

    /// 2-d convolution (`self` NCHW, `w` `[OC, C/G, FH, FW]`).
    #[track_caller]
    pub fn conv2d(&self, w: &Tensor, p: ConvParams) -> Result<Tensor> {
        Tensor::apply1("graph.conv2d", &[self, w], p.attrs(), Location::caller())
    }

    /// `nonlinearity(conv2d(self, w) + bias [+ z])`.
    #[track_caller]
    pub fn conv_bias(
        &self,
        w: &Tensor,
        bias: &Tensor,
        z: Option<&Tensor>,
        p: ConvParams,
        nl: Nonlinearity,
    ) -> Result<Tensor> {
        let mut inputs = vec![self, w, bias];
        inputs.extend(z);
        let mut attrs = p.attrs();
        attrs.push(("nonlinearity", A::Str(nl.name().into())));
        Tensor::apply1("graph.conv_bias", &inputs, attrs, Location::caller())
    }

    /// Transposed convolution (`w` `[C, OC/G, FH, FW]`).
    #[track_caller]
    pub fn conv_transpose2d(&self, w: &Tensor, p: ConvParams) -> Result<Tensor> {
        Tensor::apply1("graph.conv_transpose2d", &[self, w], p.attrs(), Location::caller())
    }

    /// `self @ b` for 2-d tensors, optionally transposing either side.
    #[track_caller]
    pub fn matmul_t(&self, b: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor> {
        let attrs = vec![("transpose_a", A::Bool(transpose_a)), ("transpose_b", A::Bool(transpose_b))];
        Tensor::apply1("graph.matmul", &[self, b], attrs, Location::caller())
    }

    /// `self @ b` for 2-d tensors.
    #[track_caller]
    pub fn matmul(&self, b: &Tensor) -> Result<Tensor> {
        self.matmul_t(b, false, false)
    }

    /// Batched `self @ b` for 3-d tensors.
    #[track_caller]
    pub fn batched_matmul(&self, b: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor> {
        let attrs = vec![("transpose_a", A::Bool(transpose_a)), ("transpose_b", A::Bool(transpose_b))];
        Tensor::apply1("graph.batched_matmul", &[self, b], attrs, Location::caller())
    }

    /// Converts to another element type (`graph.typecvt`).
    #[track_caller]
    pub fn astype(&self, elem: ElemType) -> Result<Tensor> {
        Tensor::apply1("graph.typecvt", &[self], vec![("dtype", A::Elem(elem))], Location::caller())
    }

    /// Reduces `axis` with `mode` (`sum`, `mean`, `max`, `min`, `prod`).
    #[track_caller]
    pub fn reduce(&self, mode: &str, axis: i64, keepdim: bool) -> Result<Tensor> {
        let attrs = vec![("axis", A::Int(axis)), ("keepdim", A::Bool(keepdim)), ("mode", A::Str(mode.into()))];
        Tensor::apply1("graph.reduce", &[self], attrs, Location::caller())
    }

    /// Sum over `axis`.
    #[track_caller]
    pub fn sum(&self, axis: i64, keepdim: bool) -> Result<Tensor> {
        self.reduce("sum", axis, keepdim)
    }

    /// Mean over `axis`.
    #[track_caller]
    pub fn mean(&self, axis: i64, keepdim: bool) -> Result<Tensor> {
        self.reduce("mean", axis, keepdim)
    }

    /// 2-d pooling; `mode` is `max`, `average` or `average_count_exclude_padding`.
    #[track_caller]
    pub fn pool2d(&self, mode: &str, window: [usize; 2], stride: [usize; 2], pad: [usize; 2]) -> Result<Tensor> {
        let attrs = vec![
            ("mode", A::Str(mode.into())),
            ("pad", uints(&pad)),
            ("stride", uints(&stride)),
            ("window", uints(&window)),
        ];
        Tensor::apply1("graph.pooling", &[self], attrs, Location::caller())
    }

    /// Max pooling with a square window.
    #[track_caller]
    pub fn max_pool2d(&self, window: usize, stride: usize, pad: usize) -> Result<Tensor> {
        self.pool2d("max", [window; 2], [stride; 2], [pad; 2])
    }

    /// Average pooling with a square window (padding counts as zeros).
    #[track_caller]
    pub fn avg_pool2d(&self, window: usize, stride: usize, pad: usize) -> Result<Tensor> {
        self.pool2d("average", [window; 2], [stride; 2], [pad; 2])
    }

    /// Average over H and W: `[N, C, 1, 1]`.
    #[track_caller]
    pub fn global_avg_pool(&self) -> Result<Tensor> {
        Tensor::apply1("graph.global_avg_pool", &[self], vec![], Location::caller())
    }

    /// Adaptive pooling to `[OH, OW]`; `mode` is `max` or `average`.
    #[track_caller]
    pub fn adaptive_pool2d(&self, mode: &str, output: [usize; 2]) -> Result<Tensor> {
        let attrs = vec![("mode", A::Str(mode.into())), ("output", uints(&output))];
        Tensor::apply1("graph.adaptive_pooling", &[self], attrs, Location::caller())
    }

    /// Inference batch normalisation with `[1, C, 1, 1]` statistics.
    #[track_caller]
    pub fn batch_norm(
        &self,
        scale: &Tensor,
        bias: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        epsilon: f64,
    ) -> Result<Tensor> {
        Tensor::apply1(
            "graph.batch_norm",
            &[self, scale, bias, mean, var],
            vec![("epsilon", A::Float(epsilon))],
            Location::caller(),
        )
    }

    /// Softmax over `axis`.
    #[track_caller]
    pub fn softmax(&self, axis: i64) -> Result<Tensor> {
        Tensor::apply1("graph.softmax", &[self], vec![("axis", A::Int(axis))], Location::caller())
    }

    /// Concatenation along `axis`.
    #[track_caller]
    pub fn concat(parts: &[&Tensor], axis: i64) -> Result<Tensor> {
        Tensor::apply1("graph.concat", parts, vec![("axis", A::Int(axis))], Location::caller())
    }

    /// Reshape; one `-1` is inferred, `0` keeps the input dim at that index.
    #[track_caller]
    pub fn reshape(&self, shape: &[i64]) -> Result<Tensor> {
        Tensor::apply1("graph.reshape", &[self], vec![("shape", ints(shape))], Location::caller())
    }

    /// Flattens the axes from `start` on (batch-polymorphic: earlier dims are kept with `0`).
    #[track_caller]
    pub fn flatten(&self, start: usize) -> Result<Tensor> {
        let mut shape = vec![0i64; start.min(self.rank())];
        shape.push(-1);
        self.reshape(&shape)
    }

    /// Permutes axes; `-1` in `pattern` inserts a new axis of size 1.
    #[track_caller]
    pub fn dimshuffle(&self, pattern: &[i64]) -> Result<Tensor> {
        Tensor::apply1("graph.dimshuffle", &[self], vec![("pattern", ints(pattern))], Location::caller())
    }

    /// Broadcasts to `shape`.
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        Tensor::apply1("graph.broadcast", &[self], vec![("shape", uints(shape))], Location::caller())
    }

    /// Inserts size-1 axes at `axes` (positions in the result).
    #[track_caller]
    pub fn add_axis(&self, axes: &[i64]) -> Result<Tensor> {
        let attrs = vec![("axes", ints(axes)), ("mode", A::Str("add".into()))];
        Tensor::apply1("graph.axis_add_remove", &[self], attrs, Location::caller())
    }

    /// Removes size-1 axes.
    #[track_caller]
    pub fn remove_axis(&self, axes: &[i64]) -> Result<Tensor> {
        let attrs = vec![("axes", ints(axes)), ("mode", A::Str("remove".into()))];
        Tensor::apply1("graph.axis_add_remove", &[self], attrs, Location::caller())
    }

    /// Python-style slicing of `axes`.
    #[track_caller]
    pub fn subtensor(&self, axes: &[i64], begin: &[i64], end: &[i64], step: &[i64]) -> Result<Tensor> {
        let attrs = vec![("axes", ints(axes)), ("begin", ints(begin)), ("end", ints(end)), ("step", ints(step))];
        Tensor::apply1("graph.subtensor", &[self], attrs, Location::caller())
    }

    /// Pads every axis by `before`/`after`; `mode` is `constant`, `edge` or `reflect`.
    #[track_caller]
    pub fn pad(&self, before: &[usize], after: &[usize], mode: &str, value: f64) -> Result<Tensor> {
        let attrs = vec![
            ("after", uints(after)),
            ("before", uints(before)),
            ("mode", A::Str(mode.into())),
            ("value", A::Float(value)),
        ];
        Tensor::apply1("graph.pad", &[self], attrs, Location::caller())
    }

    /// The runtime shape as an `i32` tensor (a graph value inside traces).
    #[track_caller]
    pub fn shape_of(&self) -> Result<Tensor> {
        Tensor::apply1("graph.get_var_shape", &[self], vec![], Location::caller())
    }

    /// Perspective warp by `[N, 3, 3]` matrices to `[OH, OW]`.
    #[track_caller]
    pub fn warp_perspective(
        &self,
        mat: &Tensor,
        output: [usize; 2],
        imode: &str,
        border_mode: &str,
        border_value: f64,
    ) -> Result<Tensor> {
        let attrs = vec![
            ("border_mode", A::Str(border_mode.into())),
            ("border_value", A::Float(border_value)),
            ("imode", A::Str(imode.into())),
            ("output", uints(&output)),
        ];
        Tensor::apply1("graph.warp_perspective", &[self, mat], attrs, Location::caller())
    }

    /// Resizes H and W to `output`; `imode` is `linear` or `nearest`.
    #[track_caller]
    pub fn resize(&self, output: [usize; 2], imode: &str) -> Result<Tensor> {
        let attrs = vec![("imode", A::Str(imode.into())), ("output", uints(&output))];
        Tensor::apply1("graph.resize", &[self], attrs, Location::caller())
    }
}
