//! Eager tensors: host data with a dtype and a shape, and one method per graph op.
//!
//! Every op goes through [`Tensor::apply`]: outside a trace it runs the op's
//! reference evaluator right away; inside a [trace](crate::trace) the active
//! session records (and, unless symbolic, also executes) or replays it. Methods
//! are `#[track_caller]`, so errors and traced ops carry the caller's location.

use crate::error::{Error, Result, location};
use std::cell::RefCell;
use std::panic::Location;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use strata_ir::{Attr, AttrData, Context, DenseAttr, DenseStorage, ElemType, TensorData, TensorType, TypeData};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) elem: ElemType,
    pub(crate) shape: Vec<usize>,
    pub(crate) data: RefCell<Option<TensorData>>,
    pub(crate) name: RefCell<Option<String>>,
}

/// A host tensor. Cloning is cheap and keeps identity (the same tensor).
#[derive(Clone)]
pub struct Tensor(pub(crate) Rc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("id", &self.0.id)
            .field("elem", &self.0.elem.to_string())
            .field("shape", &self.0.shape)
            .field("has_data", &self.0.data.borrow().is_some())
            .finish()
    }
}

/// An attribute value for an op, independent of any [`Context`].
#[derive(Clone, Debug, PartialEq)]
pub enum AttrVal {
    /// An integer.
    Int(i64),
    /// An array of integers.
    Ints(Vec<i64>),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A bool.
    Bool(bool),
    /// An element type.
    Elem(ElemType),
    /// A dense constant.
    Dense(TensorData),
}

impl AttrVal {
    /// Interns the value in `ctx`.
    pub fn intern(&self, ctx: &mut Context) -> Attr {
        let data = match self {
            AttrVal::Int(v) => AttrData::Int(*v),
            AttrVal::Ints(v) => {
                let items = v.iter().map(|&x| ctx.intern_attr(AttrData::Int(x))).collect();
                AttrData::Array(items)
            }
            AttrVal::Float(v) => AttrData::Float(strata_ir::FloatBits::new(*v)),
            AttrVal::Str(s) => AttrData::Str(s.clone()),
            AttrVal::Bool(b) => AttrData::Bool(*b),
            AttrVal::Elem(e) => AttrData::Type(ctx.intern_type(TypeData::Scalar(*e))),
            AttrVal::Dense(t) => {
                let ty = ctx.tensor_type(TensorType::fixed(&dims_u64(t.shape()), t.elem()));
                AttrData::Dense(DenseAttr { ty, storage: DenseStorage::Data(t.clone()) })
            }
        };
        ctx.intern_attr(data)
    }
}

pub(crate) fn dims_u64(shape: &[usize]) -> Vec<u64> {
    shape.iter().map(|&d| d as u64).collect()
}

/// Op attributes as `(key, value)` pairs.
pub type Attrs = Vec<(&'static str, AttrVal)>;

/// Interns attributes as an op stores them.
pub(crate) fn intern_attrs(ctx: &mut Context, attrs: &[(&'static str, AttrVal)]) -> Vec<(strata_ir::Sym, Attr)> {
    let pairs: Vec<(String, Attr)> = attrs.iter().map(|(k, v)| (k.to_string(), v.intern(ctx))).collect();
    strata_dialects::apply::intern_attrs(ctx, &pairs)
}

thread_local! {
    static EAGER: RefCell<Context> = RefCell::new(strata_dialects::context());
}

impl Tensor {
    pub(crate) fn with_data(data: TensorData) -> Tensor {
        Tensor(Rc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            elem: data.elem(),
            shape: data.shape().to_vec(),
            data: RefCell::new(Some(data)),
            name: RefCell::new(None),
        }))
    }

    pub(crate) fn without_data(elem: ElemType, shape: Vec<usize>) -> Tensor {
        Tensor(Rc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            elem,
            shape,
            data: RefCell::new(None),
            name: RefCell::new(None),
        }))
    }

    /// A tensor from host data (recorded as a constant inside a trace).
    #[track_caller]
    pub fn from_data(data: TensorData) -> Result<Tensor> {
        let t = Tensor::with_data(data);
        crate::trace::session::note_created(&t, Location::caller())?;
        Ok(t)
    }

    /// An `f32` tensor from values and a shape.
    #[track_caller]
    pub fn from_vec(values: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let loc = Location::caller();
        let n = strata_ir::tensor::num_elements(shape);
        if n != Some(values.len()) {
            return Err(invalid(loc, "from_vec", format!("{} values for shape {shape:?}", values.len())));
        }
        Tensor::from_data_at(TensorData::from_f32(shape.to_vec(), &values), loc)
    }

    /// A tensor of `elem` from real values (quantised types quantise them).
    #[track_caller]
    pub fn from_reals(values: &[f64], shape: &[usize], elem: ElemType) -> Result<Tensor> {
        let loc = Location::caller();
        let data = TensorData::from_reals(elem, shape.to_vec(), values).map_err(|e| invalid(loc, "from_reals", e))?;
        Tensor::from_data_at(data, loc)
    }

    /// A scalar (rank-0) `f32` tensor.
    #[track_caller]
    pub fn scalar(v: f32) -> Result<Tensor> {
        Tensor::from_data_at(TensorData::from_f32(vec![], &[v]), Location::caller())
    }

    /// Zeros.
    #[track_caller]
    pub fn zeros(shape: &[usize], elem: ElemType) -> Result<Tensor> {
        Tensor::full(shape, 0.0, elem)
    }

    /// Ones.
    #[track_caller]
    pub fn ones(shape: &[usize], elem: ElemType) -> Result<Tensor> {
        Tensor::full(shape, 1.0, elem)
    }

    /// Every element `value`.
    #[track_caller]
    pub fn full(shape: &[usize], value: f64, elem: ElemType) -> Result<Tensor> {
        let loc = Location::caller();
        let n = checked_len(shape, loc, "full")?;
        Tensor::from_reals_at(&vec![value; n], shape, elem, loc)
    }

    /// `[start, start + step, …)` below `end`, as a 1-d tensor of `elem`.
    #[track_caller]
    pub fn arange(start: f64, end: f64, step: f64, elem: ElemType) -> Result<Tensor> {
        let loc = Location::caller();
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(invalid(loc, "arange", format!("bad range {start}..{end} step {step}")));
        }
        let n = ((end - start) / step).ceil().max(0.0);
        if n > (1u64 << 31) as f64 {
            return Err(invalid(loc, "arange", format!("{n} elements is too many")));
        }
        let values: Vec<f64> = (0..n as usize).map(|i| start + step * i as f64).collect();
        Tensor::from_reals_at(&values, &[values.len()], elem, loc)
    }

    /// Uniform random values in `[lo, hi)` from a seeded generator.
    #[track_caller]
    pub fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Result<Tensor> {
        let loc = Location::caller();
        let data = TensorData::random_uniform(ElemType::F32, shape.to_vec(), lo, hi, seed)
            .map_err(|e| invalid(loc, "uniform", e))?;
        Tensor::from_data_at(data, loc)
    }

    /// Normal random values (Box–Muller over a seeded generator).
    #[track_caller]
    pub fn normal(shape: &[usize], mean: f64, std: f64, seed: u64) -> Result<Tensor> {
        let loc = Location::caller();
        let n = checked_len(shape, loc, "normal")?;
        let mut rng = strata_ir::tensor::SplitMix64(seed);
        let values: Vec<f64> = (0..n)
            .map(|_| {
                let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
                let u2 = rng.next_f64();
                mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect();
        Tensor::from_reals_at(&values, shape, ElemType::F32, loc)
    }

    fn from_data_at(data: TensorData, loc: &'static Location<'static>) -> Result<Tensor> {
        let t = Tensor::with_data(data);
        crate::trace::session::note_created(&t, loc)?;
        Ok(t)
    }

    fn from_reals_at(
        values: &[f64],
        shape: &[usize],
        elem: ElemType,
        loc: &'static Location<'static>,
    ) -> Result<Tensor> {
        let data = TensorData::from_reals(elem, shape.to_vec(), values).map_err(|e| invalid(loc, "tensor", e))?;
        Tensor::from_data_at(data, loc)
    }

    /// A unique identity (clones share it).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Element type.
    pub fn elem(&self) -> ElemType {
        self.0.elem
    }

    /// Shape (always known: inferred when there is no data).
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.shape.iter().product()
    }

    /// Gives the tensor a name (used for parameters and value names in traced IR).
    pub fn named(self, name: impl Into<String>) -> Tensor {
        *self.0.name.borrow_mut() = Some(name.into());
        self
    }

    /// The name given with [`Tensor::named`].
    pub fn name(&self) -> Option<String> {
        self.0.name.borrow().clone()
    }

    /// Whether the tensor holds data now.
    pub fn has_data(&self) -> bool {
        self.0.data.borrow().is_some()
    }

    /// The data. Inside a trace this is a value read (recorded, and checked on replay).
    #[track_caller]
    pub fn data(&self) -> Result<TensorData> {
        let loc = Location::caller();
        if let Some(r) = crate::trace::session::read_value(self, loc) {
            return r;
        }
        self.peek_data(loc)
    }

    pub(crate) fn peek_data(&self, loc: &'static Location<'static>) -> Result<TensorData> {
        self.0.data.borrow().clone().ok_or_else(|| Error::NoData {
            why: "it was produced by a symbolic or record-only trace and never computed".into(),
            location: location(loc),
        })
    }

    pub(crate) fn set_data(&self, data: TensorData) {
        *self.0.data.borrow_mut() = Some(data);
    }

    /// The real values as `f32` (dequantised for quantised types).
    #[track_caller]
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        Ok(self.data()?.to_reals().into_iter().map(|v| v as f32).collect())
    }

    /// The single element of a one-element tensor.
    #[track_caller]
    pub fn item(&self) -> Result<f32> {
        let loc = Location::caller();
        let v = self.to_vec()?;
        match v.as_slice() {
            [x] => Ok(*x),
            _ => Err(invalid(loc, "item", format!("tensor has {} elements, not 1", v.len()))),
        }
    }

    /// Applies graph op `name` to `inputs` with `attrs` (the generic entry point
    /// behind every op method).
    pub fn apply(
        name: &'static str,
        inputs: &[&Tensor],
        attrs: Attrs,
        loc: &'static Location<'static>,
    ) -> Result<Vec<Tensor>> {
        if let Some(r) = crate::trace::session::apply(name, inputs, &attrs, loc) {
            return r;
        }
        EAGER.with(|ctx| {
            let mut ctx = ctx.borrow_mut();
            let datas: Vec<TensorData> = inputs.iter().map(|t| t.peek_data(loc)).collect::<Result<_>>()?;
            let attrs = intern_attrs(&mut ctx, &attrs);
            let outs =
                strata_dialects::apply::eval(&mut ctx, name, &datas, &attrs).map_err(|m| op_error(name, m, loc))?;
            Ok(outs.into_iter().map(Tensor::with_data).collect())
        })
    }

    /// [`Tensor::apply`] for single-result ops.
    pub fn apply1(
        name: &'static str,
        inputs: &[&Tensor],
        attrs: Attrs,
        loc: &'static Location<'static>,
    ) -> Result<Tensor> {
        let mut outs = Tensor::apply(name, inputs, attrs, loc)?;
        if outs.len() != 1 {
            return Err(op_error(name, format!("expected one result, got {}", outs.len()), loc));
        }
        Ok(outs.remove(0))
    }
}

/// An [`Error::Op`] for `op` at `loc`.
pub(crate) fn op_error(op: &str, message: impl Into<String>, loc: &Location<'_>) -> Error {
    Error::Op { op: op.to_string(), message: message.into(), location: location(loc) }
}

fn invalid(loc: &Location<'_>, what: &str, message: impl std::fmt::Display) -> Error {
    op_error(what, message.to_string(), loc)
}

fn checked_len(shape: &[usize], loc: &Location<'_>, what: &str) -> Result<usize> {
    strata_ir::tensor::num_elements(shape)
        .filter(|&n| n <= 1 << 31)
        .ok_or_else(|| invalid(loc, what, format!("shape {shape:?} is too large")))
}
