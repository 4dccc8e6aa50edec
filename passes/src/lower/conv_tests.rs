//! Differential tests of the convolution lowering: every module runs through
//! the graph reference interpreter and, lowered, through the loops
//! interpreter on the same random inputs.

use crate::lower::tests::{check_lowering, check_lowering_with};
use strata_dialects::layout::format::{WeightFormat, pack_dims};
use strata_ir::pass::PassManager;
use strata_ir::tensor::SplitMix64;
use strata_ir::{Dim, Layout, ParseOptions, Source, parse_module};

const TOL: f64 = 1e-4;

fn dims(s: &[usize]) -> String {
    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

/// One convolution's logical sizes and attributes.
#[derive(Clone, Debug)]
struct Conv {
    n: usize,
    ic: usize,
    oc: usize,
    h: usize,
    w: usize,
    fh: usize,
    fw: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
    group: usize,
    nl: &'static str,
    z: bool,
}

impl Conv {
    fn new(ic: usize, oc: usize, hw: usize, f: usize) -> Conv {
        Conv {
            n: 1,
            ic,
            oc,
            h: hw,
            w: hw,
            fh: f,
            fw: f,
            stride: [1, 1],
            pad: [f / 2, f / 2],
            dil: [1, 1],
            group: 1,
            nl: "identity",
            z: false,
        }
    }

    fn out(&self) -> [usize; 2] {
        let o =
            |i: usize, size: usize, f: usize| (size + 2 * self.pad[i] - self.dil[i] * (f - 1) - 1) / self.stride[i] + 1;
        [o(0, self.h, self.fh), o(1, self.w, self.fw)]
    }

    fn oihw(&self) -> [usize; 4] {
        [self.oc, self.ic / self.group, self.fh, self.fw]
    }

    fn attrs(&self) -> String {
        let p = |v: [usize; 2]| format!("[{}, {}]", v[0], v[1]);
        format!(
            "dilation = {}, group = {}, pad = {}, stride = {}",
            p(self.dil),
            self.group,
            p(self.pad),
            p(self.stride)
        )
    }
}

/// `graph.conv2d` (`bias = false`) or `graph.conv_bias` on plain tensors.
fn graph_src(c: &Conv, bias: bool) -> String {
    let [oh, ow] = c.out();
    let x = format!("tensor<{}xf32>", dims(&[c.n, c.ic, c.h, c.w]));
    let w = format!("tensor<{}xf32>", dims(&c.oihw()));
    let b = format!("tensor<1x{}x1x1xf32>", c.oc);
    let o = format!("tensor<{}xf32>", dims(&[c.n, c.oc, oh, ow]));
    let attrs = c.attrs();
    if !bias {
        return format!(
            "func @main(%x: {x}, %w: {w}) -> {o} {{
  %0 = graph.conv2d(%x, %w) {{{attrs}}} : ({x}, {w}) -> {o}
  return(%0)
}}"
        );
    }
    let (zarg, zop, zty) =
        if c.z { (format!(", %z: {o}"), ", %z", format!(", {o}")) } else { (String::new(), "", String::new()) };
    format!(
        "func @main(%x: {x}, %w: {w}, %b: {b}{zarg}) -> {o} {{
  %0 = graph.conv_bias(%x, %w, %b{zop}) {{{attrs}, nonlinearity = \"{nl}\"}} : ({x}, {w}, {b}{zty}) -> {o}
  return(%0)
}}",
        nl = c.nl
    )
}

/// The types and op text of a `layout.conv_bias` in `layout` (block `p`) with
/// weight format `wf`; `%x`, `%w`, `%b` (and `%z`) are function arguments.
fn layout_parts(c: &Conv, layout: &str, p: usize, wf: &str) -> (String, String, String) {
    let [oh, ow] = c.out();
    let l = Layout::ALL.into_iter().find(|l| l.to_string() == layout).unwrap();
    let stored = |n: usize, ch: usize, h: usize, w: usize| {
        let d = pack_dims(l, [n, ch, h, w].map(|v| Dim::Fixed(v as u64))).unwrap();
        let d: Vec<usize> = d.iter().map(|d| d.fixed().unwrap() as usize).collect();
        format!("tensor<{}xf32, #{layout}>", dims(&d))
    };
    let x = if wf == "hybrid" {
        format!("tensor<{}xf32>", dims(&[c.n, c.ic, c.h, c.w]))
    } else {
        stored(c.n, c.ic, c.h, c.w)
    };
    let oihw = c.oihw().map(|d| d as u64);
    let packed = WeightFormat::parse(wf).unwrap().pack_dims(p as u64, c.group as u64, oihw).unwrap();
    let w = format!("tensor<{}xf32>", packed.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"));
    let b = stored(1, c.oc, 1, 1);
    let o = stored(c.n, c.oc, oh, ow);
    let (zarg, zop, zty) =
        if c.z { (format!(", %z: {o}"), ", %z", format!(", {o}")) } else { (String::new(), "", String::new()) };
    let args = format!("%x: {x}, %w: {w}, %b: {b}{zarg}");
    let op = format!(
        "layout.conv_bias(%x, %w, %b{zop}) {{{attrs}, format = #{layout}, nonlinearity = \"{nl}\", weight_format = \"{wf}\"}} : ({x}, {w}, {b}{zty}) -> {o}",
        attrs = c.attrs(),
        nl = c.nl
    );
    (args, op, o)
}

fn layout_src(c: &Conv, layout: &str, p: usize, wf: &str) -> String {
    let (args, op, o) = layout_parts(c, layout, p, wf);
    format!("func @main({args}) -> {o} {{\n  %0 = {op}\n  return(%0)\n}}")
}

/// Checks `c` as a blocked convolution in NCHW88 and NCHW44 (where the
/// channels allow) with weight format `wf`.
fn check_blocked(c: &Conv, wf: &str) {
    for (layout, p) in [("nchw88", 8), ("nchw44", 4)] {
        let ok = |ch: usize| ch.is_multiple_of(p);
        let fits = match wf {
            "hybrid" => ok(c.oc),
            "channelwise" => ok(c.oc),
            "group" => ok(c.ic / c.group) && ok(c.oc / c.group),
            _ => ok(c.ic) && ok(c.oc),
        };
        if fits {
            let src = layout_src(c, layout, p, wf);
            check_lowering(&src, TOL);
        }
    }
}

#[test]
fn blocked_dense_shapes() {
    let base = Conv::new(16, 16, 7, 3);
    let mut cases = vec![base.clone()];
    // Padding 0/1/2, strides 1 and 2, dilation 2, odd sizes, OW not a multiple of the block.
    for (pad, stride, dil, hw, f) in [
        (0, 1, 1, 6, 3),
        (2, 1, 1, 5, 3),
        (1, 2, 1, 9, 3),
        (2, 1, 2, 7, 3),
        (0, 2, 1, 11, 1),
        (0, 1, 1, 10, 1),
        (2, 2, 1, 12, 5),
        (1, 1, 1, 3, 3),
        (3, 1, 1, 4, 7),
    ] {
        cases.push(Conv {
            pad: [pad, pad],
            stride: [stride, stride],
            dil: [dil, dil],
            h: hw,
            w: hw,
            fh: f,
            fw: f,
            ..base.clone()
        });
    }
    // Rectangular, asymmetric attributes, several channel blocks, batch 2.
    cases.push(Conv { h: 5, w: 12, fh: 1, fw: 3, pad: [0, 1], stride: [1, 2], ..base.clone() });
    cases.push(Conv { n: 2, ic: 8, oc: 24, h: 6, w: 9, fh: 3, fw: 2, pad: [1, 0], dil: [1, 2], ..base.clone() });
    for (i, c) in cases.iter().enumerate() {
        let c = Conv { nl: ["identity", "relu", "sigmoid", "h_swish"][i % 4], z: i % 3 == 1, ..c.clone() };
        check_blocked(&c, "dense");
    }
}

#[test]
fn blocked_hybrid_first_layer() {
    for (ic, hw, f, stride, pad) in
        [(3, 9, 3, 2, 1), (3, 8, 7, 2, 3), (1, 6, 3, 1, 1), (4, 7, 1, 1, 0), (11, 5, 3, 1, 2)]
    {
        let c = Conv { stride: [stride, stride], pad: [pad, pad], nl: "relu", ..Conv::new(ic, 16, hw, f) };
        check_blocked(&c, "hybrid");
    }
    let c = Conv { z: true, nl: "h_swish", w: 10, ..Conv::new(3, 8, 6, 3) };
    check_blocked(&c, "hybrid");
}

#[test]
fn blocked_channelwise() {
    for (hw, f, stride, pad, dil) in
        [(7, 3, 1, 1, 1), (9, 3, 2, 1, 1), (6, 5, 1, 2, 1), (8, 3, 1, 2, 2), (5, 1, 1, 0, 1)]
    {
        let mut c = Conv::new(16, 16, hw, f);
        c.group = 16;
        c.stride = [stride, stride];
        c.pad = [pad, pad];
        c.dil = [dil, dil];
        c.nl = "relu";
        c.z = f == 5;
        check_blocked(&c, "channelwise");
    }
}

#[test]
fn blocked_group() {
    for (ic, oc, group, hw, f, stride) in
        [(16, 16, 2, 6, 3, 1), (16, 32, 2, 7, 1, 1), (24, 24, 3, 5, 3, 2), (32, 16, 4, 5, 3, 1)]
    {
        let c = Conv { group, stride: [stride, stride], nl: "sigmoid", z: stride == 2, ..Conv::new(ic, oc, hw, f) };
        check_blocked(&c, "group");
    }
}

#[test]
fn blocked_other_layouts() {
    // The same kernels through the index arithmetic of other blocked layouts:
    // NHWCD4 ([N, H, C/4, W, 4]) with strata's dense filter, channel-wise and
    // group weights; CHWN4 ([C/4, H, W, N, 4]); NCHW44_DOT and NCHW32 with
    // f32 dense weights (P = 32: eight vectors per pixel).
    let c = Conv { n: 2, nl: "relu", z: true, ..Conv::new(8, 12, 5, 3) };
    check_lowering(&layout_src(&c, "nhwcd4", 4, "nhwcd4"), TOL);
    let c = Conv { group: 8, stride: [2, 2], ..Conv::new(8, 8, 7, 3) };
    check_lowering(&layout_src(&c, "nhwcd4", 4, "channelwise"), TOL);
    let c = Conv { group: 2, ..Conv::new(8, 16, 4, 3) };
    check_lowering(&layout_src(&c, "nhwcd4", 4, "group"), TOL);
    let c = Conv { n: 3, nl: "h_swish", ..Conv::new(8, 4, 5, 3) };
    check_lowering(&layout_src(&c, "chwn4", 4, "dense"), TOL);
    let c = Conv { z: true, ..Conv::new(4, 8, 6, 3) };
    check_lowering(&layout_src(&c, "nchw44_dot", 4, "dense"), TOL);
    let c = Conv { nl: "sigmoid", ..Conv::new(32, 32, 3, 3) };
    check_lowering(&layout_src(&c, "nchw32", 32, "dense"), TOL);
}

#[test]
fn blocked_random_shapes() {
    let mut rng = SplitMix64(11);
    for case in 0..24 {
        let mut pick = |lo: usize, hi: usize| lo + (rng.next_u64() % (hi - lo + 1) as u64) as usize;
        let wf = ["dense", "group", "channelwise", "hybrid"][case % 4];
        let f = [1, 3, 3, 5][pick(0, 3)];
        let (stride, dil, pad) = (pick(1, 2), if f > 1 { pick(1, 2) } else { 1 }, pick(0, 2));
        let hw = (dil * (f - 1) + 1).max(pick(2, 11));
        let (ic, oc, group) = match wf {
            "dense" => (8 * pick(1, 2), 8 * pick(1, 2), 1),
            "group" => (16, 8 * pick(1, 2) * 2, 2),
            "channelwise" => (8 * pick(1, 2), 0, 0),
            _ => (pick(1, 5), 8 * pick(1, 2), 1),
        };
        let (oc, group) = if wf == "channelwise" { (ic, ic) } else { (oc, group) };
        let c = Conv {
            n: pick(1, 2),
            ic,
            oc,
            h: hw,
            w: (dil * (f - 1) + 1).max(pick(2, 12)),
            fh: f,
            fw: f,
            stride: [stride, stride],
            pad: [pad, pad],
            dil: [dil, dil],
            group,
            nl: ["identity", "relu", "sigmoid", "h_swish"][pick(0, 3)],
            z: pick(0, 1) == 1,
        };
        check_blocked(&c, wf);
    }
}

#[test]
fn blocked_general_path_for_wide_filters_and_huge_padding() {
    // A filter wider than the image, and padding that makes every column a
    // border one (more straight-line blocks than MAX_STATIC_BLOCKS: the
    // per-pixel path with dynamic filter ranges).
    let c = Conv { fh: 1, fw: 17, pad: [0, 8], w: 17, ..Conv::new(8, 8, 3, 1) };
    check_blocked(&c, "dense");
    let c = Conv { pad: [40, 40], h: 2, w: 2, nl: "relu", ..Conv::new(8, 8, 2, 3) };
    check_blocked(&c, "dense");
    let c = Conv { group: 8, pad: [40, 40], h: 2, w: 2, ..Conv::new(8, 8, 2, 3) };
    check_blocked(&c, "channelwise");
}

#[test]
fn plain_nchw_convolutions() {
    let mut rng = SplitMix64(3);
    let mut cases = vec![
        Conv::new(3, 4, 7, 3),
        Conv { stride: [2, 2], ..Conv::new(4, 6, 9, 3) },
        Conv { dil: [2, 2], pad: [2, 2], ..Conv::new(2, 3, 8, 3) },
        Conv { group: 3, ..Conv::new(6, 9, 6, 3) },
        Conv { group: 4, ..Conv::new(4, 4, 10, 3) },
        Conv { group: 2, ..Conv::new(4, 8, 12, 1) },
        Conv { pad: [0, 0], ..Conv::new(5, 7, 13, 1) },
        Conv { fh: 2, fw: 5, pad: [0, 2], h: 4, w: 11, ..Conv::new(2, 2, 4, 1) },
        Conv { fh: 1, fw: 18, pad: [0, 3], h: 2, w: 16, ..Conv::new(1, 2, 2, 1) },
        Conv { pad: [40, 40], h: 2, w: 2, ..Conv::new(1, 1, 2, 3) },
    ];
    for _ in 0..14 {
        let mut pick = |lo: usize, hi: usize| lo + (rng.next_u64() % (hi - lo + 1) as u64) as usize;
        let group = [1, 1, 2, 3][pick(0, 3)];
        let f = [1, 2, 3, 5][pick(0, 3)];
        let dil = if f > 1 { pick(1, 2) } else { 1 };
        let ext = dil * (f - 1) + 1;
        cases.push(Conv {
            n: pick(1, 2),
            ic: group * pick(1, 3),
            oc: group * pick(1, 5),
            h: ext.max(pick(1, 9)),
            w: ext.max(pick(1, 12)),
            fh: f,
            fw: f,
            stride: [pick(1, 2), pick(1, 3)],
            pad: [pick(0, 2), pick(0, 2)],
            dil: [dil, dil],
            group,
            nl: "identity",
            z: false,
        });
    }
    for (i, c) in cases.iter().enumerate() {
        check_lowering(&graph_src(c, false), TOL);
        let c = Conv { nl: ["identity", "relu", "sigmoid", "h_swish"][i % 4], z: i % 2 == 0, ..c.clone() };
        check_lowering(&graph_src(&c, true), TOL);
    }
}

/// A `graph.conv_transpose2d` module.
fn transpose_src(c: &Conv) -> String {
    let o = |i: usize, size: usize, f: usize| (size - 1) * c.stride[i] + c.dil[i] * (f - 1) + 1 - 2 * c.pad[i];
    let (oh, ow) = (o(0, c.h, c.fh), o(1, c.w, c.fw));
    let x = format!("tensor<{}xf32>", dims(&[c.n, c.ic, c.h, c.w]));
    let w = format!("tensor<{}xf32>", dims(&[c.ic, c.oc / c.group, c.fh, c.fw]));
    let out = format!("tensor<{}xf32>", dims(&[c.n, c.oc, oh, ow]));
    format!(
        "func @main(%x: {x}, %w: {w}) -> {out} {{
  %0 = graph.conv_transpose2d(%x, %w) {{{attrs}}} : ({x}, {w}) -> {out}
  return(%0)
}}",
        attrs = c.attrs()
    )
}

#[test]
fn conv_transpose() {
    let cases = [
        Conv { pad: [0, 0], ..Conv::new(3, 2, 4, 3) },
        Conv { stride: [2, 2], pad: [1, 1], ..Conv::new(2, 3, 5, 3) },
        Conv { stride: [3, 2], pad: [0, 1], dil: [2, 1], ..Conv::new(2, 2, 3, 2) },
        Conv { group: 2, stride: [2, 2], pad: [0, 0], ..Conv::new(4, 6, 3, 2) },
        Conv { n: 2, pad: [0, 0], ..Conv::new(1, 1, 3, 1) },
    ];
    for c in &cases {
        check_lowering(&transpose_src(c), TOL);
    }
}

#[test]
fn epilogue_add_and_relu_fuse_into_the_conv_kernel() {
    let c = Conv { nl: "identity", ..Conv::new(16, 16, 6, 3) };
    let (args, op, o) = layout_parts(&c, "nchw88", 8, "dense");
    let src = format!(
        "func @main({args}, %y: {o}) -> {o} {{
  %0 = {op}
  %1 = graph.elemwise(%0, %y) {{mode = \"add\"}} : ({o}, {o}) -> {o}
  %2 = graph.elemwise(%1) {{mode = \"relu\"}} : ({o}) -> {o}
  return(%2)
}}"
    );
    let text = check_lowering(&src, TOL);
    assert_eq!(text.matches("loops.launch").count(), 1, "{text}");
    // The same in plain NCHW: the residual is the first operand of the add.
    let [oh, ow] = c.out();
    let o = format!("tensor<1x16x{oh}x{ow}xf32>");
    let (x, w, b) = ("tensor<1x16x6x6xf32>", "tensor<16x16x3x3xf32>", "tensor<1x16x1x1xf32>");
    let src = format!(
        "func @main(%x: {x}, %w: {w}, %b: {b}, %y: {o}) -> {o} {{
  %0 = graph.conv_bias(%x, %w, %b) {{{attrs}, nonlinearity = \"identity\"}} : ({x}, {w}, {b}) -> {o}
  %1 = graph.elemwise(%y, %0) {{mode = \"add\"}} : ({o}, {o}) -> {o}
  %2 = graph.elemwise(%1) {{mode = \"relu\"}} : ({o}) -> {o}
  return(%2)
}}",
        attrs = c.attrs()
    );
    let text = check_lowering(&src, TOL);
    assert_eq!(text.matches("loops.launch").count(), 1, "{text}");
}

/// Random f32 constant text of `shape`.
fn dense_const(name: &str, shape: &[usize], rng: &mut SplitMix64) -> String {
    let n: usize = shape.iter().product();
    let vals: Vec<String> = (0..n).map(|_| format!("{:.3}", (rng.next_u64() % 2001) as f64 / 1000.0 - 1.0)).collect();
    let ty = format!("tensor<{}xf32>", dims(shape));
    format!("  %{name} = graph.const() {{value = dense<[{}]> : {ty}}} : () -> {ty}\n", vals.join(", "))
}

#[test]
fn nchwxx_pipeline_from_graph_level() {
    // Graph-level convolutions with constant weights: nchwxx packs them (hybrid
    // first layer, dense, channel-wise, group), canonicalize folds the packing,
    // and the lowered program matches the graph reference.
    let mut rng = SplitMix64(99);
    let mut body = String::new();
    let c1 = Conv { stride: [2, 2], nl: "relu", ..Conv::new(3, 16, 9, 3) };
    let c2 = Conv { nl: "h_swish", ..Conv::new(16, 16, 5, 3) };
    let c3 = Conv { group: 16, nl: "relu", ..Conv::new(16, 16, 5, 3) };
    let c4 = Conv { group: 2, nl: "sigmoid", ..Conv::new(16, 16, 5, 1) };
    for (i, c) in [&c1, &c2, &c3, &c4].iter().enumerate() {
        body += &dense_const(&format!("w{i}"), &c.oihw(), &mut rng);
        body += &dense_const(&format!("b{i}"), &[1, c.oc, 1, 1], &mut rng);
    }
    let mut prev = "%x".to_string();
    let mut prev_ty = "tensor<1x3x9x9xf32>".to_string();
    for (i, c) in [&c1, &c2, &c3, &c4].iter().enumerate() {
        let [oh, ow] = c.out();
        let o = format!("tensor<1x{}x{oh}x{ow}xf32>", c.oc);
        let w = format!("tensor<{}xf32>", dims(&c.oihw()));
        let b = format!("tensor<1x{}x1x1xf32>", c.oc);
        body += &format!(
            "  %c{i} = graph.conv_bias({prev}, %w{i}, %b{i}) {{{attrs}, nonlinearity = \"{nl}\"}} : ({prev_ty}, {w}, {b}) -> {o}\n",
            attrs = c.attrs(),
            nl = c.nl
        );
        prev = format!("%c{i}");
        prev_ty = o;
    }
    let src = format!("func @main(%x: tensor<1x3x9x9xf32>) -> {prev_ty} {{\n{body}  return({prev})\n}}");
    for layout in ["nchw88", "nchw44"] {
        let text =
            check_lowering_with(&format!("nchwxx{{layout={layout}}},canonicalize,lower-graph-to-loops"), &src, TOL);
        assert!(text.contains(&format!("#{layout}")), "{text}");
    }
}

/// Runs `lower-graph-to-loops` on `src` and returns its error text.
fn lowering_error(src: &str) -> String {
    let mut ctx = strata_dialects::context();
    let m = parse_module(&mut ctx, &Source::new("test.strata", src), &ParseOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let reg = crate::registry();
    let mut pm = PassManager::parse(&reg, "lower-graph-to-loops").unwrap();
    match pm.run(&mut ctx, m) {
        Ok(_) => panic!("lowering should fail:\n{src}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unsupported_element_types_are_refused_with_an_error() {
    // Quantised convolutions are lowered (quant_tests.rs); transposed ones have no quantised kernel.
    let q = transpose_src(&Conv::new(2, 2, 4, 3)).replace("f32", "qs8<0.5>");
    let e = lowering_error(&q);
    assert!(e.contains("qs8") && e.contains("quantised kernels"), "{e}");
    let h = graph_src(&Conv::new(2, 2, 4, 3), false).replace("f32", "f16");
    let e = lowering_error(&h);
    assert!(e.contains("f16") && e.contains("half-precision"), "{e}");
    let h = transpose_src(&Conv::new(2, 2, 4, 3)).replace("f32", "f16");
    let e = lowering_error(&h);
    assert!(e.contains("f16"), "{e}");
    // The int8 dot-product weight arrangement has no f32 kernel.
    let e = lowering_error(&layout_src(&Conv::new(4, 4, 5, 3), "nchw44_dot", 4, "dot"));
    assert!(e.contains("weight format `dot`"), "{e}");
}

#[test]
fn print_nchw88_3x3_kernel() {
    // Not asserted beyond the basics: run with --nocapture to look at the micro-kernel.
    let c = Conv { nl: "relu", ..Conv::new(16, 8, 6, 3) };
    let text = check_lowering(&layout_src(&c, "nchw88", 8, "dense"), TOL);
    println!("{text}");
    assert!(text.contains("loops.fma"), "{text}");
    assert_eq!(text.matches("loops.parallel").count(), 1, "{text}");
}
