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

/// Where the JIT generator's choices come from: the input bytes first, one per
/// choice (so a fuzzer's byte mutations steer the graph), then a generator
/// seeded from a hash of all the bytes.
struct Choices<'a> {
    data: &'a [u8],
    pos: usize,
    rng: SplitMix64,
}

impl<'a> Choices<'a> {
    fn new(data: &'a [u8]) -> Self {
        let mut h = strata_ir::tensor::Fnv1a::new();
        h.write(data);
        Choices { data, pos: 0, rng: SplitMix64(h.finish()) }
    }

    /// A number in `0..n` (0 when `n` is 0 or 1).
    fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let v = match self.data.get(self.pos) {
            Some(&b) if n <= 256 => {
                self.pos += 1;
                u64::from(b)
            }
            _ => self.rng.next_u64(),
        };
        (v % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

/// Element types of generated JIT graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F32,
    I32,
}

impl Elem {
    fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::I32 => "i32",
        }
    }
}

/// A value of the generated function.
#[derive(Clone, Debug)]
struct Val {
    name: String,
    shape: Vec<usize>,
    elem: Elem,
    /// Whether the JIT must compute it bit for bit like the reference (inputs,
    /// constants, data movement, max/min, floor…): only such values feed
    /// ill-conditioned ops (division, exp, log, sqrt, floor, pow…), so rounding
    /// differences in f32 accumulation do not turn into large errors.
    exact: bool,
}

/// The largest tensor, in elements, of a generated JIT graph.
const MAX_ELEMS: usize = 4096;

fn ty_text(shape: &[usize], elem: Elem) -> String {
    let dims: String = shape.iter().map(|d| format!("{d}x")).collect();
    format!("tensor<{dims}{}>", elem.name())
}

fn ints(xs: &[i64]) -> String {
    let s: Vec<String> = xs.iter().map(i64::to_string).collect();
    format!("[{}]", s.join(", "))
}

struct JitGen<'a> {
    c: Choices<'a>,
    args: Vec<Val>,
    vals: Vec<Val>,
    lines: Vec<String>,
    next: usize,
    has_conv_bias: bool,
}

impl JitGen<'_> {
    fn input(&mut self, shape: &[usize], elem: Elem) -> Val {
        let v = Val { name: format!("%in{}", self.args.len()), shape: shape.to_vec(), elem, exact: true };
        self.args.push(v.clone());
        self.vals.push(v.clone());
        v
    }

    /// A constant: listed values (multiples of 1/4 in [-2, 2], so some are ties
    /// for `round`) when small, else a splat.
    fn constant(&mut self, shape: &[usize], elem: Elem, positive: bool) -> Val {
        let n: usize = shape.iter().product();
        let value = |c: &mut Choices<'_>| -> String {
            match (elem, positive) {
                (Elem::F32, false) => format!("{:?}", (c.below(17) as f64 - 8.0) / 4.0),
                (Elem::F32, true) => format!("{:?}", (c.below(8) as f64 + 1.0) / 4.0),
                (Elem::I32, false) => format!("{}", c.below(9) as i64 - 4),
                (Elem::I32, true) => format!("{}", c.below(4) + 1),
            }
        };
        let dense = if n <= 64 && !shape.is_empty() && !self.c.chance(20) {
            let vs: Vec<String> = (0..n).map(|_| value(&mut self.c)).collect();
            format!("[{}]", vs.join(", "))
        } else {
            value(&mut self.c)
        };
        let name = format!("%c{}", self.next);
        self.next += 1;
        let ty = ty_text(shape, elem);
        self.lines.push(format!("{name} = graph.const() {{value = dense<{dense}> : {ty}}} : () -> {ty}"));
        let v = Val { name, shape: shape.to_vec(), elem, exact: true };
        self.vals.push(v.clone());
        v
    }

    /// An operand of `shape`: an existing value of that type, a new input or a constant.
    fn operand(&mut self, shape: &[usize], elem: Elem) -> Val {
        let existing: Vec<Val> = self.vals.iter().filter(|v| v.shape == shape && v.elem == elem).cloned().collect();
        let r = self.c.below(100);
        if r < 30 && !existing.is_empty() {
            return existing[self.c.below(existing.len())].clone();
        }
        if r < 80 || shape.iter().product::<usize>() > 256 && self.c.chance(50) {
            self.input(shape, elem)
        } else {
            self.constant(shape, elem, false)
        }
    }

    /// Emits `op(operands) {attrs}` with result `shape`/`elem`; `None` if the result is too large.
    fn emit(
        &mut self,
        op: &str,
        operands: &[&Val],
        attrs: &[(&str, String)],
        shape: &[usize],
        elem: Elem,
    ) -> Option<Val> {
        if shape.iter().product::<usize>() > MAX_ELEMS || shape.contains(&0) {
            return None;
        }
        let name = format!("%v{}", self.next);
        self.next += 1;
        let names: Vec<&str> = operands.iter().map(|v| v.name.as_str()).collect();
        let tys: Vec<String> = operands.iter().map(|v| ty_text(&v.shape, v.elem)).collect();
        let attrs: Vec<String> = attrs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let attrs = if attrs.is_empty() { String::new() } else { format!(" {{{}}}", attrs.join(", ")) };
        self.lines.push(format!(
            "{name} = graph.{op}({}){attrs} : ({}) -> {}",
            names.join(", "),
            tys.join(", "),
            ty_text(shape, elem)
        ));
        let exact = false;
        let v = Val { name, shape: shape.to_vec(), elem, exact };
        self.vals.push(v.clone());
        Some(v)
    }

    fn emit_exact(
        &mut self,
        op: &str,
        operands: &[&Val],
        attrs: &[(&str, String)],
        shape: &[usize],
        exact: bool,
    ) -> Option<Val> {
        let elem = operands[0].elem;
        let v = self.emit(op, operands, attrs, shape, elem)?;
        self.vals.last_mut().expect("just pushed").exact = exact;
        Some(Val { exact, ..v })
    }

    fn unary(&mut self, x: &Val) -> Option<Val> {
        let (mode, exact) = if x.elem == Elem::I32 {
            (self.c.pick(&["relu", "neg", "abs"]), x.exact)
        } else if x.exact && self.c.chance(40) {
            let m = self.c.pick(&["exp", "log", "log1p", "expm1", "sqrt", "floor", "ceil", "round"]);
            (m, matches!(m, "floor" | "ceil" | "round"))
        } else {
            let m = self.c.pick(&["relu", "neg", "abs", "sigmoid", "tanh", "h_swish", "gelu"]);
            (m, x.exact && matches!(m, "relu" | "neg" | "abs"))
        };
        self.emit_exact("elemwise", &[x], &[("mode", format!("{mode:?}"))], &x.shape.clone(), exact)
    }

    /// A shape that broadcasts with `s`: equal, with some dims 1 (and leading
    /// dims dropped), or widening `s` where it has 1s (or a new leading dim).
    fn broadcast_partner(&mut self, s: &[usize]) -> Vec<usize> {
        match self.c.below(10) {
            0..=3 => s.to_vec(),
            4..=7 => {
                let mut t: Vec<usize> = s.iter().map(|&d| if self.c.chance(50) { 1 } else { d }).collect();
                let drop = self.c.below(t.len() + 1);
                t.drain(..drop);
                t
            }
            _ => {
                let mut t: Vec<usize> =
                    s.iter().map(|&d| if d == 1 && self.c.chance(60) { self.c.range(2, 4) } else { d }).collect();
                if t.len() < 4 && self.c.chance(30) {
                    t.insert(0, 2);
                }
                t
            }
        }
    }

    fn binary(&mut self, x: &Val) -> Option<Val> {
        let ys = self.broadcast_partner(&x.shape);
        let y = if ys == x.shape && self.c.chance(15) { x.clone() } else { self.operand(&ys, x.elem) };
        let out = broadcast(&x.shape, &y.shape)?;
        if x.elem == Elem::I32 {
            let mode = self.c.pick(&["add", "sub", "mul", "max", "min", "fuse_add_relu"]);
            let (a, b) = if self.c.chance(50) { (x, &y) } else { (&y, x) };
            return self.emit_exact("elemwise", &[a, b], &[("mode", format!("{mode:?}"))], &out, a.exact && b.exact);
        }
        let r = self.c.below(100);
        if r < 8 {
            let zs = self.broadcast_partner(&out);
            let z = self.operand(&zs, Elem::F32);
            let out = broadcast(&out, &z.shape)?;
            return self.emit("elemwise", &[x, &y, &z], &[("mode", "\"fma3\"".into())], &out, Elem::F32);
        }
        if r < 16 && y.exact {
            return self.emit("elemwise", &[x, &y], &[("mode", "\"div\"".into())], &out, Elem::F32);
        }
        if r < 20 && x.exact && y.exact {
            return self.emit("elemwise", &[x, &y], &[("mode", "\"pow\"".into())], &out, Elem::F32);
        }
        if r < 24 && x.exact {
            // Division by a power of two is exact in f32 and f64 alike, so floor sees equal quotients.
            let d = self.c.pick(&["0.5", "2.0", "4.0"]);
            let name = format!("%c{}", self.next);
            self.next += 1;
            self.lines
                .push(format!("{name} = graph.const() {{value = dense<{d}> : tensor<1xf32>}} : () -> tensor<1xf32>"));
            let c = Val { name, shape: vec![1], elem: Elem::F32, exact: true };
            let out = broadcast(&x.shape, &[1])?;
            return self.emit_exact("elemwise", &[x, &c], &[("mode", "\"floor_div\"".into())], &out, true);
        }
        let mode = self.c.pick(&[
            "add",
            "sub",
            "mul",
            "max",
            "min",
            "fuse_add_relu",
            "fuse_add_sigmoid",
            "fuse_add_h_swish",
            "log_sum_exp",
        ]);
        let (a, b) = if self.c.chance(50) { (x, &y) } else { (&y, x) };
        let exact = a.exact && b.exact && matches!(mode, "max" | "min");
        self.emit_exact("elemwise", &[a, b], &[("mode", format!("{mode:?}"))], &out, exact)
    }

    fn conv(&mut self, x: &Val) -> Option<Val> {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let mut groups: Vec<usize> = (1..=c).filter(|&g| c.is_multiple_of(g)).collect();
        groups.push(1);
        if c > 1 {
            groups.push(c);
        }
        let g = self.c.pick(&groups);
        let oc = if g == 1 {
            self.c.pick(&[1, 2, 3, 4, 6, 8, 8, 12, 16, 16])
        } else {
            let per = self.c.pick(&[1, 1, 2]);
            if g * per > 16 { g } else { g * per }
        };
        let kh = self.c.pick(&[1, 2, 3, 3]);
        let kw = if self.c.chance(75) { kh } else { self.c.pick(&[1, 2, 3]) };
        let sh = self.c.pick(&[1, 1, 2]);
        let sw = if self.c.chance(80) { sh } else { self.c.pick(&[1, 2]) };
        let dil = if self.c.chance(85) { 1 } else { 2 };
        let ph = self.c.below(kh.min(3));
        let pw = if self.c.chance(80) && ph < kw { ph } else { self.c.below(kw.min(3)) };
        let eh = dil * (kh - 1) + 1;
        let ew = dil * (kw - 1) + 1;
        if h + 2 * ph < eh || w + 2 * pw < ew {
            return None;
        }
        let oh = (h + 2 * ph - eh) / sh + 1;
        let ow = (w + 2 * pw - ew) / sw + 1;
        let out = vec![n, oc, oh, ow];
        if out.iter().product::<usize>() > MAX_ELEMS {
            return None;
        }
        let wshape = [oc, c / g, kh, kw];
        let wv = if wshape.iter().product::<usize>() <= 256 && self.c.chance(25) {
            self.constant(&wshape, Elem::F32, false)
        } else {
            self.input(&wshape, Elem::F32)
        };
        let attrs = vec![
            ("dilation", ints(&[dil as i64, dil as i64])),
            ("group", g.to_string()),
            ("pad", ints(&[ph as i64, pw as i64])),
            ("stride", ints(&[sh as i64, sw as i64])),
        ];
        if self.c.chance(20) {
            return self.emit("conv2d", &[x, &wv], &attrs, &out, Elem::F32);
        }
        let b = self.operand(&[1, oc, 1, 1], Elem::F32);
        let mut attrs = attrs;
        let nl = self.c.pick(&["identity", "relu", "sigmoid", "h_swish"]);
        attrs.push(("nonlinearity", format!("{nl:?}")));
        self.has_conv_bias = true;
        if self.c.chance(20) {
            let z = self.operand(&out, Elem::F32);
            self.emit("conv_bias", &[x, &wv, &b, &z], &attrs, &out, Elem::F32)
        } else {
            self.emit("conv_bias", &[x, &wv, &b], &attrs, &out, Elem::F32)
        }
    }

    fn pool(&mut self, x: &Val) -> Option<Val> {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        match self.c.below(10) {
            0 | 1 => self.emit("global_avg_pool", &[x], &[], &[n, c, 1, 1], Elem::F32),
            2 | 3 => {
                let (oh, ow) = (self.c.range(1, h), self.c.range(1, w));
                let mode = self.c.pick(&["max", "average"]);
                let attrs = [("mode", format!("{mode:?}")), ("output", ints(&[oh as i64, ow as i64]))];
                self.emit_exact("adaptive_pooling", &[x], &attrs, &[n, c, oh, ow], x.exact && mode == "max")
            }
            _ => {
                let wh = self.c.range(1, 3);
                let ww = if self.c.chance(70) { wh } else { self.c.range(1, 3) };
                let ph = self.c.below(wh);
                let pw = if ph < ww && self.c.chance(70) { ph } else { self.c.below(ww) };
                let sh = self.c.range(1, 2);
                let sw = if self.c.chance(80) { sh } else { self.c.range(1, 2) };
                if h + 2 * ph < wh || w + 2 * pw < ww {
                    return None;
                }
                let out = [n, c, (h + 2 * ph - wh) / sh + 1, (w + 2 * pw - ww) / sw + 1];
                let mode = self.c.pick(&["max", "average", "average_count_exclude_padding"]);
                let attrs = [
                    ("mode", format!("{mode:?}")),
                    ("pad", ints(&[ph as i64, pw as i64])),
                    ("stride", ints(&[sh as i64, sw as i64])),
                    ("window", ints(&[wh as i64, ww as i64])),
                ];
                self.emit_exact("pooling", &[x], &attrs, &out, x.exact && mode == "max")
            }
        }
    }

    fn reshape(&mut self, x: &Val, shape: &[usize]) -> Option<Val> {
        let mut attr: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        if !attr.is_empty() && self.c.chance(30) {
            let i = self.c.below(attr.len());
            attr[i] = -1;
        }
        self.emit_exact("reshape", &[x], &[("shape", ints(&attr))], shape, x.exact)
    }

    fn matmul(&mut self, x: &Val) -> Option<Val> {
        let x = match x.shape.len() {
            1 => self.reshape(x, &[1, x.shape[0]])?,
            4.. => {
                let rest: usize = x.shape[1..].iter().product();
                if rest > 256 {
                    return None;
                }
                self.reshape(x, &[x.shape[0], rest])?
            }
            _ => x.clone(),
        };
        let batched = x.shape.len() == 3;
        let (lead, m0, m1) =
            if batched { (vec![x.shape[0]], x.shape[1], x.shape[2]) } else { (vec![], x.shape[0], x.shape[1]) };
        let ta = self.c.chance(20);
        let (m, k) = if ta { (m1, m0) } else { (m0, m1) };
        if k > 256 {
            return None;
        }
        let nn = self.c.range(1, 16);
        let tb = self.c.chance(40);
        let mut bshape = lead.clone();
        bshape.extend(if tb { [nn, k] } else { [k, nn] });
        let b = self.operand(&bshape, Elem::F32);
        let mut attrs = Vec::new();
        if ta {
            attrs.push(("transpose_a", "true".to_string()));
        }
        if tb {
            attrs.push(("transpose_b", "true".to_string()));
        }
        let mut out = lead;
        out.extend([m, nn]);
        let op = if batched { "batched_matmul" } else { "matmul" };
        let y = self.emit(op, &[&x, &b], &attrs, &out, Elem::F32)?;
        if !self.c.chance(50) {
            return Some(y);
        }
        let bias_shape = match self.c.below(3) {
            0 => vec![nn],
            1 => {
                let mut s = vec![1; out.len() - 1];
                s.push(nn);
                s
            }
            _ => out.clone(),
        };
        let bias = self.operand(&bias_shape, Elem::F32);
        self.emit("elemwise", &[&y, &bias], &[("mode", "\"add\"".into())], &out, Elem::F32)
    }

    fn axis(&mut self, rank: usize) -> (usize, i64) {
        let a = self.c.below(rank);
        let text = if self.c.chance(30) { a as i64 - rank as i64 } else { a as i64 };
        (a, text)
    }

    fn reduce(&mut self, x: &Val) -> Option<Val> {
        let (a, at) = self.axis(x.shape.len());
        let keep = self.c.chance(50);
        let mode = if x.elem == Elem::I32 {
            self.c.pick(&["sum", "max", "min"])
        } else if x.exact {
            self.c.pick(&["sum", "mean", "max", "min", "prod"])
        } else {
            // A product multiplies relative errors: only of exact values.
            self.c.pick(&["sum", "mean", "max", "min"])
        };
        let mut out = x.shape.clone();
        if keep {
            out[a] = 1;
        } else {
            out.remove(a);
        }
        let attrs = [("axis", at.to_string()), ("keepdim", keep.to_string()), ("mode", format!("{mode:?}"))];
        let exact = x.exact && (matches!(mode, "max" | "min") || x.elem == Elem::I32);
        self.emit_exact("reduce", &[x], &attrs, &out, exact)
    }

    fn concat(&mut self, x: &Val) -> Option<Val> {
        let (a, at) = self.axis(x.shape.len());
        let k = self.c.range(2, 3);
        let mut parts = vec![x.clone()];
        for _ in 1..k {
            let p = if self.c.chance(20) {
                x.clone()
            } else {
                let mut s = x.shape.clone();
                s[a] = self.c.range(1, 4);
                self.operand(&s, x.elem)
            };
            let at = self.c.below(parts.len() + 1);
            parts.insert(at, p);
        }
        let mut out = x.shape.clone();
        out[a] = parts.iter().map(|p| p.shape[a]).sum();
        let exact = parts.iter().all(|p| p.exact);
        let refs: Vec<&Val> = parts.iter().collect();
        self.emit_exact("concat", &refs, &[("axis", at.to_string())], &out, exact)
    }

    fn dimshuffle(&mut self, x: &Val) -> Option<Val> {
        let rank = x.shape.len();
        let mut pattern: Vec<i64> = (0..rank as i64).collect();
        for i in (1..rank).rev() {
            let j = self.c.below(i + 1);
            pattern.swap(i, j);
        }
        if rank < 5 && self.c.chance(20) {
            let at = self.c.below(rank + 1);
            pattern.insert(at, -1);
        }
        let out: Vec<usize> = pattern.iter().map(|&p| if p < 0 { 1 } else { x.shape[p as usize] }).collect();
        self.emit_exact("dimshuffle", &[x], &[("pattern", ints(&pattern))], &out, x.exact)
    }

    fn softmax(&mut self, x: &Val) -> Option<Val> {
        let (_, at) = self.axis(x.shape.len());
        self.emit("softmax", &[x], &[("axis", at.to_string())], &x.shape.clone(), Elem::F32)
    }

    fn reshape_any(&mut self, x: &Val) -> Option<Val> {
        let total: usize = x.shape.iter().product();
        let shape = match self.c.below(3) {
            0 => vec![total],
            1 => {
                let divs: Vec<usize> = (1..=total).filter(|&d| total.is_multiple_of(d)).collect();
                let d = self.c.pick(&divs);
                vec![d, total / d]
            }
            _ if x.shape.len() >= 2 => {
                let i = self.c.below(x.shape.len() - 1);
                let mut s = x.shape.clone();
                let merged = s[i] * s[i + 1];
                s.splice(i..i + 2, [merged]);
                s
            }
            _ => vec![1, total],
        };
        self.reshape(x, &shape)
    }

    fn subtensor(&mut self, x: &Val) -> Option<Val> {
        let a = self.c.below(x.shape.len());
        let n = x.shape[a];
        if n < 2 {
            return None;
        }
        let (begin, end, step, len) = if self.c.chance(25) {
            let b = self.c.range(1, n - 1);
            let e = self.c.below(b);
            (b as i64, e as i64, -1, b - e)
        } else {
            let b = self.c.below(n);
            let e = self.c.range(b + 1, n);
            let s = self.c.pick(&[1, 1, 2]);
            (b as i64, e as i64, s as i64, (e - b).div_ceil(s))
        };
        let mut out = x.shape.clone();
        out[a] = len;
        let attrs =
            [("axes", ints(&[a as i64])), ("begin", ints(&[begin])), ("end", ints(&[end])), ("step", ints(&[step]))];
        self.emit_exact("subtensor", &[x], &attrs, &out, x.exact)
    }

    fn pad(&mut self, x: &Val) -> Option<Val> {
        let mode = self.c.pick(&["constant", "constant", "edge", "reflect"]);
        let mut before = Vec::new();
        let mut after = Vec::new();
        for &d in &x.shape {
            let limit = if mode == "reflect" { (d - 1).min(2) } else { 2 };
            let p = |c: &mut Choices<'_>| if c.chance(50) { 0 } else { c.range(0, limit) };
            before.push(p(&mut self.c) as i64);
            after.push(p(&mut self.c) as i64);
        }
        let out: Vec<usize> =
            x.shape.iter().zip(before.iter().zip(&after)).map(|(&d, (&b, &a))| d + b as usize + a as usize).collect();
        let value = if x.elem == Elem::I32 { "2.0" } else { self.c.pick(&["0.0", "1.5", "-2.0"]) };
        let attrs = [
            ("after", ints(&after)),
            ("before", ints(&before)),
            ("mode", format!("{mode:?}")),
            ("value", value.to_string()),
        ];
        self.emit_exact("pad", &[x], &attrs, &out, x.exact)
    }

    fn broadcast_op(&mut self, x: &Val) -> Option<Val> {
        let mut out: Vec<usize> = x.shape.iter().map(|&d| if d == 1 { self.c.range(1, 4) } else { d }).collect();
        if out.len() < 4 && self.c.chance(40) {
            out.insert(0, self.c.range(1, 3));
        }
        let attr: Vec<i64> = out.iter().map(|&d| d as i64).collect();
        self.emit_exact("broadcast", &[x], &[("shape", ints(&attr))], &out, x.exact)
    }

    fn typecvt(&mut self, x: &Val) -> Option<Val> {
        let to = if x.elem == Elem::F32 { Elem::I32 } else { Elem::F32 };
        let v = self.emit("typecvt", &[x], &[("dtype", to.name().to_string())], &x.shape.clone(), to)?;
        self.vals.last_mut().expect("just pushed").exact = true;
        Some(Val { exact: true, ..v })
    }

    fn batch_norm(&mut self, x: &Val) -> Option<Val> {
        let p = [1, x.shape[1], 1, 1];
        let scale = self.operand(&p, Elem::F32);
        let bias = self.operand(&p, Elem::F32);
        let mean = self.operand(&p, Elem::F32);
        let var = self.constant(&p, Elem::F32, true);
        self.emit(
            "batch_norm",
            &[x, &scale, &bias, &mean, &var],
            &[("epsilon", "1e-05".into())],
            &x.shape.clone(),
            Elem::F32,
        )
    }

    /// One random op on `x`, or `None` when the pick does not apply.
    fn op(&mut self, x: &Val) -> Option<Val> {
        let f32 = x.elem == Elem::F32;
        let rank = x.shape.len();
        let image = f32 && rank == 4;
        match self.c.below(110) {
            0..=13 => self.unary(x),
            14..=31 => self.binary(x),
            32..=45 if image => self.conv(x),
            46..=53 if image => self.pool(x),
            54..=61 if f32 && rank >= 1 => self.matmul(x),
            62..=67 if rank >= 1 => self.reduce(x),
            68..=73 if rank >= 1 => self.concat(x),
            74..=79 if rank >= 1 => self.dimshuffle(x),
            80..=84 if f32 && rank >= 1 => self.softmax(x),
            85..=88 => self.reshape_any(x),
            89..=92 if rank >= 1 => self.subtensor(x),
            93..=96 if rank >= 1 => self.pad(x),
            97..=99 => self.broadcast_op(x),
            100..=102 if x.exact => self.typecvt(x),
            103..=105 if image => self.batch_norm(x),
            _ if self.c.chance(50) => self.unary(x),
            _ => self.binary(x),
        }
    }
}

/// The numpy broadcast of two shapes, if they broadcast.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= n { s[i + s.len() - n] } else { 1 };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// A small random graph module for the `jit_vs_reference` fuzz target, as IR
/// text: one function `@main` of at most 8 graph ops (elementwise chains with
/// broadcasting, conv / conv_bias, pooling, (batched) matmul + bias, reduce,
/// concat, dimshuffle, softmax, reshape, subtensor, pad, broadcast, typecvt,
/// batch_norm) on static shapes of at most 4096 elements, mostly f32. Every
/// choice is read from `data` (a byte per choice, then a generator seeded
/// from its hash), so equal bytes give equal modules.
///
/// The text may start with a `// pipeline: TEXT` line: an NCHW88 / NCHW44
/// conversion to run before the JIT's lowering when the graph has a
/// `conv_bias`, or a lowering pipeline other than the engine's default
/// (`strata::JitOptions::lowering_pipeline` with loop fusion or without
/// epilogue fusion, or a bare `lower-graph-to-loops`).
pub fn random_jit_module(data: &[u8]) -> String {
    let mut g = JitGen {
        c: Choices::new(data),
        args: Vec::new(),
        vals: Vec::new(),
        lines: Vec::new(),
        next: 0,
        has_conv_bias: false,
    };
    let (shape, elem) = match g.c.below(100) {
        0..=44 => {
            let n = if g.c.chance(85) { 1 } else { 2 };
            let c = g.c.pick(&[1, 2, 3, 4, 4, 8, 8, 16]);
            let h = g.c.range(1, 10);
            let w = if g.c.chance(60) { h } else { g.c.range(1, 10) };
            (vec![n, c, h, w], Elem::F32)
        }
        45..=64 => (vec![g.c.range(1, 8), g.c.range(1, 32)], Elem::F32),
        r => {
            let rank = g.c.range(1, 4);
            let shape = (0..rank).map(|_| g.c.range(1, 5)).collect();
            (shape, if r >= 90 { Elem::I32 } else { Elem::F32 })
        }
    };
    let mut last = g.input(&shape, elem);
    let n_ops = g.c.range(1, 8);
    for _ in 0..n_ops {
        let x = if g.c.chance(70) { last.clone() } else { g.vals[g.c.below(g.vals.len())].clone() };
        // A pick that does not apply (or would be too large) leaves the graph as it is.
        if let Some(v) = g.op(&x) {
            last = v;
        }
    }
    let mut outs = vec![last.clone()];
    match g.c.below(100) {
        0..=24 => {
            let v = g.vals[g.c.below(g.vals.len())].clone();
            outs.push(v);
        }
        25..=27 => outs.push(last),
        _ => {}
    }
    let mut text = String::new();
    if g.has_conv_bias && g.c.chance(40) {
        let pipeline = g.c.pick(&[
            "nchwxx{layout=nchw88}",
            "nchwxx{layout=nchw44}",
            "padding-channel{block=8},nchwxx{block=8},cancel-relayouts",
            "padding-channel{block=4},nchwxx{block=4},cancel-relayouts,canonicalize,dce",
        ]);
        text.push_str(&format!("// pipeline: {pipeline}\n"));
    } else if g.c.chance(35) {
        let default = strata::JitOptions::default();
        let pipeline = match g.c.below(6) {
            0..=2 => strata::JitOptions { fuse_dimshuffle: true, fuse_reduce: true, ..default }.lowering_pipeline(),
            3 => strata::JitOptions { fuse_reduce: true, ..default }.lowering_pipeline(),
            4 => strata::JitOptions { fuse: false, ..default }.lowering_pipeline(),
            _ => "lower-graph-to-loops".to_string(),
        };
        text.push_str(&format!("// pipeline: {pipeline}\n"));
    }
    let args: Vec<String> = g.args.iter().map(|a| format!("{}: {}", a.name, ty_text(&a.shape, a.elem))).collect();
    let results: Vec<String> = outs.iter().map(|v| ty_text(&v.shape, v.elem)).collect();
    let results = if results.len() == 1 { results[0].clone() } else { format!("({})", results.join(", ")) };
    text.push_str(&format!("func @main({}) -> {results} {{\n", args.join(", ")));
    for l in &g.lines {
        text.push_str(&format!("  {l}\n"));
    }
    let names: Vec<&str> = outs.iter().map(|v| v.name.as_str()).collect();
    text.push_str(&format!("  return({})\n}}\n", names.join(", ")));
    text
}
