//! Per-op profiles of compiled trace runs: a JSON document (schema
//! `strata.profile/1`, `docs/profile.md`) and a Chrome trace (`chrome://tracing`,
//! Perfetto).

use std::fmt::Write as _;
use std::time::{Duration, Instant};
use strata_ir::{Context, OpId, TensorData};

/// Statistics of one op of the compiled graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpProfile {
    /// Position in the compiled function body.
    pub index: usize,
    /// Op name (`graph.conv2d`).
    pub op: String,
    /// Source location of the traced call (`file:line:col`), if known.
    pub loc: Option<String>,
    /// Result shapes.
    pub shapes: Vec<Vec<usize>>,
    /// How many runs executed it.
    pub calls: u64,
    /// Total time over all runs.
    pub total: Duration,
}

#[derive(Clone, Debug)]
struct Event {
    index: usize,
    start: Duration,
    dur: Duration,
    run: u64,
}

/// Accumulated profile of every compiled run of a trace.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Completed runs.
    pub runs: u64,
    /// Total time of all runs.
    pub total: Duration,
    /// Per-op statistics, by position.
    pub ops: Vec<OpProfile>,
    /// What executed the runs: `reference` or `jit` (a profile holds one engine's runs).
    pub engine: String,
    events: Vec<Event>,
    origin: Option<Instant>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            runs: 0,
            total: Duration::ZERO,
            ops: Vec::new(),
            engine: "reference".into(),
            events: Vec::new(),
            origin: None,
        }
    }
}

/// Adds one run's per-entry times to a profile as they come.
struct Recorder<'p> {
    ops: &'p mut Vec<OpProfile>,
    events: &'p mut Vec<Event>,
    origin: Instant,
    run: u64,
    cursor: Instant,
}

impl<'p> Recorder<'p> {
    fn new(p: &'p mut Profile, origin: Instant) -> Self {
        Recorder { ops: &mut p.ops, events: &mut p.events, origin, run: p.runs, cursor: Instant::now() }
    }

    /// Entry `i` just took `dur`.
    fn record(&mut self, i: usize, dur: Duration) {
        if let Some(o) = self.ops.get_mut(i) {
            o.calls += 1;
            o.total += dur;
        }
        let end = Instant::now();
        let start = end.checked_sub(dur).unwrap_or(self.cursor).max(self.cursor);
        self.cursor = end;
        if self.events.len() < MAX_EVENTS {
            self.events.push(Event { index: i, start: start.duration_since(self.origin), dur, run: self.run });
        }
    }
}

/// Chrome-trace events kept at most (the oldest are kept).
const MAX_EVENTS: usize = 200_000;

impl Profile {
    /// Runs `main` of `module` with the reference evaluator, recording per-op times.
    pub(crate) fn run(
        &mut self,
        ctx: &Context,
        module: OpId,
        inputs: &[TensorData],
    ) -> Result<Vec<TensorData>, String> {
        let origin = *self.origin.get_or_insert_with(Instant::now);
        let func = strata_dialects::func::lookup_function(ctx, module, "main").ok_or("no @main")?;
        let body: Vec<OpId> = ctx
            .body_ops(func.0)
            .iter()
            .copied()
            .filter(|&op| !ctx.op_def(op).is_some_and(|d| d.traits.contains(strata_ir::OpTraits::TERMINATOR)))
            .collect();
        let index_of: std::collections::HashMap<OpId, usize> = body.iter().enumerate().map(|(i, &o)| (o, i)).collect();
        if self.engine != "reference" || self.ops.len() != body.len() {
            self.engine = "reference".into();
            self.ops = body
                .iter()
                .enumerate()
                .map(|(index, &op)| {
                    let loc = ctx.op(op).loc;
                    OpProfile {
                        index,
                        op: ctx.op_name(op).to_string(),
                        loc: loc.file.map(|f| format!("{}:{}:{}", ctx.str(f), loc.line, loc.col)),
                        shapes: ctx
                            .op(op)
                            .results
                            .iter()
                            .filter_map(|&r| ctx.value_tensor(r)?.static_shape())
                            .map(|s| s.into_iter().map(|d| d as usize).collect())
                            .collect(),
                        calls: 0,
                        total: Duration::ZERO,
                    }
                })
                .collect();
        }
        let t0 = Instant::now();
        let mut rec = Recorder::new(self, origin);
        let out = strata_dialects::interp::run_observed(ctx, module, "main", inputs, &mut |op, dur| {
            if let Some(&i) = index_of.get(&op) {
                rec.record(i, dur);
            }
        })
        .map_err(|e| e.to_string())?;
        self.total += t0.elapsed();
        self.runs += 1;
        Ok(out)
    }

    /// Runs `inputs` through the JIT, recording per-kernel times: each entry of
    /// `ops` is one kernel launch (its name ends with the graph op it came from;
    /// fused elementwise ops are inside it).
    pub(crate) fn run_jit(
        &mut self,
        engine: &crate::engine::JitEngine,
        inputs: &[TensorData],
    ) -> Result<Vec<TensorData>, String> {
        let origin = *self.origin.get_or_insert_with(Instant::now);
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let compiled = engine.compiled(&shapes).map_err(|e| e.to_string())?;
        let exe = compiled.executable();
        if self.engine != "jit" || self.ops.len() != exe.steps().len() {
            self.engine = "jit".into();
            let ctx = &compiled.ctx;
            self.ops = exe
                .steps()
                .iter()
                .enumerate()
                .map(|(index, st)| OpProfile {
                    index,
                    op: st.kernel.clone(),
                    loc: st.loc.file.map(|f| format!("{}:{}:{}", ctx.str(f), st.loc.line, st.loc.col)),
                    shapes: st.args.last().map(|&b| vec![exe.buffers()[b].shape.clone()]).unwrap_or_default(),
                    calls: 0,
                    total: Duration::ZERO,
                })
                .collect();
        }
        let t0 = Instant::now();
        let mut rec = Recorder::new(self, origin);
        let mut i = 0usize;
        let out = engine
            .run_observed(inputs, &mut |_, dur| {
                rec.record(i, dur);
                i += 1;
            })
            .map_err(|e| e.to_string())?;
        self.total += t0.elapsed();
        self.runs += 1;
        Ok(out)
    }

    /// The profile as JSON (schema `strata.profile/1`, see `docs/profile.md`).
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\n  \"schema\": \"strata.profile/1\",\n  \"engine\": {},\n  \"runs\": {},\n  \"total_us\": {:.3},\n  \"ops\": [",
            crate::json::quote(&self.engine),
            self.runs,
            self.total.as_secs_f64() * 1e6
        );
        for (k, o) in self.ops.iter().enumerate() {
            let total_us = o.total.as_secs_f64() * 1e6;
            let mean_us = if o.calls == 0 { 0.0 } else { total_us / o.calls as f64 };
            let shapes: Vec<String> = o.shapes.iter().map(|s| format!("{s:?}")).collect();
            let _ = write!(
                s,
                "{}\n    {{\"index\": {}, \"op\": {}, \"loc\": {}, \"shapes\": [{}], \"calls\": {}, \"total_us\": {:.3}, \"mean_us\": {:.3}}}",
                if k == 0 { "" } else { "," },
                o.index,
                crate::json::quote(&o.op),
                o.loc.as_deref().map_or("null".to_string(), crate::json::quote),
                shapes.join(", "),
                o.calls,
                total_us,
                mean_us
            );
        }
        s.push_str("\n  ]\n}\n");
        s
    }

    /// The runs as a Chrome trace (JSON array of complete events).
    pub fn to_chrome_trace(&self) -> String {
        let mut s = String::from("[");
        for (k, e) in self.events.iter().enumerate() {
            let o = &self.ops[e.index];
            let _ = write!(
                s,
                "{}\n{{\"name\": {}, \"cat\": \"op\", \"ph\": \"X\", \"ts\": {:.3}, \"dur\": {:.3}, \"pid\": 1, \"tid\": 1, \"args\": {{\"index\": {}, \"run\": {}, \"loc\": {}}}}}",
                if k == 0 { "" } else { "," },
                crate::json::quote(&o.op),
                e.start.as_secs_f64() * 1e6,
                e.dur.as_secs_f64() * 1e6,
                e.index,
                e.run,
                o.loc.as_deref().map_or("null".to_string(), crate::json::quote)
            );
        }
        s.push_str("\n]\n");
        s
    }

    /// Writes [`Profile::to_chrome_trace`] to `path`.
    pub fn write_chrome_trace(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_chrome_trace())
    }
}
