//! Running aarch64 objects on an x86-64 machine: cross-link with a C harness, run under
//! `qemu-aarch64`.
//!
//! An aarch64 object from [`crate::object::ObjectBuilder`] is linked statically with a test
//! harness written in C and [`crate::helpers::HELPERS_C_SOURCE`] by `aarch64-linux-gnu-gcc`,
//! then run with user-mode `qemu-aarch64` (called explicitly: no binfmt_misc is assumed). The
//! Debian packages are `qemu-user`, `gcc-aarch64-linux-gnu` and `libc6-dev-arm64-cross`;
//! `scripts/install-deps.sh` installs them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::error::{CodegenError, Result};
use crate::helpers::HELPERS_C_SOURCE;

/// The cross compiler executable.
pub const AARCH64_GCC: &str = "aarch64-linux-gnu-gcc";
/// The user-mode emulator executable.
pub const QEMU_AARCH64: &str = "qemu-aarch64";
/// What to do when a tool is missing.
pub const INSTALL_HINT: &str = "run scripts/install-deps.sh";

/// Paths of the aarch64 cross toolchain and emulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aarch64Tools {
    /// `aarch64-linux-gnu-gcc`.
    pub gcc: PathBuf,
    /// `qemu-aarch64`.
    pub qemu: PathBuf,
}

/// Finds `aarch64-linux-gnu-gcc` and `qemu-aarch64` on `PATH`.
///
/// The error names the first missing tool and says to run `scripts/install-deps.sh`.
pub fn aarch64_tools() -> Result<Aarch64Tools> {
    Ok(Aarch64Tools { gcc: find_tool(AARCH64_GCC)?, qemu: find_tool(QEMU_AARCH64)? })
}

/// Looks `name` up in the directories of `PATH`.
fn find_tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| CodegenError::ToolMissing { tool: name.to_string(), hint: INSTALL_HINT.to_string() })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

impl Aarch64Tools {
    /// Writes `kernel.o` (`object`), `harness.c` (`c_harness_source`) and `strata_helpers.c`
    /// into `dir`, links them with `aarch64-linux-gnu-gcc -O2 -static … -lm` into
    /// `dir/harness`, and runs `qemu-aarch64 ./harness args…` in `dir`.
    ///
    /// Returns the run's output whatever its exit status (the caller checks it); fails if a
    /// file cannot be written, a tool cannot be started, or linking fails.
    pub fn link_and_run(&self, dir: &Path, object: &[u8], c_harness_source: &str, args: &[&str]) -> Result<Output> {
        std::fs::create_dir_all(dir).map_err(|e| CodegenError::io(dir, e))?;
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| CodegenError::io(path, e))
        };
        write("kernel.o", object)?;
        write("harness.c", c_harness_source.as_bytes())?;
        write("strata_helpers.c", HELPERS_C_SOURCE.as_bytes())?;

        let mut link = Command::new(&self.gcc);
        link.current_dir(dir).args([
            "-O2",
            "-static",
            "-o",
            "harness",
            "harness.c",
            "strata_helpers.c",
            "kernel.o",
            "-lm",
        ]);
        let out = run(&mut link, &self.gcc)?;
        if !out.status.success() {
            return Err(CodegenError::ToolFailed {
                command: describe(&link),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }

        let mut exec = Command::new(&self.qemu);
        exec.current_dir(dir).arg("./harness").args(args);
        run(&mut exec, &self.qemu)
    }
}

fn run(cmd: &mut Command, program: &Path) -> Result<Output> {
    cmd.output().map_err(|e| CodegenError::io(program, e))
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(OsStr::to_string_lossy).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Target;
    use crate::module::KernelModule;
    use crate::object::ObjectBuilder;
    use crate::testkernels::{fma_loop_function, fma_loop_signature, unary_helper_loop};

    /// The tools, or `None` after printing why the test is skipped; with `CI` set a missing
    /// tool fails the test instead.
    fn tools_or_skip() -> Option<Aarch64Tools> {
        match aarch64_tools() {
            Ok(tools) => Some(tools),
            Err(e) if std::env::var_os("CI").is_some() => panic!("{e}"),
            Err(e) => {
                println!("skipped: {e}");
                None
            }
        }
    }

    /// Unique scratch directory under the target dir's temp area.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("strata-codegen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    const HARNESS: &str = r#"
#include <math.h>
#include <stdio.h>
#include <string.h>

void strata_fma_loop(const float *a, const float *b, float *c, long n);
void strata_erf_loop(const float *x, float *y, long n);

#define N 1024
static float a[N], b[N], c[N], want[N], x[N], y[N];

static int same(float p, float q) { return memcmp(&p, &q, sizeof p) == 0; }

int main(void) {
    unsigned s = 12345u;
    for (int i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u; a[i] = (float)(s >> 8) / 16777216.0f * 4.0f - 2.0f;
        s = s * 1664525u + 1013904223u; b[i] = (float)(s >> 8) / 16777216.0f * 4.0f - 2.0f;
        s = s * 1664525u + 1013904223u; c[i] = (float)(s >> 8) / 16777216.0f * 4.0f - 2.0f;
        want[i] = fmaf(a[i], b[i], c[i]);
        x[i] = (float)(i - N / 2) / 128.0f;
    }
    strata_fma_loop(a, b, c, N);
    strata_erf_loop(x, y, N);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        if (!same(c[i], want[i])) {
            if (bad < 5) printf("fma mismatch at %d: %a vs %a\n", i, c[i], want[i]);
            bad++;
        }
        if (!same(y[i], erff(x[i]))) {
            if (bad < 5) printf("erf mismatch at %d: %a vs %a\n", i, y[i], erff(x[i]));
            bad++;
        }
    }
    printf("%d mismatches\n", bad);
    return bad != 0;
}
"#;

    #[test]
    fn aarch64_fma_kernel_runs_under_qemu() {
        let Some(tools) = tools_or_skip() else { return };

        let mut obj = ObjectBuilder::new(Target::Aarch64).unwrap();
        let sig = fma_loop_signature(obj.isa());
        let id = obj.declare_function("strata_fma_loop", &sig).unwrap();
        let func = fma_loop_function(obj.isa());
        obj.define_function(id, func).unwrap();
        let (sig, func) = unary_helper_loop(&mut obj, "strata_erff");
        let id = obj.declare_function("strata_erf_loop", &sig).unwrap();
        obj.define_function(id, func).unwrap();
        let bytes = obj.finish().unwrap();

        let dir = scratch_dir("qemu-fma");
        let out = tools.link_and_run(&dir, &bytes, HARNESS, &[]).unwrap_or_else(|e| panic!("{e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "harness failed ({}):\n{stdout}\n{stderr}", out.status);
        assert!(stdout.contains("0 mismatches"), "{stdout}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn link_errors_carry_the_linker_message() {
        let Some(tools) = tools_or_skip() else { return };
        let obj = ObjectBuilder::new(Target::Aarch64).unwrap();
        let bytes = obj.finish().unwrap();
        let dir = scratch_dir("link-error");
        let harness = "void strata_absent(void); int main(void) { strata_absent(); return 0; }\n";
        let err = tools.link_and_run(&dir, &bytes, harness, &[]).unwrap_err();
        assert!(matches!(err, CodegenError::ToolFailed { .. }), "{err}");
        assert!(err.to_string().contains("strata_absent"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_tool_error_names_tool_and_script() {
        let err = find_tool("strata-no-such-tool-xyz").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("strata-no-such-tool-xyz"), "{msg}");
        assert!(msg.contains("scripts/install-deps.sh"), "{msg}");
    }
}
