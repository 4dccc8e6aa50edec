//! Differential tests of the data-movement lowerings against the reference
//! evaluator (`check_lowering`), on small shapes and several element types.

use crate::lower::tests::check_lowering;
use strata_dialects::layout::format::{WeightFormat, pack_dims};
use strata_ir::pass::PassManager;
use strata_ir::{Dim, Layout, ParseOptions, Source, parse_module};

/// `tensor<AxBxE>` (with `, #layout` unless plain).
fn ty(shape: &[usize], elem: &str, layout: Layout) -> String {
    let mut s: String = shape.iter().map(|d| format!("{d}x")).collect();
    s.push_str(elem);
    if layout != Layout::Nchw {
        s.push_str(&format!(", #{layout}"));
    }
    format!("tensor<{s}>")
}

/// `tensor<...>` of a plain tensor.
fn t(shape: &[usize], elem: &str) -> String {
    ty(shape, elem, Layout::Nchw)
}

/// A one-op module `@main(args) -> result`.
fn one_op(op: &str, args: &[String], attrs: &str, result: &str) -> String {
    let params: Vec<String> = args.iter().enumerate().map(|(i, a)| format!("%a{i}: {a}")).collect();
    let names: Vec<String> = (0..args.len()).map(|i| format!("%a{i}")).collect();
    format!(
        "func @main({}) -> {result} {{\n  %0 = {op}({}) {{{attrs}}} : ({}) -> {result}\n  return(%0)\n}}",
        params.join(", "),
        names.join(", "),
        args.join(", ")
    )
}

/// The error of lowering `src` (which must fail).
pub(super) fn lowering_error(src: &str) -> String {
    let mut ctx = strata_dialects::context();
    let m = parse_module(&mut ctx, &Source::new("t.strata", src), &ParseOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let reg = crate::registry();
    let mut pm = PassManager::parse(&reg, "lower-graph-to-loops").expect("pipeline");
    match pm.run(&mut ctx, m) {
        Ok(_) => panic!("lowering succeeded:\n{src}"),
        Err(e) => e.to_string(),
    }
}

const ELEMS: [&str; 5] = ["f32", "f16", "i8", "u8", "i32"];

#[test]
fn broadcast_every_axis_and_rank() {
    let cases: [(&[usize], &[usize]); 7] = [
        (&[1, 3, 5], &[2, 3, 5]),
        (&[2, 1, 5], &[2, 3, 5]),
        (&[2, 3, 1], &[2, 3, 9]),
        (&[9], &[2, 3, 9]),
        (&[], &[2, 3]),
        (&[3, 1], &[2, 3, 17]),
        (&[1, 1, 1], &[2, 2, 2]),
    ];
    for elem in ELEMS {
        for (from, to) in cases {
            let shape: Vec<String> = to.iter().map(|d| d.to_string()).collect();
            let src =
                one_op("graph.broadcast", &[t(from, elem)], &format!("shape = [{}]", shape.join(", ")), &t(to, elem));
            check_lowering(&src, 0.0);
        }
    }
    // A non-last axis broadcasts with full vectors; the last one splats.
    let text =
        check_lowering(&one_op("graph.broadcast", &[t(&[1, 8], "f32")], "shape = [3, 8]", &t(&[3, 8], "f32")), 0.0);
    assert!(text.contains("vec<4xf32>"), "{text}");
    let text =
        check_lowering(&one_op("graph.broadcast", &[t(&[3, 1], "u8")], "shape = [3, 32]", &t(&[3, 32], "u8")), 0.0);
    assert!(text.contains("loops.splat"), "{text}");
}

#[test]
fn concat_three_operands_on_each_axis() {
    let base = [2usize, 3, 5];
    for elem in ["f32", "u8", "i32", "f16"] {
        for axis in [0i64, 1, 2, -1] {
            let a = axis.rem_euclid(3) as usize;
            let sizes = [1usize, 4, 2];
            let args: Vec<String> = sizes
                .iter()
                .map(|&s| {
                    let mut sh = base;
                    sh[a] = s;
                    t(&sh, elem)
                })
                .collect();
            let mut out = base;
            out[a] = sizes.iter().sum();
            check_lowering(&one_op("graph.concat", &args, &format!("axis = {axis}"), &t(&out, elem)), 0.0);
        }
    }
    // Long contiguous runs are copied with vectors, on the last axis too.
    let args = vec![t(&[2, 9], "f32"), t(&[2, 8], "f32"), t(&[2, 3], "f32")];
    let text = check_lowering(&one_op("graph.concat", &args, "axis = 1", &t(&[2, 20], "f32")), 0.0);
    assert!(text.contains("vec<4xf32>"), "{text}");
    // The same operand twice.
    let src = "func @main(%x: tensor<2x3xf32>) -> tensor<4x3xf32> {
  %0 = graph.concat(%x, %x) {axis = 0} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
  return(%0)
}";
    check_lowering(src, 0.0);
}

#[test]
fn concat_of_blocked_tensors() {
    let a = ty(&[1, 1, 2, 3, 8], "f32", Layout::Nchw88);
    let b = ty(&[1, 2, 2, 3, 8], "f32", Layout::Nchw88);
    let out = ty(&[1, 3, 2, 3, 8], "f32", Layout::Nchw88);
    check_lowering(&one_op("graph.concat", &[a.clone(), b.clone()], "axis = 1", &out), 0.0);
    let c = ty(&[1, 1, 4, 3, 8], "f32", Layout::Nchw88);
    check_lowering(&one_op("graph.concat", &[a, c], "axis = 2", &ty(&[1, 1, 6, 3, 8], "f32", Layout::Nchw88)), 0.0);
    let _ = b;
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn dimshuffle_permutations() {
    let shape = [2usize, 3, 8];
    for elem in ["f32", "u8", "f16"] {
        for p in permutations(3) {
            let out: Vec<usize> = p.iter().map(|&a| shape[a]).collect();
            let pat: Vec<String> = p.iter().map(|a| a.to_string()).collect();
            let src = one_op(
                "graph.dimshuffle",
                &[t(&shape, elem)],
                &format!("pattern = [{}]", pat.join(", ")),
                &t(&out, elem),
            );
            check_lowering(&src, 0.0);
        }
    }
    // NCHW -> NHWC, inserted axes, a rank-0 input.
    check_lowering(
        &one_op("graph.dimshuffle", &[t(&[1, 3, 2, 4], "f32")], "pattern = [0, 2, 3, 1]", &t(&[1, 2, 4, 3], "f32")),
        0.0,
    );
    check_lowering(
        &one_op("graph.dimshuffle", &[t(&[3, 8], "i32")], "pattern = [-1, 1, -1, 0]", &t(&[1, 8, 1, 3], "i32")),
        0.0,
    );
    check_lowering(
        &one_op("graph.dimshuffle", &[t(&[3, 8], "i32")], "pattern = [0, -1, 1]", &t(&[3, 1, 8], "i32")),
        0.0,
    );
    check_lowering(&one_op("graph.dimshuffle", &[t(&[], "f32")], "pattern = [-1, -1]", &t(&[1, 1], "f32")), 0.0);
    let text = check_lowering(
        &one_op("graph.dimshuffle", &[t(&[2, 3, 8], "f32")], "pattern = [1, 0, 2]", &t(&[3, 2, 8], "f32")),
        0.0,
    );
    assert!(text.contains("vec<4xf32>"), "{text}");
}

#[test]
fn subtensor_steps_and_negative_indices() {
    use strata_dialects::graph::shape::py_slice;
    let shape = [5usize, 6, 9];
    // (axes, begin, end, step) on a [5, 6, 9] input.
    type Slice<'a> = (&'a [i64], &'a [i64], &'a [i64], &'a [i64]);
    let cases: [Slice<'_>; 9] = [
        (&[0], &[1], &[4], &[1]),
        (&[2], &[1], &[9], &[1]),
        (&[2], &[0], &[9], &[2]),
        (&[1, 2], &[-1, -2], &[-7, -10], &[-1, -3]),
        (&[-1], &[-3], &[100], &[1]),
        (&[0, 1, 2], &[4, 0, 8], &[0, 6, 0], &[-2, 3, -1]),
        (&[1], &[3], &[3], &[1]),
        (&[0], &[-100], &[100], &[4]),
        (&[2, 0], &[-1, 0], &[-100, 5], &[-1, 1]),
    ];
    for elem in ["f32", "i8", "f16"] {
        for (axes, begin, end, step) in cases {
            let mut out = shape;
            for (i, &a) in axes.iter().enumerate() {
                let a = a.rem_euclid(3) as usize;
                out[a] = py_slice(begin[i], end[i], step[i], shape[a] as u64).1 as usize;
            }
            let attrs = format!("axes = {axes:?}, begin = {begin:?}, end = {end:?}, step = {step:?}");
            check_lowering(&one_op("graph.subtensor", &[t(&shape, elem)], &attrs, &t(&out, elem)), 0.0);
        }
    }
    let attrs = "axes = [1], begin = [1], end = [9], step = [1]";
    let text = check_lowering(&one_op("graph.subtensor", &[t(&[2, 9], "f32")], attrs, &t(&[2, 8], "f32")), 0.0);
    assert!(text.contains("vec<4xf32>"), "{text}");
}

#[test]
fn pad_modes_on_every_axis() {
    let shape = [3usize, 4, 6];
    for elem in ["f32", "i32", "u8", "f16"] {
        for mode in ["constant", "edge", "reflect"] {
            for (before, after) in
                [([1, 0, 0], [0, 2, 0]), ([0, 0, 2], [0, 0, 3]), ([2, 3, 1], [1, 1, 5]), ([0, 1, 0], [2, 0, 0])]
            {
                let out: Vec<usize> = (0..3).map(|a| shape[a] + before[a] + after[a]).collect();
                let value = if elem == "u8" { "7.0" } else { "-3.0" };
                let attrs = format!("after = {after:?}, before = {before:?}, mode = \"{mode}\", value = {value}");
                check_lowering(&one_op("graph.pad", &[t(&shape, elem)], &attrs, &t(&out, elem)), 0.0);
            }
        }
    }
    // Not padding the last axis keeps vectors, even for constant padding.
    let attrs = "after = [1, 0], before = [2, 0], mode = \"constant\", value = 1.5";
    let text = check_lowering(&one_op("graph.pad", &[t(&[3, 8], "f32")], attrs, &t(&[6, 8], "f32")), 0.0);
    assert!(text.contains("vec<4xf32>"), "{text}");
    // An empty axis padded with a constant.
    let attrs = "after = [0, 1], before = [0, 1], mode = \"constant\", value = 2.0";
    check_lowering(&one_op("graph.pad", &[t(&[3, 0], "f32")], attrs, &t(&[3, 2], "f32")), 0.0);
}

#[test]
fn constant_pad_of_a_quantised_tensor_is_refused() {
    let attrs = "after = [1], before = [0], mode = \"constant\", value = 0.0";
    let e = lowering_error(&one_op("graph.pad", &[t(&[3], "qs8<0.5>")], attrs, &t(&[4], "qs8<0.5>")));
    assert!(e.contains("quantised"), "{e}");
}

/// The stored shape of logical `[n, c, h, w]` in layout `l`.
fn stored(l: Layout, s: [usize; 4]) -> Vec<usize> {
    pack_dims(l, s.map(|d| Dim::Fixed(d as u64))).unwrap().iter().map(|d| d.fixed().unwrap() as usize).collect()
}

#[test]
fn relayout_between_every_pair_of_layouts() {
    let layouts = [
        Layout::Nchw,
        Layout::Nhwc,
        Layout::Nchw88,
        Layout::Nchw44,
        Layout::Nchw4,
        Layout::Nchw32,
        Layout::Chwn4,
        Layout::Nhwcd4,
    ];
    let logical = [2usize, 32, 3, 5];
    for elem in ["f32", "u8", "f16"] {
        for from in layouts {
            for to in layouts {
                if from == to {
                    continue;
                }
                let src = one_op(
                    "layout.relayout",
                    &[ty(&stored(from, logical), elem, from)],
                    &format!("to = #{to}"),
                    &ty(&stored(to, logical), elem, to),
                );
                check_lowering(&src, 0.0);
            }
        }
    }
    // Blocked <-> blocked and NHWC <-> blocked move vectors; NCHW -> blocked gathers scalars.
    let vec_cases =
        [(Layout::Nchw88, Layout::Nchw44), (Layout::Nchw44, Layout::Nchw88), (Layout::Nhwc, Layout::Nchw88)];
    for (from, to) in vec_cases {
        let src = one_op(
            "layout.relayout",
            &[ty(&stored(from, [1, 16, 2, 2]), "f32", from)],
            &format!("to = #{to}"),
            &ty(&stored(to, [1, 16, 2, 2]), "f32", to),
        );
        let text = check_lowering(&src, 0.0);
        assert!(text.contains("vec<4xf32>"), "{from} -> {to}: {text}");
    }
    // Round trip NCHW -> NCHW88 -> NCHW44 -> NCHW in one function.
    let src = "func @main(%x: tensor<1x16x3x3xf32>) -> tensor<1x16x3x3xf32> {
  %a = layout.relayout(%x) {to = #nchw88} : (tensor<1x16x3x3xf32>) -> tensor<1x2x3x3x8xf32, #nchw88>
  %b = layout.relayout(%a) {to = #nchw44} : (tensor<1x2x3x3x8xf32, #nchw88>) -> tensor<1x4x3x3x4xf32, #nchw44>
  %c = layout.relayout(%b) {to = #nchw} : (tensor<1x4x3x3x4xf32, #nchw44>) -> tensor<1x16x3x3xf32>
  return(%c)
}";
    let text = check_lowering(src, 0.0);
    assert_eq!(text.matches("loops.launch").count(), 3, "{text}");
}

#[test]
fn weight_packing_of_a_non_constant_weight() {
    // (format, block, group, OIHW shape)
    let cases: [(&str, u64, u64, [usize; 4]); 14] = [
        ("dense", 8, 1, [16, 8, 3, 1]),
        ("dot", 4, 1, [8, 4, 1, 2]),
        ("group", 4, 2, [8, 4, 2, 1]),
        ("group_dot", 4, 2, [16, 4, 1, 1]),
        ("channelwise", 8, 16, [16, 1, 3, 3]),
        ("hybrid", 8, 1, [8, 3, 3, 3]),
        ("nchw4", 4, 1, [3, 8, 2, 2]),
        ("nchw32", 32, 1, [2, 32, 1, 1]),
        ("chwn4", 4, 1, [5, 8, 3, 2]),
        ("nchw4_group", 4, 2, [8, 8, 1, 2]),
        ("nchw4_channelwise", 4, 8, [8, 1, 3, 3]),
        ("nchw32_group", 32, 2, [64, 32, 1, 1]),
        ("chwn4_group", 4, 2, [8, 8, 1, 2]),
        ("nhwcd4", 4, 1, [8, 8, 3, 2]),
    ];
    for (format, block, group, logical) in cases {
        let f = WeightFormat::parse(format).unwrap();
        let packed: Vec<usize> =
            f.pack_dims(block, group, logical.map(|d| d as u64)).unwrap().iter().map(|&d| d as usize).collect();
        let attrs = format!("block = {block}, format = \"{format}\", group = {group}");
        check_lowering(&one_op("layout.weight", &[t(&logical, "f32")], &attrs, &t(&packed, "f32")), 0.0);
    }
    // Bytes are bytes: an i8 weight.
    let attrs = "block = 4, format = \"dot\", group = 1";
    check_lowering(&one_op("layout.weight", &[t(&[8, 4, 1, 2], "i8")], attrs, &t(&[2, 1, 1, 2, 4, 4], "i8")), 0.0);
}

#[test]
fn reshapes_stay_views() {
    let src = "func @main(%x: tensor<2x3x4xf32>) -> tensor<3x8xf32> {
  %0 = graph.dimshuffle(%x) {pattern = [1, 0, 2]} : (tensor<2x3x4xf32>) -> tensor<3x2x4xf32>
  %1 = graph.reshape(%0) {shape = [3, 8]} : (tensor<3x2x4xf32>) -> tensor<3x8xf32>
  return(%1)
}";
    let text = check_lowering(src, 0.0);
    assert_eq!(text.matches("loops.launch").count(), 1, "{text}");
    assert!(text.contains("loops.view"), "{text}");
}

#[test]
fn other_element_types_move_as_bytes() {
    for elem in ["bf16", "i64", "i16", "qs8<0.5>", "qu8<0.25, 3>"] {
        let args = vec![t(&[2, 3], elem), t(&[1, 3], elem)];
        check_lowering(&one_op("graph.concat", &args, "axis = 0", &t(&[3, 3], elem)), 0.0);
        check_lowering(&one_op("graph.dimshuffle", &[t(&[2, 3], elem)], "pattern = [1, 0]", &t(&[3, 2], elem)), 0.0);
        let attrs = "after = [1, 2], before = [0, 1], mode = \"edge\", value = 0.0";
        check_lowering(&one_op("graph.pad", &[t(&[2, 3], elem)], attrs, &t(&[3, 6], elem)), 0.0);
        check_lowering(&one_op("graph.broadcast", &[t(&[3], elem)], "shape = [2, 3]", &t(&[2, 3], elem)), 0.0);
    }
}
