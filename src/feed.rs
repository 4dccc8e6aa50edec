//! Input data for testcases (`strata dump --input-data`) and runs
//! (`strata run --input`), in MegEngine's `input_data` grammar extended with
//! load_and_run's sources, plus `.npy` files and the AssertEqual error measure.
//!
//! ```text
//! spec   := item (";" item)*          one testcase
//! item   := [name ":"] source         the name may be left out when there is one input
//! source := "#rand(" min "," max ["," dim ("," dim)* ["," "..."]] ")"
//!         | "[" ... "]"               a literal array: `[[1,2],[3,4]]`
//!         | "{" [dim ("," dim)*] "}"  a shape, filled with ones: `{1,3,224,224}`
//!         | path.npy                  a NumPy array (C order)
//!         | path.json                 load_and_run's JSON inputs: not supported yet
//!         | path                      any other path is an image (PNG, JPEG, PNM, BMP)
//! ```
//! A spec starting with `@` names a file whose non-empty lines are specs. A lone
//! `#rand(...)` applies to every input. `...` copies the remaining dims of the
//! input's shape; a `#rand` without dims uses the input's shape. The name is
//! split at the first `:` outside brackets.
//!
//! [`materialize_with`] turns a spec into tensors for given inputs: it loads
//! each source, arranges images for the input's layout, applies
//! `input_transform` ([`crate::transform`]), casts to the input's element type
//! and repeats along axis 0. `docs/input-data.md` is the user guide.

use crate::error::{Error, Result};
use crate::transform;
use std::path::{Path, PathBuf};
use strata_ir::{ElemType, TensorData};

/// Most elements a generated or repeated input may have (2^28): a guard against
/// a typo such as `{100000,100000}` exhausting memory.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Where one input's data comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// Uniform random values in `[min, max)`.
    Rand {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
        /// Explicit leading dims (empty: the input's shape).
        dims: Vec<usize>,
        /// Copy the remaining dims from the input's shape.
        rest: bool,
    },
    /// A `.npy` file.
    Npy(PathBuf),
    /// An image file, decoded to BGR 0..255 values in the input's layout.
    Image(PathBuf),
    /// A literal array such as `[[1,2],[3,4]]`, parsed as `i32`, or as `f32`
    /// when a number has a `.` or an exponent.
    Literal(TensorData),
    /// A tensor of this shape filled with the value 1 (`{1,3,224,224}`).
    Shape(Vec<usize>),
    /// A load_and_run `.json` input file (not supported yet).
    Json(PathBuf),
}

/// One testcase: a source per input (`None` name: the only input, or every input for `#rand`).
#[derive(Clone, Debug, PartialEq)]
pub struct FeedSpec {
    /// `(input name, source)` pairs in spec order.
    pub items: Vec<(Option<String>, DataSource)>,
}

/// How [`materialize_with`] prepares data (MegEngine's `trace.dump` arguments of
/// the same names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedOptions {
    /// Seed of `#rand` (input `k` uses `seed + k`).
    pub seed: u64,
    /// Resize images to the input's height and width instead of rejecting a
    /// size mismatch.
    pub resize_input: bool,
    /// An expression over `data` applied to every non-`#rand` source
    /// (see [`crate::transform`]).
    pub input_transform: Option<String>,
    /// Tile the data this many times along axis 0 (at least 1).
    pub repeat: usize,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions { seed: 0, resize_input: false, input_transform: None, repeat: 1 }
    }
}

fn bad(spec: &str, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("input_data `{spec}`: {why}"))
}

/// Parses one `input_data` value into testcases (`@file` expands to one per line).
pub fn parse_input_data(spec: &str) -> Result<Vec<FeedSpec>> {
    if let Some(path) = spec.strip_prefix('@') {
        let text = std::fs::read_to_string(path).map_err(|e| bad(spec, format!("cannot read {path}: {e}")))?;
        return text.lines().map(str::trim).filter(|l| !l.is_empty()).map(parse_spec).collect();
    }
    Ok(vec![parse_spec(spec)?])
}

/// Splits `name:source` at the first `:` outside brackets; sources starting with
/// `#`, `[` or `{` never have a name before them.
fn split_name(part: &str) -> (Option<String>, &str) {
    if part.starts_with(['#', '[', '{']) {
        return (None, part);
    }
    let mut depth = 0i32;
    for (i, c) in part.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ':' if depth == 0 => {
                let name = part[..i].trim();
                if name.is_empty() {
                    return (None, part);
                }
                return (Some(name.to_string()), part[i + 1..].trim());
            }
            _ => {}
        }
    }
    (None, part)
}

fn parse_spec(spec: &str) -> Result<FeedSpec> {
    let mut items = Vec::new();
    for part in spec.split(';').map(str::trim) {
        if part.is_empty() {
            return Err(bad(spec, "an empty item"));
        }
        let (name, src) = split_name(part);
        items.push((name, parse_source(spec, src)?));
    }
    Ok(FeedSpec { items })
}

fn parse_source(spec: &str, src: &str) -> Result<DataSource> {
    if let Some(body) = src.strip_prefix("#rand(") {
        let body = body.strip_suffix(')').ok_or_else(|| bad(spec, "`#rand(` is not closed"))?;
        let parts: Vec<&str> = body.split(',').map(str::trim).collect();
        if parts.len() < 2 {
            return Err(bad(spec, "#rand needs min and max"));
        }
        let num = |s: &str| {
            s.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| bad(spec, format!("`{s}` is not a number")))
        };
        let (min, max) = (num(parts[0])?, num(parts[1])?);
        if min > max {
            return Err(bad(spec, format!("min {min} is above max {max}")));
        }
        let mut dims = Vec::new();
        let mut rest = false;
        for (k, p) in parts[2..].iter().enumerate() {
            if *p == "..." {
                if k + 3 != parts.len() {
                    return Err(bad(spec, "`...` must come last"));
                }
                rest = true;
            } else {
                dims.push(p.parse::<usize>().map_err(|_| bad(spec, format!("`{p}` is not a dimension")))?);
            }
        }
        return Ok(DataSource::Rand { min, max, dims, rest });
    }
    if src.starts_with('#') {
        return Err(bad(spec, format!("unknown generator `{src}` (only #rand(min,max[,shape…]) exists)")));
    }
    if src.starts_with('[') {
        return parse_literal(src).map(DataSource::Literal).map_err(|why| bad(spec, format!("literal `{src}`: {why}")));
    }
    if let Some(body) = src.strip_prefix('{') {
        let body = body.strip_suffix('}').ok_or_else(|| bad(spec, format!("shape `{src}` is not closed with `}}`")))?;
        let dims = if body.trim().is_empty() {
            Vec::new()
        } else {
            body.split(',')
                .map(str::trim)
                .map(|d| d.parse::<usize>().map_err(|_| bad(spec, format!("shape `{src}`: `{d}` is not a dimension"))))
                .collect::<Result<_>>()?
        };
        return Ok(DataSource::Shape(dims));
    }
    let path = PathBuf::from(src);
    let ext = path.extension().map(|e| e.to_ascii_lowercase());
    Ok(match ext.as_ref().and_then(|e| e.to_str()) {
        Some("npy") => DataSource::Npy(path),
        Some("json") => DataSource::Json(path),
        _ => DataSource::Image(path),
    })
}

/// Parses a literal array (`[[1,2],[3,4]]`): `i32` unless a number contains
/// `.`, `e` or `E` (then `f32`). The nesting must be rectangular.
fn parse_literal(src: &str) -> std::result::Result<TensorData, String> {
    struct Lit<'a> {
        src: &'a str,
        pos: usize,
        numbers: Vec<&'a str>,
    }
    impl<'a> Lit<'a> {
        fn skip_ws(&mut self) {
            let rest = &self.src[self.pos..];
            self.pos += rest.len() - rest.trim_start().len();
        }
        /// Parses one element and returns its shape.
        fn elem(&mut self, depth: usize) -> std::result::Result<Vec<usize>, String> {
            if depth > 32 {
                return Err("more than 32 nested levels".into());
            }
            self.skip_ws();
            let rest = &self.src[self.pos..];
            if !rest.starts_with('[') {
                let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c))).unwrap_or(rest.len());
                if len == 0 {
                    let found = rest.chars().next().map_or("the end".to_string(), |c| format!("`{c}`"));
                    return Err(format!("expected a number or `[` at offset {}, found {found}", self.pos));
                }
                self.numbers.push(&rest[..len]);
                self.pos += len;
                return Ok(Vec::new());
            }
            self.pos += 1;
            self.skip_ws();
            if self.src[self.pos..].starts_with(']') {
                self.pos += 1;
                return Ok(vec![0]);
            }
            let mut count = 0usize;
            let mut inner: Option<Vec<usize>> = None;
            loop {
                let at = self.pos;
                let shape = self.elem(depth + 1)?;
                match &inner {
                    Some(first) if *first != shape => {
                        return Err(format!(
                            "ragged nesting: an element at offset {at} has shape {shape:?}, the first {first:?}"
                        ));
                    }
                    Some(_) => {}
                    None => inner = Some(shape),
                }
                count += 1;
                self.skip_ws();
                match self.src[self.pos..].chars().next() {
                    Some(',') => self.pos += 1,
                    Some(']') => {
                        self.pos += 1;
                        break;
                    }
                    other => {
                        let found = other.map_or("the end".to_string(), |c| format!("`{c}`"));
                        return Err(format!("expected `,` or `]` at offset {}, found {found}", self.pos));
                    }
                }
            }
            let mut shape = vec![count];
            shape.extend(inner.unwrap_or_default());
            Ok(shape)
        }
    }
    let mut p = Lit { src, pos: 0, numbers: Vec::new() };
    let shape = p.elem(0)?;
    p.skip_ws();
    if p.pos != src.len() {
        return Err(format!("unexpected `{}` after the array", &src[p.pos..]));
    }
    let float = p.numbers.iter().any(|n| n.contains(['.', 'e', 'E']));
    let mut values = Vec::with_capacity(p.numbers.len());
    for n in &p.numbers {
        let v = if float {
            n.parse::<f32>().ok().filter(|v| v.is_finite()).map(f64::from)
        } else {
            n.parse::<i32>().ok().map(f64::from)
        };
        values
            .push(v.ok_or_else(|| format!("`{n}` is not {}", if float { "an f32 number" } else { "an i32 number" }))?);
    }
    let elem = if float { ElemType::F32 } else { ElemType::I32 };
    TensorData::from_f64(elem, shape, &values).map_err(|e| e.to_string())
}

/// The shape a `#rand` source gives for an input of shape `input`.
pub fn rand_shape(dims: &[usize], rest: bool, input: &[usize]) -> Result<Vec<usize>> {
    if dims.is_empty() && !rest {
        return Ok(input.to_vec());
    }
    let mut shape = dims.to_vec();
    if rest {
        if dims.len() > input.len() {
            return Err(Error::Invalid(format!(
                "#rand gives {} dims before `...` but the input has rank {}",
                dims.len(),
                input.len()
            )));
        }
        shape.extend_from_slice(&input[dims.len()..]);
    }
    Ok(shape)
}

/// Builds the data of one testcase for inputs `(name, element type, shape)` with
/// `#rand` seeded by `seed` and no other options (see [`materialize_with`]).
pub fn materialize(
    spec: &FeedSpec,
    inputs: &[(String, ElemType, Vec<usize>)],
    seed: u64,
) -> Result<Vec<(String, TensorData)>> {
    materialize_with(spec, inputs, &FeedOptions { seed, ..FeedOptions::default() })
}

/// Builds the data of one testcase for inputs `(name, element type, shape)`, in
/// input order.
///
/// Shapes must be concrete: for a symbolic dim (a dynamic batch) the caller
/// passes the size it wants. Each source is loaded, images are laid out for the
/// input's shape, `input_transform` is applied, the result is cast to the input's
/// element type and tiled `repeat` times along axis 0. The result's shape is
/// not checked against the input's (a `#rand` with explicit dims, an `.npy`,
/// a literal or `repeat` may give another); the runtime checks that.
pub fn materialize_with(
    spec: &FeedSpec,
    inputs: &[(String, ElemType, Vec<usize>)],
    opts: &FeedOptions,
) -> Result<Vec<(String, TensorData)>> {
    if opts.repeat == 0 {
        return Err(Error::Invalid("repeat must be at least 1".into()));
    }
    let transform = opts.input_transform.as_deref().map(transform::parse).transpose()?;
    let mut out: Vec<Option<TensorData>> = vec![None; inputs.len()];
    for (k, (name, src)) in spec.items.iter().enumerate() {
        let targets: Vec<usize> = match name {
            Some(n) => vec![inputs.iter().position(|(i, _, _)| i == n).ok_or_else(|| {
                let names: Vec<_> = inputs.iter().map(|(i, _, _)| i.as_str()).collect();
                Error::Invalid(format!("input_data names `{n}`, but the inputs are {}", names.join(", ")))
            })?],
            None if matches!(src, DataSource::Rand { .. }) && spec.items.len() == 1 => (0..inputs.len()).collect(),
            None if inputs.len() == 1 => vec![0],
            None => {
                return Err(Error::Invalid(format!(
                    "input_data item {k} has no name but there are {} inputs",
                    inputs.len()
                )));
            }
        };
        for t in targets {
            let (name, elem, shape) = &inputs[t];
            let data = load_input(src, *elem, shape, opts, transform.as_ref(), opts.seed.wrapping_add(t as u64))
                .map_err(|e| match e {
                    Error::Invalid(m) => Error::Invalid(format!("input `{name}`: {m}")),
                    Error::Unsupported(m) => Error::Unsupported(format!("input `{name}`: {m}")),
                    other => other,
                })?;
            out[t] = Some(data);
        }
    }
    inputs
        .iter()
        .zip(out)
        .map(|((name, _, _), d)| {
            d.map(|d| (name.clone(), d))
                .ok_or_else(|| Error::Invalid(format!("input_data gives no data for input `{name}`")))
        })
        .collect()
}

fn check_size(shape: &[usize]) -> Result<()> {
    match strata_ir::tensor::num_elements(shape) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(Error::Invalid(format!("shape {shape:?} has more than {MAX_ELEMENTS} elements"))),
    }
}

/// Loads one source for an input of `elem` and `shape`, transforms, casts and repeats it.
fn load_input(
    src: &DataSource,
    elem: ElemType,
    shape: &[usize],
    opts: &FeedOptions,
    transform: Option<&transform::Expr>,
    seed: u64,
) -> Result<TensorData> {
    let tensor_err = |e: strata_ir::tensor::TensorError| Error::Invalid(e.to_string());
    let raw = match src {
        DataSource::Rand { min, max, dims, rest } => {
            let used: Vec<&str> = [(opts.resize_input, "resize_input"), (transform.is_some(), "input_transform")]
                .into_iter()
                .filter_map(|(on, what)| on.then_some(what))
                .collect();
            if !used.is_empty() {
                return Err(Error::Invalid(format!(
                    "{} cannot be used with #rand data (as in MegEngine): give an image or .npy file",
                    used.join(" and ")
                )));
            }
            let shape = rand_shape(dims, *rest, shape)?;
            check_size(&shape)?;
            TensorData::random_uniform(elem, shape, *min, *max, seed).map_err(tensor_err)?
        }
        DataSource::Npy(path) => read_npy_file(path)?,
        DataSource::Image(path) => read_image(path, shape, opts.resize_input)?,
        DataSource::Literal(t) => t.clone(),
        DataSource::Shape(dims) => {
            check_size(dims)?;
            let n = strata_ir::tensor::num_elements(dims).expect("invariant: checked by check_size");
            TensorData::from_f64(elem, dims.clone(), &vec![1.0; n]).map_err(tensor_err)?
        }
        DataSource::Json(path) => {
            return Err(Error::Unsupported(format!(
                "JSON input files ({}); use a .npy file, a literal `[..]` or a shape `{{..}}`",
                path.display()
            )));
        }
    };
    let data = match transform {
        Some(expr) => expr.eval_as(&raw, elem)?,
        None if raw.elem() == elem => raw,
        None => TensorData::from_f64(elem, raw.shape().to_vec(), &raw.to_f64_vec()).map_err(tensor_err)?,
    };
    repeat_batch(&data, opts.repeat)
}

/// Tiles `t` `repeat` times along axis 0 (`[a, b]` twice is `[a, b, a, b]`).
pub fn repeat_batch(t: &TensorData, repeat: usize) -> Result<TensorData> {
    if repeat == 1 {
        return Ok(t.clone());
    }
    if t.shape().is_empty() {
        return Err(Error::Invalid("repeat needs data of rank 1 or more, not a scalar".into()));
    }
    let mut shape = t.shape().to_vec();
    shape[0] = shape[0].saturating_mul(repeat);
    check_size(&shape)?;
    TensorData::from_bytes(t.elem(), shape, t.bytes().repeat(repeat).into()).map_err(|e| Error::Invalid(e.to_string()))
}

/// How an image input lays out its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ImageLayout {
    /// Batch size; `None` for 3-D shapes without a batch dim.
    batch: Option<usize>,
    channels: usize,
    height: usize,
    width: usize,
    channels_first: bool,
}

/// Infers the layout from an input shape: 4-D `N,C,H,W` when dim 1 is 1 or 3,
/// else `N,H,W,C` when the last dim is 1 or 3; 3-D `C,H,W` / `H,W,C` likewise.
fn image_layout(shape: &[usize]) -> Option<ImageLayout> {
    let (batch, dims) = match shape {
        [n, rest @ ..] if rest.len() == 3 => (Some(*n), rest),
        _ if shape.len() == 3 => (None, shape),
        _ => return None,
    };
    let is_chan = |c: usize| c == 1 || c == 3;
    if is_chan(dims[0]) {
        Some(ImageLayout { batch, channels: dims[0], height: dims[1], width: dims[2], channels_first: true })
    } else if is_chan(dims[2]) {
        Some(ImageLayout { batch, channels: dims[2], height: dims[0], width: dims[1], channels_first: false })
    } else {
        None
    }
}

/// Bilinear resize of an interleaved 8-bit image with half-pixel centres
/// (OpenCV's `INTER_LINEAR` without its fixed-point rounding): each result is
/// rounded to the nearest integer.
fn resize_bilinear(src: &[u8], (sh, sw): (usize, usize), chans: usize, (dh, dw): (usize, usize)) -> Vec<u8> {
    let axis = |d: usize, dst: usize, src: usize| {
        let f = ((d as f64 + 0.5) * src as f64 / dst as f64 - 0.5).clamp(0.0, (src - 1) as f64);
        let lo = f.floor() as usize;
        (lo, (lo + 1).min(src - 1), f - lo as f64)
    };
    let mut out = Vec::with_capacity(dh * dw * chans);
    for y in 0..dh {
        let (y0, y1, wy) = axis(y, dh, sh);
        for x in 0..dw {
            let (x0, x1, wx) = axis(x, dw, sw);
            for c in 0..chans {
                let px = |yy: usize, xx: usize| src[(yy * sw + xx) * chans + c] as f64;
                let top = px(y0, x0) * (1.0 - wx) + px(y0, x1) * wx;
                let bottom = px(y1, x0) * (1.0 - wx) + px(y1, x1) * wx;
                out.push((top * (1.0 - wy) + bottom * wy).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// Reads an image as `u8` data laid out for an input of `shape`: BGR channel
/// order (grayscale for 1 channel), resized when `resize` is set, repeated to
/// fill the batch.
fn read_image(path: &Path, shape: &[usize], resize: bool) -> Result<TensorData> {
    let layout = image_layout(shape).ok_or_else(|| {
        Error::Invalid(format!(
            "image {}: cannot infer the image layout from the input shape {shape:?} (expected N,C,H,W or N,H,W,C, \
             or C,H,W or H,W,C, with 1 or 3 channels)",
            path.display()
        ))
    })?;
    let cannot = |e: &dyn std::fmt::Display| Error::Invalid(format!("cannot read image {}: {e}", path.display()));
    let img = image::ImageReader::open(path)
        .map_err(|e| cannot(&e))?
        .with_guessed_format()
        .map_err(|e| cannot(&e))?
        .decode()
        .map_err(|e| cannot(&e))?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::Invalid(format!("image {} is empty ({h}x{w})", path.display())));
    }
    let mut bgr: Vec<u8> = img.pixels().flat_map(|p| [p.0[2], p.0[1], p.0[0]]).collect();
    if (h, w) != (layout.height, layout.width) {
        if !resize {
            return Err(Error::Invalid(format!(
                "image {} is {h}x{w} (HxW) but the input of shape {shape:?} takes {}x{}; resize it or pass \
                 resize_input",
                path.display(),
                layout.height,
                layout.width
            )));
        }
        bgr = resize_bilinear(&bgr, (h, w), 3, (layout.height, layout.width));
    }
    let pixels: Vec<u8> = if layout.channels == 1 {
        // BT.601 luma in 14-bit fixed point, as OpenCV's BGR2GRAY.
        bgr.chunks_exact(3)
            .map(|p| ((p[0] as u32 * 1868 + p[1] as u32 * 9617 + p[2] as u32 * 4899 + (1 << 13)) >> 14) as u8)
            .collect()
    } else {
        bgr
    };
    let (c, hw) = (layout.channels, layout.height * layout.width);
    let plane: Vec<u8> =
        if layout.channels_first { (0..c * hw).map(|i| pixels[(i % hw) * c + i / hw]).collect() } else { pixels };
    let mut dims =
        if layout.channels_first { vec![c, layout.height, layout.width] } else { vec![layout.height, layout.width, c] };
    let batch = layout.batch.unwrap_or(1);
    if let Some(n) = layout.batch {
        dims.insert(0, n);
    }
    check_size(&dims)?;
    TensorData::from_bytes(ElemType::U8, dims, plane.repeat(batch).into()).map_err(|e| Error::Invalid(e.to_string()))
}

/// MegEngine's AssertEqual error: `max |e - g| / max(min(|e|, |g|), 1)`
/// (NaN if a NaN appears, infinity on a shape mismatch).
pub fn assert_equal_error(expected: &TensorData, got: &TensorData) -> f64 {
    if expected.shape() != got.shape() {
        return f64::INFINITY;
    }
    let mut err = 0f64;
    for i in 0..expected.len() {
        let (e, g) = (expected.get_real(i), got.get_real(i));
        let d = (e - g).abs() / e.abs().min(g.abs()).max(1.0);
        if d.is_nan() {
            return f64::NAN;
        }
        err = err.max(d);
    }
    err
}

fn npy_descr(elem: ElemType) -> Option<&'static str> {
    Some(match elem {
        ElemType::F32 => "<f4",
        ElemType::F16 => "<f2",
        ElemType::I8 => "|i1",
        ElemType::U8 => "|u1",
        ElemType::I16 => "<i2",
        ElemType::U16 => "<u2",
        ElemType::I32 => "<i4",
        ElemType::I64 => "<i8",
        ElemType::Bool => "|b1",
        _ => return None,
    })
}

/// Encodes a tensor as a `.npy` file (version 1.0, C order).
pub fn write_npy(t: &TensorData) -> Result<Vec<u8>> {
    let descr = npy_descr(t.elem()).ok_or_else(|| Error::Unsupported(format!(".npy files of {}", t.elem())))?;
    let shape: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let shape = if shape.len() == 1 { format!("({},)", shape[0]) } else { format!("({})", shape.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.bytes());
    Ok(out)
}

/// Reads a `.npy` file.
pub fn read_npy_file(path: &Path) -> Result<TensorData> {
    let bytes = std::fs::read(path).map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
    read_npy(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Decodes a `.npy` buffer (versions 1–3, little-endian, C order).
pub fn read_npy(bytes: &[u8]) -> std::result::Result<TensorData, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start.checked_add(header_len).filter(|&e| e <= bytes.len()).ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "the .npy header is not text")?;
    let field = |key: &str| -> std::result::Result<&str, String> {
        let at = header.find(&format!("'{key}'")).ok_or(format!("the .npy header has no '{key}'"))?;
        let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':').ok_or("malformed .npy header")?;
        Ok(rest.trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.strip_prefix('\'').and_then(|d| d.split('\'').next()).ok_or("malformed descr")?;
    // float64 (NumPy's default) has no strata element type: it is read as f32.
    let f64_file = matches!(descr, "<f8" | "=f8");
    let elem = if f64_file {
        ElemType::F32
    } else {
        ElemType::PLAIN
            .into_iter()
            .find(|&e| {
                npy_descr(e) == Some(descr) || npy_descr(e).map(|d| d.replacen('<', "=", 1)).as_deref() == Some(descr)
            })
            .ok_or(format!("unsupported .npy dtype {descr}"))?
    };
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran-order .npy arrays are not supported".into());
    }
    let shape = field("shape")?;
    let inner = shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or("malformed shape")?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad dimension `{s}`")))
        .collect::<std::result::Result<_, _>>()?;
    if f64_file {
        let data = &bytes[end..];
        let count: usize = dims.iter().product();
        if data.len() != count * 8 {
            return Err(format!("the .npy data has {} bytes, {count} float64 values need {}", data.len(), count * 8));
        }
        let values: Vec<f64> =
            data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("invariant: 8 bytes"))).collect();
        return TensorData::from_reals(ElemType::F32, dims, &values).map_err(|e| e.to_string());
    }
    TensorData::from_bytes(elem, dims, bytes[end..].to_vec().into()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        let s = parse_input_data("data:#rand(0,255,1,3,...);mask:m.npy").unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].items[0],
            (Some("data".into()), DataSource::Rand { min: 0.0, max: 255.0, dims: vec![1, 3], rest: true })
        );
        assert_eq!(s[0].items[1], (Some("mask".into()), DataSource::Npy("m.npy".into())));
        let lone = parse_input_data("#rand(-1, 1)").unwrap();
        assert_eq!(lone[0].items[0].0, None);
        assert!(matches!(parse_input_data("x:img.png").unwrap()[0].items[0].1, DataSource::Image(_)));
        for bad in [
            "#rand(1)",
            "#rand(0,1",
            "#rand(2,1)",
            "#rand(0,1,...,3)",
            "#rand(0,1,x)",
            "#bogus(1)",
            "a:#rand(0,1);;",
            "#rand(0,nan)",
        ] {
            assert!(parse_input_data(bad).is_err(), "{bad} should be an error");
        }
        assert!(parse_input_data("@/nonexistent/list.txt").unwrap_err().to_string().contains("cannot read"));
    }

    #[test]
    fn materialize_shapes_and_names() {
        let inputs =
            vec![("data".to_string(), ElemType::F32, vec![2, 3, 4, 4]), ("k".to_string(), ElemType::I32, vec![5])];
        let spec = &parse_input_data("#rand(0,1)").unwrap()[0];
        let feeds = materialize(spec, &inputs, 1).unwrap();
        assert_eq!(feeds[0].1.shape(), &[2, 3, 4, 4]);
        assert_eq!(feeds[1].1.elem(), ElemType::I32);
        let spec = &parse_input_data("data:#rand(0,1,1,...);k:#rand(0,9,7)").unwrap()[0];
        let feeds = materialize(spec, &inputs, 1).unwrap();
        assert_eq!((feeds[0].1.shape(), feeds[1].1.shape()), (&[1, 3, 4, 4][..], &[7][..]));
        let spec = &parse_input_data("nope:#rand(0,1)").unwrap()[0];
        assert!(materialize(spec, &inputs, 1).unwrap_err().to_string().contains("the inputs are data, k"));
        let spec = &parse_input_data("data:#rand(0,1)").unwrap()[0];
        assert!(materialize(spec, &inputs, 1).unwrap_err().to_string().contains("no data for input `k`"));
        let spec = &parse_input_data("data:x.json;k:#rand(0,1)").unwrap()[0];
        let err = materialize(spec, &inputs, 1).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("input `data`: JSON input files (x.json)"), "{err}");
    }

    #[test]
    fn npy_roundtrip_and_errors() {
        let t = TensorData::random_uniform(ElemType::F32, vec![2, 3], -1.0, 1.0, 3).unwrap();
        let bytes = write_npy(&t).unwrap();
        assert_eq!((10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64, 0, "header is 64-byte aligned");
        assert_eq!(read_npy(&bytes).unwrap(), t);
        let scalar = TensorData::from_f64(ElemType::I64, vec![], &[7.0]).unwrap();
        assert_eq!(read_npy(&write_npy(&scalar).unwrap()).unwrap(), scalar);
        assert!(read_npy(&bytes[..bytes.len() - 1]).is_err());
        // float64 files (NumPy's default) are read as f32.
        let mut f8 = b"\x93NUMPY\x01\x00".to_vec();
        let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n";
        f8.extend_from_slice(&(header.len() as u16).to_le_bytes());
        f8.extend_from_slice(header.as_bytes());
        for v in [1.5f64, -2.25] {
            f8.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(read_npy(&f8).unwrap(), TensorData::from_f32(vec![2], &[1.5, -2.25]));
        assert!(read_npy(&f8[..f8.len() - 1]).is_err());
        assert!(read_npy(b"nope").is_err());
        for n in 0..bytes.len() {
            let _ = read_npy(&bytes[..n]);
        }
    }

    #[test]
    fn assert_equal_measure() {
        let a = TensorData::from_f32(vec![3], &[1.0, 100.0, 0.5]);
        let b = TensorData::from_f32(vec![3], &[1.0, 101.0, 0.25]);
        assert!((assert_equal_error(&a, &b) - 0.25).abs() < 1e-12);
        let n = TensorData::from_f32(vec![1], &[f32::NAN]);
        assert!(assert_equal_error(&n, &n).is_nan());
        assert_eq!(assert_equal_error(&a, &n), f64::INFINITY);
    }

    /// A scratch directory, one per test (tests run in parallel), removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("strata-feed-{}-{test}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        /// Writes an RGB image whose pixel (x, y) is `rgb(x, y)` (format from the extension).
        fn image(&self, name: &str, w: u32, h: u32, rgb: impl Fn(u32, u32) -> [u8; 3]) -> PathBuf {
            let path = self.path(name);
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb(rgb(x, y))).save(&path).unwrap();
            path
        }

        /// A 3x2 (WxH) image: pixel (x, y) has R = 10x + y, G = 100 + x, B = 200 + y.
        fn gradient(&self, name: &str) -> PathBuf {
            self.image(name, 3, 2, |x, y| [(10 * x + y) as u8, (100 + x) as u8, (200 + y) as u8])
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Feeds `src` to a single input `x`.
    fn feed(src: &str, elem: ElemType, shape: &[usize], opts: &FeedOptions) -> Result<TensorData> {
        let spec = &parse_input_data(&format!("x:{src}"))?[0];
        Ok(materialize_with(spec, &[("x".into(), elem, shape.to_vec())], opts)?.remove(0).1)
    }

    fn feed_path(path: &Path, elem: ElemType, shape: &[usize], opts: &FeedOptions) -> Result<TensorData> {
        feed(path.to_str().unwrap(), elem, shape, opts)
    }

    #[test]
    fn image_nchw_in_bgr_order() {
        let dir = Scratch::new("image_nchw_in_bgr_order");
        let path = dir.gradient("nchw.png");
        let t = feed_path(&path, ElemType::F32, &[1, 3, 2, 3], &FeedOptions::default()).unwrap();
        assert_eq!((t.elem(), t.shape()), (ElemType::F32, &[1, 3, 2, 3][..]));
        #[rustfmt::skip]
        let want = [
            200.0, 200.0, 200.0, 201.0, 201.0, 201.0, // B
            100.0, 101.0, 102.0, 100.0, 101.0, 102.0, // G
            0.0, 10.0, 20.0, 1.0, 11.0, 21.0,         // R
        ];
        assert_eq!(t.to_f64_vec(), want);
        // A PNM (load_and_run's .ppm) gives the same data.
        let ppm = dir.gradient("nchw.ppm");
        assert_eq!(feed_path(&ppm, ElemType::F32, &[1, 3, 2, 3], &FeedOptions::default()).unwrap(), t);
    }

    #[test]
    fn image_nhwc_batch_and_3d_layouts() {
        let dir = Scratch::new("image_nhwc_batch_and_3d_layouts");
        let path = dir.gradient("nhwc.png");
        #[rustfmt::skip]
        let hwc = [
            200.0, 100.0, 0.0,  200.0, 101.0, 10.0,  200.0, 102.0, 20.0,
            201.0, 100.0, 1.0,  201.0, 101.0, 11.0,  201.0, 102.0, 21.0,
        ];
        // dim 1 is 2 (not a channel count), the last dim is 3: N,H,W,C; batch 2 repeats the image.
        let t = feed_path(&path, ElemType::U8, &[2, 2, 3, 3], &FeedOptions::default()).unwrap();
        assert_eq!((t.elem(), t.shape()), (ElemType::U8, &[2, 2, 3, 3][..]));
        assert_eq!(t.to_f64_vec(), [hwc, hwc].concat());
        let t = feed_path(&path, ElemType::I32, &[2, 3, 3], &FeedOptions::default()).unwrap();
        assert_eq!((t.elem(), t.shape()), (ElemType::I32, &[2, 3, 3][..]));
        assert_eq!(t.to_f64_vec(), hwc);
        let t = feed_path(&path, ElemType::F32, &[3, 2, 3], &FeedOptions::default()).unwrap();
        assert_eq!(t.shape(), &[3, 2, 3]);
        assert_eq!(t.to_f64_vec()[..7], [200.0, 200.0, 200.0, 201.0, 201.0, 201.0, 100.0]);
    }

    #[test]
    fn image_grayscale() {
        let dir = Scratch::new("image_grayscale");
        // Red, green, blue, white: BT.601 luma rounds to 76, 150, 29, 255.
        let colors = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];
        let path = dir.image("gray.png", 4, 1, |x, _| colors[x as usize]);
        let t = feed_path(&path, ElemType::F32, &[1, 1, 1, 4], &FeedOptions::default()).unwrap();
        assert_eq!(t.to_f64_vec(), [76.0, 150.0, 29.0, 255.0]);
        let t = feed_path(&path, ElemType::U8, &[1, 1, 4], &FeedOptions::default()).unwrap();
        assert_eq!((t.shape(), t.to_f64_vec()), (&[1, 1, 4][..], vec![76.0, 150.0, 29.0, 255.0]));
        // A grayscale file fed to a 3-channel input repeats the value in B, G and R.
        let pgm = dir.path("gray.pgm");
        image::GrayImage::from_raw(2, 1, vec![7, 250]).unwrap().save(&pgm).unwrap();
        let t = feed_path(&pgm, ElemType::F32, &[1, 3, 1, 2], &FeedOptions::default()).unwrap();
        assert_eq!(t.to_f64_vec(), [7.0, 250.0, 7.0, 250.0, 7.0, 250.0]);
    }

    #[test]
    fn image_layout_and_size_errors() {
        let dir = Scratch::new("image_layout_and_size_errors");
        let path = dir.gradient("errors.png");
        let opts = FeedOptions::default();
        let err = feed_path(&path, ElemType::F32, &[1, 3, 4, 4], &opts).unwrap_err().to_string();
        assert!(err.contains("is 2x3 (HxW) but the input of shape [1, 3, 4, 4] takes 4x4"), "{err}");
        assert!(err.starts_with("input `x`: image ") && err.contains("resize_input"), "{err}");
        let err = feed_path(&path, ElemType::F32, &[1, 4, 5, 6], &opts).unwrap_err().to_string();
        assert!(err.contains("cannot infer the image layout from the input shape [1, 4, 5, 6]"), "{err}");
        let err = feed_path(&path, ElemType::F32, &[6, 6], &opts).unwrap_err().to_string();
        assert!(err.contains("[6, 6]"), "{err}");
        let missing = dir.path("missing.png");
        let err = feed_path(&missing, ElemType::F32, &[1, 3, 2, 3], &opts).unwrap_err().to_string();
        assert!(err.contains("cannot read image") && err.contains("missing.png"), "{err}");
        let junk = dir.path("junk.png");
        std::fs::write(&junk, b"not an image").unwrap();
        let err = feed_path(&junk, ElemType::F32, &[1, 3, 2, 3], &opts).unwrap_err().to_string();
        assert!(err.contains("cannot read image"), "{err}");
    }

    #[test]
    fn image_resize_bilinear() {
        let dir = Scratch::new("image_resize_bilinear");
        let b = [[0u8, 100], [200, 40]];
        let path = dir.image("resize.png", 2, 2, |x, y| [0, 7, b[y as usize][x as usize]]);
        let opts = FeedOptions { resize_input: true, ..FeedOptions::default() };
        let t = feed_path(&path, ElemType::U8, &[1, 3, 4, 4], &opts).unwrap();
        assert_eq!(t.shape(), &[1, 3, 4, 4]);
        let v = t.to_f64_vec();
        // Half-pixel centres: source coordinates -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
        #[rustfmt::skip]
        let blue = [
            0.0, 25.0, 75.0, 100.0,
            50.0, 59.0, 76.0, 85.0,   // 58.75 and 76.25 rounded
            150.0, 126.0, 79.0, 55.0, // 126.25 and 78.75 rounded
            200.0, 160.0, 80.0, 40.0,
        ];
        assert_eq!(v[..16], blue);
        assert_eq!(v[16..32], [7.0; 16]);
        assert_eq!(v[32..], [0.0; 16]);
        // Downscaling a 4-wide row to 2 averages neighbours: centres at 0.5 and 2.5.
        let down = dir.image("down.png", 4, 1, |x, _| [0, 0, 40 * x as u8]);
        let t = feed_path(&down, ElemType::F32, &[1, 3, 1, 2], &opts).unwrap();
        assert_eq!(t.to_f64_vec(), [20.0, 100.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn repeat_tiles_axis_0() {
        let dir = Scratch::new("repeat_tiles_axis_0");
        let opts = FeedOptions { repeat: 3, ..FeedOptions::default() };
        let t = feed("[[1,2]]", ElemType::I32, &[1, 2], &opts).unwrap();
        assert_eq!((t.shape(), t.to_f64_vec()), (&[3, 2][..], vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]));
        // Tiling, not interleaving: [a, b] twice is [a, b, a, b].
        let opts2 = FeedOptions { repeat: 2, ..FeedOptions::default() };
        let t = feed("[[1],[2]]", ElemType::F32, &[2, 1], &opts2).unwrap();
        assert_eq!((t.shape(), t.to_f64_vec()), (&[4, 1][..], vec![1.0, 2.0, 1.0, 2.0]));
        // Images fill the input's batch first, then repeat.
        let path = dir.gradient("repeat.png");
        let t = feed_path(&path, ElemType::U8, &[2, 3, 2, 3], &opts2).unwrap();
        assert_eq!(t.shape(), &[4, 3, 2, 3]);
        assert_eq!(t.to_f64_vec()[..18], t.to_f64_vec()[54..]);
        assert_eq!(t.to_f64_vec()[54], 200.0);
        let t = feed("#rand(0,1)", ElemType::F32, &[1, 5], &opts).unwrap();
        assert_eq!(t.shape(), &[3, 5]);
        assert_eq!(t.to_f64_vec()[..5], t.to_f64_vec()[10..]);
        let err = feed("{}", ElemType::F32, &[], &opts).unwrap_err().to_string();
        assert!(err.contains("repeat needs data of rank 1 or more"), "{err}");
        let zero = FeedOptions { repeat: 0, ..FeedOptions::default() };
        assert!(feed("[1]", ElemType::F32, &[1], &zero).unwrap_err().to_string().contains("at least 1"));
        let huge = FeedOptions { repeat: usize::MAX, ..FeedOptions::default() };
        assert!(feed("[1]", ElemType::F32, &[1], &huge).unwrap_err().to_string().contains("more than"));
    }

    #[test]
    fn literal_and_shape_sources() {
        let one = |s: &str| parse_input_data(s).unwrap().remove(0).items.remove(0);
        let (name, src) = one("x:[[1,2],[3,4]]");
        assert_eq!(name.as_deref(), Some("x"));
        let want = TensorData::from_f64(ElemType::I32, vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(src, DataSource::Literal(want));
        let f = TensorData::from_f64(ElemType::F32, vec![3], &[1.5, -2.0, 100.0]).unwrap();
        assert_eq!(one(" [ 1.5 , -2, 1e2 ] "), (None, DataSource::Literal(f)));
        assert_eq!(one("[[]]").1, DataSource::Literal(TensorData::zeros(ElemType::I32, vec![1, 0]).unwrap()));
        assert_eq!(one("img:{1, 3,224,224}"), (Some("img".into()), DataSource::Shape(vec![1, 3, 224, 224])));
        assert_eq!(one("{}").1, DataSource::Shape(vec![]));
        assert_eq!(one("a:b.JSON").1, DataSource::Json("b.JSON".into()));
        // Literals are cast to the input's type: i32 -> f32, and f32 -> i32 truncates.
        let t = feed("[[1,2],[3,4]]", ElemType::F32, &[2, 2], &FeedOptions::default()).unwrap();
        assert_eq!((t.elem(), t.to_f64_vec()), (ElemType::F32, vec![1.0, 2.0, 3.0, 4.0]));
        let t = feed("[1.5, -2.7]", ElemType::I32, &[2], &FeedOptions::default()).unwrap();
        assert_eq!((t.elem(), t.to_f64_vec()), (ElemType::I32, vec![1.0, -2.0]));
        // Shapes are filled with the value 1 of the input's type.
        let t = feed("{2,3}", ElemType::I8, &[2, 3], &FeedOptions::default()).unwrap();
        assert_eq!((t.elem(), t.shape(), t.to_f64_vec()), (ElemType::I8, &[2, 3][..], vec![1.0; 6]));
        let t = feed("{2}", ElemType::F16, &[2], &FeedOptions::default()).unwrap();
        assert_eq!(t.to_f64_vec(), vec![1.0, 1.0]);
        let err = feed("{100000,100000,100}", ElemType::F32, &[1], &FeedOptions::default()).unwrap_err();
        assert!(err.to_string().contains("more than 268435456 elements"), "{err}");
        for (bad, why) in [
            ("[[1],[2,3]]", "ragged nesting"),
            ("[1,2", "expected `,` or `]`"),
            ("[3000000000]", "`3000000000` is not an i32 number"),
            ("[1.5, 1e99]", "`1e99` is not an f32 number"),
            ("[1, x]", "`x` is not an i32 number"),
            ("[1] 2", "unexpected `2` after the array"),
            ("[1,,2]", "expected a number or `[`"),
            ("x:[1:2]", "literal `[1:2]`"),
            ("[1:2]", "literal `[1:2]`"),
            ("{1,x}", "`x` is not a dimension"),
            ("{1,2", "is not closed"),
        ] {
            let err = parse_input_data(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_input_data(&deep).unwrap_err().to_string().contains("nested levels"));
    }

    #[test]
    fn npy_is_cast_to_the_input_type() {
        let dir = Scratch::new("npy_is_cast_to_the_input_type");
        let path = dir.path("ints.npy");
        let t = TensorData::from_f64(ElemType::I32, vec![3], &[-1.0, 0.0, 7.0]).unwrap();
        std::fs::write(&path, write_npy(&t).unwrap()).unwrap();
        assert_eq!(feed_path(&path, ElemType::I32, &[3], &FeedOptions::default()).unwrap(), t);
        let f = feed_path(&path, ElemType::F32, &[3], &FeedOptions::default()).unwrap();
        assert_eq!((f.elem(), f.to_f64_vec()), (ElemType::F32, vec![-1.0, 0.0, 7.0]));
    }

    #[test]
    fn transform_applies_before_the_cast() {
        let dir = Scratch::new("transform_applies_before_the_cast");
        let path = dir.gradient("transform.png");
        let opts = FeedOptions { input_transform: Some("(data - [100, 100, 0]) / 2".into()), ..FeedOptions::default() };
        let t = feed_path(&path, ElemType::F32, &[1, 3, 2, 3], &opts).unwrap();
        #[rustfmt::skip]
        let want = [
            50.0, 50.0, 50.0, 50.5, 50.5, 50.5,
            0.0, 0.5, 1.0, 0.0, 0.5, 1.0,
            0.0, 5.0, 10.0, 0.5, 5.5, 10.5,
        ];
        assert_eq!(t.to_f64_vec(), want);
        // Into an integer input the fractions are truncated after the transform.
        let t = feed_path(&path, ElemType::I32, &[1, 3, 2, 3], &opts).unwrap();
        assert_eq!(t.to_f64_vec()[..6], [50.0, 50.0, 50.0, 50.0, 50.0, 50.0]);
        let opts = FeedOptions { input_transform: Some("data * 2 +".into()), ..FeedOptions::default() };
        let err = feed("[1]", ElemType::F32, &[1], &opts).unwrap_err().to_string();
        assert!(err.contains("at column 11\n  data * 2 +\n            ^"), "{err}");
        let opts = FeedOptions { input_transform: Some("data - [1, 2, 3]".into()), ..FeedOptions::default() };
        let err = feed("{1,2}", ElemType::F32, &[1, 2], &opts).unwrap_err().to_string();
        assert!(err.starts_with("input `x`: input_transform: a per-channel array of 3 values"), "{err}");
    }

    #[test]
    fn rand_forbids_resize_and_transform() {
        let with = |resize_input: bool, t: Option<&str>| FeedOptions {
            resize_input,
            input_transform: t.map(str::to_string),
            ..FeedOptions::default()
        };
        let err = feed("#rand(0,1)", ElemType::F32, &[2], &with(false, Some("data"))).unwrap_err().to_string();
        assert_eq!(
            err,
            "input `x`: input_transform cannot be used with #rand data (as in MegEngine): give an image or .npy file"
        );
        let err = feed("#rand(0,1)", ElemType::F32, &[2], &with(true, None)).unwrap_err().to_string();
        assert!(err.starts_with("input `x`: resize_input cannot be used with #rand"), "{err}");
        let err = feed("#rand(0,1)", ElemType::F32, &[2], &with(true, Some("data"))).unwrap_err().to_string();
        assert!(err.contains("resize_input and input_transform cannot"), "{err}");
        // Other sources accept resize_input (it only affects images).
        let t = feed("[5]", ElemType::F32, &[1], &with(true, None)).unwrap();
        assert_eq!(t.to_f64_vec(), vec![5.0]);
    }
}
