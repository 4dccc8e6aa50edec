//! Module → FlatBuffer.

use super::{FORMAT_MAJOR, FORMAT_MINOR, FResult, FormatError, ModelInfo, elem_to_fb, fb, layout_to_fb};
use flatbuffers::{FlatBufferBuilder, WIPOffset};
use std::collections::HashMap;
use strata_ir::{
    Attr, AttrData, BlockId, Context, DenseStorage, Dim, ElemType, OpId, TensorData, Ty, TypeData, ValueId,
};

/// Alignment of inline (FBS_V2) tensor data within the file.
pub(crate) const INLINE_ALIGN: usize = 8;

struct Writer<'a, 'b> {
    ctx: &'a Context,
    /// `Some` for the FBS layout: tensor bytes go to this raw region.
    raw: Option<Vec<u8>>,
    fbb: FlatBufferBuilder<'b>,
    types: Vec<WIPOffset<fb::Type<'b>>>,
    type_ids: HashMap<Ty, u32>,
    values: Vec<WIPOffset<fb::Value<'b>>>,
    value_ids: HashMap<ValueId, u32>,
    tensors: Vec<WIPOffset<fb::Tensor<'b>>>,
    tensor_ids: HashMap<Attr, u32>,
}

/// Serialises `module` and `info` into a model file (FBS_V2-like layout).
pub fn write_model(ctx: &Context, module: OpId, info: &ModelInfo) -> FResult<Vec<u8>> {
    write_model_as(ctx, module, info, super::DumpFormat::FbsV2)
}

/// Serialises `module` and `info` in `format`.
pub fn write_model_as(ctx: &Context, module: OpId, info: &ModelInfo, format: super::DumpFormat) -> FResult<Vec<u8>> {
    let mut w = Writer {
        ctx,
        raw: matches!(format, super::DumpFormat::Fbs).then(Vec::new),
        fbb: FlatBufferBuilder::with_capacity(1 << 16),
        types: Vec::new(),
        type_ids: HashMap::new(),
        values: Vec::new(),
        value_ids: HashMap::new(),
        tensors: Vec::new(),
        tensor_ids: HashMap::new(),
    };
    let module_op = w.op(module)?;
    let testcases: Vec<_> = info
        .testcases
        .iter()
        .map(|tc| {
            let mut named = |list: &[(String, TensorData)]| {
                let items: Vec<_> = list
                    .iter()
                    .map(|(name, t)| {
                        let idx = w.push_tensor(Some(name), t, None);
                        let name = w.fbb.create_string(name);
                        fb::NamedTensor::create(&mut w.fbb, &fb::NamedTensorArgs { name: Some(name), tensor: idx })
                    })
                    .collect();
                w.fbb.create_vector(&items)
            };
            let inputs = named(&tc.inputs);
            let outputs = named(&tc.outputs);
            fb::Testcase::create(
                &mut w.fbb,
                &fb::TestcaseArgs {
                    inputs: Some(inputs),
                    outputs: Some(outputs),
                    maxerr: tc.maxerr,
                    silent: tc.silent,
                },
            )
        })
        .collect();
    let (main_args, main_results) = main_values(ctx, module);
    let inputs = w.io_list(&info.inputs, &main_args)?;
    let outputs = w.io_list(&info.outputs, &main_results)?;
    let metadata = info.metadata.as_ref().map(|m| {
        let user_info = w.fbb.create_vector(&m.user_info);
        fb::Metadata::create(
            &mut w.fbb,
            &fb::MetadataArgs {
                is_valid: m.is_valid,
                graph_modified: m.graph_modified,
                user_info: Some(user_info),
                optimize_options: m.optimize_options,
            },
        )
    });
    let producer = w.fbb.create_string(&info.producer);
    let types = w.fbb.create_vector(&w.types.clone());
    let values = w.fbb.create_vector(&w.values.clone());
    let tensors = w.fbb.create_vector(&w.tensors.clone());
    let testcases = w.fbb.create_vector(&testcases);
    let model = fb::Model::create(
        &mut w.fbb,
        &fb::ModelArgs {
            producer: Some(producer),
            format_major: FORMAT_MAJOR,
            format_minor: FORMAT_MINOR,
            model_version: info.model_version,
            types: Some(types),
            values: Some(values),
            tensors: Some(tensors),
            module: Some(module_op),
            inputs: Some(inputs),
            outputs: Some(outputs),
            metadata,
            testcases: Some(testcases),
        },
    );
    Ok(match w.raw {
        None => {
            fb::finish_size_prefixed_model_buffer(&mut w.fbb, model);
            w.fbb.finished_data().to_vec()
        }
        Some(raw) => {
            fb::finish_model_buffer(&mut w.fbb, model);
            super::fbs_file(&raw, w.fbb.finished_data())
        }
    })
}

/// Arguments and returned values of `@main` (empty when there is none).
pub(crate) fn main_values(ctx: &Context, module: OpId) -> (Vec<ValueId>, Vec<ValueId>) {
    for &f in ctx.body_ops(module) {
        let is_main =
            ctx.op_attr(f, "sym_name").is_some_and(|a| matches!(ctx.attr(a), AttrData::Str(s) if s == "main"));
        if !is_main {
            continue;
        }
        let Some(body) = ctx.body(f, 0) else { continue };
        let args = ctx.block(body).args.clone();
        let results = ctx.block(body).ops.last().map(|&r| ctx.op(r).operands.clone()).unwrap_or_default();
        return (args, results);
    }
    (Vec::new(), Vec::new())
}

impl<'a, 'b> Writer<'a, 'b> {
    fn ty(&mut self, ty: Ty) -> u32 {
        if let Some(&i) = self.type_ids.get(&ty) {
            return i;
        }
        let data = self.ctx.ty(ty).clone();
        let (inputs, results) = match &data {
            TypeData::Func(f) => {
                let ins: Vec<u32> = f.inputs.iter().map(|&t| self.ty(t)).collect();
                let outs: Vec<u32> = f.results.iter().map(|&t| self.ty(t)).collect();
                (Some(self.fbb.create_vector(&ins)), Some(self.fbb.create_vector(&outs)))
            }
            _ => (None, None),
        };
        let lanes_shape: Vec<Dim>;
        let (kind, shape, elem, layout, strides) = match &data {
            TypeData::Tensor(t) => (fb::TypeKind::Tensor, Some(&t.shape), Some(t.elem), t.layout, None),
            TypeData::Buffer(b) => (fb::TypeKind::Buffer, Some(&b.shape), Some(b.elem), b.layout, b.strides.as_ref()),
            TypeData::Index => (fb::TypeKind::Index, None, None, strata_ir::Layout::Nchw, None),
            TypeData::Scalar(e) => (fb::TypeKind::Scalar, None, Some(*e), strata_ir::Layout::Nchw, None),
            // A vector is stored as a scalar kind with a one-dimension shape (the lane
            // count): no schema change, and older readers reject the shape.
            TypeData::Vector(v) => {
                lanes_shape = vec![Dim::Fixed(u64::from(v.lanes))];
                (fb::TypeKind::Scalar, Some(&lanes_shape), Some(v.elem), strata_ir::Layout::Nchw, None)
            }
            TypeData::Func(_) => (fb::TypeKind::Func, None, None, strata_ir::Layout::Nchw, None),
        };
        let shape = shape.map(|dims| {
            let items: Vec<_> = dims
                .iter()
                .map(|&d| match d {
                    Dim::Fixed(n) => fb::Dim::create(&mut self.fbb, &fb::DimArgs { fixed: n, sym: None }),
                    Dim::Sym(s) => {
                        let name = self.fbb.create_string(self.ctx.str(s));
                        fb::Dim::create(&mut self.fbb, &fb::DimArgs { fixed: 0, sym: Some(name) })
                    }
                })
                .collect();
            self.fbb.create_vector(&items)
        });
        let dtype = elem.map(|e| self.dtype(e));
        let has_strides = strides.is_some();
        let strides = strides.map(|s| self.fbb.create_vector(s));
        let t = fb::Type::create(
            &mut self.fbb,
            &fb::TypeArgs { kind, shape, dtype, layout: layout_to_fb(layout), strides, has_strides, inputs, results },
        );
        let i = self.types.len() as u32;
        self.types.push(t);
        self.type_ids.insert(ty, i);
        i
    }

    fn dtype(&mut self, e: ElemType) -> WIPOffset<fb::DType<'b>> {
        let (kind, scale, zero_point) = elem_to_fb(e);
        fb::DType::create(&mut self.fbb, &fb::DTypeArgs { kind, scale, zero_point })
    }

    fn push_tensor(&mut self, name: Option<&str>, t: &TensorData, key: Option<Attr>) -> u32 {
        if let Some(i) = key.and_then(|k| self.tensor_ids.get(&k)) {
            return *i;
        }
        let dtype = self.dtype(t.elem());
        let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
        let shape = self.fbb.create_vector(&shape);
        let (data, offset, size) = match &mut self.raw {
            Some(raw) => {
                while raw.len() % super::RAW_ALIGN != 0 {
                    raw.push(0);
                }
                let offset = raw.len() as u64;
                raw.extend_from_slice(t.bytes());
                (None, offset, t.bytes().len() as u64)
            }
            None => {
                // The builder writes back to front and keeps the finished buffer a
                // multiple of its largest alignment (8: there are `ulong` fields),
                // so data whose end distance is a multiple of 8 starts 8-aligned
                // in the file: every element can be read in place. Pad to get there.
                let len = t.bytes().len();
                while !(self.fbb.unfinished_data().len() + len).next_multiple_of(4).is_multiple_of(INLINE_ALIGN) {
                    self.fbb.push(0u8);
                }
                (Some(self.fbb.create_vector(t.bytes())), 0, 0)
            }
        };
        let name = name.map(|n| self.fbb.create_string(n));
        let off = fb::Tensor::create(
            &mut self.fbb,
            &fb::TensorArgs { name, dtype: Some(dtype), shape: Some(shape), data, offset, size },
        );
        let i = self.tensors.len() as u32;
        self.tensors.push(off);
        if let Some(k) = key {
            self.tensor_ids.insert(k, i);
        }
        i
    }

    fn value(&mut self, v: ValueId) -> u32 {
        if let Some(&i) = self.value_ids.get(&v) {
            return i;
        }
        let ty = self.ty(self.ctx.value_type(v));
        let name = self.ctx.value(v).name.map(|s| self.fbb.create_string(self.ctx.str(s)));
        let off = fb::Value::create(&mut self.fbb, &fb::ValueArgs { ty, name });
        let i = self.values.len() as u32;
        self.values.push(off);
        self.value_ids.insert(v, i);
        i
    }

    fn attr(&mut self, a: Attr) -> FResult<WIPOffset<fb::Attr<'b>>> {
        let data = self.ctx.attr(a).clone();
        let mut args = fb::AttrArgs::default();
        match &data {
            AttrData::Bool(b) => {
                args.kind = fb::AttrKind::Bool;
                args.b = *b;
            }
            AttrData::Int(i) => {
                args.kind = fb::AttrKind::Int;
                args.i = *i;
            }
            AttrData::Float(f) => {
                args.kind = fb::AttrKind::Float;
                args.f = f.get();
            }
            AttrData::Str(s) => {
                args.kind = fb::AttrKind::Str;
                args.s = Some(self.fbb.create_string(s));
            }
            AttrData::SymbolRef(s) => {
                args.kind = fb::AttrKind::SymbolRef;
                args.s = Some(self.fbb.create_string(s));
            }
            AttrData::Array(items) => {
                args.kind = fb::AttrKind::Array;
                let items: Vec<_> = items.iter().map(|&x| self.attr(x)).collect::<FResult<_>>()?;
                args.items = Some(self.fbb.create_vector(&items));
            }
            AttrData::Dict(entries) => {
                args.kind = fb::AttrKind::Dict;
                let items: Vec<_> = entries.iter().map(|(_, x)| self.attr(*x)).collect::<FResult<_>>()?;
                let keys: Vec<_> = entries.iter().map(|(k, _)| self.fbb.create_string(k)).collect();
                args.items = Some(self.fbb.create_vector(&items));
                args.keys = Some(self.fbb.create_vector(&keys));
            }
            AttrData::Type(t) => {
                args.kind = fb::AttrKind::Type;
                args.ty = self.ty(*t);
            }
            AttrData::Layout(l) => {
                args.kind = fb::AttrKind::Layout;
                args.layout = layout_to_fb(*l);
            }
            AttrData::Dense(d) => {
                args.ty = self.ty(d.ty);
                match &d.storage {
                    DenseStorage::Data(t) => {
                        args.kind = fb::AttrKind::Dense;
                        args.tensor = self.push_tensor(None, t, Some(a));
                    }
                    DenseStorage::Elided { hash } => {
                        args.kind = fb::AttrKind::ElidedDense;
                        args.hash = *hash;
                    }
                }
            }
        }
        Ok(fb::Attr::create(&mut self.fbb, &args))
    }

    fn block(&mut self, b: BlockId) -> FResult<WIPOffset<fb::Region<'b>>> {
        let args: Vec<u32> = self.ctx.block(b).args.clone().into_iter().map(|a| self.value(a)).collect();
        let ops: Vec<_> = self.ctx.block(b).ops.clone().into_iter().map(|o| self.op(o)).collect::<FResult<_>>()?;
        let args = self.fbb.create_vector(&args);
        let ops = self.fbb.create_vector(&ops);
        Ok(fb::Region::create(&mut self.fbb, &fb::RegionArgs { args: Some(args), ops: Some(ops) }))
    }

    fn op(&mut self, op: OpId) -> FResult<WIPOffset<fb::Operator<'b>>> {
        let ctx = self.ctx;
        let data = ctx.op(op).clone();
        let operands: Vec<u32> = data.operands.iter().map(|&v| self.value(v)).collect();
        let mut regions = Vec::new();
        for &r in &data.regions {
            let blocks = &ctx.region(r).blocks;
            if blocks.len() != 1 {
                return Err(FormatError::Write(format!(
                    "`{}` has a region with {} blocks",
                    ctx.op_name(op),
                    blocks.len()
                )));
            }
            regions.push(self.block(blocks[0])?);
        }
        let results: Vec<u32> = data.results.iter().map(|&v| self.value(v)).collect();
        let attrs: Vec<_> = data
            .attrs
            .iter()
            .map(|&(k, a)| {
                let value = self.attr(a)?;
                let key = self.fbb.create_string(ctx.str(k));
                Ok(fb::NamedAttr::create(&mut self.fbb, &fb::NamedAttrArgs { key: Some(key), value: Some(value) }))
            })
            .collect::<FResult<_>>()?;
        let name = self.fbb.create_string(ctx.op_name(op));
        let operands = self.fbb.create_vector(&operands);
        let results = self.fbb.create_vector(&results);
        let attrs = self.fbb.create_vector(&attrs);
        let regions = self.fbb.create_vector(&regions);
        let loc_file = data.loc.file.map(|f| self.fbb.create_string(ctx.str(f)));
        let loc_name = data.loc.name.map(|n| self.fbb.create_string(ctx.str(n)));
        Ok(fb::Operator::create(
            &mut self.fbb,
            &fb::OperatorArgs {
                name: Some(name),
                operands: Some(operands),
                results: Some(results),
                attrs: Some(attrs),
                regions: Some(regions),
                loc_file,
                loc_line: data.loc.line,
                loc_col: data.loc.col,
                loc_name,
            },
        ))
    }

    fn io_list(
        &mut self,
        names: &[super::NamedIo],
        values: &[ValueId],
    ) -> FResult<WIPOffset<flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<fb::IO<'b>>>>> {
        if !names.is_empty() && names.len() != values.len() {
            return Err(FormatError::Write(format!("{} names for {} values of @main", names.len(), values.len())));
        }
        // Unnamed inputs/outputs are not listed: the function signature has them.
        let items: Vec<_> = names
            .iter()
            .zip(values)
            .map(|(io, &v)| {
                let value = self.value(v);
                let name = Some(self.fbb.create_string(&io.name));
                let alias = io.alias.as_ref().map(|a| self.fbb.create_string(a));
                fb::IO::create(&mut self.fbb, &fb::IOArgs { name, value, alias })
            })
            .collect();
        Ok(self.fbb.create_vector(&items))
    }
}
