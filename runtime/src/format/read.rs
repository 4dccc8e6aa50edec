//! FlatBuffer → module, verified at every step.

use super::{
    FORMAT_MAJOR, FORMAT_MINOR, FResult, FormatError, Metadata, ModelInfo, NamedIo, Testcase, corrupt, elem_from_fb,
    fb, layout_from_fb,
};
use strata_ir::{
    Attr, AttrData, Context, DenseAttr, DenseStorage, Dim, FloatBits, FuncType, InsertPoint, Loc, OpBuild, OpId,
    Rewriter, TensorData, TensorType, Ty, TypeData, ValueId,
};

/// Limits of the FlatBuffers verifier for model files.
fn verifier_options() -> flatbuffers::VerifierOptions {
    flatbuffers::VerifierOptions {
        max_depth: 96,
        max_tables: 50_000_000,
        max_apparent_size: 1 << 34,
        ignore_missing_null_terminator: false,
    }
}

struct Reader<'a, 'c> {
    model: fb::Model<'a>,
    /// The raw tensor region of an FBS file.
    raw: Option<&'a [u8]>,
    rw: Rewriter<'c>,
    types: Vec<Ty>,
    value_tys: Vec<Ty>,
    value_names: Vec<Option<String>>,
    values: Vec<Option<ValueId>>,
}

/// Reads the first model of a file (either layout) into `ctx`: the module and
/// everything else in the file. Later models of an appended file are read with
/// [`read_models`].
pub fn read_model(bytes: &[u8], ctx: &mut Context) -> FResult<(OpId, ModelInfo)> {
    let first = super::split_models(bytes)?.remove(0);
    read_one(&bytes[first], ctx)
}

/// Reads every model of a file (several when models were appended).
pub fn read_models(bytes: &[u8], ctx: &mut Context) -> FResult<Vec<(OpId, ModelInfo)>> {
    let ranges = super::split_models(bytes)?;
    let many = ranges.len() > 1;
    ranges
        .into_iter()
        .enumerate()
        .map(|(k, r)| read_one(&bytes[r], ctx).map_err(|e| if many { prefix_model(k, e) } else { e }))
        .collect()
}

fn prefix_model(k: usize, e: FormatError) -> FormatError {
    match e {
        FormatError::Corrupt(m) => FormatError::Corrupt(format!("model #{k}: {m}")),
        FormatError::Invalid(m) => FormatError::Invalid(format!("model #{k}: {m}")),
        FormatError::NotAModel(m) => FormatError::NotAModel(format!("model #{k}: {m}")),
        other => other,
    }
}

/// Reads the one model that `bytes` holds exactly.
fn read_one(bytes: &[u8], ctx: &mut Context) -> FResult<(OpId, ModelInfo)> {
    let verify = |e: flatbuffers::InvalidFlatbuffer| corrupt(format!("the FlatBuffer does not verify: {e}"));
    let (raw, model) = if bytes.starts_with(super::FBS_MAGIC) {
        let (raw, graph) = super::split_fbs(bytes)?;
        if graph.len() < 8 || !fb::model_buffer_has_identifier(graph) {
            return Err(FormatError::NotAModel(format!("the graph's identifier is not `{}`", super::FILE_IDENTIFIER)));
        }
        (Some(raw), flatbuffers::root_with_opts::<fb::Model>(&verifier_options(), graph).map_err(verify)?)
    } else {
        // `split_models` checked the size prefix and the identifier.
        (None, flatbuffers::size_prefixed_root_with_opts::<fb::Model>(&verifier_options(), bytes).map_err(verify)?)
    };
    let (major, minor) = (model.format_major(), model.format_minor());
    if major > FORMAT_MAJOR {
        return Err(FormatError::NewerVersion {
            file_major: major,
            file_minor: minor,
            ours_major: FORMAT_MAJOR,
            ours_minor: FORMAT_MINOR,
        });
    }
    if major == 0 {
        return Err(corrupt("format version 0 is not a valid version"));
    }
    let mut r = Reader {
        model,
        raw,
        rw: Rewriter::new(ctx),
        types: Vec::new(),
        value_tys: Vec::new(),
        value_names: Vec::new(),
        values: Vec::new(),
    };
    r.read_types()?;
    r.read_values()?;
    let module_fb = model.module().ok_or_else(|| corrupt("the module is missing"))?;
    let module_name = r.rw.ctx().registry().module_op;
    if module_fb.name() != Some(module_name) {
        return Err(corrupt(format!("the top-level op is {:?}, not `{module_name}`", module_fb.name())));
    }
    let module = r.op(module_fb, InsertPoint::Detached)?;
    let info = r.info(module)?;
    let ctx = r.rw.ctx();
    strata_ir::verify(ctx, module, strata_ir::VerifyOptions::default())
        .map_err(|d| FormatError::Invalid(strata_ir::diag::render_all(ctx, &d, None)))?;
    Ok((module, info))
}

fn index(i: u32, len: usize, what: &str) -> FResult<usize> {
    let i = i as usize;
    if i < len { Ok(i) } else { Err(corrupt(format!("{what} index {i} is out of range (there are {len})"))) }
}

impl<'a> Reader<'a, '_> {
    fn read_types(&mut self) -> FResult<()> {
        let Some(types) = self.model.types() else { return Ok(()) };
        for (k, t) in types.iter().enumerate() {
            let earlier = |i: u32| -> FResult<Ty> {
                let i = index(i, k, "function type part (must refer to an earlier type)")?;
                Ok(self.types[i])
            };
            let shape = match t.shape() {
                None => None,
                Some(shape) => {
                    let mut dims = Vec::with_capacity(shape.len());
                    for d in shape.iter() {
                        dims.push(match d.sym() {
                            Some(name) => Dim::Sym(self.rw.ctx_mut().sym(name)),
                            None => Dim::Fixed(d.fixed()),
                        });
                    }
                    Some(dims)
                }
            };
            let need_shape = || shape.clone().ok_or_else(|| corrupt(format!("type #{k} has no shape")));
            let data = match t.kind() {
                fb::TypeKind::Tensor => TypeData::Tensor(TensorType {
                    shape: need_shape()?,
                    elem: elem_from_fb(t.dtype())?,
                    layout: layout_from_fb(t.layout())?,
                }),
                fb::TypeKind::Buffer => {
                    let shape = need_shape()?;
                    let strides = if t.has_strides() {
                        let s: Vec<i64> = t.strides().map(|v| v.iter().collect()).unwrap_or_default();
                        if s.len() != shape.len() {
                            return Err(corrupt(format!("type #{k} has {} strides for rank {}", s.len(), shape.len())));
                        }
                        Some(s)
                    } else {
                        None
                    };
                    TypeData::Buffer(strata_ir::BufferType {
                        shape,
                        elem: elem_from_fb(t.dtype())?,
                        layout: layout_from_fb(t.layout())?,
                        strides,
                    })
                }
                fb::TypeKind::Index => TypeData::Index,
                fb::TypeKind::Scalar => match t.shape() {
                    None => TypeData::Scalar(elem_from_fb(t.dtype())?),
                    Some(dims) => {
                        let lanes = match dims.iter().map(|d| (d.fixed(), d.sym())).collect::<Vec<_>>().as_slice() {
                            [(n, None)] => u32::try_from(*n).ok().filter(|&n| n > 0),
                            _ => None,
                        }
                        .ok_or_else(|| corrupt(format!("type #{k}: a vector type needs one lane count")))?;
                        TypeData::Vector(strata_ir::VectorType { lanes, elem: elem_from_fb(t.dtype())? })
                    }
                },
                fb::TypeKind::Func => {
                    let inputs = t.inputs().map(|v| v.iter().map(earlier).collect::<FResult<Vec<_>>>()).transpose()?;
                    let results =
                        t.results().map(|v| v.iter().map(earlier).collect::<FResult<Vec<_>>>()).transpose()?;
                    TypeData::Func(FuncType {
                        inputs: inputs.unwrap_or_default(),
                        results: results.unwrap_or_default(),
                    })
                }
                other => return Err(corrupt(format!("type #{k} has unknown kind {}", other.0))),
            };
            let ty = self.rw.ctx_mut().intern_type(data);
            self.types.push(ty);
        }
        Ok(())
    }

    fn read_values(&mut self) -> FResult<()> {
        let Some(values) = self.model.values() else { return Ok(()) };
        for v in values.iter() {
            let ty = self.types[index(v.ty(), self.types.len(), "value type")?];
            self.value_tys.push(ty);
            self.value_names.push(v.name().map(str::to_string));
            self.values.push(None);
        }
        Ok(())
    }

    fn tensor(&self, i: u32) -> FResult<(Option<String>, TensorData)> {
        let tensors = self.model.tensors().ok_or_else(|| corrupt("the tensor table is missing"))?;
        let t = tensors.get(index(i, tensors.len(), "tensor")?);
        let elem = elem_from_fb(t.dtype())?;
        let shape: Vec<usize> = t
            .shape()
            .map(|s| s.iter().map(|d| usize::try_from(d).map_err(|_| corrupt("tensor dim does not fit"))).collect())
            .transpose()?
            .unwrap_or_default();
        let bytes: &[u8] = match (t.data(), self.raw) {
            (Some(d), _) => d.bytes(),
            (None, Some(raw)) => {
                let (offset, size) = (t.offset(), t.size());
                let end = offset.checked_add(size).filter(|&e| e <= raw.len() as u64);
                let end = end.ok_or_else(|| {
                    corrupt(format!(
                        "tensor #{i} ({size} bytes at {offset}) lies outside the {}-byte data region",
                        raw.len()
                    ))
                })?;
                &raw[offset as usize..end as usize]
            }
            (None, None) => return Err(corrupt(format!("tensor #{i} has no data"))),
        };
        let data = TensorData::from_bytes(elem, shape, bytes.to_vec().into())
            .map_err(|e| corrupt(format!("tensor #{i}: {e}")))?;
        Ok((t.name().map(str::to_string), data))
    }

    fn attr(&mut self, a: fb::Attr<'a>) -> FResult<Attr> {
        let data = match a.kind() {
            fb::AttrKind::Bool => AttrData::Bool(a.b()),
            fb::AttrKind::Int => AttrData::Int(a.i()),
            fb::AttrKind::Float => AttrData::Float(FloatBits::new(a.f())),
            fb::AttrKind::Str => {
                AttrData::Str(a.s().ok_or_else(|| corrupt("a string attribute has no text"))?.to_string())
            }
            fb::AttrKind::SymbolRef => {
                AttrData::SymbolRef(a.s().ok_or_else(|| corrupt("a symbol attribute has no name"))?.to_string())
            }
            fb::AttrKind::Array => {
                let items =
                    a.items().map(|v| v.iter().map(|x| self.attr(x)).collect::<FResult<Vec<_>>>()).transpose()?;
                AttrData::Array(items.unwrap_or_default())
            }
            fb::AttrKind::Dict => {
                let items = a
                    .items()
                    .map(|v| v.iter().map(|x| self.attr(x)).collect::<FResult<Vec<_>>>())
                    .transpose()?
                    .unwrap_or_default();
                let keys: Vec<String> = a.keys().map(|v| v.iter().map(str::to_string).collect()).unwrap_or_default();
                if keys.len() != items.len() {
                    return Err(corrupt(format!("a dictionary has {} keys for {} values", keys.len(), items.len())));
                }
                let mut entries: Vec<(String, Attr)> = keys.into_iter().zip(items).collect();
                entries.sort_by(|x, y| x.0.cmp(&y.0));
                AttrData::Dict(entries)
            }
            fb::AttrKind::Type => AttrData::Type(self.types[index(a.ty(), self.types.len(), "attribute type")?]),
            fb::AttrKind::Layout => AttrData::Layout(layout_from_fb(a.layout())?),
            fb::AttrKind::Dense | fb::AttrKind::ElidedDense => {
                let ty = self.types[index(a.ty(), self.types.len(), "constant type")?];
                let tt = self
                    .rw
                    .ctx()
                    .ty(ty)
                    .as_tensor()
                    .ok_or_else(|| corrupt("a constant's type is not a tensor"))?
                    .clone();
                let storage = if a.kind() == fb::AttrKind::Dense {
                    let (_, data) = self.tensor(a.tensor())?;
                    let want: Option<Vec<usize>> =
                        tt.static_shape().map(|s| s.into_iter().map(|d| d as usize).collect());
                    if tt.elem != data.elem() || want.as_deref() != Some(data.shape()) {
                        return Err(corrupt(format!(
                            "constant data ({} {:?}) does not match its type",
                            data.elem(),
                            data.shape()
                        )));
                    }
                    DenseStorage::Data(data)
                } else {
                    DenseStorage::Elided { hash: a.hash() }
                };
                AttrData::Dense(DenseAttr { ty, storage })
            }
            other => return Err(corrupt(format!("unknown attribute kind {}", other.0))),
        };
        Ok(self.rw.ctx_mut().intern_attr(data))
    }

    fn define(&mut self, id: u32, v: ValueId) -> FResult<()> {
        let i = index(id, self.values.len(), "value")?;
        if self.values[i].is_some() {
            return Err(corrupt(format!("value {id} is defined twice")));
        }
        self.values[i] = Some(v);
        if let Some(name) = self.value_names[i].clone() {
            self.rw.set_value_name(v, Some(&name));
        }
        Ok(())
    }

    fn op(&mut self, f: fb::Operator<'a>, at: InsertPoint) -> FResult<OpId> {
        let name = f.name().ok_or_else(|| corrupt("an operator has no name"))?.to_string();
        if self.rw.ctx().registry().get(&name).is_none() {
            return Err(corrupt(format!("unknown operator `{name}` (written by a strata with more dialects?)")));
        }
        let mut operands = Vec::new();
        for id in f.operands().map(|v| v.iter().collect::<Vec<u32>>()).unwrap_or_default() {
            let i = index(id, self.values.len(), "operand value")?;
            let v = self.values[i].ok_or_else(|| corrupt(format!("`{name}` uses value {id} before it is defined")))?;
            operands.push(v);
        }
        let mut regions = Vec::new();
        for region in f.regions().map(|v| v.iter().collect::<Vec<_>>()).unwrap_or_default() {
            let (r, block) = self.rw.create_detached_region();
            for id in region.args().map(|v| v.iter().collect::<Vec<u32>>()).unwrap_or_default() {
                let ty = self.value_tys[index(id, self.value_tys.len(), "block argument")?];
                let arg = self.rw.add_block_arg(block, ty);
                self.define(id, arg)?;
            }
            for inner in region.ops().map(|v| v.iter().collect::<Vec<_>>()).unwrap_or_default() {
                self.op(inner, InsertPoint::End(block))?;
            }
            regions.push(r);
        }
        let result_ids: Vec<u32> = f.results().map(|v| v.iter().collect()).unwrap_or_default();
        let result_types: Vec<Ty> = result_ids
            .iter()
            .map(|&id| Ok(self.value_tys[index(id, self.value_tys.len(), "result value")?]))
            .collect::<FResult<_>>()?;
        let mut build = OpBuild::new(name).operands(&operands).results(&result_types);
        for na in f.attrs().map(|v| v.iter().collect::<Vec<_>>()).unwrap_or_default() {
            let key = na.key().ok_or_else(|| corrupt("an attribute has no key"))?.to_string();
            if build.attrs.iter().any(|(k, _)| *k == key) {
                return Err(corrupt(format!("attribute `{key}` appears twice")));
            }
            let value = self.attr(na.value().ok_or_else(|| corrupt(format!("attribute `{key}` has no value")))?)?;
            build.attrs.push((key, value));
        }
        let file = f.loc_file().map(|s| self.rw.ctx_mut().sym(s));
        let lname = f.loc_name().map(|s| self.rw.ctx_mut().sym(s));
        build.loc = Loc { file, line: f.loc_line(), col: f.loc_col(), name: lname };
        build.adopt_regions = regions;
        let op = self.rw.create(build, at);
        let results = self.rw.ctx().op(op).results.clone();
        for (&id, v) in result_ids.iter().zip(results) {
            self.define(id, v)?;
        }
        Ok(op)
    }

    /// Named inputs or outputs; when present they must be exactly `expected`
    /// (the arguments or returned values of `@main`), in order.
    fn io(
        &self,
        list: Option<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::IO<'a>>>>,
        expected: &[ValueId],
        what: &str,
    ) -> FResult<Vec<NamedIo>> {
        let items = list.map(|v| v.iter().collect::<Vec<_>>()).unwrap_or_default();
        if !items.is_empty() && items.len() != expected.len() {
            return Err(corrupt(format!("{} named {what}s for {} {what}s of @main", items.len(), expected.len())));
        }
        let mut out = Vec::new();
        for (io, &want) in items.iter().zip(expected) {
            let i = index(io.value(), self.values.len(), "input/output value")?;
            if self.values[i] != Some(want) {
                let name = io.name().unwrap_or_default();
                return Err(corrupt(format!("named {what} `{name}` does not refer to @main's {what}")));
            }
            out.push(NamedIo {
                name: io.name().unwrap_or_default().to_string(),
                alias: io.alias().map(str::to_string),
            });
        }
        Ok(out)
    }

    fn info(&self, module: OpId) -> FResult<ModelInfo> {
        let m = self.model;
        let (args, results) = super::write::main_values(self.rw.ctx(), module);
        let metadata = m.metadata().map(|md| Metadata {
            is_valid: md.is_valid(),
            graph_modified: md.graph_modified(),
            user_info: md.user_info().map(|v| v.bytes().to_vec()).unwrap_or_default(),
            optimize_options: md.optimize_options(),
        });
        let mut testcases = Vec::new();
        for tc in m.testcases().map(|v| v.iter().collect::<Vec<_>>()).unwrap_or_default() {
            let named = |list: Option<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::NamedTensor<'a>>>>| {
                list.map(|v| v.iter().collect::<Vec<_>>())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|nt| Ok((nt.name().unwrap_or_default().to_string(), self.tensor(nt.tensor())?.1)))
                    .collect::<FResult<Vec<_>>>()
            };
            testcases.push(Testcase {
                inputs: named(tc.inputs())?,
                outputs: named(tc.outputs())?,
                maxerr: tc.maxerr(),
                silent: tc.silent(),
            });
        }
        Ok(ModelInfo {
            producer: m.producer().unwrap_or_default().to_string(),
            model_version: m.model_version(),
            metadata,
            inputs: self.io(m.inputs(), &args, "input")?,
            outputs: self.io(m.outputs(), &results, "output")?,
            testcases,
            format_version: (m.format_major(), m.format_minor()),
        })
    }
}
