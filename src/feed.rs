//! Input data for testcases and runs, in MegEngine's `input_data` grammar, plus
//! `.npy` files and the AssertEqual error measure.
//!
//! ```text
//! spec   := item (";" item)*          one testcase
//! item   := [name ":"] source         the name may be left out when there is one input
//! source := "#rand(" min "," max ["," dim ("," dim)* ["," "..."]] ")"
//!         | path.npy                  a NumPy array (C order)
//!         | path (image)              not supported yet: an error says so
//! ```
//! A spec starting with `@` names a file whose non-empty lines are specs. A lone
//! `#rand(...)` applies to every input. `...` copies the remaining dims of the
//! input's shape; a `#rand` without dims uses the input's shape.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use strata_ir::{ElemType, TensorData};

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
    /// An image file (decoding is not supported yet).
    Image(PathBuf),
}

/// One testcase: a source per input (`None` name: the only input, or every input for `#rand`).
#[derive(Clone, Debug, PartialEq)]
pub struct FeedSpec {
    /// `(input name, source)` pairs in spec order.
    pub items: Vec<(Option<String>, DataSource)>,
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

fn parse_spec(spec: &str) -> Result<FeedSpec> {
    let mut items = Vec::new();
    for part in spec.split(';').map(str::trim) {
        if part.is_empty() {
            return Err(bad(spec, "an empty item"));
        }
        let (name, src) = if part.starts_with('#') {
            (None, part)
        } else {
            match part.split_once(':') {
                Some((n, s)) if !n.is_empty() => (Some(n.trim().to_string()), s.trim()),
                _ => (None, part),
            }
        };
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
    let path = PathBuf::from(src);
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        Ok(DataSource::Npy(path))
    } else {
        Ok(DataSource::Image(path))
    }
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

/// Builds the data of one testcase for inputs `(name, element type, shape)`.
pub fn materialize(
    spec: &FeedSpec,
    inputs: &[(String, ElemType, Vec<usize>)],
    seed: u64,
) -> Result<Vec<(String, TensorData)>> {
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
            let (_, elem, shape) = &inputs[t];
            let data = match src {
                DataSource::Rand { min, max, dims, rest } => {
                    let shape = rand_shape(dims, *rest, shape)?;
                    TensorData::random_uniform(*elem, shape, *min, *max, seed.wrapping_add(t as u64))
                        .map_err(|e| Error::Invalid(e.to_string()))?
                }
                DataSource::Npy(path) => read_npy_file(path)?,
                DataSource::Image(path) => {
                    return Err(Error::Unsupported(format!(
                        "image input data ({}): decoding images comes with `strata run`; use a .npy file or #rand",
                        path.display()
                    )));
                }
            };
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
    let elem = ElemType::PLAIN
        .into_iter()
        .find(|&e| {
            npy_descr(e) == Some(descr) || npy_descr(e).map(|d| d.replacen('<', "=", 1)).as_deref() == Some(descr)
        })
        .ok_or(format!("unsupported .npy dtype {descr}"))?;
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
        let spec = &parse_input_data("data:x.png;k:#rand(0,1)").unwrap()[0];
        assert!(matches!(materialize(spec, &inputs, 1), Err(Error::Unsupported(_))));
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
}
