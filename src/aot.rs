//! Ahead-of-time compilation: a graph-level model as a relocatable object file plus a C
//! harness that runs it, for targets this process cannot JIT for (aarch64 on an x86 machine).
//!
//! [`cross_compile`] follows the JIT's pipeline ([`crate::engine::JitEngine`]) up to machine
//! code: clone the graph module, specialise its shapes to the given inputs, run
//! the JIT's lowering pipeline (`JitOptions::lowering_pipeline`), then compile every kernel into an object for the target
//! ([`strata_codegen::compile::object_module`]). Instead of binding the kernels to an
//! in-process [`Executable`], [`emit_c_harness`] writes the program function out as C:
//!
//! - every kernel is declared `extern void NAME(void **args, int64_t begin, int64_t end);`
//!   (the kernel ABI of [`strata_codegen::compile::KernelFn`]);
//! - one 64-byte-aligned arena (`posix_memalign`) holds every temporary at the offset the
//!   memory plan gives it ([`Executable::plan`]), exactly as the host executor places them;
//! - constants are embedded as hex arrays (32-bit words when their size allows, bytes
//!   otherwise), so the C source grows with the weights: fine for small models and tests;
//! - the inputs are read from the file named by `argv[1]` (the raw little-endian bytes of every
//!   input, concatenated in argument order; [`AotProgram::input_bytes`] makes it), each into
//!   its own aligned buffer;
//! - the kernels run in program order, each with its argument array and the full range of its
//!   `loops.parallel` (single-threaded);
//! - the outputs' raw bytes, concatenated, are written to `argv[2]`
//!   ([`AotProgram::parse_outputs`] reads them back).
//!
//! The harness links against the object and the C runtime helpers
//! ([`strata_codegen::helpers::HELPERS_C_SOURCE`]); for aarch64,
//! [`AotProgram::run_under_qemu`] does that with
//! [`strata_codegen::cross::Aarch64Tools::link_and_run`] and runs the result under
//! `qemu-aarch64`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use strata_codegen::compile::{kernel_functions, object_module};
use strata_ir::pass::PassManager;
use strata_ir::{Context, ElemType, OpId, TensorData, VerifyOptions, verify};
use strata_runtime::exec::executable::ARENA_ALIGN;
use strata_runtime::exec::{BufferInfo, BufferKind, ExecError, Executable, KernelFn};

pub use strata_codegen::Target;
pub use strata_codegen::cross::{Aarch64Tools, aarch64_tools};

/// The program function [`cross_compile`] compiles.
pub const DEFAULT_PROGRAM: &str = "main";

/// Why ahead-of-time compilation or a run of its result failed.
#[derive(Debug, thiserror::Error)]
pub enum AotError {
    /// The graph module or its inputs are not usable (no such function, wrong input count,
    /// shapes that do not specialise).
    #[error("{0}")]
    Invalid(String),
    /// Lowering to the loops dialect failed.
    #[error("lowering to loops: {0}")]
    Lower(String),
    /// Compiling the kernels, linking or starting a tool failed.
    #[error("code generation: {0}")]
    Codegen(#[from] strata_codegen::CodegenError),
    /// The lowered program cannot be run (see [`Executable::build`]).
    #[error(transparent)]
    Program(#[from] ExecError),
    /// Something the harness generator does not support.
    #[error("C harness: {0}")]
    Unsupported(String),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The linked harness ran but failed.
    #[error("the harness failed ({status}):\n{stdout}{stderr}")]
    RunFailed {
        /// Its exit status, as text.
        status: String,
        /// What it wrote to standard output.
        stdout: String,
        /// What it wrote to standard error.
        stderr: String,
    },
}

impl From<AotError> for crate::Error {
    fn from(e: AotError) -> Self {
        crate::Error::Compile(e.to_string())
    }
}

/// `Result` with [`AotError`].
pub type Result<T, E = AotError> = std::result::Result<T, E>;

/// A model compiled ahead of time: the lowered module, the object with its kernels and the C
/// harness that runs its program.
#[derive(Debug)]
pub struct AotProgram {
    /// The context of the lowered module.
    pub ctx: Context,
    /// The lowered (loops-level) module.
    pub module: OpId,
    /// The program function's name.
    pub program: String,
    /// What the object was compiled for.
    pub target: Target,
    /// The relocatable object: one exported function per kernel.
    pub object: Vec<u8>,
    /// The C harness ([`emit_c_harness`]).
    pub c_source: String,
    /// Element type and shape of each input, in order.
    pub inputs: Vec<(ElemType, Vec<usize>)>,
    /// Element type and shape of each output, in order.
    pub outputs: Vec<(ElemType, Vec<usize>)>,
}

impl AotProgram {
    /// Names of the kernels in the object, in module order.
    pub fn kernel_names(&self) -> Vec<String> {
        kernel_functions(&self.ctx, self.module).into_iter().map(|(n, _)| n).collect()
    }

    /// The input file of the harness: the raw bytes of `inputs`, concatenated, after checking
    /// them against the program's signature.
    pub fn input_bytes(&self, inputs: &[TensorData]) -> Result<Vec<u8>> {
        if inputs.len() != self.inputs.len() {
            return Err(AotError::Invalid(format!(
                "the program takes {} inputs, got {}",
                self.inputs.len(),
                inputs.len()
            )));
        }
        let mut bytes = Vec::new();
        for (i, (t, (elem, shape))) in inputs.iter().zip(&self.inputs).enumerate() {
            if t.elem() != *elem || t.shape() != shape.as_slice() {
                return Err(AotError::Invalid(format!(
                    "input #{i}: expected {elem}{shape:?}, got {}{:?}",
                    t.elem(),
                    t.shape()
                )));
            }
            bytes.extend_from_slice(t.bytes());
        }
        Ok(bytes)
    }

    /// Splits the harness's output file into the program's outputs.
    pub fn parse_outputs(&self, bytes: &[u8]) -> Result<Vec<TensorData>> {
        let mut rest = bytes;
        let mut outs = Vec::with_capacity(self.outputs.len());
        for (i, (elem, shape)) in self.outputs.iter().enumerate() {
            let n = strata_runtime::exec::byte_size(*elem, shape)
                .ok_or_else(|| AotError::Invalid(format!("output #{i} is too large")))?;
            if rest.len() < n {
                return Err(AotError::Invalid(format!(
                    "the output file has {} bytes, the outputs need {}",
                    bytes.len(),
                    self.output_bytes()
                )));
            }
            let (head, tail) = rest.split_at(n);
            let t = TensorData::from_bytes(*elem, shape.clone(), head.to_vec().into())
                .map_err(|e| AotError::Invalid(format!("output #{i}: {e}")))?;
            outs.push(t);
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(AotError::Invalid(format!(
                "the output file has {} bytes, the outputs need {}",
                bytes.len(),
                self.output_bytes()
            )));
        }
        Ok(outs)
    }

    fn output_bytes(&self) -> usize {
        self.outputs.iter().filter_map(|(e, s)| strata_runtime::exec::byte_size(*e, s)).sum()
    }

    /// Links the object with the harness in `dir`, runs it under `qemu-aarch64` on `inputs`
    /// and returns its outputs. Only for [`Target::Aarch64`] programs.
    ///
    /// Writes `inputs.bin` and `outputs.bin` next to the files of
    /// [`Aarch64Tools::link_and_run`]; a failing run is [`AotError::RunFailed`].
    pub fn run_under_qemu(&self, tools: &Aarch64Tools, dir: &Path, inputs: &[TensorData]) -> Result<Vec<TensorData>> {
        if self.target != Target::Aarch64 {
            return Err(AotError::Invalid(format!("the program was compiled for {}, not aarch64", self.target)));
        }
        let input = self.input_bytes(inputs)?;
        std::fs::create_dir_all(dir).map_err(|source| AotError::Io { path: dir.to_path_buf(), source })?;
        let in_path = dir.join("inputs.bin");
        let out_path = dir.join("outputs.bin");
        std::fs::write(&in_path, &input).map_err(|source| AotError::Io { path: in_path.clone(), source })?;
        let _ = std::fs::remove_file(&out_path);
        let out = tools.link_and_run(dir, &self.object, &self.c_source, &["inputs.bin", "outputs.bin"])?;
        if !out.status.success() {
            return Err(AotError::RunFailed {
                status: out.status.to_string(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let bytes = std::fs::read(&out_path).map_err(|source| AotError::Io { path: out_path.clone(), source })?;
        self.parse_outputs(&bytes)
    }
}

/// Compiles function [`DEFAULT_PROGRAM`] (`@main`) of the graph-level `graph_module` for inputs
/// of `input_shapes` into an object for `target` and a C harness; see the module docs.
pub fn cross_compile(
    ctx: &Context,
    graph_module: OpId,
    input_shapes: &[Vec<usize>],
    target: Target,
) -> Result<AotProgram> {
    cross_compile_function(ctx, graph_module, DEFAULT_PROGRAM, input_shapes, target)
}

/// [`cross_compile`] for the function named `func`.
pub fn cross_compile_function(
    ctx: &Context,
    graph_module: OpId,
    func: &str,
    input_shapes: &[Vec<usize>],
    target: Target,
) -> Result<AotProgram> {
    let mut ctx = ctx.clone();
    let module = graph_module;
    let f = strata_dialects::func::lookup_function(&ctx, module, func)
        .ok_or_else(|| AotError::Invalid(format!("the module has no function @{func}")))?;
    let bindings = strata_passes::lower::specialize::bindings_for_inputs(&ctx, f.0, input_shapes)
        .map_err(|e| AotError::Invalid(format!("input shapes {input_shapes:?}: {e}")))?;
    strata_passes::lower::specialize::specialize_shapes(&mut ctx, module, &bindings);
    if let Err(d) = verify(&ctx, module, VerifyOptions::default()) {
        let text = strata_ir::diag::render_all(&ctx, &d, None);
        return Err(AotError::Invalid(format!("specialising to input shapes {input_shapes:?}:\n{text}")));
    }
    let reg = strata_passes::registry();
    let mut pm = PassManager::parse(&reg, &crate::engine::JitOptions::default().lowering_pipeline())
        .map_err(|e| AotError::Lower(e.to_string()))?;
    pm.run(&mut ctx, module).map_err(|e| AotError::Lower(e.to_string()))?;
    let object = object_module(&ctx, module, target)?;
    let layout = ProgramLayout::read(&ctx, module, func)?;
    let c_source = layout.emit(&ctx, module, func)?;
    Ok(AotProgram {
        inputs: layout.inputs(),
        outputs: layout.outputs(),
        ctx,
        module,
        program: func.to_string(),
        target,
        object,
        c_source,
    })
}

/// The C harness running program function `program` of the lowered `lowered_module` over the
/// kernels [`strata_codegen::compile::object_module`] emits; see the module docs.
pub fn emit_c_harness(ctx: &Context, lowered_module: OpId, program: &str) -> Result<String> {
    ProgramLayout::read(ctx, lowered_module, program)?.emit(ctx, lowered_module, program)
}

/// Stands in for kernel entry points: the executable built by [`ProgramLayout::read`] is only
/// inspected, never run.
extern "C" fn never_called(_args: *const *mut u8, _begin: i64, _end: i64) {}

/// A lowered program as the harness needs it: the host executor's view (buffers, steps, memory
/// plan) plus which buffers the program returns.
struct ProgramLayout {
    exe: Executable,
    outputs: Vec<usize>,
}

impl ProgramLayout {
    fn read(ctx: &Context, module: OpId, program: &str) -> Result<ProgramLayout> {
        let entry: KernelFn = never_called;
        let exe = Executable::build(ctx, module, program, &|_| Some(entry))?;
        let outputs = exe.outputs().to_vec();
        Ok(ProgramLayout { exe, outputs })
    }

    fn inputs(&self) -> Vec<(ElemType, Vec<usize>)> {
        self.exe.input_shapes()
    }

    fn outputs(&self) -> Vec<(ElemType, Vec<usize>)> {
        let b = self.exe.buffers();
        self.outputs.iter().map(|&o| (b[o].elem, b[o].shape.clone())).collect()
    }

    fn emit(&self, ctx: &Context, module: OpId, program: &str) -> Result<String> {
        let kernels = kernel_functions(ctx, module);
        let defined: BTreeSet<&str> = kernels.iter().map(|(n, _)| n.as_str()).collect();
        for step in self.exe.steps() {
            if !defined.contains(step.kernel.as_str()) {
                return Err(AotError::Unsupported(format!(
                    "@{program} launches @{}, which is not a kernel (buffer arguments, no program ops)",
                    step.kernel
                )));
            }
        }
        let c_name = |name: &str| -> String {
            let i = kernels.iter().position(|(n, _)| n == name).expect("invariant: checked above");
            c_kernel_ident(name, i)
        };
        let buffers = self.exe.buffers();
        let arena = self.exe.plan().arena_bytes.max(ARENA_ALIGN);
        let input_total: usize =
            buffers.iter().filter(|b| matches!(b.kind, BufferKind::Input(_))).map(|b| b.bytes).sum();
        let output_total: usize = self.outputs.iter().map(|&o| buffers[o].bytes).sum();

        let mut c = String::new();
        let w = &mut c;
        // `fmt::Write` for `String` never fails.
        let _ = writeln!(w, "/* strata AOT harness for @{program}: generated by strata::aot::emit_c_harness. */");
        let _ = writeln!(w, "/* usage: harness INPUTS.bin OUTPUTS.bin */");
        let _ = writeln!(
            w,
            "/* {} kernels, {} launches, {} buffers; arena {} bytes; inputs {} bytes, outputs {} bytes. */",
            kernels.len(),
            self.exe.steps().len(),
            buffers.len(),
            arena,
            input_total,
            output_total
        );
        w.push_str("#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\n");
        let _ = writeln!(w, "#define AOT_ALIGN {ARENA_ALIGN}\n");
        w.push_str("/* The kernels: args[i] = base of buffer argument i; begin..end = parallel iterations. */\n");
        for (i, (name, _)) in kernels.iter().enumerate() {
            let ident = c_kernel_ident(name, i);
            if ident == *name {
                let _ = writeln!(w, "extern void {ident}(void **, int64_t, int64_t);");
            } else {
                let _ = writeln!(w, "extern void {ident}(void **, int64_t, int64_t) __asm__(\"{}\");", c_escape(name));
            }
        }
        w.push('\n');
        for (i, b) in buffers.iter().enumerate() {
            if let BufferKind::Const(t) = &b.kind {
                emit_constant(w, i, b, t.bytes());
            }
        }
        w.push_str(HARNESS_HELPERS);
        w.push_str("int main(int argc, char **argv) {\n");
        w.push_str("    if (argc != 3) {\n");
        w.push_str("        fprintf(stderr, \"usage: %s INPUTS.bin OUTPUTS.bin\\n\", argv[0]);\n");
        w.push_str("        return 2;\n    }\n");
        let _ = writeln!(w, "    unsigned char *arena = aot_alloc({arena}u);");
        let _ = writeln!(w, "    unsigned char *buf[{}];", buffers.len().max(1));
        w.push_str("    FILE *in = fopen(argv[1], \"rb\");\n");
        w.push_str("    if (!in) aot_die(\"cannot open the input file\", argv[1]);\n");
        for (i, b) in buffers.iter().enumerate() {
            let _ = match &b.kind {
                BufferKind::Input(k) => writeln!(
                    w,
                    "    buf[{i}] = aot_alloc({bytes}u); aot_read(in, buf[{i}], {bytes}u, argv[1]); /* input #{k}: {} */",
                    describe(b),
                    bytes = b.bytes
                ),
                BufferKind::Const(_) => {
                    writeln!(w, "    buf[{i}] = (unsigned char *)aot_const{i}; /* {} */", describe(b))
                }
                BufferKind::Temp { offset } => {
                    writeln!(w, "    buf[{i}] = arena + {offset}u; /* {} */", describe(b))
                }
                BufferKind::View(s) => writeln!(w, "    buf[{i}] = buf[{s}]; /* view: {} */", describe(b)),
            };
        }
        w.push_str("    if (fgetc(in) != EOF) aot_die(\"the input file is longer than the inputs\", argv[1]);\n");
        w.push_str("    fclose(in);\n\n");
        for (si, step) in self.exe.steps().iter().enumerate() {
            let (lo, hi) = step.parallel.unwrap_or((0, 1));
            let args = if step.args.is_empty() {
                "0".to_string()
            } else {
                step.args.iter().map(|a| format!("buf[{a}]")).collect::<Vec<_>>().join(", ")
            };
            let _ = writeln!(w, "    {{ /* step {si} */");
            let _ = writeln!(w, "        void *args[] = {{{args}}};");
            let _ = writeln!(w, "        {}(args, INT64_C({lo}), INT64_C({hi}));", c_name(&step.kernel));
            w.push_str("    }\n");
        }
        w.push_str("\n    FILE *out = fopen(argv[2], \"wb\");\n");
        w.push_str("    if (!out) aot_die(\"cannot create the output file\", argv[2]);\n");
        for (k, &o) in self.outputs.iter().enumerate() {
            let _ = writeln!(
                w,
                "    aot_write(out, buf[{o}], {}u, argv[2]); /* output #{k}: {} */",
                buffers[o].bytes,
                describe(&buffers[o])
            );
        }
        w.push_str("    if (fclose(out) != 0) aot_die(\"cannot write the output file\", argv[2]);\n");
        w.push_str("    return 0;\n}\n");
        Ok(c)
    }
}

/// The harness's file and memory helpers (prefixed `aot_`, which kernel identifiers avoid).
const HARNESS_HELPERS: &str = r#"static void aot_die(const char *what, const char *path) {
    fprintf(stderr, "harness: %s: %s\n", what, path);
    exit(1);
}

static unsigned char *aot_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, AOT_ALIGN, bytes ? bytes : 1) != 0) aot_die("out of memory", "posix_memalign");
    memset(p, 0, bytes ? bytes : 1);
    return p;
}

static void aot_read(FILE *f, unsigned char *dst, size_t bytes, const char *path) {
    if (fread(dst, 1, bytes, f) != bytes) aot_die("the input file is shorter than the inputs", path);
}

static void aot_write(FILE *f, const unsigned char *src, size_t bytes, const char *path) {
    if (fwrite(src, 1, bytes, f) != bytes) aot_die("cannot write the output file", path);
}

"#;

/// `elem[shape], N bytes` for comments.
fn describe(b: &BufferInfo) -> String {
    let dims = b.shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x");
    format!("{}[{dims}], {} bytes", b.elem, b.bytes)
}

/// Emits constant buffer `i` as `aot_const{i}`: 32-bit little-endian words when the size is a
/// multiple of 4, bytes otherwise; 64-byte aligned, writable (kernels never write constants,
/// but nothing depends on it).
fn emit_constant(w: &mut String, i: usize, b: &BufferInfo, bytes: &[u8]) {
    let _ = writeln!(w, "/* constant: {} */", describe(b));
    if !bytes.is_empty() && bytes.len().is_multiple_of(4) {
        let _ =
            writeln!(w, "static uint32_t aot_const{i}[{}] __attribute__((aligned(AOT_ALIGN))) = {{", bytes.len() / 4);
        for line in bytes.chunks(4 * 8) {
            w.push_str("   ");
            for word in line.chunks_exact(4) {
                let v = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                let _ = write!(w, " 0x{v:08x},");
            }
            w.push('\n');
        }
    } else {
        let _ = writeln!(
            w,
            "static unsigned char aot_const{i}[{}] __attribute__((aligned(AOT_ALIGN))) = {{",
            bytes.len().max(1)
        );
        if bytes.is_empty() {
            w.push_str("    0\n");
        }
        for line in bytes.chunks(16) {
            w.push_str("   ");
            for v in line {
                let _ = write!(w, " 0x{v:02x},");
            }
            w.push('\n');
        }
    }
    w.push_str("};\n\n");
}

/// The C identifier declaring kernel `name` (number `index` in module order): the name itself
/// when it is a plain identifier that cannot clash with C or the harness, else `aot_kernel{index}`
/// bound to the symbol with an `__asm__` label.
fn c_kernel_ident(name: &str, index: usize) -> String {
    const RESERVED: &[&str] = &[
        "main",
        "auto",
        "break",
        "case",
        "char",
        "const",
        "continue",
        "default",
        "do",
        "double",
        "else",
        "enum",
        "extern",
        "float",
        "for",
        "goto",
        "if",
        "inline",
        "int",
        "long",
        "register",
        "restrict",
        "return",
        "short",
        "signed",
        "sizeof",
        "static",
        "struct",
        "switch",
        "typedef",
        "union",
        "unsigned",
        "void",
        "volatile",
        "while",
        "argc",
        "argv",
        "args",
        "arena",
        "buf",
        "in",
        "out",
        "exit",
        "free",
        "malloc",
        "memset",
        "memcpy",
        "fopen",
        "fclose",
        "fread",
        "fwrite",
        "fgetc",
        "fprintf",
        "printf",
        "stderr",
        "stdout",
        "posix_memalign",
    ];
    let mut chars = name.chars();
    let plain = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    let clashes = RESERVED.contains(&name)
        || name.starts_with("aot_")
        || name.starts_with("__")
        || name.starts_with("strata_")
        || name.starts_with("_Bool");
    if plain && !clashes { name.to_string() } else { format!("aot_kernel{index}") }
}

/// `s` as the contents of a C string literal.
fn c_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03o}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program() -> (Context, OpId) {
        let src = "func @main(%x: buffer<8xf32>) -> buffer<2x4xf32> {
  %0 = loops.alloc() : () -> buffer<8xf32>
  loops.launch(%x, %0) {kernel = @k}
  %c = loops.constant() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]> : tensor<8xf32>} : () -> buffer<8xf32>
  %1 = loops.alloc() : () -> buffer<8xf32>
  loops.launch(%0, %1) {kernel = @k}
  %2 = loops.view(%1) : (buffer<8xf32>) -> buffer<2x4xf32>
  return(%2)
}
func @k(%a: buffer<8xf32>, %b: buffer<8xf32>) {
  %0 = loops.index_const() {value = 0} : () -> index
  %1 = loops.index_const() {value = 8} : () -> index
  loops.parallel(%0, %1) ({
  ^bb0(%i: index):
    %v = loops.load(%a, %i) : (buffer<8xf32>, index) -> f32
    loops.store(%v, %b, %i)
    loops.yield()
  })
  return()
}
";
        let mut ctx = strata_dialects::context();
        let m =
            strata_ir::parse_module(&mut ctx, &strata_ir::Source::new("t", src), &Default::default()).expect("parses");
        verify(&ctx, m, Default::default()).expect("verifies");
        (ctx, m)
    }

    #[test]
    fn harness_declares_places_and_launches() {
        let (ctx, m) = program();
        let c = emit_c_harness(&ctx, m, "main").unwrap();
        assert!(c.contains("extern void k(void **, int64_t, int64_t);"), "{c}");
        assert!(c.contains("k(args, INT64_C(0), INT64_C(8));"), "{c}");
        assert!(c.contains("0x3f800000, 0x40000000"), "{c}");
        assert!(c.contains("buf[4] = buf[3]; /* view"), "{c}");
        assert!(c.contains("aot_write(out, buf[4], 32u"), "{c}");
        assert!(emit_c_harness(&ctx, m, "nope").is_err());
    }

    #[test]
    fn odd_kernel_names_get_asm_labels() {
        assert_eq!(c_kernel_ident("main_k0_conv", 0), "main_k0_conv");
        assert_eq!(c_kernel_ident("main", 3), "aot_kernel3");
        assert_eq!(c_kernel_ident("a.b", 1), "aot_kernel1");
        assert_eq!(c_escape("a\"b\\c\n"), "a\\\"b\\\\c\\012");
    }
}
