//! Target selection and ISA construction.
//!
//! A [`Target`] names what code is generated for: the machine we run on ([`Target::Host`],
//! probed with `cranelift-native`, used by the JIT) or a fixed architecture
//! ([`Target::X86_64`], [`Target::Aarch64`], baseline features, used for object files).
//! [`IsaConfig`] adds the optimisation level and the ISA flags to switch on or off (e.g.
//! `disable: ["has_fma"]` to test the non-FMA path on an FMA machine); [`build_isa`] turns it
//! into a Cranelift `TargetIsa`.
//!
//! Both Cranelift backends used here lower 128-bit vectors only (`f32x4`); wider types fail at
//! compile time with `Unsupported`.

use std::fmt;
use std::str::FromStr;

use crate::error::{CodegenError, Result};
use cranelift_codegen::isa::{self, OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};

/// What to generate code for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Target {
    /// The machine this process runs on, with every feature its CPU reports.
    #[default]
    Host,
    /// 64-bit x86 (`x86_64-unknown-linux-gnu`), baseline features unless enabled.
    X86_64,
    /// 64-bit ARM (`aarch64-unknown-linux-gnu`); NEON is always available.
    Aarch64,
}

impl Target {
    /// Every target, in the order the CLI lists them.
    pub const ALL: [Target; 3] = [Target::Host, Target::X86_64, Target::Aarch64];

    /// Parses `host`, `x86_64` or `aarch64`.
    pub fn from_name(name: &str) -> Result<Target> {
        match name {
            "host" => Ok(Target::Host),
            "x86_64" => Ok(Target::X86_64),
            "aarch64" => Ok(Target::Aarch64),
            other => Err(CodegenError::UnknownTarget(other.to_string())),
        }
    }

    /// The name [`Target::from_name`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Target::Host => "host",
            Target::X86_64 => "x86_64",
            Target::Aarch64 => "aarch64",
        }
    }

    /// The target triple of a fixed target; `None` for [`Target::Host`].
    pub fn triple(self) -> Option<&'static str> {
        match self {
            Target::Host => None,
            Target::X86_64 => Some("x86_64-unknown-linux-gnu"),
            Target::Aarch64 => Some("aarch64-unknown-linux-gnu"),
        }
    }

    /// Whether code for this target can run in this process (JIT): the host itself, or a fixed
    /// target of the host's architecture.
    pub fn runs_on_host(self) -> bool {
        match self {
            Target::Host => true,
            Target::X86_64 => cfg!(target_arch = "x86_64"),
            Target::Aarch64 => cfg!(target_arch = "aarch64"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = CodegenError;

    fn from_str(s: &str) -> Result<Self> {
        Target::from_name(s)
    }
}

/// Cranelift's `opt_level` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum OptLevel {
    /// No mid-end optimisation: instructions stay in the order they were emitted (best for
    /// hand-scheduled, register-blocked kernels; 3-5x faster to compile).
    None,
    /// The e-graph mid-end (GVN, LICM, algebraic rewrites). Cranelift's `speed`.
    #[default]
    Speed,
    /// As `Speed`, also preferring smaller code.
    SpeedAndSize,
}

impl OptLevel {
    /// The value of Cranelift's `opt_level` setting.
    pub fn as_str(self) -> &'static str {
        match self {
            OptLevel::None => "none",
            OptLevel::Speed => "speed",
            OptLevel::SpeedAndSize => "speed_and_size",
        }
    }
}

/// Whether the ISA is for in-process JIT code or for a relocatable object file.
///
/// They differ in shared flags: `cranelift-jit` requires `is_pic = false` and
/// `use_colocated_libcalls = false`; objects are built position-independent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputKind {
    /// Code placed in this process's memory by `cranelift-jit`.
    Jit,
    /// A relocatable ELF object written by `cranelift-object`.
    Object,
}

/// How to build a Cranelift ISA.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IsaConfig {
    /// What to generate code for.
    pub target: Target,
    /// Cranelift's mid-end optimisation level (default: speed).
    pub opt_level: OptLevel,
    /// Boolean flags to switch off after probing or defaults, e.g. `"has_fma"`, `"has_avx2"`.
    /// ISA flags first; names the ISA does not know are tried as shared flags
    /// (e.g. `"enable_verifier"`).
    pub disable: Vec<String>,
    /// Boolean flags or presets to switch on, e.g. `"haswell"` or `"has_avx"` for a fixed
    /// x86-64 target. Applied before `disable`. Beware: Cranelift's `x86-64-v3` preset does not
    /// set `has_avx`, without which `fma` is not lowered natively; add `"has_avx"` to it.
    pub enable: Vec<String>,
}

impl IsaConfig {
    /// The host with the default settings.
    pub fn host() -> Self {
        Self::default()
    }

    /// The given target with the default settings.
    pub fn new(target: Target) -> Self {
        Self { target, ..Self::default() }
    }

    /// Builder-style: sets the optimisation level.
    pub fn with_opt_level(mut self, opt_level: OptLevel) -> Self {
        self.opt_level = opt_level;
        self
    }

    /// Builder-style: switches one more boolean flag off.
    pub fn disabling(mut self, flag: impl Into<String>) -> Self {
        self.disable.push(flag.into());
        self
    }

    /// Builder-style: switches one more boolean flag or preset on.
    pub fn enabling(mut self, flag: impl Into<String>) -> Self {
        self.enable.push(flag.into());
        self
    }
}

/// Builds the ISA for `config`: JIT settings for [`Target::Host`], object-file
/// (position-independent) settings for the fixed targets.
pub fn build_isa(config: &IsaConfig) -> Result<OwnedTargetIsa> {
    let kind = match config.target {
        Target::Host => OutputKind::Jit,
        Target::X86_64 | Target::Aarch64 => OutputKind::Object,
    };
    build_isa_for(config, kind)
}

/// Builds the ISA for `config` with the shared flags `kind` needs.
pub fn build_isa_for(config: &IsaConfig, kind: OutputKind) -> Result<OwnedTargetIsa> {
    let mut isa_builder = match config.target.triple() {
        None => cranelift_native::builder().map_err(|msg| CodegenError::UnsupportedTarget(format!("host: {msg}")))?,
        Some(triple) => {
            isa::lookup_by_name(triple).map_err(|e| CodegenError::UnsupportedTarget(format!("{triple}: {e}")))?
        }
    };

    let mut shared = settings::builder();
    let set = |b: &mut dyn Configurable, name: &str, value: &str| {
        b.set(name, value).map_err(|e| CodegenError::Isa(format!("{name}={value}: {e}")))
    };
    set(&mut shared, "opt_level", config.opt_level.as_str())?;
    match kind {
        OutputKind::Jit => {
            set(&mut shared, "is_pic", "false")?;
            set(&mut shared, "use_colocated_libcalls", "false")?;
        }
        OutputKind::Object => set(&mut shared, "is_pic", "true")?,
    }

    for flag in &config.enable {
        if isa_builder.enable(flag).is_err() {
            shared.enable(flag).map_err(|e| CodegenError::Isa(format!("enabling `{flag}`: {e}")))?;
        }
    }
    for flag in &config.disable {
        if isa_builder.set(flag, "false").is_err() {
            shared.set(flag, "false").map_err(|e| CodegenError::Isa(format!("disabling `{flag}`: {e}")))?;
        }
    }

    isa_builder.finish(settings::Flags::new(shared)).map_err(|e| CodegenError::Isa(e.to_string()))
}

/// The ISA's boolean flags as `(name, value)`, in Cranelift's declaration order (stable across
/// runs, so the CLI can print it). On x86-64: `has_sse3`, `has_ssse3`, …, `has_avx`, `has_avx2`,
/// `has_fma`, `has_avx512*`, …; on aarch64: `has_lse`, `has_pauth`, `has_fp16`, `has_dotprod`,
/// `has_i8mm`, `use_bti`, … (NEON itself is not optional there).
pub fn isa_features(isa: &dyn TargetIsa) -> Vec<(String, bool)> {
    isa.isa_flags().iter().filter_map(|v| v.as_bool().map(|b| (v.name.to_string(), b))).collect()
}

/// Whether `fma` lowers to a native fused multiply-add instruction.
///
/// On x86-64 that needs both `has_avx` and `has_fma` (VEX `vfmadd*`); otherwise Cranelift calls
/// the `fmaf` libcall once per lane, which is correct but about 18x slower. On aarch64 `fmla`
/// is always available.
pub fn has_fma(isa: &dyn TargetIsa) -> bool {
    match isa.name() {
        "x64" => {
            let flags = isa_features(isa);
            let on = |n: &str| flags.iter().any(|(name, value)| name == n && *value);
            on("has_avx") && on("has_fma")
        }
        "aarch64" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_round_trip() {
        for t in Target::ALL {
            assert_eq!(Target::from_name(t.name()).unwrap(), t);
            assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
        }
        let err = Target::from_name("riscv").unwrap_err();
        assert!(err.to_string().contains("riscv"));
    }

    #[test]
    fn host_isa_builds_and_lists_features_deterministically() {
        let isa = build_isa(&IsaConfig::host()).unwrap();
        assert!(!isa.flags().is_pic());
        let a = isa_features(&*isa);
        let b = isa_features(&*build_isa(&IsaConfig::host()).unwrap());
        assert_eq!(a, b);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(isa.name(), "x64");
            assert!(a.iter().any(|(n, _)| n == "has_fma"));
            assert!(a.iter().any(|(n, _)| n == "has_avx2"));
        }
    }

    #[test]
    fn disabling_fma_is_seen_by_has_fma() {
        let isa = build_isa(&IsaConfig::host().disabling("has_fma")).unwrap();
        if cfg!(target_arch = "x86_64") {
            assert!(!has_fma(&*isa));
            let flags = isa_features(&*isa);
            assert!(flags.contains(&("has_fma".to_string(), false)));
        }
    }

    #[test]
    fn fixed_targets_are_pic_with_expected_flags() {
        let x = build_isa(&IsaConfig::new(Target::X86_64)).unwrap();
        assert!(x.flags().is_pic());
        assert!(!has_fma(&*x), "baseline x86-64 has no FMA");
        // Cranelift quirk: the `x86-64-v3` preset sets has_fma and has_avx2 but not has_avx,
        // and native FMA needs has_avx, so `fma` stays a libcall. `haswell` sets all three.
        let v3 = build_isa(&IsaConfig::new(Target::X86_64).enabling("x86-64-v3")).unwrap();
        assert!(!has_fma(&*v3));
        let v3_avx = IsaConfig::new(Target::X86_64).enabling("x86-64-v3").enabling("has_avx");
        assert!(has_fma(&*build_isa(&v3_avx).unwrap()));
        let haswell = build_isa(&IsaConfig::new(Target::X86_64).enabling("haswell")).unwrap();
        assert!(has_fma(&*haswell));

        let a = build_isa(&IsaConfig::new(Target::Aarch64)).unwrap();
        assert_eq!(a.name(), "aarch64");
        assert!(has_fma(&*a));
        let names: Vec<String> = isa_features(&*a).into_iter().map(|(n, _)| n).collect();
        assert!(names.iter().any(|n| n == "has_lse"), "{names:?}");
    }

    #[test]
    fn opt_level_and_shared_flags_are_applied() {
        let isa = build_isa(&IsaConfig::host().with_opt_level(OptLevel::None).disabling("enable_verifier")).unwrap();
        assert_eq!(isa.flags().opt_level(), settings::OptLevel::None);
        assert!(!isa.flags().enable_verifier());
    }

    #[test]
    fn unknown_flag_is_an_error() {
        let Err(err) = build_isa(&IsaConfig::host().disabling("has_warp_drive")) else {
            panic!("an unknown flag was accepted");
        };
        assert!(matches!(err, CodegenError::Isa(_)), "{err}");
        assert!(err.to_string().contains("has_warp_drive"));
    }
}
