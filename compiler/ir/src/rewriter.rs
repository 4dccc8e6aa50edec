//! The [`Rewriter`]: the one way to change IR structure.
//!
//! It keeps use-lists consistent with operands, parents consistent with
//! containment, and records whether anything changed, so passes report
//! `Changed` truthfully without bookkeeping of their own.

use crate::context::{BlockData, Context, Loc, OpData, RegionData, Use, ValueData, ValueDef};
use crate::{Attr, BlockId, OpId, RegionId, Ty, ValueId};

/// Where a new op goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertPoint {
    /// At the end of a block.
    End(BlockId),
    /// Right before an op (in its block).
    Before(OpId),
    /// Right after an op (in its block).
    After(OpId),
    /// Nowhere (a top-level op such as a module).
    Detached,
}

/// Everything needed to create an op.
#[derive(Clone, Debug)]
pub struct OpBuild {
    /// Full op name.
    pub name: String,
    /// Operands.
    pub operands: Vec<ValueId>,
    /// Result types.
    pub result_types: Vec<Ty>,
    /// Attributes (any order; keys must be unique).
    pub attrs: Vec<(String, Attr)>,
    /// Number of regions; each is created with one empty entry block.
    pub regions: usize,
    /// Location.
    pub loc: Loc,
    /// Detached regions (from [`Rewriter::create_detached_region`]) the op takes
    /// over, after its `regions` new ones.
    pub adopt_regions: Vec<RegionId>,
}

impl OpBuild {
    /// An op named `name` with nothing else yet.
    pub fn new(name: impl Into<String>) -> Self {
        OpBuild {
            name: name.into(),
            operands: Vec::new(),
            result_types: Vec::new(),
            attrs: Vec::new(),
            regions: 0,
            loc: Loc::UNKNOWN,
            adopt_regions: Vec::new(),
        }
    }

    /// Sets the operands.
    pub fn operands(mut self, operands: &[ValueId]) -> Self {
        self.operands = operands.to_vec();
        self
    }

    /// Sets the result types.
    pub fn results(mut self, types: &[Ty]) -> Self {
        self.result_types = types.to_vec();
        self
    }

    /// Adds an attribute.
    pub fn attr(mut self, key: impl Into<String>, value: Attr) -> Self {
        self.attrs.push((key.into(), value));
        self
    }

    /// Sets the number of regions.
    pub fn regions(mut self, n: usize) -> Self {
        self.regions = n;
        self
    }

    /// Sets the location.
    pub fn loc(mut self, loc: Loc) -> Self {
        self.loc = loc;
        self
    }
}

/// Mutates IR in a [`Context`], keeping it consistent.
#[derive(Debug)]
pub struct Rewriter<'c> {
    ctx: &'c mut Context,
    changed: bool,
}

impl<'c> Rewriter<'c> {
    /// A rewriter over `ctx`.
    pub fn new(ctx: &'c mut Context) -> Self {
        Rewriter { ctx, changed: false }
    }

    /// Read access.
    pub fn ctx(&self) -> &Context {
        self.ctx
    }

    /// Mutable access for interning types, attributes and strings. Changing the IR
    /// structure through it bypasses use-list maintenance: don't.
    pub fn ctx_mut(&mut self) -> &mut Context {
        self.ctx
    }

    /// Whether any change was made through this rewriter.
    pub fn changed(&self) -> bool {
        self.changed
    }

    fn new_value(&mut self, ty: Ty, def: ValueDef) -> ValueId {
        let id = ValueId::from_index(self.ctx.values.len());
        self.ctx.values.push(Some(ValueData { ty, def, uses: Vec::new(), name: None }));
        id
    }

    fn value_mut(&mut self, v: ValueId) -> &mut ValueData {
        self.ctx.values[v.index()].as_mut().expect("invariant: value handle is live")
    }

    fn op_mut(&mut self, op: OpId) -> &mut OpData {
        self.ctx.ops[op.index()].as_mut().expect("invariant: op handle is live")
    }

    fn block_mut(&mut self, b: BlockId) -> &mut BlockData {
        self.ctx.blocks[b.index()].as_mut().expect("invariant: block handle is live")
    }

    /// A region owned by no op yet, with one empty entry block; hand it to an op
    /// through [`OpBuild::adopt_regions`].
    pub fn create_detached_region(&mut self) -> (RegionId, BlockId) {
        let r = RegionId::from_index(self.ctx.regions.len());
        self.ctx.regions.push(Some(RegionData { blocks: Vec::new(), parent: None }));
        let b = self.append_block(r);
        (r, b)
    }

    /// Appends a new empty block to `region`.
    pub fn append_block(&mut self, region: RegionId) -> BlockId {
        let id = BlockId::from_index(self.ctx.blocks.len());
        self.ctx.blocks.push(Some(BlockData { args: Vec::new(), ops: Vec::new(), parent: Some(region) }));
        self.ctx.regions[region.index()].as_mut().expect("invariant: region handle is live").blocks.push(id);
        self.changed = true;
        id
    }

    /// Appends an argument of type `ty` to `block`.
    pub fn add_block_arg(&mut self, block: BlockId, ty: Ty) -> ValueId {
        let index = self.ctx.block(block).args.len() as u32;
        let v = self.new_value(ty, ValueDef::BlockArg { block, index });
        self.block_mut(block).args.push(v);
        self.changed = true;
        v
    }

    /// Creates an op and inserts it at `at`.
    pub fn create(&mut self, build: OpBuild, at: InsertPoint) -> OpId {
        let name = self.ctx.sym(&build.name);
        let mut attrs: Vec<_> = build.attrs.iter().map(|(k, a)| (self.ctx.sym(k), *a)).collect();
        attrs.sort_by(|a, b| self.ctx.str(a.0).cmp(self.ctx.str(b.0)));
        attrs.dedup_by_key(|a| a.0);
        let op = OpId::from_index(self.ctx.ops.len());
        self.ctx.ops.push(Some(OpData {
            name,
            operands: build.operands.clone(),
            results: Vec::new(),
            attrs,
            regions: Vec::new(),
            parent: None,
            loc: build.loc,
        }));
        for (i, &v) in build.operands.iter().enumerate() {
            self.value_mut(v).uses.push(Use { op, index: i as u32 });
        }
        let results: Vec<ValueId> = build
            .result_types
            .iter()
            .enumerate()
            .map(|(i, &ty)| self.new_value(ty, ValueDef::OpResult { op, index: i as u32 }))
            .collect();
        self.op_mut(op).results = results;
        for _ in 0..build.regions {
            let r = RegionId::from_index(self.ctx.regions.len());
            self.ctx.regions.push(Some(RegionData { blocks: Vec::new(), parent: Some(op) }));
            self.op_mut(op).regions.push(r);
            self.append_block(r);
        }
        for &r in &build.adopt_regions {
            let region = self.ctx.regions[r.index()].as_mut().expect("invariant: region handle is live");
            assert!(region.parent.is_none(), "invariant: adopted region is detached");
            region.parent = Some(op);
            self.op_mut(op).regions.push(r);
        }
        self.insert(op, at);
        self.changed = true;
        op
    }

    fn insert(&mut self, op: OpId, at: InsertPoint) {
        let (block, pos) = match at {
            InsertPoint::Detached => return,
            InsertPoint::End(b) => (b, self.ctx.block(b).ops.len()),
            InsertPoint::Before(anchor) | InsertPoint::After(anchor) => {
                let b = self.ctx.op(anchor).parent.expect("invariant: anchor op is in a block");
                let i = self.position(b, anchor);
                (b, if matches!(at, InsertPoint::After(_)) { i + 1 } else { i })
            }
        };
        self.block_mut(block).ops.insert(pos, op);
        self.op_mut(op).parent = Some(block);
    }

    fn position(&self, block: BlockId, op: OpId) -> usize {
        self.ctx.block(block).ops.iter().position(|&o| o == op).expect("invariant: op is listed in its parent block")
    }

    /// Moves `op` (with its regions) to `at`.
    pub fn move_op(&mut self, op: OpId, at: InsertPoint) {
        if let Some(b) = self.ctx.op(op).parent {
            let i = self.position(b, op);
            self.block_mut(b).ops.remove(i);
            self.op_mut(op).parent = None;
        }
        self.insert(op, at);
        self.changed = true;
    }

    /// Makes every use of `old` use `new` instead.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) {
        if old == new {
            return;
        }
        let uses = std::mem::take(&mut self.value_mut(old).uses);
        if uses.is_empty() {
            return;
        }
        for u in &uses {
            self.op_mut(u.op).operands[u.index as usize] = new;
        }
        self.value_mut(new).uses.extend(uses);
        self.changed = true;
    }

    /// Replaces each result of `op` by the matching value of `new` and erases `op`.
    pub fn replace_op(&mut self, op: OpId, new: &[ValueId]) {
        let results = self.ctx.op(op).results.clone();
        assert_eq!(results.len(), new.len(), "replace_op: result count mismatch");
        for (&r, &n) in results.iter().zip(new) {
            self.replace_all_uses(r, n);
        }
        self.erase_op(op);
    }

    /// Sets operand `index` of `op` to `v`.
    pub fn set_operand(&mut self, op: OpId, index: usize, v: ValueId) {
        let old = self.ctx.op(op).operands[index];
        if old == v {
            return;
        }
        let u = Use { op, index: index as u32 };
        self.value_mut(old).uses.retain(|x| *x != u);
        self.value_mut(v).uses.push(u);
        self.op_mut(op).operands[index] = v;
        self.changed = true;
    }

    /// Sets (or replaces) attribute `key`.
    pub fn set_attr(&mut self, op: OpId, key: &str, value: Attr) {
        let k = self.ctx.sym(key);
        let ctx: &Context = self.ctx;
        let pos = ctx.op(op).attrs.binary_search_by(|(s, _)| ctx.str(*s).cmp(key));
        let attrs = &mut self.op_mut(op).attrs;
        match pos {
            Ok(i) if attrs[i].1 == value => return,
            Ok(i) => attrs[i].1 = value,
            Err(i) => attrs.insert(i, (k, value)),
        }
        self.changed = true;
    }

    /// Removes attribute `key`; returns whether it was there.
    pub fn remove_attr(&mut self, op: OpId, key: &str) -> bool {
        let ctx: &Context = self.ctx;
        let Ok(i) = ctx.op(op).attrs.binary_search_by(|(s, _)| ctx.str(*s).cmp(key)) else {
            return false;
        };
        self.op_mut(op).attrs.remove(i);
        self.changed = true;
        true
    }

    /// Sets the printing name hint of `v` (`None` clears it). Purely numeric
    /// names are dropped: the printer numbers unnamed values itself.
    pub fn set_value_name(&mut self, v: ValueId, name: Option<&str>) {
        let sym = name.filter(|n| !n.chars().all(|c| c.is_ascii_digit())).map(|n| self.ctx.sym(n));
        if self.ctx.value(v).name != sym {
            self.value_mut(v).name = sym;
            self.changed = true;
        }
    }

    /// Changes the type of `v` (e.g. when specialising symbolic shapes). The
    /// caller keeps the IR consistent; the verifier checks it afterwards.
    pub fn set_value_type(&mut self, v: ValueId, ty: crate::Ty) {
        if self.ctx.value(v).ty != ty {
            self.value_mut(v).ty = ty;
            self.changed = true;
        }
    }

    /// Sets the location of `op`.
    pub fn set_loc(&mut self, op: OpId, loc: Loc) {
        if self.ctx.op(op).loc != loc {
            self.op_mut(op).loc = loc;
            self.changed = true;
        }
    }

    /// Erases `op`, its regions and everything in them. Its results must be unused
    /// (outside the erased ops themselves).
    pub fn erase_op(&mut self, op: OpId) {
        // Nested ops last-to-first, so uses inside die before their definitions.
        let mut nested = self.ctx.walk(op);
        nested.reverse();
        for inner in nested {
            self.erase_single(inner);
        }
        self.erase_single(op);
    }

    fn erase_single(&mut self, op: OpId) {
        let data = self.ctx.op(op).clone();
        for &r in &data.results {
            assert!(
                self.ctx.value(r).uses.is_empty(),
                "invariant: erasing {} whose result {r} still has uses",
                self.ctx.op_name(op)
            );
        }
        for (i, &v) in data.operands.iter().enumerate() {
            let u = Use { op, index: i as u32 };
            if let Some(Some(val)) = self.ctx.values.get_mut(v.index()) {
                val.uses.retain(|x| *x != u);
            }
        }
        if let Some(b) = data.parent
            && let Some(Some(block)) = self.ctx.blocks.get_mut(b.index())
        {
            block.ops.retain(|&o| o != op);
        }
        for &r in &data.results {
            self.ctx.values[r.index()] = None;
        }
        for &r in &data.regions {
            for b in self.ctx.region(r).blocks.clone() {
                for a in self.ctx.block(b).args.clone() {
                    self.ctx.values[a.index()] = None;
                }
                self.ctx.blocks[b.index()] = None;
            }
            self.ctx.regions[r.index()] = None;
        }
        self.ctx.ops[op.index()] = None;
        self.changed = true;
    }
}
