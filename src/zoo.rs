//! The model zoo: classic networks with seeded random weights, for tests,
//! benchmarks and the demo.
//!
//! | model | input | notes |
//! |---|---|---|
//! | `mlp` | `f32 [N, 784]` | 784 → 256 → 10 |
//! | `lenet` | `f32 [N, 1, 28, 28]` | LeNet-5 with padding |
//! | `resnet18` | `f32 [N, 3, 224, 224]` | BasicBlock ×[2,2,2,2] |
//! | `resnet50` | `f32 [N, 3, 224, 224]` | Bottleneck ×[3,4,6,3] |
//! | `mobilenet_v2` | `f32 [N, 3, 224, 224]` | inverted residuals, ReLU6 |
//! | `preprocess_net` | `u8 [N, 32, 32, 3]` (NHWC image) | typecvt, mean, scale, NHWC→NCHW, pad 3→4 channels, conv |
//! | `resblock` | `f32 [N, 16, 16, 16]` | relu(conv(x) + bias + x): the conv_bias + z pattern |

use crate::error::{Error, Result};
use crate::nn::{
    BatchNorm2d, Conv2d, GlobalAvgPoolFlatten, Linear, MaxPool2d, Module, ReLU, ReLU6, Residual, Sequential,
};
use crate::tensor::Tensor;
use strata_ir::ElemType;

/// A model of the zoo.
pub struct Model {
    /// Its name.
    pub name: &'static str,
    /// Input shape with batch 1.
    pub input_shape: Vec<usize>,
    /// Input element type.
    pub input_elem: ElemType,
    /// The network.
    pub net: Box<dyn Module>,
}

impl Model {
    /// The input shape for batch `n`.
    pub fn input_shape_for(&self, n: usize) -> Vec<usize> {
        let mut s = self.input_shape.clone();
        s[0] = n;
        s
    }

    /// A seeded random input of batch `n`.
    pub fn random_input(&self, n: usize, seed: u64) -> Result<Tensor> {
        let shape = self.input_shape_for(n);
        if self.input_elem == ElemType::U8 {
            let data = strata_ir::TensorData::random_uniform(ElemType::U8, shape, 0.0, 256.0, seed)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            return Tensor::from_data(data);
        }
        Tensor::uniform(&shape, -1.0, 1.0, seed)
    }

    /// Number of learnable parameter elements (as frameworks usually count them).
    pub fn num_params(&self) -> usize {
        self.net.num_learnable()
    }

    /// Applies the network.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.net.forward(x)
    }
}

/// Every model name.
pub const MODELS: &[&str] = &["mlp", "lenet", "resnet18", "resnet50", "mobilenet_v2", "preprocess_net", "resblock"];

/// Builds model `name` with weights from `seed`.
pub fn build(name: &str, seed: u64) -> Result<Model> {
    let (input_shape, input_elem, net): (Vec<usize>, ElemType, Box<dyn Module>) = match name {
        "mlp" => (vec![1, 784], ElemType::F32, Box::new(mlp(seed)?)),
        "lenet" => (vec![1, 1, 28, 28], ElemType::F32, Box::new(lenet(seed)?)),
        "resnet18" => (vec![1, 3, 224, 224], ElemType::F32, Box::new(resnet(&[2, 2, 2, 2], false, seed)?)),
        "resnet50" => (vec![1, 3, 224, 224], ElemType::F32, Box::new(resnet(&[3, 4, 6, 3], true, seed)?)),
        "mobilenet_v2" => (vec![1, 3, 224, 224], ElemType::F32, Box::new(mobilenet_v2(seed)?)),
        "preprocess_net" => (vec![1, 32, 32, 3], ElemType::U8, Box::new(PreprocessNet::new(seed)?)),
        "resblock" => (vec![1, 16, 16, 16], ElemType::F32, Box::new(ResBlock::new(16, seed)?)),
        other => {
            return Err(Error::Invalid(format!("unknown model `{other}`; the zoo has {}", MODELS.join(", "))));
        }
    };
    let name = MODELS.iter().find(|m| **m == name).copied().expect("invariant: matched above");
    Ok(Model { name, input_shape, input_elem, net })
}

fn mlp(seed: u64) -> Result<Sequential> {
    let mut s = Sequential::new();
    s.push(Linear::new("fc1", 784, 256, seed)?).push(ReLU).push(Linear::new("fc2", 256, 10, seed + 1)?);
    Ok(s)
}

fn lenet(seed: u64) -> Result<Sequential> {
    let mut s = Sequential::new();
    s.push(Conv2d::new("conv1", 1, 6, 5, 1, 2, 1, true, seed)?)
        .push(ReLU)
        .push(MaxPool2d { window: 2, stride: 2, pad: 0 })
        .push(Conv2d::new("conv2", 6, 16, 5, 1, 0, 1, true, seed + 1)?)
        .push(ReLU)
        .push(MaxPool2d { window: 2, stride: 2, pad: 0 })
        .push(crate::nn::Flatten)
        .push(Linear::new("fc1", 400, 120, seed + 2)?)
        .push(ReLU)
        .push(Linear::new("fc2", 120, 84, seed + 3)?)
        .push(ReLU)
        .push(Linear::new("fc3", 84, 10, seed + 4)?);
    Ok(s)
}

#[allow(clippy::too_many_arguments)]
fn conv_bn(
    s: &mut Sequential,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    group: usize,
    seed: u64,
) -> Result<()> {
    s.push(Conv2d::new(&format!("{name}.conv"), cin, cout, k, stride, k / 2, group, false, seed)?);
    s.push(BatchNorm2d::new(&format!("{name}.bn"), cout, seed + 1)?);
    Ok(())
}

fn resnet(blocks: &[usize; 4], bottleneck: bool, seed: u64) -> Result<Sequential> {
    let mut net = Sequential::new();
    net.push(Conv2d::new("conv1", 3, 64, 7, 2, 3, 1, false, seed)?)
        .push(BatchNorm2d::new("bn1", 64, seed + 1)?)
        .push(ReLU)
        .push(MaxPool2d { window: 3, stride: 2, pad: 1 });
    let expansion = if bottleneck { 4 } else { 1 };
    let mut cin = 64;
    let mut s = seed + 10;
    for (stage, (&n, width)) in blocks.iter().zip([64, 128, 256, 512]).enumerate() {
        for b in 0..n {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let name = format!("layer{}.{b}", stage + 1);
            let cout = width * expansion;
            let mut body = Sequential::new();
            if bottleneck {
                conv_bn(&mut body, &format!("{name}.1"), cin, width, 1, 1, 1, s)?;
                body.push(ReLU);
                conv_bn(&mut body, &format!("{name}.2"), width, width, 3, stride, 1, s + 2)?;
                body.push(ReLU);
                conv_bn(&mut body, &format!("{name}.3"), width, cout, 1, 1, 1, s + 4)?;
            } else {
                conv_bn(&mut body, &format!("{name}.1"), cin, width, 3, stride, 1, s)?;
                body.push(ReLU);
                conv_bn(&mut body, &format!("{name}.2"), width, cout, 3, 1, 1, s + 2)?;
            }
            let shortcut = if stride != 1 || cin != cout {
                let mut sc = Sequential::new();
                conv_bn(&mut sc, &format!("{name}.downsample"), cin, cout, 1, stride, 1, s + 6)?;
                Some(sc)
            } else {
                None
            };
            net.push(Residual { body, shortcut, relu: true });
            cin = cout;
            s += 10;
        }
    }
    net.push(GlobalAvgPoolFlatten).push(Linear::new("fc", cin, 1000, s)?);
    Ok(net)
}

fn mobilenet_v2(seed: u64) -> Result<Sequential> {
    let mut net = Sequential::new();
    conv_bn(&mut net, "features.0", 3, 32, 3, 2, 1, seed)?;
    net.push(ReLU6);
    let config =
        [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];
    let mut cin = 32;
    let mut s = seed + 10;
    let mut idx = 1;
    for (t, c, n, stride) in config {
        for i in 0..n {
            let stride = if i == 0 { stride } else { 1 };
            let hidden = cin * t;
            let name = format!("features.{idx}");
            let mut body = Sequential::new();
            if t != 1 {
                conv_bn(&mut body, &format!("{name}.expand"), cin, hidden, 1, 1, 1, s)?;
                body.push(ReLU6);
            }
            conv_bn(&mut body, &format!("{name}.dw"), hidden, hidden, 3, stride, hidden, s + 2)?;
            body.push(ReLU6);
            conv_bn(&mut body, &format!("{name}.project"), hidden, c, 1, 1, 1, s + 4)?;
            if stride == 1 && cin == c {
                net.push(Residual { body, shortcut: None, relu: false });
            } else {
                net.push(body);
            }
            cin = c;
            s += 10;
            idx += 1;
        }
    }
    conv_bn(&mut net, &format!("features.{idx}"), cin, 1280, 1, 1, 1, s)?;
    net.push(ReLU6).push(GlobalAvgPoolFlatten).push(Linear::new("classifier", 1280, 1000, s + 2)?);
    Ok(net)
}

/// `relu(conv(x) + bias + x)`: the conv_bias-with-z pattern.
pub struct ResBlock {
    conv: Conv2d,
}

impl ResBlock {
    /// A block over `c` channels.
    pub fn new(c: usize, seed: u64) -> Result<ResBlock> {
        Ok(ResBlock { conv: Conv2d::new("conv", c, c, 3, 1, 1, 1, true, seed)? })
    }
}

impl Module for ResBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(&self.conv.weight, self.conv.params)?;
        let b = self.conv.bias.as_ref().expect("invariant: the block's conv has a bias");
        y.add(b)?.add(x)?.relu()
    }

    fn params(&self) -> Vec<Tensor> {
        self.conv.params()
    }
}

/// The uint8 NHWC preprocessing chain in front of a convolution.
pub struct PreprocessNet {
    mean: Tensor,
    scale: Tensor,
    conv: Conv2d,
}

impl PreprocessNet {
    /// The network with seeded weights.
    pub fn new(seed: u64) -> Result<PreprocessNet> {
        Ok(PreprocessNet {
            mean: Tensor::from_vec(vec![123.675, 116.28, 103.53], &[1, 1, 1, 3])?.named("mean"),
            scale: Tensor::from_vec(vec![1.0 / 58.395, 1.0 / 57.12, 1.0 / 57.375], &[1, 1, 1, 3])?.named("scale"),
            conv: Conv2d::new("conv", 4, 8, 3, 1, 1, 1, true, seed)?,
        })
    }
}

impl Module for PreprocessNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = x.astype(ElemType::F32)?.sub(&self.mean)?.mul(&self.scale)?;
        let nchw = f.dimshuffle(&[0, 3, 1, 2])?;
        let padded = nchw.pad(&[0, 0, 0, 0], &[0, 1, 0, 0], "constant", 0.0)?;
        self.conv.forward(&padded)
    }

    fn params(&self) -> Vec<Tensor> {
        let mut p = vec![self.mean.clone(), self.scale.clone()];
        p.extend(self.conv.params());
        p
    }
}

/// Floating-point operations of one run of `main` in `module` (multiply-adds
/// count 2; other ops one per output element), with symbolic dims taken as `batch`.
pub fn flops(ctx: &strata_ir::Context, module: strata_ir::OpId, batch: u64) -> u64 {
    let dims = |v: strata_ir::ValueId| -> Vec<u64> {
        ctx.value_tensor(v).map(|t| t.shape.iter().map(|d| d.fixed().unwrap_or(batch)).collect()).unwrap_or_default()
    };
    let numel = |v| dims(v).iter().product::<u64>();
    let mut total = 0u64;
    for op in ctx.walk(module) {
        let data = ctx.op(op);
        let Some(&out) = data.results.first() else { continue };
        let f = match ctx.op_name(op) {
            "graph.conv2d" | "graph.conv_bias" => {
                let w = dims(data.operands[1]);
                2 * numel(out) * w.iter().skip(1).product::<u64>()
                    + if ctx.op_name(op) == "graph.conv_bias" { numel(out) } else { 0 }
            }
            "graph.conv_transpose2d" => {
                let w = dims(data.operands[1]);
                2 * numel(data.operands[0]) * w.iter().skip(1).product::<u64>()
            }
            "graph.matmul" | "graph.batched_matmul" => {
                let a = dims(data.operands[0]);
                let k = if ctx
                    .op_attr(op, "transpose_a")
                    .is_some_and(|t| matches!(ctx.attr(t), strata_ir::AttrData::Bool(true)))
                {
                    a[a.len() - 2]
                } else {
                    a[a.len() - 1]
                };
                2 * numel(out) * k
            }
            "graph.const" | "graph.param" => 0,
            _ => numel(out),
        };
        total += f;
    }
    total
}
