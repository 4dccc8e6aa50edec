//! A seeded generator of random, valid graph-dialect functions, for property
//! tests: round trips, and optimised-versus-reference comparisons.

use strata_ir::tensor::SplitMix64;
use strata_ir::{
    AttrData, Context, DenseAttr, DenseStorage, Dim, ElemType, FuncType, InsertPoint, Layout, OpBuild, OpId, Rewriter,
    TensorData, TensorType, Ty, TypeData, ValueId,
};

struct Gen(SplitMix64);

impl Gen {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A module with one function `@main` of random graph ops; returns its context and module.
pub fn random_graph_module(seed: u64) -> (Context, OpId) {
    let mut g = Gen(SplitMix64(seed));
    let mut ctx = strata_dialects::context();
    let elem = if g.chance(75) { ElemType::F32 } else { ElemType::I32 };
    let rank = 1 + g.below(4) as usize;
    let mut fixed: Vec<u64> = (0..rank).map(|_| 1 + g.below(4)).collect();
    let symbolic = g.chance(30);
    let n_sym = ctx.sym("N");
    let shape: Vec<Dim> = fixed
        .iter()
        .enumerate()
        .map(|(i, &d)| if i == 0 && symbolic { Dim::Sym(n_sym) } else { Dim::Fixed(d) })
        .collect();
    if symbolic {
        fixed[0] = 1;
    }
    let full = ctx.tensor_type(TensorType { shape: shape.clone(), elem, layout: Layout::Nchw });
    let n_inputs = 1 + g.below(3) as usize;
    let n_outputs = 1 + g.below(2) as usize;
    let fty =
        ctx.intern_type(TypeData::Func(FuncType { inputs: vec![full; n_inputs], results: vec![full; n_outputs] }));
    let fty = ctx.intern_attr(AttrData::Type(fty));
    let name = ctx.intern_attr(AttrData::Str("main".into()));
    let mut rw = Rewriter::new(&mut ctx);
    let module = rw.create(OpBuild::new("func.module").regions(1), InsertPoint::Detached);
    let mbody = rw.ctx().body(module, 0).expect("module body");
    let func = rw.create(
        OpBuild::new("func.func").attr("sym_name", name).attr("function_type", fty).regions(1),
        InsertPoint::End(mbody),
    );
    let body = rw.ctx().body(func, 0).expect("func body");
    let mut values: Vec<ValueId> = (0..n_inputs).map(|_| rw.add_block_arg(body, full)).collect();
    let n_ops = 1 + g.below(12);
    let unary: &[&str] =
        if elem.is_float() { &["relu", "neg", "abs", "sigmoid", "tanh", "h_swish"] } else { &["relu", "neg", "abs"] };
    let binary: &[&str] = &["add", "sub", "mul", "max", "min", "fuse_add_relu"];
    for _ in 0..n_ops {
        let pick = |g: &mut Gen, vs: &[ValueId]| vs[g.below(vs.len() as u64) as usize];
        let x = pick(&mut g, &values);
        let (mode, operands) = if g.chance(30) {
            (unary[g.below(unary.len() as u64) as usize], vec![x])
        } else {
            let y = if g.chance(40) {
                constant(&mut rw, &mut g, body, &fixed, &shape, elem)
            } else {
                pick(&mut g, &values)
            };
            let (a, b) = if g.chance(50) { (x, y) } else { (y, x) };
            (binary[g.below(binary.len() as u64) as usize], vec![a, b])
        };
        let mode = rw.ctx_mut().intern_attr(AttrData::Str(mode.to_string()));
        let op = rw.create(
            OpBuild::new("graph.elemwise").operands(&operands).attr("mode", mode).results(&[full]),
            InsertPoint::End(body),
        );
        values.push(rw.ctx().op(op).results[0]);
    }
    let outs: Vec<ValueId> =
        (0..n_outputs).map(|_| values[values.len() - 1 - g.below(values.len().min(3) as u64) as usize]).collect();
    rw.create(OpBuild::new("func.return").operands(&outs), InsertPoint::End(body));
    (ctx, module)
}

/// A constant broadcastable to `shape`: some dims are 1; values are a splat of
/// 0 or 1 (to exercise folds) or random.
fn constant(
    rw: &mut Rewriter<'_>,
    g: &mut Gen,
    body: strata_ir::BlockId,
    fixed: &[u64],
    shape: &[Dim],
    elem: ElemType,
) -> ValueId {
    let dims: Vec<u64> =
        fixed.iter().zip(shape).map(|(&d, s)| if matches!(s, Dim::Sym(_)) || g.chance(50) { 1 } else { d }).collect();
    let drop = g.below(dims.len() as u64 + 1) as usize;
    let dims = dims[drop.min(dims.len() - 1)..].to_vec();
    let shape_usize: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let n: usize = shape_usize.iter().product();
    let values: Vec<f64> = match g.below(4) {
        0 => vec![0.0; n],
        1 => vec![1.0; n],
        _ => (0..n).map(|_| (g.below(9) as f64) - 4.0).collect(),
    };
    let data = TensorData::from_f64(elem, shape_usize, &values).expect("constant fits");
    let ty: Ty = rw.ctx_mut().tensor_type(TensorType::fixed(&dims, elem));
    let attr = rw.ctx_mut().intern_attr(AttrData::Dense(DenseAttr { ty, storage: DenseStorage::Data(data) }));
    let op = rw.create(OpBuild::new("graph.const").attr("value", attr).results(&[ty]), InsertPoint::End(body));
    rw.ctx().op(op).results[0]
}
