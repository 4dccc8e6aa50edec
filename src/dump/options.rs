//! [`DumpOptions`] and [`InferenceOptions`]: every option of MegEngine's
//! `trace.dump`, with its defaults and its checks.

use crate::error::{Error, Result};
use std::path::PathBuf;
use strata_runtime::format::DumpFormat;

/// The newest `model_version` strata writes (MegEngine's default is 2 too).
pub const MODEL_VERSION: u32 = 2;

/// Options of [`crate::Traced::dump`] and [`super::dump_module`] (MegEngine's
/// `trace.dump` arguments; the `enable_*` keyword arguments are in
/// [`InferenceOptions`]). `Default` gives MegEngine's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct DumpOptions {
    /// Names of the graph inputs, in argument order (default: the tensors' names
    /// from tracing, else `arg_{i}`).
    pub arg_names: Option<Vec<String>>,
    /// Names of the graph outputs; an empty string keeps the automatic name.
    pub output_names: Option<Vec<String>>,
    /// Append the model to the file instead of replacing it (the file must
    /// already hold models or not exist).
    pub append: bool,
    /// 0: no value names, 1: names of the outputs, 2: names of every value.
    pub keep_var_name: u8,
    /// Keep op names (and their source locations).
    pub keep_opr_name: bool,
    /// Keep parameters as named `graph.param` ops (names must be unique);
    /// otherwise they become anonymous `graph.const`.
    pub keep_param_name: bool,
    /// Store each op's position in the graph as its `_priority` attribute.
    pub keep_opr_priority: bool,
    /// Skip the conversion of ops to their older serialisable forms. strata has
    /// no op with an older form yet, so both settings write the same graph.
    pub no_change_graph: bool,
    /// Write a JSON description of what a stripped runtime must support.
    pub strip_info_file: Option<PathBuf>,
    /// Union the lists with an existing `strip_info_file` instead of replacing it.
    pub append_json: bool,
    /// Run the inference optimisations (with [`InferenceOptions`]) before writing.
    pub optimize_for_inference: bool,
    /// Bytes stored in the metadata (see [`DumpOptions::with_user_info_json`]).
    pub user_info: Option<Vec<u8>>,
    /// Write metadata (when false, readers see none).
    pub enable_metadata: bool,
    /// Testcases to embed, in MegEngine's `input_data` grammar (see `docs/input-data.md`).
    pub input_data: Vec<String>,
    /// Tile each testcase input this many times along axis 0.
    pub repeat: usize,
    /// Do not print the AssertEqual errors when the testcases run.
    pub silent: bool,
    /// Embed the testcase inputs without expected outputs.
    pub no_assert: bool,
    /// Largest accepted AssertEqual error of the embedded testcases.
    pub maxerr: f64,
    /// Resize image inputs to the input's height and width.
    pub resize_input: bool,
    /// An expression over `data` applied to each loaded input (`docs/input-data.md`).
    pub input_transform: Option<String>,
    /// `None` means FBS_V2.
    pub dump_format: Option<DumpFormat>,
    /// The version of the op set to write (FBS_V2 only).
    pub model_version: u32,
    /// The inference optimisations (`enable_*`).
    pub inference: InferenceOptions,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            arg_names: None,
            output_names: None,
            append: false,
            keep_var_name: 1,
            keep_opr_name: false,
            keep_param_name: false,
            keep_opr_priority: false,
            no_change_graph: false,
            strip_info_file: None,
            append_json: false,
            optimize_for_inference: true,
            user_info: None,
            enable_metadata: true,
            input_data: Vec::new(),
            repeat: 1,
            silent: false,
            no_assert: false,
            maxerr: DEFAULT_MAXERR,
            resize_input: false,
            input_transform: None,
            dump_format: None,
            model_version: MODEL_VERSION,
            inference: InferenceOptions::default(),
        }
    }
}

/// MegEngine's default `maxerr`.
pub const DEFAULT_MAXERR: f64 = 1e-4;

impl DumpOptions {
    /// Stores `value` as JSON in `user_info` (read it back with [`super::user_info_json`]).
    pub fn with_user_info_json<T: serde::Serialize>(mut self, value: &T) -> Result<Self> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| Error::Invalid(format!("user_info cannot be encoded: {e}")))?;
        self.user_info = Some(bytes);
        Ok(self)
    }

    /// The container layout.
    pub fn format(&self) -> DumpFormat {
        self.dump_format.unwrap_or_default()
    }

    /// Checks the options on their own (names are checked against the graph later).
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::Invalid(m));
        if self.keep_var_name > 2 {
            return invalid(format!("keep_var_name must be 0, 1 or 2, not {}", self.keep_var_name));
        }
        if !(self.maxerr.is_finite() && self.maxerr >= 0.0) {
            return invalid(format!("maxerr must be a finite number >= 0, not {}", self.maxerr));
        }
        if self.repeat == 0 {
            return invalid("repeat must be at least 1".into());
        }
        if self.append_json && self.strip_info_file.is_none() {
            return invalid("append_json needs strip_info_file".into());
        }
        if self.model_version == 0 || self.model_version > MODEL_VERSION {
            return invalid(format!("model_version must be 1..={MODEL_VERSION}, not {}", self.model_version));
        }
        if self.format() == DumpFormat::Fbs && self.model_version != MODEL_VERSION {
            return invalid("model_version applies to the FBS_V2 format only".into());
        }
        if self.user_info.is_some() && !self.enable_metadata {
            return invalid("user_info is stored in the metadata, but enable_metadata is false".into());
        }
        if self.input_data.is_empty() {
            let testcase_only = [
                ("repeat", self.repeat != 1),
                ("silent", self.silent),
                ("no_assert", self.no_assert),
                ("maxerr", self.maxerr != DEFAULT_MAXERR),
                ("resize_input", self.resize_input),
                ("input_transform", self.input_transform.is_some()),
            ];
            if let Some((name, _)) = testcase_only.iter().find(|(_, set)| *set) {
                return invalid(format!("{name} shapes the embedded testcases, but no input_data was given"));
            }
        }
        let enabled = self.inference.enabled();
        if !self.optimize_for_inference && !enabled.is_empty() {
            return invalid(format!("{} needs optimize_for_inference", enabled.join(", ")));
        }
        self.inference.validate()
    }
}

/// A layout that an `enable_*` option converts the graph to (MegEngine's
/// `LayoutTransform`, numbered as in its metadata bits 32..63).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutOption {
    /// `enable_nchw4`.
    Nchw4 = 1,
    /// `enable_hwcd4`.
    Nhwcd4 = 2,
    /// `enable_nchw88`.
    Nchw88 = 3,
    /// `enable_nchw44`.
    Nchw44 = 4,
    /// `enable_nchw44_dot`.
    Nchw44Dot = 5,
    /// `enable_nchw32`.
    Nchw32 = 6,
    /// `enable_chwn4`.
    Chwn4 = 7,
    /// `enable_nchw64`.
    Nchw64 = 8,
}

/// MegEngine's `optimize_for_inference` keyword arguments. Each is wired to its
/// pass when that pass lands; until then enabling one is a "not supported yet"
/// error naming it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InferenceOptions {
    /// f16 inputs/outputs, f32 computation.
    pub enable_io16xc32: bool,
    /// f16 inputs, outputs and computation.
    pub enable_ioc16: bool,
    /// NHWCD4 layout.
    pub enable_hwcd4: bool,
    /// NCHW88 layout (x86 AVX).
    pub enable_nchw88: bool,
    /// NCHW44 layout (ARM NEON).
    pub enable_nchw44: bool,
    /// NCHW44 layout for dot-product instructions.
    pub enable_nchw44_dot: bool,
    /// NCHW4 layout.
    pub enable_nchw4: bool,
    /// NCHW32 layout.
    pub enable_nchw32: bool,
    /// CHWN4 layout.
    pub enable_chwn4: bool,
    /// NCHW64 layout.
    pub enable_nchw64: bool,
    /// Fuse conv + bias + nonlinearity into `conv_bias`.
    pub enable_fuse_conv_bias_nonlinearity: bool,
    /// Also fuse a same-shape addend `z` into `conv_bias`.
    pub enable_fuse_conv_bias_with_z: bool,
    /// Fuse the uint8 preprocessing chain.
    pub enable_fuse_preprocess: bool,
}

type Field = fn(&mut InferenceOptions) -> &mut bool;

/// Every option by name, with the issue that brings its pass (empty: implemented).
const FIELDS: [(&str, Field, &str); 13] = [
    ("enable_io16xc32", |o| &mut o.enable_io16xc32, ""),
    ("enable_ioc16", |o| &mut o.enable_ioc16, ""),
    ("enable_hwcd4", |o| &mut o.enable_hwcd4, ""),
    ("enable_nchw88", |o| &mut o.enable_nchw88, ""),
    ("enable_nchw44", |o| &mut o.enable_nchw44, ""),
    ("enable_nchw44_dot", |o| &mut o.enable_nchw44_dot, ""),
    ("enable_nchw4", |o| &mut o.enable_nchw4, ""),
    ("enable_nchw32", |o| &mut o.enable_nchw32, ""),
    ("enable_chwn4", |o| &mut o.enable_chwn4, ""),
    ("enable_nchw64", |o| &mut o.enable_nchw64, "NCHW64 is the int4 layout and strata has no 4-bit element type"),
    ("enable_fuse_conv_bias_nonlinearity", |o| &mut o.enable_fuse_conv_bias_nonlinearity, ""),
    ("enable_fuse_conv_bias_with_z", |o| &mut o.enable_fuse_conv_bias_with_z, ""),
    ("enable_fuse_preprocess", |o| &mut o.enable_fuse_preprocess, ""),
];

const LAYOUTS: [(&str, LayoutOption); 8] = [
    ("enable_nchw4", LayoutOption::Nchw4),
    ("enable_hwcd4", LayoutOption::Nhwcd4),
    ("enable_nchw88", LayoutOption::Nchw88),
    ("enable_nchw44", LayoutOption::Nchw44),
    ("enable_nchw44_dot", LayoutOption::Nchw44Dot),
    ("enable_nchw32", LayoutOption::Nchw32),
    ("enable_chwn4", LayoutOption::Chwn4),
    ("enable_nchw64", LayoutOption::Nchw64),
];

impl InferenceOptions {
    /// The option names, as MegEngine spells them.
    pub fn names() -> impl Iterator<Item = &'static str> {
        FIELDS.iter().map(|f| f.0)
    }

    /// Sets option `name` (MegEngine's keyword); an unknown name is an error.
    pub fn set(&mut self, name: &str, on: bool) -> Result<()> {
        let field = FIELDS.iter().find(|f| f.0 == name).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown options: `{name}` (known: {})",
                Self::names().collect::<Vec<_>>().join(", ")
            ))
        })?;
        *(field.1)(self) = on;
        Ok(())
    }

    /// Options from keyword arguments, like `optimize_for_inference(**kwargs)`.
    pub fn from_kwargs<'a>(kwargs: impl IntoIterator<Item = (&'a str, bool)>) -> Result<Self> {
        let mut o = InferenceOptions::default();
        for (k, v) in kwargs {
            o.set(k, v)?;
        }
        Ok(o)
    }

    /// The names of the enabled options.
    pub fn enabled(&self) -> Vec<&'static str> {
        let mut copy = self.clone();
        FIELDS.iter().filter(|f| *(f.1)(&mut copy)).map(|f| f.0).collect()
    }

    /// The one layout option enabled, if any (more than one is an error).
    pub fn layout(&self) -> Result<Option<LayoutOption>> {
        let enabled = self.enabled();
        let layouts: Vec<_> = LAYOUTS.iter().filter(|(n, _)| enabled.contains(n)).collect();
        match layouts.as_slice() {
            [] => Ok(None),
            [(_, l)] => Ok(Some(*l)),
            many => Err(Error::Invalid(format!(
                "only one layout option may be enabled, got {}",
                many.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Checks the combination and reports options whose passes do not exist yet.
    pub fn validate(&self) -> Result<()> {
        self.layout()?;
        if self.enable_io16xc32 && self.enable_ioc16 {
            return Err(Error::Invalid("enable_io16xc32 and enable_ioc16 exclude each other".into()));
        }
        let mut copy = self.clone();
        if let Some((name, _, by)) = FIELDS.iter().find(|f| !f.2.is_empty() && *(f.1)(&mut copy)) {
            return Err(Error::Unsupported(format!("{name}: {by}")));
        }
        Ok(())
    }

    /// The options as MegEngine's metadata bit mask: bit 0 io16xc32, bit 1
    /// ioc16, bit 2 fuse_conv_bias_nonlinearity, bit 3 fuse_conv_bias_with_z,
    /// bit 5 fuse_preprocess; bits 32.. the layout number.
    pub fn optimize_options(&self) -> Result<u64> {
        let bits = [
            (0, self.enable_io16xc32),
            (1, self.enable_ioc16),
            (2, self.enable_fuse_conv_bias_nonlinearity),
            (3, self.enable_fuse_conv_bias_with_z),
            (5, self.enable_fuse_preprocess),
        ];
        let mut mask = bits.iter().filter(|b| b.1).fold(0u64, |m, b| m | 1 << b.0);
        if let Some(l) = self.layout()? {
            mask |= (l as u64) << 32;
        }
        Ok(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_megengine_s() {
        let o = DumpOptions::default();
        assert_eq!((o.keep_var_name, o.optimize_for_inference, o.enable_metadata), (1, true, true));
        assert_eq!((o.maxerr, o.repeat, o.model_version, o.format()), (1e-4, 1, 2, DumpFormat::FbsV2));
        o.validate().unwrap();
    }

    #[test]
    fn bad_combinations_are_named() {
        let check = |o: DumpOptions, needle: &str| {
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "`{e}` should mention `{needle}`");
        };
        check(DumpOptions { keep_var_name: 3, ..Default::default() }, "keep_var_name");
        check(DumpOptions { maxerr: f64::NAN, ..Default::default() }, "maxerr");
        check(DumpOptions { repeat: 0, ..Default::default() }, "repeat");
        check(DumpOptions { append_json: true, ..Default::default() }, "strip_info_file");
        check(DumpOptions { model_version: 3, ..Default::default() }, "model_version");
        check(DumpOptions { model_version: 1, dump_format: Some(DumpFormat::Fbs), ..Default::default() }, "FBS_V2");
        check(DumpOptions { resize_input: true, ..Default::default() }, "resize_input");
        check(DumpOptions { silent: true, ..Default::default() }, "silent");
        check(DumpOptions { user_info: Some(vec![1]), enable_metadata: false, ..Default::default() }, "metadata");
        let mut o = DumpOptions { optimize_for_inference: false, ..Default::default() };
        o.inference.enable_nchw64 = true;
        check(o.clone(), "needs optimize_for_inference");
        o.optimize_for_inference = true;
        assert!(matches!(o.validate(), Err(Error::Unsupported(m)) if m.contains("enable_nchw64")));
    }

    #[test]
    fn kwargs_and_mask() {
        assert!(InferenceOptions::from_kwargs([("enable_nchw99", true)]).unwrap_err().to_string().contains("unknown"));
        let o = InferenceOptions::from_kwargs([("enable_nchw44", true), ("enable_fuse_conv_bias_nonlinearity", true)])
            .unwrap();
        assert_eq!(o.enabled(), ["enable_nchw44", "enable_fuse_conv_bias_nonlinearity"]);
        assert_eq!(o.optimize_options().unwrap(), 4 << 32 | 1 << 2);
        let two = InferenceOptions::from_kwargs([("enable_nchw44", true), ("enable_nchw88", true)]).unwrap();
        assert!(two.layout().unwrap_err().to_string().contains("only one layout"));
        assert_eq!(InferenceOptions::names().count(), 13);
    }
}
