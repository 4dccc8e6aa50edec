//! Neural-network layers over [`Tensor`], with seeded random initialisation.
//!
//! Layers own their parameters as named tensors (`layer1.0.conv1.weight`), so a
//! trace captures them by name. Convolutions emit `conv2d` followed by a bias
//! `add`, the pattern the fusion passes turn into `conv_bias`.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::tensor_ops::ConvParams;
use std::cell::Cell;

/// A layer: a forward function and its parameters.
pub trait Module {
    /// Applies the layer.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Every parameter tensor, in a fixed order.
    fn params(&self) -> Vec<Tensor>;
    /// Switches training mode (only layers that care react).
    fn set_training(&self, _training: bool) {}
    /// Number of learnable parameter elements (running statistics are not learnable).
    fn num_learnable(&self) -> usize {
        self.params().iter().map(Tensor::numel).sum()
    }
}

fn kaiming(shape: &[usize], fan_in: usize, seed: u64, name: String) -> Result<Tensor> {
    let bound = (6.0 / fan_in.max(1) as f64).sqrt();
    Ok(Tensor::uniform(shape, -bound, bound, seed)?.named(name))
}

/// A 2-d convolution with optional bias.
pub struct Conv2d {
    /// `[OC, C/G, K, K]`.
    pub weight: Tensor,
    /// `[1, OC, 1, 1]`.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation, groups.
    pub params: ConvParams,
}

impl Conv2d {
    /// A `k × k` convolution from `cin` to `cout` channels.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        group: usize,
        bias: bool,
        seed: u64,
    ) -> Result<Conv2d> {
        if group == 0 || !cin.is_multiple_of(group) || !cout.is_multiple_of(group) {
            return Err(Error::Invalid(format!("{name}: {cin}->{cout} channels do not split into {group} groups")));
        }
        let fan_in = cin / group * k * k;
        let weight = kaiming(&[cout, cin / group, k, k], fan_in, seed, format!("{name}.weight"))?;
        let bias =
            if bias { Some(kaiming(&[1, cout, 1, 1], fan_in, seed ^ 0xb1a5, format!("{name}.bias"))?) } else { None };
        Ok(Conv2d { weight, bias, params: ConvParams::new(stride, pad).group(group) })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.params)?;
        match &self.bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    fn params(&self) -> Vec<Tensor> {
        std::iter::once(self.weight.clone()).chain(self.bias.clone()).collect()
    }
}

/// A fully connected layer: `x @ weightᵀ + bias`.
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[1, out]`.
    pub bias: Tensor,
}

impl Linear {
    /// A layer from `fin` to `fout` features.
    pub fn new(name: &str, fin: usize, fout: usize, seed: u64) -> Result<Linear> {
        Ok(Linear {
            weight: kaiming(&[fout, fin], fin, seed, format!("{name}.weight"))?,
            bias: kaiming(&[1, fout], fin, seed ^ 0xb1a5, format!("{name}.bias"))?,
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul_t(&self.weight, false, true)?.add(&self.bias)
    }

    fn params(&self) -> Vec<Tensor> {
        vec![self.weight.clone(), self.bias.clone()]
    }
}

/// Batch normalisation over channels: the inference form (`graph.batch_norm`
/// with the running statistics) unless training, where it normalises with the
/// batch's own statistics. strata does not train, so training mode does not
/// update the running statistics.
pub struct BatchNorm2d {
    /// `[1, C, 1, 1]`.
    pub scale: Tensor,
    /// `[1, C, 1, 1]`.
    pub bias: Tensor,
    /// Running mean `[1, C, 1, 1]`.
    pub mean: Tensor,
    /// Running variance `[1, C, 1, 1]`.
    pub var: Tensor,
    /// Added to the variance.
    pub eps: f64,
    training: Cell<bool>,
}

impl BatchNorm2d {
    /// A layer over `c` channels with seeded random statistics (so folding it
    /// into a convolution is a real test).
    pub fn new(name: &str, c: usize, seed: u64) -> Result<BatchNorm2d> {
        let shape = [1, c, 1, 1];
        Ok(BatchNorm2d {
            scale: Tensor::uniform(&shape, 0.5, 1.5, seed)?.named(format!("{name}.weight")),
            bias: Tensor::uniform(&shape, -0.1, 0.1, seed ^ 1)?.named(format!("{name}.bias")),
            mean: Tensor::uniform(&shape, -0.1, 0.1, seed ^ 2)?.named(format!("{name}.running_mean")),
            var: Tensor::uniform(&shape, 0.5, 1.5, seed ^ 3)?.named(format!("{name}.running_var")),
            eps: 1e-5,
            training: Cell::new(false),
        })
    }

    /// Whether the layer normalises with batch statistics.
    pub fn training(&self) -> bool {
        self.training.get()
    }
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.training.get() {
            return x.batch_norm(&self.scale, &self.bias, &self.mean, &self.var, self.eps);
        }
        crate::trace::session::note_not_dumpable(
            "can not dump BatchNorm in training mode, maybe you forget to call set_training(false) (model.eval())?",
        );
        // Batch statistics over N, H, W; running statistics are not updated.
        let mean = x.mean(0, true)?.mean(2, true)?.mean(3, true)?;
        let centred = x.sub(&mean)?;
        let var = centred.mul(&centred)?.mean(0, true)?.mean(2, true)?.mean(3, true)?;
        let denom = var.add_scalar(self.eps)?.sqrt()?;
        centred.div(&denom)?.mul(&self.scale)?.add(&self.bias)
    }

    fn params(&self) -> Vec<Tensor> {
        vec![self.scale.clone(), self.bias.clone(), self.mean.clone(), self.var.clone()]
    }

    fn set_training(&self, training: bool) {
        self.training.set(training);
    }

    fn num_learnable(&self) -> usize {
        self.scale.numel() + self.bias.numel()
    }
}

/// `max(x, 0)`.
pub struct ReLU;

impl Module for ReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.relu()
    }
    fn params(&self) -> Vec<Tensor> {
        Vec::new()
    }
}

/// `min(max(x, 0), 6)`.
pub struct ReLU6;

impl Module for ReLU6 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let six = x.scalar_like(6.0)?;
        x.relu()?.minimum(&six)
    }
    fn params(&self) -> Vec<Tensor> {
        Vec::new()
    }
}

/// Max pooling with a square window.
pub struct MaxPool2d {
    /// Window size.
    pub window: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.max_pool2d(self.window, self.stride, self.pad)
    }
    fn params(&self) -> Vec<Tensor> {
        Vec::new()
    }
}

/// Average pooling with a square window.
pub struct AvgPool2d {
    /// Window size.
    pub window: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.avg_pool2d(self.window, self.stride, self.pad)
    }
    fn params(&self) -> Vec<Tensor> {
        Vec::new()
    }
}

/// Global average pooling then flattening: `[N, C, H, W] -> [N, C]`.
pub struct GlobalAvgPoolFlatten;

impl Module for GlobalAvgPoolFlatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.global_avg_pool()?.flatten(1)
    }
    fn params(&self) -> Vec<Tensor> {
        Vec::new()
    }
}

/// Flattens from axis 1.
pub struct Flatten;

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.flatten(1)
    }
    fn params(&self) -> Vec<Tensor> {
        Vec::new()
    }
}

/// Layers applied in order.
#[derive(Default)]
pub struct Sequential(pub Vec<Box<dyn Module>>);

impl Sequential {
    /// An empty sequence.
    pub fn new() -> Self {
        Sequential(Vec::new())
    }

    /// Appends a layer.
    pub fn push(&mut self, m: impl Module + 'static) -> &mut Self {
        self.0.push(Box::new(m));
        self
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for m in &self.0 {
            y = m.forward(&y)?;
        }
        Ok(y)
    }

    fn params(&self) -> Vec<Tensor> {
        self.0.iter().flat_map(|m| m.params()).collect()
    }

    fn set_training(&self, training: bool) {
        for m in &self.0 {
            m.set_training(training);
        }
    }

    fn num_learnable(&self) -> usize {
        self.0.iter().map(|m| m.num_learnable()).sum()
    }
}

/// A residual block: `relu(body(x) + shortcut(x))` (identity shortcut when `None`).
pub struct Residual {
    /// The main path.
    pub body: Sequential,
    /// The projection shortcut.
    pub shortcut: Option<Sequential>,
    /// Apply a final relu.
    pub relu: bool,
}

impl Module for Residual {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.body.forward(x)?;
        let s = match &self.shortcut {
            Some(sc) => sc.forward(x)?,
            None => x.clone(),
        };
        let sum = y.add(&s)?;
        if self.relu { sum.relu() } else { Ok(sum) }
    }

    fn params(&self) -> Vec<Tensor> {
        let mut p = self.body.params();
        if let Some(s) = &self.shortcut {
            p.extend(s.params());
        }
        p
    }

    fn set_training(&self, training: bool) {
        self.body.set_training(training);
        if let Some(s) = &self.shortcut {
            s.set_training(training);
        }
    }

    fn num_learnable(&self) -> usize {
        self.body.num_learnable() + self.shortcut.as_ref().map_or(0, |s| s.num_learnable())
    }
}
