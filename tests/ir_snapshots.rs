//! Snapshot tests over `tests/ir/**/*.strata` (see `strata_tests::harness`).
//! Review changes with `cargo insta review`; CI runs with `CI=true`, where a
//! stale snapshot fails.

#[test]
fn ir_files() {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::glob!("ir/**/*.strata", |path| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            let rel = path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{rel}: {e}"));
            let out = strata_tests::harness::run_file(&rel, &text);
            insta::assert_snapshot!(out);
        });
    });
}

#[test]
fn at_least_ten_cases_with_negatives() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ir");
    let mut stack = vec![root];
    let (mut cases, mut negatives) = (0, 0);
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("tests/ir is readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "strata") {
                let text = std::fs::read_to_string(&path).expect("readable");
                for case in strata_tests::harness::split_cases(&text) {
                    cases += 1;
                    negatives += usize::from(case.text.contains("// expect: error"));
                }
            }
        }
    }
    assert!(cases >= 10, "only {cases} cases");
    assert!(negatives >= 3, "only {negatives} negative cases");
}
